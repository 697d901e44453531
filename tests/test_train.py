"""The training loop: every variable moves, checkpoints resume, divergence stops cleanly."""
from __future__ import annotations

import csv

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from model.train import DivergenceError, GANTrainer, TrainConfig, train  # noqa: E402

SMALL = dict(base_width=8, batch_size=4, steps=4, checkpoint_every=2, log_every=1, seed=3)


def _images(n=16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, (n, 64, 64, 3)).astype("float32")


def _dataset(seed=0):
    return tf.data.Dataset.from_tensor_slices(_images()).shuffle(16, seed=seed).repeat().batch(4)


def test_one_step_changes_every_trainable_variable():
    trainer = GANTrainer(TrainConfig(**SMALL))
    before = [v.numpy().copy() for v in trainer.generator.trainable_variables
              + trainer.discriminator.trainable_variables]
    out = trainer.train_step(tf.constant(_images(4)))
    after = [v.numpy() for v in trainer.generator.trainable_variables + trainer.discriminator.trainable_variables]
    assert all(not np.array_equal(a, b) for a, b in zip(before, after))
    assert set(out) == {"d_loss", "g_loss", "d_real", "d_fake", "d_acc_real", "d_acc_fake"}
    assert int(trainer.step.numpy()) == 1


def test_resume_continues_from_checkpoint(tmp_path):
    config = TrainConfig(**SMALL)
    train(config, _dataset(), tmp_path / "whole")

    # Same run, stopped after 2 steps (a checkpoint) and resumed.
    train(TrainConfig(**{**SMALL, "steps": 2}), _dataset(), tmp_path / "split")
    train(config, _dataset(), tmp_path / "split")

    rows = list(csv.reader(open(tmp_path / "split" / "metrics.csv")))
    assert [r[0] for r in rows[1:]] == ["1", "2", "3", "4"]
    whole = list(csv.reader(open(tmp_path / "whole" / "metrics.csv")))
    np.testing.assert_allclose(np.float64([r[1:] for r in rows[1:]]),
                               np.float64([r[1:] for r in whole[1:]]), rtol=1e-3, atol=1e-4)


def test_nan_stops_training_and_keeps_last_good_checkpoint(tmp_path):
    config = TrainConfig(**{**SMALL, "steps": 6})
    data = tf.data.Dataset.from_tensor_slices(np.concatenate(
        [_images(8), np.full((8, 64, 64, 3), np.nan, "float32")])).batch(4).repeat()
    with pytest.raises(DivergenceError, match="not finite at step 3"):
        train(config, data, tmp_path)
    assert tf.train.latest_checkpoint(str(tmp_path / "ckpt")).endswith("ckpt-2")
    assert not (tmp_path / "generator.keras").exists()


def test_config_is_validated():
    with pytest.raises(ValueError, match="z_dist"):
        TrainConfig(z_dist="cauchy")
