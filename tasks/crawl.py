"""Crawling: :class:`CrawlImages` crawls one day; :class:`CrawlDays` is the ``crawl`` data set.

    luigi --module tasks CrawlImages --date 2026-11-22 --seeds seeds.txt --local-scheduler
    luigi --module tasks RangeDaily --of CrawlImages --start 2026-11-01 --local-scheduler
    luigi --module tasks DetectAlignFaces --dataset crawl --CrawlDays-start 2026-11-01 --local-scheduler

The crawler itself (robots.txt, delays, address guard, caps, resume,
de-duplication) is :mod:`pipeline.crawl.crawler`; docs/crawl.md describes every key.
"""
from __future__ import annotations

import datetime as dt
import time

import luigi

# Luigi's own nightly wrapper. luigi.cfg sets autoload_range = false, so it is
# registered here: `luigi --module tasks RangeDaily --of CrawlImages` works.
from luigi.tools.range import RangeDaily

from pipeline.crawl.crawler import CrawlConfig, check_numbers
from pipeline.net import httpclient
from pipeline.sources.base import DirectorySource, Item, Source
from tasks import common
from tasks.common import raw_dir, values_of, with_settings
from tasks.errors import Checked, ConfigError, settings_of
from tasks.storage import target

__all__ = ["CrawlDays", "CrawlImages", "CrawlSource", "RangeDaily"]


@with_settings((CrawlConfig, ("seeds", "contact_url", "allow_networks")), httpclient.CRAWL, significant=False)
class CrawlImages(Checked, luigi.Task):
    """Crawls from the seed pages into ``raw/crawl/<date>/`` (see docs/crawl.md).

    Only ``date`` is significant: the day's folder is the output whatever the
    settings, so tuning budgets or politeness neither renames the task nor
    changes the version of the data aligned from it. A killed crawl re-run
    resumes from the folder's journal without fetching again what it has; a
    finished day (``summary.json`` present) is complete and never refetched.

    Every crawl setting is a parameter of the same name, with the default and description of
    :class:`pipeline.crawl.crawler.CrawlConfig`'s field, and the HTTP ones of its ``fetch``
    policy (``httpclient.CRAWL``): connect_timeout, read_timeout, deadline, max_hops, retries,
    backoff, max_backoff.
    """
    date = luigi.DateParameter(description="The day this crawl is filed under: raw/crawl/<date>/.")
    seeds = luigi.PathParameter(default="seeds.txt", significant=False,
                                description="Text file of seed page URLs: one per line, '#' comments.")
    contact_url = luigi.Parameter(default="", significant=False,
                                  description="Required: a page saying who runs this crawler and how "
                                              "to reach you; sent in the User-Agent.")

    #: One crawl at a time (Luigi's default for an unconfigured resource is 1):
    #: the per-host delay holds within one crawler only, and each day
    #: de-duplicates against the days crawled before it.
    resources = {"crawler": 1}

    @property
    def priority(self) -> int:
        """Older days first (Luigi would start the newest of a RangeDaily
        first), so each day de-duplicates against all the days before it."""
        return dt.date.max.toordinal() - self.date.toordinal()

    def validate(self):
        with settings_of(self):
            self.fetch_policy()
            check_numbers(values_of(self, CrawlConfig))

    def fetch_policy(self) -> httpclient.Policy:
        return httpclient.Policy(**values_of(self, httpclient.Policy))

    def folder(self):
        return raw_dir("crawl", self.date.isoformat())

    def output(self):
        return target(str(self.folder() / "summary.json"))

    def complete(self):
        if self.output().exists():
            return True
        self.crawl_config()  # contact_url and the seeds file: fail while scheduling
        return False

    def crawl_config(self):
        """The :class:`pipeline.crawl.crawler.CrawlConfig` of these parameters; a one-line
        :class:`ConfigError` naming the ``[CrawlImages]`` key when one is unusable."""
        from pipeline.crawl.crawler import read_seeds
        if not self.contact_url.strip():
            raise ConfigError("[CrawlImages] contact_url is empty: set it in luigi.cfg (or pass "
                              "--CrawlImages-contact-url) to a page saying who runs this crawler "
                              "and how to reach you")
        try:
            return CrawlConfig(seeds=read_seeds(self.seeds), contact_url=self.contact_url,
                               fetch=self.fetch_policy(), allow_networks=common.ALLOW_NETWORKS,
                               **values_of(self, CrawlConfig, skip=("seeds", "contact_url")))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"[CrawlImages] {exc}") from None

    def run(self):
        from pipeline.crawl.crawler import crawl
        config = self.crawl_config()
        summary = crawl(config, self.folder(), progress=self._reporter())
        self.set_status_message(f"{summary['pages_fetched']} pages, {summary['images_kept']} images "
                                f"kept, {summary['rejected_total']} URLs rejected")

    def _reporter(self):
        """Status for the scheduler UI, at most once a second (the crawl calls it per URL)."""
        last = [-1.0]

        def report(stats: dict) -> None:
            now = time.monotonic()
            if now - last[0] >= 1.0:
                last[0] = now
                self.set_progress_percentage(round(100 * min(stats["pages_fetched"] / self.max_pages, 1), 1))
                self.set_status_message(f"{stats['pages_fetched']}/{self.max_pages} pages, "
                                        f"{stats['images_kept']} images kept, "
                                        f"{stats['frontier']} URLs queued")
        return report

    def source(self) -> Source:
        return DirectorySource(self.folder(), name="crawl")

    @classmethod
    def bulk_complete(cls, parameter_tuples):
        """The days already crawled, one stat each. RangeDaily asks this; its
        fallback (globbing output paths) does not work on local folders."""
        return [day for day in parameter_tuples if cls(date=day).output().exists()]


class CrawlDays(Checked, luigi.WrapperTask):
    """The ``crawl`` data set: the days ``start`` up to ``stop`` of
    :class:`CrawlImages` (crawling missing ones) as one source.

    ``DetectAlignFaces --dataset crawl`` reads it. Keys are
    ``<date>/<key in that day>`` (``2026-11-22/ab/abcd....jpg``): they sort by
    day, so a new day appends keys and leaves the earlier shards' keys alone.
    """
    #: A later ``stop`` only appends days: the aligned folder is kept (see tasks.faces).
    growth_params = ("stop",)
    start = luigi.DateParameter(default=None, description="First day, inclusive (required), e.g. 2026-11-01.")
    stop = luigi.DateParameter(default=None, description="The day after the last (exclusive); default: "
                                                         "through today (UTC), like RangeDaily.")

    def validate(self):
        if self.start is None:
            raise ConfigError("[CrawlDays] start is not set: give the first crawled day of the "
                              "crawl data set, e.g. --CrawlDays-start 2026-11-01 or "
                              "'start = 2026-11-01' under [CrawlDays] in luigi.cfg")
        self.days()

    def days(self) -> list[dt.date]:
        """The days covered, oldest first; "today" is fixed when first asked."""
        if getattr(self, "_days", None) is None:
            stop = self.stop or dt.datetime.now(dt.timezone.utc).date() + dt.timedelta(days=1)
            if self.start >= stop:
                raise ConfigError(f"[CrawlDays] start {self.start} is not before stop {stop}: set "
                                  f"--CrawlDays-start/--CrawlDays-stop (or under [CrawlDays] in luigi.cfg)")
            self._days = [self.start + dt.timedelta(days=i) for i in range((stop - self.start).days)]
        return self._days

    def requires(self):
        return [CrawlImages(date=day) for day in self.days()]

    def source(self) -> Source:
        return CrawlSource({task.date.isoformat(): task.source() for task in self.requires()})


class CrawlSource(Source):
    """Crawled day folders as one source (plain Python, no Luigi).

    ``days`` maps a day (``2026-11-22``) to the source of its folder; a key
    is ``<day>/<key in the day>`` and the metadata is the day's index.jsonl
    row (url, page_url, sha256, ...) plus ``crawl_date``.
    """
    name = "crawl"

    def __init__(self, days: dict[str, Source]):
        self.days = dict(sorted(days.items()))
        self._keys: list[str] | None = None

    def keys(self) -> list[str]:
        if self._keys is None:
            self._keys = [f"{day}/{key}" for day, source in self.days.items() for key in source.keys()]
        return self._keys

    def read(self, key: str) -> Item:
        day, _, rest = key.partition("/")
        if day not in self.days:
            raise KeyError(f"{key!r}: day {day} is not one of the crawl days "
                           f"{', '.join(self.days) or '(none)'}")
        item = self.days[day].read(rest)
        return Item(key=key, data=item.data, meta={**item.meta, "crawl_date": day})

