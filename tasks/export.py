"""Exporting samples of a trained generator."""
from __future__ import annotations

import luigi

from pipeline.atomic import atomic_dir
from tasks.common import processed_dir, version
from tasks.train import TrainDCGAN


class ExportSamples(luigi.Task):
    """An 8x8 grid (``grid.png``) and ``n`` individual PNGs from the exported generator."""
    dataset = luigi.Parameter(default="sample", description="Data set whose generator to sample.")
    n = luigi.IntParameter(default=64, description="Number of individual sample PNGs.")
    seed = luigi.IntParameter(default=0, description="Seed of the sample noise.")

    def requires(self):
        return TrainDCGAN(dataset=self.dataset)

    def output(self):
        return luigi.LocalTarget(str(processed_dir("exports", self.dataset, f"dcgan-{version(self)}")))

    def run(self):
        import keras
        from PIL import Image

        from model.sampling import generate, grid, noise

        train = self.requires()
        generator = keras.models.load_model(train.output().path, compile=False)
        z = noise(max(self.n, 64), train.z_dim, train.z_dist, self.seed)
        images = generate(generator, z)
        with atomic_dir(self.output().path) as tmp:
            Image.fromarray(grid(images[:64], 8, 8).squeeze()).save(tmp / "grid.png")
            (tmp / "samples").mkdir()
            for i in range(self.n):
                Image.fromarray(images[i].squeeze()).save(tmp / "samples" / f"{i:04d}.png")

    def grid_path(self) -> str:
        return f"{self.output().path}/grid.png"
