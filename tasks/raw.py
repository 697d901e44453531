"""Raw sources: tasks that put images under raw/, and the dataset registry.

Every raw task's ``source()`` returns a :class:`pipeline.sources.Source` over
its output; alignment asks nothing else of it.
"""
from __future__ import annotations

import json

import luigi

from pipeline.atomic import atomic_dir
from pipeline.sources import DirectorySource, Source
from tasks.common import Progress, raw_dir


class Sample(luigi.Task):
    """The embedded smoke data set: ``n`` photos made from two public-domain portraits."""
    n = luigi.IntParameter(default=512, description="Number of photos to make.")
    seed = luigi.IntParameter(default=0, description="Random seed; photo i depends only on (seed, i).")

    def output(self):
        return luigi.LocalTarget(str(raw_dir("sample", f"n{self.n}-seed{self.seed}")))

    def run(self):
        from pipeline.sample import write_sample
        progress = Progress(self, self.n, "photos", every=16)
        with atomic_dir(self.output().path) as tmp:
            write_sample(tmp, self.n, self.seed, progress)
            (tmp / "source.json").write_text(json.dumps({"name": "sample", "n": self.n, "seed": self.seed}))
        progress.close()

    def source(self) -> Source:
        return DirectorySource(self.output().path, name="sample")


#: dataset name -> raw task class (instantiated with its config defaults).
RAW_TASKS: dict[str, type[luigi.Task]] = {"sample": Sample}


def raw_task(dataset: str) -> luigi.Task:
    """The raw task that provides ``dataset``; a clear error for unknown names."""
    try:
        return RAW_TASKS[dataset]()
    except KeyError:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {sorted(RAW_TASKS)}") from None
