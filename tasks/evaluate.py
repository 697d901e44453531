"""Evaluating trained runs (FID, KID, face-detection rate, MS-SSIM diversity, per
checkpoint, with JSON and Markdown reports) and comparing runs.

The work is done by model/eval/evaluation.py (and the figures by model/eval/metrics.py);
docs/evaluation.md says how each is defined and what to install (the
``[metrics]`` extra).
"""
from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
from dataclasses import fields
from pathlib import Path

import luigi

from model.eval.evaluation import EvalSettings
from model.eval.metrics import FEATURE_PRECISIONS
from pipeline.atomic import atomic_dir, atomic_file, write_json
from tasks.common import Progress, describe, processed_dir, report_records, version
from tasks.errors import Checked, settings_of
from tasks.storage import target
from tasks.train import TrainedRun

logger = logging.getLogger("luigi-interface")
_EVAL = {f.name: f.default for f in fields(EvalSettings)}


class EvaluateGenerator(Checked, TrainedRun, luigi.Task):
    """FID, KID, face-detection rate and MS-SSIM diversity of a trained run (any variant),
    for the exported generator and each checkpoint the run kept, against a held-out split
    of the records it trained on (from its model card).

    Output: ``processed/evaluations/{dataset}/{variant}-{version}/``: ``report.json``
    (every figure, the split used, the run's settings), ``report.md`` (readable, with
    the images), ``grid.png`` (8x8 samples), ``real_grid.png`` (8x8 real images of the
    split) and ``fid_over_steps.png``; the run folder gets ``evaluation.json`` (the
    latest figures). See docs/evaluation.md.
    """
    records = luigi.Parameter(default="", description="Records version folder to evaluate against; empty: "
                                                      "the records named in the run's model card.")
    n = luigi.IntParameter(default=_EVAL["n"], description="Samples (and real images) for FID/KID; "
                                                           "capped at the size of the real split.")
    split = luigi.Parameter(default=_EVAL["split"],
                            description="Real split to compare against; when it is missing: validation, "
                                        "then train (noted in the report).")
    seed = luigi.IntParameter(default=_EVAL["seed"], description="Seed of the sample inputs, the real subset, "
                                                                 "KID subsets and MS-SSIM pairs.")
    feature_network = luigi.Parameter(default=_EVAL["feature_network"],
                                      description="TorchScript (.pt) or .keras feature network; empty: the "
                                                  "FID Inception-v3 of the [metrics] extra.")
    feature_precision = luigi.ChoiceParameter(default=_EVAL["feature_precision"], choices=FEATURE_PRECISIONS,
                                              description="How the FID Inception-v3 computes: auto (fused "
                                                          "bfloat16 on CPUs with bfloat16 units, else fused "
                                                          "float32), bfloat16, float32, or reference (the "
                                                          "TorchScript module as it is).")
    checkpoints = luigi.BoolParameter(default=_EVAL["checkpoints"], parsing=luigi.BoolParameter.EXPLICIT_PARSING,
                                      description="Also evaluate every checkpoint kept in ckpt/ "
                                                  "(the FID-over-steps plot).")
    face_n = luigi.IntParameter(default=_EVAL["face_n"], description="Samples checked for a face by the dlib "
                                                                     "detector and 68-point predictor (0: skip).")
    msssim_pairs = luigi.IntParameter(default=_EVAL["msssim_pairs"],
                                      description="Random sample pairs for MS-SSIM diversity (0: skip).")
    kid_subsets = luigi.IntParameter(default=_EVAL["kid_subsets"], description="KID: number of random subsets.")
    kid_subset_size = luigi.IntParameter(default=_EVAL["kid_subset_size"],
                                         description="KID: subset size (capped at n).")
    weights = luigi.ChoiceParameter(default=_EVAL["weights"], choices=("", "generator", "ema"),
                                    description="Which weights: empty = what the run exported (its model "
                                                "card), generator = the raw weights, ema = their average.")
    batch_size = luigi.IntParameter(default=_EVAL["batch_size"], significant=False,
                                    description="Images per feature-network batch.")
    training_n = luigi.IntParameter(default=_EVAL["training_n"], significant=False,
                                    description="Samples for the FID/KID training computes every "
                                                "eval_every steps (eval.csv); kept small, it runs in training.")
    fid_resamples = luigi.IntParameter(default=_EVAL["fid_resamples"], significant=False,
                                       description="Bootstrap resamples of the real set for the spread of the "
                                                   "reported FID (fid_std; 0: none). Adds a figure, changes none.")

    def validate(self):
        with settings_of(self):
            self.settings()  # refuse bad settings before anything runs

    def settings(self) -> EvalSettings:
        return EvalSettings(**{f.name: getattr(self, f.name) for f in fields(EvalSettings)})

    def folder(self) -> Path:
        return processed_dir("evaluations", self.run_dataset(), f"{self.run_variant()}-{version(self)}")

    def output(self):
        return {"json": target(str(self.folder() / "report.json")),
                "md": target(str(self.folder() / "report.md"))}

    def complete(self):
        if self.output()["json"].exists():
            return True
        from model.eval.metrics import check_feature_network
        check_feature_network(self.feature_network or None)  # fail while scheduling, before training
        return super().complete()

    def records_folder(self) -> Path:
        """The records to evaluate against: ``--records``, else those of the run's card."""
        folder = Path(self.records or self.card().dataset.get("records", ""))
        if not (folder / "manifest.json").exists():
            raise FileNotFoundError(f"EvaluateGenerator: records folder {str(folder)!r} not found (the run's "
                                    f"model card names it): build the records here and pass "
                                    f"--EvaluateGenerator-records <records version folder>")
        return folder

    def run(self):
        from model.eval.evaluation import evaluate_run, record_evaluation

        bars: dict[str, Progress] = {}

        def progress(what: str, done: int, total: int) -> None:
            if what not in bars:
                bars[what] = Progress(self, total, what, every=self.batch_size)
            bars[what](done)

        def status(text: str) -> None:
            logger.info("EvaluateGenerator %s: %s", self.run_dataset(), text)
            self.set_status_message(text)

        run_dir = self.run_folder()
        with atomic_dir(self.folder()) as tmp:
            report = evaluate_run(run_dir, self.records_folder(), self.settings(), tmp,
                                  processed_dir("evaluations", self.run_dataset(), "reference"), status, progress,
                                  extra={"params": self.to_str_params(only_significant=True),
                                         "lineage": describe(self)})
        for bar in bars.values():
            bar.close()
        record_evaluation(run_dir, report, self.output()["json"].path)
        status(f"FID {report['fid']:.2f} at step {report['steps']} ({report['split']}, n={report['n']})")


class CompareRuns(luigi.Task):
    """A table of several runs' evaluations: ``processed/evaluations/compare.md`` and
    ``compare.json`` (data set, variant, steps, precision, FID, KID, face rate, MS-SSIM
    and the parameters that differ). Re-runs whenever the set of reports changes."""
    reports = luigi.Parameter(default="", description="report.json paths or globs, comma separated; "
                                                      "empty: every report under processed/evaluations.")

    def paths(self) -> list[str]:
        patterns = [p.strip() for p in self.reports.split(",") if p.strip()] or \
                   [str(processed_dir("evaluations", "**", "report.json"))]
        found = sorted({os.path.normpath(f) for p in patterns for f in glob.glob(p, recursive=True)})
        if not found:
            raise FileNotFoundError(f"CompareRuns: no report.json matches {patterns}: run "
                                    f"`luigi --module tasks EvaluateGenerator --dataset NAME --local-scheduler` "
                                    f"first, or set --CompareRuns-reports")
        return found

    def output(self):
        root = processed_dir("evaluations")
        return {"md": target(str(root / "compare.md")),
                "json": target(str(root / "compare.json"))}

    def _inputs(self) -> list[list[str]]:
        return [[p, hashlib.sha256(Path(p).read_bytes()).hexdigest()[:16]] for p in self.paths()]

    def complete(self):
        return (Path(self.output()["md"].path).exists()
                and report_records(self.output()["json"].path, "inputs", self._inputs()))

    def run(self):
        from model.eval.evaluation import compare_reports

        inputs = self._inputs()
        reports = [(p, json.loads(Path(p).read_text())) for p, _ in inputs]
        table, markdown = compare_reports(reports, str(Path(self.output()["md"].path).parent))
        with atomic_file(self.output()["md"].path, "w") as fh:
            fh.write(markdown)
        write_json(self.output()["json"].path, {**table, "inputs": inputs})
