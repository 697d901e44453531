"""Training options of the core: the generator's weight average (EMA), differentiable
augmentation of the discriminator's inputs, and the two time-scale learning rates."""
from __future__ import annotations

import csv
import textwrap
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

ROOT = Path(__file__).resolve().parents[1]

from model.card import read_card  # noqa: E402
from model.config import TrainConfig  # noqa: E402
from model.eval.evaluation import run_generators  # noqa: E402
from model.train.augment import augment, color, cutout, translation  # noqa: E402
from model.train.loop import GANTrainer, restore_networks, save_keras_atomic, train  # noqa: E402

SMALL = dict(base_width=8, batch_size=4, steps=4, checkpoint_every=2, log_every=1, seed=3,
             precision="float32", resolution=32)


def _images(n=16, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (n, 32, 32, 3)).astype("float32")


def _dataset():
    return tf.data.Dataset.from_tensor_slices(_images()).shuffle(16, seed=0).repeat().batch(4)


# -- EMA ----------------------------------------------------------------------------------------

def test_average_moves_toward_the_weights_by_the_decay_rule():
    trainer = GANTrainer(TrainConfig(**SMALL, ema=0.9))
    g = trainer.generator
    before = trainer.ema.values()
    np.testing.assert_array_equal(before[0], g.get_weights()[0])  # starts at the initial weights
    trainer.train_step(tf.constant(_images(4)))
    after, weights = trainer.ema.values(), g.get_weights()
    d = min(0.9, 2 / 11)  # the first update's warm-up rate (1 + t) / (10 + t), t = 1
    trainable = {id(w) for w in g.trainable_weights}
    for w, a0, a1, w1 in zip(g.weights, before, after, weights):
        if id(w) in trainable:
            np.testing.assert_allclose(a1, d * a0 + (1 - d) * w1, rtol=1e-5, atol=1e-7)
        else:  # batch-norm statistics are copied
            np.testing.assert_array_equal(a1, w1)
    assert not np.allclose(after[0], weights[0])  # an average, not a copy
    assert float(trainer.ema.rate()) == pytest.approx(min(0.9, 3 / 12))


def test_average_copies_the_raw_variables_and_refuses_strangers():
    """``raw`` variables follow the weights (copied at each update); the others are averaged;
    a variable the model does not hold is refused."""
    from model.train.ema import WeightAverage

    trainer = GANTrainer(TrainConfig(**SMALL))
    g = trainer.generator
    kernel = g.trainable_weights[0]
    average = WeightAverage(g, 0.9, raw=[kernel])
    trainer.train_step(tf.constant(_images(4)))
    average.update(g)
    values = dict(zip((id(w) for w in g.weights), average.values()))
    np.testing.assert_array_equal(values[id(kernel)], kernel.numpy())
    assert not np.allclose(values[id(g.trainable_weights[1])], g.trainable_weights[1].numpy())
    with pytest.raises(ValueError, match="does not hold"):
        WeightAverage(g, 0.9, raw=[tf.Variable(1.0)])


def test_ema_and_augmentation_resume_exactly_and_export_the_average(tmp_path):
    options = dict(ema=0.99, augment="translation,cutout,color", augment_p=0.8)
    config = TrainConfig(**SMALL, **options)
    train(config, _dataset(), tmp_path / "whole")
    train(TrainConfig(**{**SMALL, "steps": 2}, **options), _dataset(), tmp_path / "split")
    train(config, _dataset(), tmp_path / "split")
    rows = [list(csv.reader(open(tmp_path / run / "metrics.csv")))[1:] for run in ("whole", "split")]
    np.testing.assert_allclose(np.float64(rows[0]), np.float64(rows[1]), rtol=1e-4, atol=1e-5)
    for name in ("generator.keras", "generator_raw.keras"):
        a = keras.models.load_model(tmp_path / "whole" / name, compile=False)
        b = keras.models.load_model(tmp_path / "split" / name, compile=False)
        for wa, wb in zip(a.get_weights(), b.get_weights()):
            np.testing.assert_allclose(wa, wb, rtol=1e-4, atol=1e-5)

    card = read_card(tmp_path / "whole")
    assert card.weights == "ema" and card.files["raw_keras"] == "generator_raw.keras"
    averaged = keras.models.load_model(tmp_path / "whole" / "generator.keras", compile=False)
    raw = keras.models.load_model(tmp_path / "whole" / "generator_raw.keras", compile=False)
    assert not np.allclose(averaged.get_weights()[0], raw.get_weights()[0])
    # The checkpoint's average is what was exported; its raw generator is the raw export.
    nets = restore_networks(tmp_path / "whole", which=("generator",), weights="ema")
    for wa, wb in zip(nets["generator"].get_weights(), averaged.get_weights()):
        np.testing.assert_allclose(wa, wb, rtol=1e-6)
    nets = restore_networks(tmp_path / "whole", which=("generator",))
    for wa, wb in zip(nets["generator"].get_weights(), raw.get_weights()):
        np.testing.assert_allclose(wa, wb, rtol=1e-6)
    # Evaluation can take either set of weights of one run.
    assert [s for _, s, _ in run_generators(tmp_path / "whole", weights="generator")] == \
        ["ckpt-2", "generator_raw.keras"]
    assert [s for _, s, _ in run_generators(tmp_path / "whole")] == ["ckpt-2", "generator.keras"]


def test_a_run_without_average_has_none_to_evaluate(tmp_path):
    train(TrainConfig(**{**SMALL, "steps": 1}), _dataset(), tmp_path)
    assert read_card(tmp_path).weights == "generator"
    with pytest.raises(ValueError, match="keeps no weight average"):
        run_generators(tmp_path, weights="ema")


# -- augmentation ---------------------------------------------------------------------------------

@pytest.mark.parametrize("op", [color, translation, cutout])
def test_each_transform_keeps_shape_and_range(op):
    rng = tf.random.Generator.from_seed(0)
    x = tf.constant(_images(8))
    y = op(x, rng).numpy()
    assert y.shape == x.shape and y.min() >= -1 and y.max() <= 1
    assert not np.array_equal(y, x.numpy())


def test_translation_shifts_whole_images_and_cutout_cuts_one_square():
    rng = tf.random.Generator.from_seed(1)
    x = _images(6)
    y = translation(tf.constant(x), rng).numpy()
    for a, b in zip(x, y):  # every channel moved by one integer shift, empty border 0
        found = [(dy, dx) for dy in range(-4, 5) for dx in range(-4, 5)
                 if np.array_equal(b, _shift(a, dy, dx))]
        assert len(found) == 1
    y = cutout(tf.constant(x), rng).numpy()
    for a, b in zip(x, y):
        hole = (b == 0).all(axis=-1)
        rows, cols = np.nonzero(hole)
        assert hole.sum() == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)  # one rectangle
        assert rows.max() - rows.min() + 1 <= 16 and cols.max() - cols.min() + 1 <= 16
        np.testing.assert_array_equal(b[~hole], a[~hole])


def _shift(a, dy, dx):
    out = np.zeros_like(a)
    h, w = a.shape[:2]
    out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = a[max(-dy, 0):h + min(-dy, 0),
                                                                   max(-dx, 0):w + min(-dx, 0)]
    return out


def test_augmentation_is_differentiable_and_probability_keeps_some_images():
    rng = tf.random.Generator.from_seed(2)
    x = tf.Variable(_images(16))
    with tf.GradientTape() as tape:
        y = augment(x, ("translation", "cutout", "color"), rng)
        loss = tf.reduce_sum(y * tf.constant(_images(16, seed=9)))
    grad = tape.gradient(loss, x).numpy()
    assert np.isfinite(grad).all() and np.abs(grad).sum() > 0
    y = augment(tf.constant(_images(64)), ("translation",), rng, probability=0.5).numpy()
    unchanged = sum(np.array_equal(a, b) for a, b in zip(y, _images(64)))
    assert 16 <= unchanged <= 48


def test_augmented_discriminator_passes_gradients_to_the_generator():
    trainer = GANTrainer(TrainConfig(**SMALL, augment="translation,cutout,color"))
    model = trainer.model
    with tf.GradientTape() as tape:
        fake = model.generator(model.sample_inputs(4)["z"], training=True)
        score = tf.reduce_sum(model.discriminator(model.augment(fake), training=True))
    grads = tape.gradient(score, model.generator.trainable_variables)
    assert all(g is not None and float(tf.reduce_sum(tf.abs(g))) > 0 for g in grads)


def test_the_export_carries_the_weight_average_not_the_raw_weights(tmp_path):
    """Trained with augmentation and an average, the exported generator (as train() saves it)
    holds the average of the raw weights by the decay rule, computed here step by step, draws
    what a generator with those weights draws (no augmentation outside training) and other
    images than the raw generator."""
    trainer = GANTrainer(TrainConfig(**SMALL, ema=0.9, augment="translation,cutout,color"))
    g = trainer.generator
    trainable = {id(w) for w in g.trainable_weights}
    average = [w.numpy() for w in g.weights]  # starts at the initial weights
    for t in range(1, 4):
        trainer.train_step(tf.constant(_images(4, seed=t)))
        d = min(0.9, (1 + t) / (10 + t))  # the warm-up rate of update t
        average = [d * a + (1 - d) * w.numpy() if id(w) in trainable else w.numpy()  # batch-norm statistics
                   for a, w in zip(average, g.weights)]                                # are copied
    save_keras_atomic(trainer.export_generator(), tmp_path / "generator.keras")
    save_keras_atomic(trainer.export_generator("generator"), tmp_path / "generator_raw.keras")
    exported = keras.models.load_model(tmp_path / "generator.keras", compile=False)
    raw = keras.models.load_model(tmp_path / "generator_raw.keras", compile=False)
    assert len(exported.weights) == len(average)
    for w, a in zip(exported.get_weights(), average):
        np.testing.assert_allclose(w, a, rtol=1e-5, atol=1e-7)
    for w, r in zip(raw.get_weights(), g.get_weights()):
        np.testing.assert_array_equal(w, r)
    assert not np.allclose(exported.get_weights()[0], raw.get_weights()[0])
    z = np.random.default_rng(0).uniform(-1, 1, (3, 100)).astype("float32")
    images, raw_images = exported(z, training=False).numpy(), raw(z, training=False).numpy()
    raw.set_weights(average)  # the raw network with the average's weights draws the same images
    scale = np.abs(raw_images).max()  # an untrained generator's images are faint
    np.testing.assert_allclose(images, raw(z, training=False).numpy(), rtol=0, atol=1e-4 * scale)
    assert np.abs(images - raw_images).max() > 0.01 * scale  # about 0.05 of it here


def test_recomputed_batch_norm_statistics_are_the_mean_of_the_batches():
    """recompute_batch_norm: each moving mean and variance becomes the mean over the batches of
    that batch's statistics (the earlier statistics dropped); other weights and the layers'
    momentum stay as they were."""
    from model.train.ema import recompute_batch_norm

    x = keras.Input((3,))
    norm = keras.layers.BatchNormalization(momentum=0.9)
    dense = keras.layers.Dense(4)
    model = keras.Model(x, keras.layers.Dense(2)(norm(dense(x))))
    norm.moving_mean.assign(np.full(4, 7.0, np.float32))
    batches = [np.random.default_rng(k).normal(2, 3, (16, 3)).astype("float32") for k in range(5)]
    kept = [w.numpy() for w in model.trainable_weights]
    draws = iter(batches)
    recompute_batch_norm(model, lambda: next(draws), len(batches))
    features = [dense(b).numpy() for b in batches]
    np.testing.assert_allclose(norm.moving_mean.numpy(), np.mean([f.mean(0) for f in features], 0), rtol=1e-5)
    np.testing.assert_allclose(norm.moving_variance.numpy(), np.mean([f.var(0) for f in features], 0), rtol=1e-4)
    for w, k in zip(model.trainable_weights, kept):
        np.testing.assert_array_equal(w.numpy(), k)
    assert norm.momentum == 0.9


def test_the_average_can_get_its_own_batch_norm_statistics(tmp_path):
    """ema_bn_batches: the export holds the checkpoint's averaged weights but batch-norm
    statistics of its own draws, not the raw generator's copied ones; a restored checkpoint's
    averaged generator is that export (the same draws every time)."""
    config = TrainConfig(**SMALL, ema=0.9, ema_bn_batches=3)
    train(config, _dataset(), tmp_path / "run")
    trainer = GANTrainer(config)
    trainer.checkpoint().restore(tf.train.latest_checkpoint(str(tmp_path / "run" / "ckpt"))).expect_partial()
    load = lambda name: keras.models.load_model(tmp_path / "run" / name, compile=False)
    own, raw = load("generator.keras"), load("generator_raw.keras")
    trainable = {id(w) for w in own.trainable_weights}
    statistics = [id(w) not in trainable for w in own.weights]
    assert any(statistics)  # the DCGAN generator has batch norm
    for is_statistic, a, o, r in zip(statistics, trainer.ema.values(), own.get_weights(), raw.get_weights()):
        if is_statistic:
            np.testing.assert_array_equal(a, r)  # what the average holds: the raw generator's, copied
            assert not np.allclose(o, r)
        else:
            np.testing.assert_array_equal(o, a)
    restored = restore_networks(tmp_path / "run", which=("generator",), weights="ema")["generator"]
    for a, b in zip(restored.get_weights(), own.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert read_card(tmp_path / "run").training["ema_bn_batches"] == 3


def test_the_average_is_loaded_once_per_step(tmp_path, monkeypatch):
    """The grids, a checkpoint's evaluation and the export of the last step share one load of
    the average: with ema_bn_batches its statistics are recomputed once at each step that needs
    them (steps 2 and 4 here), and the model a step returns is the one that step exported."""
    import model.train.loop as loop

    passes = []
    recompute = loop.recompute_batch_norm
    monkeypatch.setattr(loop, "recompute_batch_norm",
                        lambda *args: (passes.append(1), recompute(*args))[1])
    seen = {}
    train(TrainConfig(**SMALL, ema=0.9, ema_bn_batches=2, sample_every=2), _dataset(), tmp_path / "run",
          on_checkpoint=lambda step, trainer: seen.update({step: trainer.export_generator()}))
    assert len(passes) == 2
    assert seen[2] is seen[4]  # one inference generator, reloaded when the step moves on
    exported = keras.models.load_model(tmp_path / "run" / "generator.keras", compile=False)
    for a, b in zip(exported.get_weights(), seen[4].get_weights()):
        np.testing.assert_array_equal(a, b)


def test_bad_options_are_clear_errors():
    with pytest.raises(ValueError, match="unknown transform"):
        TrainConfig(augment="translation,blur")
    with pytest.raises(ValueError, match="ema must be in"):
        TrainConfig(ema=1.5)
    with pytest.raises(ValueError, match="ema_bn_batches must be 0 without a weight average: set ema"):
        TrainConfig(ema_bn_batches=10)
    with pytest.raises(ValueError, match="ema_bn_batches must be >= 0"):
        TrainConfig(ema=0.9, ema_bn_batches=-1)
    with pytest.raises(ValueError, match="augment_p"):
        TrainConfig(augment_p=0)


def test_two_time_scale_learning_rates():
    trainer = GANTrainer(TrainConfig(**SMALL, lr=1e-4, d_lr=4e-4))
    assert float(trainer.model.g_opt.learning_rate) == pytest.approx(1e-4)
    assert float(trainer.model.d_opt.learning_rate) == pytest.approx(4e-4)


@pytest.mark.parametrize("precision", ["mixed_bfloat16"])
def test_augmentation_and_average_under_a_two_device_mirrored_strategy(zygote, precision):
    """A training step under a two-replica mirrored strategy (each replica half of the batch)
    in bfloat16: the figures are global means, every replica augments its own half with its
    own draws, and the generator and its average move. (float32 is held to more in
    tests/test_multiworker.py: two replicas train exactly what one device trains.) At 32x32
    (the 4x4 and 8x8 matmul-route layers are there; 64x64 cost 20-50 s more on AVX2, where
    bfloat16 is emulated)."""
    code = textwrap.dedent("""
        import numpy as np, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from model.train.loop import GANTrainer, TrainConfig, make_strategy
        strategy = make_strategy()
        assert strategy.num_replicas_in_sync == 2, strategy
        trainer = GANTrainer(TrainConfig(base_width=8, batch_size=8, seed=1, precision=PRECISION, ema=0.9,
                                         augment="translation,cutout,color", resolution=32), strategy)
        images = np.random.default_rng(0).uniform(-1, 1, (16, 32, 32, 3)).astype("float32")
        ds = strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensor_slices(images).batch(8))
        # D's logit biased far up: each replica's mean D(x) is near sigmoid(6) = 0.9975, so a sum over
        # the two replicas (near 2) cannot pass for the global mean.
        trainer.discriminator.get_layer("logit").bias.assign([6.0])
        before, g_before = trainer.ema.values(), trainer.generator.trainable_variables[0].numpy().copy()
        for batch in ds:
            out = trainer.train_step(batch)
        assert int(trainer.step.numpy()) == 2 and int(trainer.ema.updates.numpy()) == 2
        assert all(np.isfinite(float(v)) for v in out.values()), out
        # Global means, not sums over the replicas:
        assert 0.99 < float(out["d_real"]) <= 1.0 and 0.99 < float(out["d_fake"]) <= 1.0, out
        assert float(out["d_acc_real"]) == 1.0 and float(out["d_acc_fake"]) == 0.0, out
        after, weights = trainer.ema.values(), trainer.generator.get_weights()
        assert not np.array_equal(before[0], after[0]) and not np.allclose(after[0], weights[0])
        assert not np.array_equal(g_before, trainer.generator.trainable_variables[0].numpy())
        # Two replicas, two different augmentations of the same images.
        aug = strategy.run(lambda x: trainer.model.augment(x), args=(tf.constant(images[:4]),))
        a, b = (v.numpy() for v in strategy.experimental_local_results(aug))
        assert a.shape == b.shape == (4, 32, 32, 3) and not np.array_equal(a, b)
        print("OK", {k: round(float(v), 4) for k, v in out.items()})
    """).replace("PRECISION", repr(precision))
    # A process of its own (the two logical devices must be set before TensorFlow starts), forked
    # from the pytest worker's zygote (tests/script_runner.py), in the repository.
    proc = zygote.run(["-c", code], ROOT, {"TF_CPP_MIN_LOG_LEVEL": "2", "PATH": "/usr/bin:/bin"}, timeout=300)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-3000:]
