"""Face detection and alignment, one task per shard of source images."""
from __future__ import annotations

import json

import luigi

from pipeline.atomic import atomic_dir, write_json
from pipeline.faces import DETECTORS, LANDMARK_SETS, MODES
from pipeline.sources import shard_keys
from tasks.common import Progress, describe, processed_dir, version
from tasks.raw import raw_task


class AlignmentParams:
    """Settings shared by :class:`DetectAlignFaces` and its shards (a mixin, not a task)."""
    dataset = luigi.Parameter(default="sample", description="Data set to align (see tasks.raw.RAW_TASKS).")
    size = luigi.IntParameter(default=64, description="Side of the aligned square face, in pixels.")
    mode = luigi.ChoiceParameter(default="openface", choices=MODES,
                                 description="openface: OpenFace's 3-point affine; similarity: "
                                             "least-squares rotation+scale+shift of all 68 landmarks.")
    landmarks = luigi.ChoiceParameter(default="innerEyesAndBottomLip", choices=tuple(LANDMARK_SETS),
                                      description="Landmark triple of the openface mode.")
    margin = luigi.FloatParameter(default=0.0, description="Border around the template, as a fraction "
                                                           "of the output side (0 = OpenFace's crop).")
    detector = luigi.ChoiceParameter(default="hog", choices=DETECTORS,
                                     description="dlib detector: hog (fast) or cnn (MMOD, slower, more faces).")
    upsample = luigi.IntParameter(default=1, description="Times the detector upsamples the image "
                                                         "(1 finds faces down to ~40 px).")
    detect_side = luigi.IntParameter(default=640, description="Detect on a copy downscaled to this "
                                                              "longer side (0 = full resolution).")
    min_face = luigi.IntParameter(default=0, description="Ignore faces narrower than this (source px).")
    shard_size = luigi.IntParameter(default=256, description="Images per shard task.")

    def aligner(self):
        from pipeline.faces import FaceAligner
        return FaceAligner(size=self.size, mode=self.mode, landmarks=self.landmarks, margin=self.margin,
                           detector=self.detector, upsample=self.upsample,
                           detect_side=self.detect_side, min_face=self.min_face)

    def requires(self):
        return raw_task(self.dataset)

    def aligned_root(self):
        # Same folder for the whole task and its shards: the shard index is left out.
        return processed_dir("aligned", self.dataset, version(self, exclude=("shard",),
                                                              family="DetectAlignFaces"))


class AlignShard(AlignmentParams, luigi.Task):
    """Aligns shard ``shard`` (images ``shard * shard_size`` onwards, in key order)."""
    shard = luigi.IntParameter(description="Shard index.")

    def output(self):
        return luigi.LocalTarget(str(self.aligned_root() / f"shard-{self.shard:05d}"))

    def run(self):
        from pipeline.aligned import align_keys, write_shard
        source = self.requires().source()
        shards = shard_keys(source.keys(), self.shard_size)
        if self.shard >= len(shards):
            raise ValueError(f"shard {self.shard} does not exist: {self.dataset} has {len(shards)} shards")
        keys = shards[self.shard]
        progress = Progress(self, len(keys), "images", every=8)
        images, faces, rejected = align_keys(source, keys, self.aligner(), progress)
        with atomic_dir(self.output().path) as tmp:
            write_shard(tmp, keys, images, faces, rejected)
        progress.close()


class DetectAlignFaces(AlignmentParams, luigi.Task):
    """Detects and aligns the faces of a data set, one :class:`AlignShard` per shard.

    Writes ``summary.json`` (counts per shard and rejections by reason) once
    every shard is done; every input is either a face or a rejection line.
    """

    def output(self):
        return luigi.LocalTarget(str(self.aligned_root() / "summary.json"))

    def run(self):
        source = self.requires().source()
        n_shards = len(shard_keys(source.keys(), self.shard_size))
        shard_tasks = [self.clone(AlignShard, shard=i) for i in range(n_shards)]
        yield shard_tasks  # dynamic dependencies: the shard count is known only now
        totals = {"inputs": 0, "faces": 0, "images_with_faces": 0, "rejected": 0}
        by_reason: dict[str, int] = {}
        shards = []
        for task in shard_tasks:
            with open(f"{task.output().path}/summary.json") as fh:
                s = json.load(fh)
            for k in totals:
                totals[k] += s[k]
            for reason, count in s["rejected_by_reason"].items():
                by_reason[reason] = by_reason.get(reason, 0) + count
            shards.append({"folder": task.output().path, **s})
        if totals["images_with_faces"] + totals["rejected"] != len(source):
            raise RuntimeError(f"{self.dataset}: {len(source)} inputs but {totals['images_with_faces']} "
                               f"with faces + {totals['rejected']} rejected")
        write_json(self.output().path, {**totals, "rejected_by_reason": by_reason, "shards": shards,
                                        "lineage": describe(self)})

    def shard_folders(self) -> list[str]:
        """The aligned shard folders, from the finished task's summary."""
        with self.output().open() as fh:
            return [s["folder"] for s in json.load(fh)["shards"]]
