"""DCGAN (Radford et al. 2015): the networks of model/nets/dcgan.py (or another family of
model/nets/networks.py: ``--generator seed``, ``--discriminator capsnet``), Adam 2e-4 / beta1
0.5, the discriminator's binary cross-entropy and the non-saturating generator loss.

The other variants of this project build their networks through the same methods
(:meth:`DCGAN.heads`, :meth:`DCGAN.norm` say what their discriminator needs)."""
from __future__ import annotations

import keras
import tensorflow as tf

from model.nets.networks import NetworkOptions, build_discriminator, build_generator
from model.variants import losses
from model.variants.base import GANModel


class DCGAN(GANModel):
    """One discriminator update, then ``g_steps`` generator updates per step.

    As in the reference Torch code, the first generator update reuses the fake
    batch the discriminator just saw (one generator forward pass fewer); later
    ones draw new noise. With augmentation on, D sees every batch augmented
    (a fresh draw per call).
    """
    name = "dcgan"
    scalars = ("d_loss", "g_loss", "d_real", "d_fake", "d_acc_real", "d_acc_fake")
    plots = (("losses", ("d_loss", "g_loss"), None),
             ("discriminator outputs", ("d_real", "d_fake"), (0.0, 1.0)))
    #: The network families' settings (CapsNet routing); a variant's Options extends it.
    Options = NetworkOptions

    def extra_inputs(self) -> dict[str, int]:
        """Generator inputs beyond z, name -> size (none for the plain DCGAN)."""
        return {s.name: s.size for s in self.inputs()[1:]}

    def heads(self) -> dict[str, int] | None:
        """The discriminator's outputs (model/nets/heads.py): None, one logit tensor."""
        return None

    def hidden(self) -> dict | None:
        """Shared hidden layers of the heads (model/nets/heads.py); none here."""
        return None

    def norm(self) -> str:
        """The discriminator's normalisation: batch norm, as in the paper."""
        return "batch"

    def d_condition(self) -> dict[str, int] | None:
        """D's inputs beside the image, name -> size (a projection discriminator,
        model/nets/heads.py); None: D sees the image alone, as in the paper."""
        return None

    def d_feed(self, images: tf.Tensor, batch: dict | None = None, inputs: dict | None = None):
        """What D takes for ``images``: the images, or with :meth:`d_condition` the dict
        of the images and their condition, from the real ``batch`` or from the generator
        ``inputs`` the fake images were made from (the variant says how)."""
        return images

    def extra_ways(self) -> frozenset[str]:
        """How the inputs beyond z also enter the generator beyond its first layer (names of
        model/nets/dcgan.py ``EXTRA_WAYS``; none in the paper)."""
        return frozenset()

    def _generator(self, fast: bool) -> keras.Model:
        return build_generator(self.config, self.extra_inputs(), fast=fast, extra_ways=self.extra_ways())

    def _discriminator(self, fast: bool) -> keras.Model:
        return build_discriminator(self.config, self.options, self.heads(), self.hidden(), self.norm(), fast=fast,
                                   condition=self.d_condition())

    def build(self) -> None:
        self.generator = self._generator(fast=True)
        self.discriminator = self._discriminator(fast=True)
        self.g_opt, self.d_opt = self.adam("g"), self.adam("d")

    def inference_generator(self) -> keras.Model:
        return self._generator(fast=False)

    def inference_discriminator(self) -> keras.Model:
        return self._discriminator(fast=False)

    def source(self, out):
        """The real-or-fake logit in the discriminator's output (its ``logit`` head when the
        variant's discriminator has several)."""
        return out["logit"] if isinstance(out, dict) else out

    def discriminator_terms(self, batch: dict[str, tf.Tensor], inputs: dict[str, tf.Tensor], real_out, fake_out):
        """A term added to D's loss from its outputs on the real ``batch`` and on the fake
        images made from ``inputs``, and its scalars: ``(loss or None, {name: tensor})``.
        None for the plain DCGAN; ACGAN adds its class loss, InfoGAN its information loss."""
        return None, {}

    def generator_terms(self, fake: tf.Tensor, inputs: dict[str, tf.Tensor], out):
        """A term added to what G minimises from the ``fake`` images made from ``inputs`` and D's
        outputs ``out`` on them, and its scalars: ``(loss or None, {name: tensor})`` (ACGAN's
        class loss, InfoGAN's information loss, EGAN's mode-seeking term); None here. Unlike
        :meth:`extra_generator_loss`, it never trains :meth:`extra_loss_variables`."""
        return None, {}

    def extra_generator_loss(self, fake: tf.Tensor, inputs: dict[str, tf.Tensor]):
        """A term added to the generator's loss for the ``fake`` images made from ``inputs``,
        and its scalars: ``(loss or None, {name: tensor})``. None for the plain DCGAN; EGAN
        adds its extractor loss here."""
        return None, {}

    def extra_updates(self, batch: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """Updates of other networks after D and G (EGAN's jointly trained classifier);
        returns their scalars."""
        return {}

    def generator_objective(self, fake: tf.Tensor, inputs: dict[str, tf.Tensor]):
        """``(g_loss, total, extra, scalars)``: the non-saturating loss of D's verdict on ``fake``,
        with every term the variant adds (:meth:`generator_terms`, :meth:`extra_generator_loss`)
        what G minimises (without the latter unless :meth:`extra_loss_everywhere`), and the
        latter's term alone (or None), what :meth:`extra_loss_variables` minimise."""
        out = self.discriminator(self.d_feed(self.augment(fake), inputs=inputs), training=True)
        g_loss = losses.generator_loss(self.source(out), self.config.batch_size)
        head, head_scalars = self.generator_terms(fake, inputs, out)
        extra, extra_scalars = self.extra_generator_loss(fake, inputs)
        total = _plus(g_loss, head)
        return g_loss, _plus(total, extra) if self.extra_loss_everywhere() else total, extra, \
            {**head_scalars, **extra_scalars}

    def extra_loss_variables(self) -> list:
        """G's variables that learn from :meth:`extra_generator_loss`'s term alone, not from D's
        verdict (EGAN's ``c_lowpass_fit``: the blur mix); none for the plain DCGAN."""
        return []

    def extra_loss_everywhere(self) -> bool:
        """Whether :meth:`extra_generator_loss`'s term also trains the rest of G (beside
        :meth:`extra_loss_variables`; True), or leaves it to D's verdict alone (EGAN's
        ``c_lowpass_split``, which has such variables)."""
        return True

    def apply_generator(self, tape: tf.GradientTape, total: tf.Tensor, extra: tf.Tensor | None) -> None:
        """G's update: every variable by ``total``'s gradient, except :meth:`extra_loss_variables`,
        moved by ``extra``'s alone (``tape`` persistent then)."""
        G, own = self.generator, self.extra_loss_variables()
        if not own:
            self.apply(self.g_opt, tape, total, G.trainable_variables)
            return
        mine = {id(v) for v in own}
        rest = [v for v in G.trainable_variables if id(v) not in mine]
        self.apply_parts(self.g_opt, tape, [(total, rest), (extra, own)])

    def train_step(self, batch):
        c = self.config
        real = batch["image"]
        n = tf.shape(real)[0]
        G, D, aug = self.generator, self.discriminator, self.augment
        split = bool(self.extra_loss_variables())  # two gradients from one tape
        with tf.GradientTape(persistent=split) as g_tape:
            inputs = self.sample_inputs(n)
            fake = G(self.generator_input(inputs), training=True)
            with g_tape.stop_recording(), tf.GradientTape() as d_tape:
                real_out = D(self.d_feed(aug(real), batch=batch), training=True)
                fake_out = D(self.d_feed(aug(fake), inputs=inputs), training=True)
                d_loss = losses.discriminator_loss(self.source(real_out), self.source(fake_out), c.batch_size)
                d_extra, d_scalars = self.discriminator_terms(batch, inputs, real_out, fake_out)
                self.apply(self.d_opt, d_tape, _plus(d_loss, d_extra), D.trainable_variables)
            g_loss, total, extra, g_scalars = self.generator_objective(fake, inputs)
        self.apply_generator(g_tape, total, extra)
        for _ in range(c.g_steps - 1):
            with tf.GradientTape(persistent=split) as g_tape:
                inputs = self.sample_inputs(n)
                fake = G(self.generator_input(inputs), training=True)
                g_loss, total, extra, g_scalars = self.generator_objective(fake, inputs)
            self.apply_generator(g_tape, total, extra)
        stats = losses.discriminator_stats(self.source(real_out), self.source(fake_out), c.batch_size)
        return {"d_loss": d_loss, "g_loss": g_loss, **stats, **d_scalars, **g_scalars, **self.extra_updates(batch)}


def _plus(loss: tf.Tensor, term: tf.Tensor | None) -> tf.Tensor:
    return loss if term is None else loss + term
