"""A learned inverse of a run's generator: an encoder E from an aligned face to the
generator's inputs, in the spirit of in-domain GAN inversion (Zhu et al. 2020).

    face (n, S, S, C) in [-1, 1] -> the DCGAN discriminator body (layer norm) -> per optimised
    input of the model card (z, continuous codes, attribute codes c): Dense -> its range

E is trained with the generator G frozen, on two kinds of batch each step:

* G's own samples ``x = G(w)`` (``w`` drawn from the card): the latent loss ``|E(x) - w|^2``
  on every optimised input, plus the image loss ``|G(E(x)) - x|``;
* real training faces ``y`` (when a records folder is given): the image loss
  ``|G(E(y)) - y|`` alone (their inputs are unknown). One-hot inputs (a class) are not
  encoded: they are drawn from the card for the real term and searched over afterwards.

Projection and completion (model/apps/inversion.py) start their search from ``E(x)`` when a
run carries an encoder: ``encoder.keras`` and ``encoder.json`` (settings, steps, final losses)
in the run folder, declared in the model card's ``files`` as ``encoder``.
"""
from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from model.card import ModelCard, read_card, sample_inputs, write_card
from model.config import EncoderSettings
from model.nets.dcgan import discriminator_body
from pipeline.atomic import write_json

ENCODER_FILE = "encoder.keras"
ENCODER_INFO = "encoder.json"
#: Input kinds E predicts (the others, one-hot classes, are searched).
ENCODED_KINDS = ("noise", "continuous", "attribute")


def encoded_specs(card: ModelCard) -> list:
    """The card's inputs E predicts, in the card's order."""
    return [s for s in card.inputs if s.kind in ENCODED_KINDS]


def build_encoder(card: ModelCard, base_width: int = 32) -> keras.Model:
    """E: ``(n, S, S, C)`` in [-1, 1] -> ``{name: (n, size)}`` for :func:`encoded_specs`. Inputs
    with a bounded range end in a tanh scaled onto it; normal noise is linear."""
    image, features = discriminator_body(card.resolution, card.channels, base_width, fast=False, norm="layer")
    outputs = {}
    for spec in encoded_specs(card):
        bounded = not (spec.kind == "noise" and spec.distribution == "normal")
        x = keras.layers.Dense(spec.size, activation="tanh" if bounded else None, name=f"to_{spec.name}")(features)
        if bounded:
            low, high = (0.0, 1.0) if spec.kind == "attribute" else spec.range
            x = keras.layers.Rescaling((high - low) / 2, offset=(high + low) / 2, name=f"{spec.name}_range")(x)
        outputs[spec.name] = x
    return keras.Model(image, outputs, name="encoder")


def _call_generator(generator, inputs: dict):
    return generator(inputs["z"] if len(generator.inputs) == 1 else inputs, training=False)


def train_encoder(generator: keras.Model, card: ModelCard, settings: EncoderSettings | None = None,
                  real: tf.data.Dataset | None = None,
                  progress: Callable[[int, int, dict], None] | None = None) -> tuple[keras.Model, dict]:
    """Train E for ``settings.steps`` on G's samples and, with ``real`` (batches of float32 faces
    in [-1, 1], repeated), on real faces. Returns ``(encoder, losses)`` (the last step's).
    ``progress(step, steps, losses)`` every 50 steps."""
    settings = settings or EncoderSettings()
    keras.utils.set_random_seed(settings.seed)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        encoder = build_encoder(card, settings.base_width)
    finally:
        keras.config.set_dtype_policy(previous)
    names = [s.name for s in encoded_specs(card)]
    optimizer = keras.optimizers.Adam(settings.lr, beta_1=0.5)
    optimizer.build(encoder.trainable_variables)
    lw, iw = settings.latent_weight, settings.image_weight

    def losses(drawn, real_batch):
        fake = tf.stop_gradient(_call_generator(generator, drawn))
        guessed = encoder(fake, training=True)
        latent = tf.add_n([tf.reduce_mean(tf.square(guessed[k] - drawn[k])) for k in names])
        image = tf.reduce_mean(tf.abs(_call_generator(generator, {**drawn, **guessed}) - fake))
        out = {"latent": latent, "image_fake": image}
        total = lw * latent + iw * image
        if real_batch is not None:
            recon = _call_generator(generator, {**drawn, **encoder(real_batch, training=True)})
            out["image_real"] = tf.reduce_mean(tf.abs(recon - real_batch))
            total += iw * out["image_real"]
        out["total"] = total
        return out

    @tf.function
    def step(drawn, real_batch):
        with tf.GradientTape() as tape:
            out = losses(drawn, real_batch)
        grads = tape.gradient(out["total"], encoder.trainable_variables)
        optimizer.apply_gradients(zip(grads, encoder.trainable_variables))
        return out

    batches = iter(real.repeat()) if real is not None else None
    last: dict = {}
    for k in range(settings.steps):
        drawn = {n: tf.constant(v) for n, v in
                 sample_inputs(card, settings.batch_size, seed=settings.seed * 1_000_003 + k).items()}
        last = step(drawn, next(batches) if batches is not None else None)
        if progress is not None and ((k + 1) % 50 == 0 or k + 1 == settings.steps):
            progress(k + 1, settings.steps, {n: float(v) for n, v in last.items()})
    return encoder, {n: float(v) for n, v in last.items()}


def encode(encoder: keras.Model, images: np.ndarray) -> dict[str, np.ndarray]:
    """``uint8`` faces ``(n, S, S, C)`` -> ``{name: (n, size) float32}`` of E."""
    x = np.asarray(images, np.float32) * (1 / 127.5) - 1.0
    return {k: np.asarray(v, np.float32) for k, v in encoder(x, training=False).items()}


def save_encoder(run_dir, encoder: keras.Model, info: dict) -> Path:
    """Write ``encoder.keras`` and ``encoder.json`` into ``run_dir`` (atomically) and declare
    the encoder in the run's model card; returns the encoder's path."""
    from model.train.loop import save_keras_atomic

    run_dir = Path(run_dir)
    save_keras_atomic(encoder, run_dir / ENCODER_FILE)
    card = read_card(run_dir)
    card.files["encoder"] = ENCODER_FILE
    write_card(run_dir, card)
    # last: TrainEncoder's completion marker
    write_json(run_dir / ENCODER_INFO, {"format": "facegan-encoder/1", "file": ENCODER_FILE, **info})
    return run_dir / ENCODER_FILE


def load_encoder(run_dir) -> keras.Model | None:
    """The run's encoder when its card declares one (and the file is there), else None."""
    run_dir = Path(run_dir)
    name = read_card(run_dir).files.get("encoder")
    if not name or not (run_dir / name).is_file():
        return None
    return keras.models.load_model(run_dir / name, compile=False)


def fit_encoder(run_dir, records: str | None, settings: EncoderSettings | None = None,
                progress: Callable[[int, int, dict], None] | None = None) -> dict:
    """``TrainEncoder``'s work: train E for the run in ``run_dir`` (its generator frozen) on its
    samples and on the ``train`` split of ``records`` (None: samples only), then measure E alone
    on held-out samples and save. Returns what ``encoder.json`` holds."""
    from model.card import load_generator
    from model.train.data import image_dataset
    from model.train.sampling import generate

    settings = settings or EncoderSettings()
    card, generator = load_generator(run_dir)
    real = None
    if records:
        real = image_dataset(records, "train", batch_size=settings.batch_size, seed=settings.seed)
    start = time.monotonic()
    encoder, losses = train_encoder(generator, card, settings, real, progress)
    seconds = time.monotonic() - start
    held = sample_inputs(card, 256, seed=10_000 + settings.seed)
    guessed = encode(encoder, generate(generator, held))
    errors = {k: float(np.mean((guessed[k] - held[k]) ** 2)) for k in guessed}
    info = {"settings": asdict(settings), "records": records, "train_seconds": round(seconds, 1),
            "final_losses": losses, "heldout_latent_mse": errors,
            "heldout_latent_mse_of_the_prior_mean": {k: float(np.mean((held[k] - held[k].mean(0)) ** 2))
                                                     for k in guessed}}
    save_encoder(run_dir, encoder, info)
    return info
