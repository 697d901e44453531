"""The GAN variants (WGAN, WGAN-GP, ACGAN, InfoGAN, DCGAN) with the CNN or CapsNet
discriminator and the DCGAN or seed generator: they build at every resolution, a step
moves what it should, the papers' constants hold, and they resume exactly."""
from __future__ import annotations

import csv
import itertools

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from model.card import read_card  # noqa: E402
from model.config import TrainConfig  # noqa: E402
from model.nets.capsnet import DynamicRouting, squash  # noqa: E402
from model.nets.networks import build_discriminator, build_generator  # noqa: E402
from model.train.loop import GANTrainer, train  # noqa: E402
from model.train.sampling import export_samples, generate  # noqa: E402
from model.variants import (  # noqa: E402
    VARIANTS,
    build_variant,
    losses,  # noqa: E402
)

DIGITS = [str(i) for i in range(10)]
TINY = dict(base_width=8, batch_size=4, seed=5, precision="float32", labels=DIGITS)
#: WGAN-family options that keep a test step short (the default is 5 critic updates). The
#: tiny clipped CapsNet critic passes G gradients of ~1e-11 at the paper's clip 0.01, below
#: what one float32 RMSProp step can add to a weight of 1, so the step tests clip at 0.05.
FAST = {"wgan": {"n_critic": 2, "clip": 0.05}, "wgan-gp": {"n_critic": 2}}
SHAPES = [(64, 3), (32, 3), (28, 1)]
DISCRIMINATORS, GENERATORS = ("cnn", "capsnet"), ("dcgan", "seed")


def _config(variant, discriminator="cnn", generator="dcgan", resolution=28, channels=1, options=None, **kw):
    return TrainConfig(**{**TINY, **kw}, variant=variant, discriminator=discriminator, generator=generator,
                       resolution=resolution, channels=channels, options={**FAST.get(variant, {}), **(options or {})})


def _batch(model, resolution=28, channels=1, seed=0):
    n = model.images_per_step()
    rng = np.random.default_rng(seed)
    return {"image": tf.constant(rng.uniform(-1, 1, (n, resolution, resolution, channels)).astype("float32")),
            "label": tf.constant(rng.integers(0, 10, n), tf.int64)}


@pytest.mark.parametrize("resolution,channels", SHAPES)
def test_every_variant_discriminator_and_generator_builds(resolution, channels):
    """Each combination builds at 64 RGB, 32 RGB and 28 gray with the outputs its variant reads."""
    keras.config.set_dtype_policy("float32")
    for variant, disc, gen in itertools.product(VARIANTS, DISCRIMINATORS, GENERATORS):
        model = build_variant(_config(variant, disc, gen, resolution, channels))
        g, d = model.inference_generator(), model.inference_discriminator()
        assert g.output_shape == (None, resolution, resolution, channels), (variant, disc, gen)
        assert sorted(i.name for i in g.inputs) == sorted(s.name for s in model.inputs())
        heads = model.heads()
        if heads is None:
            assert d.output_shape == (None, 1)
        else:
            assert {k: v.shape[-1] for k, v in d.output.items()} == heads, (variant, disc)


def test_parameter_counts_of_the_seed_networks():
    keras.config.set_dtype_policy("float32")
    config = TrainConfig(discriminator="capsnet", generator="seed")  # 64x64 RGB, base_width 128
    assert build_discriminator(config, fast=False).count_params() == 29_042_753
    assert build_generator(config, fast=False).count_params() == 1_069_507
    # The fast (training) builds are the same networks.
    assert build_discriminator(config, fast=True).count_params() == 29_042_753


def _moved(before, variables):
    return [v.path for a, v in zip(before, variables) if np.array_equal(a, v.numpy())]


# Every variant with each discriminator, and every variant with each generator: the generator
# alternates, so every pair of choices (variant and D, variant and G, D and G) steps at least
# once. The whole product (twice as many traces) adds no pair: D and G meet only through
# the image, whose shapes the build test checks for every combination.
STEP_CASES = [(v, d, GENERATORS[(i + j) % 2])
              for i, v in enumerate(VARIANTS) for j, d in enumerate(DISCRIMINATORS)]


def test_step_cases_cover_every_pair_of_choices():
    pairs = lambda a, b: {(case[a], case[b]) for case in STEP_CASES}  # noqa: E731
    assert pairs(0, 1) == set(itertools.product(VARIANTS, DISCRIMINATORS))
    assert pairs(0, 2) == set(itertools.product(VARIANTS, GENERATORS))
    assert pairs(1, 2) == set(itertools.product(DISCRIMINATORS, GENERATORS))


@pytest.mark.parametrize("variant,discriminator,generator", STEP_CASES)
def test_one_step_changes_every_weight(variant, discriminator, generator):
    trainer = GANTrainer(_config(variant, discriminator, generator))
    g_vars, d_vars = trainer.generator.trainable_variables, trainer.discriminator.trainable_variables
    before_g, before_d = [v.numpy().copy() for v in g_vars], [v.numpy().copy() for v in d_vars]
    out = trainer.train_step(_batch(trainer.model))
    assert set(out) == set(trainer.model.scalars)
    assert all(np.isfinite(float(v)) for v in out.values())
    # The Wasserstein loss E[f(fake)] - E[f(real)] does not depend on the score's bias.
    fixed = ["logit/bias"] if variant.startswith("wgan") else []
    assert _moved(before_g, g_vars) == [] and _moved(before_d, d_vars) == fixed
    assert int(trainer.step.numpy()) == 1


def test_wgan_clips_the_critic_and_reads_fresh_batches():
    trainer = GANTrainer(_config("wgan", options={"clip": 0.02, "n_critic": 3}))
    model = trainer.model
    assert model.images_per_step() == 3 * 4
    assert isinstance(model.d_opt, keras.optimizers.RMSprop) and model.d_opt.learning_rate.numpy() == \
        pytest.approx(5e-5)
    trainer.train_step(_batch(model))
    for v in trainer.discriminator.trainable_variables:
        assert np.abs(v.numpy()).max() <= 0.02 + 1e-7, v.path
    assert int(model.d_opt.iterations.numpy()) == 3 and int(model.g_opt.iterations.numpy()) == 1


def test_gradient_penalty_equals_a_hand_computation():
    """f(x) = 0.5 sum(a x^2): grad f(x_hat) = a x_hat, whose norm over the whole example is
    computed by hand with one fraction per example."""
    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(3, 2, 2, 1)), rng.normal(size=(3, 2, 2, 1))
    a = rng.uniform(0.5, 2.0, size=(2, 2, 1))
    eps = np.array([0.1, 0.5, 0.9])

    def critic(x):
        return 0.5 * tf.reduce_sum(tf.constant(a, tf.float32) * x ** 2, axis=[1, 2, 3])[:, None]

    x_hat = eps[:, None, None, None] * real + (1 - eps[:, None, None, None]) * fake
    norms = np.sqrt(((a * x_hat) ** 2).sum(axis=(1, 2, 3)))
    expected = np.mean((norms - 1.0) ** 2)
    got = losses.gradient_penalty(critic, tf.constant(real, tf.float32), tf.constant(fake, tf.float32),
                                  tf.constant(eps, tf.float32), global_batch=3)
    assert float(got) == pytest.approx(expected, rel=1e-5)


def test_wgan_gp_draws_one_fraction_per_example(monkeypatch):
    seen = []
    original = losses.gradient_penalty

    def spy(critic, real, fake, fraction, global_batch, target=1.0):
        seen.append((tuple(fraction.shape), tuple(real.shape)))
        return original(critic, real, fake, fraction, global_batch, target)

    monkeypatch.setattr(losses, "gradient_penalty", spy)
    trainer = GANTrainer(_config("wgan-gp"))
    model = trainer.model
    assert (model.hparam("lr"), model.hparam("beta1"), model.hparam("beta2")) == (1e-4, 0.0, 0.9)
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in trainer.discriminator.layers)
    out = trainer.train_step(_batch(model))
    assert seen and all(f == (4,) and r == (4, 28, 28, 1) for f, r in seen)  # once per critic update, traced
    assert float(out["gp"]) > 0


def test_gradient_penalty_through_the_fast_layers_matches_plain_keras():
    """The penalty's second derivatives flow through model/nets/layers.py's matmul route (the
    critic's 4x4 layer at 64x64 in float32) exactly as through plain Keras layers."""
    keras.config.set_dtype_policy("float32")
    config = _config("wgan-gp", resolution=64, channels=3)
    model = build_variant(config)
    fast, plain = model._discriminator(fast=True), model._discriminator(fast=False)
    plain.set_weights(fast.get_weights())
    rng = np.random.default_rng(1)
    real, fake = (tf.constant(rng.uniform(-1, 1, (2, 64, 64, 3)), tf.float32) for _ in range(2))
    eps = tf.constant([0.3, 0.7])
    grads = []
    for d in (fast, plain):
        with tf.GradientTape() as tape:
            gp = losses.gradient_penalty(lambda x, d=d: d(x, training=True), real, fake, eps, 2)
        grads.append(tape.gradient(gp, d.trainable_variables))
    for a, b, v in zip(*grads, fast.trainable_variables):
        if a is None or b is None:  # the score's bias does not change the gradient wrt the input
            assert a is None and b is None and v.path.endswith("logit/bias")
            continue
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=2e-3, atol=1e-6)


def test_critic_accuracy_splits_at_the_midpoint_of_the_means():
    real = tf.constant([[3.0], [1.0], [-1.0], [5.0]])
    fake = tf.constant([[0.0], [-2.0], [2.0], [-4.0]])  # means 2 and -1: midpoint 0.5
    s = losses.critic_stats(real, fake, 4)
    assert float(s["d_acc_real"]) == 0.75 and float(s["d_acc_fake"]) == 0.75
    assert float(s["w_dist"]) == pytest.approx(3.0)


def test_acgan_class_input_changes_the_image_and_attributes_make_classes():
    keras.config.set_dtype_policy("float32")
    model = build_variant(_config("acgan", resolution=32, channels=3))
    g = model.inference_generator()
    z = np.random.default_rng(0).uniform(-1, 1, (2, 100)).astype("float32")
    label = np.eye(10, dtype="float32")[[3, 3]]
    a = generate(g, {"z": z, "label": label})
    b = generate(g, {"z": z, "label": np.eye(10, dtype="float32")[[7, 7]]})
    assert not np.array_equal(a, b)
    assert model.inputs()[1].labels == tuple(DIGITS)

    celeb = build_variant(_config("acgan", labels=[], options={"attributes": ["Male", "Smiling"]}))
    assert celeb.features == ("image", "attributes") and celeb.data_attributes() == ["Male", "Smiling"]
    assert celeb.class_names == ["-Male -Smiling", "+Male -Smiling", "-Male +Smiling", "+Male +Smiling"]
    onehot = celeb.real_labels({"attributes": tf.constant([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])})
    np.testing.assert_array_equal(np.argmax(onehot, -1), [0, 1, 2, 3])


@pytest.mark.parametrize("variant,options,match", [
    ("acgan", {}, "acgan needs classes"),
    ("acgan", {"attributes": ["Male", "Beard"]}, "unknown CelebA attribute 'Beard'"),
    ("acgan", {"attributes": ["Male", "Young", "Smiling", "Bangs", "Bald"]}, "at most 4"),
    ("wgan-gp", {"critic_norm": "batch"}, "critic_norm must be 'layer' or 'none'"),
    ("wgan", {"n_critic": 0}, "n_critic must be >= 1"),
    ("infogan", {"categorical": 0, "continuous": 0}, "at least one code"),
    ("dcgan", {"routing": "magic"}, "routing must be one of"),
])
def test_bad_options_are_one_clear_error(variant, options, match):
    with pytest.raises(ValueError, match=match):
        model = build_variant(_config(variant, "capsnet", labels=[], options=options))
        model.inference_discriminator()


def test_infogan_q_loss_falls_on_a_toy_problem():
    """Q learns to read the categorical code back from G's images within 300 CPU steps."""
    config = TrainConfig(variant="infogan", resolution=8, channels=1, base_width=8, batch_size=32, seed=0,
                         precision="float32", z_dim=8, options={"categorical": 4, "continuous": 1})
    trainer = GANTrainer(config)
    data = tf.constant(np.random.default_rng(0).uniform(-1, 1, (32, 8, 8, 1)), tf.float32)
    q = [float(trainer.train_step({"image": data})["q_cat"]) for _ in range(300)]
    start, end = np.mean(q[:10]), np.mean(q[-20:])
    assert start > 1.0 and end < 0.5 * start, (start, end)  # log(4) = 1.39 at chance


def test_dynamic_routing_matches_procedure_1():
    """Routing-by-agreement against a numpy transcription of Sabour et al.'s Procedure 1."""
    layer = DynamicRouting(capsules=3, dim=4, iterations=3)
    u = np.random.default_rng(0).normal(size=(2, 5, 8)).astype("float32")
    v = layer(tf.constant(u)).numpy()
    w = layer.w.numpy()  # (5, 3, 4, 8)
    u_hat = np.einsum("ijdk,nik->nijd", w, u)
    b = np.zeros(u_hat.shape[:3])
    for _ in range(3):
        c = np.exp(b) / np.exp(b).sum(2, keepdims=True)
        s = (c[..., None] * u_hat).sum(1)
        n2 = (s ** 2).sum(-1, keepdims=True)
        out = n2 / (1 + n2) * s / np.sqrt(n2 + 1e-7)
        b = b + np.einsum("nijd,njd->nij", u_hat, out)
    np.testing.assert_allclose(v, out, rtol=1e-4, atol=1e-6)
    assert (np.linalg.norm(v, axis=-1) < 1).all()
    assert float(tf.norm(squash(tf.constant([[3.0, 4.0]])))) == pytest.approx(25 / 26, rel=1e-5)


def test_dynamic_routing_capsnet_trains():
    trainer = GANTrainer(_config("dcgan", "capsnet", options={"routing": "dynamic"}))
    routing = trainer.discriminator.get_layer("routing")
    before = routing.w.numpy().copy()
    trainer.train_step(_batch(trainer.model))
    assert not np.array_equal(before, routing.w.numpy())


def _dataset(model, resolution=32, channels=3, n=48):
    rng = np.random.default_rng(2)
    images = rng.uniform(-1, 1, (n, resolution, resolution, channels)).astype("float32")
    labels = rng.integers(0, 10, n)
    return tf.data.Dataset.from_tensor_slices({"image": images, "label": labels}).repeat().batch(
        model.images_per_step())


@pytest.mark.slow
def test_wgan_gp_resume_equals_uninterrupted_run(tmp_path):
    kw = dict(resolution=28, channels=1, steps=4, checkpoint_every=2, log_every=1)
    config = _config("wgan-gp", **kw)
    data = _dataset(build_variant(config), 28, 1)
    train(config, data, tmp_path / "whole")
    train(_config("wgan-gp", **{**kw, "steps": 2}), data, tmp_path / "split")
    train(config, data, tmp_path / "split")
    rows = list(csv.reader(open(tmp_path / "split" / "metrics.csv")))
    whole = list(csv.reader(open(tmp_path / "whole" / "metrics.csv")))
    assert rows[0] == ["step", *config_scalars("wgan-gp")] and [r[0] for r in rows[1:]] == ["1", "2", "3", "4"]
    np.testing.assert_allclose(np.float64([r[1:] for r in rows[1:]]), np.float64([r[1:] for r in whole[1:]]),
                               rtol=1e-4, atol=1e-5)
    a = keras.models.load_model(tmp_path / "whole" / "generator.keras", compile=False)
    b = keras.models.load_model(tmp_path / "split" / "generator.keras", compile=False)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(wa, wb, rtol=1e-4, atol=1e-5)


def config_scalars(variant):
    from model.variants import variant_class
    return list(variant_class(variant).scalars)


def test_infogan_and_acgan_exports_show_their_codes(tmp_path):
    """ExportSamples reads the card: ACGAN one row per class; InfoGAN one row per categorical
    value and, per continuous code, the traversal with a row per categorical value."""
    from PIL import Image
    side = 28 + 2
    for variant in ("acgan", "infogan"):
        config = _config(variant, resolution=28, channels=1, steps=1, checkpoint_every=1)
        run = tmp_path / variant
        train(config, _dataset(build_variant(config), 28, 1), run)
        out = tmp_path / f"{variant}-export"
        out.mkdir()
        index = export_samples(run, out, n=2, interpolations=1, interpolation_steps=2)
        card = read_card(run)
        if variant == "acgan":
            assert card.input("label").labels == tuple(DIGITS)
            assert Image.open(out / "label_rows.png").size == (10 * side + 2, 10 * side + 2)
        else:
            assert [s.name for s in card.inputs] == ["z", "code", "cont"]
            assert card.input("cont").meta == {"sweep": [-2.0, 2.0]}
            assert Image.open(out / "code_rows.png").size == (10 * side + 2, 10 * side + 2)
            for name in ("cont_c1_sweep.png", "cont_c2_sweep.png"):
                assert Image.open(out / name).size == (10 * side + 2, 10 * side + 2)
                assert "one row per value of code" in index[name] and "-2 to 2" in index[name]


def test_completion_reads_the_source_head_of_a_discriminator_with_heads():
    """Face completion's perceptual loss scores with D's "logit" head when D has several
    (ACGAN's class head, InfoGAN's Q), as with a one-logit D."""
    from model.apps.complete import complete_faces, make_mask
    from model.card import ModelCard

    keras.config.set_dtype_policy("float32")
    model = build_variant(_config("infogan", resolution=32, channels=3))
    g, d = model.inference_generator(), model.inference_discriminator()
    assert set(d.output) == {"logit", "code", "cont"}
    card = ModelCard(variant="infogan", resolution=32, channels=3, inputs=model.inputs())
    faces = np.random.default_rng(0).integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
    result = complete_faces(g, d, card, faces, make_mask("center", 32), steps=2, restarts=1, candidates=2)
    assert np.isfinite(result["d_score"]).all() and np.isfinite(result["perceptual"]).all()
