"""The GAN variants, one module each (model/variants/base.py says what a variant is).

``VARIANTS`` maps a variant's name to ``module:Class``; importing this package
imports no TensorFlow (tasks/ read the names for their parameter choices), the
variant's module is imported when one is built.
"""
from __future__ import annotations

import importlib

VARIANTS = {
    "dcgan": "model.variants.dcgan:DCGAN",
    "egan": "model.variants.egan:EGAN",
    "wgan": "model.variants.wgan:WGAN",
    "wgan-gp": "model.variants.wgan_gp:WGANGP",
    "acgan": "model.variants.acgan:ACGAN",
    "infogan": "model.variants.infogan:InfoGAN",
}


def variant_class(name: str):
    """The :class:`model.variants.base.GANModel` subclass called ``name``."""
    try:
        module, cls = VARIANTS[name].split(":")
    except KeyError:
        raise ValueError(f"unknown GAN variant {name!r}; choose one of {sorted(VARIANTS)}") from None
    return getattr(importlib.import_module(module), cls)


def build_variant(config):
    """The variant ``config.variant`` of a :class:`model.train.loop.TrainConfig`, not yet built."""
    return variant_class(config.variant)(config)
