"""The training budget (TrainConfig.max_minutes, model/train/budget.py): the loop times its
first steps and fixes the step count once, records it in budget.json and the model card,
and a resumed run ends at the same count. The clock is injected: a fake one advances one
second per reading, so the counts below are exact, whatever the machine's load."""
from __future__ import annotations

import csv
import itertools
import json
import time

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from model.card import read_card  # noqa: E402
from model.train.budget import (  # noqa: E402
    BUDGET_FILE,
    MEASURE,
    MEASURE_SHARE,
    RESERVE,
    WARMUP,
    BudgetPlanner,
    planned_seconds,
    steps_within,
)
from model.train.loop import TrainConfig, train  # noqa: E402

TINY = dict(base_width=8, batch_size=4, steps=100, checkpoint_every=4, log_every=1, seed=3, resolution=32,
            precision="float32", max_minutes=1.0)


def _dataset(seed=0):
    tf.random.set_seed(seed)  # as model.train.data does: the order is the seed's alone
    images = np.random.default_rng(seed).uniform(-1, 1, (16, 32, 32, 3)).astype("float32")
    return tf.data.Dataset.from_tensor_slices(images).shuffle(16, seed=seed).repeat().batch(4)


def seconds(per_reading=1.0, first=0.0):
    """A fake clock: ``first`` at its first reading, then ``per_reading`` seconds more at each."""
    readings = itertools.count()
    return lambda: first + per_reading * next(readings)


class Interrupted(Exception):
    pass


def interrupt_at(step):
    def progress(done, total, scalars):
        if done == step:
            raise Interrupted(f"killed at step {done}")
    return progress


def _weights(run_dir):
    return keras.models.load_model(run_dir / "generator.keras", compile=False).get_weights()


def _metric_steps(run_dir):
    return [int(r[0]) for r in list(csv.reader(open(run_dir / "metrics.csv")))[1:]]


def test_steps_within_fills_the_rest_of_the_budget_within_the_cap():
    assert steps_within(60, 20, 10, 2.0, 1000) == 30           # 40 s left at 2 s a step
    assert steps_within(60, 20, 10, 3.0, 1000) == 23           # whole steps only
    assert steps_within(60, 20, 10, 0.01, 800) == 800          # the cap (--steps) holds
    assert steps_within(60, 70, 10, 1.0, 800) == 10            # spent: stop where it is


def test_the_plan_can_be_recomputed_from_what_budget_json_records():
    # Irregular clock readings: the step count follows from the file's own (rounded) figures,
    # so a reader of budget.json gets the same count, never one either side.
    rng = np.random.default_rng(0)
    for _ in range(300):
        ticks = iter(np.cumsum(rng.uniform(0.0, 2 * rng.uniform(0.001, 0.05), 10_000)).tolist())
        planner = BudgetPlanner(rng.uniform(0.01, 0.2), 100_000, 0, 0.0, ticks.__next__)
        plan = next(p for p in map(planner.after_step, itertools.count(1)) if p is not None)
        if plan["seconds_per_step"] is not None:
            assert plan["steps"] == steps_within(planned_seconds(plan["max_minutes"]), plan["elapsed"],
                                                 plan["planned_at"], plan["seconds_per_step"], 100_000), plan


@pytest.fixture(scope="module")
def budget_run(tmp_path_factory):
    """``TINY``'s one-minute budget run, uninterrupted, one second per clock reading: its folder
    and train()'s result (trained once; the tests below only read it)."""
    run = tmp_path_factory.mktemp("budget") / "budget"
    return run, train(TrainConfig(**TINY), _dataset(), run, clock=seconds(1.0))


def test_the_budget_fixes_the_step_count_and_the_card_records_it(budget_run, tmp_path):
    budget, result = budget_run
    # A reading at the start (t=0), one per step after: steps 10..30 timed at 1 s each (20 s,
    # more than a tenth of the budget), 30 s used of the 57 s planned into (60 s less the
    # reserve): 27 more steps.
    assert (WARMUP, MEASURE, MEASURE_SHARE, RESERVE, planned_seconds(1.0)) == (10, 20, 0.1, 0.05, 57.0)
    plan = json.loads((budget / BUDGET_FILE).read_text())
    assert plan == {"max_minutes": 1.0, "steps": 57, "cap": 100, "seconds_per_step": 1.0,
                    "measured": [10, 30], "planned_at": 30, "elapsed": 30.0}
    card = read_card(budget)
    assert card.steps == 57 and card.training["budget"] == plan and card.training["max_minutes"] == 1.0
    assert result["step"] == 57 and result["budget"] == plan
    assert _metric_steps(budget) == list(range(1, 58))
    assert (budget / "progress" / "step-0000057.png").is_file()
    assert tf.train.latest_checkpoint(str(budget / "ckpt")).endswith("ckpt-57")

    # Deterministic given its step count: the same run as --steps 57 without a budget.
    train(TrainConfig(**{**TINY, "steps": 57, "max_minutes": 0.0}), _dataset(), tmp_path / "plain")
    assert "budget" not in read_card(tmp_path / "plain").training
    assert not (tmp_path / "plain" / BUDGET_FILE).exists()
    for a, b in zip(_weights(budget), _weights(tmp_path / "plain")):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_a_run_resumed_after_the_choice_ends_at_the_chosen_step(budget_run, tmp_path):
    with pytest.raises(Interrupted):  # chosen at step 30 (57 steps), killed at 34, checkpoint 32
        train(TrainConfig(**TINY), _dataset(), tmp_path / "run", progress=interrupt_at(34), clock=seconds(1.0))
    assert json.loads((tmp_path / "run" / BUDGET_FILE).read_text())["steps"] == 57
    assert not (tmp_path / "run" / "generator.keras").exists()
    # Resumed on a machine ten times faster: the count stays the one chosen.
    train(TrainConfig(**TINY), _dataset(), tmp_path / "run", clock=seconds(0.1))
    assert read_card(tmp_path / "run").steps == 57
    assert _metric_steps(tmp_path / "run") == list(range(1, 58))

    # The same weights as the run that was never interrupted.
    for a, b in zip(_weights(tmp_path / "run"), _weights(budget_run[0])):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_a_run_resumed_before_the_choice_measures_again(tmp_path):
    with pytest.raises(Interrupted):  # killed at step 14, before the choice; checkpoint at 12
        train(TrainConfig(**TINY), _dataset(), tmp_path, progress=interrupt_at(14), clock=seconds(1.0))
    assert not (tmp_path / BUDGET_FILE).exists()
    train(TrainConfig(**TINY), _dataset(), tmp_path, clock=seconds(1.0))
    # From step 12: 13..22 untimed, 22..42 timed (t = 10..30), 27 s left.
    plan = json.loads((tmp_path / BUDGET_FILE).read_text())
    assert (plan["measured"], plan["steps"]) == ([22, 42], 69)
    assert read_card(tmp_path).steps == 69


def test_a_budget_spent_before_the_timing_ends_the_run_at_once(tmp_path):
    # Start-up took 100 s of a 60 s budget: the run stops after its first step.
    readings = iter([0.0] + [100.0 + i for i in range(200)])
    train(TrainConfig(**TINY), _dataset(), tmp_path / "spent", clock=lambda: next(readings))
    assert read_card(tmp_path / "spent").steps == 1
    assert json.loads((tmp_path / "spent" / BUDGET_FILE).read_text())["seconds_per_step"] is None
    # A slow machine: at 5 s a step the budget ends right after the warm-up; the count is
    # fixed at the first timed step (t = 55 of the 57 s: no whole step left).
    train(TrainConfig(**TINY), _dataset(), tmp_path / "slow", clock=seconds(5.0))
    plan = json.loads((tmp_path / "slow" / BUDGET_FILE).read_text())
    assert (plan["steps"], plan["planned_at"], plan["measured"]) == (11, 11, [10, 11])
    # Two seconds a step: the timing (from t = 20) stops when no more than MEASURE steps are left.
    train(TrainConfig(**TINY), _dataset(), tmp_path / "short", clock=seconds(2.0))
    plan = json.loads((tmp_path / "short" / BUDGET_FILE).read_text())
    assert (plan["steps"], plan["planned_at"]) == (28, 10 + 1)


def test_a_real_clock_stops_a_long_run_inside_a_small_budget(tmp_path):
    # A 3-second budget on a cap of 100000 steps: whatever this machine's speed, far fewer are trained.
    start = time.monotonic()
    train(TrainConfig(**{**TINY, "steps": 100_000, "max_minutes": 0.05, "checkpoint_every": 1000}),
          _dataset(), tmp_path)
    took = time.monotonic() - start
    plan = json.loads((tmp_path / BUDGET_FILE).read_text())
    assert 1 <= plan["steps"] < 100_000 and read_card(tmp_path).steps == plan["steps"]
    if plan["seconds_per_step"] is not None:  # the choice is the rest of the budget at the measured speed
        assert plan["steps"] == steps_within(planned_seconds(0.05), plan["elapsed"], plan["planned_at"],
                                             plan["seconds_per_step"], 100_000), plan
    assert took < 120, took  # generous: 3 s of training plus start-up and the export, on a loaded machine


def test_max_minutes_is_validated_and_off_by_default():
    assert TrainConfig().max_minutes == 0
    with pytest.raises(ValueError, match="max_minutes"):
        TrainConfig(max_minutes=-1)


def test_train_dcgan_passes_its_budget_and_keeps_the_steps_without_one():
    import tasks

    default = tasks.TrainDCGAN()
    assert default.max_minutes == 0 and default.config(resolution=64, channels=3).max_minutes == 0
    budget = tasks.TrainDCGAN(max_minutes=5.0, steps=800)
    config = budget.config(resolution=64, channels=3)
    assert (config.max_minutes, config.steps) == (5.0, 800)
    assert budget.run_dir() != tasks.TrainDCGAN(steps=800).run_dir()  # a budget run is its own run
