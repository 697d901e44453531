"""Training the DCGAN of Radford et al. (2015) on the records of a data set."""
from __future__ import annotations

import luigi

from pipeline.atomic import write_json
from tasks.common import Progress, describe, processed_dir, version
from tasks.records import BuildTFRecords

# The training modules import TensorFlow; only this constant is needed here.
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16", "auto")


class TrainDCGAN(luigi.Task):
    """Trains G and D, checkpointing as it goes; re-running resumes from the last checkpoint.

    Output: ``processed/models/{dataset}/dcgan-{version}/``: ``generator.keras``
    and ``saved_model/`` (z -> uint8 images), next to ``ckpt/``, ``metrics.csv``,
    ``tb/`` (TensorBoard), ``progress/`` (fixed-noise grids), ``losses.png``
    and ``lineage.json``.
    """
    dataset = luigi.Parameter(default="sample", description="Data set to train on.")
    steps = luigi.IntParameter(default=10_000, description="Discriminator steps (batches) to train.")
    batch_size = luigi.IntParameter(default=64, description="Batch size (paper: 64).")
    lr = luigi.FloatParameter(default=2e-4, description="Adam learning rate (paper: 0.0002).")
    beta1 = luigi.FloatParameter(default=0.5, description="Adam beta1 (paper: 0.5).")
    z_dim = luigi.IntParameter(default=100, description="Dimension of z (paper: 100).")
    z_dist = luigi.ChoiceParameter(default="uniform", choices=("uniform", "normal"),
                                   description="Noise distribution: uniform in [-1, 1] (paper) or normal.")
    base_width = luigi.IntParameter(default=128, description="Width of the last generator feature "
                                                             "map; 128 gives 4x4x1024 at 64x64.")
    kernel_size = luigi.IntParameter(default=4, description="Convolution kernel side (4: reference "
                                                            "Torch code; 5: DCGAN-tensorflow).")
    g_steps = luigi.IntParameter(default=1, description="Generator updates per discriminator update.")
    seed = luigi.IntParameter(default=0, description="Seed of weights, noise and data order.")
    precision = luigi.ChoiceParameter(default="auto", choices=PRECISIONS,
                                      description="auto (mixed_bfloat16 on CPUs with AMX/AVX-512 BF16, "
                                                  "else float32), float32, mixed_bfloat16, or mixed_float16 "
                                                  "(GPUs, loss-scaled). Outputs stay float32.")
    sample_every = luigi.IntParameter(default=0, significant=False,
                                      description="Steps between fixed-noise grids in progress/ and "
                                                  "TensorBoard (0: only at the end).")
    checkpoint_every = luigi.IntParameter(default=100, significant=False,
                                          description="Steps between checkpoints.")
    log_every = luigi.IntParameter(default=10, significant=False,
                                   description="Steps between metrics.csv rows and progress updates.")
    eval_every = luigi.IntParameter(default=0, significant=False,
                                    description="Steps between FID/KID evaluations written to eval.csv, "
                                                "at the next checkpoint (0: off; settings from "
                                                "[EvaluateGenerator], e.g. training_n).")

    def requires(self):
        return BuildTFRecords(dataset=self.dataset)

    def run_dir(self):
        return processed_dir("models", self.dataset, f"dcgan-{version(self)}")

    def output(self):
        return {"keras": luigi.LocalTarget(str(self.run_dir() / "generator.keras")),
                "saved_model": luigi.LocalTarget(str(self.run_dir() / "saved_model"))}

    def config(self):
        from model.train import TrainConfig
        from pipeline.records import read_info
        info = read_info(self.requires().folder())
        return TrainConfig(resolution=info["image_shape"][0], channels=info["image_shape"][2],
                           z_dim=self.z_dim, z_dist=self.z_dist, base_width=self.base_width,
                           kernel_size=self.kernel_size, batch_size=self.batch_size, lr=self.lr,
                           beta1=self.beta1, g_steps=self.g_steps, steps=self.steps, seed=self.seed,
                           precision=self.precision, log_every=self.log_every,
                           checkpoint_every=self.checkpoint_every, sample_every=self.sample_every)

    def run(self):
        from model.data import image_dataset
        from model.train import train

        config = self.config()
        run_dir = self.run_dir()
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / "lineage.json", describe(self))
        data = image_dataset(self.requires().folder(), "train", config.batch_size,
                             config.shuffle_buffer, config.seed)
        progress = Progress(self, config.steps, "steps", every=1)
        on_checkpoint = None
        if self.eval_every:
            from tasks.evaluate import training_evaluator
            on_checkpoint = training_evaluator(self, config.steps)
        result = train(config, data, run_dir, progress, on_checkpoint=on_checkpoint)
        progress.close()
        write_json(run_dir / "result.json", result)
