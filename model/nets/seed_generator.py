"""The generator of the seed report ("Image Regeneration With Generative Models"),
``TrainGAN --generator seed``.

At 64x64: z (100) -> Dense 8x8x128, ReLU -> batch norm -> three times [upsample x2
(nearest) -> Conv 3x3 'same' -> ReLU -> batch norm] with 128, 64 and 32 filters ->
Conv 3x3 to the image channels -> tanh. 1,069,507 parameters at 64x64 RGB (batch-norm
moving statistics included, as Keras counts them), as in the seed's table.

As its Keras reference: batch-norm momentum 0.8 (Keras' convention) and epsilon
1e-3, Keras' default initialisers. The start side halves the resolution down to 8
(or 7 for 28x28: 7 -> 14 -> 28, the reference's MNIST layout); the widths are
``base_width`` halved per layer (TrainConfig's default 128 gives 128, 64, 32).
Extra generator inputs (a class, codes) are concatenated to z
(model/nets/dcgan.py generator_inputs).
"""
from __future__ import annotations

import keras
from keras import layers

from model.nets.dcgan import generator_inputs
from model.nets.norms import batch_norm

BN_MOMENTUM = 0.8


def seed_layout(resolution: int) -> tuple[int, int]:
    """``(start side, upsamplings)``: 64 -> (8, 3), 32 -> (8, 2), 28 -> (7, 2)."""
    start, ups = resolution, 0
    while start > 8 and start % 2 == 0:
        start //= 2
        ups += 1
    if ups < 1:
        raise ValueError(f"the seed generator needs a resolution of 8 or 7 times a power of two "
                         f"(e.g. 28, 32, 64), got {resolution}")
    return start, ups


def build_seed_generator(resolution: int = 64, channels: int = 3, z_dim: int = 100, base_width: int = 128,
                         fast: bool = True, extra_inputs: dict[str, int] | None = None,
                         name: str = "generator") -> keras.Model:
    """G: ``(n, z_dim)`` (plus ``extra_inputs``) -> ``(n, resolution, resolution, channels)`` in [-1, 1]."""
    start, ups = seed_layout(resolution)
    z, x = generator_inputs(z_dim, extra_inputs)
    x = layers.Dense(start * start * base_width, activation="relu", name="project")(x)
    x = layers.Reshape((start, start, base_width))(x)
    x = batch_norm(fast, momentum=BN_MOMENTUM, epsilon=1e-3, gamma_std=0)(x)
    for k in range(ups):
        x = layers.UpSampling2D()(x)
        x = layers.Conv2D(max(1, base_width // 2 ** k), 3, padding="same")(x)
        x = layers.ReLU()(x)
        x = batch_norm(fast, momentum=BN_MOMENTUM, epsilon=1e-3, gamma_std=0)(x)
    x = layers.Conv2D(channels, 3, padding="same", name="to_image")(x)
    out = layers.Activation("tanh", dtype="float32", name="tanh")(x)
    return keras.Model(z, out, name=name)
