"""The completion network and its discriminators (plain Keras layers: the exported network
loads without this project's code).

The network (after Iizuka et al. 2017 and DeepFill's coarse stage, sized for 64x64 faces on a
CPU) is an encoder-decoder: two stride-2 convolutions down to a quarter of the side, dilated
3x3 convolutions there (dilation 2, 4, 8: the receptive field spans the whole face, so the
middle of a large hole sees its far border), then nearest-neighbour upsampling and
convolutions back up, with the encoder's features at each side joined in (U-Net skips keep
the border sharp)::

    input (S, S, C + 1): the known pixels in [-1, 1] (0 in the hole) and the mask (1 = missing)
      conv5 w     S      -> skip a
      conv3 2w /2 S/2, conv3 2w   -> skip b
      conv3 4w /2 S/4, conv3 4w, dilated 2, 4, 8, conv3 4w
      up x2, [b], conv3 2w, conv3 2w
      up x2, [a], conv3 w, conv3 w/2, conv3 C, tanh -> (S, S, C) the whole face in [-1, 1]

The network paints every pixel; the hole of its output is pasted into (or Poisson-blended
with) the known pixels afterwards (model/apps/complete.py ``blend``). At ``width`` 32 it is
about 0.5 GMAC per 64x64 face.

The discriminators are DCGAN-like: 4x4 stride-2 convolutions with leaky ReLU and no
normalisation, one logit. ``global`` sees the whole completed face; ``local`` (Iizuka et al.)
a ``S/2`` square around the hole.
"""
from __future__ import annotations

import keras
from keras import layers

#: The output keeps float32 under a mixed policy (losses and export read it).
OUTPUT_DTYPE = "float32"


def _conv(x, filters: int, kernel: int = 3, strides: int = 1, dilation: int = 1, name: str = ""):
    x = layers.Conv2D(filters, kernel, strides=strides, dilation_rate=dilation, padding="same", name=name)(x)
    return layers.ELU(name=f"{name}_elu")(x)


def build_completion_network(resolution: int = 64, channels: int = 3, width: int = 32) -> keras.Model:
    """The completion network: ``(n, S, S, C + 1)`` (known pixels, mask) -> ``(n, S, S, C)``
    in [-1, 1]. ``resolution`` must be a multiple of 4."""
    if resolution % 4:
        raise ValueError(f"the completion network needs a side that is a multiple of 4, got {resolution}")
    inp = keras.Input((resolution, resolution, channels + 1), name="masked")
    a = _conv(inp, width, 5, name="enc1")
    b = _conv(a, 2 * width, strides=2, name="enc2")
    b = _conv(b, 2 * width, name="enc3")
    x = _conv(b, 4 * width, strides=2, name="enc4")
    x = _conv(x, 4 * width, name="enc5")
    for d in (2, 4, 8):
        x = _conv(x, 4 * width, dilation=d, name=f"dil{d}")
    x = _conv(x, 4 * width, name="mid")
    x = layers.UpSampling2D(2, name="up1")(x)
    x = layers.Concatenate(name="skip1")([x, b])
    x = _conv(x, 2 * width, name="dec1")
    x = _conv(x, 2 * width, name="dec2")
    x = layers.UpSampling2D(2, name="up2")(x)
    x = layers.Concatenate(name="skip2")([x, a])
    x = _conv(x, width, name="dec3")
    x = _conv(x, max(width // 2, 1), name="dec4")
    x = layers.Conv2D(channels, 3, padding="same", name="to_image")(x)
    out = layers.Activation("tanh", dtype=OUTPUT_DTYPE, name="image")(x)
    return keras.Model(inp, out, name="completion")


def build_patch_discriminator(resolution: int, channels: int = 3, width: int = 64, name: str = "global") -> keras.Model:
    """A discriminator of ``(n, resolution, resolution, channels)`` images in [-1, 1] -> ``(n, 1)``
    logits: stride-2 4x4 convolutions (``width``, doubling, at most ``8 * width``) down to 4x4,
    then one dense logit."""
    inp = keras.Input((resolution, resolution, channels), name="image")
    x, filters, side, k = inp, width, resolution, 0
    while side > 4:
        x = layers.Conv2D(filters, 4, strides=2, padding="same", name=f"{name}_conv{k}")(x)
        x = layers.LeakyReLU(0.2, name=f"{name}_lrelu{k}")(x)
        filters, side, k = min(filters * 2, 8 * width), side // 2, k + 1
    x = layers.Flatten(name=f"{name}_flat")(x)
    out = layers.Dense(1, dtype=OUTPUT_DTYPE, name=f"{name}_logit")(x)
    return keras.Model(inp, out, name=f"{name}_discriminator")
