"""The injectable training core: a variant hands the loop its networks, optimizers and
objective; generators with extra inputs train, export, serve and sample through the
same loop; the model card describes the run and its consumers follow it."""
from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
import textwrap
from dataclasses import replace

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from model.card import (  # noqa: E402
    CARD_FILE,
    InputSpec,
    ModelCard,
    check_inputs,
    load_generator,
    noise_spec,
    read_card,
    sample_inputs,
    write_card,
)
from model.config import TrainConfig  # noqa: E402
from model.nets.dcgan import build_discriminator  # noqa: E402
from model.train.loop import GANTrainer, restore_networks, train  # noqa: E402
from model.train.sampling import export_samples, generate  # noqa: E402
from model.train.serving import load_serving  # noqa: E402
from model.variants import losses  # noqa: E402
from model.variants.dcgan import DCGAN  # noqa: E402

SMALL = dict(base_width=8, batch_size=4, steps=2, checkpoint_every=1, log_every=1, seed=3,
             precision="float32", resolution=32)
CLASSES = 3


class ConditionalDCGAN(DCGAN):
    """A minimal conditional DCGAN, for these tests only: G takes z and a one-hot class; D
    sees the image with the class as extra constant channels (Mirza & Osindero 2014)."""
    name = "cdcgan-test"
    features = ("image", "label")

    def inputs(self):
        return [*super().inputs(), InputSpec("label", "onehot", CLASSES, labels=("a", "b", "c"))]

    def _discriminator(self, fast):
        c = self.config
        base = build_discriminator(c.resolution, c.channels + CLASSES, c.base_width, c.kernel_size, fast=fast)
        image = keras.Input((c.resolution, c.resolution, c.channels), name="image")
        label = keras.Input((CLASSES,), name="label")
        planes = keras.layers.Reshape((1, 1, CLASSES))(label)
        planes = keras.layers.UpSampling2D(c.resolution)(planes)
        return keras.Model({"image": image, "label": label},
                           base(keras.layers.Concatenate()([image, planes])), name="discriminator")

    def train_step(self, batch):
        c = self.config
        real, real_label = batch["image"], tf.one_hot(batch["label"], CLASSES)
        n = tf.shape(real)[0]
        inputs = self.sample_inputs(n)
        G, D = self.generator, self.discriminator
        with tf.GradientTape() as g_tape, tf.GradientTape() as d_tape:
            fake = G(inputs, training=True)
            real_logits = D({"image": real, "label": real_label}, training=True)
            fake_logits = D({"image": fake, "label": inputs["label"]}, training=True)
            d_loss = losses.discriminator_loss(real_logits, fake_logits, c.batch_size)
            g_loss = losses.generator_loss(fake_logits, c.batch_size)
        self.apply(self.d_opt, d_tape, d_loss, D.trainable_variables)
        self.apply(self.g_opt, g_tape, g_loss, G.trainable_variables)
        return {"d_loss": d_loss, "g_loss": g_loss,
                **losses.discriminator_stats(real_logits, fake_logits, c.batch_size)}


class LeastSquaresTest(DCGAN):
    """A test objective with scalars of its own (least-squares GAN losses, Mao et al. 2017)."""
    name = "lsgan-test"
    scalars = ("d_loss", "g_loss", "d_margin")
    plots = (("least squares", ("d_loss", "g_loss"), None), ("margin", ("d_margin",), None))

    def train_step(self, batch):
        real = batch["image"]
        G, D = self.generator, self.discriminator
        with tf.GradientTape() as g_tape, tf.GradientTape() as d_tape:
            fake = G(self.sample_inputs(tf.shape(real)[0])["z"], training=True)
            r, f = D(real, training=True), D(fake, training=True)
            d_loss = tf.reduce_mean((r - 1.0) ** 2) + tf.reduce_mean(f ** 2)
            g_loss = tf.reduce_mean((f - 1.0) ** 2)
        self.apply(self.d_opt, d_tape, d_loss, D.trainable_variables)
        self.apply(self.g_opt, g_tape, g_loss, G.trainable_variables)
        return {"d_loss": d_loss, "g_loss": g_loss, "d_margin": tf.reduce_mean(r) - tf.reduce_mean(f)}


@pytest.fixture(autouse=True)
def test_variants(monkeypatch):
    """Register this module's variants the way a new variant registers (model/variants)."""
    from model import variants
    monkeypatch.setitem(variants.VARIANTS, ConditionalDCGAN.name, f"{__name__}:ConditionalDCGAN")
    monkeypatch.setitem(variants.VARIANTS, LeastSquaresTest.name, f"{__name__}:LeastSquaresTest")


def _labeled(n=16, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.uniform(-1, 1, (n, 32, 32, 3)).astype("float32")
    labels = rng.integers(0, CLASSES, n)
    return tf.data.Dataset.from_tensor_slices({"image": images, "label": labels}).repeat().batch(4)


def _images(n=16):
    images = np.random.default_rng(1).uniform(-1, 1, (n, 32, 32, 3)).astype("float32")
    return tf.data.Dataset.from_tensor_slices(images).repeat().batch(4)


def test_conditional_generator_trains_exports_and_serves_every_input(tmp_path):
    config = TrainConfig(**SMALL, variant="cdcgan-test")
    result = train(config, _labeled(), tmp_path, dataset_card={"name": "toy"})
    assert result["step"] == 2

    card = read_card(tmp_path)
    assert card.variant == "cdcgan-test" and [s.name for s in card.inputs] == ["z", "label"]
    assert card.input("label").labels == ("a", "b", "c") and card.dataset == {"name": "toy"}
    assert card.steps == 2 and card.weights == "generator" and card.precision == "float32"

    # The exported generator takes both inputs, by name; the class changes the image.
    card, g = load_generator(tmp_path)
    inputs = sample_inputs(card, 4, seed=0)
    a = generate(g, inputs)
    other = {**inputs, "label": np.roll(inputs["label"], 1, axis=1)}
    assert a.shape == (4, 32, 32, 3) and not np.array_equal(a, generate(g, other))

    # The serving signature takes every declared input and agrees with the Keras model.
    serve = load_serving(tmp_path / "saved_model")
    assert set(serve.structured_input_signature[1]) == {"z", "label"}
    served = serve(**{k: tf.constant(v) for k, v in inputs.items()})["images"].numpy()
    assert np.abs(served.astype(int) - a.astype(int)).max() <= 1

    # The discriminator comes back from the checkpoint, through the card.
    nets = restore_networks(tmp_path)
    trainer = GANTrainer(config)
    tf.train.Checkpoint(discriminator=trainer.discriminator).restore(
        tf.train.latest_checkpoint(str(tmp_path / "ckpt"))).expect_partial()
    for w, v in zip(nets["discriminator"].get_weights(), trainer.discriminator.get_weights()):
        np.testing.assert_array_equal(w, v)


def test_conditional_step_changes_every_variable():
    trainer = GANTrainer(TrainConfig(**SMALL, variant="cdcgan-test"))
    assert isinstance(trainer.model, ConditionalDCGAN)
    variables = trainer.generator.trainable_variables + trainer.discriminator.trainable_variables
    before = [v.numpy().copy() for v in variables]
    out = trainer.train_step(next(iter(_labeled())))
    assert set(out) == set(DCGAN.scalars)
    assert all(not np.array_equal(a, v.numpy()) for a, v in zip(before, variables))


def test_an_objective_brings_its_own_scalars_and_plots(tmp_path):
    train(TrainConfig(**SMALL, variant="lsgan-test"), _images(), tmp_path)
    rows = list(csv.reader(open(tmp_path / "metrics.csv")))
    assert rows[0] == ["step", "d_loss", "g_loss", "d_margin"] and [r[0] for r in rows[1:]] == ["1", "2"]
    assert (tmp_path / "losses.png").stat().st_size > 0
    assert read_card(tmp_path).variant == "lsgan-test"


def test_unknown_variant_option_is_one_clear_error():
    with pytest.raises(ValueError, match=r"variant 'dcgan' has no option\(s\) \['clip'\]"):
        DCGAN(TrainConfig(**SMALL, options={"clip": 0.01}))
    with pytest.raises(ValueError, match="variant must be one of"):
        TrainConfig(variant="nope")


def _card(**kw):
    base = dict(variant="dcgan", resolution=32, channels=3, inputs=[noise_spec(10)])
    return ModelCard(**{**base, **kw})


def test_model_card_round_trips_and_refuses_bad_cards(tmp_path):
    card = _card(inputs=[noise_spec(10, "normal"), InputSpec("c", "attribute", 2, labels=("brightness", "Male"),
                                                               range=(0, 5), meta={"extractor": "brightness"})],
                 dataset={"name": "celeba", "version": "v-1"}, steps=7, weights="ema")
    write_card(tmp_path, card)
    back = read_card(tmp_path)
    assert back == card and back.created
    assert back.input("c").range == (0.0, 5.0) and back.z.distribution == "normal"
    with pytest.raises(ValueError, match="first input must be the noise"):
        ModelCard(variant="x", resolution=8, channels=1, inputs=[InputSpec("c", "attribute", 1)])
    (tmp_path / CARD_FILE).write_text("{}")
    with pytest.raises(ValueError, match="not a readable model card"):
        read_card(tmp_path)
    with pytest.raises(FileNotFoundError, match="not an exported run folder"):
        read_card(tmp_path / "nowhere")


def test_inputs_are_checked_against_the_card():
    card = _card(inputs=[noise_spec(10), InputSpec("label", "onehot", 3)])
    good = sample_inputs(card, 2)
    assert set(check_inputs(card, good)) == {"z", "label"}
    with pytest.raises(ValueError, match="missing generator input 'label'"):
        check_inputs(card, {"z": good["z"]})
    with pytest.raises(ValueError, match=r"input 'z' must have shape \(n, 10\)"):
        check_inputs(card, {**good, "z": np.zeros((2, 9))})
    with pytest.raises(ValueError, match="NaN"):
        check_inputs(card, {**good, "z": np.full((2, 10), np.nan)})


def test_consumers_follow_the_card(tmp_path):
    """Export and sampling read the card: change the card, they follow."""
    train(TrainConfig(**{**SMALL, "steps": 1}, variant="cdcgan-test"), _labeled(), tmp_path / "run")
    run = tmp_path / "run"
    out = tmp_path / "export"
    out.mkdir()
    index = export_samples(run, out, n=4, interpolations=2, interpolation_steps=3)
    assert "label_rows.png" in index and (out / "label_rows.png").exists()
    from PIL import Image
    assert Image.open(out / "label_rows.png").size == (10 * 34 + 2, CLASSES * 34 + 2)  # a row per class
    assert Image.open(out / "interpolations.png").size == (3 * 34 + 2, 2 * 34 + 2)

    # Declare the z prior normal instead of uniform: the samples change, since every
    # consumer draws z from the card.
    card = read_card(run)
    uniform = sample_inputs(card, 3, seed=0)["z"]
    write_card(run, replace(card, inputs=[noise_spec(100, "normal"), *card.extra_inputs]))
    normal = sample_inputs(read_card(run), 3, seed=0)["z"]
    assert uniform.min() >= -1 and uniform.max() <= 1 and np.abs(normal).max() > 1
    again = tmp_path / "again"
    again.mkdir()
    export_samples(run, again, n=4, interpolations=2, interpolation_steps=3)
    assert not np.array_equal(np.asarray(Image.open(again / "grid.png")), np.asarray(Image.open(out / "grid.png")))


def test_a_copied_run_folder_needs_only_its_card(tmp_path):
    """generator.keras loads in plain Keras without this project on the path, and export
    works from a copy without checkpoints."""
    train(TrainConfig(**{**SMALL, "steps": 1}), _images(), tmp_path / "run")
    copy = tmp_path / "elsewhere"
    shutil.copytree(tmp_path / "run", copy, ignore=shutil.ignore_patterns("ckpt", "tb", "metrics.csv"))
    out = tmp_path / "export"
    out.mkdir()
    assert "grid.png" in export_samples(copy, out, n=2, interpolations=1, interpolation_steps=2)
    card = json.loads((copy / CARD_FILE).read_text())
    code = textwrap.dedent(f"""
        import sys
        import keras, numpy as np
        g = keras.models.load_model({str(copy / "generator.keras")!r}, compile=False)
        print(g(np.zeros((1, {card["inputs"][0]["size"]}), "float32")).shape)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path, env={"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0 and "(1, 32, 32, 3)" in proc.stdout, proc.stderr[-2000:]

