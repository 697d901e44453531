"""The CapsNet discriminator of the seed report (after Sabour et al. 2017), as a body for
model/nets/heads.py.

    image -> Conv 9x9, 256, stride 1, valid -> LeakyReLU -> batch norm
          -> primary capsules: Conv 9x9, 8x32 channels, stride 2, valid
          -> reshape to 8-d capsules -> squash -> batch norm -> features -> heads

Features come from one of two "routings":

* ``dense`` (the seed's; its Keras reference code calls it an approximation):
  flatten -> u_hat = Dense 160 (He normal) -> three times: c = softmax(s) (s =
  u_hat the first time), c = Dense 160(c), s = LeakyReLU(u_hat * c) -> s (160).
* ``dynamic``: routing-by-agreement (Sabour et al. 2017, Procedure 1): each primary
  capsule i predicts every output capsule j, u_hat_j|i = W_ij u_i (W_ij 16x8);
  ``iterations`` rounds of c_i = softmax_j(b_i), s_j = sum_i c_ij u_hat_j|i,
  v_j = squash(s_j), b_ij += u_hat_j|i . v_j; the features are the flattened v
  (``capsules`` x 16).

As the seed's reference: LeakyReLU of slope 0.3 (Keras 2's default), batch-norm
momentum 0.8 (Keras' convention: the moving average keeps 0.8), epsilon 1e-3, and
Keras' default initialisers (Glorot uniform) except u_hat (He normal). With
``base_width`` 128 (TrainConfig's default) the widths are the seed's: 2 x 128 =
256 conv filters and 128 / 4 = 32 capsule types; smaller ``base_width`` scales both
(tests). For 64x64 RGB with one logit head it has 29,042,753 parameters, the
figure of the seed's table (batch-norm moving statistics included, as Keras
counts them).

Neither 9x9 convolution has the 'same' padding and small output that model/nets/layers.py's
matmul route takes (bench/train_throughput.py reports the cost), so ``fast`` only
swaps in the fused batch norm for the 4-D feature map.
"""
from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers

from model.nets.heads import discriminator_model
from model.nets.norms import apply_norm, check_norm

#: The seed's constants.
CAPSULE_DIM = 8          # primary capsule size
ROUTING_WIDTH = 160      # dense "routing": 10 capsules x 16
LEAK = 0.3               # Keras 2 LeakyReLU default, as the reference code
BN_MOMENTUM = 0.8
ROUTINGS = ("dense", "dynamic")


def squash(s: tf.Tensor, axis: int = -1, epsilon: float = 1e-7) -> tf.Tensor:
    """v = |s|^2 / (1 + |s|^2) * s / |s| along ``axis`` (Sabour et al. eq. 1), with the
    reference's ``epsilon`` under the root; computed in float32."""
    s32 = tf.cast(s, tf.float32)
    norm2 = tf.reduce_sum(tf.square(s32), axis, keepdims=True)
    return tf.cast(norm2 / (1.0 + norm2) / tf.sqrt(norm2 + epsilon) * s32, s.dtype)


@keras.saving.register_keras_serializable(package="capsnet")
class Squash(layers.Layer):
    """:func:`squash` over the last axis, as a layer."""

    def call(self, inputs):
        return squash(inputs)


@keras.saving.register_keras_serializable(package="capsnet")
class DynamicRouting(layers.Layer):
    """Routing-by-agreement from ``(n, N_in, d_in)`` capsules to ``(n, capsules, dim)``
    (Sabour et al. 2017): one 16x8 matrix per (input, output) capsule pair and
    ``iterations`` rounds of agreement (see the module docstring). Routing logits start
    at zero; gradients flow through every round."""

    def __init__(self, capsules: int = 10, dim: int = 16, iterations: int = 3, **kwargs):
        super().__init__(**kwargs)
        self.capsules, self.dim, self.iterations = capsules, dim, iterations

    def build(self, input_shape):
        _, n_in, d_in = input_shape
        self.w = self.add_weight(name="w", shape=(n_in, self.capsules, self.dim, d_in),
                                 initializer=keras.initializers.RandomNormal(0.0, 0.01))

    def call(self, u):
        u_hat = tf.einsum("ijdk,nik->nijd", tf.cast(self.w, u.dtype), u)  # (n, N_in, capsules, dim)
        b = tf.zeros(tf.shape(u_hat)[:3], u.dtype)
        for r in range(self.iterations):
            c = tf.nn.softmax(b, axis=2)
            v = squash(tf.einsum("nij,nijd->njd", c, u_hat))
            if r < self.iterations - 1:
                b = b + tf.einsum("nijd,njd->nij", u_hat, v)
        return v

    def get_config(self):
        return {**super().get_config(), "capsules": self.capsules, "dim": self.dim,
                "iterations": self.iterations}


def _norm(x, norm: str, fast: bool, axis):
    # the reference's batch norm: Keras' defaults but momentum 0.8 (scales start at one)
    return apply_norm(x, norm, fast, axis=axis, momentum=BN_MOMENTUM, epsilon=1e-3, gamma_std=0)


def capsnet_body(resolution: int = 64, channels: int = 3, base_width: int = 128, fast: bool = True,
                 norm: str = "batch", routing: str = "dense", iterations: int = 3, capsules: int = 10,
                 capsule_dim: int = 16):
    """``(image input, features)``: the CapsNet up to its routing output, ``(n, 160)`` for
    the ``dense`` routing or ``(n, capsules * capsule_dim)`` for ``dynamic``. ``norm``
    replaces both batch norms (``layer``: per example; ``none``)."""
    check_norm(norm)
    if routing not in ROUTINGS:
        raise ValueError(f"capsnet routing must be one of {ROUTINGS}, got {routing!r}")
    if iterations < 1:
        raise ValueError(f"capsnet routing iterations must be >= 1, got {iterations}")
    if (resolution - 8 - 9) // 2 + 1 < 1:
        raise ValueError(f"the CapsNet's two 9x9 convolutions need images of at least 17 px, got {resolution}")
    filters, types = 2 * base_width, max(1, base_width // 4)
    img = keras.Input((resolution, resolution, channels), name="image")
    x = layers.Conv2D(filters, 9, 1, "valid", name="conv1")(img)
    x = layers.LeakyReLU(LEAK)(x)
    x = _norm(x, norm, fast, [1, 2, 3])
    x = layers.Conv2D(CAPSULE_DIM * types, 9, 2, "valid", name="primary_caps")(x)
    x = layers.Reshape((-1, CAPSULE_DIM), name="capsules")(x)
    x = Squash(name="squash")(x)
    x = _norm(x, norm, fast, [1, 2])
    if routing == "dynamic":
        v = DynamicRouting(capsules, capsule_dim, iterations, name="routing")(x)
        return img, layers.Flatten()(v)
    x = layers.Flatten()(x)
    u_hat = layers.Dense(ROUTING_WIDTH, kernel_initializer="he_normal", name="u_hat")(x)
    s = u_hat
    for i in range(iterations):
        c = layers.Softmax(name=f"coupling_{i + 1}")(s)
        c = layers.Dense(ROUTING_WIDTH, name=f"routing_{i + 1}")(c)
        s = layers.LeakyReLU(LEAK)(layers.Multiply()([u_hat, c]))
    return img, s


def build_capsnet_discriminator(resolution: int = 64, channels: int = 3, base_width: int = 128,
                                fast: bool = True, heads: dict[str, int] | None = None, hidden: dict | None = None,
                                norm: str = "batch", routing: str = "dense", iterations: int = 3,
                                capsules: int = 10, capsule_dim: int = 16,
                                name: str = "discriminator", condition: dict[str, int] | None = None) -> keras.Model:
    """The CapsNet discriminator: image in [-1, 1] -> ``(n, 1)`` float32 logit, or
    ``{head: (n, size)}`` with ``heads``; with ``condition`` it also takes those inputs
    (a projection discriminator; model/nets/heads.py)."""
    img, x = capsnet_body(resolution, channels, base_width, fast, norm, routing, iterations, capsules, capsule_dim)
    return discriminator_model(img, x, heads, hidden, norm, fast, condition=condition, name=name)
