"""Tuning training settings: TuneGAN trains the trials of a search space as ordinary training
runs, scores each on the validation split, re-scores only the winner on the test split.

The search itself (trials, ranking, table) is model/eval/tuning.py; docs/training.md
("Tuning") shows a run.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import luigi

from model.eval.evaluation import SPLIT_ORDER
from model.eval.tuning import METRICS, SEARCHES, expand_space
from model.train.recipes import RECIPES, recipe
from model.variants import VARIANTS
from pipeline.atomic import atomic_dir, write_json
from tasks.common import processed_dir, version
from tasks.errors import Checked, at_least, check, settings_of
from tasks.evaluate import EvaluateGenerator
from tasks.records import BuildTFRecords
from tasks.storage import target
from tasks.train import training_task


def _plain(value):
    """A Luigi DictParameter value (frozen) as plain JSON data."""
    return json.loads(luigi.DictParameter().serialize(value))


def trial_task(dataset: str, variant: str, params: dict, steps: int):
    """The training run of one trial: the data set's usual training task (``TrainDCGAN`` for
    dcgan, else ``TrainGAN``, with their luigi.cfg settings) with ``params`` and ``steps``;
    the same run as any other task with these settings (its folder is named by them)."""
    base = training_task(dataset, variant)
    cls = type(base)
    declared = dict(cls.get_params())
    kwargs = dict(base.param_kwargs)
    for name, value in {**params, "steps": steps}.items():
        # Parse as the command line would, so that 0 and 0.0 name the same run.
        text = value if isinstance(value, str) else json.dumps(value)
        kwargs[name] = declared[name].parse(text)
    kwargs["checkpoint_every"] = max(1, steps // 4)  # not part of the run's identity
    return cls(**kwargs)


class EvaluateTrial(EvaluateGenerator):
    """``EvaluateGenerator`` of one tuning trial: the training run of ``trial`` (its settings
    and steps, see :func:`trial_task`) against exactly ``split``: unlike EvaluateGenerator, a
    missing split is an error, never a fallback to another split."""
    trial = luigi.DictParameter(description="The trial's training settings (TrainGAN parameters).")
    trial_steps = luigi.IntParameter(description="The trial's training steps.")

    def requires(self):
        return trial_task(self.dataset, self.variant, _plain(self.trial), self.trial_steps)

    def run(self):
        from model.eval.evaluation import split_sizes
        sizes = split_sizes(self.records_folder())
        if sizes.get(self.split, 0) < 2:
            raise ValueError(f"EvaluateTrial: the records {self.records_folder()} have no {self.split!r} split "
                             f"with 2 or more examples ({sizes}); tuning selects on one split and reports "
                             f"on another: build records with both, e.g. --BuildTFRecords-splits "
                             f"train=0.8,validation=0.1,test=0.1")
        super().run()


class TuneGAN(Checked, luigi.Task):
    """A search over training settings: every trial of ``space`` (``search`` grid or random,
    ``trials``, ``seed``) trained for ``steps`` steps on top of ``recipe``, scored on
    ``select_split`` by ``metric``; the best trial alone is scored on ``report_split``.

    Trials are ordinary training runs (``TrainDCGAN`` / ``TrainGAN`` folders under
    processed/models): several workers against one luigid share them, a finished trial is
    found and never trained or scored again, and any trial is also a run of its own (export
    it, evaluate it). Output ``processed/tuning/{dataset}/{variant}-{version}/``:
    ``tuning.json`` and ``tuning.md`` (every trial's settings and validation figures, the
    winner's test figures) and ``winner_card.json`` (the winner's model card).
    """
    dataset = luigi.Parameter(default="sample", description="Data set to tune on.")
    variant = luigi.ChoiceParameter(default="dcgan", choices=tuple(VARIANTS), description="GAN variant.")
    space = luigi.DictParameter(description='Settings and their values, e.g. \'{"lr": [0.0001, 0.0002], '
                                            '"ema": [0, 0.999]}\'; for a random search also '
                                            '{"log_uniform": [low, high]} or {"uniform": [low, high]}.')
    search = luigi.ChoiceParameter(default="grid", choices=SEARCHES,
                                   description="grid: every combination (or a seeded subset of trials); "
                                               "random: trials seeded draws.")
    trials = luigi.IntParameter(default=0, description="Number of trials (grid: 0 = all of it).")
    seed = luigi.IntParameter(default=0, description="Seed of the random draws (not of the training runs).")
    steps = luigi.IntParameter(default=0, description="Training steps of each trial (0: the training task's "
                                                      "own steps).")
    minutes = luigi.FloatParameter(default=0.0,
                                   description="Training wall-clock minutes per trial instead of steps (0: off): "
                                               "steps = minutes / the trial's seconds per step, measured once "
                                               "on this machine and kept in processed/tuning/<dataset>/"
                                               "step_seconds.json; the trials are then planned in run().")
    recipe = luigi.ChoiceParameter(default="", choices=("", *RECIPES),
                                   description="Settings every trial starts from (model/train/recipes.py); empty: "
                                               "the training task's own (its defaults, luigi.cfg, the command "
                                               "line).")
    metric = luigi.ChoiceParameter(default="fid", choices=METRICS, description="Selection figure (lower wins).")
    select_split = luigi.ChoiceParameter(default="validation", choices=SPLIT_ORDER,
                                         description="Split the trials are scored and selected on.")
    report_split = luigi.ChoiceParameter(default="test", choices=SPLIT_ORDER,
                                         description="Split the winner alone is scored on (the reported "
                                                     "figure); never the selection split.")

    def validate(self):
        """Refuse bad settings when the task is built, before anything runs."""
        check(self, "report_split", self.report_split != self.select_split,
              "is the select_split too: the winner's reported figure must come from a split it was not "
              "selected on (e.g. select on validation, report on test)")
        at_least(self, "steps", 0, "0 = the training task's steps")
        at_least(self, "minutes", 0, "0 = off")
        check(self, "minutes", not (self.steps and self.minutes),
              "cannot be set together with steps: give a step budget (--steps) or a time budget "
              "(--minutes), not both")
        with settings_of(self, "space"):
            self.trial_params()

    def base(self) -> dict:
        """The settings of ``recipe`` (none when it is empty)."""
        return recipe(self.recipe) if self.recipe else {}

    def trial_params(self) -> list[dict]:
        return expand_space(_plain(self.space), self.search, self.trials, self.seed, self.base())

    def trial_steps(self) -> list[int]:
        """Each trial's training steps: ``steps`` (or the training task's), or with ``minutes``
        what fills them at the trial's measured speed (:meth:`step_seconds`)."""
        params = self.trial_params()
        if not self.minutes:
            return [self.steps or training_task(self.dataset, self.variant).steps] * len(params)
        return [max(1, int(self.minutes * 60 / s)) for s in self.step_seconds(params)]

    def step_seconds(self, params: list[dict]) -> list[float]:
        """Seconds per training step of each trial on this machine: measured once
        (model.train.loop.step_seconds, interleaved) and kept, so that a re-run, or a worker sharing
        ``processed/``, plans the very same trials (and finds them done)."""
        from model.eval.tuning import cached_step_seconds

        configs = [trial_task(self.dataset, self.variant, {**self.base(), **p}, 1).config() for p in params]
        folder = BuildTFRecords(dataset=self.dataset).folder()

        def measure(missing):
            from model.train.data import image_dataset
            from model.train.loop import step_seconds

            self.set_status_message(f"timing a training step of {len(missing)} trial(s)")
            return step_seconds(missing, lambda c: image_dataset(folder, "train", c.batch_size, c.shuffle_buffer,
                                                                 c.seed))

        return cached_step_seconds(processed_dir("tuning", self.dataset, "step_seconds.json"), configs, measure)

    def evaluation(self, params: dict, steps: int, split: str) -> EvaluateTrial:
        """The EvaluateTrial of trial ``params`` (on top of the recipe), trained ``steps``
        steps, on ``split``, with ``[EvaluateGenerator]``'s settings; the exported generator
        only (no checkpoints)."""
        settings = asdict(EvaluateGenerator(dataset=self.dataset).settings())
        settings.update(split=split, checkpoints=False)
        return EvaluateTrial(dataset=self.dataset, variant=self.variant, trial={**self.base(), **params},
                             trial_steps=steps, **settings)

    def evaluations(self, split: str) -> list[EvaluateTrial]:
        return [self.evaluation(p, s, split) for p, s in zip(self.trial_params(), self.trial_steps())]

    def requires(self):
        if self.minutes:  # the steps need a measurement on the records: planned in run()
            return BuildTFRecords(dataset=self.dataset)
        return self.evaluations(self.select_split)

    def folder(self) -> Path:
        return processed_dir("tuning", self.dataset, f"{self.variant}-{version(self)}")

    def output(self):
        return {"json": target(str(self.folder() / "tuning.json")),
                "md": target(str(self.folder() / "tuning.md"))}

    def run(self):
        from model.eval.tuning import rank, render_table, shared_settings, trial_score

        evaluations = self.evaluations(self.select_split)
        if self.minutes:
            yield evaluations  # dynamic: trained and scored now, by this worker's processes
        scores = [trial_score(params, evaluation.output()["json"].path, self.select_split)
                  for params, evaluation in zip(self.trial_params(), evaluations)]
        ranked = rank(scores, self.metric)
        winner = ranked[0]
        final = self.evaluation(winner["params"], winner["steps"], self.report_split)
        yield final  # scored after the selection, on a split the selection never saw
        test = json.loads(Path(final.output()["json"].path).read_text())
        if test["split"] != self.report_split or test["split"] == winner["split"]:
            raise ValueError(f"TuneGAN: the winner was scored on {test['split']!r}, expected "
                             f"{self.report_split!r}")
        space = _plain(self.space)
        card = json.loads((Path(winner["run"]) / "model_card.json").read_text())
        report = {
            "dataset": self.dataset, "variant": self.variant, "search": self.search, "seed": self.seed,
            "space": space, "searched": sorted(space), "base": self.base(), "recipe": self.recipe,
            "shared": shared_settings(card["training"], space),
            "steps": self.steps, "minutes": self.minutes,
            "steps_note": (f"{self.minutes} training minutes per trial" if self.minutes
                           else f"{self.trial_steps()[0]} steps per trial"),
            "metric": self.metric, "select_split": self.select_split, "report_split": self.report_split,
            "trials": ranked, "winner": winner,
            "test": {**{k: test[k] for k in ("fid", "kid", "face_detect_rate", "ms_ssim", "n", "split")},
                     "report": final.output()["json"].path},
        }
        with atomic_dir(self.folder()) as tmp:
            shutil.copyfile(Path(winner["run"]) / "model_card.json", tmp / "winner_card.json")
            (tmp / "tuning.md").write_text(render_table(report))
            write_json(tmp / "tuning.json", report)
