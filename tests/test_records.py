"""Records: exact round trip, splits, the TFDS layout, and the shard plan."""
from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
import pytest

from pipeline.align.shards import keys_digest, plan_shards, read_shard, write_shard
from pipeline.atomic import atomic_dir
from pipeline.records import (
    ATTRIBUTE_NAMES,
    iter_records,
    parse_splits,
    read_info,
    resolve_rule,
    serialize_example,
    split_of,
    write_record_shard,
    write_version,
)

RATIOS = parse_splits("train=0.8,validation=0.1,test=0.1")


def _faces(n: int, seed: int = 0, identities: int = 50, prefix: str = "img"):
    """``n`` synthetic aligned faces with metadata as pipeline/align/shards.py writes it."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 64, 64, 3), dtype=np.uint8)
    faces = []
    for i in range(n):
        meta = {"identity": int(rng.integers(identities))}
        if i % 3:  # some with CelebA attributes, some partly known, some with none
            meta["attributes"] = {name: bool(rng.integers(2)) for name in ATTRIBUTE_NAMES[: 40 - i % 2]}
        faces.append({"key": f"{prefix}/{i:05d}.jpg", "face": 0, "source": "synthetic",
                      "landmarks": np.round(rng.uniform(0, 200, (68, 2)), 2).tolist(),
                      "transform": np.round(rng.normal(size=(2, 3)), 6).tolist(), "meta": meta})
    return images, faces


def _version(tmp_path, images, faces, rule="key", image_format="raw", name="synthetic64"):
    """Write one aligned shard -> one record shard -> a version; returns the version folder."""
    aligned = tmp_path / "aligned"
    aligned.mkdir()
    write_shard(aligned, [f["key"] for f in faces], images, faces, [])
    images, faces = read_shard(aligned)
    shard = tmp_path / "shard"
    shard.mkdir()
    summary = write_record_shard(shard, images, faces, rule, RATIOS, image_format=image_format)
    with atomic_dir(tmp_path / "v") as tmp:
        write_version(tmp, name, 64, [("key/shard", shard, summary)], image_format, version="v-test")
    return tmp_path / "v"


@pytest.mark.parametrize("image_format", ["raw", "png"])
def test_round_trip_is_exact(tmp_path, image_format):
    from model.train.data import example_dataset, image_dataset

    images, faces = _faces(40)
    version = _version(tmp_path, images, faces, image_format=image_format)
    info = read_info(version)
    assert info["image_shape"] == [64, 64, 3] and info["version"] == "v-test"
    assert sum(s["num_examples"] for s in info["splits"].values()) == 40

    by_key = {f["key"]: (img, f) for img, f in zip(images, faces, strict=True)}
    seen = 0
    for split in info["splits"]:
        for batch in example_dataset(version, split, batch_size=7):
            for j, key in enumerate(batch["key"].numpy()):
                image, face = by_key[key.decode()]
                meta = face["meta"]
                assert split_of(face, "key", RATIOS) == split
                np.testing.assert_array_equal(batch["image"][j].numpy(), image)
                assert batch["source"][j].numpy() == b"synthetic" and batch["face"][j] == 0
                assert batch["identity"][j] == meta["identity"]
                expected = [int(meta["attributes"][n]) if n in meta.get("attributes", {}) else -1
                            for n in ATTRIBUTE_NAMES]
                assert batch["attributes"][j].numpy().tolist() == expected
                np.testing.assert_array_equal(batch["landmarks"][j].numpy(),
                                              np.float32(face["landmarks"]))
                np.testing.assert_array_equal(batch["transform"][j].numpy(),
                                              np.float32(face["transform"]))
                seen += 1
    assert seen == 40

    # The training reader: dequantised to [-1, 1] exactly, deterministic per seed.
    def order(seed):
        ds = image_dataset(version, "train", batch_size=4, shuffle=16, seed=seed, repeat=False)
        return np.concatenate([b.numpy() for b in ds])
    train = {bytes(by_key[f["key"]][0]) for f in faces if split_of(f, "key", RATIOS) == "train"}
    first = order(3)
    assert first.dtype == np.float32 and first.min() >= -1 and first.max() <= 1
    assert len(first) == len(train) // 4 * 4  # whole batches only
    assert {bytes(img) for img in np.round((first + 1) * 127.5).astype(np.uint8)} <= train
    np.testing.assert_array_equal(order(3), first)
    # The seed's alone: not the global seed that an earlier training run in the process set.
    import keras
    keras.utils.set_random_seed(11)
    np.testing.assert_array_equal(order(3), first)


def test_records_match_tensorflow_bytes_and_checksums(tmp_path):
    import tensorflow as tf

    images, faces = _faces(5)
    ours = tmp_path / "ours.tfrecord"
    from pipeline.records import RecordWriter
    with RecordWriter(ours) as writer, tf.io.TFRecordWriter(str(tmp_path / "tf.tfrecord")) as theirs:
        for image, face in zip(images, faces, strict=True):
            record = serialize_example(image, face)
            writer.write(record)
            theirs.write(record)
            example = tf.train.Example.FromString(record)
            assert example.SerializeToString(deterministic=True) == record
    assert ours.read_bytes() == (tmp_path / "tf.tfrecord").read_bytes()
    assert len(list(iter_records(ours))) == 5
    torn = tmp_path / "torn.tfrecord"
    torn.write_bytes(ours.read_bytes()[:-100])
    with pytest.raises(ValueError, match="truncated"):
        list(iter_records(torn))


def test_tfds_builder_from_directory_loads_the_version(tmp_path):
    import tensorflow_datasets as tfds

    images, faces = _faces(30)
    version = _version(tmp_path, images, faces)
    builder = tfds.builder_from_directory(str(version))
    info = read_info(version)
    assert builder.info.splits["train"].num_examples == info["splits"]["train"]["num_examples"]
    examples = list(tfds.as_numpy(builder.as_dataset(split="train")))
    assert len(examples) == info["splits"]["train"]["num_examples"]
    by_key = {f["key"]: i for i, f in enumerate(faces)}
    for ex in examples:
        i = by_key[ex["key"].decode()]
        np.testing.assert_array_equal(ex["image"], images[i])
        assert ex["image"].dtype == np.uint8 and ex["attributes"].shape == (40,)
        assert ex["identity"] == faces[i]["meta"]["identity"]


def test_identity_split_is_deterministic_and_keeps_people_apart():
    _, faces = _faces(3000, identities=400)
    splits = [split_of(f, "identity", RATIOS) for f in faces]
    assert splits == [split_of(f, "identity", RATIOS) for f in faces]
    people = defaultdict(set)
    for face, split in zip(faces, splits, strict=True):
        people[face["meta"]["identity"]].add(split)
    assert all(len(s) == 1 for s in people.values())  # no person in two splits
    counts = {s: splits.count(s) / len(splits) for s in RATIOS}
    assert counts["train"] > 0.7 and counts["validation"] > 0.05 and counts["test"] > 0.05
    # A face's split does not depend on the rest of the data set.
    _, more = _faces(50, seed=9, identities=400, prefix="new")
    assert [split_of(f, "identity", RATIOS) for f in faces[:100]] == splits[:100]
    assert {split_of(f, "identity", RATIOS) for f in more if f["meta"]["identity"] == 7} <= people[7]


def test_key_split_partition_and_rule_choice():
    _, faces = _faces(2000, identities=2)
    splits = [split_of(f, "key", RATIOS) for f in faces]
    assert abs(splits.count("train") / 2000 - 0.8) < 0.05
    twin = dict(faces[0], face=1)  # the second face of a photo goes where the first went
    assert split_of(twin, "key", RATIOS) == splits[0]
    official = dict(faces[0], meta={**faces[0]["meta"], "partition": "test"})
    assert split_of(official, "identity", RATIOS) == "test"
    assert split_of(official, "key", RATIOS, official=False) == splits[0]
    # Two identities (the sample portraits) are too few for an identity split.
    assert resolve_rule("auto", 2, 100) == "key"
    assert resolve_rule("auto", 150, 100) == "identity"
    assert resolve_rule("key", 150, 100) == "key"
    with pytest.raises(ValueError, match="add up to 1"):
        parse_splits("train=0.8,test=0.1")
    with pytest.raises(ValueError, match="name=fraction"):
        parse_splits("train=0.9,train=0.1")


def test_shard_plan_only_appends():
    keys = [f"k{i:04d}" for i in range(10)]
    plan = plan_shards(keys, [], 4)
    assert [len(k) for _, k in plan] == [4, 4, 2]
    assert plan_shards(keys, plan, 4) == plan  # same keys: same plan
    grown = plan_shards(sorted(keys + ["k0010", "k0011", "a-first"]), plan, 4)
    assert grown[:3] == plan  # old shards, tail included, untouched
    assert grown[3][1] == ["a-first", "k0010", "k0011"] and grown[3][0].startswith("shard-00003-")
    shrunk = plan_shards([k for k in keys if k != "k0005"], plan, 4)
    assert [name for name, _ in shrunk][:2] == [plan[0][0], plan[2][0]]
    assert shrunk[2][1] == ["k0004", "k0006", "k0007"]  # the broken shard's keys, re-planned
    assert keys_digest(keys) != keys_digest(keys[::-1])


def test_version_manifest_lists_shards_and_counts(tmp_path):
    images, faces = _faces(12)
    version = _version(tmp_path, images, faces)
    manifest = json.loads((version / "manifest.json").read_text())
    assert manifest["shards"] == ["key/shard"] and manifest["attribute_names"] == list(ATTRIBUTE_NAMES)
    tfds_info = json.loads((version / "dataset_info.json").read_text())
    for split in tfds_info["splits"]:
        files = manifest["splits"][split["name"]]["files"]
        assert [int(n) for n in split["shardLengths"]] == [
            len(list(iter_records(version / f))) for f in files]
        assert files[0] == f"synthetic64-{split['name']}.tfrecord-00000-of-00001"
