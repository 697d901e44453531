"""Detection, alignment and decoding on real public-domain portraits."""
from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from pipeline.aligned import align_keys, write_shard
from pipeline.faces import MINMAX_TEMPLATE, FaceAligner, openface_transform, template_points
from pipeline.imaging import DecodeError, decode_rgb
from pipeline.sample import portrait
from pipeline.sources import DirectorySource


@pytest.fixture(scope="module")
def astronaut():
    return np.asarray(portrait("astronaut"))


@pytest.fixture(scope="module")
def aligner():
    return FaceAligner(size=64)


def _jpeg(rgb, **kw):
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=95, **kw)
    return buf.getvalue()


def test_template_is_openface_minmax():
    assert MINMAX_TEMPLATE.shape == (68, 2)
    assert np.allclose(MINMAX_TEMPLATE.min(0), 0) and np.allclose(MINMAX_TEMPLATE.max(0), 1)
    # OpenFace's published template, point 0 and 57 (bottom lip), normalised by hand
    assert np.allclose(MINMAX_TEMPLATE[0], [0.0, (0.339223741112 - 0.182360984545) / (1.06080371126 - 0.182360984545)])
    assert np.allclose(template_points(96)[39], 96 * MINMAX_TEMPLATE[39])


def test_astronaut_aligns_to_one_64px_face(astronaut, aligner):
    faces = aligner.align(astronaut)
    assert len(faces) == 1
    face = faces[0]
    assert face.image.shape == (64, 64, 3) and face.image.dtype == np.uint8
    assert face.landmarks.shape == (68, 2)
    l, t, r, b = face.box
    assert 150 < l < r < 320 and 50 < t < b < 250  # her face, not the flag or the helmet
    # the three anchor landmarks land on the template
    mapped = face.landmarks[[39, 42, 57]] @ face.transform[:, :2].T + face.transform[:, 2]
    assert np.allclose(mapped, 64 * MINMAX_TEMPLATE[[39, 42, 57]], atol=1e-3)


def test_openface_mode_equals_openfaces_formula(astronaut, aligner):
    face = aligner.align(astronaut)[0]
    src = np.float32(face.landmarks)[[39, 42, 57]]
    dst = 64 * MINMAX_TEMPLATE[[39, 42, 57]]
    # Solve the 3-point affine directly: [x y 1] @ M.T = dst
    direct = np.linalg.solve(np.c_[src, np.ones(3)], dst).T
    assert np.allclose(openface_transform(face.landmarks, 64), direct, atol=1e-4)
    expected = cv2.warpAffine(astronaut, direct, (64, 64))
    assert np.abs(face.image.astype(int) - expected.astype(int)).max() <= 1


def test_decoding_errors_have_reasons():
    good = _jpeg(np.zeros((40, 40, 3), np.uint8))
    with pytest.raises(DecodeError) as exc:
        decode_rgb(good[: len(good) // 2])
    assert exc.value.reason == "truncated"
    with pytest.raises(DecodeError) as exc:
        decode_rgb(b"<html>not an image</html>")
    assert exc.value.reason == "undecodable"
    with pytest.raises(DecodeError) as exc:
        decode_rgb(b"")
    assert exc.value.reason == "empty"


@pytest.mark.parametrize("mode", ["L", "RGBA", "CMYK", "P", "I;16"])
def test_modes_decode_to_rgb(mode, astronaut):
    img = Image.fromarray(astronaut)
    if mode == "I;16":
        img = Image.fromarray((np.asarray(img.convert("L"), np.uint16) * 257))
        fmt = "PNG"
    else:
        img = img.convert(mode)
        fmt = "JPEG" if mode in ("L", "CMYK") else "PNG"
    buf = io.BytesIO()
    img.save(buf, fmt)
    rgb = decode_rgb(buf.getvalue())
    assert rgb.shape == (512, 512, 3) and rgb.dtype == np.uint8
    assert 40 < rgb.mean() < 220  # not all black or white: the range was kept


def test_shard_accounts_for_every_input(tmp_path, astronaut, aligner):
    root = tmp_path / "src"
    root.mkdir()
    (root / "a_face.jpg").write_bytes(_jpeg(astronaut))
    (root / "b_blank.jpg").write_bytes(_jpeg(np.full((200, 200, 3), 128, np.uint8)))
    (root / "c_truncated.jpg").write_bytes(_jpeg(astronaut)[:3000])
    (root / "d_text.png").write_bytes(b"this is not a png")
    source = DirectorySource(root, name="t")
    keys = source.keys()
    images, faces, rejected = align_keys(source, keys, aligner)
    assert images.shape == (1, 64, 64, 3)
    assert [f["key"] for f in faces] == ["a_face.jpg"]
    assert {r["key"]: r["reason"] for r in rejected} == {
        "b_blank.jpg": "no_face", "c_truncated.jpg": "truncated", "d_text.png": "undecodable"}
    out = tmp_path / "shard"
    out.mkdir()
    summary = write_shard(out, keys, images, faces, rejected)
    assert summary["inputs"] == 4 == summary["images_with_faces"] + summary["rejected"]
    with pytest.raises(RuntimeError, match="neither aligned nor rejected"):
        write_shard(out, keys + ["lost.jpg"], images, faces, rejected)
