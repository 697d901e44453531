"""Training the small classifier of a labeled data set (the MNIST comparison's feature
space and judge of conditional samples; model/eval/classifier.py does the work)."""
from __future__ import annotations

import luigi

from pipeline.atomic import atomic_dir
from tasks.common import Progress, processed_dir, version
from tasks.errors import Checked, at_least, check
from tasks.records import BuildTFRecords
from tasks.storage import target


class TrainClassifier(Checked, luigi.Task):
    """A small CNN classifier of a labeled data set's records (MNIST, CIFAR-10), trained on
    ``train`` and measured on ``test``.

    Output: ``processed/classifiers/{dataset}/classifier-{version}/``: ``classifier.keras``
    (image in [-1, 1] -> class logits), ``features.keras`` (RGB in [-1, 1) -> its 128-d
    penultimate layer: a model/eval/metrics.py feature network, e.g. for
    ``EvaluateGenerator --feature-network``) and ``report.json`` (``test_accuracy``).
    """
    dataset = luigi.Parameter(default="mnist", description="Labeled data set (mnist, cifar10).")
    steps = luigi.IntParameter(default=2000, description="Training batches (2000 x 64: about two MNIST epochs).")
    batch_size = luigi.IntParameter(default=64, description="Batch size.")
    lr = luigi.FloatParameter(default=1e-3, description="Adam learning rate.")
    seed = luigi.IntParameter(default=0, description="Seed of weights and data order.")

    def validate(self):
        """Refuse bad settings when the task is built, before anything runs."""
        for name in ("steps", "batch_size"):
            at_least(self, name, 1)
        check(self, "lr", self.lr > 0, "must be positive")
        check(self, "dataset", self.requires().labeled(), "needs labeled records (mnist, cifar10): a classifier "
                                                          "learns the records' class labels")

    def requires(self):
        return BuildTFRecords(dataset=self.dataset)

    def folder(self):
        return processed_dir("classifiers", self.dataset, f"classifier-{version(self)}")

    def output(self):
        return target(str(self.folder()), folder=True)

    def run(self):
        from model.eval.classifier import train_on_records

        progress = Progress(self, self.steps, "steps", every=50)
        with atomic_dir(self.folder()) as tmp:
            report = train_on_records(self.requires().folder(), tmp, self.steps, self.batch_size, self.lr,
                                      self.seed, lambda step, steps, loss: progress(step, steps, {"loss": loss}))
        progress.close()
        self.set_status_message(f"test accuracy {report['test_accuracy']:.4f} (n={report['test_n']})")

    def report(self) -> dict:
        import json
        from pathlib import Path
        return json.loads((Path(self.output().path) / "report.json").read_text())
