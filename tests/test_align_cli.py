"""`facegan-align align INPUT_DIR OUTPUT_DIR`: a folder of photos in, a mirrored tree out."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from pipeline.align.aligner import LANDMARK_SETS, MINMAX_TEMPLATE
from pipeline.align.cli import face_output, main
from pipeline.sources.sample_photos import portrait

ROOT = Path(__file__).resolve().parents[1]


def _jpeg(rgb) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def _png(rgb) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG")
    return buf.getvalue()


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """A small tree: two portraits (one in a sub-folder), a two-person photo, a
    blank, a truncated JPEG and a text file with an image suffix."""
    root = tmp_path_factory.mktemp("photos")
    astronaut = np.asarray(portrait("astronaut"))
    hopper = np.asarray(portrait("grace_hopper"))
    (root / "people" / "nasa").mkdir(parents=True)
    (root / "people" / "nasa" / "collins.jpg").write_bytes(_jpeg(astronaut))
    (root / "hopper.png").write_bytes(_png(hopper))
    pair = np.full((600, 512 + 384, 3), 90, np.uint8)
    pair[:, :512] = hopper
    pair[100:484, 512:] = cv2.resize(astronaut, (384, 384), interpolation=cv2.INTER_AREA)
    (root / "people" / "pair.jpg").write_bytes(_jpeg(pair))
    (root / "blank.jpg").write_bytes(_jpeg(np.full((240, 320, 3), 128, np.uint8)))
    (root / "broken.jpg").write_bytes(_jpeg(astronaut)[:4000])
    (root / "notes.jpg").write_bytes(b"shopping list, not a photo")
    (root / "readme.txt").write_text("not an image suffix: not an input")
    return root


def test_cli_mirrors_the_tree_logs_rejections_and_skips_done_inputs(photos, tmp_path):
    out = tmp_path / "aligned"
    cmd = [sys.executable, "-m", "pipeline.align", "align", str(photos), str(out), "--size", "64",
           "--landmarks", "innerEyesAndBottomLip", "--mode", "openface", "--all-faces", "--jobs", "2",
           "--quiet"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["inputs"] == 6 == summary["aligned"] + summary["rejected"] + summary["skipped"]
    assert summary["aligned"] == 3 and summary["faces"] >= 4 and summary["skipped"] == 0

    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert {"hopper.png", "people/nasa/collins.png", "people/pair.png", "people/pair_1.png"} <= set(written)
    assert not [p for p in out.rglob(".tmp-*")]
    for name in written:
        with Image.open(out / name) as img:
            assert img.size == (64, 64) and img.mode == "RGB"

    rejected = {r["key"]: r["reason"] for r in _lines(out / "rejected.jsonl")}
    assert rejected == {"blank.jpg": "no_face", "broken.jpg": "truncated", "notes.jpg": "undecodable"}
    meta = _lines(out / "faces.jsonl")
    assert sorted(m["output"] for m in meta) == written
    assert {m["key"] for m in meta} == {"hopper.png", "people/nasa/collins.jpg", "people/pair.jpg"}
    for m in meta:
        assert len(m["landmarks"]) == 68 and np.shape(m["transform"]) == (2, 3) and m["mode"] == "openface"
        assert m["score"] > 0 and len(m["box"]) == 4

    # a re-run finds everything done: nothing aligned again, no new log lines
    stamp = {name: os.stat(out / name).st_mtime_ns for name in written}
    assert main(["align", str(photos), str(out), "--quiet", "--all-faces"]) == 0
    assert {name: os.stat(out / name).st_mtime_ns for name in written} == stamp
    assert len(_lines(out / "rejected.jsonl")) == 3 and len(_lines(out / "faces.jsonl")) == len(meta)

    # a new photo is the only work of the next run
    (photos / "people" / "nasa" / "collins_copy.jpg").write_bytes(
        (photos / "people" / "nasa" / "collins.jpg").read_bytes())
    try:
        result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
        again = json.loads(result.stdout.strip().splitlines()[-1])
    finally:
        (photos / "people" / "nasa" / "collins_copy.jpg").unlink()
    assert again["skipped"] == 6 and again["aligned"] == 1 and again["inputs"] == 7
    assert (out / "people" / "nasa" / "collins_copy.png").exists()


def test_openface_mode_output_is_openfaces_formula(photos, tmp_path, capsys):
    out = tmp_path / "of"
    assert main(["align", str(photos / "people"), str(out), "--size", "96", "--landmarks", "outerEyesAndNose",
                 "--mode", "openface", "--jobs", "1", "--quiet"]) == 0
    meta = {m["output"]: m for m in _lines(out / "faces.jsonl")}["nasa/collins.png"]
    idx = list(LANDMARK_SETS["outerEyesAndNose"])
    src = np.float64(meta["landmarks"])[idx]
    direct = np.linalg.solve(np.c_[src, np.ones(3)], 96 * MINMAX_TEMPLATE[idx]).T  # OpenFace's H
    assert np.allclose(meta["transform"], direct, atol=1e-4)
    photo = np.asarray(Image.open(photos / "people" / "nasa" / "collins.jpg").convert("RGB"))
    expected = cv2.warpAffine(photo, np.float64(meta["transform"]), (96, 96), flags=cv2.INTER_LINEAR)
    aligned = np.asarray(Image.open(out / "nasa" / "collins.png"))
    assert np.abs(aligned.astype(int) - expected.astype(int)).max() <= 1
    assert json.loads(capsys.readouterr().out)["aligned"] == 2


def test_similarity_mode_margin_and_options(photos, tmp_path, capsys):
    out = tmp_path / "sim"
    assert main(["align", str(photos), str(out), "--mode", "similarity", "--margin", "0.1", "--size", "48",
                 "--min-face", "60", "--upsample", "1", "--detector", "hog", "--jobs", "1", "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["aligned"] == 3 and summary["faces"] == 3  # largest face only
    meta = _lines(out / "faces.jsonl")
    assert {m["mode"] for m in meta} == {"similarity"} and {m["margin"] for m in meta} == {0.1}
    for m in meta:
        t = np.float64(m["transform"])
        # a similarity: equal scale on both axes, no shear
        assert np.isclose(t[0, 0], t[1, 1], atol=1e-5) and np.isclose(t[0, 1], -t[1, 0], atol=1e-5)
    with Image.open(out / "hopper.png") as img:
        assert img.size == (48, 48)


def test_bad_arguments_give_a_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["align", str(tmp_path / "missing"), str(tmp_path / "out")])
    assert exc.value.code == 2 and "missing is not a folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["align", str(tmp_path), str(tmp_path / "out"), "--margin", "0.7"])
    assert exc.value.code == 2 and "margin must be in [0, 0.5)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["align", str(tmp_path), str(tmp_path / "out"), "--mode", "nope"])


def test_name_clash_is_rejected_not_overwritten(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    face = _jpeg(np.asarray(portrait("astronaut")))
    (src / "same.jpg").write_bytes(face)
    (src / "same.png").write_bytes(b"whatever")
    assert face_output("a/b/same.jpg", 0) == "a/b/same.png" and face_output("same.jpg", 2) == "same_2.png"
    assert main(["align", str(src), str(tmp_path / "out"), "--jobs", "1", "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["inputs"] == 2 and summary["aligned"] == 1 and summary["rejected_by_reason"] == {"name_clash": 1}
    assert _lines(tmp_path / "out" / "rejected.jsonl")[0]["key"] == "same.png"


def test_rerun_accounts_for_every_input_as_the_first_run_did(tmp_path, capsys):
    """Name clashes are rejected on every run (once in rejected.jsonl), so a
    re-run's counts add up to the same inputs as the first run's."""
    src = tmp_path / "in"
    src.mkdir()
    face = _jpeg(np.asarray(portrait("astronaut")))
    for stem in ("a", "b"):
        (src / f"{stem}.jpg").write_bytes(face)
        (src / f"{stem}.png").write_bytes(b"same output name as the jpg")
    (src / "blank.jpg").write_bytes(_jpeg(np.full((120, 160, 3), 128, np.uint8)))
    out = tmp_path / "out"
    runs = []
    for _ in range(2):
        assert main(["align", str(src), str(out), "--jobs", "1", "--quiet"]) == 0
        runs.append(json.loads(capsys.readouterr().out))
    first, again = runs
    assert first["inputs"] == again["inputs"] == 5
    assert first["aligned"] + first["rejected"] + first["skipped"] == 5
    assert again["aligned"] + again["rejected"] + again["skipped"] == 5
    assert first["rejected_by_reason"] == {"name_clash": 2, "no_face": 1}
    assert again["rejected_by_reason"] == {"name_clash": 2} and again["skipped"] == 3
    reasons = sorted(r["reason"] for r in _lines(out / "rejected.jsonl"))
    assert reasons == ["name_clash", "name_clash", "no_face"]  # no line written twice
