"""TFRecords of the aligned faces: one record shard per aligned shard, and
versioned data sets named like TensorFlow Datasets.

Layout under ``processed/records/{dataset}/{settings hash}/`` (docs/records.md)::

    shards/{rule}/shard-00007-1a2b3c4d/   RecordShard: {split}.tfrecord, summary.json
    v-{version}/                          a data set version (a TFDS builder folder)
    builds/{keys digest}.json             BuildTFRecords' output: key set -> version
    latest.json                           the newest version
    daily/{date}.json                     RecordsDaily: the version current that day
"""
from __future__ import annotations

import json
from pathlib import Path

import luigi

from pipeline.atomic import atomic_dir, write_json
from pipeline.records import DEFAULT_SPLITS, IMAGE_FORMATS, parse_splits
from pipeline.versions import digest
from tasks.common import Progress, describe, processed_dir
from tasks.common import version as task_version
from tasks.errors import Checked, at_least, settings_of
from tasks.faces import AlignmentParams, AlignShard, DetectAlignFaces
from tasks.raw import check_dataset, raw_task
from tasks.storage import target


class RecordParams(Checked):
    """How records are split and encoded (a mixin of BuildTFRecords and RecordShard)."""
    splits = luigi.Parameter(default=DEFAULT_SPLITS, description="Split names and fractions, "
                                                                 "e.g. train=0.8,validation=0.1,test=0.1.")
    split_by = luigi.ChoiceParameter(default="auto", choices=("auto", "identity", "key"),
                                     description="identity: no person in two splits; key: by a hash of "
                                                 "the photo's key; auto: identity when at least "
                                                 "min_identities identities are known, else key.")
    min_identities = luigi.IntParameter(default=100, description="Distinct identities needed for "
                                                                 "split_by=auto to split by identity.")
    official_partition = luigi.BoolParameter(default=True, parsing=luigi.BoolParameter.EXPLICIT_PARSING,
                                             description="Use the source's own partition (CelebA's "
                                                         "list_eval_partition.txt) where it has one.")
    image_format = luigi.ChoiceParameter(default="raw", choices=IMAGE_FORMATS,
                                         description="raw uint8 bytes (fast to read) or PNG "
                                                     "(smaller); see docs/records.md.")

    def validate(self):
        super().validate()
        with settings_of(self, "splits"):
            parse_splits(self.splits)
        at_least(self, "min_identities", 0)

    def record_settings(self) -> dict:
        return {"splits": parse_splits(self.splits), "split_by": self.split_by,
                "min_identities": self.min_identities, "official_partition": self.official_partition,
                "image_format": self.image_format}


def records_root(dataset: str, aligned_root: Path, settings: dict) -> Path:
    """``processed/records/{dataset}/{hash of the aligned folder and record settings}``."""
    return processed_dir("records", dataset, digest(["BuildTFRecords", Path(aligned_root).name, settings]))


class RecordShard(AlignmentParams, RecordParams, luigi.Task):
    """The records of one aligned shard: ``{split}.tfrecord`` per split, written atomically."""
    shard = luigi.IntParameter(description="Index of the aligned shard.")
    digest = luigi.Parameter(description="Key-list hash of the aligned shard.")
    rule = luigi.ChoiceParameter(choices=("identity", "key"),
                                 description="The split rule split_by resolved to for the data set.")

    def requires(self):
        return self.clone(AlignShard)

    def output(self):
        root = records_root(self.dataset, self.aligned_root(), self.record_settings())
        return target(str(root / "shards" / self.rule / self.requires().name()), folder=True)

    def run(self):
        from pipeline.align.shards import read_shard
        from pipeline.records import write_record_shard

        images, faces = read_shard(self.input().path)
        progress = Progress(self, len(faces), "examples", every=256)
        with atomic_dir(self.output().path) as tmp:
            write_record_shard(tmp, images, faces, self.rule, parse_splits(self.splits),
                               self.official_partition, self.image_format, progress)
        progress.close()


class BuildTFRecords(RecordParams, luigi.Task):
    """The current version of a data set's records, built from record shards.

    Complete when the source's current key set has a version
    (``builds/{keys digest}.json``): adding raw data makes it run again, and
    then only new aligned shards get new record shards; the new version
    links the old record files and the new ones. ``folder()`` is the version
    folder (``dataset_info.json``, ``features.json``, ``manifest.json`` and the
    ``{dataset}{size}-{split}.tfrecord-*-of-*`` files).

    A labeled data set (a raw task with ``layout = "labeled"``: mnist,
    cifar10) needs no alignment: its records (image, key, label; official
    train/test partition) are written straight from the raw task's source,
    ``{dataset}-{split}.tfrecord-*-of-*`` in the same layout.
    """
    dataset = luigi.Parameter(default="sample", description="Data set whose aligned faces (or "
                                                            "labeled images: mnist, cifar10) to write.")

    def raw(self) -> luigi.Task:
        return raw_task(self.dataset)

    def labeled(self) -> bool:
        """True for a labeled data set (records straight from the raw task)."""
        return getattr(self.raw(), "layout", "faces") == "labeled"

    def validate(self):
        super().validate()
        check_dataset(self)

    def requires(self):
        return self.raw() if self.labeled() else DetectAlignFaces(dataset=self.dataset)

    def root(self) -> Path:
        if self.labeled():
            raw = self.raw()
            return records_root(self.dataset, Path(f"{raw.get_task_family()}-{task_version(raw)}"),
                                self.record_settings())
        return records_root(self.dataset, self.requires().aligned_root(), self.record_settings())

    def keys_digest(self) -> str:
        """Hash of the source's current key list."""
        if self.labeled():
            from pipeline.align.shards import keys_digest
            return keys_digest(self.raw().source().keys())
        return self.requires().keys_digest()

    def output(self):
        return target(str(self.root() / "builds" / f"{self.keys_digest()}.json"))

    def store_areas(self) -> list[Path]:
        """What a run writes (tasks/storage.py): version folders and ``latest.json`` beside the
        output file, under the records root."""
        return [self.root()]

    def complete(self):
        return self.raw().complete() and super().complete()

    def folder(self) -> Path:
        """The version folder of the source's current key set (after a build)."""
        path = Path(self.output().path)
        if not path.exists():
            raise FileNotFoundError(f"{path} not found: build the records first "
                                    f"(luigi --module tasks BuildTFRecords --dataset {self.dataset})")
        return self.root() / json.loads(path.read_text())["version"]

    def run(self):
        if self.labeled():
            return self.run_labeled()
        from pipeline.records import resolve_rule, version_id, write_version

        align = self.requires()
        summary = json.loads(Path(align.output().path).read_text())
        identities = {i for s in summary["shards"] for i in s.get("identities", ())}
        rule = resolve_rule(self.split_by, len(identities), self.min_identities)
        from pipeline.align.shards import check_plan_size, parse_shard_name
        shard_tasks = [align.clone(RecordShard, shard=parse_shard_name(s["name"])[0],
                                   digest=parse_shard_name(s["name"])[1], rule=rule, splits=self.splits,
                                   split_by=self.split_by, min_identities=self.min_identities,
                                   official_partition=self.official_partition,
                                   image_format=self.image_format)
                       for s in summary["shards"]]
        if not getattr(self, "_size_checked", False):  # once, not again when run() resumes
            self._size_checked = True  # with their aligned shards, as many tasks again:
            check_plan_size(2 * len(shard_tasks), summary["inputs"], "--DetectAlignFaces-shard-size",
                            f"BuildTFRecords --dataset {self.dataset} (AlignShard and RecordShard)", per_shard=2)
        yield shard_tasks  # dynamic: the rule is known only once the faces are aligned
        if summary["faces"] == 0:
            raise RuntimeError(f"no aligned faces in {self.dataset}: see the rejection logs under "
                               f"{align.aligned_root()}")
        size = align.size
        name = f"{self.dataset}{size}"
        shards = []
        for task in shard_tasks:
            folder = Path(task.output().path)
            shards.append((f"{task.rule}/{folder.name}", folder,
                           json.loads((folder / "summary.json").read_text())))
        settings = {**self.record_settings(), "rule": rule, "size": size}
        version = f"v-{version_id(name, [s for s, _, _ in shards], settings)}"
        root = self.root()
        if not (root / version / "manifest.json").exists():  # another run may have made it
            with atomic_dir(root / version) as tmp:
                write_version(tmp, name, size, shards, self.image_format, version=version,
                              dataset=self.dataset, keys_digest=summary["keys_digest"],
                              inputs=summary["inputs"], settings=settings,
                              aligned=str(align.aligned_root()), lineage=describe(self))
        manifest = json.loads((root / version / "manifest.json").read_text())
        self._finish(manifest, summary["keys_digest"], summary["inputs"])

    def run_labeled(self):
        from pipeline.align.shards import keys_digest
        from pipeline.records import resolve_rule
        from pipeline.sources.labeled import write_labeled_version

        source = self.raw().source()
        rule = resolve_rule(self.split_by, 0, self.min_identities)
        progress = Progress(self, len(source.keys()), "examples", every=1000)
        manifest = write_labeled_version(
            self.root(), self.dataset, source, rule, parse_splits(self.splits), self.official_partition,
            self.image_format, self.record_settings(), progress, dataset=self.dataset,
            keys_digest=keys_digest(source.keys()), inputs=len(source.keys()), lineage=describe(self))
        progress.close()
        self._finish(manifest, manifest["keys_digest"], manifest["inputs"])

    def _finish(self, manifest: dict, digest: str, inputs: int) -> None:
        """Record the version as the build of this key set, and as the latest."""
        build = {"version": manifest["version"], "keys_digest": digest, "inputs": inputs,
                 "splits": {s: v["num_examples"] for s, v in manifest["splits"].items()}}
        write_json(self.root() / "latest.json", build)
        write_json(self.output().path, build)
        self.set_status_message(f"{build['version']}: " + ", ".join(f"{s} {n}" for s, n in build["splits"].items()))


class RecordsDaily(Checked, luigi.Task):
    """A day's build: brings BuildTFRecords up to date and records which version
    was current that day (``daily/{date}.json``). Scheduled by
    ``luigi --module tasks RangeDaily --of RecordsDaily --start 2026-11-01``,
    which runs every missing day (see docs/records.md for the cron line)."""
    date = luigi.DateParameter(description="The day of this build.")
    dataset = luigi.Parameter(default="sample", description="Data set to build.")

    def validate(self):
        check_dataset(self)

    def requires(self):
        return BuildTFRecords(dataset=self.dataset)

    def output(self):
        return target(str(self.requires().root() / "daily" / f"{self.date.isoformat()}.json"))

    def run(self):
        build = json.loads(Path(self.input().path).read_text())
        write_json(self.output().path, {"date": self.date.isoformat(), **build})

    @classmethod
    def bulk_complete(cls, parameter_tuples):
        """The days done already (what RangeDaily asks; one stat each)."""
        return [day for day in parameter_tuples if cls(date=day).output().exists()]
