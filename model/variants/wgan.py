"""WGAN (Arjovsky, Chintala & Bottou 2017, Algorithm 1): a critic f with weights clipped
to [-0.01, 0.01] estimates the Wasserstein distance; RMSProp 5e-5; 5 critic updates per
generator update, each on a fresh real batch.

One training step (the loop's step) is ``n_critic`` critic updates and one generator
update, so a step reads ``n_critic x batch_size`` real images (:meth:`images_per_step`).
The critic is the chosen discriminator family with batch norm, as the paper's DCGAN
critic; its score is the ``(n, 1)`` output, unbounded. RMSProp as the reference
(PyTorch) code: smoothing 0.99, epsilon 1e-8 added to the root. The reference code's extra critic
iterations (100 for the first 25 generator steps and every 500th) are not part of
Algorithm 1 and not done here: a step has a fixed number of real batches.
"""
from __future__ import annotations

from dataclasses import dataclass

import keras
import tensorflow as tf

from model.nets.networks import NetworkOptions
from model.variants import losses
from model.variants.dcgan import DCGAN


@dataclass
class WGANOptions(NetworkOptions):
    clip: float = 0.01           # critic weights are clipped to [-clip, clip] after each update
    n_critic: int = 5            # critic updates per generator update
    rmsprop_rho: float = 0.99    # RMSProp's moving-average decay (PyTorch's alpha, the reference code's)
    rmsprop_epsilon: float = 1e-8  # added to the root, as PyTorch (Keras adds its epsilon under the root)


class WGAN(DCGAN):
    name = "wgan"
    scalars = ("d_loss", "g_loss", "w_dist", "d_real", "d_fake", "d_acc_real", "d_acc_fake")
    plots = (("losses", ("d_loss", "g_loss"), None),
             ("Wasserstein estimate", ("w_dist",), None),
             ("critic scores", ("d_real", "d_fake"), None))
    defaults = {"lr": 5e-5, "beta1": 0.5, "beta2": 0.999}  # lr: RMSProp's; betas unused
    Options = WGANOptions

    def __init__(self, config):
        super().__init__(config)
        o = self.options
        if o.n_critic < 1:
            raise ValueError(f"{self.name}: option n_critic must be >= 1, got {o.n_critic}")
        if config.g_steps != 1:
            raise ValueError(f"{self.name}: g_steps must be 1 (the critic takes n_critic updates per generator "
                             f"update: set --options '{{\"n_critic\": N}}'), got {config.g_steps}")

    def images_per_step(self) -> int:
        return self.options.n_critic * self.config.batch_size

    def build(self) -> None:
        self.generator = self._generator(fast=True)
        self.discriminator = self._discriminator(fast=True)
        self.g_opt, self.d_opt = self.optimizer("g"), self.optimizer("d")

    def optimizer(self, network: str) -> keras.optimizers.Optimizer:
        o = self.options
        # Keras divides by sqrt(v + epsilon), PyTorch by sqrt(v) + epsilon: epsilon squared gives
        # PyTorch's floor (it matters here: a clipped critic passes G gradients of 1e-9 and less).
        return self.loss_scaled(keras.optimizers.RMSprop(self.learning_rate(network), rho=o.rmsprop_rho,
                                                         epsilon=o.rmsprop_epsilon ** 2))

    def critic_update(self, real: tf.Tensor) -> dict[str, tf.Tensor]:
        """One critic update on one real batch (and a fresh fake batch): the loss, the
        weight clipping; returns the critic's scalars."""
        c = self.config
        G, D, aug = self.generator, self.discriminator, self.augment
        fake = G(self.generator_input(self.sample_inputs(tf.shape(real)[0])), training=True)
        with tf.GradientTape() as tape:
            real_scores, fake_scores = D(aug(real), training=True), D(aug(fake), training=True)
            loss = losses.critic_loss(real_scores, fake_scores, c.batch_size)
        self.apply(self.d_opt, tape, loss, D.trainable_variables)
        clip = self.options.clip
        for v in D.trainable_variables:
            v.assign(tf.clip_by_value(v, -clip, clip))
        return {"d_loss": loss, **losses.critic_stats(real_scores, fake_scores, c.batch_size)}

    def generator_update(self, n) -> tf.Tensor:
        c = self.config
        with tf.GradientTape() as tape:
            fake = self.generator(self.generator_input(self.sample_inputs(n)), training=True)
            g_loss = losses.critic_generator_loss(self.discriminator(self.augment(fake), training=True),
                                                  c.batch_size)
        self.apply(self.g_opt, tape, g_loss, self.generator.trainable_variables)
        return g_loss

    def train_step(self, batch):
        reals = tf.split(batch["image"], self.options.n_critic)
        for real in reals:  # unrolled: n_critic is a constant of the run
            stats = self.critic_update(real)
        g_loss = self.generator_update(tf.shape(reals[0])[0])
        return {**stats, "g_loss": g_loss}  # the critic's figures are those of its last update
