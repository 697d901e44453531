"""The GAN training loop, written once: every variant (model/variants/) trains through it.

A variant hands the loop its networks, optimizers and objective (one training
step: the D and G updates and the scalars it reports; see
model/variants/base.py). The loop owns everything else: dtype policy and
distribution strategy, checkpoints and exact resume, the NaN guard,
``metrics.csv`` and TensorBoard, fixed-noise grids, the loss plot, and the
export with its model card. Under several replicas or machines (model/train/distribute.py)
a step is the step one device makes on the global batch, and only the chief writes the
run folder. A run lives in one folder:

    ckpt/            tf.train checkpoints: the variant's networks and optimizers,
                     the step and the noise generator's state
    metrics.csv      the variant's scalars every ``log_every`` steps
    tb/              TensorBoard scalars and fixed-noise image grids
    progress/        the fixed-noise grid as PNG every ``sample_every`` steps
    budget.json      the step count a run with ``max_minutes`` chose (model/train/budget.py)
    losses.png       the scalar curves, drawn at the end
    saved_model/     the exported generator for serving (every input -> uint8 images)
    openvino/        the same signature as OpenVINO IR, the studio's engine (when installed)
    model_card.json  what the exported generator is (model/card.py)
    generator.keras  the exported float32 generator, written last
"""
from __future__ import annotations

import csv
import math
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from model.card import ModelCard, write_card
from model.config import PRECISIONS, TrainConfig  # noqa: F401  (re-exported)
from model.train.budget import BUDGET_FILE, BudgetPlanner, read_plan
from model.train.distribute import (
    GlobalBatchDraws,
    barrier,
    broadcast_from_chief,
    check_global_batch,
    is_multi_worker,
    make_strategy,
    shard_by_batch_rows,
    shared_generator,
    writable_run_dir,
)
from model.train.ema import WeightAverage, recompute_batch_norm
from model.train.precision import resolve_precision  # noqa: F401  (re-exported)
from model.variants import build_variant
from model.variants.base import GANModel, sample_input_tf


class DivergenceError(RuntimeError):
    """A loss became NaN or Inf; the last good checkpoint is kept."""


class GANTrainer:
    """The loop's state: a variant's networks and optimizers (built here under the run's
    dtype policy and strategy), the step counter and the noise stream; runs training steps.

    ``model`` is the variant to train; by default the one ``config.variant`` names.
    """

    def __init__(self, config: TrainConfig, strategy: tf.distribute.Strategy | None = None,
                 model: GANModel | None = None):
        self.config = c = config
        self.strategy = strategy or tf.distribute.get_strategy()
        self.policy = resolve_precision(c.precision)
        self.model = model or build_variant(c)
        replicas = self.strategy.num_replicas_in_sync
        check_global_batch(c.batch_size, replicas)
        keras.utils.set_random_seed(c.seed)  # weight init is part of the run's identity
        # Several replicas draw the noise one device draws for the global batch (distribute.py).
        shared = shared_generator(c.seed + 1, self.strategy) if replicas > 1 else None
        previous = keras.config.dtype_policy()
        keras.config.set_dtype_policy(self.policy)
        try:
            with self.strategy.scope():
                self.rng = tf.random.Generator.from_seed(c.seed + 1) if shared is None else shared
                self.model.rng = self.rng if shared is None else GlobalBatchDraws(shared, replicas)
                self.model.policy = self.policy
                self.model.build()
                self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
                # Build optimizer slots now so a restored checkpoint fills them in place.
                for opt, variables in self.model.optimizer_variables():
                    opt.build(variables)
                self.ema = (WeightAverage(self.model.generator, c.ema, raw=self.model.unaveraged_variables())
                            if c.ema else None)
        finally:
            keras.config.set_dtype_policy(previous)
        #: The step the run ends at: ``config.steps``, or the count a ``max_minutes`` budget chose.
        self.last_step = c.steps
        #: The budget's record (model/train/budget.py), once the step count is chosen.
        self.budget: dict | None = None
        self._averaged: tuple[int, keras.Model] | None = None  # (step, G): averaged_generator()

    @property
    def generator(self) -> keras.Model:
        return self.model.generator

    @property
    def discriminator(self) -> keras.Model:
        return self.model.discriminator

    def checkpoint(self) -> tf.train.Checkpoint:
        extra = {"ema": self.ema} if self.ema is not None else {}
        return tf.train.Checkpoint(**self.model.trackables(), step=self.step, rng=self.rng, **extra)

    # No AutoGraph: the step's control flow is all Python (variants, options, critic loops),
    # so converting its ~60 functions only cost time: 38% of a tiny run's step phase (cProfile).
    @tf.function(autograph=False)
    def train_step(self, batch) -> dict[str, tf.Tensor]:
        """One training step on a (possibly distributed) global batch: a dict of features
        (or the image tensor alone); returns the global scalars."""
        if not isinstance(batch, dict):
            batch = {"image": batch}
        out = self.strategy.run(self.model.train_step, args=(batch,))
        summed = {k: self.strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for k, v in out.items()}
        if self.ema is not None:
            self.ema.update(self.model.generator)
        self.step.assign_add(1)
        return summed

    def export_generator(self, weights: str | None = None) -> keras.Model:
        """A float32 plain-Keras generator, whatever the training precision: a copy of its
        current weights (``"generator"``) or the moving average (``"ema"``; the default when
        the run keeps one), which is :meth:`averaged_generator`'s model: read it, don't change it."""
        weights = weights or ("ema" if self.ema is not None else "generator")
        if weights == "ema":
            return self.averaged_generator()
        g = self.model.inference_generator()
        g.set_weights(self.generator.get_weights())
        return g

    def averaged_generator(self) -> keras.Model:
        """An inference generator holding the weight average as of the current step (with its
        own batch-norm statistics under ``ema_bn_batches``): loaded once per step, so the
        grids, a checkpoint's evaluation and the export of the last step share one load. The
        same model is reloaded in place at a later step: keep a copy to keep a step's weights."""
        if self.ema is None:
            raise ValueError("this run keeps no weight average (train with ema > 0)")
        step = int(self.step.numpy())
        if self._averaged is None:
            self._averaged = (-1, self.model.inference_generator())
        if self._averaged[0] != step:
            load_average(self._averaged[1], self.ema, self.model, self.config)
            self._averaged = (step, self._averaged[1])
        return self._averaged[1]

    def card(self, dataset: dict | None = None) -> ModelCard:
        """The model card of what :meth:`export_generator` returns."""
        c = self.config
        files = {"keras": "generator.keras", "saved_model": "saved_model"}
        if self.ema is not None:
            files["raw_keras"] = "generator_raw.keras"  # the un-averaged weights, for comparison
        budget = {"budget": self.budget} if self.budget is not None else {}
        return ModelCard(variant=self.model.name, discriminator=c.discriminator, generator=c.generator,
                         resolution=c.resolution, channels=c.channels, inputs=self.model.inputs(),
                         dataset=dict(dataset or {}), precision=self.policy, steps=int(self.step.numpy()),
                         weights="ema" if self.ema is not None else "generator", files=files,
                         training={**asdict(c), "variant_options": self.model.describe(), **budget})


def fixed_inputs(model: GANModel, n: int = 64) -> dict[str, np.ndarray]:
    """The generator inputs whose images are tracked over training (same across resumes)."""
    return model.fixed_inputs(n, seed=model.config.seed + 2)


def save_keras_atomic(model: keras.Model, path: str | os.PathLike) -> None:
    """Save ``model`` as ``.keras`` under a temporary name, then rename."""
    from pipeline.atomic import atomic_path
    with atomic_path(path) as tmp:  # keeps the .keras suffix Keras insists on
        model.save(tmp)


def train(config: TrainConfig, dataset: tf.data.Dataset, run_dir: str | os.PathLike,
          progress: Callable[[int, int, dict], None] | None = None,
          strategy: tf.distribute.Strategy | None = None,
          on_checkpoint: Callable[[int, GANTrainer], None] | None = None,
          model: GANModel | None = None, dataset_card: dict | None = None,
          clock: Callable[[], float] = time.monotonic) -> dict:
    """Train ``model`` (default: the variant ``config.variant``) to ``config.steps`` in
    ``run_dir``, resuming from its last checkpoint; with ``config.max_minutes``, to the step
    count that budget holds at the measured speed (model/train/budget.py; ``clock`` reads
    the seconds it is measured in), kept in ``budget.json`` so a resumed run ends there too.

    ``dataset`` yields global batches forever (dicts of the features the variant
    reads, or image tensors), in an order fixed by the seed; on resume the
    batches already used are skipped, and the noise generator's state comes
    back with the checkpoint, so a resumed run sees the same data and noise as
    an uninterrupted one. ``progress(step, steps, scalars)`` is called every
    ``log_every`` steps, ``on_checkpoint(step, trainer)`` right after each
    checkpoint is saved (e.g. to evaluate the generator; ``trainer.last_step`` is the
    step the run ends at). ``dataset_card``
    (name, version, records, ...) goes into the model card. Writes
    ``generator.keras`` last and returns the final scalars.

    Under ``TF_CONFIG`` (``MultiWorkerMirroredStrategy``) every worker calls this with the
    same arguments; ``config.batch_size`` stays the global batch. The chief writes
    ``run_dir`` and calls ``on_checkpoint``; another worker trains into a temporary folder
    it deletes, exports nothing, and returns when the chief has exported. Every worker
    starts from the chief's checkpoint (model/train/distribute.py). ``max_minutes`` is
    refused there: each machine would time its own steps and choose its own count.
    """
    began = clock()
    strategy = strategy or make_strategy()
    if config.max_minutes and is_multi_worker(strategy):
        raise ValueError(f"max_minutes = {config.max_minutes} with several workers (TF_CONFIG): each would "
                         f"time its own steps and stop at another step; set --steps instead")
    chief = strategy.extended.should_checkpoint
    with writable_run_dir(run_dir, chief) as folder:
        trainer, scalars = _train_steps(config, dataset, folder, progress, strategy,
                                        on_checkpoint if chief else None, model, clock, began)
        result = {"step": int(trainer.step.numpy()), **scalars, "precision": trainer.policy,
                  "replicas": strategy.num_replicas_in_sync, "config": asdict(config)}
        if chief:
            plot_losses(folder / "metrics.csv", folder / "losses.png", trainer.model.plots)
            # a model with files of its own (a completion net) exports itself
            if not trainer.model.export(trainer, folder, dataset_card):
                _export_generator(trainer, folder, dataset_card)
                if trainer.budget is not None:
                    result["budget"] = trainer.budget
    barrier(strategy)  # the other workers wait for the chief's export
    return result


def _export_generator(trainer: GANTrainer, run_dir: Path, dataset_card: dict | None) -> None:
    """The exported generator of a finished run: saved_model/, openvino/ (when installed), the
    raw weights beside an average, model_card.json, and generator.keras last."""
    from model.train.serving import OPENVINO_FILE, export_openvino, export_saved_model, openvino_available

    generator = trainer.export_generator()
    card = trainer.card(dataset_card)
    export_saved_model(generator, run_dir / card.files["saved_model"], card)
    if openvino_available():  # the studio's engine; runs without it serve through TensorFlow
        export_openvino(run_dir / card.files["saved_model"], run_dir / OPENVINO_FILE)
        card.files["openvino"] = OPENVINO_FILE
    if "raw_keras" in card.files:
        save_keras_atomic(trainer.export_generator("generator"), run_dir / card.files["raw_keras"])
    write_card(run_dir, card)
    save_keras_atomic(generator, run_dir / card.files["keras"])  # last: the task's completion marker


def _train_steps(config: TrainConfig, dataset: tf.data.Dataset, run_dir: Path, progress, strategy,
                 on_checkpoint, model: GANModel | None, clock, began: float) -> tuple[GANTrainer, dict]:
    """The steps of :func:`train` in ``run_dir`` (this worker's folder): resume, train, log,
    snapshot and checkpoint; returns the trainer and the last step's scalars."""
    from model.train.sampling import grid, save_png
    from pipeline.atomic import write_json

    run_dir.mkdir(parents=True, exist_ok=True)
    trainer = GANTrainer(config, strategy, model)
    scalar_names = trainer.model.scalars
    ckpt = trainer.checkpoint()
    manager = tf.train.CheckpointManager(ckpt, run_dir / "ckpt", max_to_keep=3)
    if manager.latest_checkpoint:
        ckpt.restore(manager.latest_checkpoint).assert_existing_objects_matched()
    broadcast_from_chief(strategy, ckpt)  # several workers: every one starts from the chief's state
    start = int(trainer.step.numpy())
    planner = None
    if config.max_minutes:
        trainer.budget = read_plan(run_dir)
        if trainer.budget is None:
            planner = BudgetPlanner(config.max_minutes, config.steps, start, began, clock)
        else:
            trainer.last_step = trainer.budget["steps"]
    metrics_path = run_dir / "metrics.csv"
    _truncate_metrics(metrics_path, start)
    new_file = not metrics_path.exists()
    tracked = fixed_inputs(trainer.model)
    tb = tf.summary.create_file_writer(str(run_dir / "tb"))

    def snapshot(step: int) -> None:
        # The grids show the average that would be exported; without one, the training
        # generator itself (no copy per grid).
        shown = trainer.averaged_generator() if trainer.ema is not None else trainer.generator
        images = trainer.model.grid_images(shown, tracked)
        save_png(grid(images, 8, 8), run_dir / "progress" / f"step-{step:07d}.png")
        with tb.as_default(step=step):
            tf.summary.image("fixed_noise", images[:16], max_outputs=16)

    steps = dataset.skip(start).take(max(0, trainer.last_step - start))
    batches = strategy.experimental_distribute_dataset(
        shard_by_batch_rows(steps) if is_multi_worker(strategy) else steps)
    scalars: dict = {}
    with open(metrics_path, "a", newline="") as fh:
        writer = csv.writer(fh)
        if new_file:
            writer.writerow(("step", *scalar_names))
        for batch in batches:
            out = trainer.train_step(batch)
            step = int(trainer.step.numpy())
            # Checked every step, so a checkpoint never holds diverged weights.
            scalars = {k: float(v) for k, v in out.items()}
            if not all(math.isfinite(v) for v in scalars.values()):
                raise DivergenceError(
                    f"loss is not finite at step {step} ({scalars}); the last good checkpoint "
                    f"{manager.latest_checkpoint} is kept: lower the learning rate or change the seed")
            if planner is not None:  # the scalars are read: the step has finished
                plan = planner.after_step(step)
                if plan is not None:
                    write_json(run_dir / BUDGET_FILE, plan)  # before any checkpoint past it
                    trainer.budget, trainer.last_step, planner = plan, plan["steps"], None
            last = trainer.last_step
            if step % config.log_every == 0 or step == last:
                writer.writerow((step, *(f"{scalars[k]:.6g}" for k in scalar_names)))
                fh.flush()
                with tb.as_default(step=step):
                    for k, v in scalars.items():
                        tf.summary.scalar(k, v)
                if progress is not None:
                    progress(step, last, scalars)
            if (config.sample_every and step % config.sample_every == 0) or step == last:
                snapshot(step)
            if step % config.checkpoint_every == 0 or step == last:
                manager.save(checkpoint_number=step)
                if on_checkpoint is not None:
                    on_checkpoint(step, trainer)
            if step >= last:
                break
    tb.close()
    return trainer, scalars


def step_seconds(configs: list[TrainConfig], dataset_fn: Callable[[TrainConfig], tf.data.Dataset],
                 warmup: int = 3, timed: int = 4, rounds: int = 3) -> list[float]:
    """Wall-clock seconds of one training step of each config (the input pipeline included):
    a trainer per config, ``warmup`` untimed steps each, then ``rounds`` rounds that time
    ``timed`` steps of every config in turn; the median round of each. Interleaving makes a
    change of machine load hit every config alike. ``dataset_fn(config)`` gives its batches."""
    strategy = make_strategy()
    runs = []
    for config in configs:
        trainer = GANTrainer(config, strategy)
        data = dataset_fn(config).take(warmup + timed * rounds)
        runs.append((trainer, iter(strategy.experimental_distribute_dataset(data))))
    for trainer, batches in runs:
        for _ in range(warmup):
            _wait(trainer.train_step(next(batches)))
    times: list[list[float]] = [[] for _ in runs]
    for _ in range(rounds):
        for k, (trainer, batches) in enumerate(runs):
            start = time.time()
            for _ in range(timed):
                out = trainer.train_step(next(batches))
            _wait(out)
            times[k].append((time.time() - start) / timed)
    return [float(np.median(t)) for t in times]


def _wait(scalars: dict) -> None:
    """Block until a step's results are computed (steps run asynchronously)."""
    for value in scalars.values():
        value.numpy()


def restore_networks(run_dir: str | os.PathLike, checkpoint: str | None = None,
                     which: tuple[str, ...] = ("generator", "discriminator"),
                     weights: str = "generator", precision: str = "float32") -> dict[str, keras.Model]:
    """Plain-Keras networks of a run, from its model card and a checkpoint (default:
    the latest in ``run_dir/ckpt``): ``{"generator": G, "discriminator": D}`` (as asked by
    ``which``); with ``weights="ema"`` G holds the checkpoint's weight average. Optimizers
    are not restored. Completion needs D; evaluation of a kept checkpoint needs G.
    ``precision`` is the Keras dtype policy they compute in (float32 weights either way;
    ``mixed_bfloat16`` runs completion's many forward and backward passes faster)."""
    from model.card import read_card

    card = read_card(run_dir)
    config = TrainConfig.from_dict({**card.training, "variant": card.variant})
    model = build_variant(config)
    path = checkpoint or tf.train.latest_checkpoint(str(Path(run_dir) / "ckpt"))
    if path is None:
        raise FileNotFoundError(f"{Path(run_dir) / 'ckpt'} holds no checkpoint: the run folder was "
                                f"copied without ckpt/, or training never saved one")
    builders = {"generator": model.inference_generator, "discriminator": model.inference_discriminator}
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        nets = {name: builders[name]() for name in which}
    finally:
        keras.config.set_dtype_policy(previous)
    averaged = weights == "ema" and "generator" in nets
    plain = {k: v for k, v in nets.items() if not (averaged and k == "generator")}
    if plain:
        tf.train.Checkpoint(**plain).restore(str(path)).expect_partial().assert_existing_objects_matched()
    if averaged:
        if not card.training.get("ema"):
            raise ValueError(f"{run_dir} keeps no weight average (trained with ema = 0)")
        average = WeightAverage(nets["generator"], card.training["ema"])
        tf.train.Checkpoint(ema=average).restore(str(path)).expect_partial().assert_existing_objects_matched()
        load_average(nets["generator"], average, model, config)
    return nets


def load_average(generator: keras.Model, average: WeightAverage, model: GANModel, config: TrainConfig) -> None:
    """Put ``average`` in ``generator`` (an inference generator of ``model``), with batch-norm
    statistics of its own when ``config.ema_bn_batches`` asks (:func:`standing_statistics`): the
    one way an average becomes a generator (training's grids and export, a restored checkpoint)."""
    generator.set_weights(average.values())
    standing_statistics(model, generator, config)


def standing_statistics(model: GANModel, generator: keras.Model, config: TrainConfig) -> None:
    """With ``config.ema_bn_batches``: ``generator``, holding the weight average, gets batch-norm
    statistics of its own, from that many batches of 64 draws of ``model``'s training inputs
    (model/train/ema.py :func:`recompute_batch_norm`). The draws come from the run's seed, the
    same at every call, so the export, the grids and a restored checkpoint agree."""
    if not config.ema_bn_batches:
        return
    rng = tf.random.Generator.from_seed(config.seed + 3)  # seed + 1: training's noise, + 2: the grids'
    specs = model.inputs()
    recompute_batch_norm(generator, lambda: model.generator_input(
        {spec.name: sample_input_tf(rng, spec, 64) for spec in specs}), config.ema_bn_batches)


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop CSV rows past ``step`` (logged after the checkpoint we resume from)."""
    if not path.exists():
        return
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows:  # killed before its header reached the disk: start it again
        path.unlink()
        return
    kept = [rows[0]] + [r for r in rows[1:] if r and int(r[0]) <= step]
    if len(kept) != len(rows):
        with open(path, "w", newline="") as fh:
            csv.writer(fh).writerows(kept)


def continue_run(shorter: str | os.PathLike, run_dir: str | os.PathLike) -> int:
    """Start the empty ``run_dir`` where the finished run ``shorter`` (same settings, fewer
    steps) ended: its last checkpoint, ``metrics.csv`` and ``eval.csv`` are copied over, so
    :func:`train` resumes at that step exactly as an uninterrupted longer run would be there.
    Returns the step it starts from."""
    import shutil

    shorter, run_dir = Path(shorter), Path(run_dir)
    latest = tf.train.latest_checkpoint(str(shorter / "ckpt"))
    if latest is None:
        raise FileNotFoundError(f"{shorter}: no checkpoint in ckpt/ to continue from")
    if (run_dir / "ckpt").exists():
        raise FileExistsError(f"{run_dir}/ckpt exists: continue_run only starts an empty run folder")
    (run_dir / "ckpt").mkdir(parents=True)
    name = Path(latest).name
    for f in Path(latest).parent.glob(name + ".*"):
        shutil.copy2(f, run_dir / "ckpt" / f.name)
    # A relative path: the state file names the copy, never the shorter run's files.
    (run_dir / "ckpt" / "checkpoint").write_text(
        f'model_checkpoint_path: "{name}"\nall_model_checkpoint_paths: "{name}"\n')
    for f in ("metrics.csv", "eval.csv"):
        if (shorter / f).exists():
            shutil.copy2(shorter / f, run_dir / f)
    return int(name.rsplit("-", 1)[1])


def plot_losses(metrics_csv: str | os.PathLike, out_png: str | os.PathLike, panels) -> None:
    """Draw the scalar curves of ``metrics.csv`` into a PNG, one panel per
    ``(title, scalar names, y limits or None)`` of ``panels`` (a variant's ``plots``)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(metrics_csv, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or not panels:
        return
    steps = [int(r["step"]) for r in rows]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.5), squeeze=False)
    for ax, (title, keys, ylim) in zip(axes[0], panels):
        for key in keys:
            ax.plot(steps, [float(r[key]) for r in rows], label=SCALAR_LABELS.get(key, key))
        ax.set_title(title)
        if ylim:
            ax.set_ylim(*ylim)
        ax.set_xlabel("step")
        ax.legend()
    fig.tight_layout()
    from pipeline.atomic import atomic_path
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


#: Legend labels of scalars whose names are terse.
SCALAR_LABELS = {"d_real": "D(x)", "d_fake": "D(G(z))"}
