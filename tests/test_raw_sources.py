"""CelebA, LSUN and ImageNet sources built from files the tests make."""
from __future__ import annotations

import hashlib
import io
import json
import tarfile
import zipfile
from pathlib import Path

import pytest
from PIL import Image

#: Provides the loopback HTTP server fixture ``http_server``.
from tar_helpers import tar_bytes

from pipeline.net.archive import UnsafeArchiveError
from pipeline.net.download import RemoteFile
from pipeline.net.httpclient import Policy
from pipeline.records import ATTRIBUTE_NAMES
from pipeline.sources.celeba import (
    CelebASource,
    IncompleteCopyError,
    check_local_dir,
    extract_images,
    parse_label_lines,
    prepare_celeba,
)
from pipeline.sources.imagenet import TRAIN_TAR_MD5, ImageNetNotConfigured, ImageNetSource, import_imagenet
from pipeline.sources.lsun import LSUNSource, export_lmdb, extract_lmdb, image_format, lsun_remote_file, verify_zip

pytest_plugins = ["conftest_http"]


def encoded(color, fmt="JPEG", size=(8, 10)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, fmt)
    return buf.getvalue()


# --- CelebA -----------------------------------------------------------------

#: The official header of list_attr_celeba.txt, in its order.
ATTR_NAMES = ATTRIBUTE_NAMES
NAMES = ["000001.jpg", "000002.jpg", "000003.jpg"]
IDENTITY = {"000001.jpg": 2880, "000002.jpg": 2937, "000003.jpg": 8692}
LANDMARKS = {"000001.jpg": (69, 109, 106, 113, 77, 142, 73, 152, 108, 154),
             "000002.jpg": (69, 110, 107, 112, 81, 135, 70, 151, 108, 153),
             "000003.jpg": (76, 112, 104, 106, 108, 128, 74, 156, 98, 158)}
PARTITION = {"000001.jpg": 0, "000002.jpg": 1, "000003.jpg": 2}


def attr_row(i: int) -> list[int]:
    return [1 if (j + i) % 3 == 0 else -1 for j in range(40)]


def official_files(root: Path) -> dict[str, bytes]:
    """The five official files (images zip + 4 label files), byte-exact in
    the official formats: count line, header, padded columns, CRLF."""
    attr = [f"{len(NAMES)}", " ".join(ATTR_NAMES) + " "]
    attr += [n + " " + " ".join(f"{v:2d}" for v in attr_row(i)) for i, n in enumerate(NAMES)]
    marks = [f"{len(NAMES)}", "lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y "
                              "leftmouth_x leftmouth_y rightmouth_x rightmouth_y"]
    marks += [f"{n} " + " ".join(f"{v:4d}" for v in LANDMARKS[n]) for n in NAMES]
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w") as zf:
        zf.writestr("img_align_celeba/", b"")
        for i, n in enumerate(NAMES):
            zf.writestr(f"img_align_celeba/{n}", encoded((40 * i, 80, 120)))
    return {
        "img_align_celeba.zip": zbuf.getvalue(),
        "list_attr_celeba.txt": ("\r\n".join(attr) + "\r\n").encode(),
        "identity_CelebA.txt": "".join(f"{n} {IDENTITY[n]}\r\n" for n in NAMES).encode(),
        "list_landmarks_align_celeba.txt": ("\r\n".join(marks) + "\r\n").encode(),
        "list_eval_partition.txt": "".join(f"{n} {PARTITION[n]}\r\n" for n in NAMES).encode(),
    }


@pytest.fixture
def celeba(tmp_path) -> Path:
    root = tmp_path / "celeba"
    root.mkdir()
    for name, data in official_files(root).items():
        (root / name).write_bytes(data)
    extract_images(root / "img_align_celeba.zip", root)
    (root / "img_align_celeba.zip").unlink()
    return root


def test_celeba_source_reads_images_and_every_label(celeba):
    source = CelebASource(celeba, expected_images=3)
    assert source.keys() == NAMES and source.missing == []
    item = source.read("000002.jpg")
    assert item.data == (celeba / "img_align_celeba" / "000002.jpg").read_bytes()
    assert Image.open(io.BytesIO(item.data)).size == (8, 10)
    assert item.meta["identity"] == 2937
    assert item.meta["partition"] == "validation"
    assert item.meta["attributes"] == {n: v == 1 for n, v in zip(ATTR_NAMES, attr_row(1), strict=True)}
    assert item.meta["landmarks"] == {"lefteye": [69, 110], "righteye": [107, 112], "nose": [81, 135],
                                      "leftmouth": [70, 151], "rightmouth": [108, 153]}
    assert json.loads(json.dumps(item.meta)) == item.meta
    assert source.read("000003.jpg").meta["partition"] == "test"


def test_partial_celeba_is_refused_by_default_and_listed(celeba):
    (celeba / "list_eval_partition.txt").unlink()
    (celeba / "list_landmarks_align_celeba.txt").unlink()
    (celeba / "img_align_celeba" / "000003.jpg").unlink()
    with pytest.raises(IncompleteCopyError) as err:
        CelebASource(celeba, expected_images=3)
    msg = str(err.value)
    assert msg == (f"CelebA copy {celeba} is incomplete: missing or short: img_align_celeba/ "
                   f"(2 of 3 images), list_landmarks_align_celeba.txt, list_eval_partition.txt; "
                   f"add those files, or set allow_partial=True to use it as it is")


def test_partial_celeba_is_accepted_with_allow_partial(celeba):
    (celeba / "list_eval_partition.txt").unlink()
    landmarks = celeba / "list_landmarks_align_celeba.txt"
    rows = ["image_id,lefteye_x,lefteye_y,righteye_x,righteye_y,nose_x,nose_y,leftmouth_x,"
            "leftmouth_y,rightmouth_x,rightmouth_y",
            "000001.jpg," + ",".join(map(str, LANDMARKS["000001.jpg"]))]
    landmarks.unlink()
    (celeba / "list_landmarks_align_celeba_000001-000001.csv").write_text("\n".join(rows) + "\n")
    source = CelebASource(celeba, allow_partial=True, expected_images=3)
    assert source.missing == ["list_landmarks_align_celeba.txt (1 of 3 rows in "
                              "list_landmarks_align_celeba_000001-000001.csv)",
                              "list_eval_partition.txt"]
    assert len(source) == 3
    first, second = source.read("000001.jpg").meta, source.read("000002.jpg").meta
    assert first["landmarks"]["rightmouth"] == [108, 154]
    assert "partition" not in first and "landmarks" not in second
    assert second["identity"] == 2937 and second["attributes"]["Arched_Eyebrows"] is False


def test_label_sizes_are_checked_when_known(celeba):
    actual = (celeba / "list_attr_celeba.txt").stat().st_size
    problems = check_local_dir(celeba, {"list_attr_celeba.txt": 26721026}, allow_partial=True,
                               expected_images=3)
    assert problems == [f"list_attr_celeba.txt ({actual} bytes, expected 26721026)"]


def test_missing_local_dir_names_the_setting(tmp_path):
    with pytest.raises(FileNotFoundError, match="set local_dir to the folder holding img_align_celeba/"):
        check_local_dir(tmp_path / "nope")


def test_label_parser_rejects_ragged_rows():
    with pytest.raises(ValueError, match=r"attr.txt:4: 1 values, expected 2"):
        parse_label_lines(["2\r\n", "A B \r\n", "1.jpg 1 -1\r\n", "2.jpg 1\r\n"], "attr.txt")


def test_prepare_celeba_downloads_verifies_and_extracts(http_server, tmp_path):
    files = official_files(tmp_path)
    for name, data in files.items():
        http_server.routes[f"/{name}"] = lambda h, d=data: h.send_file(d)
    remotes = [RemoteFile(n, (http_server.url(f"/{n}"),), len(d), hashlib.sha256(d).hexdigest())
               for n, d in files.items()]
    policy = Policy(retries=1, backoff=0.01)
    root = prepare_celeba(tmp_path / "raw", remotes, policy=policy, allow=["127.0.0.0/8"])
    source = CelebASource(root, expected_images=3)
    assert source.keys() == NAMES
    assert source.read("000001.jpg").meta["identity"] == 2880
    # A second run re-verifies the files on disk and downloads nothing.
    before = len(http_server.log)
    prepare_celeba(tmp_path / "raw", remotes, policy=policy, allow=["127.0.0.0/8"])
    assert len(http_server.log) == before


def test_prepare_celeba_uses_local_dir_in_place(celeba, tmp_path):
    remotes = [RemoteFile("list_attr_celeba.txt", ("gdrive:x",), size=26721026)]
    with pytest.raises(IncompleteCopyError, match=r"list_attr_celeba.txt \(\d+ bytes, expected 26721026\)"):
        prepare_celeba(tmp_path / "unused", remotes, local_dir=celeba)
    assert prepare_celeba(tmp_path / "unused", remotes, local_dir=celeba, allow_partial=True) == celeba
    assert not (tmp_path / "unused").exists()


# --- LSUN -------------------------------------------------------------------

def make_lmdb(path: Path, entries: dict[bytes, bytes]) -> Path:
    import lmdb

    env = lmdb.open(str(path), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for k, v in entries.items():
            txn.put(k, v)
    env.close()
    return path


@pytest.fixture
def lsun_entries():
    keys = [hashlib.sha1(bytes([i])).hexdigest().encode() for i in range(7)]
    values = [encoded((i * 30, 0, 0), fmt) for i, fmt in
              enumerate(["WEBP", "WEBP", "JPEG", "PNG", "WEBP", "WEBP", "WEBP"])]
    values[4] = b"\x00garbage, not an image"
    return dict(zip(keys, values, strict=True))


def test_lsun_export_shards_keep_original_bytes_and_account_for_every_entry(tmp_path, lsun_entries):
    db = make_lmdb(tmp_path / "bedroom_val_lmdb", lsun_entries)
    stats = export_lmdb(db, tmp_path / "out", shard_size=3)
    assert (stats.entries, stats.shards, stats.images, stats.rejected) == (7, 3, 6, 1)
    ordered = sorted(lsun_entries)
    source = LSUNSource(tmp_path / "out", category="bedroom")
    assert len(source) + stats.rejected == len(lsun_entries)
    for index, key in enumerate(ordered):
        value = lsun_entries[key]
        shard = tmp_path / "out" / f"{index // 3:05d}"
        if index == ordered.index(next(k for k in ordered if lsun_entries[k].startswith(b"\x00"))):
            rejected = [json.loads(line) for line in (shard / "rejected.jsonl").read_text().splitlines()]
            assert rejected == [{"key": key.hex(), "reason": "not a JPEG/PNG/WebP/GIF/BMP image",
                                 "bytes": len(value)}]
            continue
        path = shard / f"{key.decode()}.{image_format(value)}"
        assert path.read_bytes() == value
        item = source.read(path.relative_to(tmp_path / "out").as_posix())
        assert item.meta == {"lsun_key": key.decode(), "category": "bedroom"}
    assert sorted(image_format(v) for v in lsun_entries.values() if image_format(v)) == \
        ["jpg", "png", "webp", "webp", "webp", "webp"]


def test_lsun_export_resumes_skipping_finished_shards(tmp_path, lsun_entries):
    db = make_lmdb(tmp_path / "db", lsun_entries)
    export_lmdb(db, tmp_path / "out", shard_size=3)
    first = sorted((tmp_path / "out" / "00000").iterdir())
    marker = {p.name: p.stat().st_mtime_ns for p in first}
    for p in (tmp_path / "out" / "00001").iterdir():
        p.unlink()
    (tmp_path / "out" / "00001").rmdir()
    (tmp_path / "out" / ".tmp-00002-stale").mkdir()  # left by a killed run
    stats = export_lmdb(db, tmp_path / "out", shard_size=3)
    assert (stats.written_shards, stats.skipped_shards) == (1, 2)
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out" / "00000").iterdir()} == marker
    assert len(LSUNSource(tmp_path / "out")) == 6
    with pytest.raises(ValueError, match="shard_size 3"):
        export_lmdb(db, tmp_path / "out", shard_size=4)


def test_lsun_zip_is_verified_extracted_and_exported(tmp_path, lsun_entries):
    db = make_lmdb(tmp_path / "cat", lsun_entries)
    archive = tmp_path / "cat.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted(db.iterdir()):  # data.mdb first
            zf.write(f, f"cat/{f.name}")
    verify_zip(archive)
    lmdb_dir = extract_lmdb(archive, tmp_path / "work")
    assert lmdb_dir == tmp_path / "work" / "cat" / "cat"
    assert export_lmdb(lmdb_dir, tmp_path / "out", shard_size=10).images == 6
    data = bytearray(archive.read_bytes())
    data[60:70] = b"\xff" * 10  # corrupt the first member's data
    archive.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"cat.zip: member 'cat/data.mdb' fails its CRC check"):
        verify_zip(archive)


def test_lsun_urls_follow_the_official_layout():
    assert lsun_remote_file("bedroom").urls == ("http://dl.yf.io/lsun/scenes/bedroom_train_lmdb.zip",)
    assert lsun_remote_file("cat").name == "cat.zip"
    with pytest.raises(ValueError, match="unknown LSUN category 'bedrooms'"):
        lsun_remote_file("bedrooms")


# --- ImageNet -----------------------------------------------------------------

SYNSETS = {
    "n01440764": {"n01440764_10026.JPEG": encoded((255, 0, 0)), "n01440764_1003.JPEG": encoded((0, 255, 0))},
    "n01443537": {"n01443537_1.JPEG": encoded((0, 0, 255))},
    "n01484850": {"n01484850_7.JPEG": encoded((9, 9, 9))},
}


def train_tar(path: Path, classes: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tf:
        for synset, data in classes.items():
            info = tarfile.TarInfo(f"{synset}.tar")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def test_imagenet_from_nested_train_tar(tmp_path):
    archive = train_tar(tmp_path / "ILSVRC2012_img_train.tar",
                        {s: tar_bytes(f) for s, f in SYNSETS.items()})
    stats = import_imagenet(archive, tmp_path / "out")
    assert (stats.imported, stats.images) == (sorted(SYNSETS), 4)
    source = ImageNetSource(tmp_path / "out")
    assert source.keys() == sorted(f"{s}/{n}" for s, files in SYNSETS.items() for n in files)
    item = source.read("n01440764/n01440764_1003.JPEG")
    assert item.data == SYNSETS["n01440764"]["n01440764_1003.JPEG"]
    assert item.meta == {"synset": "n01440764"}
    again = import_imagenet(archive, tmp_path / "out")
    assert (again.imported, again.skipped) == ([], sorted(SYNSETS))


def test_imagenet_allow_list_and_unknown_synsets(tmp_path):
    archive = train_tar(tmp_path / "train.tar", {s: tar_bytes(f) for s, f in SYNSETS.items()})
    stats = import_imagenet(archive, tmp_path / "out", synsets="n01443537, n01484850")
    assert stats.imported == ["n01443537", "n01484850"] and stats.filtered == ["n01440764"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["n01443537", "n01484850"]
    with pytest.raises(ValueError, match=r"synsets not found in .*train.tar: n09999999; fix "
                                         r"\[ImportImageNet\] synsets"):
        import_imagenet(archive, tmp_path / "out2", synsets=["n01443537", "n09999999"])
    with pytest.raises(ValueError, match="not WordNet synset ids .*: dog"):
        import_imagenet(archive, tmp_path / "out3", synsets="dog")


def test_imagenet_from_folder_of_subfolders_and_class_tars(tmp_path):
    src = tmp_path / "train"
    (src / "n01440764").mkdir(parents=True)
    for name, data in SYNSETS["n01440764"].items():
        (src / "n01440764" / name).write_bytes(data)
    (src / "n01443537.tar").write_bytes(tar_bytes({**SYNSETS["n01443537"], "notes.txt": b"x"}))
    (src / "README.txt").write_text("not a synset")
    stats = import_imagenet(src, tmp_path / "out")
    assert stats.imported == ["n01440764", "n01443537"]
    assert stats.ignored == ["README.txt", f"{src}/n01443537.tar:notes.txt"]
    assert (tmp_path / "out" / "n01443537" / "n01443537_1.JPEG").read_bytes() == \
        SYNSETS["n01443537"]["n01443537_1.JPEG"]
    assert len(ImageNetSource(tmp_path / "out")) == 3


def test_imagenet_class_tar_with_symlink_is_refused_atomically(tmp_path):
    link = tarfile.TarInfo("evil.JPEG")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    archive = train_tar(tmp_path / "train.tar", {
        "n01440764": tar_bytes(SYNSETS["n01440764"]),
        "n01443537": tar_bytes(SYNSETS["n01443537"], extra=link)})
    with pytest.raises(UnsafeArchiveError, match=r"train.tar:n01443537.tar: refusing member "
                                                 r"'evil.JPEG': symlink to '/etc/passwd'"):
        import_imagenet(archive, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["n01440764"]


@pytest.mark.parametrize("archive", [None, ""])
def test_imagenet_without_archive_says_where_to_get_it(tmp_path, archive):
    with pytest.raises(ImageNetNotConfigured) as err:
        import_imagenet(archive, tmp_path / "out")
    msg = str(err.value)
    assert "https://image-net.org" in msg and "register" in msg
    assert "[ImportImageNet] archive" in msg and "ILSVRC2012_img_train.tar" in msg
    assert not (tmp_path / "out").exists()


def test_imagenet_missing_path_is_named(tmp_path):
    with pytest.raises(ImageNetNotConfigured, match=f"{tmp_path}/nope.tar does not exist"):
        import_imagenet(tmp_path / "nope.tar", tmp_path / "out")


def test_lsun_extraction_is_verified_before_it_becomes_visible(tmp_path, lsun_entries):
    broken = tmp_path / "cat.zip"
    with zipfile.ZipFile(broken, "w") as zf:
        zf.writestr("cat/readme.txt", "no database in here")
    work = tmp_path / "work"
    for _ in range(2):  # the re-run verifies again instead of skipping the extraction
        with pytest.raises(FileNotFoundError, match="expected one LMDB"):
            extract_lmdb(broken, work)
        assert not (work / "cat").exists() and sorted(work.iterdir()) == []
    not_lmdb = tmp_path / "dog.zip"
    with zipfile.ZipFile(not_lmdb, "w") as zf:
        zf.writestr("dog/data.mdb", b"\x00" * 4096)
    with pytest.raises(ValueError, match="dog.zip.*not a readable LMDB"):
        extract_lmdb(not_lmdb, work)
    assert not (work / "dog").exists()
    # a folder left unverified by an earlier version is checked, and replaced
    (tmp_path / "db").mkdir()
    db = make_lmdb(tmp_path / "db" / "cat", lsun_entries)
    with zipfile.ZipFile(broken, "w") as zf:
        for f in sorted(db.iterdir()):
            zf.write(f, f"cat/{f.name}")
    (work / "cat" / "cat").mkdir(parents=True)
    assert extract_lmdb(broken, work) == work / "cat" / "cat"
    assert export_lmdb(work / "cat" / "cat", tmp_path / "out", shard_size=10).images == 6


def test_imagenet_train_tar_is_checked_against_its_md5_when_asked(tmp_path):
    archive = train_tar(tmp_path / "ILSVRC2012_img_train.tar",
                        {s: tar_bytes(f) for s, f in SYNSETS.items()})
    with pytest.raises(ValueError, match=rf"MD5 [0-9a-f]{{32}} is not the published {TRAIN_TAR_MD5}"):
        import_imagenet(archive, tmp_path / "out", md5=TRAIN_TAR_MD5)
    assert not (tmp_path / "out").exists()  # refused before anything was imported
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    assert import_imagenet(archive, tmp_path / "out", md5=md5).images == 4
