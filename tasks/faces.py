"""Face detection and alignment, one task per shard of source images."""
from __future__ import annotations

import luigi

from pipeline import versions
from pipeline.align.aligner import DETECTORS, LANDMARK_SETS, MODES, FaceAligner
from pipeline.align.shards import (
    check_plan_size,
    commit_plan,
    extend_plan,
    keys_digest,
    name_of,
    parse_shard_name,
    read_keys,
    summarize_shards,
)
from pipeline.atomic import atomic_dir, write_json
from tasks.common import Progress, defaults_of, describe, processed_dir
from tasks.errors import Checked, at_least, check, settings_of
from tasks.raw import check_dataset, raw_task
from tasks.storage import target

#: Parameters that say how the work is cut or run, not what it produces.
LAYOUT_PARAMS = frozenset({"shard", "digest", "shard_size", "jobs"})


def alignment_version(task: luigi.Task) -> str:
    """Hash of ``task``'s alignment settings and of its raw task's identity
    (parameters less ``growth_params``): names the aligned folder."""
    own = task.to_str_params(only_significant=True)
    params = {name: own[name] for name in sorted(own)
              if isinstance(getattr(AlignmentParams, name, None), luigi.Parameter)
              and name not in LAYOUT_PARAMS}
    raw = task.raw()
    growth = set(getattr(raw, "growth_params", ()))
    raw_params = {k: v for k, v in raw.to_str_params(only_significant=True).items() if k not in growth}
    return versions.digest(["DetectAlignFaces", params, raw.get_task_family(), raw_params])


#: FaceAligner's defaults: the alignment parameters take theirs from here.
A = defaults_of(FaceAligner)
#: Images per AlignShard task (luigi.cfg and docs/parameters.md state this value too;
#: tests/test_defaults.py checks they agree).
SHARD_SIZE = 128


class AlignmentParams(Checked):
    """Settings shared by :class:`DetectAlignFaces` and its shards (a mixin, not a task)."""
    dataset = luigi.Parameter(default="sample", description="Data set to align (see tasks.raw.RAW_TASKS).")
    size = luigi.IntParameter(default=A["size"], description="Side of the aligned square face, in pixels.")
    mode = luigi.ChoiceParameter(default=A["mode"], choices=MODES,
                                 description="openface: OpenFace's 3-point affine; similarity: "
                                             "least-squares rotation+scale+shift of all 68 landmarks.")
    landmarks = luigi.ChoiceParameter(default=A["landmarks"], choices=tuple(LANDMARK_SETS),
                                      description="Landmark triple of the openface mode.")
    margin = luigi.FloatParameter(default=A["margin"], description="Border around the template, as a "
                                                                   "fraction of the output side (0 = "
                                                                   "OpenFace's crop).")
    detector = luigi.ChoiceParameter(default=A["detector"], choices=DETECTORS,
                                     description="dlib detector: hog (fast) or cnn (MMOD, slower, more faces).")
    upsample = luigi.IntParameter(default=A["upsample"], description="Finest detection scale is "
                                  "2**upsample (1 finds faces down to ~40 px, as OpenFace).")
    detect_side = luigi.IntParameter(default=A["detect_side"], description="With min_face 0: detect on a "
                                     "copy whose longer side is this times 2**upsample (0 = full "
                                     "resolution).")
    min_face = luigi.IntParameter(default=A["min_face"], description="Ignore faces narrower than this "
                                  "(source px); detection then runs at the coarsest scale that still "
                                  "finds them.")
    shard_size = luigi.IntParameter(default=SHARD_SIZE, description="Images per shard task.")
    jobs = luigi.IntParameter(default=1, significant=False,
                              description="Processes per shard task (0 = every usable core). Luigi's "
                                          "--workers runs shards side by side, so keep workers x jobs "
                                          "near the core count: many shards -> --workers N, jobs 1; "
                                          "one or few shards (a first small run, an incremental "
                                          "re-run) -> --workers 1 --DetectAlignFaces-jobs 0.")

    def validate(self):
        super().validate()
        check_dataset(self)
        check(self, "dataset", getattr(self.raw(), "layout", "faces") != "labeled",
              "holds labeled images (digits, objects), not photos of faces: it needs no alignment; "
              "BuildTFRecords and TrainGAN take it directly")
        with settings_of(self):
            self.aligner()  # FaceAligner's own rules: size, margin, upsample, ...
        at_least(self, "shard_size", 1)
        at_least(self, "jobs", 0, "0 = every usable core")

    def aligner(self) -> FaceAligner:
        return FaceAligner(size=self.size, mode=self.mode, landmarks=self.landmarks, margin=self.margin,
                           detector=self.detector, upsample=self.upsample,
                           detect_side=self.detect_side, min_face=self.min_face)

    def raw(self) -> luigi.Task:
        """The raw task whose ``source()`` is aligned."""
        return raw_task(self.dataset)

    def aligned_root(self):
        """``processed/aligned/{dataset}/{hash}``: one folder per data set and settings.

        The hash covers the alignment settings and the raw task's parameters
        except its ``growth_params`` (e.g. Sample's ``n``) and how the work is
        cut (``shard_size``): growing the source keeps the folder, so what is
        aligned already is reused; changing a setting starts a new folder.
        """
        return processed_dir("aligned", self.dataset, alignment_version(self))


class AlignShard(AlignmentParams, luigi.Task):
    """Aligns the images of one planned shard (its key list: ``keys/<name>.txt``).

    Planned by :class:`DetectAlignFaces`; ``digest`` (of the key list) is part
    of the name, so a shard never changes content under its name.
    """
    shard = luigi.IntParameter(description="Shard index (position in the shard plan).")
    digest = luigi.Parameter(description="First 8 hex digits of the hash of the shard's key list.")

    def requires(self):
        return self.raw()

    def name(self) -> str:
        return name_of(self.shard, self.digest)

    def output(self):
        return target(str(self.aligned_root() / self.name()), folder=True)

    def keys(self) -> list[str]:
        """The shard's key list, checked against ``digest``."""
        path = self.aligned_root() / "keys" / f"{self.name()}.txt"
        try:
            keys = read_keys(path)
        except FileNotFoundError:
            raise FileNotFoundError(f"{path} not found: shards are planned by DetectAlignFaces "
                                    f"--dataset {self.dataset}; run that instead") from None
        if keys_digest(keys)[:8] != self.digest:
            raise RuntimeError(f"{path} does not hash to {self.digest}: delete it and re-run")
        return keys

    def run(self):
        from pipeline.align.engine import align_keys, usable_cores
        from pipeline.align.shards import write_shard
        source = self.requires().source()
        keys = self.keys()
        progress = Progress(self, len(keys), "images", every=8)
        images, faces, rejected = align_keys(source, keys, self.aligner(), progress,
                                             jobs=self.jobs or usable_cores())
        with atomic_dir(self.output().path) as tmp:
            write_shard(tmp, keys, images, faces, rejected)
        progress.close()


class DetectAlignFaces(AlignmentParams, luigi.Task):
    """Detects and aligns the faces of a data set, one :class:`AlignShard` per planned shard.

    Requires the raw task and, once its data is there, one AlignShard per
    shard of the plan, so every worker of a central scheduler sees the shards
    and may run them (when the raw data is made in the same run, ``run()``
    yields them instead). The shard plan is append-only
    (:func:`pipeline.align.shards.plan_shards`), so after raw data is added only
    the new keys are decoded and aligned. The output, ``summary-{keys
    digest}.json`` (counts per shard, rejections by reason), names the
    source's current key set: the task is complete exactly when that key set
    is aligned, so new data makes it run again and a re-run with nothing new
    is a no-op. Every input is either a face or a rejection.
    """

    def requires(self):
        # The plan is cached, so the scheduling and run-time calls agree.
        if not hasattr(self, "_planned"):
            raw = self.raw()
            self._planned = self.shard_tasks(raw.source().keys()) if raw.complete() else []
        return [self.raw(), *self._planned]

    def version_inputs(self):
        """What defines the output (tasks.common.version): the raw data, not the plan."""
        return [self.raw()]

    def keys_digest(self) -> str:
        """Hash of the source's current key list (lists the source)."""
        return keys_digest(self.raw().source().keys())

    def output(self):
        return target(str(self.aligned_root() / f"summary-{self.keys_digest()}.json"))

    def complete(self):
        return self.raw().complete() and super().complete()

    def shard_tasks(self, keys: list[str]) -> list[AlignShard]:
        tasks = [self.clone(AlignShard, shard=index, digest=digest)
                 for index, digest in (parse_shard_name(name)
                                       for name, _ in extend_plan(self.aligned_root(), keys, self.shard_size))]
        if not getattr(self, "_size_checked", False):  # once, not again in run()
            self._size_checked = True
            check_plan_size(len(tasks), len(keys), "--DetectAlignFaces-shard-size",
                            f"DetectAlignFaces --dataset {self.dataset}")
        return tasks

    def run(self):
        source = self.raw().source()
        keys = source.keys()
        digest = keys_digest(keys)
        shard_tasks = self.shard_tasks(keys)
        yield shard_tasks  # no-ops for the shards required already; the rest when planned now
        summary = summarize_shards([task.output().path for task in shard_tasks], len(keys), self.dataset)
        root = self.aligned_root()
        commit_plan(root, digest, [t.name() for t in shard_tasks])
        write_json(root / f"summary-{digest}.json",
                   {**summary, "keys_digest": digest, "lineage": describe(self)})
