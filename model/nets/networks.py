"""The network families a variant builds from: ``TrainConfig.generator`` (``dcgan``:
model/nets/dcgan.py, ``seed``: model/nets/seed_generator.py) and ``TrainConfig.discriminator``
(``cnn``: model/nets/dcgan.py, ``capsnet``: model/nets/capsnet.py).

Every discriminator family is a body plus heads (model/nets/heads.py): a variant asks for
the outputs it needs (``heads=None``: one logit tensor; ``{"logit": 1, "classes": 10}``:
a dict of outputs) and the normalisation its objective allows. The CapsNet's own
settings are variant options (:class:`NetworkOptions`, which every variant's
``Options`` extends), so ``TrainGAN --options '{"routing": "dynamic"}'`` reaches them.
"""
from __future__ import annotations

from dataclasses import dataclass

import keras


@dataclass
class NetworkOptions:
    """Settings of the network families, part of every variant's options."""
    routing: str = "dense"        # CapsNet: the seed's dense "routing" or "dynamic" (Sabour et al. 2017)
    routing_iterations: int = 3   # CapsNet routing iterations (both kinds; the seed and Sabour et al.: 3)
    capsules: int = 10            # dynamic routing: output capsules (Sabour et al.: 10 digit capsules)
    capsule_dim: int = 16         # dynamic routing: size of each output capsule


def build_generator(config, extra_inputs: dict[str, int] | None = None, fast: bool = True,
                    extra_ways=()) -> keras.Model:
    """The generator family ``config.generator`` for ``config``'s resolution, channels, z and
    width, taking ``z`` and ``extra_inputs`` (name -> size); ``extra_ways`` (the DCGAN family,
    model/nets/dcgan.py ``EXTRA_WAYS``) say how those also enter beyond the first layer."""
    c = config
    if c.generator == "seed":
        if extra_ways:
            raise ValueError("extra inputs in every generator block need --generator dcgan (the seed "
                             "generator takes them through its first layer only)")
        from model.nets.seed_generator import build_seed_generator
        return build_seed_generator(c.resolution, c.channels, c.z_dim, c.base_width, fast=fast,
                                    extra_inputs=extra_inputs)
    from model.nets.dcgan import build_generator as dcgan_generator
    return dcgan_generator(c.resolution, c.channels, c.z_dim, c.base_width, c.kernel_size, fast=fast,
                           extra_inputs=extra_inputs, extra_ways=extra_ways)


def build_discriminator(config, options: NetworkOptions | None = None, heads: dict[str, int] | None = None,
                        hidden: dict | None = None, norm: str = "batch", fast: bool = True,
                        condition: dict[str, int] | None = None) -> keras.Model:
    """The discriminator family ``config.discriminator`` with ``heads`` (and ``hidden``
    shared head layers), normalisation ``norm`` and, with ``condition`` (name -> size),
    those inputs beside the image (a projection discriminator; model/nets/heads.py)."""
    # A variant whose Options does not extend NetworkOptions gets the families' defaults.
    c, o = config, options if isinstance(options, NetworkOptions) else NetworkOptions()
    if c.discriminator == "capsnet":
        from model.nets.capsnet import build_capsnet_discriminator
        return build_capsnet_discriminator(c.resolution, c.channels, c.base_width, fast, heads, hidden, norm,
                                           o.routing, o.routing_iterations, o.capsules, o.capsule_dim,
                                           condition=condition)
    from model.nets.dcgan import build_discriminator as dcgan_discriminator
    return dcgan_discriminator(c.resolution, c.channels, c.base_width, c.kernel_size, fast=fast, heads=heads,
                               hidden=hidden, norm=norm, condition=condition)
