"""Exporting samples of a trained generator."""
from __future__ import annotations

from pathlib import Path

import luigi

from pipeline.atomic import atomic_dir
from tasks.common import processed_dir, version
from tasks.train import TrainDCGAN


class ExportSamples(luigi.Task):
    """Samples of the exported generator, in ``processed/exports/{dataset}/dcgan-{version}/``:

    ``grid.png`` (8x8), ``samples/0000.png ...`` (``n`` images),
    ``interpolations.png`` (one row per random pair of z, spherical
    interpolation) and ``training.gif`` (the fixed-noise grid over training).
    """
    dataset = luigi.Parameter(default="sample", description="Data set whose generator to sample.")
    n = luigi.IntParameter(default=64, description="Number of individual sample PNGs.")
    seed = luigi.IntParameter(default=0, description="Seed of the sample noise.")
    interpolations = luigi.IntParameter(default=8, description="Rows of the interpolation strip "
                                                               "(pairs of random z).")
    interpolation_steps = luigi.IntParameter(default=10, description="Images per interpolation row.")

    def requires(self):
        return TrainDCGAN(dataset=self.dataset)

    def output(self):
        return luigi.LocalTarget(str(processed_dir("exports", self.dataset, f"dcgan-{version(self)}")))

    def run(self):
        import keras
        import numpy as np

        from model.sampling import generate, grid, noise, save_gif, save_png, slerp

        train = self.requires()
        generator = keras.models.load_model(train.output()["keras"].path, compile=False)
        z = noise(max(self.n, 64), train.z_dim, train.z_dist, self.seed)
        images = generate(generator, z)
        ends = noise(2 * self.interpolations, train.z_dim, train.z_dist, self.seed + 1)
        t = np.linspace(0.0, 1.0, self.interpolation_steps)
        path = np.concatenate([slerp(ends[2 * i], ends[2 * i + 1], t) for i in range(self.interpolations)])
        frames = sorted(Path(train.run_dir(), "progress").glob("step-*.png"))
        with atomic_dir(self.output().path) as tmp:
            save_png(grid(images[:64], 8, 8), tmp / "grid.png")
            for i in range(self.n):
                save_png(images[i], tmp / "samples" / f"{i:04d}.png")
            save_png(grid(generate(generator, path), self.interpolations, self.interpolation_steps),
                     tmp / "interpolations.png")
            if frames:
                save_gif(frames, tmp / "training.gif")

    def grid_path(self) -> str:
        return f"{self.output().path}/grid.png"
