"""Comparing GAN variants side by side: every variant x discriminator trained as an ordinary
TrainGAN run (same data, step budget and seed), then curves, sample grids and one table
(model/eval/comparison.py does the work)."""
from __future__ import annotations

import json
import logging

import luigi

from model.config import DISCRIMINATORS, GENERATORS
from model.variants import VARIANTS
from pipeline.atomic import atomic_dir, write_json
from tasks.classifier import TrainClassifier
from tasks.common import describe, processed_dir, version
from tasks.errors import Checked, at_least, check, settings_of
from tasks.records import BuildTFRecords
from tasks.storage import target
from tasks.train import DEFAULTS as TRAINING
from tasks.train import TrainGAN

logger = logging.getLogger("luigi-interface")
#: The variants of the seed report's comparison.
COMPARED = ("dcgan", "wgan", "wgan-gp", "acgan", "infogan")


class CompareGANs(Checked, luigi.Task):
    """Trains every variant x discriminator pair on one data set with the same step budget,
    seed and generator family (each an ordinary ``TrainGAN`` run: reused when it exists,
    trained in parallel with ``--workers``), then writes, in
    ``processed/comparisons/{dataset}/compare-{version}/``:

    - ``{variant}_curves.png``: G loss, D loss and D accuracy over steps, CNN and CapsNet
      overlaid (``{variant}_curves_zoom.png`` for the WGAN critics);
    - ``{variant}_samples.png``: 5x5 grids of the fixed inputs at ``intervals`` steps;
    - ``report.md`` / ``report.json``: one table of final figures. Labeled data (MNIST,
      CIFAR-10): FID and KID on the features of the project's classifier
      (``TrainClassifier``, its test accuracy reported), ACGAN's class accuracy and
      InfoGAN's code accuracy (best one-to-one mapping). Faces: FID and KID on the
      Inception-v3 features and the face-detection rate.
    """
    dataset = luigi.Parameter(default="mnist", description="Data set all runs train on.")
    # The measured budget of the MNIST comparison on the shared 2-core CPU (docs/variants.md).
    steps = luigi.IntParameter(default=150, description="Training steps of every run (a WGAN step is n_critic "
                                                        "critic updates and one generator update).")
    batch_size = luigi.IntParameter(default=32, description="Batch size of every run.")
    seed = luigi.IntParameter(default=0, description="Seed of every run (weights, noise, data order).")
    data_fraction = luigi.FloatParameter(default=TRAINING["data_fraction"],
                                         description="Share of the training images every run reads (TrainGAN "
                                                     "--data-fraction: the same first records for all runs).")
    generator = luigi.ChoiceParameter(default="dcgan", choices=GENERATORS, description="Generator family of "
                                                                                         "every run.")
    variants = luigi.ListParameter(default=list(COMPARED), description="Variants to compare (any of "
                                                                       "model/variants).")
    discriminators = luigi.ListParameter(default=list(DISCRIMINATORS), description="Discriminator families.")
    acgan_attributes = luigi.ListParameter(default=["Male"], description="Face data: CelebA attributes whose "
                                                                         "combinations are ACGAN's classes "
                                                                         "(labeled data uses its labels).")
    intervals = luigi.IntParameter(default=4, description="Sample grids at this many evenly spaced steps.")
    n = luigi.IntParameter(default=2000, description="Samples (and real test images) per run for FID/KID, "
                                                     "capped at the test split's size.")
    face_n = luigi.IntParameter(default=200, description="Face data: samples checked for a face.")
    feature_network = luigi.Parameter(default="", description="Face data: a TorchScript or .keras feature "
                                                              "network for FID/KID; empty: the FID Inception-v3.")
    log_every = luigi.IntParameter(default=5, significant=False, description="Steps between metrics rows of "
                                                                             "the runs (their curves).")

    def validate(self):
        """Refuse bad settings when the task is built, before any run trains."""
        unknown = [v for v in self.variants if v not in VARIANTS]
        check(self, "variants", bool(self.variants) and not unknown,
              f"unknown or no variants {unknown}; choose from {', '.join(VARIANTS)}")
        unknown = [d for d in self.discriminators if d not in DISCRIMINATORS]
        check(self, "discriminators", bool(self.discriminators) and not unknown,
              f"unknown or no discriminators {unknown}; choose from {', '.join(DISCRIMINATORS)}")
        for name in ("steps", "batch_size", "intervals", "n", "face_n", "log_every"):
            at_least(self, name, 1)
        check(self, "intervals", self.intervals <= self.steps, f"must be at most steps ({self.steps})")
        check(self, "data_fraction", 0 < self.data_fraction <= 1, "must be in (0, 1] (e.g. 0.1)")
        if "acgan" in self.variants and not self.labeled():
            from model.apps.attributes import parse_attributes

            with settings_of(self, "acgan_attributes"):
                parse_attributes(list(self.acgan_attributes))

    def complete(self):
        if not self.labeled() and not self.output()["json"].exists():
            from model.eval.metrics import check_feature_network
            check_feature_network(self.feature_network or None)  # fail while scheduling, before training
        return super().complete()

    def labeled(self) -> bool:
        """Whether the records carry class labels (MNIST, CIFAR-10), not faces."""
        return BuildTFRecords(dataset=self.dataset).labeled()

    def run_task(self, variant: str, discriminator: str) -> TrainGAN:
        options = {}
        if variant == "acgan" and not self.labeled():
            options = {"attributes": list(self.acgan_attributes)}
        return TrainGAN(dataset=self.dataset, variant=variant, discriminator=discriminator,
                        generator=self.generator, steps=self.steps, batch_size=self.batch_size, seed=self.seed,
                        data_fraction=self.data_fraction, options=options,
                        sample_every=max(1, self.steps // self.intervals), log_every=self.log_every,
                        checkpoint_every=self.steps)

    # Added after comparisons existed (they used all the data): at 1.0 a comparison keeps its folder.
    added_later = {"data_fraction": 1.0}

    def requires(self):
        runs = {f"{v}/{d}": self.run_task(v, d) for v in self.variants for d in self.discriminators}
        if self.labeled():
            runs["classifier"] = TrainClassifier(dataset=self.dataset)
        return runs

    def folder(self):
        return processed_dir("comparisons", self.dataset, f"compare-{version(self)}")

    def output(self):
        return {"md": target(str(self.folder() / "report.md")),
                "json": target(str(self.folder() / "report.json"))}

    def run(self):
        from pathlib import Path

        from model.eval.comparison import compare_runs, render_markdown

        tasks = self.requires()
        records = tasks[next(iter(k for k in tasks if k != "classifier"))].requires().folder()
        runs = [{"variant": v, "discriminator": d, "run_dir": tasks[f"{v}/{d}"].run_dir()}
                for v in self.variants for d in self.discriminators]
        from model.eval.comparison import evaluator

        classifier = tasks["classifier"].output().path if "classifier" in tasks else None
        evaluate, notes = evaluator(records, classifier, self.feature_network or None, self.n, self.face_n,
                                    self.seed)

        def status(text):
            logger.info("CompareGANs %s: %s", self.dataset, text)
            self.set_status_message(text)

        with atomic_dir(self.folder()) as tmp:
            report = compare_runs(runs, tmp, evaluate, self.intervals, status=status)
            report.update({"dataset": self.dataset, "records": str(records), "notes": notes,
                           "params": self.to_str_params(only_significant=True), "lineage": describe(self)})
            if "classifier" in tasks:
                report["classifier"] = json.loads((Path(tasks["classifier"].output().path) / "report.json")
                                                  .read_text())
            write_json(tmp / "report.json", report)
            title = f"GAN variants compared on {self.dataset} ({self.steps} steps, batch {self.batch_size}, " \
                    f"seed {self.seed}, {self.generator} generator" \
                    + (f", {self.data_fraction:g} of the training images)" if self.data_fraction < 1 else ")")
            (tmp / "report.md").write_text(render_markdown(report, title, notes))

