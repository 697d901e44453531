"""Labeled records (MNIST, CIFAR-10) through BuildTFRecords, and the training reader."""
from __future__ import annotations

import json
from pathlib import Path

import luigi
import numpy as np
import pytest
from labeled_data import use_cifar10, use_mnist, write_cifar10, write_mnist
from luigi.execution_summary import LuigiStatusCode
from test_records import _faces, _version

from pipeline.records import ATTRIBUTE_NAMES, read_info


def build_records(dataset: str):
    import tasks

    result = luigi.build([tasks.BuildTFRecords(dataset=dataset)], local_scheduler=True, detailed_summary=True)
    assert result.status == LuigiStatusCode.SUCCESS, result.summary_text
    return tasks.BuildTFRecords(dataset=dataset).folder()


def by_key(written) -> dict[str, tuple[np.ndarray, int]]:
    return {f"{p}/{i:05d}.png": (images[i], int(labels[i]))
            for p, (images, labels) in written.arrays.items() for i in range(len(images))}


@pytest.fixture
def mnist(luigi_config, tmp_path):
    written = write_mnist(tmp_path / "mnist", n_train=40, n_test=12)
    use_mnist(luigi_config, written)
    return written


def test_mnist_records_end_to_end(mnist, luigi_config, started_tasks, tmp_path):
    import tensorflow_datasets as tfds

    from model.train.data import class_names, example_dataset

    luigi_config("BuildTFRecords", "image_format", "png")  # the gray PNG path; raw is checked below
    folder = build_records("mnist")
    assert [t.split("_")[0] for t in started_tasks] == ["DownloadMNIST", "BuildTFRecords"]
    info = read_info(folder)
    assert info["image_shape"] == [28, 28, 1] and info["layout"] == "labeled"
    assert info["class_names"] == [str(d) for d in range(10)] and class_names(folder) == info["class_names"]
    assert {s: v["num_examples"] for s, v in info["splits"].items()} == {"train": 40, "test": 12}
    assert sorted(p.name for p in folder.iterdir()) == [
        "dataset_info.json", "features.json", "label.labels.txt", "manifest.json",
        "mnist-test.tfrecord-00000-of-00001", "mnist-train.tfrecord-00000-of-00001"]
    expected = by_key(mnist)
    seen = 0
    for split in ("train", "test"):
        for batch in example_dataset(folder, split, batch_size=16):
            assert sorted(batch) == ["image", "key", "label"] and batch["image"].shape[1:] == (28, 28, 1)
            for key, image, label in zip(batch["key"].numpy(), batch["image"].numpy(), batch["label"].numpy(),
                                         strict=True):
                want_image, want_label = expected[key.decode()]
                assert key.decode().startswith(split) and label == want_label
                np.testing.assert_array_equal(image, want_image)
                seen += 1
    assert seen == 52

    # TFDS reads the version folder too, with the class names.
    builder = tfds.builder_from_directory(str(folder))
    assert builder.info.features["label"].names == info["class_names"]
    example = next(iter(tfds.as_numpy(builder.as_dataset(split="test"))))
    np.testing.assert_array_equal(example["image"], expected[example["key"].decode()][0])

    # Up to date: a re-run starts nothing.
    started_tasks.clear()
    assert build_records("mnist") == folder and started_tasks == []


def test_mnist_build_is_resumable_and_atomic(mnist, luigi_config, started_tasks):
    """A build killed after its shards but before its version finishes on re-run,
    reusing the shards (not rewriting them)."""
    folder = build_records("mnist")
    root = folder.parent
    shards = sorted((root / "shards" / "key").iterdir())
    stamps = [s.joinpath("train.tfrecord").stat().st_mtime_ns for s in shards if (s / "train.tfrecord").exists()]
    import shutil
    shutil.rmtree(folder)
    for build in (root / "builds").iterdir():
        build.unlink()
    assert build_records("mnist") == folder
    assert [s.joinpath("train.tfrecord").stat().st_mtime_ns for s in shards
            if (s / "train.tfrecord").exists()] == stamps
    assert not [p for p in root.rglob(".tmp-*")]


def test_cifar10_local_archive_to_records_with_a_ratio_split(luigi_config, tmp_path):
    from model.train.data import example_dataset

    cifar = write_cifar10(tmp_path / "cifar", n_train=30, n_test=10, archive=True)
    use_cifar10(luigi_config, cifar)
    luigi_config("BuildTFRecords", "official_partition", "false")  # then: train/validation/test by key hash
    folder = build_records("cifar10")
    info = read_info(folder)
    assert info["image_shape"] == [32, 32, 3] and info["class_names"][-1] == "truck"
    assert set(info["splits"]) == {"train", "validation", "test"}
    assert sum(v["num_examples"] for v in info["splits"].values()) == 40
    assert all(f.startswith("cifar10-") for v in info["splits"].values() for f in v["files"])
    expected = by_key(cifar)
    for split in info["splits"]:
        for batch in example_dataset(folder, split, batch_size=64):
            for key, image, label in zip(batch["key"].numpy(), batch["image"].numpy(), batch["label"].numpy(),
                                         strict=True):
                np.testing.assert_array_equal(image, expected[key.decode()][0])
                assert label == expected[key.decode()][1]
    # The local archive was extracted under raw/, not next to the user's copy.
    assert not (cifar.folder / "cifar-10-batches-py").exists()
    assert list((tmp_path / "raw" / "cifar10-local").glob("*/cifar-10-batches-py/test_batch"))


# --- the training reader -----------------------------------------------------

def test_training_dataset_yields_images_and_labels(mnist):
    from model.train.data import image_dataset, training_dataset

    folder = build_records("mnist")
    expected = {img.tobytes(): label for img, label in by_key(mnist).values() }
    train = {mnist.arrays["train"][0][i].tobytes() for i in range(40)}
    ds = training_dataset(folder, "train", batch_size=8, shuffle=16, seed=3, features=("image", "label"))
    batches = [b for _, b in zip(range(12), ds)]  # 96 images: past one epoch of 40, repeats
    for batch in batches:
        assert batch["image"].shape == (8, 28, 28, 1) and batch["image"].dtype.name == "float32"
        assert batch["label"].shape == (8,) and batch["label"].dtype.name == "int64"
        pixels = np.round((batch["image"].numpy() + 1) * 127.5).astype(np.uint8)
        for image, label in zip(pixels, batch["label"].numpy(), strict=True):
            assert image.tobytes() in train and expected[image.tobytes()] == label
    assert float(min(b["image"].numpy().min() for b in batches)) == -1.0

    # image only: the very batches of image_dataset, in the same order; deterministic by seed.
    plain = training_dataset(folder, "train", batch_size=8, shuffle=16, seed=3)
    reference = image_dataset(folder, "train", batch_size=8, shuffle=16, seed=3)
    for ours, theirs, labeled in zip(plain, reference, batches, strict=False):
        assert list(ours) == ["image"]
        np.testing.assert_array_equal(ours["image"].numpy(), theirs.numpy())
        np.testing.assert_array_equal(ours["image"].numpy(), labeled["image"].numpy())


def test_a_data_fraction_reads_the_same_first_records_for_every_seed(mnist):
    """fraction 0.25 of 40 training images: the manifest's first 10 records, whatever the seed
    (a less-data experiment compares runs on the same images), each seen before any repeats."""
    from model.train.data import example_dataset, training_dataset

    folder = build_records("mnist")
    first = np.concatenate([b["image"].numpy() for b in example_dataset(folder, "train", batch_size=40)])[:10]
    first = {np.round(img).astype(np.uint8).tobytes() for img in first}
    assert len(first) == 10
    for seed in (0, 1):
        ds = training_dataset(folder, "train", batch_size=5, shuffle=16, seed=seed, features=("image", "label"),
                              fraction=0.25)
        seen = [np.round((img + 1) * 127.5).astype(np.uint8).tobytes()
                for b in (b for _, b in zip(range(6), ds)) for img in b["image"].numpy()]
        assert set(seen[:10]) == first and set(seen) == first  # one whole pass, then the same ten again
    from model.config import TrainConfig
    from pipeline.settings import BadSetting
    with pytest.raises(BadSetting, match=r"data_fraction must be in \(0, 1\] \(the share"):
        TrainConfig(data_fraction=0)


def test_training_dataset_on_face_records_matches_image_dataset_and_reads_attributes(tmp_path):
    from model.train.data import class_names, image_dataset, training_dataset

    images, faces = _faces(60)
    folder = _version(tmp_path, images, faces)
    assert class_names(folder) is None
    names = ["Smiling", "Male", "Young"]
    ds = training_dataset(folder, "train", batch_size=4, shuffle=32, seed=1, features=("image", "attributes"),
                          attributes=names)
    reference = image_dataset(folder, "train", batch_size=4, shuffle=32, seed=1)
    by_image = {img.tobytes(): face for img, face in zip(images, faces, strict=True)}
    unknown = 0
    for batch, theirs in zip(ds.take(20), reference.take(20), strict=True):
        np.testing.assert_array_equal(batch["image"].numpy(), theirs.numpy())
        assert batch["attributes"].shape == (4, 3) and batch["attributes"].dtype.name == "float32"
        pixels = np.round((batch["image"].numpy() + 1) * 127.5).astype(np.uint8)
        for image, row in zip(pixels, batch["attributes"].numpy(), strict=True):
            known = by_image[image.tobytes()]["meta"].get("attributes", {})
            # 1 -> 1.0, 0 -> 0.0, unknown (-1) -> 0.0
            assert row.tolist() == [float(known.get(n) is True) for n in names]
            unknown += any(n not in known for n in names)
    assert unknown > 0  # the unknown -> 0 policy was exercised
    everything = next(iter(training_dataset(folder, batch_size=4, features=("attributes",))))
    assert list(everything) == ["attributes"] and everything["attributes"].shape == (4, len(ATTRIBUTE_NAMES))


def test_training_dataset_errors_are_one_line(mnist, tmp_path):
    from model.train.data import training_dataset

    images, faces = _faces(12)
    (tmp_path / "faces").mkdir()
    faces_folder = _version(tmp_path / "faces", images, faces)
    with pytest.raises(ValueError, match=rf"^records {faces_folder} have no 'label' \(layout 'faces': "
                                         r"image, key, .*\); labels come with MNIST"):
        training_dataset(faces_folder, features=("image", "label"))
    with pytest.raises(ValueError, match=r"^unknown attribute names \['Smiles'\]; valid names: "
                                         r"5_o_Clock_Shadow, .*, Young$"):
        training_dataset(faces_folder, features=("image", "attributes"), attributes=["Male", "Smiles"])
    with pytest.raises(ValueError, match=r"features \('image', 'labels'\): choose from"):
        training_dataset(faces_folder, features=("image", "labels"))
    with pytest.raises(ValueError, match=r"'attributes' is not in features"):
        training_dataset(faces_folder, attributes=["Male"])
    mnist_folder = build_records("mnist")
    with pytest.raises(ValueError, match=rf"^records {mnist_folder} have no 'attributes'"):
        training_dataset(mnist_folder, features=("image", "attributes"))
    with pytest.raises(ValueError) as err:
        training_dataset(Path(faces_folder), features=("label",))
    assert "\n" not in str(err.value)


def test_train_dcgan_on_mnist_records(mnist, luigi_config):
    """TrainDCGAN --dataset mnist trains the 28x28 gray DCGAN from the labeled records."""
    import tasks

    luigi_config("TrainDCGAN", "steps", 2)
    luigi_config("TrainDCGAN", "base_width", 8)
    luigi_config("TrainDCGAN", "batch_size", 8)
    luigi_config("TrainDCGAN", "precision", "float32")
    result = luigi.build([tasks.TrainDCGAN(dataset="mnist")], local_scheduler=True, detailed_summary=True)
    assert result.status == LuigiStatusCode.SUCCESS, result.summary_text
    run = json.loads((tasks.TrainDCGAN(dataset="mnist").run_dir() / "result.json").read_text())
    assert run["config"]["resolution"] == 28 and run["config"]["channels"] == 1 and run["step"] == 2
    card = json.loads((tasks.TrainDCGAN(dataset="mnist").run_dir() / "model_card.json").read_text())
    assert card["channels"] == 1 and card["training"]["labels"] == [str(d) for d in range(10)]
