"""pipeline.archive: hostile zips and tars are refused, nothing escapes."""
from __future__ import annotations

import io
import stat
import tarfile
import zipfile

import pytest

from pipeline.archive import UnsafeArchiveError, extract, extract_tar, extract_zip, iter_tar_files


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
