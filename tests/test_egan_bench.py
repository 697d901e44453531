"""bench/egan.py: what its correlations say about control."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import egan  # noqa: E402


def test_control_inside_every_face_but_small_against_the_spread_between_faces():
    values = np.linspace(0, 1, 11)
    offsets = np.random.default_rng(0).normal(0, 1.0, (200, 1))  # faces differ far more than c moves them
    result = egan.correlations(values, offsets + 0.2 * values)
    assert result["rho_within_z"] == 1.0 and result["rho"] < 0.2
    assert result["mean_by_c"] == pytest.approx(np.round(offsets.mean() + 0.2 * values, 4), abs=1e-4)


def test_control_that_dominates_the_spread_is_near_one_and_no_change_counts_as_zero():
    values = np.linspace(0, 5, 11)
    offsets = np.random.default_rng(1).normal(0, 0.01, (100, 1))
    assert egan.correlations(values, offsets + values)["rho"] > 0.99
    flat = egan.correlations(values, np.ones((4, 11)))
    assert flat["rho_within_z"] == 0.0
    falling = egan.correlations(values, offsets - values)
    assert falling["rho"] < -0.99 and falling["rho_within_z"] == -1.0


def test_sweep_maxima_are_checked():
    with pytest.raises(SystemExit):
        egan.main(["--data", "x", "--sweep-max", "1,a"])
    with pytest.raises(SystemExit):
        egan.main(["--data", "x", "--sweep-max", "0"])


def test_what_control_costs_is_measured_against_the_plain_dcgan():
    quality = {"dcgan": {"fid": 100.0, "ms_ssim": 0.25}, "real": {"ms_ssim": 0.23},
               "egan brightness": {"fid": 125.0, "ms_ssim": 0.29},   # within both limits
               "egan sharpness": {"fid": 252.0, "ms_ssim": 0.30},    # FID 2.5x
               "egan Male": {"fid": 110.0, "ms_ssim": 0.66}}         # collapsed: pairs alike
    cost = egan.control_cost(quality)
    assert set(cost) == {"egan brightness", "egan sharpness", "egan Male"}
    assert cost["egan brightness"] == {"fid_ratio": 1.25, "ms_ssim_gap": 0.04, "met": True}
    assert cost["egan sharpness"]["met"] is False and cost["egan sharpness"]["fid_ratio"] == 2.52
    assert cost["egan Male"]["met"] is False and cost["egan Male"]["ms_ssim_gap"] == 0.41
    assert egan.control_cost({"egan brightness": {"fid": 1.0, "ms_ssim": 0.2}}) == {}  # no baseline, no cost
