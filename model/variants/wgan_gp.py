"""WGAN-GP (Gulrajani et al. 2017, Algorithm 1): the WGAN critic without weight clipping,
with a gradient penalty lambda E[(||grad f(x_hat)||_2 - 1)^2], lambda = 10, on points
x_hat = eps x + (1 - eps) G(z) with one eps ~ U[0, 1] per example; Adam 1e-4, betas
(0.0, 0.9); 5 critic updates per generator update, each on a fresh real batch.

The critic has no batch norm (it would make each example's gradient depend on the
others): layer norm over each example's feature map, as the paper's reference code,
or none (``critic_norm``). The penalty is computed on the images D sees, i.e. after
``--augment`` when it is on (model/variants/losses.py gradient_penalty).
"""
from __future__ import annotations

from dataclasses import dataclass

import tensorflow as tf

from model.nets.networks import NetworkOptions
from model.variants import losses
from model.variants.wgan import WGAN


@dataclass
class WGANGPOptions(NetworkOptions):
    penalty: float = 10.0        # lambda
    n_critic: int = 5            # critic updates per generator update
    critic_norm: str = "layer"   # "layer" or "none" (never batch norm: the penalty is per example)


class WGANGP(WGAN):
    name = "wgan-gp"
    scalars = ("d_loss", "g_loss", "w_dist", "gp", "d_real", "d_fake", "d_acc_real", "d_acc_fake")
    plots = (("losses", ("d_loss", "g_loss"), None),
             ("Wasserstein estimate and penalty", ("w_dist", "gp"), None),
             ("critic scores", ("d_real", "d_fake"), None))
    defaults = {"lr": 1e-4, "beta1": 0.0, "beta2": 0.9}
    Options = WGANGPOptions

    def __init__(self, config):
        super().__init__(config)
        if self.options.critic_norm not in ("layer", "none"):
            raise ValueError(f"wgan-gp: option critic_norm must be 'layer' or 'none' (batch norm breaks the "
                             f"per-example gradient penalty), got {self.options.critic_norm!r}")

    def norm(self) -> str:
        return self.options.critic_norm

    def optimizer(self, network: str):
        return self.adam(network)

    def critic_update(self, real: tf.Tensor) -> dict[str, tf.Tensor]:
        c = self.config
        G, D, aug = self.generator, self.discriminator, self.augment
        n = tf.shape(real)[0]
        fake = G(self.generator_input(self.sample_inputs(n)), training=True)
        fraction = self.rng.uniform((n,))  # one interpolation fraction per example
        with tf.GradientTape() as tape:
            real_in, fake_in = aug(real), aug(fake)
            real_scores, fake_scores = D(real_in, training=True), D(fake_in, training=True)
            gp = losses.gradient_penalty(lambda x: D(x, training=True), real_in, fake_in, fraction, c.batch_size)
            loss = losses.critic_loss(real_scores, fake_scores, c.batch_size) + self.options.penalty * gp
        self.apply(self.d_opt, tape, loss, D.trainable_variables)
        return {"d_loss": loss, "gp": gp, **losses.critic_stats(real_scores, fake_scores, c.batch_size)}
