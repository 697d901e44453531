"""Speed of FID features: the FID Inception-v3 as the TorchScript module runs it (float32)
against the fused paths of model/eval/fast_inception.py, on the same real faces, with both FIDs.

    python bench/fid_speed.py --data ../shared/data/celeba/img_align_celeba [--n 250]
        [--precisions reference,float32,bfloat16] [--batch-size 16] [--no-sqrtm]

Takes 2n aligned CelebA photos (center 108x108 -> 64x64, as bench/fid_sanity.py), halves
A and B, and B blurred (sigma 1 px: an FID in the range of a trained generator's). For each
way of running the network (``--precisions``; ``auto`` is what EvaluateGenerator uses here)
it computes the features of all three sets, interleaving the paths set by set so that a
change of machine load hits them alike, and reports:

* ``images_per_s``: images through resize + network per wall-clock second, and
  ``images_per_cpu_s`` per CPU-second of this process (steadier on a shared machine:
  times the thread count it approximates the rate on a quiet machine);
* ``fid_halves`` (A vs B) and ``fid_blur`` (A vs blurred B), and their relative
  difference from the reference path's (``fid_rel_diff``), plus the mean relative
  difference of the features themselves;
* ``resize_ms_per_image``: the reference bilinear resize to 299x299, batched (two matrix
  products per batch) against one product per image and channel (how it was done before);
* ``fid_cpu_seconds``: one FID (A vs B) through the 2048-d ``sqrtm`` of the reference and
  through the n < d form :func:`model.eval.metrics.frechet_distance_low_rank`, and their
  relative difference (``--no-sqrtm`` leaves out the ``sqrtm``, 20-60 s of CPU: the low-rank
  time only; with ``--n 2 --batch-size 2 --precisions reference,float32`` the benchmark is the
  smoke run of tests/test_bench_smoke.py).

The targets (issue 18): >= 30 images/s and FID within 1% of the float32 features. Prints one
JSON line last, with the CPU model, its bfloat16 units, torch's thread count and the load
average before and after.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402
from fid_sanity import blur, load_faces  # noqa: E402

from model.cpu import bf16_units, cpu_model  # noqa: E402
from model.eval import metrics  # noqa: E402


def resize_per_image(images: np.ndarray, size: int = metrics.INCEPTION_SIZE) -> np.ndarray:
    """The resize as it was done before: one small product per image and channel (NCHW)."""
    x = np.asarray(images, np.float32)
    rows = metrics.legacy_bilinear_weights(x.shape[1], size)
    cols = metrics.legacy_bilinear_weights(x.shape[2], size)
    return rows @ np.ascontiguousarray(x.transpose(0, 3, 1, 2)) @ cols.T


def resize_times(images: np.ndarray, repeats: int = 3) -> dict:
    """CPU milliseconds per image of both resizes (best of ``repeats``), and their largest difference."""
    out = {}
    for name, fn in (("batched", lambda: metrics.resize_bilinear_reference(images, channels_first=True)),
                     ("per_image", lambda: resize_per_image(images))):
        best = float("inf")
        for _ in range(repeats):
            start = time.process_time()
            result = fn()
            best = min(best, time.process_time() - start)
        out[name] = (round(1000 * best / len(images), 2), result)
    diff = float(np.abs(out["batched"][1] - out["per_image"][1]).max())
    return {"batched": out["batched"][0], "per_image": out["per_image"][0], "max_abs_diff": diff}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="folder of aligned CelebA JPEGs (img_align_celeba)")
    parser.add_argument("--n", type=int, default=250, help="images per half (default 250)")
    parser.add_argument("--precisions", default="reference,float32,auto",
                        help="ways to run the network, the first is the reference "
                             f"(of {', '.join(metrics.FEATURE_PRECISIONS)})")
    parser.add_argument("--batch-size", type=int, default=metrics.FEATURE_BATCH)
    parser.add_argument("--sqrtm", action=argparse.BooleanOptionalAction, default=True,
                        help="time the 2048-d sqrtm FID against the low-rank one (--no-sqrtm: the low-rank only)")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    start = time.time()

    def log(text):
        print(f"[{time.time() - start:6.0f} s] {text}", file=sys.stderr, flush=True)

    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    resolved = {p: metrics.resolve_feature_precision(p) for p in precisions}
    try:
        networks = {p: metrics.load_feature_network(None, args.batch_size, p) for p in precisions}
    except metrics.FeatureNetworkMissing as exc:
        raise SystemExit(str(exc)) from None
    images = load_faces(args.data, 2 * args.n)
    sets = {"A": images[:args.n], "B": images[args.n:], "B_blur": blur(images[args.n:], 1.0)}
    for network in networks.values():  # warm-up: oneDNN builds its kernels for this batch shape
        network(images[:args.batch_size])

    feats = {p: {} for p in precisions}
    wall = dict.fromkeys(precisions, 0.0)
    cpu = dict.fromkeys(precisions, 0.0)
    for name, batch in sets.items():
        for p, network in networks.items():
            w, c = time.time(), time.process_time()
            feats[p][name] = network(batch)
            wall[p] += time.time() - w
            cpu[p] += time.process_time() - c
            log(f"{name} {p}: {len(batch) / (time.time() - w):.2f} images/s")

    import torch
    ref = precisions[0]
    total = sum(len(b) for b in sets.values())
    paths = {}
    for p in precisions:
        fid_halves = metrics.fid_from_features(feats[p]["A"], feats[p]["B"])
        fid_blur = metrics.fid_from_features(feats[p]["A"], feats[p]["B_blur"])
        paths[p] = {"runs": networks[p].name, "images_per_s": round(total / wall[p], 2),
                    "images_per_cpu_s": round(total / cpu[p], 2),
                    "fid_halves": round(fid_halves, 4), "fid_blur": round(fid_blur, 4)}
    for p in precisions:
        r = paths[p]
        r["speedup"] = round(paths[ref]["images_per_s"] and r["images_per_s"] / paths[ref]["images_per_s"], 2)
        r["cpu_speedup"] = round(r["images_per_cpu_s"] / paths[ref]["images_per_cpu_s"], 2)
        r["fid_rel_diff"] = round(max(abs(r["fid_halves"] / paths[ref]["fid_halves"] - 1),
                                      abs(r["fid_blur"] / paths[ref]["fid_blur"] - 1)), 5)
        a, b = np.concatenate(list(feats[p].values())), np.concatenate(list(feats[ref].values()))
        r["feature_rel_diff"] = round(float(np.abs(a - b).mean() / np.abs(b).mean()), 6)
    fast = paths[precisions[-1]]
    a, b = feats[precisions[-1]]["A"], feats[precisions[-1]]["B"]
    via_sqrtm = sqrtm_s = None
    if args.sqrtm:
        start_fid = time.process_time()
        sa, sb = metrics.statistics(a), metrics.statistics(b)
        via_sqrtm = metrics.frechet_distance(sa.mu, sa.sigma, sb.mu, sb.sigma)
        sqrtm_s = round(time.process_time() - start_fid, 2)
    start_fid = time.process_time()
    low_rank = metrics.fid_from_features(a, b)
    low_rank_s = time.process_time() - start_fid
    result = {
        "cpu": cpu_model(), "bf16_units": bf16_units(), "torch_threads": torch.get_num_threads(),
        "load_before": [round(x, 2) for x in load_before], "load_after": [round(x, 2) for x in os.getloadavg()],
        "n": args.n, "images_per_path": total, "batch_size": args.batch_size,
        "resolved": resolved, "paths": paths,
        "resize_ms_per_image": resize_times(images[:args.batch_size]),
        "fid_cpu_seconds": {"sqrtm": sqrtm_s, "low_rank": round(low_rank_s, 3),
                            "rel_diff": abs(low_rank / via_sqrtm - 1) if args.sqrtm else None},
        "images_per_s": fast["images_per_s"], "reference_images_per_s": paths[ref]["images_per_s"],
        "fid_rel_diff": fast["fid_rel_diff"],
        "targets": {"images_per_s_30": fast["images_per_s"] >= 30, "fid_within_1pct": fast["fid_rel_diff"] <= 0.01},
        "minutes": round((time.time() - start) / 60, 2),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
