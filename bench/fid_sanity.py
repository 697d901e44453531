"""Sanity of the FID implementation on real faces: FID(X, X), disjoint halves, blur and noise sweeps.

    python bench/fid_sanity.py --data ../shared/data/celeba/img_align_celeba [--n 150] [--seeds 3]
        [--plot docs/images/fid_sanity.png] [--feature-network PATH] [--resize-check]

Takes 2n aligned CelebA photos (178x218), crops the central 108x108 face
region as DCGAN-tensorflow does and resizes it to 64x64 (cv2 INTER_AREA): the
images the DCGAN is compared against. With the FID Inception-v3 of model/eval/metrics.py
it measures, with n images per set:

* ``fid_self``: FID of a half with itself (0 up to round-off);
* ``fid_halves``: FID between two disjoint random halves, for ``--seeds`` splits
  (the floor that real-vs-real FID has at this n), with their spread;
* ``blur``: FID of half A against half B blurred by a Gaussian of sigma px (at 64x64);
* ``noise``: FID of half A against half B plus Gaussian noise of sigma x 255, clipped;

each sweep with a ``monotonic`` flag, and draws both sweeps into ``--plot``.
``--resize-check`` also computes the halves' FID with torch's half-pixel bilinear
resize (``F.interpolate(align_corners=False)``, pytorch-fid's) instead of the
reference's legacy TF resize, to show how much that choice moves FID.

The default n=150 (1,200 Inception passes and 10 FIDs) keeps the run around 10
minutes on 2 busy CPU cores (Inception runs at 0.15-0.4 s per image there, each
2048-d ``sqrtm`` takes 20-45 s); FID at n=150 is far above its n=10k value (FID is
biased upwards at small n), so only compare figures at equal n. Prints one JSON
line last.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from model.eval import metrics  # noqa: E402

BLUR_SIGMAS = (0.5, 1.0, 2.0)        # px at 64x64; 0 is the clean halves
NOISE_SIGMAS = (0.05, 0.1, 0.2)      # fraction of 255


def load_faces(folder: str, count: int, seed: int = 0) -> np.ndarray:
    """``count`` random photos of ``folder``, center-cropped 108x108 and resized to 64x64."""
    from PIL import Image
    files = sorted(Path(folder).glob("*.jpg"))
    if len(files) < count:
        raise SystemExit(f"{folder}: {len(files)} JPEGs, need {count} (lower --n)")
    pick = np.random.default_rng(seed).choice(len(files), count, replace=False)
    out = np.empty((count, 64, 64, 3), np.uint8)
    for k, i in enumerate(pick):
        rgb = np.asarray(Image.open(files[i]).convert("RGB"))
        h, w = rgb.shape[:2]
        top, left = (h - 108) // 2, (w - 108) // 2
        out[k] = cv2.resize(rgb[top:top + 108, left:left + 108], (64, 64), interpolation=cv2.INTER_AREA)
    return out


def blur(images: np.ndarray, sigma: float) -> np.ndarray:
    return np.stack([cv2.GaussianBlur(im, (0, 0), sigma) for im in images])


def add_noise(images: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    noisy = images + np.random.default_rng(seed).normal(0, 255 * sigma, images.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def half_pixel_features(network: metrics.FeatureNetwork, images: np.ndarray) -> np.ndarray:
    """Features with torch's ``F.interpolate(bilinear, align_corners=False)`` resize instead."""
    import torch
    import torch.nn.functional as F
    out = []
    for i in range(0, len(images), network.batch_size):
        x = torch.from_numpy(images[i:i + network.batch_size]).permute(0, 3, 1, 2).float()
        x = F.interpolate(x, (299, 299), mode="bilinear", align_corners=False, antialias=False)
        if network.layout == "NHWC":
            x = x.permute(0, 2, 3, 1).contiguous()
        out.append(network.net(metrics.to_inception_range(x.numpy())))
    return np.concatenate(out).astype(np.float64)


def plot(result: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    halves = result["fid_halves"]
    for ax, key, label in ((axes[0], "blur", "Gaussian blur sigma (px at 64x64)"),
                           (axes[1], "noise", "additive noise sigma (x 255)")):
        sweep = result[key]
        ax.plot(sweep["sigmas"], sweep["fid"], "o-", label="half A vs perturbed half B")
        ax.axhspan(min(halves), max(halves), color="tab:green", alpha=0.25,
                   label=f"clean halves, {len(halves)} seeds")
        ax.set_xlabel(label)
        ax.set_ylabel("FID")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"FID sanity on aligned CelebA, n={result['n']} per set "
                 f"(fid_self={result['fid_self']:.2g})", fontsize=10)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="folder of aligned CelebA JPEGs (img_align_celeba)")
    parser.add_argument("--n", type=int, default=150, help="images per set (default 150)")
    parser.add_argument("--seeds", type=int, default=3, help="random half splits (default 3)")
    parser.add_argument("--plot", default="docs/images/fid_sanity.png", help="where to draw the sweeps")
    parser.add_argument("--feature-network", default=None, help="TorchScript/.keras file (default: "
                                                                  "the FID Inception-v3)")
    parser.add_argument("--resize-check", action="store_true",
                        help="also compute the halves' FID with torch's half-pixel resize")
    args = parser.parse_args(argv)
    start = time.time()

    def log(text):
        print(f"[{time.time() - start:6.0f} s] {text}", file=sys.stderr, flush=True)

    try:
        network = metrics.load_feature_network(args.feature_network)
    except metrics.FeatureNetworkMissing as exc:
        raise SystemExit(str(exc)) from None
    images = load_faces(args.data, 2 * args.n)
    log(f"features of {len(images)} faces")
    pool = metrics.compute_features(network, images)
    splits = [np.random.default_rng(s).permutation(2 * args.n) for s in range(args.seeds)]
    a, b = splits[0][:args.n], splits[0][args.n:]

    result: dict = {"n": args.n, "images": f"{args.data} (center 108x108 -> 64x64)"}
    result["fid_self"] = metrics.fid_from_features(pool[a], pool[a])
    log(f"fid_self {result['fid_self']:.3g}")
    halves = []
    for split in splits:
        halves.append(metrics.fid_from_features(pool[split[:args.n]], pool[split[args.n:]]))
        log(f"fid_halves {halves[-1]:.2f}")
    result["fid_halves"] = halves
    result["fid_halves_mean"] = float(np.mean(halves))
    result["fid_halves_spread"] = float(max(halves) - min(halves))
    result["fid_halves_rel_spread"] = result["fid_halves_spread"] / result["fid_halves_mean"]

    for key, sigmas, perturb in (("blur", BLUR_SIGMAS, blur), ("noise", NOISE_SIGMAS, add_noise)):
        values = [halves[0]]
        for sigma in sigmas:
            feats = metrics.compute_features(network, perturb(images[b], sigma))
            values.append(metrics.fid_from_features(pool[a], feats))
            log(f"{key} {sigma}: FID {values[-1]:.2f}")
        result[key] = {"sigmas": [0.0, *sigmas], "fid": values,
                       "monotonic": bool(all(x < y for x, y in zip(values, values[1:])))}

    if args.resize_check:
        if not isinstance(network, metrics.FeatureNetwork) or network.input_size != metrics.INCEPTION_SIZE:
            raise SystemExit("--resize-check needs the TorchScript Inception network")
        fa, fb = half_pixel_features(network, images[a]), half_pixel_features(network, images[b])
        result["resize_check"] = {
            "fid_halves_legacy_tf": halves[0],
            "fid_halves_half_pixel": metrics.fid_from_features(fa, fb),
            "fid_legacy_vs_half_pixel_same_images": metrics.fid_from_features(pool[a], fa),
            "mean_rel_feature_change": float(np.mean(np.abs(fa - pool[a])) / np.mean(np.abs(pool[a]))),
        }
        log(f"resize check {result['resize_check']}")

    result["minutes"] = round((time.time() - start) / 60, 2)
    if args.plot:
        plot(result, args.plot)
        result["plot"] = args.plot
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
