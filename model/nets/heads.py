"""Discriminator heads: the outputs a variant reads from a discriminator body.

Every discriminator family (model/nets/dcgan.py's CNN, model/nets/capsnet.py's CapsNet)
is a *body*, image -> ``(n, d)`` features, plus heads built here, so a
variant asks any family for the outputs it needs:

* ``heads=None``: one ``(n, 1)`` float32 logit (the plain GAN discriminator; the
  model's output is that tensor, as DCGAN has always had it);
* ``heads={"logit": 1, "classes": 10}``: a dict-output model, one dense layer per
  head on the body's features (ACGAN's source and auxiliary class heads);
* ``hidden={"q": (128, ("code", "cont"))}``: the named heads sit after one shared
  hidden layer, Dense(width) -> norm -> LeakyReLU(0.2) (InfoGAN's Q network,
  "FC.128-BN-lReLU", sharing the discriminator body).

``condition={"c": 1}`` makes D conditional, a projection discriminator (Miyato & Koyama
2018): the model takes ``{"image": x, "c": c}`` and its logit is ``l(phi(x)) + <V c,
phi(x)>`` on the body's features phi, so D judges an image against the condition it came
with (EGAN's ``d_condition``: the level of the attribute).

Heads compute in float32 whatever the dtype policy (their values feed losses).
"""
from __future__ import annotations

import keras
from keras import layers

from model.nets.norms import apply_norm


#: Normalisations a discriminator can use: batch norm (DCGAN), layer norm or none
#: (WGAN-GP: the gradient penalty is per example, batch norm couples the examples).
def add_heads(features, heads: dict[str, int] | None, hidden: dict[str, tuple[int, tuple[str, ...]]] | None = None,
              norm: str = "batch", fast: bool = True, initializer=None):
    """The discriminator's output(s) on ``features`` ``(n, d)``: a ``(n, 1)`` logit tensor
    when ``heads`` is None, else ``{name: (n, size)}`` (see the module docstring).
    ``initializer()`` (default: Keras' Glorot uniform) makes each head's kernel initializer."""
    def init():
        return initializer() if initializer else "glorot_uniform"
    if heads is None:
        return layers.Dense(1, kernel_initializer=init(), dtype="float32", name="logit")(features)
    grouped = {name: group for group, (_, names) in (hidden or {}).items() for name in names}
    unknown = sorted(set(grouped) - set(heads))
    if unknown:
        raise ValueError(f"hidden layers name heads {unknown} that are not in heads {sorted(heads)}")
    shared = {}
    for group, (width, _) in (hidden or {}).items():
        x = layers.Dense(width, kernel_initializer=init(), use_bias=norm != "batch", name=f"{group}_hidden")(features)
        x = apply_norm(x, norm, fast, name=f"{group}_norm")
        shared[group] = layers.LeakyReLU(0.2, name=f"{group}_lrelu")(x)
    return {name: layers.Dense(size, kernel_initializer=init(), dtype="float32", name=name)(
                shared[grouped[name]] if name in grouped else features)
            for name, size in heads.items()}


def discriminator_model(image, features, heads: dict[str, int] | None = None, hidden: dict | None = None,
                        norm: str = "batch", fast: bool = True, initializer=None,
                        condition: dict[str, int] | None = None, name: str = "discriminator") -> keras.Model:
    """A family's body (``image`` input, ``(n, d)`` ``features``) with its heads
    (:func:`add_heads`) as a Keras model; with ``condition`` (name -> size) the model also
    takes those inputs and its logit gains the projection term (module docstring)."""
    out = add_heads(features, heads, hidden, norm, fast, initializer)
    if not condition:
        return keras.Model(image, out, name=name)
    inputs = {name_: keras.Input((size,), name=name_) for name_, size in condition.items()}
    c = list(inputs.values())
    c = c[0] if len(c) == 1 else layers.Concatenate(name="condition")(c)
    embedded = layers.Dense(features.shape[-1], use_bias=False, dtype="float32", name="projection")(c)
    term = layers.Dot(axes=1, dtype="float32", name="projection_term")([embedded, features])
    logit = out["logit"] if isinstance(out, dict) else out
    logit = layers.Add(dtype="float32", name="conditioned_logit")([logit, term])
    out = {**out, "logit": logit} if isinstance(out, dict) else logit
    return keras.Model({"image": image, **inputs}, out, name=name)
