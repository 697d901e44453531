"""What a GAN variant is: its networks, optimizers and objective, nothing else.

The training loop (model/train/loop.py) is written once; a variant is a subclass of
:class:`GANModel` that says

* ``build()``: make ``self.generator``, ``self.discriminator`` (and any other
  network, e.g. InfoGAN's Q head) and their optimizers;
* ``train_step(batch)``: one training step on one replica's batch (the D and G
  updates), returning the scalars named in ``scalars``;
* ``inputs()``: the generator's inputs (``z`` first, then any class, codes or
  attribute c), which become the model card's ``inputs``;
* optionally ``features`` (what the step reads from a batch: ``image``,
  ``label``, ``attributes``), ``plots`` (panels of ``losses.png``),
  ``defaults`` (the paper's optimizer settings) and ``Options`` (a dataclass of
  the variant's own constants, filled from ``TrainConfig.options``);
* for a model that is not a generator of z (model/variants/completion.py: a completion
  network fed known pixels and masks), ``grid_images`` (what the fixed grid shows) and
  ``export`` (its own exported files and card).

Everything else (dtype policy, distribution strategy, checkpoints, resume,
NaN guard, logs, grids, export, model card) is the loop's. docs/variants.md
shows how to add one.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import keras
import numpy as np
import tensorflow as tf

from model.card import InputSpec, noise_spec, sample_inputs
from model.config import parse_policy
from model.train.optim import FusedAdam


@dataclass
class NoOptions:
    """A variant without constants of its own."""


class GANModel:
    """Base class of a variant. Constructed with the run's :class:`model.train.loop.TrainConfig`;
    ``build()`` is called by the loop inside the distribution strategy's scope under the
    run's dtype policy, after ``self.rng`` (a ``tf.random.Generator``) and ``self.policy``
    (the Keras dtype policy name) are set."""

    #: The variant's name (``TrainGAN --variant``, the model card, run folder names).
    name = "gan"
    #: Scalars ``train_step`` returns, in ``metrics.csv`` column order.
    scalars: tuple[str, ...] = ()
    #: ``losses.png`` panels: ``(title, scalar names, y limits or None)``.
    plots: tuple[tuple[str, tuple[str, ...], tuple[float, float] | None], ...] = ()
    #: Batch features the step reads (model.train.data.training_dataset ``features``).
    features: tuple[str, ...] = ("image",)
    #: Optimizer settings of the paper; ``TrainConfig`` fields set to None take these.
    defaults = {"lr": 2e-4, "beta1": 0.5, "beta2": 0.999}
    #: The variant's own constants; ``TrainConfig.options`` fills it (unknown keys are an error).
    Options = NoOptions

    def __init__(self, config):
        self.config = config
        names = {f.name for f in fields(self.Options)}
        unknown = sorted(set(config.options) - names)
        if unknown:
            raise ValueError(f"variant {self.name!r} has no option(s) {unknown}; its options are "
                             f"{sorted(names) or 'none'}")
        self.options = self.Options(**config.options)
        self._augment_policy = parse_policy(config.augment)
        self.rng: tf.random.Generator | None = None
        self.policy = "float32"

    # -- what a variant declares ------------------------------------------------------------------

    def inputs(self) -> list[InputSpec]:
        """The generator's inputs, ``z`` first (the model card's ``inputs``)."""
        c = self.config
        return [noise_spec(c.z_dim, c.z_dist)]

    def data_attributes(self) -> list[str] | None:
        """CelebA attribute names the step reads as ``batch["attributes"]`` (None: none)."""
        return None

    def build(self) -> None:
        """Make the networks and optimizers (see the class docstring)."""
        raise NotImplementedError

    def train_step(self, batch: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """One step on one replica's ``batch``; returns ``{scalar: float32 tensor}``, each
        averaged over the *global* batch (``model.variants.losses``) so replicas sum to the mean."""
        raise NotImplementedError

    def trackables(self) -> dict:
        """What a checkpoint holds besides the loop's own state (step, noise state, EMA)."""
        return {"generator": self.generator, "discriminator": self.discriminator,
                "g_opt": self.g_opt, "d_opt": self.d_opt}

    def optimizer_variables(self) -> list[tuple[keras.optimizers.Optimizer, list]]:
        """``(optimizer, variables)`` pairs; the loop builds each optimizer's slots up front so
        a restored checkpoint fills them in place."""
        return [(self.g_opt, self.generator.trainable_variables),
                (self.d_opt, self.discriminator.trainable_variables)]

    def unaveraged_variables(self) -> list:
        """G's variables the weight average (``TrainConfig.ema``) copies rather than averages
        (EGAN's ``ema_raw_mix``: the blur mix); none by default."""
        return []

    def fixed_inputs(self, n: int, seed: int) -> dict[str, np.ndarray]:
        """The inputs of the fixed-noise grids (``n`` = 64, an 8x8 grid). By default a draw
        from the training distributions; a conditional variant may lay out its classes."""
        return sample_inputs(self.inputs(), n, seed)

    def inference_generator(self) -> keras.Model:
        """An untrained float32 generator of the same architecture built from plain Keras
        layers (what is exported: it loads without this project's code)."""
        raise NotImplementedError

    def inference_discriminator(self) -> keras.Model:
        """An untrained float32 discriminator of the same architecture, plain Keras layers
        (completion scores its samples with it; restored from a checkpoint)."""
        raise NotImplementedError

    def grid_images(self, generator: keras.Model, inputs) -> np.ndarray:
        """The ``(64, S, S, C) uint8`` images of a fixed-noise grid: ``generator`` on the
        :meth:`fixed_inputs`. A model whose network takes other inputs (a completion network)
        says here what its grid shows."""
        from model.train.sampling import generate
        return generate(generator, inputs)

    def export(self, trainer, run_dir, dataset_card: dict | None) -> bool:
        """Write the run's exported files at the end of training, or return False (the
        default) for the loop's own export of a generator (saved_model, OpenVINO, model card,
        ``generator.keras``). A model that is no generator (a completion network) writes its
        own network and card here, its network file last, and returns True."""
        return False

    # -- helpers a variant uses -------------------------------------------------------------------

    def hparam(self, name: str) -> float:
        """``TrainConfig.<name>`` or, when that is None, the variant's paper default."""
        value = getattr(self.config, name)
        return self.defaults[name] if value is None else value

    def learning_rate(self, network: str = "g") -> float:
        """The learning rate of the generator (``"g"``) or the discriminator (``"d"``: ``d_lr``
        when set, the two time-scale update rule of Heusel et al. 2017, else ``lr``)."""
        if network == "d" and self.config.d_lr is not None:
            return self.config.d_lr
        return self.hparam("lr")

    def adam(self, network: str = "g") -> keras.optimizers.Optimizer:
        """Adam for ``network`` (``"g"`` or ``"d"``) with the run's (or the paper's) settings, as
        one fused update per variable; loss-scaled under mixed float16."""
        opt = FusedAdam(self.learning_rate(network), beta_1=self.hparam("beta1"), beta_2=self.hparam("beta2"))
        return self.loss_scaled(opt)

    def augment(self, images: tf.Tensor) -> tf.Tensor:
        """``images`` as the discriminator must see them: with the run's differentiable
        augmentation (``TrainConfig.augment``, model/train/augment.py) when it is on, else as they
        are. A variant passes every batch, real or generated, through this before D."""
        if not self._augment_policy:
            return images
        from model.train.augment import augment
        return augment(images, self._augment_policy, self.rng, self.config.augment_p)

    def images_per_step(self) -> int:
        """Real images one training step reads (the data set's global batch): ``batch_size``,
        or more for a variant that makes several critic updates per step on fresh batches."""
        return self.config.batch_size

    def loss_scaled(self, opt: keras.optimizers.Optimizer) -> keras.optimizers.Optimizer:
        # float16 needs loss scaling; bfloat16 has float32's exponent range and does not.
        return keras.optimizers.LossScaleOptimizer(opt) if self.policy == "mixed_float16" else opt

    @classmethod
    def apply(cls, opt, tape: tf.GradientTape, loss: tf.Tensor, variables) -> None:
        """Gradients of ``loss`` from ``tape`` applied to ``variables`` by ``opt``."""
        cls.apply_parts(opt, tape, [(loss, variables)])

    @staticmethod
    def apply_parts(opt, tape: tf.GradientTape, parts) -> None:
        """One update by ``opt`` of every ``(loss, variables)`` pair of ``parts``, each group of
        variables by the gradient of its own loss (more than one part needs a persistent ``tape``)."""
        grads, variables = [], []
        for loss, group in parts:
            scaled = opt.scale_loss(loss) if isinstance(opt, keras.optimizers.LossScaleOptimizer) else loss
            grads += tape.gradient(scaled, group)
            variables += group
        opt.apply_gradients(zip(grads, variables))

    def sample_inputs(self, n) -> dict[str, tf.Tensor]:
        """A batch of every generator input from its training distribution, ``{name: (n, size)}``
        (``z`` drawn first, so a z-only variant draws exactly what it always did)."""
        return {spec.name: sample_input_tf(self.rng, spec, n) for spec in self.inputs()}

    def generator_input(self, inputs: dict[str, tf.Tensor]):
        """What to call the training generator with: the z tensor alone when it is the only
        input, else the dict."""
        return inputs["z"] if len(inputs) == 1 else inputs

    def describe(self) -> dict:
        """The variant's own constants, for the model card and logs."""
        return asdict(self.options)


def sample_input_tf(rng: tf.random.Generator, spec: InputSpec, n) -> tf.Tensor:
    """``(n, spec.size) float32`` values of one input from its training distribution
    (the TensorFlow twin of :func:`model.card.sample_input`, drawn from ``rng``)."""
    if spec.kind == "onehot":
        return tf.one_hot(rng.uniform((n,), 0, spec.size, dtype=tf.int32), spec.size)
    if spec.kind == "attribute":
        if spec.distribution == "uniform":  # training's span, not the wider range a user may set
            return rng.uniform((n, spec.size), 0.0, 1.0)
        return tf.cast(rng.uniform((n, spec.size), 0, 2, dtype=tf.int32), tf.float32)
    if spec.distribution == "normal":
        return rng.normal((n, spec.size))
    low, high = spec.range
    return rng.uniform((n, spec.size), low, high)
