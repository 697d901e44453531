"""TuneGAN and its search (model/eval/tuning.py): trials of a space, selection on the validation
split and the reported figure on the test split, never both on one split, and finished
trials found instead of trained again (real Luigi scheduler, TensorFlow and dlib on a tiny
sample; a small random-weight .keras feature network stands in for the Inception)."""
from __future__ import annotations

import json
from pathlib import Path

import luigi
import pytest
from luigi.execution_summary import LuigiStatusCode

from model.eval.tuning import expand_space, rank


def test_grid_takes_every_combination_or_a_seeded_subset():
    trials = expand_space({"lr": [1e-4, 2e-4], "ema": [0, 0.999], "augment": ["", "translation"]})
    assert len(trials) == 8 and len({repr(sorted(t.items())) for t in trials}) == 8
    assert trials[0] == {"augment": "", "ema": 0, "lr": 1e-4}  # settings sorted, values in order
    subset = expand_space({"lr": [1e-4, 2e-4], "ema": [0, 0.999]}, trials=3, seed=1)
    assert len(subset) == 3 and subset == expand_space({"lr": [1e-4, 2e-4], "ema": [0, 0.999]}, trials=3, seed=1)
    assert all(t in expand_space({"lr": [1e-4, 2e-4], "ema": [0, 0.999]}) for t in subset)


def test_random_search_draws_distinct_seeded_trials_in_range():
    space = {"lr": {"log_uniform": [1e-5, 1e-3]}, "beta1": {"uniform": [0.0, 0.9]}, "batch_size": [32, 64]}
    trials = expand_space(space, "random", trials=6, seed=3)
    assert trials == expand_space(space, "random", trials=6, seed=3)
    assert trials != expand_space(space, "random", trials=6, seed=4)
    assert len({repr(sorted(t.items())) for t in trials}) == 6
    for t in trials:
        assert 1e-5 <= t["lr"] <= 1e-3 and 0 <= t["beta1"] <= 0.9 and t["batch_size"] in (32, 64)
        assert t["lr"] == float(f"{t['lr']:.3g}")  # readable, repeatable values


@pytest.mark.parametrize("space, search, trials, message", [
    ({}, "grid", 0, "search space is empty"),
    ({"steps": [10, 20]}, "grid", 0, "'steps' cannot be tuned"),
    ({"lr": {"log_uniform": [1e-5, 1e-3]}}, "grid", 0, "needs a list of values"),
    ({"lr": {"log_uniform": [0, 1e-3]}}, "random", 2, "bounds must be"),
    ({"lr": [1e-4]}, "random", 0, "trials must be >= 1 for a random search"),
    ({"ema": [0.5, 1.5]}, "grid", 0, "ema must be in"),
    ({"augment": ["blur"]}, "grid", 0, "unknown transform"),
    ({"lr": 0.1}, "grid", 0, "must be a list of values"),
])
def test_bad_search_spaces_are_one_clear_error(space, search, trials, message):
    with pytest.raises(ValueError, match=message):
        expand_space(space, search, trials)


def test_shared_settings_are_the_unsearched_settings_off_their_defaults():
    from dataclasses import asdict

    from model.config import TrainConfig
    from model.eval.tuning import shared_settings
    training = asdict(TrainConfig(batch_size=32, ema=0.5, augment="cutout", steps=7, checkpoint_every=3))
    assert shared_settings(training, ["ema"]) == {"batch_size": 32, "augment": "cutout"}


def test_rank_is_best_first():
    scores = [{"fid": 3.0, "kid": 0.1}, {"fid": 1.0, "kid": 0.3}, {"fid": 2.0, "kid": 0.2}]
    assert [s["fid"] for s in rank(scores)] == [1.0, 2.0, 3.0]
    assert [s["kid"] for s in rank(scores, "kid")] == [0.1, 0.2, 0.3]


def test_selection_and_reported_figure_never_share_a_split(luigi_config):
    import tasks
    from tasks.errors import ConfigError
    with pytest.raises(ConfigError, match=r"\[TuneGAN\] report_split = 'test': .*not selected on.*"
                                          r"--TuneGAN-report-split"):
        tasks.TuneGAN(space={"lr": [1e-4]}, select_split="test", report_split="test")
    with pytest.raises(ConfigError, match=r"\[TuneGAN\] space = .*'variant' cannot be tuned"):
        tasks.TuneGAN(space={"variant": ["dcgan"]})
    with pytest.raises(ConfigError, match=r"\[TuneGAN\] trials = 0: must be >= 1 for a random search"):
        tasks.TuneGAN(space={"lr": [1e-4]}, search="random")
    with pytest.raises(ConfigError, match=r"\[TuneGAN\] minutes = 1.0: cannot be set together with steps"):
        tasks.TuneGAN(space={"lr": [1e-4]}, steps=5, minutes=1.0)
    tune = tasks.TuneGAN(space={"lr": [1e-4, 2e-4]}, steps=3)
    assert {e.split for e in tune.requires()} == {"validation"}
    assert not any(e.checkpoints for e in tune.requires())


def test_a_trial_is_the_same_run_as_the_training_task_with_those_settings(luigi_config):
    import tasks
    from tasks.tune import trial_task
    luigi_config("TrainDCGAN", "steps", 60)
    assert trial_task("sample", "dcgan", {"ema": 0.999}, 60).run_dir() == tasks.TrainDCGAN().run_dir()
    assert trial_task("sample", "dcgan", {"ema": 0}, 60).run_dir() == tasks.TrainDCGAN(ema=0.0).run_dir()
    assert trial_task("sample", "dcgan", {"lr": 0.0002}, 60).run_dir() == \
        tasks.TrainDCGAN(lr=0.0002).run_dir() != tasks.TrainDCGAN().run_dir()
    assert trial_task("sample", "dcgan", {"ema": 0.5}, 7).run_dir() == tasks.TrainDCGAN(ema=0.5, steps=7).run_dir()
    # Every variant: its own training task (TrainEGAN for egan, with its own parameters kept).
    egan = trial_task("sample", "egan", {"lr": 0.0001, "augment": "cutout"}, 5)
    assert type(egan) is tasks.TrainEGAN and (egan.lr, egan.augment, egan.steps) == (0.0001, "cutout", 5)
    assert egan.run_dir() == tasks.TrainEGAN(lr=0.0001, augment="cutout", steps=5).run_dir()
    assert tasks.TuneGAN(variant="egan", space={"ema": [0, 0.999]}, steps=3).requires()[0].variant == "egan"


@pytest.fixture
def tiny(luigi_config, tiny_feature_network):
    network = tiny_feature_network
    luigi_config("Sample", "n", 40)
    luigi_config("BuildTFRecords", "splits", "train=0.5,validation=0.25,test=0.25")
    for key, value in (("batch_size", 4), ("base_width", 8), ("checkpoint_every", 1), ("precision", "float32")):
        luigi_config("TrainDCGAN", key, value)
    for key, value in (("n", 16), ("feature_network", network), ("face_n", 4), ("msssim_pairs", 10),
                       ("kid_subsets", 5)):
        luigi_config("EvaluateGenerator", key, value)
    return luigi_config


@pytest.mark.slow
def test_tune_selects_on_validation_reports_on_test_and_reuses_trials(tiny, started_tasks):
    import tasks

    tune = tasks.TuneGAN(space={"lr": [1e-4, 4e-4]}, steps=2)
    result = luigi.build([tune], local_scheduler=True, workers=1, detailed_summary=True)
    assert result.status == LuigiStatusCode.SUCCESS, result.summary_text
    report = json.loads(Path(tune.output()["json"].path).read_text())
    trials = report["trials"]
    assert sorted(t["params"]["lr"] for t in trials) == [1e-4, 4e-4]
    assert [t["split"] for t in trials] == ["validation", "validation"]
    assert trials[0]["fid"] <= trials[1]["fid"] and report["winner"] == trials[0]
    # The reported figure: the winner alone, on the test split, from a report of its own.
    assert report["test"]["split"] == "test" and report["test"]["report"] != report["winner"]["report"]
    test_report = json.loads(Path(report["test"]["report"]).read_text())
    val_report = json.loads(Path(report["winner"]["report"]).read_text())
    assert test_report["run_dir"] == val_report["run_dir"] == report["winner"]["run"]
    assert test_report["split"] == "test" and val_report["split"] == "validation"
    assert report["test"]["fid"] == test_report["fid"] != val_report["fid"]
    evaluated = [json.loads(p.read_text()) for p in Path(tune.output()["json"].path).parents[3].glob(
        "evaluations/sample/*/report.json")]
    assert sorted(r["split"] for r in evaluated) == ["test", "validation", "validation"]  # no test for a loser
    folder = Path(tune.output()["json"].path).parent
    card = json.loads((folder / "winner_card.json").read_text())
    assert card == json.loads((Path(report["winner"]["run"]) / "model_card.json").read_text())
    assert card["training"]["lr"] == report["winner"]["params"]["lr"] and card["steps"] == 2
    markdown = (folder / "tuning.md").read_text()
    assert "| 1 (winner) |" in markdown and "## Winner on the `test` split" in markdown
    # What every trial shares beyond the search (luigi.cfg / command line), stated with the table.
    # (TrainDCGAN's own defaults too: its ema and augment are a recipe's, not TrainConfig's.)
    assert report["shared"] == {"batch_size": 4, "base_width": 8, "precision": "float32",
                                "ema": 0.999, "augment": "translation,cutout,color"}
    assert "`base_width=8`" in markdown and "`batch_size=4`" in markdown

    # A wider search trains and scores only the new trial.
    started_tasks.clear()
    wider = tasks.TuneGAN(space={"lr": [1e-4, 4e-4, 2e-4]}, steps=2)
    assert luigi.build([wider], local_scheduler=True, workers=1)
    trained = [t for t in started_tasks if t.startswith("TrainDCGAN")]
    scored = [t for t in started_tasks if t.startswith("EvaluateTrial")]
    assert len(trained) == 1 and 1 <= len(scored) <= 2  # the new trial (and the test split if it wins)
    assert not any(t.startswith(("AlignShard", "RecordShard", "Sample")) for t in started_tasks)
    assert len(json.loads(Path(wider.output()["json"].path).read_text())["trials"]) == 3

    # A time budget: each trial gets the steps that fill it at its speed, measured once and kept
    # (one trial: a second would add a trace, a training and a score, and no new path).
    timed = tasks.TuneGAN(space={"lr": [4e-4]}, minutes=0.02)
    assert luigi.build([timed], local_scheduler=True, workers=1)
    kept = json.loads((Path(timed.output()["json"].path).parents[1] / "step_seconds.json").read_text())
    report = json.loads(Path(timed.output()["json"].path).read_text())
    assert len(kept) == 1 and report["minutes"] == 0.02
    assert [t["steps"] for t in report["trials"]] == [max(1, int(1.2 / s)) for s in kept.values()]
    Path(timed.output()["json"].path).unlink()  # planned again: the same trials, all found done
    started_tasks.clear()
    assert luigi.build([tasks.TuneGAN(space={"lr": [4e-4]}, minutes=0.02)], local_scheduler=True)
    assert [t.split("_")[0] for t in started_tasks] == ["TuneGAN"]


@pytest.mark.slow
def test_records_without_a_validation_split_fail_the_trial(tiny):
    import tasks

    tiny("BuildTFRecords", "splits", "train=0.8,test=0.2")
    failures = []
    handler = luigi.Task.event_handler(luigi.Event.FAILURE)(lambda task, exc: failures.append(str(exc)))
    try:
        tune = tasks.TuneGAN(space={"lr": [1e-4]}, steps=1)
        assert not luigi.build([tune], local_scheduler=True, workers=1)
    finally:
        luigi.Task._event_callbacks[luigi.Task][luigi.Event.FAILURE].discard(handler)
    assert any("no 'validation' split" in f for f in failures), failures
    assert not Path(tune.output()["json"].path).exists()
