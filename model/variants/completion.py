"""A completion network as a model of the one training loop: its networks (model/nets/completion.py)
and its losses, nothing else (the loop keeps checkpoints, resume, the NaN guard, logs, grids).

Each batch holds real faces and the holes drawn for them (model/apps/masks.py, fed by
model/apps/completion_net.py ``completion_dataset``): ``image`` ``(n, S, S, C)`` in [-1, 1]
and ``mask`` ``(n, S, S, 1)``, 1 = missing. The network sees the known pixels (the hole
zeroed) and the mask and paints the whole face; the face it is judged on is its hole pasted
into the known pixels. The losses (Pathak et al. 2016; Iizuka et al. 2017):

* ``l1_hole``: mean absolute error in the hole (per hole pixel), weight 1;
* ``l1_known``: the same on the known pixels, weight ``known_weight`` (keeps the painted face
  continuous with its border, which the blend relies on);
* ``g_adv``: the non-saturating GAN loss of the completed face under the global discriminator
  (and of the half-side square around the hole under the local one with ``local``), weight
  ``adversarial``; the discriminators learn real faces against completed ones.

Not a GAN variant of ``TrainGAN`` (it needs holes in its batches): ``TrainCompletion`` trains it.
"""
from __future__ import annotations

from dataclasses import asdict

import keras
import numpy as np
import tensorflow as tf

from model.nets.completion import build_completion_network, build_patch_discriminator
from model.train.optim import FusedAdam
from model.variants import losses
from model.variants.base import GANModel

#: The exported network and the card beside it in a completion run folder.
NETWORK_FILE = "completion.keras"
CARD_FILE = "completion_card.json"
CARD_FORMAT = "facegan-completion-card/1"


def network_input(images: tf.Tensor, masks: tf.Tensor) -> tf.Tensor:
    """``(n, S, S, C + 1)``: ``images`` in [-1, 1] with the hole zeroed, and ``masks``
    ``(n, S, S, 1)`` (1 = missing) as the last channel. The hole's pixels never get through."""
    return tf.concat([images * (1.0 - masks), masks], axis=-1)


def local_boxes(masks: tf.Tensor, side: int) -> tf.Tensor:
    """``(n, 4)`` normalised boxes ``[y0, x0, y1, x1]`` of a ``side // 2`` square centred on each
    hole's bounding box (shifted to stay inside the image), for ``tf.image.crop_and_resize``."""
    m = tf.reshape(masks, [-1, side, side])
    rows, cols = tf.reduce_max(m, axis=2), tf.reduce_max(m, axis=1)
    idx = tf.range(side, dtype=tf.float32)

    def centre(line):
        first = tf.reduce_min(tf.where(line > 0, idx, float(side)), axis=1)
        last = tf.reduce_max(tf.where(line > 0, idx, -1.0), axis=1)
        return (first + last + 1.0) / 2.0

    half = side // 2
    cy = tf.clip_by_value(centre(rows), half / 2, side - half / 2)
    cx = tf.clip_by_value(centre(cols), half / 2, side - half / 2)
    y0, x0 = tf.round(cy - half / 2), tf.round(cx - half / 2)
    scale = float(side - 1)
    return tf.stack([y0 / scale, x0 / scale, (y0 + half - 1) / scale, (x0 + half - 1) / scale], axis=1)


class CompletionModel(GANModel):
    """The completion network and its discriminator(s) under a :class:`model.config.CompletionConfig`.

    ``fixed_faces`` ``(32, S, S, C) uint8`` (held-out faces) and ``fixed_masks`` ``(32, S, S)``
    bool are what the training grids show (input, completion, side by side)."""
    name = "completion"
    scalars = ("l1_hole", "l1_known", "g_adv", "d_loss", "d_real", "d_fake")
    plots = (("reconstruction (L1, [-1, 1] units)", ("l1_hole", "l1_known"), None),
             ("adversarial", ("g_adv", "d_loss"), None),
             ("discriminator outputs", ("d_real", "d_fake"), (0.0, 1.0)))
    features = ("image", "mask")

    def __init__(self, config, fixed_faces: np.ndarray | None = None, fixed_masks: np.ndarray | None = None):
        super().__init__(config)
        self.fixed_faces, self.fixed_masks = fixed_faces, fixed_masks

    # -- networks ---------------------------------------------------------------------------------

    def _network(self) -> keras.Model:
        c = self.config
        return build_completion_network(c.resolution, c.channels, c.width)

    def _discriminators(self) -> dict[str, keras.Model]:
        c = self.config
        out = {"discriminator": build_patch_discriminator(c.resolution, c.channels, c.d_width, "global")}
        if c.local:
            out["local_discriminator"] = build_patch_discriminator(c.resolution // 2, c.channels, c.d_width, "local")
        return out

    def _adam(self) -> keras.optimizers.Optimizer:
        c = self.config
        return self.loss_scaled(FusedAdam(c.lr, beta_1=c.beta1, beta_2=c.beta2))

    def build(self) -> None:
        self.generator = self._network()
        nets = self._discriminators()
        self.discriminator = nets["discriminator"]
        self.local_discriminator = nets.get("local_discriminator")
        self.g_opt, self.d_opt = self._adam(), self._adam()

    def discriminators(self) -> list[keras.Model]:
        return [self.discriminator] + ([self.local_discriminator] if self.local_discriminator is not None else [])

    def d_variables(self) -> list:
        return [v for d in self.discriminators() for v in d.trainable_variables]

    def trackables(self) -> dict:
        extra = {"local_discriminator": self.local_discriminator} if self.local_discriminator is not None else {}
        return {"generator": self.generator, "discriminator": self.discriminator, **extra,
                "g_opt": self.g_opt, "d_opt": self.d_opt}

    def optimizer_variables(self):
        return [(self.g_opt, self.generator.trainable_variables), (self.d_opt, self.d_variables())]

    def inputs(self):
        return []

    def inference_generator(self) -> keras.Model:
        return self._network()

    def inference_discriminator(self) -> keras.Model:
        return self._discriminators()["discriminator"]

    def describe(self) -> dict:
        return {}

    # -- the step ---------------------------------------------------------------------------------

    def _logits(self, images: tf.Tensor, masks: tf.Tensor) -> list[tf.Tensor]:
        out = [self.discriminator(images, training=True)]
        if self.local_discriminator is not None:
            side = self.config.resolution
            crops = tf.image.crop_and_resize(tf.cast(images, tf.float32), local_boxes(masks, side),
                                             tf.range(tf.shape(images)[0]), [side // 2, side // 2])
            out.append(self.local_discriminator(tf.cast(crops, images.dtype), training=True))
        return out

    def train_step(self, batch):
        c = self.config
        real, masks = tf.cast(batch["image"], tf.float32), tf.cast(batch["mask"], tf.float32)
        n = c.batch_size
        G = self.generator
        with tf.GradientTape() as g_tape:
            painted = tf.cast(G(network_input(real, masks), training=True), tf.float32)
            completed = painted * masks + real * (1.0 - masks)
            error = tf.abs(painted - real)
            hole = tf.reduce_sum(error * masks, axis=[1, 2, 3]) / (c.channels * tf.reduce_sum(masks, axis=[1, 2, 3]))
            known = tf.reduce_sum(error * (1.0 - masks), axis=[1, 2, 3]) / (
                c.channels * tf.reduce_sum(1.0 - masks, axis=[1, 2, 3]))
            l1_hole = tf.nn.compute_average_loss(hole, global_batch_size=n)
            l1_known = tf.nn.compute_average_loss(known, global_batch_size=n)
            total = l1_hole + c.known_weight * l1_known
            g_adv = tf.constant(0.0)
            d_loss, stats = tf.constant(0.0), {"d_real": tf.constant(0.0), "d_fake": tf.constant(0.0)}
            if c.adversarial:
                with g_tape.stop_recording(), tf.GradientTape() as d_tape:
                    fake_in = tf.stop_gradient(completed)
                    real_logits, fake_logits = self._logits(real, masks), self._logits(fake_in, masks)
                    d_loss = tf.add_n([losses.discriminator_loss(r, f, n) for r, f in zip(real_logits, fake_logits)])
                    self.apply(self.d_opt, d_tape, d_loss, self.d_variables())
                stats = losses.discriminator_stats(real_logits[0], fake_logits[0], n)
                g_adv = tf.add_n([losses.generator_loss(f, n) for f in self._logits(completed, masks)])
                total = total + c.adversarial * g_adv
        self.apply(self.g_opt, g_tape, total, G.trainable_variables)
        return {"l1_hole": l1_hole, "l1_known": l1_known, "g_adv": g_adv, "d_loss": d_loss,
                "d_real": stats["d_real"], "d_fake": stats["d_fake"]}

    # -- grids and export -------------------------------------------------------------------------

    def fixed_inputs(self, n: int, seed: int) -> dict[str, np.ndarray]:
        """The fixed faces and holes of the training grids (``n // 2`` of each)."""
        if self.fixed_faces is None or self.fixed_masks is None:
            raise ValueError("CompletionModel needs fixed_faces and fixed_masks for its training grids")
        k = n // 2
        return {"image": self.fixed_faces[:k], "mask": self.fixed_masks[:k]}

    def grid_images(self, generator, inputs) -> np.ndarray:
        """Input (hole grey) and completion (the hole pasted in) of each fixed face, in turn."""
        faces, masks = inputs["image"], inputs["mask"]
        painted = complete_batch(generator, faces, masks)
        shown = np.where(masks[..., None], np.uint8(128), faces)
        completed = np.where(masks[..., None], painted, faces)
        return np.stack([shown, completed], axis=1).reshape(-1, *faces.shape[1:]).astype(np.uint8)

    def export(self, trainer, run_dir, dataset_card) -> bool:
        """``completion_card.json`` then ``completion.keras`` (the float32 network, plain Keras), last."""
        from model.train.loop import save_keras_atomic
        from pipeline.atomic import write_json

        c = self.config
        network = self.inference_generator()
        network.set_weights(self.generator.get_weights())
        card = {"format": CARD_FORMAT, "kind": "completion", "resolution": c.resolution, "channels": c.channels,
                "dataset": dict(dataset_card or {}), "steps": int(trainer.step.numpy()),
                "precision": trainer.policy, "files": {"keras": NETWORK_FILE},
                "input": "(n, S, S, C + 1) float32: known pixels in [-1, 1] with the hole 0, then the mask "
                         "(1 = missing)", "output": "(n, S, S, C) float32 in [-1, 1]: the painted face",
                "training": asdict(c), "budget": trainer.budget if getattr(trainer, "budget", None) else None,
                "created": time_stamp()}
        write_json(run_dir / CARD_FILE, card)
        save_keras_atomic(network, run_dir / NETWORK_FILE)
        return True


def complete_batch(network, faces: np.ndarray, masks: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """The network's painted faces ``(n, S, S, C) uint8`` for ``faces`` ``(n, S, S, C) uint8`` under
    ``masks`` ``(n, S, S)`` bool (True = missing); the hole's pixels of ``faces`` are not read."""
    from model.train.sampling import to_uint8

    run = compiled(network)
    out = []
    for i in range(0, len(faces), batch_size):
        x = tf.constant(faces[i:i + batch_size], tf.float32) / 127.5 - 1.0
        m = tf.constant(masks[i:i + batch_size, ..., None], tf.float32)
        out.append(to_uint8(run(x, m)))
    return np.concatenate(out) if out else np.zeros_like(faces)


def compiled(network):
    """``network``'s forward pass on (faces in [-1, 1], masks) as one ``tf.function`` (kept on the
    network): a Keras model called eagerly takes ten times longer per face at batch 1."""
    run = getattr(network, "_completion_forward", None)
    if run is None:
        run = tf.function(lambda x, m: network(network_input(x, m), training=False), reduce_retracing=True)
        network._completion_forward = run
    return run


def time_stamp() -> str:
    import time
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
