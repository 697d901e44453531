"""``facegan-align align INPUT_DIR OUTPUT_DIR``: align a folder of photos.

Works like OpenFace's ``util/align-dlib.py align``, faster: the output tree
mirrors the input tree (``OUTPUT_DIR/<sub>/<stem>.png``; with ``--all-faces``
further faces are ``<stem>_1.png``, ``<stem>_2.png`` ... by decreasing size),
inputs whose output exists are skipped, and nothing is lost silently:

* ``OUTPUT_DIR/rejected.jsonl``: one line per input that gave no face
  (``key``, ``reason``, ``detail``); inputs listed there are skipped next time,
  except name clashes, which are counted as rejected on every run (and
  logged once), so every run's counts add up to all inputs;
* ``OUTPUT_DIR/faces.jsonl``: one line per face written (``key``, ``output``,
  box, score, the 68 landmarks and the transform in source pixels, mode). It is
  written before the PNGs, so an interrupted run can leave a line whose image
  is redone on the next run: the last line for an ``output`` wins.

The primary ``<stem>.png`` of a photo is renamed into place last, so its
existence means every face of that photo is done.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from dataclasses import fields
from pathlib import Path

from pipeline.align.aligner import DETECTORS, LANDMARK_SETS, MODES, FaceAligner
from pipeline.atomic import atomic_file
from pipeline.console import quiet_start
from pipeline.jsonl import JsonlLog, read_jsonl

REJECTED = "rejected.jsonl"
FACES = "faces.jsonl"

USAGE_EXAMPLE = ("facegan-align align raw/photos processed/aligned-photos "
                 "--size 64 --landmarks innerEyesAndBottomLip --mode openface")


#: FaceAligner's defaults: the options take theirs from here.
A = {f.name: f.default for f in fields(FaceAligner) if f.init}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="facegan-align",
        description="Detect faces with dlib and align them OpenFace-style.",
        epilog=f"example: {USAGE_EXAMPLE}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="align")
    p = sub.add_parser("align", help="align every photo under INPUT_DIR into OUTPUT_DIR",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("input_dir", metavar="INPUT_DIR", help="folder of photos (searched recursively)")
    p.add_argument("output_dir", metavar="OUTPUT_DIR", help="where the aligned PNGs and logs go")
    p.add_argument("--size", type=int, default=A["size"], help="side of the aligned square face, in pixels")
    p.add_argument("--landmarks", choices=tuple(LANDMARK_SETS), default=A["landmarks"],
                   help="landmark triple of the openface mode")
    p.add_argument("--mode", choices=MODES, default=A["mode"],
                   help="openface: OpenFace's 3-point affine; similarity: least-squares rotation, "
                        "scale and shift of all 68 landmarks")
    p.add_argument("--margin", type=float, default=A["margin"],
                   help="border around the template as a fraction of the side (0 = OpenFace's crop)")
    p.add_argument("--all-faces", action="store_true",
                   help="align every face, not only the largest")
    p.add_argument("--min-face", type=int, default=A["min_face"],
                   help="ignore faces narrower than this many source pixels; detection then runs at "
                        "the coarsest scale that still finds them (0 = any face the detector finds)")
    p.add_argument("--detector", choices=DETECTORS, default=A["detector"],
                   help="dlib detector: hog (fast) or cnn (MMOD, slower, more poses)")
    p.add_argument("--upsample", type=int, default=A["upsample"],
                   help="finest detection scale is 2**upsample; 1 finds faces down to ~40 px")
    p.add_argument("--detect-side", type=int, default=A["detect_side"],
                   help="with --min-face 0, detect on a copy whose longer side is this times "
                        "2**upsample (never finer than 2**upsample); 0 = full resolution")
    p.add_argument("--jobs", type=int, default=0,
                   help="worker processes (0 = every core this process may use)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--verbose", action="store_true",
                   help="show the libraries' start-up lines too (TensorFlow's, when one is loaded)")
    return parser


def output_names(key: str) -> tuple[str, str]:
    """``(folder, stem)`` of the outputs of input ``key`` ("sub/name.jpg" -> ("sub", "name"))."""
    path = Path(key)
    return path.parent.as_posix(), path.stem


def face_output(key: str, index: int) -> str:
    """Relative path of face ``index`` (0 = largest) of input ``key``."""
    folder, stem = output_names(key)
    name = f"{stem}.png" if index == 0 else f"{stem}_{index}.png"
    return name if folder in ("", ".") else f"{folder}/{name}"


def _write_png(path: Path, image) -> None:
    from pipeline.imaging import encode_png
    with atomic_file(path) as fh:
        fh.write(encode_png(image))


def plan(input_dir: Path, output_dir: Path):
    """Split the photos under ``input_dir`` into ``(todo, skipped, clashes)``.

    ``skipped`` already have an output or a rejection line; ``clashes`` map an
    input to the earlier input whose output name it would overwrite
    ("a.jpg" and "a.png" both make "a.png"): they are rejected on every run,
    so every run accounts for the same inputs.
    """
    from pipeline.sources.base import list_images
    keys = list_images(input_dir)
    rejected = {row["key"] for row in read_jsonl(output_dir / REJECTED)}
    owner: dict[str, str] = {}
    todo, skipped, clashes = [], [], {}
    for key in keys:
        out = face_output(key, 0)
        if out in owner:
            clashes[key] = owner[out]
            continue
        owner[out] = key
        if key in rejected or (output_dir / out).exists():
            skipped.append(key)
        else:
            todo.append(key)
    return todo, skipped, clashes


def align_folder(input_dir, output_dir, aligner: FaceAligner, jobs: int = 0,
                 progress: bool = False) -> dict:
    """Align every photo under ``input_dir`` into ``output_dir``; returns the counts.

    ``inputs == skipped + aligned + rejected`` where ``aligned`` counts photos
    with at least one face written.
    """
    from pipeline.align.engine import align_stream, usable_cores
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    if not input_dir.is_dir():
        raise FileNotFoundError(f"INPUT_DIR {input_dir} is not a folder")
    output_dir.mkdir(parents=True, exist_ok=True)
    todo, skipped, clashes = plan(input_dir, output_dir)
    jobs = jobs or usable_cores()
    jobs = max(1, min(jobs, len(todo)))

    def items():
        for key in todo:
            try:
                yield key, (input_dir / key).read_bytes()
            except OSError as exc:
                yield key, {"reason": "unreadable", "detail": str(exc)}

    counts = Counter()
    reasons = Counter()
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(todo), unit="img", desc="align", disable=not sys.stderr.isatty())
    logged = {row["key"] for row in read_jsonl(output_dir / REJECTED)}
    with JsonlLog(output_dir / REJECTED) as rej, JsonlLog(output_dir / FACES) as meta:
        for key, other in clashes.items():
            if key not in logged:
                rej.append({"key": key, "reason": "name_clash",
                            "detail": f"its output {face_output(key, 0)} is {other}'s"})
            reasons["name_clash"] += 1
        for key, result in align_stream(items(), aligner, jobs):
            if "reason" in result:
                rej.append({"key": key, "reason": result["reason"], "detail": result["detail"]})
                reasons[result["reason"]] += 1
            else:
                faces = result["faces"]
                for i, (_, face_meta) in enumerate(faces):
                    meta.append({"key": key, "output": face_output(key, i), "face": i,
                                 "width": result["width"], "height": result["height"],
                                 "size": aligner.size, "margin": aligner.margin, **face_meta})
                # extra faces first: the primary PNG existing means the photo is done
                for i in list(range(1, len(faces))) + [0]:
                    _write_png(output_dir / face_output(key, i), faces[i][0])
                counts["aligned"] += 1
                counts["faces"] += len(faces)
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    rejected = sum(reasons.values())
    return {"inputs": len(todo) + len(skipped) + len(clashes), "skipped": len(skipped),
            "aligned": counts["aligned"], "faces": counts["faces"], "rejected": rejected,
            "rejected_by_reason": dict(reasons), "jobs": jobs}


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    quiet_start(verbose=args.verbose)
    try:
        aligner = FaceAligner(size=args.size, mode=args.mode, landmarks=args.landmarks,
                              margin=args.margin, detector=args.detector, upsample=args.upsample,
                              detect_side=args.detect_side, min_face=args.min_face,
                              all_faces=args.all_faces)
        if args.jobs < 0:
            raise ValueError(f"--jobs must be >= 0, got {args.jobs}")
        summary = align_folder(args.input_dir, args.output_dir, aligner, args.jobs,
                               progress=not args.quiet)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        parser.exit(2, f"{parser.prog} align: error: {exc}\n")
    print(json.dumps(summary, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
