"""The training loop: every variable moves, resume equals an uninterrupted run,
divergence stops cleanly, exports agree, two devices train."""
from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from model.train.loop import DivergenceError, GANTrainer, TrainConfig, continue_run, resolve_precision, train  # noqa: E402
from model.train.sampling import to_uint8  # noqa: E402
from model.train.serving import load_serving  # noqa: E402

SMALL = dict(base_width=8, batch_size=4, steps=4, checkpoint_every=2, log_every=1, seed=3, precision="float32")


def _images(n=16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, (n, 64, 64, 3)).astype("float32")


def _dataset(seed=0):
    tf.random.set_seed(seed)  # as model.train.data does: the order is the seed's alone
    return tf.data.Dataset.from_tensor_slices(_images()).shuffle(16, seed=seed).repeat().batch(4)


@pytest.mark.parametrize("g_steps,precision", [(1, "float32"), (2, "float32"), (1, "mixed_bfloat16")])
def test_one_step_changes_every_trainable_variable(g_steps, precision):
    # model/nets/layers.py's matmul route runs on the 4x4 layers in float32, on the 4x4 and 8x8 ones in bfloat16
    trainer = GANTrainer(TrainConfig(**{**SMALL, "g_steps": g_steps, "precision": precision}))
    variables = trainer.generator.trainable_variables + trainer.discriminator.trainable_variables
    before = [v.numpy().copy() for v in variables]
    out = trainer.train_step(tf.constant(_images(4)))
    assert all(not np.array_equal(a, v.numpy()) for a, v in zip(before, variables))
    assert set(out) == {"d_loss", "g_loss", "d_real", "d_fake", "d_acc_real", "d_acc_fake"}
    assert int(trainer.step.numpy()) == 1
    assert int(trainer.model.g_opt.iterations.numpy()) == g_steps and int(trainer.model.d_opt.iterations.numpy()) == 1


@pytest.fixture(scope="module")
def whole_and_short(tmp_path_factory):
    """A run of ``SMALL`` (4 steps) and the same run stopped at its step-2 checkpoint, trained
    once for the tests below (which copy the short one before continuing it)."""
    runs = tmp_path_factory.mktemp("runs")
    train(TrainConfig(**SMALL), _dataset(), runs / "whole")
    train(TrainConfig(**{**SMALL, "steps": 2}), _dataset(), runs / "short")
    return runs / "whole", runs / "short"


def test_resume_equals_uninterrupted_run(whole_and_short, tmp_path):
    whole, short = whole_and_short
    config = TrainConfig(**SMALL)
    # The same run, stopped at a checkpoint (step 2) and resumed.
    shutil.copytree(short, tmp_path / "split")
    train(config, _dataset(), tmp_path / "split")

    rows = list(csv.reader(open(tmp_path / "split" / "metrics.csv")))
    whole_rows = list(csv.reader(open(whole / "metrics.csv")))
    assert [r[0] for r in rows[1:]] == ["1", "2", "3", "4"]
    np.testing.assert_allclose(np.float64([r[1:] for r in rows[1:]]),
                               np.float64([r[1:] for r in whole_rows[1:]]), rtol=1e-4, atol=1e-5)
    a = keras.models.load_model(whole / "generator.keras", compile=False)
    b = keras.models.load_model(tmp_path / "split" / "generator.keras", compile=False)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(wa, wb, rtol=1e-4, atol=1e-5)
    for name in ("losses.png", "progress/step-0000004.png", "saved_model/saved_model.pb"):
        assert (whole / name).is_file(), name
    assert list((whole / "tb").iterdir())  # TensorBoard event file


def test_a_longer_run_continued_from_a_shorter_one_equals_the_longer_run(whole_and_short, tmp_path):
    whole, short = whole_and_short
    shutil.copytree(short, tmp_path / "short")
    assert continue_run(tmp_path / "short", tmp_path / "long") == 2
    assert not (tmp_path / "long" / "generator.keras").exists()
    train(TrainConfig(**SMALL), _dataset(), tmp_path / "long")

    a = keras.models.load_model(whole / "generator.keras", compile=False)
    b = keras.models.load_model(tmp_path / "long" / "generator.keras", compile=False)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(wa, wb, rtol=1e-4, atol=1e-5)
    rows = list(csv.reader(open(tmp_path / "long" / "metrics.csv")))
    assert [r[0] for r in rows[1:]] == ["1", "2", "3", "4"]
    # The shorter run is left as it was; a started folder is refused.
    assert (tmp_path / "short" / "generator.keras").is_file()
    with pytest.raises(FileExistsError, match="long/ckpt exists"):
        continue_run(tmp_path / "short", tmp_path / "long")
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        continue_run(tmp_path / "nothing", tmp_path / "other")


def test_a_run_killed_before_its_first_log_line_starts_again(tmp_path):
    (tmp_path / "metrics.csv").write_text("")  # created, killed before the header was flushed
    train(TrainConfig(**{**SMALL, "steps": 1}), _dataset(), tmp_path)
    rows = list(csv.reader(open(tmp_path / "metrics.csv")))
    assert rows[0][0] == "step" and [r[0] for r in rows[1:]] == ["1"]


def test_nan_stops_training_and_keeps_last_good_checkpoint(tmp_path):
    config = TrainConfig(**{**SMALL, "steps": 6})
    data = tf.data.Dataset.from_tensor_slices(np.concatenate(
        [_images(8), np.full((8, 64, 64, 3), np.nan, "float32")])).batch(4).repeat()
    with pytest.raises(DivergenceError, match="not finite at step 3"):
        train(config, data, tmp_path)
    assert tf.train.latest_checkpoint(str(tmp_path / "ckpt")).endswith("ckpt-2")
    assert not (tmp_path / "generator.keras").exists()


def test_savedmodel_and_keras_export_give_the_same_images(tmp_path):
    train(TrainConfig(**{**SMALL, "steps": 1}), _dataset(), tmp_path)
    z = np.random.default_rng(5).uniform(-1, 1, (6, 100)).astype("float32")
    g = keras.models.load_model(tmp_path / "generator.keras", compile=False)
    served = load_serving(tmp_path / "saved_model")(z=tf.constant(z))["images"].numpy()
    assert served.dtype == np.uint8 and served.shape == (6, 64, 64, 3)
    assert np.abs(served.astype(int) - to_uint8(g(z, training=False)).astype(int)).max() <= 1


def test_bfloat16_training_keeps_float32_outputs_and_export():
    trainer = GANTrainer(TrainConfig(**{**SMALL, "precision": "mixed_bfloat16"}))
    assert trainer.generator.get_layer("to_image").compute_dtype == "bfloat16"
    assert trainer.generator.output.dtype == "float32" and trainer.discriminator.output.dtype == "float32"
    out = trainer.train_step(tf.constant(_images(4)))
    assert all(np.isfinite(float(v)) for v in out.values())
    exported = trainer.export_generator()
    assert exported.get_layer("to_image").compute_dtype == "float32"


def test_config_is_validated():
    with pytest.raises(ValueError, match="z_dist"):
        TrainConfig(z_dist="cauchy")
    with pytest.raises(ValueError, match="precision"):
        TrainConfig(precision="int8")


def test_resolve_precision_refuses_what_the_cap_forbids(monkeypatch):
    monkeypatch.setenv("FACEGAN_CPU_FLAGS", "fma avx avx2 avx512f avx512bw avx512_bf16")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert resolve_precision("auto") == "float32" and resolve_precision("float32") == "float32"
    with pytest.raises(ValueError, match=r"^precision mixed_bfloat16: ONEDNN_MAX_CPU_ISA=AVX2 keeps oneDNN off"):
        resolve_precision("mixed_bfloat16")
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    assert resolve_precision("mixed_bfloat16") == "mixed_bfloat16"
