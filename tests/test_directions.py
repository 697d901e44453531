"""Attribute directions in z (model/apps/directions.py): the fit, the drop rule, the lock, the file."""
from __future__ import annotations

import json

import numpy as np
import pytest

from model.apps.directions import FORMAT, fit_direction, fit_logistic, move, read_directions, write_directions


def test_logistic_regression_recovers_a_known_boundary():
    rng = np.random.default_rng(0)
    w_true = rng.normal(size=10)
    x = rng.normal(size=(4000, 10))
    y = (rng.uniform(size=4000) < 1 / (1 + np.exp(-(x @ w_true + 0.5)))).astype(float)
    w, b = fit_logistic(x, y, l2=1e-4)
    assert np.dot(w, w_true) / np.linalg.norm(w) / np.linalg.norm(w_true) > 0.98
    assert b == pytest.approx(0.5, abs=0.2)


def test_a_linear_attribute_is_found_and_a_random_one_is_not():
    rng = np.random.default_rng(1)
    z = rng.uniform(-1, 1, (5000, 100)).astype(np.float32)
    n_true = rng.normal(size=100)
    n_true /= np.linalg.norm(n_true)
    found = fit_direction(z, z @ n_true + rng.normal(0, 0.1, 5000))
    assert float(found["normal"] @ n_true) > 0.9 and np.linalg.norm(found["normal"]) == pytest.approx(1, abs=1e-5)
    assert found["accuracy"] > 0.9 and found["chance"] == 0.5
    assert found["scale"] == pytest.approx(np.sqrt(1 / 3), rel=0.05)  # std of z . n for uniform z
    assert found["n_train"] + found["n_holdout"] == 2500
    noise = fit_direction(z, rng.uniform(size=5000))
    assert noise["accuracy"] <= noise["chance"] + noise["margin"]


def test_a_lock_keeps_the_locked_attribute_while_another_moves():
    rng = np.random.default_rng(2)
    a = rng.normal(size=100)
    b = a + rng.normal(size=100)  # correlated attributes, as Male and Wearing_Lipstick are
    normals = np.stack([a / np.linalg.norm(a), b / np.linalg.norm(b)])
    z = rng.uniform(-1, 1, 100)
    scales = np.array([0.5, 0.7])
    free = move(z, normals, scales, [2.0, 0.0])
    assert (free - z) @ normals[0] == pytest.approx(1.0, abs=1e-5)   # 2 x scale 0.5 along its normal
    assert abs((free - z) @ normals[1]) > 0.3                         # and it drags the other along
    locked = move(z, normals, scales, [2.0, 0.0], locked=[False, True])
    assert (locked - z) @ normals[1] == pytest.approx(0.0, abs=1e-5)  # the locked one stays
    assert (locked - z) @ normals[0] > 0.3                            # the free one still moves
    both = move(z, normals, scales, [2.0, -1.0], locked=[False, True])
    assert (both - z) @ normals[1] == pytest.approx(-0.7, abs=1e-5)   # a locked attribute's own offset applies
    np.testing.assert_array_equal(move(z, normals, scales, [0.0, 0.0]), z.astype(np.float32))


def test_fit_directions_on_a_real_generator_keeps_brightness_and_drops_noise(tmp_path):
    from studio_runs import make_run

    run = make_run(tmp_path / "run", with_directions=True)
    d = read_directions(run, 100)
    assert d["format"] == FORMAT and d["samples"] == 1000 and d["size"] == 100
    assert [e["name"] for e in d["directions"]] == ["Brightness"]
    kept = d["directions"][0]
    assert kept["accuracy"] > kept["chance"] + 0.1 and len(kept["normal"]) == 100
    assert [e["name"] for e in d["dropped"]] == ["Noise"]
    assert "is not above chance" in d["dropped"][0]["reason"] and "normal" not in d["dropped"][0]


def test_read_directions_names_the_file_and_the_problem(tmp_path):
    assert read_directions(tmp_path) is None
    write_directions(tmp_path, {"format": FORMAT, "size": 3, "directions": [{"name": "Male", "normal": [1, 0]}]})
    with pytest.raises(ValueError, match=r"directions.json: direction 'Male' has 2 values, the model's z has 3"):
        read_directions(tmp_path)
    (tmp_path / "directions.json").write_text(json.dumps({"format": "other/1"}))
    with pytest.raises(ValueError, match="directions.json: format 'other/1'"):
        read_directions(tmp_path)
    (tmp_path / "directions.json").write_text("{")
    with pytest.raises(ValueError, match="directions.json is not valid JSON"):
        read_directions(tmp_path)
