"""The fast layers (model/nets/layers.py) and FusedAdam (model/train/optim.py) compute what their
Keras parents compute: values, gradients and state."""
from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

import model.nets.layers  # noqa: E402
from model.nets.layers import (  # noqa: E402
    FusedBatchNormalization,
    MatmulConv2D,
    MatmulConv2DTranspose,
    col2im_matmul,
    im2col,
    kernel_from_space_to_depth,
    kernel_to_space_to_depth,
)

NATIVE_CONV_OPS = {"Conv2D", "Conv2DBackpropInput", "Conv2DBackpropFilter"}


@pytest.fixture
def matmul_in_float32(monkeypatch):
    """Take the matmul route in float32 up to side 8, so it can be compared to the native kernels exactly."""
    monkeypatch.setattr(model.nets.layers, "MATMUL_MAX_SIDE", {"bfloat16": 8, "float32": 8})
    monkeypatch.setattr(model.nets.layers, "MATMUL_MAX_SIDE_BY_ISA", {})


def _pair(fast_cls, plain_cls, shape, dtype, **kw):
    fast, plain = fast_cls(dtype=dtype, **kw), plain_cls(dtype=dtype, **kw)
    fast.build(shape)
    plain.build(shape)
    plain.set_weights(fast.get_weights())
    return fast, plain


def _value_and_grads(layer, x, **call):
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = tf.cast(layer(x, **call), tf.float32)
        loss = tf.reduce_sum(y * tf.random.stateless_normal(y.shape, (0, 1)))  # weighted: mean-free gradients
    grads = tape.gradient(loss, [x] + layer.trainable_variables)
    return [y.numpy()] + [tf.cast(g, tf.float32).numpy() for g in grads]


def _grad_op_types(layer, x) -> set[str]:
    """Op types in the graph of the layer's forward pass and gradients (where the route shows)."""
    def grads(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
        return tape.gradient(y, [x] + layer.trainable_variables)
    return {op.type for op in tf.function(grads).get_concrete_function(x).graph.get_operations()}


def _assert_matmul_route(layer, x):
    ops = _grad_op_types(layer, x)
    assert {"SpaceToDepth", "DepthToSpace", "MatMul"} <= ops and not ops & NATIVE_CONV_OPS, ops


def _close(a, b, rel):
    for u, v in zip(a, b):
        assert u.shape == v.shape
        assert np.max(np.abs(u - v)) <= rel * max(np.max(np.abs(v)), 1e-6)


CONV = dict(strides=2, padding="same", bias_initializer=keras.initializers.RandomNormal(0, 0.5))


@pytest.mark.parametrize("k,size,use_bias", [(4, 8, False), (5, 16, True), (4, 6, False), (3, 7, True), (4, 2, True)])
def test_matmul_conv_matches_conv2d(matmul_in_float32, k, size, use_bias):
    shape = (3, size, size, 5)
    x = tf.random.stateless_normal(shape, (1, 2))
    fast, plain = _pair(MatmulConv2D, keras.layers.Conv2D, shape, "float32", filters=7, kernel_size=k,
                        use_bias=use_bias, **CONV)
    _assert_matmul_route(fast, x)
    _close(_value_and_grads(fast, x), _value_and_grads(plain, x), 1e-5)


@pytest.mark.parametrize("k,size,use_bias", [(4, 4, False), (5, 8, True), (4, 3, True), (3, 2, False)])
def test_matmul_conv_transpose_matches_conv2d_transpose(matmul_in_float32, k, size, use_bias):
    shape = (3, size, size, 6)
    x = tf.random.stateless_normal(shape, (3, 4))
    fast, plain = _pair(MatmulConv2DTranspose, keras.layers.Conv2DTranspose, shape, "float32",
                        filters=5, kernel_size=k, use_bias=use_bias, **CONV)
    _assert_matmul_route(fast, x)
    _close(_value_and_grads(fast, x), _value_and_grads(plain, x), 1e-5)


@pytest.mark.parametrize("fast_cls,plain_cls,size", [(MatmulConv2D, keras.layers.Conv2D, 8),
                                                     (MatmulConv2DTranspose, keras.layers.Conv2DTranspose, 4)])
def test_a_frozen_layer_computes_the_same_and_its_input_gradient(matmul_in_float32, fast_cls, plain_cls, size):
    """freeze() (inference copies: model.train.serving.fast_copy) makes the regrouped kernel a
    constant: same output and input gradient, and no kernel regrouping per call."""
    shape = (2, size, size, 6)
    x = tf.random.stateless_normal(shape, (7, 8))
    fast, plain = _pair(fast_cls, plain_cls, shape, "float32", filters=5, kernel_size=4, **CONV)
    fast.freeze()

    def value_and_input_grad(layer):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            loss = tf.reduce_sum(y * tf.random.stateless_normal(y.shape, (0, 1)))
        return [y.numpy(), tape.gradient(loss, x).numpy()]

    got = value_and_input_grad(fast)
    _close(got, value_and_input_grad(plain), 1e-5)
    ops = {op.type for op in tf.function(lambda x: fast(x)).get_concrete_function(x).graph.get_operations()}
    assert "Transpose" not in ops and "MatMul" in ops and not ops & NATIVE_CONV_OPS, ops
    fast.kernel.assign(fast.kernel * 2)  # frozen: the constant, until freeze() again
    np.testing.assert_allclose(fast(x).numpy(), got[0], rtol=1e-6)
    fast.freeze()
    assert np.max(np.abs(fast(x).numpy() - got[0])) > 1e-3


@pytest.mark.parametrize("fast_cls,plain_cls,shape", [(MatmulConv2D, keras.layers.Conv2D, (4, 8, 8, 16)),
                                                      (MatmulConv2DTranspose, keras.layers.Conv2DTranspose,
                                                       (4, 4, 4, 16))])
def test_matmul_route_in_bfloat16_agrees_with_float32(fast_cls, plain_cls, shape):
    """The default route (bfloat16, small side <= 8) stays within bfloat16 rounding of float32."""
    x = tf.random.stateless_normal(shape, (5, 5))
    fast = fast_cls(filters=8, kernel_size=4, dtype="mixed_bfloat16", **CONV)
    reference = plain_cls(filters=8, kernel_size=4, dtype="float32", **CONV)
    fast.build(shape)
    reference.build(shape)
    reference.set_weights(fast.get_weights())
    _assert_matmul_route(fast, tf.cast(x, tf.bfloat16))
    _close(_value_and_grads(fast, tf.cast(x, tf.bfloat16)), _value_and_grads(reference, x), 3e-2)


@pytest.mark.parametrize("k,size", [(4, 8), (5, 8), (3, 7)])
def test_im2col_times_regrouped_kernel_is_the_convolution(k, size):
    x = tf.random.stateless_normal((2, size, size, 3), (5, 6))
    w = tf.random.stateless_normal((k, k, 3, 8), (7, 8))
    out = -(-size // 2)
    via_matmul = tf.matmul(im2col(x, k, 2, out, out), kernel_to_space_to_depth(w, 2))
    np.testing.assert_allclose(tf.reshape(via_matmul, [2, out, out, 8]).numpy(),
                               tf.nn.conv2d(x, w, 2, "SAME").numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(kernel_from_space_to_depth(kernel_to_space_to_depth(w, 2), k, 2, 3).numpy(),
                                  w.numpy())


@pytest.mark.parametrize("k,size,s", [(4, 8, 2), (5, 9, 2), (3, 7, 2), (4, 6, 3)])
def test_col2im_matmul_is_the_adjoint_of_the_im2col_convolution(k, size, s):
    """<im2col(x) @ K, c> == <x, col2im_matmul(c, K)> for all x, c: every patch entry goes
    back to the pixel it came from, padding dropped."""
    out = -(-size // s)
    x = tf.random.stateless_normal((2, size, size, 3), (1, 3))
    grid_kernel = kernel_to_space_to_depth(tf.random.stateless_normal((k, k, 3, 4), (2, 5)), s)
    y = tf.matmul(im2col(x, k, s, out, out), grid_kernel)
    c = tf.random.stateless_normal(y.shape, (2, 4))
    back = col2im_matmul(c, grid_kernel, k, s, size, size, out, out)
    assert back.shape == x.shape
    np.testing.assert_allclose(float(tf.reduce_sum(y * c)), float(tf.reduce_sum(x * back)), rtol=1e-5)


AVX512_FLAGS = "fma avx avx2 avx512f avx512bw avx512_bf16"
AVX2_FLAGS = "fma avx avx2"


@pytest.mark.parametrize("flags,dtype,size,route", [
    (AVX512_FLAGS, "float32", 8, True), (AVX512_FLAGS, "float32", 16, False),
    (AVX512_FLAGS, "mixed_bfloat16", 16, True), (AVX512_FLAGS, "mixed_bfloat16", 32, False),
    (AVX2_FLAGS, "float32", 16, True), (AVX2_FLAGS, "float32", 32, False)])
def test_default_route_by_cpu_kind_dtype_and_side(monkeypatch, flags, dtype, size, route):
    """The matmul route for convolutions up to side 4 in float32 and 8 in bfloat16, and up to 8
    in float32 on an AVX2 CPU (MATMUL_MAX_SIDE_BY_ISA); elsewhere the parent's call runs:
    identical bits."""
    monkeypatch.setenv("FACEGAN_CPU_FLAGS", flags)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    shape = (2, size, size, 4)
    fast, plain = _pair(MatmulConv2D, keras.layers.Conv2D, shape, dtype, filters=3, kernel_size=4, strides=2,
                        padding="same")
    x = tf.cast(tf.random.stateless_normal(shape, (9, 9)), fast.compute_dtype)
    if route:
        _assert_matmul_route(fast, x)
    else:
        assert "Conv2D" in _grad_op_types(fast, x)
        np.testing.assert_array_equal(np.asarray(tf.cast(fast(x), tf.float32)),
                                      np.asarray(tf.cast(plain(x), tf.float32)))


@pytest.mark.parametrize("dtype,rel", [("float32", 1e-4), ("mixed_bfloat16", 2e-2)])
def test_fused_batch_norm_matches_batch_normalization(dtype, rel):
    shape = (4, 5, 5, 6)
    kw = dict(momentum=0.9, epsilon=1e-5, gamma_initializer=keras.initializers.RandomNormal(1.0, 0.3),
              beta_initializer=keras.initializers.RandomNormal(0.0, 0.3))
    fast, plain = _pair(FusedBatchNormalization, keras.layers.BatchNormalization, shape, dtype, **kw)
    x = tf.cast(tf.random.stateless_normal(shape, (1, 1)) * 3 + 2, fast.compute_dtype)
    assert "FusedBatchNormV3" in {op.type for op in tf.function(lambda v: fast(v, training=True))
                                  .get_concrete_function(x).graph.get_operations()}
    _close(_value_and_grads(fast, x, training=True), _value_and_grads(plain, x, training=True), rel)
    # the moving statistics follow the parent's rule (biased variance, momentum 0.9)
    np.testing.assert_allclose(fast.moving_mean.numpy(), plain.moving_mean.numpy(), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(fast.moving_variance.numpy(), plain.moving_variance.numpy(), rtol=1e-3, atol=1e-4)
    # inference uses them the same way
    _close([fast(x, training=False).numpy().astype(np.float32)],
           [plain(x, training=False).numpy().astype(np.float32)], rel)


@pytest.mark.parametrize("shape", [(7,), (3, 4, 5, 6)])
def test_fused_adam_matches_adam(shape):
    from model.train.optim import FusedAdam
    start = tf.random.stateless_normal(shape, (2, 3))
    fused_var, plain_var = keras.Variable(start), keras.Variable(start)
    fused, plain = FusedAdam(2e-3, beta_1=0.5), keras.optimizers.Adam(2e-3, beta_1=0.5)
    for i in range(5):
        grad = tf.random.stateless_normal(shape, (i, 7)) * 10.0 ** (i - 2)
        fused.apply_gradients([(grad, fused_var)])
        plain.apply_gradients([(grad, plain_var)])
    assert not np.allclose(fused_var.numpy(), start.numpy())
    np.testing.assert_allclose(fused_var.numpy(), plain_var.numpy(), rtol=1e-5, atol=1e-7)
    assert len(fused.variables) == len(plain.variables)  # same state: iterations, lr, m, v
    for a, b in zip(fused.variables, plain.variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-9)  # float32 rounding


@pytest.mark.parametrize("flags,transposed,side,route", [
    (AVX2_FLAGS, False, 8, True), (AVX2_FLAGS, True, 8, False), (AVX2_FLAGS, True, 4, True),
    (AVX512_FLAGS, False, 8, False), (AVX512_FLAGS, True, 4, True)])
def test_the_route_is_chosen_per_cpu_kind_and_direction(monkeypatch, flags, transposed, side, route):
    """float32 on AVX2: D's 16->8 convolution goes down the matmul route, G's 8->16 transposed
    one keeps the native kernel (bench/conv_route.py on an AVX2 AMD EPYC)."""
    from model.nets.layers import matmul_route_for

    monkeypatch.setenv("FACEGAN_CPU_FLAGS", flags)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    assert matmul_route_for("float32", side, transposed) is route
