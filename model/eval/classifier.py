"""A small classifier of labeled records (MNIST digits, CIFAR-10 classes): the feature
space of the MNIST GAN comparison (the Inception network is the wrong feature space
for digits) and the judge of conditional samples (ACGAN's requested class, InfoGAN's
categorical code).

    image (S, S, C) in [-1, 1] -> [Conv 3x3 w -> ReLU] x2 -> max-pool 2
                               -> [Conv 3x3 2w -> ReLU] x2 -> max-pool 2
                               -> Dense 128 ReLU ("features") -> dropout 0.3 -> Dense classes (logits)

:func:`feature_network` wraps the trained network as a model/eval/metrics.py ``.keras``
feature network: it takes RGB (what model/eval/evaluation.py's ``to_rgb`` feeds; gray
images are repeated to three channels) and, for a gray classifier, averages the three
channels with a fixed 1x1 convolution (weights 1/3, not trainable), which gives back
the gray image exactly; the output is the 128-d "features" layer (after its ReLU).
model/eval/metrics.py maps pixels to ``(x - 128) / 128`` where training used
``x / 127.5 - 1`` (model/train/data.py): at most 0.008 apart, far below what the features
resolve.
"""
from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from keras import layers

FEATURES = "features"


def build_classifier(resolution: int = 28, channels: int = 1, classes: int = 10, width: int = 32,
                     feature_dim: int = 128, dropout: float = 0.3) -> keras.Model:
    """The classifier: ``(n, S, S, C)`` in [-1, 1] -> ``(n, classes)`` logits."""
    img = keras.Input((resolution, resolution, channels), name="image")
    x = img
    for w in (width, 2 * width):
        x = layers.Conv2D(w, 3, padding="same", activation="relu")(x)
        x = layers.Conv2D(w, 3, padding="same", activation="relu")(x)
        x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    x = layers.Dense(feature_dim, activation="relu", name=FEATURES)(x)
    x = layers.Dropout(dropout)(x)
    return keras.Model(img, layers.Dense(classes, name="logits")(x), name="classifier")


def feature_network(classifier: keras.Model) -> keras.Model:
    """``(n, S, S, 3)`` RGB in [-1, 1) -> ``(n, 128)`` features of ``classifier`` (see the
    module docstring for the gray input)."""
    size, channels = classifier.input_shape[1], classifier.input_shape[3]
    body = keras.Model(classifier.input, classifier.get_layer(FEATURES).output, name="classifier_features")
    rgb = keras.Input((size, size, 3), name="image")
    x = rgb
    if channels == 1:
        gray = layers.Conv2D(1, 1, use_bias=False, trainable=False, name="to_gray",
                             kernel_initializer=keras.initializers.Constant(1.0 / 3.0))
        x = gray(x)
    elif channels != 3:
        raise ValueError(f"classifier takes {channels} channels; a feature network needs 1 or 3")
    return keras.Model(rgb, body(x), name="feature_network")


def to_float(images: np.ndarray) -> np.ndarray:
    """``uint8`` images -> float32 in [-1, 1], as model/train/data.py dequantises for training."""
    return np.asarray(images, np.float32) * (1 / 127.5) - 1.0


def predict(classifier: keras.Model, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Class indices ``(n,)`` for ``uint8`` images ``(n, S, S, C)`` (C as the classifier's)."""
    out = [np.argmax(classifier(to_float(images[i:i + batch_size]), training=False), -1)
           for i in range(0, len(images), batch_size)]
    return np.concatenate(out) if out else np.zeros((0,), np.int64)


def train_classifier(dataset: tf.data.Dataset, steps: int, resolution: int, channels: int, classes: int,
                     lr: float = 1e-3, seed: int = 0, progress=None) -> keras.Model:
    """Train :func:`build_classifier` for ``steps`` batches of ``dataset`` (dicts with
    ``image`` float32 in [-1, 1] and ``label`` int64) with Adam and softmax
    cross-entropy, in float32. ``progress(step, steps, loss)`` every 50 steps."""
    keras.utils.set_random_seed(seed)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        model = build_classifier(resolution, channels, classes)
        opt = keras.optimizers.Adam(lr)
        opt.build(model.trainable_variables)
    finally:
        keras.config.set_dtype_policy(previous)

    @tf.function
    def step(images, labels):
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
        opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        return loss

    for k, batch in enumerate(dataset.take(steps)):
        loss = step(batch["image"], batch["label"])
        if progress is not None and ((k + 1) % 50 == 0 or k + 1 == steps):
            progress(k + 1, steps, float(loss))
    return model


def accuracy(classifier: keras.Model, images: np.ndarray, labels: np.ndarray) -> float:
    """Share of ``uint8`` ``images`` classified as their ``labels``."""
    return float(np.mean(predict(classifier, images) == np.asarray(labels)))


def matched_accuracy(codes: np.ndarray, labels: np.ndarray, n_codes: int, n_labels: int) -> tuple[float, dict]:
    """How well categorical ``codes`` predict ``labels`` under the best one-to-one mapping of
    codes to labels (Hungarian method on the confusion counts,
    ``scipy.optimize.linear_sum_assignment``): ``(accuracy, {code: label})``. Codes left
    unmatched (more codes than labels) count as wrong."""
    from scipy.optimize import linear_sum_assignment

    counts = np.zeros((n_codes, n_labels), np.int64)
    np.add.at(counts, (np.asarray(codes), np.asarray(labels)), 1)
    rows, cols = linear_sum_assignment(counts, maximize=True)
    return float(counts[rows, cols].sum() / max(1, len(codes))), {int(r): int(c) for r, c in zip(rows, cols)}


def read_labeled(folder, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Every ``(images uint8 (n, S, S, C), labels (n,))`` of ``split`` of labeled records."""
    from model.train.data import example_dataset

    images, labels = [], []
    for batch in example_dataset(folder, split, batch_size=1024).as_numpy_iterator():
        images.append(batch["image"])
        labels.append(batch["label"])
    return np.concatenate(images), np.concatenate(labels)


def train_on_records(folder, out_dir, steps: int = 2000, batch_size: int = 64, lr: float = 1e-3, seed: int = 0,
                     progress=None) -> dict:
    """Train the classifier on the ``train`` split of the labeled records ``folder``, measure
    it on ``test``, and write into the existing folder ``out_dir``: ``classifier.keras``
    (image -> logits), ``features.keras`` (:func:`feature_network`) and ``report.json``
    (test accuracy, sizes, settings). Returns the report."""
    import time

    from model.train.data import training_dataset
    from pipeline.atomic import write_json
    from pipeline.records import read_info

    start = time.time()
    info = read_info(folder)
    names = info.get("class_names")
    if not names:
        raise ValueError(f"records {folder} have no class_names: a classifier needs labeled records "
                         f"(e.g. BuildTFRecords --dataset mnist)")
    size, _, channels = (list(info["image_shape"]) + [3])[:3]
    data = training_dataset(folder, "train", batch_size, 10_000, seed, features=("image", "label"))
    model = train_classifier(data, steps, size, channels, len(names), lr, seed, progress)
    test_images, test_labels = read_labeled(folder, "test")
    report = {"test_accuracy": accuracy(model, test_images, test_labels), "test_n": int(len(test_labels)),
              "classes": list(names), "resolution": size, "channels": channels, "steps": steps,
              "batch_size": batch_size, "lr": lr, "seed": seed, "records": str(folder),
              "feature_dim": int(model.get_layer(FEATURES).units),
              "seconds": round(time.time() - start, 1)}
    out_dir = Path(out_dir)
    model.save(out_dir / "classifier.keras")
    feature_network(model).save(out_dir / "features.keras")
    write_json(out_dir / "report.json", report)
    return report
