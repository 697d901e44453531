"""EGAN, the Extractor GAN of the thesis "A Study of Generative Adversarial Networks and
Possible Extensions of GANs": DCGAN whose generator takes attribute codes c beside z,
with a loss that ties what an extractor F measures on G(z, c) to c.

    w = [z, c], z ~ U(0, 1) (the thesis' default), each c_i drawn 0 or 1 with p = 1/2
        (``c_distribution = "bernoulli"``, the thesis) or from U(0, 1) (``"uniform"``)
    D: the DCGAN discriminator and loss
    G: the DCGAN fooling loss + weight * sum_i BCE(c_i, F_i(G(w)))        (target "coin", the thesis)
                              + weight * sum_i |F_i(G(w)) - Q_i(c_i)|      (target "quantile")

``weight_warmup`` steps ramp ``weight`` linearly from 0 (0: the full weight from the start).
With ``d_condition`` (quantile target) D is a projection discriminator D(x, c): real faces
come with the level Q^-1(F(x)) of their own F, fakes with their c. With ``c_every_block``
c also enters every upsampling block of G as constant feature maps; with ``c_modulation`` it scales
and shifts every block's normalised features (conditional batch norm); with ``c_lowpass`` it sets how
much of a blurred copy of the image G mixes into its output, and with ``c_lowpass_draft`` that mix
also sees the edges of the image G drew and can sharpen (a feedback); with ``c_lowpass_only`` c
enters G by that mix alone, not its first projection (the drawn face does not depend on c); with
``c_lowpass_fit`` the mix's weights learn from the extractor loss alone, not D's verdict, and with
``c_lowpass_split`` that loss trains nothing else (the drawn face is D's alone). With ``sharpness_norm`` p
training measures sharpness against the edges' p-norm rather than the strongest edge
(model/variants/extractors.py). With ``z_pairs`` (quantile target) G's batch draws each z twice
and the loss adds, per pair of rows (a, b) with one z, |F_a - F_b - (Q(c_a) - Q(c_b))|; with
``pairs_from="extra"`` the pairs are n/2 extra faces G draws for that term alone, so the batch D
judges keeps a z of its own per row; ``pair_weight`` weighs that term beside the per-face one.
``mode_seeking`` adds MSGAN's mode-seeking term (model/variants/losses.py) to what the face G draws
learns from, with that weight (the blur mix of ``c_lowpass_fit`` stays the extractor loss's).
``ema_raw_mix`` keeps that blur mix out of G's weight average (``TrainConfig.ema``): the averaged
G draws an averaged face through the mix's last weights.

``quantile``: Q_i is the real faces' quantile function of F_i, tracked over the real batches
(``quantile_points`` levels, an exponential moving average with ``quantile_decay``), and c is
drawn from U(0, 1). A coin asks G for the extreme 0 or 1 of F, which nothing real has; a
quantile asks for a level real faces have, in the proportion they have it, so the
discriminator does not fight the control (docs/egan.md).

Extractors (model/variants/extractors.py): ``brightness`` and ``sharpness`` by formula, or a
CelebA attribute through the attribute classifier (model/apps/attributes.py), either
pre-trained and frozen (``mode = "pretrain"``: the folder of a TrainAttributeClassifier
run) or trained jointly (``mode = "joint"``: one classifier update on the real batch and
its labels, smoothed to 0.9/0.1, after D and G in every step).
"""
from __future__ import annotations

import keras
import tensorflow as tf

from model.card import InputSpec
from model.config import EGAN_MODES as MODES  # noqa: F401  (re-exported)
from model.config import EGANOptions
from model.variants import losses
from model.variants.dcgan import DCGAN
from model.variants.extractors import FORMULAS, formula


class EGAN(DCGAN):
    """DCGAN + attribute codes c controlled through extractors (module docstring)."""
    name = "egan"
    Options = EGANOptions

    def __init__(self, config):
        super().__init__(config)
        if self.options.ema_raw_mix and not config.ema:
            raise ValueError("EGAN ema_raw_mix keeps the blur mix out of the generator's weight average, "
                             "and this run keeps none: set --ema (e.g. 0.999)")

    @property
    def attributes(self) -> list[str]:
        """The extractors that are CelebA attributes (measured by the classifier)."""
        return [e for e in self.options.extractors if e not in FORMULAS]

    @property
    def joint(self) -> bool:
        return bool(self.attributes) and self.options.mode == "joint"

    @property
    def scalars(self):
        joint = ("f_loss", "f_acc") if self.joint else ()
        warmup = ("e_weight",) if self.options.weight_warmup else ()
        pairs = ("e_pair",) if self.options.z_pairs else ()
        seeking = ("ms_loss",) if self.options.mode_seeking else ()
        return (*DCGAN.scalars, "e_loss", *pairs, *(f"e_{e}" for e in self.options.extractors), *warmup, *joint,
                *seeking)

    @property
    def plots(self):
        return (*DCGAN.plots, ("extractor loss", ("e_loss",), None),
                ("F(G(z, c)) - target (mean)", tuple(f"e_{e}" for e in self.options.extractors), None))

    @property
    def features(self):
        return ("image", "attributes") if self.joint else ("image",)

    def data_attributes(self):
        return self.attributes if self.joint else None

    def inputs(self):
        o = self.options
        c = InputSpec("c", "attribute", len(o.extractors), distribution=o.c_distribution,
                      labels=tuple(o.extractors), range=(0.0, o.c_max),
                      meta={"extractors": list(o.extractors), "weight": o.weight, "mode": o.mode, "target": o.target,
                            "sharpness_norm": o.sharpness_norm, "z_pairs": o.z_pairs,
                            "c_every_block": o.c_every_block, "c_modulation": o.c_modulation,
                            "c_lowpass": o.c_lowpass, "c_lowpass_draft": o.c_lowpass_draft,
                            "c_lowpass_only": o.c_lowpass_only, "c_lowpass_fit": o.c_lowpass_fit,
                            "c_lowpass_split": o.c_lowpass_split,
                            "pairs_from": o.pairs_from, "pair_weight": o.pair_weight,
                            "mode_seeking": o.mode_seeking, "ema_raw_mix": o.ema_raw_mix,
                            "train_values": [0.0, 1.0]})
        return [*super().inputs(), c]

    def build(self) -> None:
        super().build()
        self.classifier = None
        if self.attributes:
            from model.apps.attributes import build_classifier, load_classifier

            if self.joint:
                c = self.config
                self.classifier = build_classifier(len(self.attributes), c.resolution, c.channels,
                                                   self.options.classifier_width)
                self.f_opt = self.loss_scaled(keras.optimizers.Adam(self.options.classifier_lr, beta_1=0.5))
            else:
                loaded = load_classifier(self.options.classifier)
                self._columns = loaded.columns(self.attributes)
                self.classifier = loaded.model
                self.classifier.trainable = False

        if self.counts_steps:
            # Training steps done (the weight's warm-up; the quantiles' first batch): checkpointed,
            # so a resumed run ramps on from where it stopped.
            self.e_steps = tf.Variable(0.0, trainable=False, name="egan_steps",
                                       aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        if self.options.target == "quantile":
            k, q = len(self.options.extractors), self.options.quantile_points
            # (k, q) F at levels linspace(0, 1, q) of the real faces; a checkpointed state, so a
            # resumed run goes on from the same estimate. Replicas' estimates are averaged.
            self.quantiles = tf.Variable(tf.zeros((k, q)), trainable=False, name="egan_quantiles",
                                         aggregation=tf.VariableAggregation.MEAN)

    @property
    def counts_steps(self) -> bool:
        """Whether the run keeps its own step count (``e_steps``): a warm-up or the quantiles need it."""
        return bool(self.options.weight_warmup) or self.options.target == "quantile"

    def trackables(self) -> dict:
        extra = {"e_steps": self.e_steps} if self.counts_steps else {}
        if self.options.target == "quantile":
            extra["quantiles"] = self.quantiles
        if self.classifier is not None:
            extra["classifier"] = self.classifier
        if self.joint:
            extra["f_opt"] = self.f_opt
        return {**super().trackables(), **extra}

    def optimizer_variables(self):
        extra = [(self.f_opt, self.classifier.trainable_variables)] if self.joint else []
        return [*super().optimizer_variables(), *extra]

    def extra_ways(self) -> frozenset[str]:
        o = self.options
        flags = {"every_block": o.c_every_block, "modulation": o.c_modulation,
                 "lowpass": o.c_lowpass and not o.c_lowpass_draft, "lowpass_draft": o.c_lowpass_draft,
                 "skip_projection": o.c_lowpass_only}
        return frozenset(way for way, on in flags.items() if on)

    def extra_loss_variables(self) -> list:
        if not self.options.c_lowpass_fit:
            return []
        from model.nets.dcgan import MIX_EDGES, MIX_LOGIT

        names = {MIX_LOGIT, MIX_EDGES}
        return [v for layer in self.generator.layers if layer.name in names for v in layer.trainable_variables]

    def unaveraged_variables(self) -> list:
        return self.extra_loss_variables() if self.options.ema_raw_mix else []

    def extra_loss_everywhere(self) -> bool:
        return not self.options.c_lowpass_split

    def d_condition(self):
        return {"c": len(self.options.extractors)} if self.options.d_condition else None

    def d_feed(self, images, batch=None, inputs=None):
        if not self.options.d_condition:
            return images
        # a real face's level is in its batch (train_step put it there), a fake's c in its inputs
        return {"image": images, "c": inputs["c"] if inputs is not None else batch["level"]}

    def sample_inputs(self, n) -> dict[str, tf.Tensor]:
        inputs = super().sample_inputs(n)
        if not self.options.z_pairs or self.options.pairs_from != "batch":
            return inputs
        return self.paired(inputs, n)

    @staticmethod
    def paired(inputs: dict[str, tf.Tensor], n) -> dict[str, tf.Tensor]:
        """``inputs`` (``n`` rows) with rows 2i and 2i + 1 sharing row 2i's z (an odd last row
        keeps its own); their c differ."""
        return {**inputs, "z": tf.gather(inputs["z"], tf.range(n) // 2 * 2)}

    def extract(self, images: tf.Tensor) -> tf.Tensor:
        """``(n, k)`` F values of ``images`` in [-1, 1], one column per extractor, in [0, 1]."""
        columns, probs = [], None
        for name in self.options.extractors:
            if name in FORMULAS:
                columns.append(formula(name, self.options.sharpness_norm)(images))
            else:
                if probs is None:
                    probs = tf.cast(self.classifier(images, training=False), tf.float32)
                    if not self.joint:
                        probs = tf.gather(probs, self._columns, axis=1)
                columns.append(probs[:, self.attributes.index(name)])
        return tf.stack(columns, axis=1)

    def train_step(self, batch):
        if self.options.target == "quantile":
            # F of the real faces, once: Q's estimate and, with d_condition, each face's level for D
            real = self.extract(batch["image"])
            self.track_quantiles(real)
            if self.options.d_condition:
                batch = {**batch, "level": self.level_of(real)}
        out = super().train_step(batch)
        if self.counts_steps:
            self.e_steps.assign_add(1.0)
        return out

    def extractor_weight(self) -> tf.Tensor:
        """``weight``, ramped linearly from 0 over the first ``weight_warmup`` steps."""
        o = self.options
        if not o.weight_warmup:
            return tf.constant(o.weight, tf.float32)
        return o.weight * tf.minimum(1.0, self.e_steps / float(o.weight_warmup))

    def track_quantiles(self, real: tf.Tensor) -> None:
        """Moves :attr:`quantiles` towards those of the real batch's ``(n, k)`` F values
        :meth:`extract` measured (the first batch sets them)."""
        q = self.options.quantile_points
        values = tf.sort(tf.transpose(real), axis=1)  # (k, n)
        n = tf.cast(tf.shape(values)[1], tf.float32)
        position = tf.tile(tf.linspace(0.0, 1.0, q)[None, :] * (n - 1.0), [tf.shape(values)[0], 1])
        estimate = _interpolate(values, position)  # (k, q)
        decay = tf.where(self.e_steps > 0, self.options.quantile_decay, 0.0)
        self.quantiles.assign(decay * self.quantiles + (1.0 - decay) * estimate)

    def target_of(self, c: tf.Tensor) -> tf.Tensor:
        """``(n, k)`` Q(c): F of the real faces at quantile level c (``quantile`` target)."""
        position = tf.transpose(tf.clip_by_value(c, 0.0, 1.0)) * (self.options.quantile_points - 1.0)  # (k, n)
        return tf.stop_gradient(tf.transpose(_interpolate(self.quantiles, position)))

    def level_of(self, values: tf.Tensor) -> tf.Tensor:
        """``(n, k)`` Q^-1(F): the level in [0, 1] of each ``(n, k)`` F value among the real
        faces' tracked quantiles (linear between the tracked levels; 0 below, 1 above)."""
        q = self.options.quantile_points
        table = self.quantiles  # (k, q), ascending along q
        v = tf.transpose(values)  # (k, n)
        upper = tf.clip_by_value(tf.searchsorted(table, v, side="right"), 1, q - 1)
        lo, hi = tf.gather(table, upper - 1, batch_dims=1), tf.gather(table, upper, batch_dims=1)
        frac = tf.clip_by_value(tf.math.divide_no_nan(v - lo, hi - lo), 0.0, 1.0)
        level = (tf.cast(upper - 1, tf.float32) + frac) / (q - 1.0)
        return tf.stop_gradient(tf.transpose(level))

    def generator_terms(self, fake, inputs, out):
        if not self.options.mode_seeking:
            return None, {}
        # a generator term, not the extra loss: it trains the face G draws, never the mix c_lowpass_fit keeps
        term = losses.mode_seeking(fake, inputs["z"], self.config.batch_size)
        return self.options.mode_seeking * term, {"ms_loss": term}

    def extra_generator_loss(self, fake, inputs):
        c = inputs["c"]
        if self.options.target == "quantile":
            f = self.extract(fake)
            target = self.target_of(c)
            per_example = tf.reduce_sum(tf.abs(f - target), axis=1)
        else:
            f = tf.clip_by_value(self.extract(fake), 1e-6, 1.0 - 1e-6)
            target = c
            per_example = -tf.reduce_sum(c * tf.math.log(f) + (1.0 - c) * tf.math.log(1.0 - f), axis=1)
        loss = tf.nn.compute_average_loss(per_example, global_batch_size=self.config.batch_size)
        gaps = tf.reduce_sum(f - target, axis=0) / self.config.batch_size  # (k,) mean gap over the global batch
        scalars = {"e_loss": loss, **{f"e_{e}": gaps[i] for i, e in enumerate(self.options.extractors)}}
        if self.options.z_pairs:  # quantile target only (EGANOptions checks)
            if self.options.pairs_from == "extra":
                f, target = self.extra_pairs(tf.shape(fake)[0])
            scalars["e_pair"] = pair = self.pair_loss(f, target)
            loss = loss + self.options.pair_weight * pair
        weight = self.extractor_weight()
        if self.options.weight_warmup:
            scalars["e_weight"] = weight
        return weight * loss, scalars

    def extra_pairs(self, n) -> tuple[tf.Tensor, tf.Tensor]:
        """``pairs_from="extra"``: ``(m, k)`` F values and targets of m = n/2 (even, at least 2)
        faces G draws beside its batch of ``n``, in pairs of rows sharing a z."""
        m = extra_pair_rows(n)
        inputs = self.paired(super().sample_inputs(m), m)
        fake = self.generator(self.generator_input(inputs), training=True)
        return self.extract(fake), self.target_of(inputs["c"])

    def pair_loss(self, f: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
        """Mean over the pairs of rows (2i, 2i + 1) sharing a z of sum_k |F_a - F_b - (Q_a - Q_b)|,
        from ``(n, k)`` F values and targets (averaged over the global batch's pairs)."""
        m = tf.shape(f)[0] // 2 * 2
        gap = (f[:m:2] - f[1:m:2]) - (target[:m:2] - target[1:m:2])
        batch = self.config.batch_size
        rows = batch if self.options.pairs_from == "batch" else extra_pair_rows(batch)
        return tf.nn.compute_average_loss(tf.reduce_sum(tf.abs(gap), axis=1), global_batch_size=max(1, rows // 2))

    def extra_updates(self, batch):
        if not self.joint:
            return {}
        from model.apps.attributes import masked_bce

        labels = batch["attributes"]
        with tf.GradientTape() as tape:
            probs = self.classifier(batch["image"], training=True)
            loss = masked_bce(labels, probs)  # mean over the replica's known labels
        self.apply(self.f_opt, tape, loss, self.classifier.trainable_variables)
        known = tf.cast(labels >= 0, tf.float32)
        right = tf.cast((probs > 0.5) == (labels > 0.5), tf.float32) * known
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        return {"f_loss": loss / replicas,
                "f_acc": tf.reduce_sum(right) / tf.maximum(tf.reduce_sum(known), 1.0) / replicas}


def _interpolate(table: tf.Tensor, position: tf.Tensor) -> tf.Tensor:
    """``(k, m)`` values of each row of ``table`` ``(k, q)`` at fractional indices ``position``
    ``(k, m)`` in [0, q - 1], linearly between neighbours."""
    last = tf.shape(table)[1] - 1
    low = tf.clip_by_value(tf.cast(tf.floor(position), tf.int32), 0, last)
    high = tf.minimum(low + 1, last)
    frac = position - tf.cast(low, tf.float32)
    return (1.0 - frac) * tf.gather(table, low, batch_dims=1) + frac * tf.gather(table, high, batch_dims=1)


def extra_pair_rows(n):
    """Faces ``pairs_from="extra"`` draws beside a batch of ``n`` (a Python int or a scalar
    tensor): n/2, even, at least 2."""
    return tf.maximum(2, n // 4 * 2) if tf.is_tensor(n) else max(2, n // 4 * 2)
