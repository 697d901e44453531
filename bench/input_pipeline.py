"""Input pipeline benchmark: can the reader keep the DCGAN training step fed?

    .venv/bin/python bench/input_pipeline.py --records processed/records/celeba/<hash>/v-<version>

``--records`` is a version folder (with manifest.json) or a records folder
holding ``latest.json``. Measures, on this machine, in this run:

- images_per_s: model.train.data.image_dataset (interleaved reads, shuffle buffer,
  batch 64, parallel parse, raw-byte decode, dequantisation to [-1, 1],
  prefetch; deterministic order as training uses it), batches pulled as fast
  as possible;
- train_images_per_s: the default DCGAN training step (model.train.loop.GANTrainer
  with TrainConfig() at TrainDCGAN's default precision, batch 64) on a fixed batch;
- ratio = images_per_s / train_images_per_s (target >= 10, and images_per_s >= 20000);
- with ``--compare-png``, the same reader over a PNG copy of the split, and
  the bytes per example of both formats (why the records store raw bytes);
- with ``--shard-sizes 64,256,1024``, the reader over copies with that many
  examples per file (how big record files must be on this disk).

``--train-batch`` and ``--train-width`` change the timed training step's batch and
generator width (default: TrainConfig's, 64 and 128); with them, ``--seconds 0.2`` and
``--train-steps 1`` the benchmark runs in seconds (tests/test_bench_smoke.py), its figures
then only a smoke check.

Prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def version_folder(path: str) -> Path:
    folder = Path(path)
    if (folder / "latest.json").exists():
        folder = folder / json.loads((folder / "latest.json").read_text())["version"]
    if not (folder / "manifest.json").exists():
        sys.exit(f"{path}: no manifest.json (nor latest.json): pass a records version folder, "
                 f"e.g. processed/records/sample/<hash>/v-<version>")
    return folder


def split_images(folder: Path, split: str):
    """``(n, S, S, C)`` float32 images in [-1, 1] of every record of ``split`` in the version
    ``folder``, in file order (bench/sharpness_norm.py, bench/egan.py)."""
    import numpy as np
    import tensorflow as tf

    from model.train.data import decode_images, parse_spec
    from pipeline.records import read_info, split_files

    size = read_info(folder)["image_shape"][0]
    batches = tf.data.TFRecordDataset(split_files(folder, split)).batch(512).map(
        lambda b: decode_images(tf.io.parse_example(b, parse_spec(names=("image",)))["image"], size))
    return np.concatenate([b.numpy() for b in batches])


def reader_rate(folder: Path, split: str, batch: int, seconds: float, deterministic: bool = True) -> float:
    """Images per second pulled from image_dataset, after a warm-up that fills the shuffle buffer."""
    from model.train.data import image_dataset
    it = iter(image_dataset(folder, split, batch, deterministic=deterministic))
    for _ in range(200):  # fills the 10,000-image shuffle buffer, starts the threads
        next(it)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(50):
            next(it)
        n += 50
    return n * batch / (time.perf_counter() - start)


def train_rate(folder: Path, split: str, steps: int, batch: int | None = None, width: int | None = None) -> float:
    """Images per second through the default DCGAN training step (TrainDCGAN's precision;
    ``batch`` and ``width``: another batch size and base width than the default's)."""
    from dataclasses import replace

    from model.train.data import image_dataset
    from model.train.loop import GANTrainer, TrainConfig
    from tasks.train import TrainDCGAN
    config = TrainConfig(precision=TrainDCGAN.precision._default)
    config = replace(config, batch_size=batch or config.batch_size, base_width=width or config.base_width)
    real = next(iter(image_dataset(folder, split, config.batch_size)))
    trainer = GANTrainer(config)
    for _ in range(2):  # trace and warm up
        trainer.train_step(real)["d_loss"].numpy()
    start = time.perf_counter()
    for _ in range(steps):
        out = trainer.train_step(real)
    out["d_loss"].numpy()
    return steps * config.batch_size / (time.perf_counter() - start)


def rewrite(folder: Path, split: str, out: Path, image_format: str = "raw",
            per_file: int | None = None) -> Path:
    """The split copied as a version folder under ``out``: images re-encoded as
    ``image_format``, ``per_file`` examples per record file (default: one file)."""
    import numpy as np
    import tensorflow as tf

    from model.train.data import record_files
    from pipeline.records import RecordWriter, encode_image, read_info, write_version
    size = read_info(folder)["image_shape"][0]
    records = [r.numpy() for r in tf.data.TFRecordDataset(record_files(folder, split))]
    per_file = per_file or len(records)
    shards = []
    for i in range(0, len(records), per_file):
        shard = out / f"shard-{i:07d}"
        shard.mkdir(parents=True)
        with RecordWriter(shard / f"{split}.tfrecord") as writer:
            for record in records[i:i + per_file]:
                if image_format != "raw":
                    example = tf.train.Example.FromString(record)
                    image = example.features.feature["image"].bytes_list.value
                    image[0] = encode_image(np.frombuffer(image[0], np.uint8).reshape(size, size, 3),
                                            image_format)
                    record = example.SerializeToString()
                writer.write(record)
        n = len(records[i:i + per_file])
        shards.append((shard.name, shard, {"lengths": {split: n},
                                           "bytes": {split: (shard / f"{split}.tfrecord").stat().st_size}}))
    (out / "v").mkdir()
    write_version(out / "v", "copy", size, shards, image_format, version="copy")
    return out / "v"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", required=True, help="Version folder, or records folder with latest.json.")
    parser.add_argument("--split", default="train")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10.0, help="Time spent pulling batches.")
    parser.add_argument("--train-steps", type=int, default=5, help="Timed DCGAN steps.")
    parser.add_argument("--train-batch", type=int, default=None,
                        help="Batch of the timed steps (default: TrainConfig's, 64).")
    parser.add_argument("--train-width", type=int, default=None,
                        help="Base width of the timed DCGAN (default: TrainDCGAN's, 128).")
    parser.add_argument("--compare-png", action="store_true", help="Also measure a PNG copy.")
    parser.add_argument("--shard-sizes", default="", help="Also measure copies with this many "
                                                          "examples per file, e.g. 64,256,1024.")
    args = parser.parse_args()

    from pipeline.records import read_info
    folder = version_folder(args.records)
    info = read_info(folder)
    split = info["splits"][args.split]
    images_per_s = reader_rate(folder, args.split, args.batch, args.seconds)
    result = {"records": str(folder), "version": info.get("version"), "split": args.split,
              "examples": split["num_examples"], "files": len(split["files"]), "batch": args.batch,
              "bytes_per_example": round(split["num_bytes"] / split["num_examples"]),
              "images_per_s": round(images_per_s),
              "images_per_s_nondeterministic": round(reader_rate(folder, args.split, args.batch,
                                                                 args.seconds, deterministic=False))}
    if args.compare_png:
        with tempfile.TemporaryDirectory(prefix="png-bench-") as tmp:
            png = rewrite(folder, args.split, Path(tmp), "png")
            png_split = read_info(png)["splits"][args.split]
            result["png_bytes_per_example"] = round(png_split["num_bytes"] / png_split["num_examples"])
            result["png_images_per_s"] = round(reader_rate(png, args.split, args.batch, args.seconds))
    for per_file in filter(None, args.shard_sizes.split(",")):
        with tempfile.TemporaryDirectory(prefix="shard-bench-") as tmp:
            copy = rewrite(folder, args.split, Path(tmp), per_file=int(per_file))
            copied = read_info(copy)["splits"][args.split]
            mib = copied["num_bytes"] / len(copied["files"]) / 2**20
            result.setdefault("images_per_s_by_file_mib", {})[f"{mib:.1f}"] = round(
                reader_rate(copy, args.split, args.batch, args.seconds))
    train_images_per_s = train_rate(folder, args.split, args.train_steps, args.train_batch, args.train_width)
    result.update({"train_images_per_s": round(train_images_per_s, 1),
                   "ratio": round(images_per_s / train_images_per_s, 1),
                   "cpus": len(os.sched_getaffinity(0))})
    result["meets_targets"] = result["ratio"] >= 10 and images_per_s >= 20000
    print(json.dumps(result))


if __name__ == "__main__":
    main()
