"""ACGAN (Odena, Olah & Shlens 2017): a class-conditional generator G(z, c) and a
discriminator with two heads, the source (real or fake) and an auxiliary classifier
over the classes. With L_S the log-likelihood of the correct source and L_C that of
the correct class (on real and generated images), D maximises L_S + L_C and G
maximises L_C - L_S (here: the non-saturating source loss, as DCGAN). Adam 2e-4,
beta1 0.5, as the paper. The step is DCGAN's (model/variants/dcgan.py) with the class
terms added through its ``discriminator_terms`` / ``generator_terms`` hooks; ``d_loss``
and ``g_loss`` are the source terms, ``d_class`` and ``g_class`` the class terms.

Classes are the labels of labeled records (MNIST digits, CIFAR-10 classes: the
``label`` feature, names from the records) or, for face records, the 2^k
combinations of k chosen binary CelebA attributes (``--options
'{"attributes": ["Male", "Smiling"]}'``: 4 classes). G takes the class as a
one-hot input ``label`` concatenated to z; the progress grids hold one class per
row.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from itertools import product

import numpy as np
import tensorflow as tf

from model.card import InputSpec, sample_inputs
from model.nets.networks import NetworkOptions
from model.variants import losses
from model.variants.dcgan import DCGAN

#: At most this many chosen attributes (2^4 = 16 classes).
MAX_ATTRIBUTES = 4


@dataclass
class ACGANOptions(NetworkOptions):
    attributes: list = field(default_factory=list)  # CelebA attributes whose combinations are the classes
    class_weight: float = 1.0                       # weight of the class terms L_C against the source terms


class ACGAN(DCGAN):
    name = "acgan"
    scalars = ("d_loss", "g_loss", "d_class", "g_class", "class_acc_real", "class_acc_fake",
               "d_real", "d_fake", "d_acc_real", "d_acc_fake")
    plots = (("losses", ("d_loss", "g_loss"), None),
             ("class losses", ("d_class", "g_class"), None),
             ("auxiliary classifier accuracy", ("class_acc_real", "class_acc_fake"), (0.0, 1.0)),
             ("discriminator outputs", ("d_real", "d_fake"), (0.0, 1.0)))
    Options = ACGANOptions

    def __init__(self, config):
        super().__init__(config)
        attributes = [str(a) for a in self.options.attributes]
        if attributes:
            from model.apps.attributes import parse_attributes
            try:
                parse_attributes(attributes)
            except ValueError as exc:
                raise ValueError(f"acgan: option attributes {attributes}: {exc}") from None
            if len(attributes) > MAX_ATTRIBUTES:
                raise ValueError(f"acgan: option attributes {attributes}: give at most {MAX_ATTRIBUTES} "
                                 f"(2^{MAX_ATTRIBUTES} classes)")
            self.features = ("image", "attributes")
            self.class_names = [" ".join(("+" if bit else "-") + a for bit, a in zip(bits, attributes))
                                for bits in (tuple(reversed(p)) for p in product((0, 1), repeat=len(attributes)))]
        elif config.labels:
            self.features = ("image", "label")
            self.class_names = list(config.labels)
        else:
            raise ValueError("acgan needs classes: train on labeled records (e.g. --dataset mnist or cifar10) or "
                             "choose CelebA attributes, e.g. --options '{\"attributes\": [\"Male\"]}'")
        self.classes = len(self.class_names)

    def data_attributes(self):
        return list(self.options.attributes) or None

    def inputs(self):
        return [*super().inputs(), InputSpec("label", "onehot", self.classes, labels=tuple(self.class_names))]

    def heads(self):
        return {"logit": 1, "classes": self.classes}

    def fixed_inputs(self, n, seed):
        inputs = sample_inputs(self.inputs(), n, seed)
        cols = max(1, int(round(np.sqrt(n))))
        inputs["label"] = np.eye(self.classes, dtype=np.float32)[(np.arange(n) // cols) % self.classes]
        return inputs

    def real_labels(self, batch) -> tf.Tensor:
        """The one-hot class of each real example: its label, or its attributes read as bits
        (attribute k is bit k, as in :attr:`class_names`)."""
        if "label" in self.features:
            return tf.one_hot(batch["label"], self.classes)
        bits = tf.cast(batch["attributes"] > 0.5, tf.int32)
        return tf.one_hot(tf.reduce_sum(bits * (2 ** tf.range(tf.shape(bits)[1])), -1), self.classes)

    def discriminator_terms(self, batch, inputs, real_out, fake_out):
        c, real_label = self.config, self.real_labels(batch)
        d_class = (losses.class_loss(real_label, real_out["classes"], c.batch_size)
                   + losses.class_loss(inputs["label"], fake_out["classes"], c.batch_size))
        return self.options.class_weight * d_class, {
            "d_class": d_class,
            "class_acc_real": losses.class_accuracy(real_label, real_out["classes"], c.batch_size),
            "class_acc_fake": losses.class_accuracy(inputs["label"], fake_out["classes"], c.batch_size)}

    def generator_terms(self, fake, inputs, out):
        g_class = losses.class_loss(inputs["label"], out["classes"], self.config.batch_size)
        return self.options.class_weight * g_class, {"g_class": g_class}
