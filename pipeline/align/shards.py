"""The on-disk format of an aligned shard, and the append-only shard plan.

The alignment itself is pipeline/align/engine.py.

A shard folder holds ``faces.npz`` (``images``: ``(n, S, S, 3) uint8``),
``faces.jsonl`` (one metadata object per face, same order: source key, face
index, box, score, landmarks, transform, plus the source's own metadata such
as attributes and identity), ``rejected.jsonl`` (one line per input that gave
no face, with a reason) and ``summary.json`` (counts). Every input key is in
exactly one of ``faces.jsonl`` (as ``key``) or ``rejected.jsonl``.

Shards are planned as an append-only log (:func:`plan_shards`): a shard is
named ``shard-{index:05d}-{digest}`` by its position and the hash of its key
list, and keeps that name and content for good; new keys go to new shards, so
adding raw data never changes (or re-aligns) an existing shard.
"""
from __future__ import annotations

import json
import logging
import math
from collections import Counter
from pathlib import Path

import numpy as np

from pipeline.atomic import atomic_file
from pipeline.jsonl import read_jsonl, write_jsonl
from pipeline.sources.base import shard_keys
from pipeline.versions import digest

log = logging.getLogger(__name__)


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
    write_jsonl(folder / "faces.jsonl", faces)
    write_jsonl(folder / "rejected.jsonl", rejected)
    summary = {"inputs": len(keys), "faces": len(faces),
               "images_with_faces": len({f["key"] for f in faces}),
               "rejected": len(rejected),
               "rejected_by_reason": dict(Counter(r["reason"] for r in rejected)),
               "first_key": keys[0] if keys else None, "last_key": keys[-1] if keys else None,
               # what the records stage needs to choose a split rule without reading faces.jsonl
               "identities": sorted({f["meta"]["identity"] for f in faces
                                     if f.get("meta", {}).get("identity") is not None}),
               "partitions": dict(Counter(f["meta"]["partition"] for f in faces
                                          if f.get("meta", {}).get("partition") is not None))}
    (folder / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary


def read_shard(folder) -> tuple[np.ndarray, list[dict]]:
    """The ``(images, faces)`` of an aligned shard folder."""
    folder = Path(folder)
    with np.load(folder / "faces.npz") as npz:
        images = npz["images"]
    return images, read_jsonl(folder / "faces.jsonl")


# --- shard planning ----------------------------------------------------------

def keys_digest(keys: list[str]) -> str:
    """A 12-hex-digit hash of a key list (order matters): names a key set."""
    return digest("\n".join(keys), 12)


def shard_name(index: int, keys: list[str]) -> str:
    """``shard-{index:05d}-{8 hex digits of the keys' hash}``."""
    return name_of(index, keys_digest(keys)[:8])


def name_of(index: int, digest: str) -> str:
    """The shard name of ``index`` and an 8-hex-digit key-list ``digest``."""
    return f"shard-{index:05d}-{digest}"


def parse_shard_name(name: str) -> tuple[int, str]:
    """``(index, digest)`` of a :func:`shard_name`."""
    _, index, digest = name.split("-")
    return int(index), digest


def plan_shards(keys: list[str], committed: list[tuple[str, list[str]]],
                shard_size: int) -> list[tuple[str, list[str]]]:
    """Extend the ``committed`` shard plan to cover exactly ``keys``.

    ``committed`` is the previous plan as ``(name, keys)`` pairs. Its shards
    whose keys all still exist are kept as they are; the keys no kept shard
    covers (new keys, and those of shards that lost a key) are chunked, in
    key order, into new shards numbered after the last committed one. So a
    re-plan with more keys only adds shards, and planning the same keys
    twice gives the same plan.
    """
    present = set(keys)
    kept = [(name, ks) for name, ks in committed if all(k in present for k in ks)]
    covered = {k for _, ks in kept for k in ks}
    fresh = [k for k in keys if k not in covered]
    start = max((parse_shard_name(name)[0] for name, _ in committed), default=-1) + 1
    return kept + [(shard_name(start + i, chunk), chunk)
                   for i, chunk in enumerate(shard_keys(fresh, shard_size))]


#: Tasks one Luigi scheduler handles well. Past a few thousand it slows: every worker's
#: get_work walks all pending and running tasks (docs/scale.md#how-many-tasks).
TASK_LIMIT = 5000


def check_plan_size(tasks: int, images: int, parameter: str, what: str, per_shard: int = 1,
                    limit: int = TASK_LIMIT) -> str | None:
    """Warn, in one log line, when ``what`` (e.g. ``"DetectAlignFaces --dataset celeba"``) plans
    ``tasks`` Luigi tasks, more than ``limit``. The plan cuts ``images`` into shards by the size
    the command-line option ``parameter`` sets, ``per_shard`` tasks a shard (2 when each aligned
    shard also has a record shard); the line names the smallest shard size that brings the plan
    to at most ``limit`` tasks. Returns the line, or None when the plan is within the limit.
    """
    if tasks <= limit:
        return None
    size = math.ceil(images / max(1, limit // per_shard))
    planned = per_shard * math.ceil(images / size)
    line = (f"{what} plans {tasks:,} tasks for {images:,} images, more than the {limit:,} a Luigi scheduler "
            f"handles well (it slows past that): set {parameter} {size} or more ({planned:,} tasks)")
    log.warning(line)
    return line


def write_keys(path, keys: list[str]) -> None:
    """Write a shard's key list, one key per line, atomically."""
    with atomic_file(path, "w") as fh:
        fh.write("".join(f"{k}\n" for k in keys))


def read_keys(path) -> list[str]:
    """The key list written by :func:`write_keys`."""
    with open(path, encoding="utf-8") as fh:
        return [line.rstrip("\n") for line in fh if line.strip()]


PLAN = "plan.json"


def extend_plan(root, keys: list[str], shard_size: int) -> list[tuple[str, list[str]]]:
    """The plan committed under ``root`` (``plan.json``, ``keys/<name>.txt``) extended to
    ``keys`` (:func:`plan_shards`), as ``(name, keys)`` pairs; writes the key list of every new
    shard. The plan itself is committed by :func:`commit_plan` once its shards are done."""
    root = Path(root)
    committed = []
    if (root / PLAN).exists():
        names = json.loads((root / PLAN).read_text())["shards"]
        committed = [(name, read_keys(root / "keys" / f"{name}.txt")) for name in names]
    plan = plan_shards(keys, committed, shard_size)
    for name, shard in plan:
        if not (root / "keys" / f"{name}.txt").exists():
            write_keys(root / "keys" / f"{name}.txt", shard)
    return plan


def summarize_shards(folders: list, inputs: int, what: str) -> dict:
    """The totals of aligned shards (``summary.json`` of each ``folders`` entry): counts,
    rejections by reason and one entry per shard; checks that every one of ``inputs`` images
    is a face or a rejection (``what`` names the data set in the error)."""
    totals = {"inputs": 0, "faces": 0, "images_with_faces": 0, "rejected": 0}
    by_reason: dict[str, int] = {}
    shards = []
    for folder in map(Path, folders):
        s = json.loads((folder / "summary.json").read_text())
        for k in totals:
            totals[k] += s[k]
        for reason, count in s["rejected_by_reason"].items():
            by_reason[reason] = by_reason.get(reason, 0) + count
        shards.append({"name": folder.name, "folder": str(folder), **s})
    if totals["images_with_faces"] + totals["rejected"] != inputs:
        raise RuntimeError(f"{what}: {inputs} inputs but {totals['images_with_faces']} "
                           f"with faces + {totals['rejected']} rejected")
    return {**totals, "rejected_by_reason": by_reason, "shards": shards}


def commit_plan(root, keys_digest_: str, names: list[str]) -> None:
    """Record the plan whose shards are all aligned (what :func:`extend_plan` reads next)."""
    from pipeline.atomic import write_json
    write_json(Path(root) / PLAN, {"keys_digest": keys_digest_, "shards": list(names)})
