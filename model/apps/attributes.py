"""The project's CelebA attribute classifier: a small CNN, one sigmoid per attribute.

Used to score generated faces (the studio's attribute directions, model/apps/directions.py)
and as EGAN's attribute extractor. The network takes ``(n, S, S, C) float32`` in
[-1, 1] (the generator's output convention, so a caller can differentiate through it)
and returns ``(n, k) float32`` probabilities, one column per attribute::

    image -> Conv 4x4/2 (w) -> LeakyReLU -> Conv 4x4/2 (2w) -> BN -> LeakyReLU
          -> Conv 4x4/2 (4w) -> BN -> LeakyReLU -> Flatten -> Dropout -> Dense(k, sigmoid)

Trained on real records (model/train/data.py ``attributes``: 1 yes, 0 no, -1 unknown) with
label smoothing (targets 0.9 for yes, 0.1 for no); unknown labels are left out of the
loss. The weights of the epoch with the best mean validation accuracy are kept, and
the held-out accuracy per attribute is reported on the test split next to the
majority-class rate (what always answering the commoner label scores).

A trained classifier is a folder with ``classifier.keras`` and ``classifier.json``::

    {"format": "facegan-attribute-classifier/1", "attributes": ["Male", "Smiling"],
     "resolution": 64, "channels": 3, "width": 32, "targets": [0.9, 0.1],
     "accuracy": {"Male": {"validation": 0.93, "test": 0.92, "majority": 0.58, "n_test": 345}, ...},
     "mean_test_accuracy": 0.9, "epochs": 30, "best_epoch": 21,
     "records": {"folder": "processed/records/celeba/.../v-...", "version": "v-...", "train": 2684, ...},
     "created": "..."}
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from pipeline.records import ATTRIBUTE_NAMES

FORMAT = "facegan-attribute-classifier/1"
MODEL_FILE = "classifier.keras"
CARD_FILE = "classifier.json"
#: Label-smoothing targets (yes, no), as the EGAN thesis trains its classifier.
TARGETS = (0.9, 0.1)


def parse_attributes(names: str | Sequence[str]) -> tuple[str, ...]:
    """CelebA attribute names from ``"Male,Smiling"`` or a list, in the given order.

    Raises ``ValueError`` (one line, listing the valid names) for an unknown name, an
    empty list or a repeated name."""
    items = [n.strip() for n in names.split(",")] if isinstance(names, str) else [str(n).strip() for n in names]
    items = [n for n in items if n]
    if not items:
        raise ValueError(f"no attribute given; valid CelebA attributes: {', '.join(ATTRIBUTE_NAMES)}")
    unknown = [n for n in items if n not in ATTRIBUTE_NAMES]
    if unknown:
        raise ValueError(f"unknown CelebA attribute {', '.join(map(repr, unknown))}; "
                         f"valid names: {', '.join(ATTRIBUTE_NAMES)}")
    if len(set(items)) != len(items):
        raise ValueError(f"attribute names repeat: {items}")
    return tuple(items)


def attribute_columns(names: Sequence[str]) -> list[int]:
    """Columns of ``names`` in the records' ``(n, 40)`` attribute array."""
    return [ATTRIBUTE_NAMES.index(n) for n in parse_attributes(names)]


def smooth_targets(labels, high: float = TARGETS[0], low: float = TARGETS[1]) -> tuple[np.ndarray, np.ndarray]:
    """``(targets, known)`` for ``(n, k)`` labels in {1, 0, -1}: ``high`` where 1, ``low``
    where 0; ``known`` is 1.0 where the label is known (not -1), else 0.0. Both float32."""
    labels = np.asarray(labels)
    return np.where(labels > 0, high, low).astype(np.float32), (labels >= 0).astype(np.float32)


def masked_bce(labels, probs, high: float = TARGETS[0], low: float = TARGETS[1]):
    """Mean binary cross-entropy of ``probs`` ``(n, k)`` against the smoothed targets of
    ``labels`` ``(n, k)`` in {1, 0, -1}, over the known labels only (keras.ops: works on
    numpy arrays and inside a TensorFlow graph)."""
    from keras import ops

    labels = ops.cast(labels, "float32")
    targets = ops.where(labels > 0.5, high, low)
    known = ops.cast(labels >= 0, "float32")
    p = ops.clip(ops.cast(probs, "float32"), 1e-7, 1 - 1e-7)
    bce = -(targets * ops.log(p) + (1 - targets) * ops.log(1 - p))
    return ops.sum(bce * known) / ops.maximum(ops.sum(known), 1.0)


def build_classifier(n_attributes: int, resolution: int = 64, channels: int = 3, width: int = 32,
                     dropout: float = 0.3, name: str = "attribute_classifier"):
    """The 3-conv-layer CNN (module docstring): ``(n, S, S, C)`` in [-1, 1] -> ``(n, k)`` probabilities."""
    import keras
    from keras import layers

    image = keras.Input((resolution, resolution, channels), name="image")
    x = image
    for i, w in enumerate((width, 2 * width, 4 * width)):
        x = layers.Conv2D(w, 4, 2, "same", use_bias=i == 0, name=f"conv{i + 1}")(x)
        if i > 0:
            x = layers.BatchNormalization(name=f"bn{i + 1}")(x)
        x = layers.LeakyReLU(0.2)(x)
    x = layers.Dropout(dropout)(layers.Flatten()(x))
    out = layers.Dense(n_attributes, activation="sigmoid", dtype="float32", name="attributes")(x)
    return keras.Model(image, out, name=name)


def to_input(images: np.ndarray) -> np.ndarray:
    """``uint8`` images -> the classifier's float32 input in [-1, 1]."""
    return np.asarray(images, np.float32) * (1 / 127.5) - 1.0


def load_split(records_folder, split: str, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(images (n, S, S, 3) uint8, labels (n, k) int8)`` of one split of a records
    version, labels in the order of ``names``."""
    from model.train.data import example_dataset

    cols = attribute_columns(names)
    images, labels = [], []
    for batch in example_dataset(records_folder, split, batch_size=256):
        images.append(batch["image"].numpy())
        labels.append(batch["attributes"].numpy()[:, cols])
    if not images:
        raise ValueError(f"split {split!r} of {records_folder} holds no examples")
    return np.concatenate(images), np.concatenate(labels)


def accuracy(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``(k,)`` fraction of known labels that ``probs > 0.5`` gets right (NaN if none known)."""
    known = labels >= 0
    right = ((probs > 0.5) == (labels > 0)) & known
    with np.errstate(invalid="ignore", divide="ignore"):
        return right.sum(0) / known.sum(0)


def majority(labels: np.ndarray) -> np.ndarray:
    """``(k,)`` accuracy of always answering each attribute's commoner known label."""
    known = (labels >= 0).sum(0)
    yes = (labels > 0).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.maximum(yes, known - yes) / known


def train_classifier(records_folder, names: Sequence[str], out_dir, *, epochs: int = 30,
                     batch_size: int = 64, lr: float = 1e-3, width: int = 32, seed: int = 0,
                     targets: tuple[float, float] = TARGETS,
                     progress: Callable[[int, int, dict], None] | None = None) -> dict:
    """Train on ``records_folder``'s train split, keep the epoch with the best mean
    validation accuracy, report test accuracy; write ``classifier.keras`` and
    ``classifier.json`` into ``out_dir`` atomically. Returns the card (module docstring).

    ``progress(epoch, epochs, {"val_acc": ...})`` is called after every epoch."""
    import keras
    import tensorflow as tf

    from pipeline.atomic import atomic_dir
    from pipeline.records import read_info

    names = parse_attributes(names)
    info = read_info(records_folder)
    for split in ("train", "validation"):
        if split not in info["splits"]:
            raise ValueError(f"{records_folder} has no {split!r} split (it has {sorted(info['splits'])}); "
                             f"the classifier needs train and validation examples")
    held_out = "test" if "test" in info["splits"] else "validation"
    x_train, y_train = load_split(records_folder, "train", names)
    x_val, y_val = load_split(records_folder, "validation", names)
    x_test, y_test = (x_val, y_val) if held_out == "validation" else load_split(records_folder, "test", names)
    known = (y_train >= 0).sum(0)
    if (known == 0).any():
        missing = [n for n, k in zip(names, known, strict=True) if k == 0]
        raise ValueError(f"{records_folder}: no training example has a label for {missing} "
                         f"(attributes come with CelebA records)")

    keras.utils.set_random_seed(seed)
    resolution, channels = x_train.shape[1], x_train.shape[3]
    model = build_classifier(len(names), resolution, channels, width)
    high, low = targets
    model.compile(optimizer=keras.optimizers.Adam(lr, beta_1=0.5),
                  loss=lambda y, p: masked_bce(y, p, high, low))

    def augment(x, y):  # a mirrored face has the same attributes
        x = tf.image.random_flip_left_right(tf.cast(x, tf.float32) * (1 / 127.5) - 1.0, seed=seed)
        return x, y

    train = (tf.data.Dataset.from_tensor_slices((x_train, y_train)).shuffle(len(x_train), seed=seed)
             .batch(batch_size).map(augment, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2))
    best, best_epoch, best_weights = -1.0, 0, None
    for epoch in range(1, epochs + 1):
        model.fit(train, epochs=1, verbose=0)
        val_acc = float(np.nanmean(accuracy(predict(model, x_val), y_val)))
        if val_acc > best:
            best, best_epoch, best_weights = val_acc, epoch, model.get_weights()
        if progress is not None:
            progress(epoch, epochs, {"val_acc": val_acc})
    model.set_weights(best_weights)

    acc_val = accuracy(predict(model, x_val), y_val)
    acc_test = accuracy(predict(model, x_test), y_test)
    base = majority(y_test)
    card = {"format": FORMAT, "attributes": list(names), "resolution": int(resolution),
            "channels": int(channels), "width": width, "targets": [high, low],
            "accuracy": {n: {"validation": _round(acc_val[i]), held_out: _round(acc_test[i]),
                             "majority": _round(base[i]), f"n_{held_out}": int((y_test[:, i] >= 0).sum())}
                         for i, n in enumerate(names)},
            "held_out_split": held_out, "mean_test_accuracy": _round(np.nanmean(acc_test)),
            "epochs": epochs, "best_epoch": best_epoch, "batch_size": batch_size, "lr": lr, "seed": seed,
            "records": {"folder": str(records_folder), "version": info.get("version", ""),
                        "train": len(x_train), "validation": len(x_val),
                        held_out: len(x_test)},
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    with atomic_dir(out_dir) as tmp:  # saved uncompiled: the loss is a training detail
        keras.Model(model.input, model.output, name=model.name).save(tmp / MODEL_FILE)
        (tmp / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n")
    return card


def _round(x) -> float | None:
    return None if not np.isfinite(x) else round(float(x), 4)


def predict(model, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """``(n, k) float32`` probabilities of ``uint8`` images ``(n, S, S, C)``."""
    out = [np.asarray(model(to_input(images[i:i + batch_size]), training=False))
           for i in range(0, len(images), batch_size)]
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, model.output_shape[-1]), np.float32)


@dataclass
class AttributeClassifier:
    """A trained classifier: ``model`` (Keras), ``attributes`` (its output columns) and its ``card``."""
    model: object
    attributes: tuple[str, ...]
    card: dict

    def predict(self, images: np.ndarray, names: Sequence[str] | None = None) -> np.ndarray:
        """``(n, k)`` probabilities for ``uint8`` images, columns ``names`` (default: all)."""
        probs = predict(self.model, images)
        return probs if names is None else probs[:, self.columns(names)]

    def columns(self, names: Sequence[str]) -> list[int]:
        """Output columns of ``names``; one clear error naming what the classifier has."""
        names = parse_attributes(names)
        missing = [n for n in names if n not in self.attributes]
        if missing:
            raise ValueError(f"the classifier was not trained on {missing}; it has {list(self.attributes)} "
                             f"(train one with TrainAttributeClassifier --attributes ...)")
        return [self.attributes.index(n) for n in names]


def load_classifier(folder: str | os.PathLike) -> AttributeClassifier:
    """The classifier in ``folder`` (``classifier.keras`` + ``classifier.json``)."""
    import keras

    folder = Path(folder)
    try:
        card = json.loads((folder / CARD_FILE).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{folder / CARD_FILE} not found: train the classifier first "
                                f"(luigi --module tasks TrainAttributeClassifier)") from None
    if card.get("format") != FORMAT:
        raise ValueError(f"{folder / CARD_FILE} is not an attribute classifier card ({card.get('format')!r})")
    model = keras.models.load_model(folder / MODEL_FILE, compile=False)
    return AttributeClassifier(model, tuple(card["attributes"]), card)
