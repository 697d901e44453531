"""Discriminator heads: the outputs a variant reads from a discriminator body.

Every discriminator family (model/dcgan.py's CNN, model/capsnet.py's CapsNet)
is a *body*, image -> ``(n, d)`` features, plus heads built here, so a
variant asks any family for the outputs it needs:

* ``heads=None``: one ``(n, 1)`` float32 logit (the plain GAN discriminator; the
  model's output is that tensor, as DCGAN has always had it);
* ``heads={"logit": 1, "classes": 10}``: a dict-output model, one dense layer per
  head on the body's features (ACGAN's source and auxiliary class heads);
* ``hidden={"q": (128, ("code", "cont"))}``: the named heads sit after one shared
  hidden layer, Dense(width) -> norm -> LeakyReLU(0.2) (InfoGAN's Q network,
  "FC.128-BN-lReLU", sharing the discriminator body).

Heads compute in float32 whatever the dtype policy (their values feed losses).
"""
from __future__ import annotations

from keras import layers

#: Normalisations a discriminator can use: batch norm (DCGAN), layer norm or none
#: (WGAN-GP: the gradient penalty is per example, batch norm couples the examples).
NORMS = ("batch", "layer", "none")


def check_norm(norm: str) -> str:
    if norm not in NORMS:
        raise ValueError(f"discriminator norm must be one of {NORMS}, got {norm!r}")
    return norm


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


def normalization(norm: str, fast: bool, axis=-1, momentum: float = 0.9, epsilon: float = 1e-5, gamma_std=0.02,
                  name: str | None = None):
    """A normalisation layer of kind ``norm``, or None for ``"none"``. Batch norm over the
    last axis with Torch's momentum/epsilon and N(1, ``gamma_std``) scales by default (the
    DCGAN reference; ``gamma_std=0`` for ones); layer norm over ``axis`` (e.g. [1, 2, 3]: the
    whole feature map of each example, as the WGAN-GP reference critic)."""
    from model.dcgan import batch_norm

    check_norm(norm)
    if norm == "batch":
        return batch_norm(fast, momentum=momentum, epsilon=epsilon, gamma_std=gamma_std, name=name)
    if norm == "layer":
        return layers.LayerNormalization(axis=axis, name=name)
    return None


def apply_norm(x, norm: str, fast: bool, **kw):
    """``x`` through :func:`normalization` (unchanged for ``"none"``)."""
    layer = normalization(norm, fast, **kw)
    return x if layer is None else layer(x)

