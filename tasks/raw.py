"""Raw sources: the tasks that put images under raw/, and which data set each one is.

Every raw task's ``source()`` returns a :class:`pipeline.sources.base.Source` over
its output; alignment asks nothing else of it. :data:`RAW_TASKS` is the one
table of data sets (``--dataset NAME``): nothing is added to it elsewhere.
"""
from __future__ import annotations

from typing import Callable

import luigi

from pipeline.sources.base import DirectorySource, Source
from tasks.common import Report, raw_dir
from tasks.crawl import CrawlDays
from tasks.downloads import DownloadCelebA, DownloadLSUN, ImportImageNet
from tasks.errors import Checked, at_least, check
from tasks.labeled import DownloadCIFAR10, DownloadMNIST
from tasks.storage import target


class SampleSource(DirectorySource):
    """The first ``n`` photos of a sample folder (which may hold more)."""

    def __init__(self, root, n: int):
        super().__init__(root, name="sample")
        self.n = n

    def keys(self) -> list[str]:
        from pipeline.sources.sample_photos import sample_key
        return [sample_key(i) for i in range(self.n)]


class Sample(Checked, luigi.Task):
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

    def validate(self):
        at_least(self, "n", 1, "the number of photos to make")
        at_least(self, "seed", 0)

    def folder(self):
        return raw_dir("sample", f"seed{self.seed}")

    def output(self):
        return target(str(self.folder() / f"n{self.n}.json"))

    def run(self):
        from pipeline.atomic import write_json
        from pipeline.sources.sample_photos import write_sample

        report = Report(self, "photos")
        made = write_sample(self.folder(), self.n, self.seed, report)
        report.close()
        write_json(self.output().path, {"name": "sample", "n": self.n, "seed": self.seed, "made": made})

    def source(self) -> Source:
        return SampleSource(self.folder(), self.n)


#: dataset name -> raw task class (instantiated with its config defaults), or a
#: factory returning the task where dataset-level flags pick its parameters
#: (``lsun``: ``--lsun-category``).
RAW_TASKS: dict[str, Callable[[], luigi.Task]] = {
    "sample": Sample,
    "celeba": DownloadCelebA,
    "lsun": DownloadLSUN.for_dataset,
    "imagenet": ImportImageNet,
    "crawl": CrawlDays,
    "mnist": DownloadMNIST,
    "cifar10": DownloadCIFAR10,
}


def check_dataset(task: luigi.Task) -> None:
    """``task.dataset`` must name a data set of :data:`RAW_TASKS`."""
    check(task, "dataset", task.dataset in RAW_TASKS, f"must be one of {', '.join(sorted(RAW_TASKS))}")


def raw_task(dataset: str) -> luigi.Task:
    """The raw task that provides ``dataset``; a clear error for unknown names."""
    try:
        return RAW_TASKS[dataset]()
    except KeyError:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {sorted(RAW_TASKS)}") from None
