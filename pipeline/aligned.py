"""Aligning one shard of a source, and the on-disk format of an aligned shard.

A shard folder holds ``faces.npz`` (``images``: ``(n, S, S, 3) uint8``),
``faces.jsonl`` (one metadata object per face, same order: source key, face
index, box, score, landmarks, transform, plus the source's own metadata such
as attributes and identity), ``rejected.jsonl`` (one line per input that gave
no face, with a reason) and ``summary.json`` (counts). Every input key is in
exactly one of ``faces.jsonl`` (as ``key``) or ``rejected.jsonl``.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Callable

import numpy as np

from pipeline.faces import FaceAligner
from pipeline.imaging import DecodeError, decode_rgb
from pipeline.sources import Source


def align_keys(source: Source, keys: list[str], aligner: FaceAligner,
               progress: Callable[[int, int], None] | None = None):
    """Align the images ``keys`` of ``source``.

    Returns ``(images, faces, rejected)``: an ``(n, S, S, 3) uint8`` array,
    ``n`` metadata dicts, and one ``{"key", "reason", "detail"}`` dict per
    input that produced no face. A bad image never stops the shard.
    """
    images, faces, rejected = [], [], []
    for done, key in enumerate(keys, 1):
        try:
            item = source.read(key)
            rgb = decode_rgb(item.data)
            found = aligner.align(rgb)
            if not found:
                rejected.append({"key": key, "reason": "no_face",
                                 "detail": f"no face of >= {aligner.min_face} px in {rgb.shape[1]}x{rgb.shape[0]}"})
            for i, face in enumerate(found):
                images.append(face.image)
                faces.append({"key": key, "face": i, "source": source.name,
                              "width": int(rgb.shape[1]), "height": int(rgb.shape[0]),
                              **face.meta(), "meta": item.meta})
        except DecodeError as exc:
            rejected.append({"key": key, "reason": exc.reason, "detail": exc.detail})
        except (OSError, KeyError) as exc:
            rejected.append({"key": key, "reason": "unreadable", "detail": str(exc)})
        except ValueError as exc:  # degenerate landmarks
            rejected.append({"key": key, "reason": "alignment_failed", "detail": str(exc)})
        if progress is not None:
            progress(done, len(keys))
    size = aligner.size
    stack = np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8)
    return stack, faces, rejected


def _write_jsonl(path: Path, rows) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, sort_keys=True) + "\n")


def _read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def write_shard(folder, keys: list[str], images: np.ndarray, faces: list[dict],
                rejected: list[dict]) -> dict:
    """Write an aligned shard into ``folder`` (normally an atomic temporary)
    and return its summary. Checks that no input was lost."""
    folder = Path(folder)
    accounted = {f["key"] for f in faces} | {r["key"] for r in rejected}
    missing = set(keys) - accounted
    if missing:
        raise RuntimeError(f"{len(missing)} inputs neither aligned nor rejected, e.g. {sorted(missing)[:3]}")
    np.savez(folder / "faces.npz", images=images)
    _write_jsonl(folder / "faces.jsonl", faces)
    _write_jsonl(folder / "rejected.jsonl", rejected)
    summary = {"inputs": len(keys), "faces": len(faces),
               "images_with_faces": len({f["key"] for f in faces}),
               "rejected": len(rejected),
               "rejected_by_reason": dict(Counter(r["reason"] for r in rejected)),
               "first_key": keys[0] if keys else None, "last_key": keys[-1] if keys else None}
    (folder / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary


def read_shard(folder) -> tuple[np.ndarray, list[dict]]:
    """The ``(images, faces)`` of an aligned shard folder."""
    folder = Path(folder)
    with np.load(folder / "faces.npz") as npz:
        images = npz["images"]
    return images, _read_jsonl(folder / "faces.jsonl")


def read_rejected(folder) -> list[dict]:
    """The rejection lines of an aligned shard folder."""
    return _read_jsonl(Path(folder) / "rejected.jsonl")
