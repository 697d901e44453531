"""The GAN training loop: one step function, checkpoints, resume, logs.

Networks (model/dcgan.py) and losses (model/losses.py) are separate, so a
variant (WGAN-GP, ACGAN, ...) swaps those and reuses :class:`GANTrainer`.
A run lives in one folder: ``ckpt/`` (tf.train checkpoints: both networks,
both optimizers, the step and the noise generator's state), ``metrics.csv``,
and, when finished, ``generator.keras``.
"""
from __future__ import annotations

import csv
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import keras
import tensorflow as tf

from model import losses
from model.dcgan import build_discriminator, build_generator

SCALARS = ("d_loss", "g_loss", "d_real", "d_fake", "d_acc_real", "d_acc_fake")


@dataclass
class TrainConfig:
    """Hyper-parameters; the defaults are the paper's."""
    resolution: int = 64
    channels: int = 3
    z_dim: int = 100
    z_dist: str = "normal"      # "normal" N(0, 1) or "uniform" U(-1, 1) as in the paper
    base_width: int = 128       # 4x4x1024 at 64x64
    kernel_size: int = 4        # 4 as in the reference Torch code; 5 as in DCGAN-tensorflow
    batch_size: int = 64
    lr: float = 2e-4
    beta1: float = 0.5
    g_steps: int = 1            # generator updates per discriminator update
    steps: int = 1000
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 100
    shuffle_buffer: int = 10_000

    def __post_init__(self):
        if self.z_dist not in ("normal", "uniform"):
            raise ValueError(f"z_dist must be 'normal' or 'uniform', got {self.z_dist!r}")
        for name in ("steps", "batch_size", "g_steps", "z_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


def sample_z(rng: tf.random.Generator, n: int, z_dim: int, dist: str) -> tf.Tensor:
    """A ``(n, z_dim)`` float32 noise batch from ``rng``."""
    if dist == "uniform":
        return rng.uniform((n, z_dim), -1.0, 1.0)
    return rng.normal((n, z_dim))


class DivergenceError(RuntimeError):
    """A loss became NaN or Inf; the last good checkpoint is kept."""


class GANTrainer:
    """Holds the networks, optimizers and noise stream, and runs training steps."""

    def __init__(self, config: TrainConfig, generator: keras.Model | None = None,
                 discriminator: keras.Model | None = None):
        self.config = c = config
        keras.utils.set_random_seed(c.seed)  # weight init is part of the run's identity
        self.generator = generator or build_generator(c.resolution, c.channels, c.z_dim,
                                                      c.base_width, c.kernel_size)
        self.discriminator = discriminator or build_discriminator(c.resolution, c.channels,
                                                                  c.base_width, c.kernel_size)
        self.g_opt = keras.optimizers.Adam(c.lr, beta_1=c.beta1)
        self.d_opt = keras.optimizers.Adam(c.lr, beta_1=c.beta1)
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.rng = tf.random.Generator.from_seed(c.seed + 1)
        # Build optimizer slots now so a restored checkpoint fills them in place.
        self.g_opt.build(self.generator.trainable_variables)
        self.d_opt.build(self.discriminator.trainable_variables)

    def checkpoint(self) -> tf.train.Checkpoint:
        return tf.train.Checkpoint(generator=self.generator, discriminator=self.discriminator,
                                   g_opt=self.g_opt, d_opt=self.d_opt, step=self.step, rng=self.rng)

    @tf.function
    def train_step(self, real: tf.Tensor) -> dict[str, tf.Tensor]:
        """One discriminator update, then ``g_steps`` generator updates."""
        c = self.config
        n = tf.shape(real)[0]
        z = sample_z(self.rng, n, c.z_dim, c.z_dist)
        with tf.GradientTape() as tape:
            fake = self.generator(z, training=True)
            real_logits = self.discriminator(real, training=True)
            fake_logits = self.discriminator(fake, training=True)
            d_loss = losses.discriminator_loss(real_logits, fake_logits)
        grads = tape.gradient(d_loss, self.discriminator.trainable_variables)
        self.d_opt.apply_gradients(zip(grads, self.discriminator.trainable_variables))
        for _ in range(c.g_steps):
            z = sample_z(self.rng, n, c.z_dim, c.z_dist)
            with tf.GradientTape() as tape:
                g_logits = self.discriminator(self.generator(z, training=True), training=True)
                g_loss = losses.generator_loss(g_logits)
            grads = tape.gradient(g_loss, self.generator.trainable_variables)
            self.g_opt.apply_gradients(zip(grads, self.generator.trainable_variables))
        self.step.assign_add(1)
        return {"d_loss": d_loss, "g_loss": g_loss, **losses.discriminator_stats(real_logits, fake_logits)}


def save_keras_atomic(model: keras.Model, path: str | os.PathLike) -> None:
    """Save ``model`` as ``.keras`` under a temporary name, then rename."""
    path = Path(path)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")  # Keras insists on the suffix
    model.save(tmp)
    os.replace(tmp, path)


def train(config: TrainConfig, dataset: tf.data.Dataset, run_dir: str | os.PathLike,
          progress: Callable[[int, int, dict], None] | None = None) -> dict:
    """Train to ``config.steps`` in ``run_dir``, resuming from its last checkpoint.

    ``dataset`` yields image batches forever, in an order fixed by the seed;
    on resume the batches already used are skipped. ``progress(step, steps,
    scalars)`` is called every ``log_every`` steps. Writes ``generator.keras``
    last and returns the final scalars.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    trainer = GANTrainer(config)
    ckpt = trainer.checkpoint()
    manager = tf.train.CheckpointManager(ckpt, run_dir / "ckpt", max_to_keep=3)
    if manager.latest_checkpoint:
        ckpt.restore(manager.latest_checkpoint).assert_existing_objects_matched()
    start = int(trainer.step.numpy())
    metrics_path = run_dir / "metrics.csv"
    _truncate_metrics(metrics_path, start)
    new_file = not metrics_path.exists()
    scalars: dict = {}
    with open(metrics_path, "a", newline="") as fh:
        writer = csv.writer(fh)
        if new_file:
            writer.writerow(("step", *SCALARS))
        for real in dataset.skip(start).take(max(0, config.steps - start)):
            out = trainer.train_step(real)
            step = int(trainer.step.numpy())
            # Checked every step, so a checkpoint never holds diverged weights.
            scalars = {k: float(v) for k, v in out.items()}
            if not all(math.isfinite(v) for v in scalars.values()):
                raise DivergenceError(
                    f"loss is not finite at step {step} ({scalars}); the last good checkpoint "
                    f"{manager.latest_checkpoint} is kept: lower the learning rate or change the seed")
            if step % config.log_every == 0 or step == config.steps:
                writer.writerow((step, *(f"{scalars[k]:.6g}" for k in SCALARS)))
                fh.flush()
                if progress is not None:
                    progress(step, config.steps, scalars)
            if step % config.checkpoint_every == 0 or step == config.steps:
                manager.save(checkpoint_number=step)
    save_keras_atomic(trainer.generator, run_dir / "generator.keras")
    return {"step": int(trainer.step.numpy()), **scalars, "config": asdict(config)}


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop CSV rows past ``step`` (logged after the checkpoint we resume from)."""
    if not path.exists():
        return
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    kept = [rows[0]] + [r for r in rows[1:] if r and int(r[0]) <= step]
    if len(kept) != len(rows):
        with open(path, "w", newline="") as fh:
            csv.writer(fh).writerows(kept)
