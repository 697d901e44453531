"""TFRecord shards of the aligned faces, named like TensorFlow Datasets."""
from __future__ import annotations

import luigi

from pipeline.atomic import atomic_dir, write_json
from tasks.common import describe, processed_dir, version
from tasks.faces import DetectAlignFaces


class BuildTFRecords(luigi.Task):
    """Writes ``{dataset}{size}-train.tfrecord-0000i-of-0000n`` and ``dataset_info.json``."""
    dataset = luigi.Parameter(default="sample", description="Data set whose aligned faces to write.")
    num_shards = luigi.IntParameter(default=4, description="Record shards per split (fewer if "
                                                           "there are fewer examples).")

    def requires(self):
        return DetectAlignFaces(dataset=self.dataset)

    def folder(self):
        return processed_dir("records", self.dataset, version(self))

    def output(self):
        return luigi.LocalTarget(str(self.folder() / "dataset_info.json"))

    def run(self):
        import numpy as np
        from pipeline.aligned import read_shard
        from pipeline.records import dataset_info, write_split

        images, faces = [], []
        for folder in self.requires().shard_folders():
            imgs, meta = read_shard(folder)
            images.append(imgs)
            faces.extend(meta)
        size = self.requires().size
        images = np.concatenate(images) if images else np.zeros((0, size, size, 3), np.uint8)
        if len(images) == 0:
            raise RuntimeError(f"no aligned faces in {self.dataset}: see the rejection logs under "
                               f"{self.requires().aligned_root()}")
        name = f"{self.dataset}{size}"
        with atomic_dir(self.folder()) as tmp:
            lengths = write_split(tmp, name, "train", images, faces, self.num_shards)
            write_json(tmp / "dataset_info.json",
                       dataset_info(name, size, {"train": lengths}, lineage=describe(self)))
