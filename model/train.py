"""The GAN training loop: one step function, checkpoints, resume, logs.

Networks (model/dcgan.py) and losses (model/losses.py) are separate, so a
variant (WGAN-GP, ACGAN, ...) swaps those and reuses :class:`GANTrainer`.
A run lives in one folder:

    ckpt/            tf.train checkpoints: both networks, both optimizers,
                     the step and the noise generator's state
    metrics.csv      the scalars every ``log_every`` steps
    tb/              TensorBoard scalars and fixed-noise image grids
    progress/        the fixed-noise grid as PNG every ``sample_every`` steps
    losses.png       the loss curves, drawn at the end
    generator.keras  the exported float32 generator, written last
"""
from __future__ import annotations

import csv
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from model import losses
from model.dcgan import build_discriminator, build_generator
from model.optim import FusedAdam

SCALARS = ("d_loss", "g_loss", "d_real", "d_fake", "d_acc_real", "d_acc_fake")
PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")


@dataclass
class TrainConfig:
    """Hyper-parameters; the defaults are the paper's."""
    resolution: int = 64
    channels: int = 3
    z_dim: int = 100
    z_dist: str = "uniform"     # "uniform" U(-1, 1) as in the paper, or "normal" N(0, 1)
    base_width: int = 128       # 4x4x1024 at 64x64
    kernel_size: int = 4        # 4 as in the reference Torch code; 5 as in DCGAN-tensorflow
    batch_size: int = 64        # global batch, split across replicas
    lr: float = 2e-4
    beta1: float = 0.5
    g_steps: int = 1            # generator updates per discriminator update
    steps: int = 1000
    seed: int = 0
    precision: str = "float32"  # see PRECISIONS; "auto" picks by hardware
    log_every: int = 10
    checkpoint_every: int = 100
    sample_every: int = 0       # fixed-noise grid every N steps (0: only at the end)
    shuffle_buffer: int = 10_000

    def __post_init__(self):
        if self.z_dist not in ("normal", "uniform"):
            raise ValueError(f"z_dist must be 'normal' or 'uniform', got {self.z_dist!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        for name in ("steps", "batch_size", "g_steps", "z_dim", "log_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


def resolve_precision(precision: str) -> str:
    """The Keras dtype policy for ``precision``. ``auto`` (TrainDCGAN's default) is
    ``mixed_bfloat16`` on CPUs with AMX/AVX-512 bfloat16 units, where it was measured
    2-3x faster than float32 at the same sample quality (docs/training.md), and
    float32 elsewhere, GPUs included: ``mixed_float16`` must be asked for."""
    if precision != "auto":
        return precision
    if tf.config.list_physical_devices("GPU"):
        return "float32"
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        flags = ""
    return "mixed_bfloat16" if ("amx_bf16" in flags or "avx512_bf16" in flags) else "float32"


def make_strategy() -> tf.distribute.Strategy:
    """MultiWorkerMirroredStrategy under TF_CONFIG, MirroredStrategy over several
    visible GPUs (or several logical CPUs), else the default strategy."""
    if os.environ.get("TF_CONFIG"):
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy([d.name for d in gpus])
    cpus = tf.config.list_logical_devices("CPU")
    if not gpus and len(cpus) > 1:
        return tf.distribute.MirroredStrategy([d.name for d in cpus])
    return tf.distribute.get_strategy()


def sample_z(rng: tf.random.Generator, n, z_dim: int, dist: str) -> tf.Tensor:
    """A ``(n, z_dim)`` float32 noise batch from ``rng``."""
    if dist == "uniform":
        return rng.uniform((n, z_dim), -1.0, 1.0)
    return rng.normal((n, z_dim))


def fixed_noise(config: TrainConfig, n: int = 64) -> np.ndarray:
    """The noise batch whose images are tracked over training (same across resumes)."""
    from model.sampling import noise
    return noise(n, config.z_dim, config.z_dist, seed=config.seed + 2)


class DivergenceError(RuntimeError):
    """A loss became NaN or Inf; the last good checkpoint is kept."""


class GANTrainer:
    """Holds the networks, optimizers and noise stream, and runs training steps."""

    def __init__(self, config: TrainConfig, strategy: tf.distribute.Strategy | None = None):
        self.config = c = config
        self.strategy = strategy or tf.distribute.get_strategy()
        self.policy = resolve_precision(c.precision)
        keras.utils.set_random_seed(c.seed)  # weight init is part of the run's identity
        previous = keras.config.dtype_policy()
        keras.config.set_dtype_policy(self.policy)
        try:
            with self.strategy.scope():
                self.generator = build_generator(c.resolution, c.channels, c.z_dim, c.base_width, c.kernel_size)
                self.discriminator = build_discriminator(c.resolution, c.channels, c.base_width, c.kernel_size)
                self.g_opt = self._optimizer()
                self.d_opt = self._optimizer()
                self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
                self.rng = tf.random.Generator.from_seed(c.seed + 1)
                # Build optimizer slots now so a restored checkpoint fills them in place.
                self.g_opt.build(self.generator.trainable_variables)
                self.d_opt.build(self.discriminator.trainable_variables)
        finally:
            keras.config.set_dtype_policy(previous)

    def _optimizer(self):
        opt = FusedAdam(self.config.lr, beta_1=self.config.beta1)
        # float16 needs loss scaling; bfloat16 has float32's exponent range and does not.
        return keras.optimizers.LossScaleOptimizer(opt) if self.policy == "mixed_float16" else opt

    def checkpoint(self) -> tf.train.Checkpoint:
        return tf.train.Checkpoint(generator=self.generator, discriminator=self.discriminator,
                                   g_opt=self.g_opt, d_opt=self.d_opt, step=self.step, rng=self.rng)

    def _apply(self, opt, tape, loss, variables):
        if isinstance(opt, keras.optimizers.LossScaleOptimizer):
            grads = tape.gradient(opt.scale_loss(loss), variables)
        else:
            grads = tape.gradient(loss, variables)
        opt.apply_gradients(zip(grads, variables))

    def _replica_step(self, real: tf.Tensor) -> dict[str, tf.Tensor]:
        """One discriminator update, then ``g_steps`` generator updates.

        As in the reference Torch code, the first generator update reuses the
        fake batch the discriminator just saw (one generator forward pass
        fewer); later ones draw new noise.
        """
        c = self.config
        n = tf.shape(real)[0]
        G, D = self.generator, self.discriminator
        with tf.GradientTape() as g_tape:
            z = sample_z(self.rng, n, c.z_dim, c.z_dist)
            fake = G(z, training=True)
            with g_tape.stop_recording(), tf.GradientTape() as d_tape:
                real_logits = D(real, training=True)
                fake_logits = D(fake, training=True)
                d_loss = losses.discriminator_loss(real_logits, fake_logits, c.batch_size)
                self._apply(self.d_opt, d_tape, d_loss, D.trainable_variables)
            g_loss = losses.generator_loss(D(fake, training=True), c.batch_size)
        self._apply(self.g_opt, g_tape, g_loss, G.trainable_variables)
        for _ in range(c.g_steps - 1):
            with tf.GradientTape() as g_tape:
                z = sample_z(self.rng, n, c.z_dim, c.z_dist)
                g_loss = losses.generator_loss(D(G(z, training=True), training=True), c.batch_size)
            self._apply(self.g_opt, g_tape, g_loss, G.trainable_variables)
        stats = losses.discriminator_stats(real_logits, fake_logits, c.batch_size)
        return {"d_loss": d_loss, "g_loss": g_loss, **stats}

    @tf.function
    def train_step(self, real) -> dict[str, tf.Tensor]:
        """One training step on a (possibly distributed) global batch; returns
        the global scalars."""
        out = self.strategy.run(self._replica_step, args=(real,))
        summed = {k: self.strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for k, v in out.items()}
        self.step.assign_add(1)
        return summed

    def export_generator(self) -> keras.Model:
        """A float32 copy of the generator, whatever the training precision."""
        c = self.config
        g = build_generator(c.resolution, c.channels, c.z_dim, c.base_width, c.kernel_size, fast=False)
        g.set_weights(self.generator.get_weights())
        return g


def save_keras_atomic(model: keras.Model, path: str | os.PathLike) -> None:
    """Save ``model`` as ``.keras`` under a temporary name, then rename."""
    path = Path(path)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")  # Keras insists on the suffix
    model.save(tmp)
    os.replace(tmp, path)


def train(config: TrainConfig, dataset: tf.data.Dataset, run_dir: str | os.PathLike,
          progress: Callable[[int, int, dict], None] | None = None,
          strategy: tf.distribute.Strategy | None = None,
          on_checkpoint: Callable[[int, GANTrainer], None] | None = None) -> dict:
    """Train to ``config.steps`` in ``run_dir``, resuming from its last checkpoint.

    ``dataset`` yields global image batches forever, in an order fixed by the
    seed; on resume the batches already used are skipped, and the noise
    generator's state comes back with the checkpoint, so a resumed run sees
    the same data and noise as an uninterrupted one. ``progress(step, steps,
    scalars)`` is called every ``log_every`` steps, ``on_checkpoint(step,
    trainer)`` right after each checkpoint is saved (e.g. to evaluate the
    generator; see tasks/train.py ``eval_every``). Writes ``generator.keras``
    last and returns the final scalars.
    """
    from model.export import export_saved_model
    from model.sampling import generate, grid, save_png

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    strategy = strategy or make_strategy()
    trainer = GANTrainer(config, strategy)
    ckpt = trainer.checkpoint()
    manager = tf.train.CheckpointManager(ckpt, run_dir / "ckpt", max_to_keep=3)
    if manager.latest_checkpoint:
        ckpt.restore(manager.latest_checkpoint).assert_existing_objects_matched()
    start = int(trainer.step.numpy())
    metrics_path = run_dir / "metrics.csv"
    _truncate_metrics(metrics_path, start)
    new_file = not metrics_path.exists()
    z_fixed = fixed_noise(config)
    tb = tf.summary.create_file_writer(str(run_dir / "tb"))

    def snapshot(step: int) -> None:
        images = generate(trainer.generator, z_fixed)
        save_png(grid(images, 8, 8), run_dir / "progress" / f"step-{step:07d}.png")
        with tb.as_default(step=step):
            tf.summary.image("fixed_noise", images[:16], max_outputs=16)

    batches = strategy.experimental_distribute_dataset(dataset.skip(start).take(max(0, config.steps - start)))
    scalars: dict = {}
    with open(metrics_path, "a", newline="") as fh:
        writer = csv.writer(fh)
        if new_file:
            writer.writerow(("step", *SCALARS))
        for real in batches:
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
                with tb.as_default(step=step):
                    for k, v in scalars.items():
                        tf.summary.scalar(k, v)
                if progress is not None:
                    progress(step, config.steps, scalars)
            if (config.sample_every and step % config.sample_every == 0) or step == config.steps:
                snapshot(step)
            if step % config.checkpoint_every == 0 or step == config.steps:
                manager.save(checkpoint_number=step)
                if on_checkpoint is not None:
                    on_checkpoint(step, trainer)
    tb.close()
    plot_losses(metrics_path, run_dir / "losses.png")
    generator = trainer.export_generator()
    export_saved_model(generator, run_dir / "saved_model")
    save_keras_atomic(generator, run_dir / "generator.keras")  # last: the task's completion marker
    return {"step": int(trainer.step.numpy()), **scalars, "precision": trainer.policy,
            "replicas": strategy.num_replicas_in_sync, "config": asdict(config)}


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


def plot_losses(metrics_csv: str | os.PathLike, out_png: str | os.PathLike) -> None:
    """Draw the loss and D(x)/D(G(z)) curves of ``metrics.csv`` into a PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(metrics_csv, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return
    steps = [int(r["step"]) for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
    for key in ("d_loss", "g_loss"):
        ax1.plot(steps, [float(r[key]) for r in rows], label=key)
    for key in ("d_real", "d_fake"):
        ax2.plot(steps, [float(r[key]) for r in rows], label=key.replace("d_real", "D(x)").replace("d_fake", "D(G(z))"))
    ax1.set_title("losses")
    ax2.set_title("discriminator outputs")
    ax2.set_ylim(0, 1)
    for ax in (ax1, ax2):
        ax.set_xlabel("step")
        ax.legend()
    fig.tight_layout()
    tmp = Path(out_png).with_name(f".tmp-{Path(out_png).name}")
    fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    os.replace(tmp, out_png)
