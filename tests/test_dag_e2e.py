"""The whole DAG on a tiny sample, through a real (local) Luigi scheduler."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import luigi
import numpy as np
import pytest
from luigi.execution_summary import LuigiStatusCode
from PIL import Image

N_PHOTOS = 32


@pytest.fixture
def tiny(luigi_config):
    luigi_config("Sample", "n", N_PHOTOS)
    luigi_config("DetectAlignFaces", "shard_size", 12)  # 3 shards
    luigi_config("TrainDCGAN", "steps", 2)
    luigi_config("TrainDCGAN", "batch_size", 8)
    luigi_config("ExportSamples", "n", 5)
    return luigi_config


@pytest.mark.slow
def test_sample_to_exported_samples(tiny, started_tasks):
    import tasks

    result = luigi.build([tasks.ExportSamples()], local_scheduler=True, detailed_summary=True)
    assert result.status == LuigiStatusCode.SUCCESS, result.summary_text

    # Every input photo is either aligned or rejected with a reason.
    align = tasks.DetectAlignFaces()
    summary = json.loads(open(align.output().path).read())
    assert summary["inputs"] == N_PHOTOS
    assert summary["images_with_faces"] + summary["rejected"] == N_PHOTOS
    assert len(summary["shards"]) == 3
    rejected = []
    for shard in summary["shards"]:
        rejected += [json.loads(line) for line in open(f"{shard['folder']}/rejected.jsonl")]
    assert len(rejected) == summary["rejected"]
    assert all(r["reason"] and r["detail"] for r in rejected)
    assert summary["faces"] >= N_PHOTOS * 0.8  # the portraits are clear, frontal faces

    # The records hold exactly the aligned faces, 64x64x3: one record shard
    # per aligned shard, split into train/validation/test.
    import tensorflow as tf

    from model.train.data import parse_images, record_files
    from pipeline.records import read_info
    records = tasks.BuildTFRecords().folder()
    info = read_info(records)
    assert sum(s["num_examples"] for s in info["splits"].values()) == summary["faces"]
    assert len(info["splits"]["train"]["shard_lengths"]) == 3
    files = record_files(records, "train")
    assert [f.rsplit("/", 1)[1] for f in files] == [
        f"sample64-train.tfrecord-0000{i}-of-00003" for i in range(3)]
    files = [f for split in info["splits"] for f in record_files(records, split)]
    images = np.concatenate([parse_images(b, 64).numpy()
                             for b in tf.data.TFRecordDataset(files).batch(16)])
    assert images.shape == (summary["faces"], 64, 64, 3)
    assert images.min() >= -1.0 and images.max() <= 1.0

    # The exported generator maps (n, 100) noise to (n, 64, 64, 3) in [-1, 1].
    import keras
    generator = keras.models.load_model(tasks.TrainDCGAN().output()["keras"].path, compile=False)
    out = generator(np.random.default_rng(0).uniform(-1, 1, (3, 100)).astype("float32")).numpy()
    assert out.shape == (3, 64, 64, 3)
    assert out.min() >= -1.0 and out.max() <= 1.0

    export = tasks.ExportSamples()
    grid = Image.open(export.grid_path())
    assert grid.size == (8 * 66 + 2, 8 * 66 + 2)
    samples = sorted(p.name for p in Path(export.output().path, "samples").iterdir())
    assert samples == [f"{i:04d}.png" for i in range(5)]
    strip = Image.open(Path(export.output().path, "interpolations.png"))
    assert strip.size == (10 * 66 + 2, 8 * 66 + 2)
    gif = Image.open(Path(export.output().path, "training.gif"))
    assert gif.format == "GIF" and gif.size == grid.size
    # (DetectAlignFaces starts twice: once to yield its shards, once to finish)
    ran = Counter(t.split("_", 1)[0] for t in set(started_tasks))
    assert ran == {"Sample": 1, "AlignShard": 3, "DetectAlignFaces": 1, "RecordShard": 3, "BuildTFRecords": 1,
                   "TrainDCGAN": 1, "ExportSamples": 1}

    # A second run schedules nothing new.
    started_tasks.clear()
    again = luigi.build([tasks.ExportSamples()], local_scheduler=True, detailed_summary=True)
    assert again.status == LuigiStatusCode.SUCCESS
    assert started_tasks == []
