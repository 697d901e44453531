"""InfoGAN (Chen et al. 2016): latent codes c beside the noise z, and a network Q(c|x)
sharing the discriminator's body, trained so that c stays recoverable from G(z, c): the
mutual-information lower bound L_I = E[log Q(c | G(z, c))] + H(c) is maximised by G and
Q, i.e. both minimise lambda_cat * CE(code) + lambda_cont * NLL(cont) on generated
images (the constant H(c) dropped).

Codes (as the paper's MNIST model): a categorical code ``code`` (one-hot over 10
values, uniform) and 2 continuous codes ``cont`` ~ U(-1, 1). Q is one hidden layer on
the discriminator body, FC 128 - batch norm - LeakyReLU(0.2), then the categorical
logits and the continuous codes' means (``fixed_std``: unit variance, as the
reference code; otherwise means and log standard deviations: a factored Gaussian).
lambda = 1 for the categorical code; 0.1 for the continuous ones (the paper uses a
smaller lambda for continuous codes so the term is on the scale of the GAN loss).
As the reference code, the information term is added to both the discriminator's
loss (Q and the shared body) and the generator's: DCGAN's step (model/variants/dcgan.py)
with the term added through its ``discriminator_terms`` / ``generator_terms`` hooks;
``d_loss`` and ``g_loss`` are the GAN terms. Adam 2e-4, beta1 0.5.

ExportSamples draws a grid per code: one row per categorical value, and for each
continuous code the traversal of the paper's figures (one row per categorical value,
the code swept from -2 to 2 along the row, everything else fixed).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from model.card import InputSpec, sample_inputs
from model.nets.networks import NetworkOptions
from model.variants import losses
from model.variants.dcgan import DCGAN


@dataclass
class InfoGANOptions(NetworkOptions):
    categorical: int = 10        # values of the categorical code (0: none)
    continuous: int = 2          # continuous codes ~ U(-1, 1) (0: none)
    lambda_cat: float = 1.0      # weight of the categorical term of L_I
    lambda_cont: float = 0.1     # weight of the continuous term of L_I
    fixed_std: bool = True       # Q's Gaussian has unit variance (else Q also predicts log std)
    q_hidden: int = 128          # width of Q's hidden layer
    sweep: float = 2.0           # ExportSamples sweeps continuous codes over [-sweep, sweep]


class InfoGAN(DCGAN):
    name = "infogan"
    scalars = ("d_loss", "g_loss", "q_loss", "q_cat", "q_cont", "code_acc",
               "d_real", "d_fake", "d_acc_real", "d_acc_fake")
    plots = (("losses", ("d_loss", "g_loss"), None),
             ("information loss", ("q_loss", "q_cat", "q_cont"), None),
             ("Q's accuracy on the categorical code", ("code_acc",), (0.0, 1.0)),
             ("discriminator outputs", ("d_real", "d_fake"), (0.0, 1.0)))
    Options = InfoGANOptions

    def __init__(self, config):
        super().__init__(config)
        o = self.options
        if o.categorical < 0 or o.continuous < 0 or o.categorical + o.continuous == 0 or o.categorical == 1:
            raise ValueError(f"infogan: options categorical ({o.categorical}) and continuous ({o.continuous}) "
                             f"must be >= 0 with at least one code (and a categorical code has >= 2 values)")

    def inputs(self):
        o = self.options
        codes = []
        if o.categorical:
            codes.append(InputSpec("code", "onehot", o.categorical))
        if o.continuous:
            codes.append(InputSpec("cont", "continuous", o.continuous, range=(-1.0, 1.0),
                                   labels=tuple(f"c{k + 1}" for k in range(o.continuous)),
                                   meta={"sweep": [-o.sweep, o.sweep]}))
        return [*super().inputs(), *codes]

    def heads(self):
        o = self.options
        heads = {"logit": 1}
        if o.categorical:
            heads["code"] = o.categorical
        if o.continuous:
            heads["cont"] = o.continuous * (1 if o.fixed_std else 2)
        return heads

    def hidden(self):
        return {"q": (self.options.q_hidden, tuple(k for k in self.heads() if k != "logit"))}

    def fixed_inputs(self, n, seed):
        inputs = sample_inputs(self.inputs(), n, seed)
        if self.options.categorical:  # one categorical value per row of the grid
            cols = max(1, int(round(np.sqrt(n))))
            inputs["code"] = np.eye(self.options.categorical, dtype=np.float32)[
                (np.arange(n) // cols) % self.options.categorical]
        return inputs

    def information_loss(self, inputs, out) -> dict[str, tf.Tensor]:
        """``q_loss`` = lambda_cat CE + lambda_cont NLL of the codes under Q's outputs ``out``,
        its two terms and Q's accuracy on the categorical code."""
        o, c = self.options, self.config
        zero = tf.constant(0.0)
        q_cat = losses.class_loss(inputs["code"], out["code"], c.batch_size) if o.categorical else zero
        q_cont = losses.gaussian_nll(inputs["cont"], out["cont"], c.batch_size, o.fixed_std) \
            if o.continuous else zero
        acc = losses.class_accuracy(inputs["code"], out["code"], c.batch_size) if o.categorical else zero
        return {"q_loss": o.lambda_cat * q_cat + o.lambda_cont * q_cont, "q_cat": q_cat, "q_cont": q_cont,
                "code_acc": acc}

    def discriminator_terms(self, batch, inputs, real_out, fake_out):
        return self.information_loss(inputs, fake_out)["q_loss"], {}

    def generator_terms(self, fake, inputs, out):
        info = self.information_loss(inputs, out)
        return info["q_loss"], info
