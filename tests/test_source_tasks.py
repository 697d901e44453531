"""CelebA, LSUN and ImageNet wired into the DAG, through a real local Luigi scheduler.

The faces are real: the public-domain portraits shipped with scikit-image and
matplotlib, cropped and scaled the way CelebA's aligned images are (178x218,
eyes near (69, 109) and (106, 113)).
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import zipfile
from pathlib import Path

import luigi
import numpy as np
import pytest
from luigi.cmdline_parser import CmdlineParser
from luigi.execution_summary import LuigiStatusCode
from PIL import Image, ImageOps

#: Provides the loopback HTTP server fixture ``http_server``.
from tar_helpers import tar_bytes

import tasks.common
from pipeline.records import ATTRIBUTE_NAMES
from pipeline.sources.sample_photos import portrait
from tasks.common import version
from tasks.errors import ConfigError

pytest_plugins = ["conftest_http"]

#: The official header of list_attr_celeba.txt, in its order.
ATTR_NAMES = ATTRIBUTE_NAMES
#: Eye centres (left, right) in the original portraits, from dlib's 68 landmarks.
EYES = {"astronaut": ((203, 102), (246, 105)), "grace_hopper": ((224, 194), (305, 191))}
LABEL_FILES = ("list_attr_celeba.txt", "identity_CelebA.txt", "list_landmarks_align_celeba.txt",
               "list_eval_partition.txt")


def jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def celeba_style(name: str, flip: bool = False) -> bytes:
    """A portrait cropped and scaled like CelebA's aligned images: 178x218,
    37 px between the eyes, their midpoint at (89, 111)."""
    (lx, ly), (rx, ry) = EYES[name]
    scale = 37 / np.hypot(rx - lx, ry - ly)
    cx, cy = (lx + rx) / 2, (ly + ry) / 2
    box = (round(cx - 89 / scale), round(cy - 111 / scale), round(cx + 89 / scale), round(cy + 107 / scale))
    img = portrait(name).crop(box).resize((178, 218), Image.LANCZOS)
    return jpeg(ImageOps.mirror(img) if flip else img)


def celeba_images() -> dict[str, bytes]:
    """Four faces, one picture without a face, one undecodable file."""
    return {"000001.jpg": celeba_style("astronaut"), "000002.jpg": celeba_style("grace_hopper"),
            "000003.jpg": celeba_style("astronaut", flip=True),
            "000004.jpg": celeba_style("grace_hopper", flip=True),
            "000005.jpg": jpeg(Image.new("RGB", (178, 218), (90, 140, 200))),
            "000006.jpg": b"\xff\xd8\xff not really a JPEG"}


def attr_row(i: int) -> list[int]:
    return [1 if (j * 7 + i) % 5 < 2 else -1 for j in range(40)]


def identity(i: int) -> int:
    return 1000 + 17 * i


def label_files(names: list[str]) -> dict[str, bytes]:
    """The four label files in the official formats: count line, header,
    padded columns, CRLF."""
    attr = [f"{len(names)}", " ".join(ATTR_NAMES) + " "]
    attr += [n + " " + " ".join(f"{v:2d}" for v in attr_row(i)) for i, n in enumerate(names)]
    marks = [f"{len(names)}", "lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y "
                              "leftmouth_x leftmouth_y rightmouth_x rightmouth_y"]
    marks += [f"{n} " + " ".join(f"{v:4d}" for v in (69, 109, 106, 113, 77, 142, 73, 152, 108, 154))
              for n in names]
    return {
        "list_attr_celeba.txt": ("\r\n".join(attr) + "\r\n").encode(),
        "identity_CelebA.txt": "".join(f"{n} {identity(i)}\r\n" for i, n in enumerate(names)).encode(),
        "list_landmarks_align_celeba.txt": ("\r\n".join(marks) + "\r\n").encode(),
        "list_eval_partition.txt": "".join(f"{n} {i % 3}\r\n" for i, n in enumerate(names)).encode(),
    }


def expected_attributes(i: int) -> dict[str, bool]:
    return {n: v == 1 for n, v in zip(ATTR_NAMES, attr_row(i), strict=True)}


def write_celeba(root: Path, skip: tuple[str, ...] = ()) -> dict[str, bytes]:
    """A CelebA copy in the official layout under ``root``, minus ``skip``."""
    images = celeba_images()
    (root / "img_align_celeba").mkdir(parents=True)
    for name, data in images.items():
        (root / "img_align_celeba" / name).write_bytes(data)
    labels = label_files(sorted(images))
    for name, data in labels.items():
        if name not in skip:
            (root / name).write_bytes(data)
    return labels


def file_specs(files: dict[str, bytes], url=lambda name: "gdrive:unused", hashes: bool = False) -> str:
    specs = []
    for name, data in files.items():
        spec = {"name": name, "urls": [url(name)], "size": len(data)}
        if hashes:
            spec["sha256"] = hashlib.sha256(data).hexdigest()
        specs.append(spec)
    return json.dumps(specs)


def build(*tasks_to_run):
    return luigi.build(list(tasks_to_run), local_scheduler=True, detailed_summary=True)


def face_rows(summary_path: str) -> tuple[list[dict], list[dict]]:
    summary = json.loads(Path(summary_path).read_text())
    faces, rejected = [], []
    for shard in summary["shards"]:
        faces += [json.loads(line) for line in open(f"{shard['folder']}/faces.jsonl")]
        rejected += [json.loads(line) for line in open(f"{shard['folder']}/rejected.jsonl")]
    return faces, rejected


@pytest.fixture
def small(luigi_config, monkeypatch):
    monkeypatch.setattr(tasks.common, "ALLOW_NETWORKS", ("127.0.0.0/8",))  # the loopback servers
    luigi_config("DetectAlignFaces", "shard_size", 4)
    luigi_config("DownloadCelebA", "num_images", 6)
    luigi_config("DownloadCelebA", "retries", 1)
    luigi_config("DownloadLSUN", "retries", 1)
    return luigi_config


# --- CelebA -------------------------------------------------------------------

def test_celeba_local_copy_is_aligned_in_place_with_its_labels(small, tmp_path):
    import tasks

    root = tmp_path / "celeba"
    labels = write_celeba(root)
    small("DownloadCelebA", "local_dir", root)
    small("DownloadCelebA", "files", file_specs(labels))  # sizes checked for the label files
    result = build(tasks.DetectAlignFaces(dataset="celeba"))
    assert result.status == LuigiStatusCode.SUCCESS, result.summary_text

    align = tasks.DetectAlignFaces(dataset="celeba")
    summary = json.loads(Path(align.output().path).read_text())
    assert summary["inputs"] == 6 and len(summary["shards"]) == 2
    assert summary["images_with_faces"] + summary["rejected"] == 6
    assert summary["images_with_faces"] == 4 and summary["faces"] == 4
    assert summary["rejected_by_reason"] == {"no_face": 1, "undecodable": 1}

    faces, rejected = face_rows(align.output().path)
    assert sorted(r["key"] for r in rejected) == ["000005.jpg", "000006.jpg"]
    names = sorted(celeba_images())
    assert sorted(f["key"] for f in faces) == names[:4]
    for row in faces:
        i = names.index(row["key"])
        assert row["source"] == "celeba"
        assert row["meta"]["attributes"] == expected_attributes(i)
        assert row["meta"]["identity"] == identity(i)
        assert row["meta"]["partition"] == ("train", "validation", "test")[i % 3]
        assert row["meta"]["landmarks"]["lefteye"] == [69, 109]

    marker = json.loads(Path(tasks.DownloadCelebA().output().path).read_text())
    assert marker["missing"] == [] and marker["images"] == 6
    assert marker["root"] == str(root.resolve())
    # Used in place: nothing was copied into raw/.
    assert not (tmp_path / "raw" / "celeba").exists()
    assert sorted(p.name for p in root.iterdir()) == sorted(["img_align_celeba", *LABEL_FILES])


def test_partial_celeba_copy_is_refused_by_default_and_aligned_with_allow_partial(small, tmp_path, caplog):
    import tasks

    root = tmp_path / "celeba"
    labels = write_celeba(root, skip=("list_landmarks_align_celeba.txt", "list_eval_partition.txt"))
    (root / "img_align_celeba" / "000004.jpg").unlink()
    small("DownloadCelebA", "local_dir", root)
    small("DownloadCelebA", "files", file_specs(labels))

    # Refused while scheduling, before any other task ran, naming what is missing.
    with pytest.raises(ConfigError) as err:
        tasks.DownloadCelebA().complete()
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"CelebA copy {root} is incomplete: missing or short: img_align_celeba/ "
                              f"(5 of 6 images), list_landmarks_align_celeba.txt, list_eval_partition.txt")
    assert "[DownloadCelebA] allow_partial = true" in message
    with caplog.at_level(logging.WARNING, logger="luigi-interface"):
        result = build(tasks.DetectAlignFaces(dataset="celeba"))
    assert result.status == LuigiStatusCode.SCHEDULING_FAILED
    assert "list_eval_partition.txt" in caplog.text
    assert not (tmp_path / "processed").exists()

    # Accepted when told to; what is missing is recorded, the labels there are carried.
    small("DownloadCelebA", "allow_partial", "true")
    result = build(tasks.DetectAlignFaces(dataset="celeba"))
    assert result.status == LuigiStatusCode.SUCCESS, result.summary_text
    marker = json.loads(Path(tasks.DownloadCelebA().output().path).read_text())
    assert marker["allow_partial"] is True and marker["images"] == 5
    assert marker["missing"] == ["img_align_celeba/ (5 of 6 images)", "list_landmarks_align_celeba.txt",
                                 "list_eval_partition.txt"]
    align = tasks.DetectAlignFaces(dataset="celeba")
    summary = json.loads(Path(align.output().path).read_text())
    assert (summary["inputs"], summary["faces"], summary["rejected"]) == (5, 3, 2)
    faces, _ = face_rows(align.output().path)
    names = sorted(celeba_images())
    for row in faces:
        i = names.index(row["key"])
        assert row["meta"]["attributes"] == expected_attributes(i)
        assert row["meta"]["identity"] == identity(i)
        assert "partition" not in row["meta"] and "landmarks" not in row["meta"]


def test_missing_local_dir_names_the_key(small, tmp_path):
    import tasks

    small("DownloadCelebA", "local_dir", tmp_path / "nowhere")
    with pytest.raises(ConfigError, match=r"nowhere does not exist; set local_dir .* "
                                                r"\(\[DownloadCelebA\] local_dir\)$"):
        tasks.DownloadCelebA().complete()


def official_release(names: list[str], images: dict[str, bytes]) -> dict[str, bytes]:
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w") as zf:
        zf.writestr("img_align_celeba/", b"")
        for name in names:
            zf.writestr(f"img_align_celeba/{name}", images[name])
    return {"img_align_celeba.zip": zbuf.getvalue(), **label_files(names)}


def test_download_celeba_verifies_every_file_and_downloads_once(small, http_server, tmp_path):
    import tasks

    images = celeba_images()
    names = sorted(images)[:4]
    files = official_release(names, images)
    for name, data in files.items():
        http_server.routes[f"/{name}"] = lambda h, d=data: h.send_file(d)
    small("DownloadCelebA", "num_images", 4)

    # A wrong checksum in the config: the file is refused, nothing is marked done.
    wrong = json.loads(file_specs(files, lambda n: http_server.url(f"/{n}"), hashes=True))
    wrong[1]["sha256"] = "0" * 64
    small("DownloadCelebA", "files", json.dumps(wrong))
    result = build(tasks.DownloadCelebA())
    assert result.status == LuigiStatusCode.FAILED
    assert not (tmp_path / "raw" / "celeba" / "source.json").exists()
    assert not (tmp_path / "raw" / "celeba" / "list_attr_celeba.txt").exists()

    small("DownloadCelebA", "files", file_specs(files, lambda n: http_server.url(f"/{n}"), hashes=True))
    result = build(tasks.DownloadCelebA())
    assert result.status == LuigiStatusCode.SUCCESS, result.summary_text
    root = tmp_path / "raw" / "celeba"
    for name in LABEL_FILES:
        assert (root / name).read_bytes() == files[name]
    assert sorted(p.name for p in (root / "img_align_celeba").iterdir()) == names
    marker = json.loads((root / "source.json").read_text())
    assert marker["missing"] == [] and marker["images"] == 4 and marker["local_dir"] == ""
    source = tasks.DownloadCelebA().source()
    assert source.keys() == names
    assert source.read("000002.jpg").meta["identity"] == identity(1)
    assert source.read("000002.jpg").data == images["000002.jpg"]

    # Done is done: a second build asks the server for nothing; so does a re-run
    # after the marker is lost (the files on disk verify and are kept).
    before = len(http_server.log)
    assert build(tasks.DownloadCelebA()).status == LuigiStatusCode.SUCCESS
    assert len(http_server.log) == before
    (root / "source.json").unlink()
    assert build(tasks.DownloadCelebA()).status == LuigiStatusCode.SUCCESS
    assert len(http_server.log) == before
    assert (root / "source.json").exists()


def test_local_copy_with_the_zip_is_extracted_into_raw(small, tmp_path):
    import tasks

    images = celeba_images()
    names = sorted(images)[:3]
    root = tmp_path / "by-hand"
    root.mkdir()
    for name, data in official_release(names, images).items():
        (root / name).write_bytes(data)
    small("DownloadCelebA", "local_dir", root)
    small("DownloadCelebA", "num_images", 3)
    small("DownloadCelebA", "files", "[]")
    assert build(tasks.DownloadCelebA()).status == LuigiStatusCode.SUCCESS
    source = tasks.DownloadCelebA().source()
    assert source.keys() == names
    assert source.read("000003.jpg").meta["identity"] == identity(2)
    assert source.read("000003.jpg").meta["partition"] == "test"
    assert str(source.root).startswith(str(tmp_path / "raw" / "celeba-local"))
    assert sorted(p.name for p in root.iterdir()) == sorted(["img_align_celeba.zip", *LABEL_FILES])


# --- LSUN -----------------------------------------------------------------------

def lsun_zip(stem: str, entries: dict[bytes, bytes], tmp_path: Path) -> bytes:
    import lmdb

    db = tmp_path / "lmdb-src" / stem
    db.mkdir(parents=True)
    env = lmdb.open(str(db), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for key, value in entries.items():
            txn.put(key, value)
    env.close()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for f in sorted(db.iterdir()):
            zf.write(f, f"{stem}/{f.name}")
    return buf.getvalue()


def webp(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "WEBP", quality=90)
    return buf.getvalue()


def test_lsun_category_is_downloaded_exported_and_aligned(small, http_server, tmp_path):
    import tasks

    keys = [hashlib.sha1(bytes([i])).hexdigest().encode() for i in range(4)]
    entries = {keys[0]: webp(portrait("astronaut").resize((256, 256))),
               keys[1]: celeba_style("grace_hopper"),
               keys[2]: webp(Image.new("RGB", (256, 192), (120, 100, 80))),
               keys[3]: b"\x00 not an image"}
    data = lsun_zip("church_outdoor_train_lmdb", entries, tmp_path)
    http_server.routes["/scenes/church_outdoor_train_lmdb.zip"] = lambda h: h.send_file(data)
    small("DownloadLSUN", "scenes_url", http_server.url("/scenes/{category}_{split}_lmdb.zip"))
    small("DownloadLSUN", "shard_size", 2)
    small("lsun", "category", "church_outdoor")  # what --lsun-category church_outdoor sets

    result = build(tasks.DetectAlignFaces(dataset="lsun"))
    assert result.status == LuigiStatusCode.SUCCESS, result.summary_text

    download = tasks.raw_task("lsun")
    assert (download.category, download.split) == ("church_outdoor", "train")
    folder = tmp_path / "raw" / "lsun" / "church_outdoor-train"
    marker = json.loads((folder / "source.json").read_text())
    assert (marker["entries"], marker["images"], marker["rejected"], marker["shards"]) == (4, 3, 1, 2)
    assert (tmp_path / "raw" / "lsun" / "downloads" / "church_outdoor_train_lmdb.zip").read_bytes() == data
    assert not (tmp_path / "raw" / "lsun" / "lmdb" / "church_outdoor_train_lmdb").exists()

    align = tasks.DetectAlignFaces(dataset="lsun")
    summary = json.loads(Path(align.output().path).read_text())
    assert summary["inputs"] == 3
    assert summary["images_with_faces"] + summary["rejected"] == 3
    assert summary["images_with_faces"] == 2 and summary["rejected_by_reason"] == {"no_face": 1}
    faces, _ = face_rows(align.output().path)
    by_key = {row["meta"]["lsun_key"]: row for row in faces}
    assert sorted(by_key) == sorted(k.decode() for k in keys[:2])
    assert all(row["meta"]["category"] == "church_outdoor" for row in faces)
    assert by_key[keys[0].decode()]["key"] == f"00000/{keys[0].decode()}.webp"

    # Another category is another upstream task, so every downstream version (which
    # names the output folders) differs although the dataset is "lsun" for both.
    def versions():
        return (tasks.DetectAlignFaces(dataset="lsun").aligned_root(),
                *(version(cls(dataset="lsun")) for cls in (tasks.DetectAlignFaces, tasks.BuildTFRecords,
                                                          tasks.TrainDCGAN, tasks.ExportSamples)))
    church = versions()
    small("lsun", "category", "kitchen")
    kitchen = versions()
    assert all(a != b for a, b in zip(church, kitchen, strict=True))
    small("lsun", "category", "church_outdoor")
    assert versions() == church


def test_lsun_category_flags_on_the_command_line(small):
    import tasks  # noqa: F401  (registers the task families the parser looks up)

    argv = ["DetectAlignFaces", "--dataset", "lsun", "--lsun-category", "cat"]
    with CmdlineParser.global_instance(argv) as parser:
        root = parser.get_task_obj()
        assert root.raw().category == "cat"
        assert root.raw().remote_file().urls == ("http://dl.yf.io/lsun/objects/cat.zip",)
        assert root.raw().folder().name == "cat"
    argv = ["BuildTFRecords", "--dataset", "lsun", "--DownloadLSUN-category", "kitchen",
            "--DownloadLSUN-split", "val"]
    with CmdlineParser.global_instance(argv) as parser:
        download = parser.get_task_obj().requires().raw()
        assert (download.category, download.split) == ("kitchen", "val")
    with CmdlineParser.global_instance(["DetectAlignFaces", "--dataset", "lsun", "--lsun-category",
                                        "bedrooms"]) as parser:
        with pytest.raises(ConfigError, match=r"unknown LSUN category 'bedrooms'.*--lsun-category"):
            parser.get_task_obj().raw().complete()


def test_lsun_local_dir_with_an_extracted_lmdb(small, tmp_path):
    import tasks

    entries = {b"a" * 40: webp(Image.new("RGB", (32, 24), (1, 2, 3))), b"b" * 40: b"junk"}
    zipped = zipfile.ZipFile(io.BytesIO(lsun_zip("bedroom_val_lmdb", entries, tmp_path)))
    zipped.extractall(tmp_path / "lsun")
    small("DownloadLSUN", "split", "val")
    small("DownloadLSUN", "local_dir", tmp_path / "nowhere")
    with pytest.raises(ConfigError, match=r"^\[DownloadLSUN\] local_dir .* holds neither "
                                          r"bedroom_val_lmdb.zip nor an extracted LMDB"):
        tasks.DownloadLSUN().complete()
    small("DownloadLSUN", "local_dir", tmp_path / "lsun")
    assert build(tasks.DownloadLSUN()).status == LuigiStatusCode.SUCCESS
    source = tasks.DownloadLSUN().source()
    assert source.keys() == [f"00000/{'a' * 40}.webp"]
    assert source.read(source.keys()[0]).meta == {"lsun_key": "a" * 40, "category": "bedroom"}
    assert (tmp_path / "lsun" / "bedroom_val_lmdb" / "data.mdb").exists()  # used in place, kept


# --- ImageNet ---------------------------------------------------------------------

def test_imagenet_without_archive_fails_at_once_naming_the_key(small, tmp_path, caplog, started_tasks):
    import tasks

    with pytest.raises(ConfigError) as err:
        tasks.ImportImageNet().complete()
    message = str(err.value)
    assert "\n" not in message
    assert "[ImportImageNet] archive" in message and "https://image-net.org" in message
    with caplog.at_level(logging.WARNING, logger="luigi-interface"):
        result = build(tasks.TrainDCGAN(dataset="imagenet"))
    assert result.status == LuigiStatusCode.SCHEDULING_FAILED
    assert started_tasks == []
    assert "[ImportImageNet] archive" in caplog.text
    small("ImportImageNet", "archive", tmp_path / "ILSVRC2012_img_train.tar")
    with pytest.raises(ConfigError, match=r"^\[ImportImageNet\] archive: .*train.tar does not exist"):
        tasks.ImportImageNet().complete()


def test_imagenet_is_imported_from_a_nested_train_tar(small, tmp_path):
    import tasks

    classes = {"n01440764": {"n01440764_1.JPEG": celeba_style("astronaut"),
                             "n01440764_2.JPEG": celeba_style("grace_hopper")},
               "n02085620": {"n02085620_7.JPEG": celeba_style("astronaut", flip=True)}}
    archive = tmp_path / "ILSVRC2012_img_train.tar"
    archive.write_bytes(tar_bytes({f"{s}.tar": tar_bytes(files) for s, files in classes.items()}))
    small("ImportImageNet", "archive", archive)
    assert build(tasks.ImportImageNet()).status == LuigiStatusCode.SUCCESS

    source = tasks.raw_task("imagenet").source()
    assert source.keys() == ["n01440764/n01440764_1.JPEG", "n01440764/n01440764_2.JPEG",
                             "n02085620/n02085620_7.JPEG"]
    item = source.read("n02085620/n02085620_7.JPEG")
    assert item.meta == {"synset": "n02085620"}
    assert item.data == classes["n02085620"]["n02085620_7.JPEG"]
    marker = json.loads(Path(tasks.ImportImageNet().output().path).read_text())
    assert (marker["images"], marker["imported_now"]) == (3, 2)

    # An allow-list is another data set, in its own folder.
    small("ImportImageNet", "synsets", "n02085620")
    assert build(tasks.ImportImageNet()).status == LuigiStatusCode.SUCCESS
    assert tasks.ImportImageNet().source().keys() == ["n02085620/n02085620_7.JPEG"]
    small("ImportImageNet", "synsets", "dogs")
    with pytest.raises(ValueError, match=r"not WordNet synset ids .*: dogs; fix \[ImportImageNet\] synsets"):
        tasks.ImportImageNet().complete()
