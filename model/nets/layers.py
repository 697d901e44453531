"""Drop-in Keras layers that compute the same function faster on CPUs.

Each subclass keeps its parent's weights, configuration and checkpoint names,
so a network built with them trains, saves and restores like the plain one;
only ``call`` takes a different route where measurement showed a gain
(``bench/train_throughput.py``, ``docs/training.md``):

* :class:`FusedBatchNormalization` runs training-mode batch norm as one
  ``FusedBatchNormV3`` op (oneDNN on CPU, cuDNN on GPU) instead of Keras'
  moments + normalize graph: about 3x faster forward and backward at both
  precisions.
* :class:`MatmulConv2D` / :class:`MatmulConv2DTranspose`: on CPU, oneDNN's
  convolution kernels for the strided layers with small feature maps (D's last
  two convolutions, G's first two transposed ones: 8x8 and 4x4) reach a fifth
  to a half of the machine's matmul rate. There (bfloat16: 8x8 and 4x4;
  float32: 4x4) the whole layer, forward and both gradients, runs as large
  matrix multiplies over an im2col matrix built from the space-to-depth grid
  (a k x k stride-s convolution is a ceil(k/s) x ceil(k/s) stride-1
  convolution over it) and its adjoint, col2im.
"""
from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers

from model.cpu import cpu_flags, vector_isa

# The matmul route, per compute dtype: the largest small side (conv output / transposed-conv
# input) it is taken at. Measured on a 2-core AMX Xeon (docs/training.md); CPUs only, since
# GPU convolution kernels were not measured.
MATMUL_MAX_SIDE = {"bfloat16": 8, "float32": 4}
# Where a CPU kind measured otherwise (bench/conv_route.py): (vector ISA, dtype, "conv" or
# "transpose") -> side. AVX2 AMD EPYC, float32, oneDNN: D's 16->8 convolution 1.26x faster as
# matmuls, G's 8->16 transposed one 0.62x (so it keeps the native kernel).
MATMUL_MAX_SIDE_BY_ISA = {("avx2", "float32", "conv"): 8}


def same_padding(n_in: int, n_out: int, k: int, s: int) -> int:
    """Leading padding of a 'same' convolution from ``n_in`` to ``n_out`` (TF's rule:
    the odd pixel goes at the end)."""
    return max((n_out - 1) * s + k - n_in, 0) // 2


def kernel_to_space_to_depth(kernel: tf.Tensor, s: int) -> tf.Tensor:
    """A ``(k, k, a, b)`` kernel as the ``(K*K*s*s*a, b)`` matrix that multiplies
    :func:`im2col`'s patches, ``K = ceil(k / s)``: rows in (dy, dx, sy, sx, a) order
    (TF's depth order) for tap ``ky = s*dy + sy``; zero taps pad k up to K*s."""
    k, a, b = kernel.shape[0], kernel.shape[2], kernel.shape[3]
    big = -(-k // s)
    kernel = tf.pad(kernel, [[0, big * s - k], [0, big * s - k], [0, 0], [0, 0]])
    kernel = tf.transpose(tf.reshape(kernel, [big, s, big, s, a, b]), [0, 2, 1, 3, 4, 5])
    return tf.reshape(kernel, [big * big * s * s * a, b])


def kernel_from_space_to_depth(grid_kernel: tf.Tensor, k: int, s: int, a: int) -> tf.Tensor:
    """The inverse of :func:`kernel_to_space_to_depth` (taps beyond k are dropped)."""
    big = -(-k // s)
    g = tf.reshape(grid_kernel, [big, big, s, s, a, grid_kernel.shape[-1]])
    g = tf.transpose(g, [0, 2, 1, 3, 4, 5])
    return tf.reshape(g, [big * s, big * s, a, grid_kernel.shape[-1]])[:k, :k]


def _grid_geometry(h: int, w: int, k: int, s: int, out_h: int, out_w: int):
    """``(K, top, left, padded_h, padded_w)``: a k x k stride-s 'same' convolution from
    h x w to out_h x out_w is a K x K stride-1 'valid' one over the space-to-depth grid
    of the input padded to padded_h x padded_w (TF's rule: the odd pixel goes at the end)."""
    big = -(-k // s)
    return (big, same_padding(h, out_h, k, s), same_padding(w, out_w, k, s),
            s * (out_h - 1 + big), s * (out_w - 1 + big))


def im2col(x: tf.Tensor, k: int, s: int, out_h: int, out_w: int) -> tf.Tensor:
    """The ``(n*out_h*out_w, K*K*s*s*c)`` patch matrix of a 'same' k x k stride-s
    convolution of ``x`` (NHWC), columns in :func:`kernel_to_space_to_depth` order:
    K*K contiguous slices of the space-to-depth grid, no gather."""
    _, h, w, c = x.shape
    big, top, left, hp, wp = _grid_geometry(h, w, k, s, out_h, out_w)
    grid = tf.nn.space_to_depth(tf.pad(x, [[0, 0], [top, hp - h - top], [left, wp - w - left], [0, 0]]), s)
    cols = tf.concat([grid[:, dy:dy + out_h, dx:dx + out_w, :] for dy in range(big) for dx in range(big)], -1)
    return tf.reshape(cols, [-1, big * big * s * s * c])


def col2im_matmul(a: tf.Tensor, grid_kernel: tf.Tensor, k: int, s: int, h: int, w: int,
                  out_h: int, out_w: int) -> tf.Tensor:
    """``col2im(a @ grid_kernel^T)``, col2im being the adjoint of :func:`im2col` (each
    pixel receives every patch entry it was copied to): an ``(n, h, w, c)`` image.
    One matmul per kernel block, so each product is contiguous and the large patch
    matrix is never sliced (measured faster than slicing it)."""
    big = -(-k // s)
    return _sum_shifted([tf.reshape(tf.matmul(a, block, transpose_b=True), [-1, out_h, out_w, block.shape[0]])
                         for block in tf.split(grid_kernel, big * big, 0)], k, s, h, w, out_h, out_w)


def _sum_shifted(blocks: list[tf.Tensor], k: int, s: int, h: int, w: int, out_h: int, out_w: int) -> tf.Tensor:
    """Block (dy, dx) of the patches, ``(n, out_h, out_w, s*s*c)``, added onto the grid at
    offset (dy, dx); the grid back to an image with the padding cropped."""
    big, top, left, _, _ = _grid_geometry(h, w, k, s, out_h, out_w)
    grid = tf.add_n([tf.pad(blocks[dy * big + dx], [[0, 0], [dy, big - 1 - dy], [dx, big - 1 - dx], [0, 0]])
                     for dy in range(big) for dx in range(big)])
    return tf.nn.depth_to_space(grid, s)[:, top:top + h, left:left + w, :]


def conv2d_same(x: tf.Tensor, kernel: tf.Tensor, s: int, grid_kernel: tf.Tensor | None = None) -> tf.Tensor:
    """``tf.nn.conv2d(x, kernel, s, "SAME")`` as matmuls: ``im2col(x) @ K`` forward,
    ``col2im(dy @ K^T)`` and ``im2col(x)^T @ dy`` backward (the patches are kept). With
    ``grid_kernel`` (K, :func:`kernel_to_space_to_depth` of ``kernel``, made once) the
    kernel is a constant: gradients reach ``x`` only."""
    k, a, b = kernel.shape[0], kernel.shape[2], kernel.shape[3]
    _, h, w, _ = x.shape
    out_h, out_w = -(-h // s), -(-w // s)
    if grid_kernel is not None:
        return tf.reshape(tf.matmul(im2col(x, k, s, out_h, out_w), grid_kernel), [-1, out_h, out_w, b])

    @tf.custom_gradient
    def conv(x, kernel):
        cols, grid_kernel = im2col(x, k, s, out_h, out_w), kernel_to_space_to_depth(kernel, s)
        y = tf.reshape(tf.matmul(cols, grid_kernel), [-1, out_h, out_w, b])

        def grad(dy):
            dy = tf.reshape(dy, [-1, b])
            dx = col2im_matmul(dy, grid_kernel, k, s, h, w, out_h, out_w)
            return dx, kernel_from_space_to_depth(tf.matmul(cols, dy, transpose_a=True), k, s, a)
        return y, grad
    return conv(x, kernel)


def conv2d_transpose_same(x: tf.Tensor, kernel: tf.Tensor, s: int,
                          grid_kernel: tf.Tensor | None = None) -> tf.Tensor:
    """``tf.nn.conv2d_transpose`` to ``s`` times ``x``'s size, 'same', as matmuls
    (``kernel`` is ``(k, k, out, in)`` as in Keras): the adjoint of :func:`conv2d_same`,
    ``col2im(x @ K^T)`` forward, ``im2col(dy) @ K`` and ``im2col(dy)^T @ x`` backward.
    ``grid_kernel``: as in :func:`conv2d_same`."""
    k, out = kernel.shape[0], kernel.shape[2]
    _, h, w, c = x.shape
    if grid_kernel is not None:
        return col2im_matmul(tf.reshape(x, [-1, c]), grid_kernel, k, s, h * s, w * s, h, w)

    @tf.custom_gradient
    def conv_t(x, kernel):
        grid_kernel, flat = kernel_to_space_to_depth(kernel, s), tf.reshape(x, [-1, c])
        y = col2im_matmul(flat, grid_kernel, k, s, h * s, w * s, h, w)

        def grad(dy):
            cols = im2col(dy, k, s, h, w)
            dx = tf.reshape(tf.matmul(cols, grid_kernel), [-1, h, w, c])
            return dx, kernel_from_space_to_depth(tf.matmul(cols, flat, transpose_a=True), k, s, out)
        return y, grad
    return conv_t(x, kernel)


def matmul_route_for(dtype: str, side: int, transposed: bool = False) -> bool:
    """Whether a strided layer (a transposed convolution with ``transposed``) computing in
    ``dtype`` with small side ``side`` runs as matmuls on this CPU."""
    kind = (vector_isa(cpu_flags()), dtype, "transpose" if transposed else "conv")
    limit = MATMUL_MAX_SIDE_BY_ISA.get(kind, MATMUL_MAX_SIDE.get(dtype, 0))
    return side <= limit and not tf.config.list_logical_devices("GPU")


def _matmul_route(layer, side: int, transposed: bool) -> bool:
    return (matmul_route_for(layer.compute_dtype, side, transposed)
            and layer.padding == "same" and layer.data_format == "channels_last"
            and len(set(layer.strides)) == 1 and layer.strides[0] > 1
            and tuple(layer.dilation_rate) == (1, 1) and layer.kernel_size[0] == layer.kernel_size[1])


def _finish(layer, y):
    if layer.use_bias:
        y = y + tf.cast(layer.bias, y.dtype)
    return layer.activation(y) if layer.activation is not None else y


class _Freezable:
    """:meth:`freeze` makes the layer's kernel a constant for inference copies
    (model.train.serving.fast_copy): its space-to-depth matrix is built once instead of on
    every call, which at batch 1-2 costs as much as the product itself (the paper-size
    generator's 4x4 -> 8x8 layer: a 32 MB transpose per call, 11.4 against 7.8 ms at batch 2
    on the AVX2 EPYC). Gradients then reach the inputs only; :meth:`freeze` again after
    changing the weights."""

    _grid = None

    def freeze(self) -> None:
        object.__setattr__(self, "_grid", tf.constant(
            kernel_to_space_to_depth(tf.cast(self.kernel, self.compute_dtype), self.strides[0])))

    def _grid_kernel(self, dtype):
        return None if self._grid is None else tf.cast(self._grid, dtype)


@keras.saving.register_keras_serializable(package="dcgan")
class MatmulConv2D(_Freezable, layers.Conv2D):
    """``Conv2D`` whose strided layers with a small output (``MATMUL_MAX_SIDE``) run as matmuls
    (:func:`conv2d_same`)."""

    def call(self, inputs):
        _, h, w, _ = inputs.shape
        s = self.strides[0]
        if h is None or w is None or not _matmul_route(self, -(-max(h, w) // s), False):
            return super().call(inputs)
        return _finish(self, conv2d_same(inputs, tf.cast(self.kernel, inputs.dtype), s,
                                         self._grid_kernel(inputs.dtype)))


@keras.saving.register_keras_serializable(package="dcgan")
class MatmulConv2DTranspose(_Freezable, layers.Conv2DTranspose):
    """``Conv2DTranspose`` whose strided layers with a small input (``MATMUL_MAX_SIDE``) run as
    matmuls (:func:`conv2d_transpose_same`)."""

    def call(self, inputs):
        _, h, w, _ = inputs.shape
        if h is None or w is None or self.output_padding is not None or not _matmul_route(self, max(h, w), True):
            return super().call(inputs)
        return _finish(self, conv2d_transpose_same(inputs, tf.cast(self.kernel, inputs.dtype), self.strides[0],
                                                   self._grid_kernel(inputs.dtype)))


@keras.saving.register_keras_serializable(package="dcgan")
class FusedBatchNormalization(layers.BatchNormalization):
    """``BatchNormalization`` whose training-mode pass is one fused op.

    Same statistics as the parent: normalisation by the biased batch variance,
    moving averages updated with ``momentum`` from the biased variance (the
    fused op reports the unbiased one; it is rescaled). Inference, masks,
    renorm, other axes and ``synchronized`` statistics (over several replicas) use the
    parent's code.
    """

    def call(self, inputs, training=None, mask=None):
        fused = (training and self.trainable and mask is None and not self.renorm and self.scale and self.center
                 and not self.synchronized and len(inputs.shape) == 4 and self.axis in (-1, 3))
        if not fused:
            return super().call(inputs, training=training, mask=mask)
        x = tf.cast(inputs, self.compute_dtype)
        y, mean, variance, *_ = tf.raw_ops.FusedBatchNormV3(
            x=x, scale=tf.cast(self.gamma, tf.float32), offset=tf.cast(self.beta, tf.float32),
            mean=tf.constant([], tf.float32), variance=tf.constant([], tf.float32),
            epsilon=self.epsilon, data_format="NHWC", is_training=True)
        n = tf.cast(tf.reduce_prod(tf.shape(x)[:-1]), tf.float32)
        variance = variance * (n - 1.0) / n
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        return y
