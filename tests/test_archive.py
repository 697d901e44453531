"""pipeline.net.archive: hostile zips and tars are refused, nothing escapes."""
from __future__ import annotations

import io
import stat
import tarfile
import zipfile

import numpy as np
import pytest

from pipeline.net.archive import UnsafeArchiveError, extract, extract_tar, extract_zip, iter_tar_files


def all_files(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


@pytest.fixture
def box(tmp_path):
    """``tmp_path/out`` is the target; anything else appearing under
    ``tmp_path`` would be an escape."""
    (tmp_path / "out").mkdir()
    return tmp_path


def make_zip(path, entries):
    with zipfile.ZipFile(path, "w") as zf:
        for info, data in entries:
            zf.writestr(info, data)
    return path


def zinfo(name, mode=None):
    info = zipfile.ZipInfo(name)
    if mode is not None:
        info.external_attr = mode << 16
    return info


def test_zip_extracts_regular_files_with_strip_and_select(box):
    archive = make_zip(box / "a.zip", [(zinfo("top/"), b""), (zinfo("top/a.jpg"), b"A" * 10),
                                       (zinfo("top/sub/b.txt"), b"B"), (zinfo("top/c.jpg"), b"C")])
    written = extract_zip(archive, box / "out", strip_components=1,
                          select=lambda n: n.endswith(".jpg"))
    assert written == ["a.jpg", "c.jpg"]
    assert (box / "out" / "a.jpg").read_bytes() == b"A" * 10
    assert all_files(box / "out") == ["a.jpg", "c.jpg"]


@pytest.mark.parametrize("name, reason", [
    ("../evil.txt", "'..' in path"),
    ("ok/../../evil.txt", "'..' in path"),
    ("/tmp/evil_abs.txt", "absolute path"),
    ("C:\\evil.txt", "Windows-style path"),
])
def test_zip_with_escaping_name_is_refused(box, name, reason):
    archive = make_zip(box / "bad.zip", [(zinfo("fine.txt"), b"ok"), (zinfo(name), b"evil")])
    with pytest.raises(UnsafeArchiveError) as err:
        extract_zip(archive, box / "out")
    assert str(err.value) == f"{archive}: refusing member {name!r}: {reason}"
    assert all_files(box / "out") == []  # checked before anything is written
    assert sorted(p.name for p in box.iterdir()) == ["bad.zip", "out"]


def test_zip_symlink_entry_is_refused(box):
    archive = make_zip(box / "link.zip", [(zinfo("link", stat.S_IFLNK | 0o777), b"/etc/passwd")])
    with pytest.raises(UnsafeArchiveError, match=r"link.zip: refusing member 'link': symlink"):
        extract_zip(archive, box / "out")
    assert all_files(box / "out") == []


def test_zip_caps_on_members_and_bytes(box):
    archive = make_zip(box / "big.zip", [(zinfo(f"f{i}"), b"x" * 100) for i in range(5)])
    with pytest.raises(UnsafeArchiveError, match=r"refusing member 'f3': more than 3 members"):
        extract_zip(archive, box / "out", max_members=3)
    with pytest.raises(UnsafeArchiveError, match=r"refusing member 'f2': more than 250 bytes"):
        extract_zip(archive, box / "out", max_bytes=250)
    assert all_files(box / "out") == []


def test_zip_into_a_symlinked_folder_inside_target_is_refused(box):
    (box / "outside").mkdir()
    (box / "out" / "sub").symlink_to(box / "outside")
    archive = make_zip(box / "a.zip", [(zinfo("sub/x.txt"), b"x")])
    with pytest.raises(UnsafeArchiveError, match="outside"):
        extract_zip(archive, box / "out")
    assert list((box / "outside").iterdir()) == []


def tar_with(path, *members):
    with tarfile.open(path, "w") as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def tinfo(name, kind=tarfile.REGTYPE, size=0, linkname="", mode=0o644):
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname, info.mode = kind, size, linkname, mode
    return info


@pytest.mark.parametrize("member, reason", [
    (tinfo("link", tarfile.SYMTYPE, linkname="/etc/passwd"), "symlink to '/etc/passwd'"),
    (tinfo("inner/link", tarfile.SYMTYPE, linkname="../../x"), "symlink to '../../x'"),
    (tinfo("hard", tarfile.LNKTYPE, linkname="/etc/passwd"), "hard link to '/etc/passwd'"),
    (tinfo("dev", tarfile.CHRTYPE), "device file"),
    (tinfo("blk", tarfile.BLKTYPE), "device file"),
    (tinfo("pipe", tarfile.FIFOTYPE), "fifo"),
    (tinfo("../evil.txt", size=4), "'..' in path"),
    (tinfo("/evil_abs.txt", size=4), "absolute path"),
])
def test_tar_with_links_devices_or_escapes_is_refused(box, member, reason):
    data = b"evil" if member.isreg() else None
    archive = tar_with(box / "bad.tar", (tinfo("fine.txt", size=2), b"ok"), (member, data))
    with pytest.raises(UnsafeArchiveError) as err:
        extract_tar(archive, box / "out")
    assert str(err.value) == f"{archive}: refusing member {member.name!r}: {reason}"
    assert all_files(box / "out") == []
    assert sorted(p.name for p in box.iterdir()) == ["bad.tar", "out"]


def test_tar_stream_is_refused_at_the_bad_member(box):
    archive = tar_with(box / "bad.tar", (tinfo("fine.txt", size=2), b"ok"),
                       (tinfo("x", tarfile.SYMTYPE, linkname="/etc"), None))
    with open(archive, "rb") as fh, pytest.raises(UnsafeArchiveError, match="symlink to '/etc'"):
        extract_tar(fh, box / "out", archive="stream.tar")
    assert not (box / "out" / "x").exists()


def test_tar_extracts_with_the_data_filter(box):
    archive = tar_with(box / "ok.tar", (tinfo("d/run.sh", size=3, mode=0o4755), b"abc"),
                       (tinfo("d/b.txt", size=1), b"b"))
    assert extract_tar(archive, box / "out", strip_components=1) == ["run.sh", "b.txt"]
    mode = (box / "out" / "run.sh").stat().st_mode
    assert (box / "out" / "run.sh").read_bytes() == b"abc"
    assert not mode & stat.S_ISUID  # filter="data" drops setuid bits


def test_tar_byte_cap(box):
    archive = tar_with(box / "ok.tar", (tinfo("a", size=600), b"a" * 600),
                       (tinfo("b", size=600), b"b" * 600))
    with pytest.raises(UnsafeArchiveError, match="refusing member 'b': more than 1000 bytes"):
        extract_tar(archive, box / "out", max_bytes=1000)
    assert all_files(box / "out") == []


def test_iter_tar_files_streams_nested_tar(box):
    inner = io.BytesIO()
    with tarfile.open(fileobj=inner, mode="w") as tf:
        tf.addfile(tinfo("x.jpg", size=3), io.BytesIO(b"xyz"))
    outer = tar_with(box / "outer.tar", (tinfo("n0.tar", size=len(inner.getvalue())), inner.getvalue()))
    seen = []
    for member, fh in iter_tar_files(outer):
        for inner_member, inner_fh in iter_tar_files(fh, archive=member.name):
            seen.append((member.name, inner_member.name, inner_fh.read()))
    assert seen == [("n0.tar", "x.jpg", b"xyz")]


def test_extract_picks_format_by_content(box):
    archive = make_zip(box / "looks_like.tar", [(zinfo("a.txt"), b"a")])
    assert extract(archive, box / "out") == ["a.txt"]
    (box / "junk.zip").write_bytes(b"not an archive")
    with pytest.raises(UnsafeArchiveError, match="junk.zip: neither a zip nor a tar"):
        extract(box / "junk.zip", box / "out")


def test_tar_root_entry_is_skipped_not_refused(box):
    archive = tar_with(box / "dot.tar", (tinfo("./", tarfile.DIRTYPE, mode=0o755), None),
                       (tinfo("./a.txt", size=1), b"a"))
    assert extract_tar(archive, box / "out") == ["a.txt"]
    assert all_files(box / "out") == ["a.txt"]


# --- archive bombs: the compression ratio is capped per member and in total -----------

MB = 1 << 20


def deflated_zip(path, members):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return path


def test_zip_bomb_member_is_refused_before_a_byte_is_written(box):
    archive = deflated_zip(box / "bomb.zip", [("readme.txt", b"hello"), ("zeros.bin", bytes(20 * MB))])
    assert archive.stat().st_size < 100_000  # 20 MB from a few tens of kilobytes
    with pytest.raises(UnsafeArchiveError, match=r"refusing member 'zeros.bin': compression ratio "
                                                 r"\d+ is over the cap of 100"):
        extract_zip(archive, box / "out")
    assert all_files(box / "out") == []
    # configurable, next to the byte cap: a genuine archive of zeros passes with a higher cap
    assert extract_zip(archive, box / "out", max_ratio=2000) == ["readme.txt", "zeros.bin"]


def test_zip_bomb_of_many_small_members_is_refused_by_the_total_ratio(box):
    # each member stays under the 1 MiB a single member may expand to at any ratio
    archive = deflated_zip(box / "many.zip", [(f"z{i:02d}.bin", bytes(MB - 1)) for i in range(40)])
    with pytest.raises(UnsafeArchiveError, match=r"compression ratio \d+ in all is over the cap of 100"):
        extract_zip(archive, box / "out")
    assert all_files(box / "out") == []


def gz_tar(path, members):
    with tarfile.open(path, "w:gz", compresslevel=6) as tf:
        for name, data in members:
            tf.addfile(tinfo(name, size=len(data)), io.BytesIO(data))
    return path


def test_tar_gz_bomb_is_refused(box):
    archive = gz_tar(box / "bomb.tar.gz", [("a.txt", b"a"), ("zeros.bin", bytes(20 * MB))])
    with pytest.raises(UnsafeArchiveError, match="compression ratio"):
        extract_tar(archive, box / "out")
    assert all_files(box / "out") == []
    with open(archive, "rb") as fh, pytest.raises(UnsafeArchiveError, match="compression ratio"):
        for _member, data in iter_tar_files(fh, archive="stream.tar.gz"):
            data.read()
    assert extract_tar(archive, box / "out", max_ratio=5000) == ["a.txt", "zeros.bin"]


def test_ordinary_archives_are_far_below_the_ratio_cap(box):
    rng = np.random.default_rng(0)
    photos = [(f"img/{i}.jpg", rng.integers(0, 256, 300_000, np.uint8).tobytes()) for i in range(4)]
    rows = 16_000  # 2.1 MB of CelebA-like label rows: "000001.jpg -1  1 ... \r\n"
    tokens = np.where(rng.integers(0, 2, (rows, 40, 1)) == 1, np.frombuffer(b" 1 ", np.uint8),
                      np.frombuffer(b"-1 ", np.uint8)).reshape(rows, 120)
    names = np.frombuffer(b"".join(b"%06d.jpg " % i for i in range(rows)), np.uint8).reshape(rows, 11)
    labels = np.hstack([names, tokens, np.frombuffer(b"\r\n", np.uint8)[None].repeat(rows, 0)])
    text = [("list_attr_celeba.txt", labels.tobytes())]
    archive = deflated_zip(box / "ok.zip", photos + text)
    assert len(extract_zip(archive, box / "out")) == 5
    assert len(extract_tar(gz_tar(box / "ok.tar.gz", photos + text), box / "out2")) == 5
