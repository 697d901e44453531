"""The embedded sample is deterministic; outputs appear atomically or not at all."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pipeline.atomic import Busy, atomic_dir, atomic_file, atomic_path, locked
from pipeline.jsonl import JsonlLog, read_jsonl, write_jsonl
from pipeline.sources.base import DirectorySource, shard_keys
from pipeline.sources.sample_photos import MAX_ROTATION, make_photo, write_sample


def test_photos_depend_only_on_seed_and_index():
    a, pa = make_photo(7, 3)
    b, pb = make_photo(7, 3)
    c, _ = make_photo(8, 3)
    assert a == b and pa == pb and a != c
    img = Image.open(io.BytesIO(a))
    assert img.format == "JPEG" and img.size == tuple(pa["canvas"])
    assert abs(pa["angle"]) <= MAX_ROTATION and 40 <= pa["jpeg_quality"] <= 95


def test_write_sample_indexes_every_photo(tmp_path):
    write_sample(tmp_path, 6, seed=1)
    source = DirectorySource(tmp_path, name="sample")
    assert source.keys() == [f"sample_{i:05d}.jpg" for i in range(6)]
    item = source.read("sample_00002.jpg")
    assert item.meta["portrait"] in ("astronaut", "grace_hopper") and item.meta["seed"] == 1
    # more photos later: the first ones are unchanged
    more = tmp_path / "more"
    more.mkdir()
    write_sample(more, 8, seed=1)
    assert (more / "sample_00005.jpg").read_bytes() == (tmp_path / "sample_00005.jpg").read_bytes()
    varied = {Image.open(tmp_path / k).size for k in source.keys()}
    assert len(varied) == 6  # random canvases


def test_shard_keys_are_consecutive_chunks():
    keys = [f"{i:03d}" for i in range(10)]
    assert shard_keys(keys, 4) == [keys[0:4], keys[4:8], keys[8:10]]
    with pytest.raises(ValueError):
        shard_keys(keys, 0)


def test_atomic_dir_leaves_nothing_on_failure(tmp_path):
    final = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with atomic_dir(final) as tmp:
            (tmp / "half.bin").write_bytes(b"x")
            raise RuntimeError("killed")
    assert not final.exists() and list(tmp_path.iterdir()) == []
    with atomic_dir(final) as tmp:
        (tmp / "whole.bin").write_bytes(b"y")
    assert (final / "whole.bin").read_bytes() == b"y"


def test_atomic_file_cleans_only_dead_writers_temporaries(tmp_path):
    import subprocess
    import sys
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    (tmp_path / f".tmp-data.npy-{dead}-x1").write_bytes(b"left by a killed run")
    live = tmp_path / ".tmp-data.npy-1-x2"  # pid 1 exists: a concurrent writer
    live.write_bytes(b"being written by another process")
    with atomic_file(tmp_path / "data.npy") as fh:
        np.save(fh, np.arange(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tmp-data.npy-1-x2", "data.npy"]


def test_atomic_path_publishes_what_a_library_wrote_by_path(tmp_path):
    from PIL import Image as PILImage

    final = tmp_path / "grid.png"
    with atomic_path(final) as tmp:
        assert tmp.suffix == ".png" and tmp.parent == tmp_path and not tmp.exists()
        PILImage.new("RGB", (4, 4)).save(tmp)  # PIL picks PNG from the suffix
    assert PILImage.open(final).format == "PNG"
    folder = tmp_path / "saved_model"
    (folder / "old.pb").parent.mkdir()
    (folder / "old.pb").write_bytes(b"old")
    with atomic_path(folder) as tmp:          # a library that writes a folder
        tmp.mkdir()
        (tmp / "saved_model.pb").write_bytes(b"new")
    assert sorted(p.name for p in folder.iterdir()) == ["saved_model.pb"]
    with pytest.raises(RuntimeError):
        with atomic_path(final) as tmp:
            tmp.write_bytes(b"half a png")
            raise RuntimeError("killed")
    assert PILImage.open(final).format == "PNG"
    with pytest.raises(FileNotFoundError, match="nothing was written"):
        with atomic_path(tmp_path / "never.png"):
            pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.png", "saved_model"]


def test_atomic_path_cleans_temporaries_of_dead_writers(tmp_path):
    import subprocess
    import sys
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    (tmp_path / f".tmp-model.keras-{dead}-ab12.keras").write_bytes(b"left by a killed run")
    with atomic_path(tmp_path / "model.keras") as tmp:
        tmp.write_bytes(b"model")
    assert [p.name for p in tmp_path.iterdir()] == ["model.keras"]


def test_locked_keeps_a_second_writer_out(tmp_path):
    with locked(tmp_path / "lock", "busy: another writer"):
        with pytest.raises(Busy, match="busy: another writer"):
            with locked(tmp_path / "lock", "busy: another writer"):
                pass
    with locked(tmp_path / "lock", "busy"):  # released: free again
        pass


def test_jsonl_skips_a_torn_last_line_and_names_damage(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}\n{"a": 3, "b"')  # killed mid-append
    assert read_jsonl(path) == [{"a": 1}, {"a": 2}]
    with JsonlLog(path) as log:                     # cut before appending again
        log.append({"a": 4})
    assert path.read_text() == '{"a": 1}\n{"a": 2}\n{"a": 4}\n'
    path.write_text('{"a": 1}\nnot json\n{"a": 2}\n')
    with pytest.raises(ValueError, match=r"log.jsonl:2 is not JSON"):
        read_jsonl(path)
    assert read_jsonl(tmp_path / "absent.jsonl") == []
    write_jsonl(tmp_path / "new.jsonl", [{"b": 2, "a": 1}])
    assert (tmp_path / "new.jsonl").read_text() == '{"a": 1, "b": 2}\n'
