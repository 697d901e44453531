"""Benchmark: the project's face alignment against OpenFace's own code path.

    python bench/align.py --data DIR [--limit N] [--manifest CSV] [--expect N]
                          [--all-faces] [--jobs N] [--mode openface]

On the same photos (read into memory first), in one process, it times, from
the encoded bytes to the aligned face,

(a) the project's default path: ``FaceAligner()`` defaults (JPEGs decoded at
    reduced scale, grayscale detection at :func:`pipeline.align.aligner.detection_scale`,
    coarse to fine for the largest face, landmarks on a decode that keeps the
    face at least :data:`pipeline.align.aligner.LANDMARK_FACE` px) in ``--jobs``
    worker processes (default: every usable core), as the CLI runs;
(b) the same path in one process (to separate the algorithm from the cores),
    photo by photo in turn with (c), so load from other jobs on the machine
    hits both alike; wall and CPU seconds are reported for both;
(c) the peer, :class:`OpenFace`: OpenFace's ``util/align-dlib.py`` and
    ``openface/align_dlib.py`` step for step (OpenCV decodes to BGR, converts
    to RGB; dlib's HOG detector on the full RGB image with one upsample; the
    largest box; the 68-point predictor; ``cv2.getAffineTransform`` of the
    three landmarks onto ``size * MINMAX_TEMPLATE``; ``cv2.warpAffine``), one
    process, as OpenFace runs. With ``--all-faces`` the peer aligns every box
    its detector reports (OpenFace's ``getAllFaceBoundingBoxes``).

Counting faces: with ``--manifest`` (a CSV with ``file`` relative to the CSV's
folder and ``expected_faces``; "~24" reads as 24, anything else non-numeric as
unknown) or ``--expect N`` (every photo has N faces), an image counts
``min(found, expected)`` correct faces, so false positives never help;
without ``--all-faces`` each image can give at most one (the largest) face,
and ``expected`` is capped at 1 too. ``extra_faces`` sums ``found - expected``
where positive, ``no_face_false_faces`` the faces found on expected-0 photos.

Alignment error: the 68 landmarks are re-detected on each aligned output
(upscaled 4x with a replicated border so dlib's detector has context; the
whole crop serves as the box if it still finds none), mapped back to output
pixels and compared with ``template_points(size, margin)``; the mean distance
over the 68 points is divided by the template's inter-ocular distance (outer
eye corners, points 36 and 45, as in 300-W). ``align_error_openface`` and
``align_error_similarity`` are measured on the same faces of the fast path
(same detections and landmarks, the two transforms), ``openface_align_error``
on the peer's faces; ``landmark_shift_vs_openface`` is the mean distance,
in inter-ocular units, between our and the peer's source landmarks of the same face.

OpenCV runs single-threaded in every path (``cv2.setNumThreads(1)``), so a
process is one core: the single-process figures compare one core with one core.
Prints progress to stderr and a final JSON line to stdout.
"""
from __future__ import annotations

import argparse
import csv
import json
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from model.cpu import cpu_model  # noqa: E402
from pipeline.align.aligner import LANDMARK_SETS, MINMAX_TEMPLATE, FaceAligner, model_path, template_points  # noqa: E402
from pipeline.align.engine import align_bytes, align_stream, usable_cores  # noqa: E402
from pipeline.imaging import DecodeError, Photo  # noqa: E402
from pipeline.sources.base import list_images  # noqa: E402

UPSCALE = 4  # aligned crops are re-measured at 4x (64 -> 256 px)


class OpenFace:
    """OpenFace's alignment, as ``util/align-dlib.py align`` runs it (the peer).

    ``align(data)`` returns what :func:`pipeline.align.engine.align_bytes` returns:
    ``{"faces": [(image, meta)], ...}`` or ``{"reason": ...}``.
    """

    def __init__(self, size: int = 64, landmarks: str = "innerEyesAndBottomLip", all_faces: bool = False):
        import dlib
        self.size, self.indices, self.all_faces = size, np.array(LANDMARK_SETS[landmarks]), all_faces
        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(model_path("shape_predictor_68_face_landmarks.dat"))

    def align(self, data: bytes) -> dict:
        import cv2
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)  # cv2.imread
        if bgr is None:
            return {"reason": "undecodable", "detail": "OpenCV could not decode it"}
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        boxes = list(self.detector(rgb, 1))                                   # getAllFaceBoundingBoxes
        if not boxes:
            return {"reason": "no_face", "detail": ""}
        if not self.all_faces:
            boxes = [max(boxes, key=lambda rect: rect.width() * rect.height())]  # getLargestFaceBoundingBox
        faces = []
        for bb in boxes:
            landmarks = np.float32([(p.x, p.y) for p in self.predictor(rgb, bb).parts()])  # findLandmarks
            H = cv2.getAffineTransform(landmarks[self.indices], self.size * MINMAX_TEMPLATE[self.indices])
            thumbnail = cv2.warpAffine(rgb, H, (self.size, self.size))
            faces.append((thumbnail, {"box": [bb.left(), bb.top(), bb.right(), bb.bottom()],
                                      "landmarks": landmarks.tolist()}))
        return {"faces": faces, "width": rgb.shape[1], "height": rgb.shape[0]}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def read_manifest(path: Path, data: Path) -> dict[str, int | None]:
    """``{key relative to data: expected faces or None}`` from a manifest CSV."""
    base = path.resolve().parent
    expected = {}
    with open(path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            raw = (row.get("expected_faces") or "").strip().lstrip("~")
            full = (base / row["file"]).resolve()
            try:
                key = full.relative_to(data.resolve()).as_posix()
            except ValueError:
                continue
            expected[key] = int(raw) if raw.isdigit() else None
    return expected


def redetect_landmarks(image: np.ndarray, aligner: FaceAligner) -> np.ndarray:
    """The 68 landmarks found on an aligned ``(S, S, 3)`` crop, in its pixels."""
    import cv2
    import dlib
    detector, predictor = aligner._dlib()
    size = image.shape[0]
    big = cv2.resize(image, (size * UPSCALE, size * UPSCALE), interpolation=cv2.INTER_CUBIC)
    pad = size * UPSCALE // 4
    big = cv2.copyMakeBorder(big, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    rects = detector(big, 0)
    if len(rects):
        rect = max(rects, key=lambda r: r.area())
    else:
        rect = dlib.rectangle(pad, pad, pad + size * UPSCALE - 1, pad + size * UPSCALE - 1)
    shape = predictor(big, rect)
    points = np.float64([(p.x, p.y) for p in shape.parts()]) - pad
    return (points + 0.5) / UPSCALE - 0.5


def align_error(image: np.ndarray, aligner: FaceAligner) -> float:
    """Mean landmark-to-template distance of an aligned crop, in inter-ocular units."""
    target = template_points(aligner.size, aligner.margin).astype(np.float64)
    points = redetect_landmarks(image, aligner)
    iod = np.linalg.norm(target[36] - target[45])
    return float(np.linalg.norm(points - target, axis=1).mean() / iod)


def _iou(a, b) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def timed(items, aligner, jobs):
    start = time.perf_counter()
    results = dict(align_stream(items, aligner, jobs))
    return results, time.perf_counter() - start


def timed_in_turn(items, runs: dict) -> tuple[dict, dict, dict]:
    """Each photo through every one-process ``runs`` entry in turn (so a load
    spike on the shared machine hits them alike): results, wall and CPU seconds."""
    results = {name: {} for name in runs}
    wall, cpu = dict.fromkeys(runs, 0.0), dict.fromkeys(runs, 0.0)
    for key, data in items:
        for name, run in runs.items():
            w, c = time.perf_counter(), time.process_time()
            results[name][key] = run(data)
            wall[name] += time.perf_counter() - w
            cpu[name] += time.process_time() - c
    return results, wall, cpu


def count_faces(results, expected, all_faces):
    """(correct faces, total found, extra faces, faces on expected-0 photos)."""
    correct = total = extra = false_on_empty = 0
    for key, res in results.items():
        found = len(res.get("faces", ()))
        total += found
        exp = expected.get(key)
        if exp is None:
            if not expected:
                correct += found
            continue
        exp = exp if all_faces else min(exp, 1)
        correct += min(found, exp)
        extra += max(0, found - exp)
        if exp == 0:
            false_on_empty += found
    return correct, total, extra, false_on_empty


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, type=Path, help="folder of photos (recursive)")
    parser.add_argument("--limit", type=int, default=0, help="use the first N photos (sorted keys)")
    parser.add_argument("--manifest", type=Path, help="CSV with file and expected_faces columns")
    parser.add_argument("--expect", type=int, help="every photo has this many faces (e.g. 1 for CelebA)")
    parser.add_argument("--all-faces", action="store_true", help="align every face (default: the largest)")
    parser.add_argument("--jobs", type=int, default=0, help="processes of the fast path (0 = usable cores)")
    parser.add_argument("--mode", default="openface", help="mode timed (both are measured for errors)")
    parser.add_argument("--detector", default="hog", choices=("hog", "cnn"))
    parser.add_argument("--no-single", action="store_true", help="skip the one-process fast run")
    args = parser.parse_args(argv)

    keys = list_images(args.data)
    if args.limit:
        keys = keys[: args.limit]
    if not keys:
        parser.exit(2, f"no images under {args.data}\n")
    items = [(k, (args.data / k).read_bytes()) for k in keys]
    expected: dict[str, int | None] = {}
    if args.manifest:
        manifest = read_manifest(args.manifest, args.data)
        expected = {k: manifest.get(k) for k in keys}
    elif args.expect is not None:
        expected = {k: args.expect for k in keys}
    jobs = args.jobs or usable_cores()
    import cv2
    # One thread per process, ours and the peer's: "one process" is one core,
    # and worker processes are one per core.
    cv2.setNumThreads(1)

    fast = FaceAligner(mode=args.mode, detector=args.detector, all_faces=args.all_faces)
    peer = OpenFace(fast.size, fast.landmarks, args.all_faces)
    fast._dlib()  # models loaded before any clock starts
    log(f"{len(items)} photos from {args.data}; fast path with {jobs} processes ...")
    fast_res, t_fast = timed(items, fast, jobs)
    log(f"  fast: {t_fast:.2f} s")
    runs = {"openface": peer.align}
    if not args.no_single:
        runs["single"] = lambda data: align_bytes(fast, data)
    log("one process, photo by photo: ours and OpenFace's in turn ...")
    results, wall, cpu_s = timed_in_turn(items, runs)
    peer_res, t_peer, t_single = results["openface"], wall["openface"], wall.get("single")
    log(f"  fast, one process: {t_single or 0:.2f} s, OpenFace: {t_peer:.2f} s")

    correct, total, extra, empty_false = count_faces(fast_res, expected, args.all_faces)
    p_correct, p_total, p_extra, p_empty_false = count_faces(peer_res, expected, args.all_faces)
    fewer = []
    for key in keys:
        a, b = (len(r[key].get("faces", ())) for r in (fast_res, peer_res))
        exp = expected.get(key)
        if exp is not None:
            cap = exp if args.all_faces else min(exp, 1)
            a, b = min(a, cap), min(b, cap)
        if a < b:
            fewer.append({"key": key, "ours": a, "openface": b})

    log("measuring alignment errors (untimed) ...")
    of_err, sim_err, peer_err, shifts = [], [], [], []
    of_aligner = replace(fast, mode="openface")
    sim_aligner = replace(fast, mode="similarity")
    for key, data in items:
        try:
            of_faces = of_aligner.align_photo(Photo(data))
            sim_faces = sim_aligner.align_photo(Photo(data))
        except DecodeError:
            continue
        for a, b in zip(of_faces, sim_faces):
            assert a.box == b.box  # same detection, same landmarks, two transforms
            of_err.append(align_error(a.image, of_aligner))
            sim_err.append(align_error(b.image, sim_aligner))
        for image, meta in peer_res[key].get("faces", ()):
            peer_err.append(align_error(image, of_aligner))
            ref = np.float64(meta["landmarks"])
            for face in of_faces:
                if _iou(face.box, meta["box"]) > 0.5:
                    iod = np.linalg.norm(ref[36] - ref[45])
                    shifts.append(float(np.linalg.norm(face.landmarks - ref, axis=1).mean() / iod))
                    break

    def mean(xs):
        return round(float(np.mean(xs)), 4) if xs else None

    cpu = cpu_model()
    result = {
        "data": str(args.data), "images": len(items), "jobs": jobs, "all_faces": args.all_faces,
        "mode": args.mode, "detector": args.detector,
        "images_per_s": round(len(items) / t_fast, 2),
        "openface_images_per_s": round(len(items) / t_peer, 2),
        "speedup": round(t_peer / t_fast, 2),
        "single_process_images_per_s": round(len(items) / t_single, 2) if t_single else None,
        "speedup_single_process": round(t_peer / t_single, 2) if t_single else None,
        "speedup_single_process_cpu": round(cpu_s["openface"] / cpu_s["single"], 2) if t_single else None,
        "faces_found": correct, "openface_faces_found": p_correct,
        "faces_expected": (sum((e if args.all_faces else min(e, 1)) for e in expected.values()
                               if e is not None) if expected else None),
        "faces_total": total, "openface_faces_total": p_total,
        "extra_faces": extra, "openface_extra_faces": p_extra,
        "no_face_false_faces": empty_false, "openface_no_face_false_faces": p_empty_false,
        "images_fewer_faces_than_openface": fewer,
        "rejected": sum("reason" in r for r in fast_res.values()),
        "openface_rejected": sum("reason" in r for r in peer_res.values()),
        "align_error_openface": mean(of_err), "align_error_similarity": mean(sim_err),
        "openface_align_error": mean(peer_err),
        "landmark_shift_vs_openface": mean(shifts),
        "seconds": {"fast": round(t_fast, 2), "single": round(t_single, 2) if t_single else None,
                    "openface": round(t_peer, 2)},
        "cpu_seconds": {name: round(value, 2) for name, value in cpu_s.items()},
        "machine": {"cpu": cpu, "usable_cores": usable_cores(), "python": platform.python_version()},
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
