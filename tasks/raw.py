"""Raw sources: tasks that put images under raw/, and the dataset registry.

Every raw task's ``source()`` returns a :class:`pipeline.sources.Source` over
its output; alignment asks nothing else of it.
"""
from __future__ import annotations

import json
from typing import Callable

import luigi

from pipeline.atomic import atomic_file, write_json
from pipeline.sources import DirectorySource, Source
from tasks.common import Progress, raw_dir


class SampleSource(DirectorySource):
    """The first ``n`` photos of a sample folder (which may hold more)."""

    def __init__(self, root, n: int):
        super().__init__(root, name="sample")
        self.n = n

    def keys(self) -> list[str]:
        from pipeline.sample import sample_key
        return [sample_key(i) for i in range(self.n)]


class Sample(luigi.Task):
    """The embedded smoke data set: ``n`` photos made from two public-domain portraits.

    Photos live in ``raw/sample/seed{seed}/`` whatever ``n``: photo ``i``
    depends only on ``(seed, i)``, so growing ``n`` only appends the new
    photos (each written atomically) and their ``index.jsonl`` rows; the
    output is the marker ``n{n}.json``, written last.
    """
    n = luigi.IntParameter(default=512, description="Number of photos to make.")
    seed = luigi.IntParameter(default=0, description="Random seed; photo i depends only on (seed, i).")
    #: Parameters that only say how much of the source to take: growing them
    #: appends keys, so alignment and records reuse what they already made.
    growth_params = ("n",)

    def folder(self):
        return raw_dir("sample", f"seed{self.seed}")

    def output(self):
        return luigi.LocalTarget(str(self.folder() / f"n{self.n}.json"))

    def run(self):
        import fcntl

        from pipeline.sample import index_row, make_photo, sample_key

        folder = self.folder()
        folder.mkdir(parents=True, exist_ok=True)
        index_path = folder / "index.jsonl"
        known = _read_index(index_path)
        todo = [i for i in range(self.n) if sample_key(i) not in known]
        progress = Progress(self, len(todo), "photos", every=16)
        rows = {}
        for done, i in enumerate(todo, 1):
            data, params = make_photo(self.seed, i)
            with atomic_file(folder / sample_key(i)) as fh:
                fh.write(data)
            rows[sample_key(i)] = index_row(self.seed, i, params)
            progress(done)
        with open(folder / ".index.lock", "w") as lock:  # concurrent runs with other n
            fcntl.flock(lock, fcntl.LOCK_EX)
            merged = {**_read_index(index_path), **rows}
            with atomic_file(index_path, "w") as fh:
                for key in sorted(merged):
                    fh.write(json.dumps(merged[key]) + "\n")
        progress.close()
        write_json(self.output().path, {"name": "sample", "n": self.n, "seed": self.seed,
                                        "made": len(todo)})

    def source(self) -> Source:
        return SampleSource(self.folder(), self.n)


def _read_index(path) -> dict[str, dict]:
    """Rows of a sample ``index.jsonl`` by key ({} when there is none yet)."""
    try:
        with open(path, encoding="utf-8") as fh:
            return {row["key"]: row for row in (json.loads(line) for line in fh if line.strip())}
    except FileNotFoundError:
        return {}


#: dataset name -> raw task class (instantiated with its config defaults), or a
#: factory returning the task where dataset-level flags pick its parameters
#: (``lsun``: ``--lsun-category``). tasks/sources.py registers the real sources.
RAW_TASKS: dict[str, Callable[[], luigi.Task]] = {"sample": Sample}


def raw_task(dataset: str) -> luigi.Task:
    """The raw task that provides ``dataset``; a clear error for unknown names."""
    try:
        return RAW_TASKS[dataset]()
    except KeyError:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {sorted(RAW_TASKS)}") from None
