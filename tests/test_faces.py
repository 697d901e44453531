"""Detection, alignment and decoding on real public-domain portraits."""
from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from pipeline.align.aligner import (
    LANDMARK_SETS,
    MINMAX_TEMPLATE,
    FaceAligner,
    NoFace,
    apply_transform,
    dedupe_boxes,
    detection_scale,
    openface_transform,
    similarity_transform,
    template_points,
)
from pipeline.align.engine import align_keys
from pipeline.align.shards import write_shard
from pipeline.imaging import DecodeError, Photo, decode_rgb
from pipeline.sources.base import DirectorySource
from pipeline.sources.sample_photos import portrait

ROOT = Path(__file__).resolve().parents[1]


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
    left, top, right, bottom = face.box
    assert 150 < left < right < 320 and 50 < top < bottom < 250  # her face, not the flag or the helmet
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
    faces = FaceAligner(size=64).align(rgb)
    assert len(faces) == 1 and 150 < faces[0].box[0] < 320  # and it still aligns


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


# --- transforms ------------------------------------------------------------------

#: Landmark index of each point's mirror image (iBUG 68-point layout).
MIRROR = (list(range(16, -1, -1)) + list(range(26, 16, -1)) + [27, 28, 29, 30] + [35, 34, 33, 32, 31]
          + [45, 44, 43, 42, 47, 46] + [39, 38, 37, 36, 41, 40] + [54, 53, 52, 51, 50, 49, 48]
          + [59, 58, 57, 56, 55] + [64, 63, 62, 61, 60] + [67, 66, 65])


@pytest.mark.parametrize("landmarks,margin", [("innerEyesAndBottomLip", 0.0), ("outerEyesAndNose", 0.0),
                                              ("outerEyesAndNose", 0.1)])
def test_openface_mode_matches_direct_formula_for_every_landmark_set(astronaut, landmarks, margin):
    aligner = FaceAligner(size=96, landmarks=landmarks, margin=margin)
    face = aligner.align(astronaut)[0]
    idx = list(LANDMARK_SETS[landmarks])
    # OpenFace: H = getAffineTransform(landmarks[idx], imgDim * MINMAX_TEMPLATE[idx]); here
    # with the margin folded into the template: margin + (1 - 2 margin) * template
    dst = 96 * (margin + (1 - 2 * margin) * MINMAX_TEMPLATE[idx])
    direct = np.linalg.solve(np.c_[face.landmarks[idx], np.ones(3)], dst).T
    assert np.allclose(face.transform, direct, atol=1e-4)
    expected = cv2.warpAffine(astronaut, direct, (96, 96))
    assert np.abs(face.image.astype(int) - expected.astype(int)).max() <= 1


def test_similarity_transform_recovers_a_known_similarity_and_beats_three_points():
    target = np.float64(template_points(64))
    angle, scale, shift = np.deg2rad(17), 3.7, np.array([120.0, -40.0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    source = (target - shift) @ np.linalg.inv(rot).T  # so that rot @ source + shift = target
    matrix = similarity_transform(source, 64)
    assert np.allclose(matrix[:, :2], rot, atol=1e-9) and np.allclose(matrix[:, 2], shift, atol=1e-7)
    # on noisy landmarks the least-squares fit leaves less residual over all 68 than the 3-point affine
    noisy = source + np.random.default_rng(0).normal(0, 2.0, source.shape)
    residual = {name: np.linalg.norm(apply_transform(m, noisy) - target, axis=1).mean()
                for name, m in (("similarity", similarity_transform(noisy, 64)),
                                ("openface", openface_transform(noisy, 64)))}
    assert residual["similarity"] < residual["openface"]
    with pytest.raises(ValueError, match="degenerate"):
        similarity_transform(np.zeros((68, 2)), 64)


def _rotated(img, degrees):
    """``img`` turned by ``degrees`` on a canvas that holds all of it, and the 2x3 point map."""
    h, w = img.shape[:2]
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    cos, sin = abs(matrix[0, 0]), abs(matrix[0, 1])
    nw, nh = int(h * sin + w * cos), int(h * cos + w * sin)
    matrix[:, 2] += (nw / 2 - w / 2, nh / 2 - h / 2)
    return cv2.warpAffine(img, matrix, (nw, nh), borderMode=cv2.BORDER_REPLICATE), matrix


def _blurred_diff(a, b):
    # Mean absolute difference of lightly blurred crops: a sub-pixel shift of fine
    # texture is not a different alignment.
    blur = lambda x: cv2.GaussianBlur(np.ascontiguousarray(x), (0, 0), 1.5).astype(int)  # noqa: E731
    return np.abs(blur(a) - blur(b)).mean()


@pytest.mark.parametrize("name", ["astronaut", "grace_hopper"])
@pytest.mark.parametrize("change", ["rotate+20", "rotate-20", "half", "flip"])
@pytest.mark.parametrize("mode", ["openface", "similarity"])
def test_rotated_scaled_or_flipped_portrait_gives_the_same_aligned_face(name, change, mode):
    img = np.asarray(portrait(name))
    h, w = img.shape[:2]
    aligner = FaceAligner(size=64, mode=mode)
    original = aligner.align(img)[0]
    iod = np.linalg.norm(original.landmarks[36] - original.landmarks[45])
    if change == "flip":
        face = aligner.align(np.ascontiguousarray(img[:, ::-1]))[0]
        back = face.landmarks.copy()
        back[:, 0] = w - 1 - back[:, 0]
        landmark_error = np.linalg.norm(back[MIRROR] - original.landmarks, axis=1).mean() / iod
        image = face.image[:, ::-1]
    else:
        if change == "half":
            changed = cv2.resize(img, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
            matrix = np.float64([[0.5, 0, -0.25], [0, 0.5, -0.25]])
        else:
            changed, matrix = _rotated(img, float(change[len("rotate"):]))
        face = aligner.align(changed)[0]
        scale = np.sqrt(abs(np.linalg.det(matrix[:, :2])))
        expected = apply_transform(matrix, original.landmarks)
        landmark_error = np.linalg.norm(face.landmarks - expected, axis=1).mean() / (iod * scale)
        image = face.image
    assert landmark_error < 0.06, f"landmarks moved {landmark_error:.3f} inter-ocular distances"
    assert _blurred_diff(image, original.image) < 15
    # the threshold means something: another person's aligned face is much further away
    other = aligner.align(np.asarray(portrait("grace_hopper" if name == "astronaut" else "astronaut")))[0]
    assert _blurred_diff(other.image, original.image) > 30


def test_exif_rotation_tag_gives_an_upright_face(astronaut):
    upright = np.ascontiguousarray(astronaut[:, 40:460])  # not square, so a missed turn shows
    stored = np.ascontiguousarray(np.rot90(upright))      # the camera stored it turned 90 degrees left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    data = _jpeg(stored, exif=exif.tobytes())
    rgb = decode_rgb(data)
    assert rgb.shape == upright.shape
    aligner = FaceAligner(size=64)
    face, reference = aligner.align(rgb)[0], aligner.align(decode_rgb(_jpeg(upright)))[0]
    assert np.abs(np.float64(face.box) - reference.box).max() <= 4
    assert _blurred_diff(face.image, reference.image) < 5
    # and reduced (draft) decodes are upright too
    photo = Photo(data)
    assert (photo.width, photo.height) == (upright.shape[1], upright.shape[0])
    rgb2, factor = photo.rgb(2)
    assert factor == 2 and rgb2.shape[:2] == (upright.shape[0] // 2, upright.shape[1] // 2)
    assert FaceAligner(size=64).align_photo(photo)[0].box == pytest.approx(reference.box, abs=6)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_photo_turns_every_exif_orientation_as_pillow_does(astronaut, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = _jpeg(np.ascontiguousarray(astronaut[:, 40:460]), exif=exif.tobytes())
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    for factor in (1, 2):
        rgb, got = Photo(data).rgb(factor)
        assert got == factor
        reference = expected if factor == 1 else np.asarray(
            ImageOps.exif_transpose(_draft(data, factor)).convert("RGB"))
        assert rgb.shape == reference.shape and np.abs(rgb.astype(int) - reference).max() <= 1


def _draft(data: bytes, factor: int) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.draft("RGB", (img.width // factor, img.height // factor))
    return img


# --- detection ---------------------------------------------------------------------

def test_detection_scale_policy():
    # small photos are searched as finely as OpenFace (2 ** upsample) ...
    assert detection_scale(178, 218, upsample=1, detect_side=640) == 2.0
    # ... large ones on a copy of detect_side * 2 ** upsample
    assert detection_scale(2000, 1000, upsample=1, detect_side=640) == pytest.approx(0.64)
    assert detection_scale(2000, 1000, upsample=0, detect_side=640) == pytest.approx(0.32)
    assert detection_scale(2000, 1000, upsample=1, detect_side=0) == 2.0
    # min_face wins: faces of min_face px just fill the 80 px detector window
    assert detection_scale(2000, 1000, upsample=1, detect_side=640, min_face=200) == pytest.approx(0.4)
    assert detection_scale(200, 100, upsample=1, min_face=20) == 2.0  # never finer than 2 ** upsample
    # coarse to fine for the largest face: octaves that can still find a face of 3/4 the shorter side
    assert FaceAligner().passes(178, 218) == [1.0, 2.0]
    assert FaceAligner().passes(2000, 1000) == pytest.approx([0.16, 0.32, 0.64])
    assert FaceAligner(all_faces=True).passes(2000, 1000) == pytest.approx([0.64])
    big = FaceAligner()
    assert big.decode_factor(1920, 1080) == 1        # needs every pixel for 30 px faces
    assert big.decode_factor(6000, 4000) == 2        # smallest face searched is 375 px
    assert FaceAligner(min_face=800).decode_factor(6000, 4000) == 4


def test_dedupe_keeps_the_best_of_overlapping_boxes():
    boxes = [((0, 0, 100, 100), 0.2), ((5, 5, 105, 105), 1.5), ((300, 0, 380, 80), 0.1)]
    assert dedupe_boxes(boxes) == [((5, 5, 105, 105), 1.5), ((300, 0, 380, 80), 0.1)]


@pytest.fixture(scope="module")
def two_people():
    """Grace Hopper (bigger face) and the astronaut side by side."""
    a = cv2.resize(np.asarray(portrait("astronaut")), (384, 384), interpolation=cv2.INTER_AREA)
    g = np.asarray(portrait("grace_hopper"))
    canvas = np.full((600, 512 + 384, 3), 90, np.uint8)
    canvas[:, :512] = g
    canvas[100:484, 512:] = a
    return canvas


def openface_reference(rgb: np.ndarray) -> tuple[tuple[int, int, int, int], np.ndarray]:
    """OpenFace's own largest box and landmarks (openface/align_dlib.py): dlib's
    HOG detector on the full RGB image with one upsample, the largest box by
    area, the 68-point predictor."""
    import dlib
    predictor = FaceAligner()._dlib()[1]
    bb = max(dlib.get_frontal_face_detector()(rgb, 1), key=lambda r: r.width() * r.height())
    return (bb.left(), bb.top(), bb.right(), bb.bottom()), np.float32(
        [(p.x, p.y) for p in predictor(rgb, bb).parts()])


def test_largest_face_by_coarse_pass_is_the_largest_of_all_faces(two_people):
    everyone = FaceAligner(all_faces=True).align(two_people)
    assert len(everyone) == 2 and everyone[0].box[0] < 512 <= everyone[1].box[0]
    largest = FaceAligner().align(two_people)
    box, _ = openface_reference(two_people)
    assert len(largest) == 1
    assert np.abs(np.float64(largest[0].box) - everyone[0].box).max() < 40
    assert np.abs(np.float64(largest[0].box) - box).max() < 40


def test_fast_path_finds_openfaces_face_at_the_same_place(astronaut):
    for img in (astronaut, cv2.resize(astronaut, (1400, 1400))):
        for fast in (FaceAligner().align(img)[0], FaceAligner().align_photo(Photo(_jpeg(img)))[0]):
            _, landmarks = openface_reference(img)
            iod = np.linalg.norm(landmarks[36] - landmarks[45])
            assert np.linalg.norm(fast.landmarks - landmarks, axis=1).mean() / iod < 0.05


def test_draft_decoding_keeps_landmarks(astronaut):
    big = cv2.resize(astronaut, (2560, 2560), interpolation=cv2.INTER_CUBIC)  # face ~480 px
    data = _jpeg(big)
    aligner = FaceAligner(min_face=400)  # faces >= 400 px keep >= 200 px at half size
    assert aligner.decode_factor(2560, 2560) == 2
    face = aligner.align_photo(Photo(data))[0]        # decoded at half size
    full = aligner.align(decode_rgb(data))[0]          # every step at full resolution
    iod = np.linalg.norm(full.landmarks[36] - full.landmarks[45])
    assert np.linalg.norm(face.landmarks - full.landmarks, axis=1).mean() / iod < 0.03
    assert np.abs(np.float64(face.box) - full.box).max() < 0.1 * (full.box[2] - full.box[0])
    assert _blurred_diff(face.image, full.image) < 6
    # everything is reported in source pixels: the transform maps source landmarks to the template
    mapped = apply_transform(face.transform, face.landmarks)[[39, 42, 57]]
    assert np.allclose(mapped, template_points(64)[[39, 42, 57]], atol=1e-3)


def test_rejection_reasons_are_distinct(astronaut):
    with pytest.raises(NoFace) as exc:
        FaceAligner().align(np.full((300, 300, 3), 128, np.uint8), strict=True)
    assert exc.value.reason == "no_face"
    width = FaceAligner().align(astronaut)[0].box
    width = width[2] - width[0]
    with pytest.raises(NoFace) as exc:  # found, but narrower than asked
        FaceAligner(min_face=width + 10).align(astronaut, strict=True)
    assert exc.value.reason == "too_small" and f"{width + 10}" in exc.value.detail
    assert FaceAligner().align(np.full((300, 300, 3), 128, np.uint8)) == []  # not strict: no face, no error


def test_shard_with_worker_processes_matches_one_process(tmp_path, astronaut, two_people):
    root = tmp_path / "src"
    root.mkdir()
    (root / "a.jpg").write_bytes(_jpeg(astronaut))
    (root / "b.jpg").write_bytes(_jpeg(two_people))
    (root / "c.jpg").write_bytes(_jpeg(astronaut)[:2000])
    (root / "d.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (root / "e.jpg").write_bytes(_jpeg(np.full((100, 100, 3), 20, np.uint8)))
    source = DirectorySource(root, name="t")
    keys = source.keys()
    aligner = FaceAligner(all_faces=True)
    one = align_keys(source, keys, aligner, jobs=1)
    two = align_keys(source, keys, aligner, jobs=2)
    assert np.array_equal(one[0], two[0]) and one[1] == two[1] and one[2] == two[2]
    images, faces, rejected = two
    found = [f["key"] for f in faces]
    assert found == sorted(found) and set(found) == {"a.jpg", "b.jpg"} and found.count("b.jpg") >= 2
    assert {r["key"]: r["reason"] for r in rejected} == {
        "c.jpg": "truncated", "d.png": "undecodable", "e.jpg": "no_face"}
    assert len(keys) == len({f["key"] for f in faces}) + len(rejected)  # counts in = out + rejected


def test_worker_processes_after_tensorflow_is_loaded(zygote, tmp_path, astronaut):
    """Forking a process with TensorFlow's thread pools can deadlock; the pool must not. (A
    child of the worker's zygote: TensorFlow imported there, its thread pools started here.)"""
    import textwrap

    (tmp_path / "a.jpg").write_bytes(_jpeg(astronaut))
    (tmp_path / "b.jpg").write_bytes(_jpeg(astronaut[:, ::-1].copy()))
    code = textwrap.dedent(f"""
        if __name__ == "__main__":
            import tensorflow as tf
            tf.constant(1.0) + 1  # start TensorFlow's thread pools
            from pipeline.align.engine import align_keys
            from pipeline.align.aligner import FaceAligner
            from pipeline.sources.base import DirectorySource
            source = DirectorySource({str(tmp_path)!r}, name="t")
            images, faces, rejected = align_keys(source, source.keys(), FaceAligner(), jobs=2)
            print("FACES", len(faces), len(rejected))
    """)
    proc = zygote.run(["-c", code], ROOT, {"TF_CPP_MIN_LOG_LEVEL": "2", "PATH": "/usr/bin:/bin",
                                           "PYTHONPATH": str(ROOT)}, timeout=240)
    assert proc.returncode == 0 and "FACES 2 0" in proc.stdout, proc.stderr[-2000:]


FORK_AFTER_USE = """
import io, sys
import cv2
from PIL import Image
from skimage import data
from pipeline.align.engine import align_stream
from pipeline.align.aligner import FaceAligner
buf = io.BytesIO()
Image.fromarray(cv2.resize(data.astronaut(), (2000, 2000))).save(buf, "PNG")
aligner = FaceAligner()
list(align_stream([("a", buf.getvalue())], aligner, 1))   # OpenCV's thread pool starts here
for _ in range(3):                                         # then worker processes are forked
    results = list(align_stream([(str(i), buf.getvalue()) for i in range(4)], aligner, 2))
    assert all("faces" in r for _, r in results)
print("done")
"""


@pytest.mark.slow
def test_worker_processes_start_after_this_process_aligned_in_place():
    """Forked after OpenCV's thread pool ran here, workers hung (3 of 5 runs)."""
    proc = subprocess.Popen([sys.executable, "-c", FORK_AFTER_USE], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the hung workers too
        proc.communicate()
        pytest.fail("worker processes hung")
    assert proc.returncode == 0 and out.strip() == "done", err[-2000:]
