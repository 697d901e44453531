"""bench/egan.py: what its correlations say about control."""
from __future__ import annotations

import json
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


def test_the_baseline_recipe_is_one_the_project_has(capsys):
    with pytest.raises(SystemExit):
        egan.main(["--data", "x", "--baseline-recipe", "averaged"])
    assert "--baseline-recipe: invalid choice: 'averaged'" in capsys.readouterr().err


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


def test_a_steeper_mix_keeps_the_mix_at_the_middle_and_spreads_its_ends(tmp_path):
    """bench/egan_mix.py: the copy weighs c k times in the blur mix's logit, its bias moved so
    the mix at c = 0.5 is unchanged; the ends move apart; a run without the mix is refused."""
    import egan_mix
    import keras
    from test_egan import SMALL, _images

    from model.card import read_card
    from model.config import TrainConfig
    from model.train.loop import train

    run = tmp_path / "run"
    options = {"extractors": ["sharpness"], "target": "quantile", "c_distribution": "uniform",
               "c_lowpass": True, "c_lowpass_draft": True}
    train(TrainConfig(**SMALL, options=options), _images(), run)
    path = run / read_card(run).files["keras"]
    generator = keras.models.load_model(path, compile=False)
    kernel, bias = generator.get_layer("lowpass_mix").get_weights()
    kernel[0] = 0.15  # the weight a trained run's c has (docs/egan.md), not a 2-step run's ~0
    generator.get_layer("lowpass_mix").set_weights([kernel, bias])
    generator.save(path)

    before = egan_mix.steepened(run, 2.0, tmp_path / "x2")
    assert before["w_c"] == [0.15]
    steep = keras.models.load_model(tmp_path / "x2" / path.name, compile=False).get_layer("lowpass_mix").get_weights()
    np.testing.assert_allclose(steep[0][0], 0.3, rtol=1e-6)
    np.testing.assert_allclose(steep[0][1:], kernel[1:])  # the draft's edges weigh as before
    np.testing.assert_allclose(steep[1], bias - 0.5 * 0.15, rtol=1e-5)
    assert not (tmp_path / "x2" / "ckpt").exists()
    flat = egan_mix.mix_amounts(run, [0.0, 0.5, 1.0], 8, 0)
    twice = egan_mix.mix_amounts(tmp_path / "x2", [0.0, 0.5, 1.0], 8, 0)
    assert twice[1] == pytest.approx(flat[1], abs=1e-3)
    assert twice[0] < flat[0] < flat[2] < twice[2]

    plain = tmp_path / "plain"  # a card from before c_lowpass: its c has no mix
    plain.mkdir()
    card = json.loads((run / "model_card.json").read_text())
    for spec in card["inputs"]:
        spec.get("meta", {}).pop("c_lowpass", None)
    (plain / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(SystemExit):
        egan_mix.main(["--run", str(plain), "--no-fid"])
