"""The trained completion network: its training data (faces with holes), its training on the one
loop, and how a completion finds, loads and runs it.

A completion network belongs to a records version, not to one generator: ``TrainCompletion``
writes it to ``processed/completion/<dataset>/<version>/`` with ``completion_card.json``
naming the records version it was trained on (``dataset.version``, ``dataset.records``). A
generator run's model card names its records the same way, so a completion with a generator
run finds the network trained on the same faces (:func:`find_completion_run`): under
``processed/completion`` of the working directory and of each folder above the run (the
project the run lives in), the newest whose card names the same records version.

    result = complete_with_net(network, faces, masks)   # arrays in, arrays out
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np

from model.apps.masks import training_masks

#: Where completion runs live, under a project's ``processed`` folder.
COMPLETION_DIR = "completion"
#: Fixed faces (and holes) shown in the training grids: half of an 8x8 grid.
GRID_FACES = 32
#: How the network's painted hole joins the known pixels by default (bench/complete.py measures
#: both: docs/completion.md).
NET_BLEND = "poisson"
#: Paint each face and its mirror image and average the two (aligned faces are nearly
#: symmetric, and training mirrors half of them): about +0.01 hole SSIM for a second forward pass.
NET_MIRROR = True

log = logging.getLogger(__name__)


# -- training -----------------------------------------------------------------------------------

def records_margin(folder) -> float:
    """The aligner margin of a records version's faces (its lineage), for the eye and mouth boxes."""
    from types import SimpleNamespace

    from model.apps.inversion import alignment_settings

    settings = alignment_settings(SimpleNamespace(dataset={"records": str(folder)}, resolution=0))
    return float(settings.get("margin", 0.0))


def completion_dataset(folder, config, margin: float = 0.0):
    """Training batches of the records version ``folder``'s train split, forever, in an order
    fixed by ``config.seed``, with their holes (:func:`with_masks`)."""
    from model.train.data import training_dataset

    base = training_dataset(folder, "train", config.batch_size, config.shuffle_buffer, config.seed)
    return with_masks(base.map(lambda batch: batch["image"]), config, margin)


def with_masks(images, config, margin: float = 0.0):
    """``images`` (a ``tf.data.Dataset`` of ``(B, S, S, C)`` batches in [-1, 1]) as the batches a
    completion network trains on: ``image`` (half mirrored when ``config.flip``) and ``mask``
    ``(B, S, S, 1)`` float32, 1 = missing. Batch ``i``'s holes and mirroring depend on
    ``(seed, i)`` alone (model/apps/masks.py ``training_masks``), so a resumed run skipping its
    first batches sees the very batches an uninterrupted run sees."""
    import tensorflow as tf

    B, S = config.batch_size, config.resolution

    def draw(index):
        return training_masks(config.seed, int(index), B, S, margin).astype(np.float32)

    def add_masks(index, image):
        masks = tf.numpy_function(draw, [index], tf.float32, stateful=False)
        masks = tf.ensure_shape(masks, [B, S, S])[..., None]
        if config.flip:
            seeds = tf.stack([tf.fill([B], tf.cast(config.seed, tf.int64)), index * B + tf.range(B, dtype=tf.int64)], 1)
            flip = tf.map_fn(lambda s: tf.random.stateless_uniform([], tf.cast(s, tf.int32)) < 0.5, seeds,
                             fn_output_signature=tf.bool)
            image = tf.where(flip[:, None, None, None], tf.reverse(image, axis=[2]), image)
        return {"image": image, "mask": masks}

    return images.enumerate().map(add_masks, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True) \
        .prefetch(tf.data.AUTOTUNE)


def grid_faces(folder, size: int, seed: int = 0, margin: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """The fixed faces of the training grids (the validation split's, else the train split's) and
    their holes: eight of each training kind in turn, ``(32, S, S, C) uint8``, ``(32, S, S)`` bool."""
    from model.apps.masks import TRAINING_KINDS, training_mask
    from model.eval.evaluation import read_split_images, split_sizes

    sizes = split_sizes(folder)
    split = "validation" if sizes.get("validation", 0) >= 1 else "train"
    faces = read_split_images(folder, split, GRID_FACES, seed)
    faces = np.resize(faces, (GRID_FACES, *faces.shape[1:]))  # a tiny split repeats its faces
    rng = np.random.default_rng(seed)
    kinds = list(TRAINING_KINDS)
    masks = np.stack([training_mask(kinds[i % len(kinds)], size, rng, margin) for i in range(GRID_FACES)])
    return faces, masks


def train_completion(config, folder, run_dir, dataset_card: dict,
                     progress: Callable[[int, int, dict], None] | None = None) -> dict:
    """Train a completion network on the records version ``folder`` into ``run_dir`` through the
    one training loop (model/train/loop.py: checkpoints, resume, NaN guard, TensorBoard,
    grids in ``progress/``); the loop's export writes ``completion_card.json`` and
    ``completion.keras``, last. Returns the loop's final scalars."""
    from model.train.loop import train
    from model.variants.completion import CompletionModel

    margin = records_margin(folder)
    faces, masks = grid_faces(folder, config.resolution, config.seed, margin)
    model = CompletionModel(config, faces, masks)
    data = completion_dataset(folder, config, margin)
    return train(config, data, run_dir, progress, model=model, dataset_card=dataset_card)


# -- finding and loading ------------------------------------------------------------------------

def read_completion_card(run_dir) -> dict:
    """The completion card of a run folder; one clear error when there is none or it is not one."""
    from model.variants.completion import CARD_FILE, CARD_FORMAT

    path = Path(run_dir) / CARD_FILE
    try:
        card = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} not found: {run_dir} is no completion run folder "
                                f"(train one: luigi --module tasks TrainCompletion --dataset NAME)") from None
    except ValueError as exc:
        raise ValueError(f"{path} is not readable JSON ({exc})") from None
    if card.get("format") != CARD_FORMAT:
        raise ValueError(f"{path} is not a completion card of format {CARD_FORMAT!r}: {card.get('format')!r}")
    return card


def completion_roots(run_dir=None) -> list[Path]:
    """Folders that may hold completion runs: ``processed/completion`` of the working directory,
    and ``completion`` beside every folder above ``run_dir`` (a run in ``processed/models/...``
    finds ``processed/completion``)."""
    roots = [Path("processed") / COMPLETION_DIR]
    if run_dir is not None:
        roots += [parent / COMPLETION_DIR for parent in Path(run_dir).resolve().parents]
    seen, out = set(), []
    for root in roots:
        key = root.resolve()
        if key not in seen and root.is_dir():
            seen.add(key)
            out.append(root)
    return out


def same_records(a: dict, b: dict) -> bool:
    """Whether two cards' ``dataset`` name the same records version (by version, else by folder)."""
    if a.get("version") and b.get("version"):
        return a["version"] == b["version"]
    ra, rb = a.get("records"), b.get("records")
    return bool(ra and rb) and Path(ra).resolve() == Path(rb).resolve()


def find_completion_run(dataset: dict, roots) -> Path | None:
    """The newest completion run folder under ``roots`` whose card names the records version of
    ``dataset`` (a card's ``dataset``), or None. Folders with a card but no network count too
    (:func:`load_completion_network` says what is missing)."""
    from model.variants.completion import CARD_FILE

    found = []
    for root in roots:
        for card_path in Path(root).glob(f"**/{CARD_FILE}"):
            try:
                card = read_completion_card(card_path.parent)
            except (OSError, ValueError):
                continue
            if same_records(card.get("dataset", {}), dataset or {}):
                found.append((card_path.stat().st_mtime, card_path.parent.resolve()))
    return max(found)[1] if found else None


def load_completion_network(run_dir):
    """``(card, network)`` of a completion run folder (the float32 exported network); a
    ``FileNotFoundError`` naming the file when the folder has a card but no network."""
    import keras

    card = read_completion_card(run_dir)
    path = Path(run_dir) / card["files"]["keras"]
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: the completion run {run_dir} has no network "
                                f"(training unfinished, or copied without it)")
    return card, keras.models.load_model(path, compile=False)


def check_network_card(card: dict, resolution: int, channels: int, where="") -> None:
    """One clear error when a completion network does not fit faces of ``resolution`` x ``channels``."""
    if (card.get("resolution"), card.get("channels")) != (resolution, channels):
        raise ValueError(f"the completion network {where} completes {card.get('resolution')}px "
                         f"{card.get('channels')}-channel faces, not {resolution}px {channels}-channel ones")


# -- running ------------------------------------------------------------------------------------

def paint(network, images: np.ndarray, masks: np.ndarray, mirror: bool = NET_MIRROR,
          batch_size: int = 64) -> np.ndarray:
    """The network's whole painted faces ``(n, S, S, C) uint8`` for ``images`` ``(n, S, S, C) uint8``
    under ``masks`` ``(n, S, S)`` bool; with ``mirror`` the mean of the painting of each face and the
    mirrored painting of its mirror image. The hole's pixels of ``images`` are never read."""
    from model.variants.completion import complete_batch

    painted = complete_batch(network, images, masks, batch_size)
    if not mirror:
        return painted
    flipped = complete_batch(network, images[:, :, ::-1], masks[:, :, ::-1], batch_size)[:, :, ::-1]
    return np.rint((painted.astype(np.float32) + flipped) / 2).astype(np.uint8)


def complete_with_net(network, images, masks, *, blend_method: str = NET_BLEND, mirror: bool = NET_MIRROR,
                      window: int | None = None, max_context_error: float | None = None,
                      batch_size: int = 64) -> dict:
    """Complete aligned faces with a trained completion network.

    ``images`` ``(n, S, S, C) uint8`` (what is under the hole is never read), ``masks``
    ``(n, S, S)`` bool or one ``(S, S)`` for all (True = missing; each with something missing
    and something known, else one clear ``ValueError``). Returns what
    :func:`model.apps.complete.complete_faces` returns where it applies: ``completed`` (the
    network's whole painted face, :func:`paint` with ``mirror``), ``blended`` (its hole pasted or
    Poisson-blended into the known pixels, ``blend_method``), ``known_error`` and
    ``context_error`` (grey levels: the painted face against the known pixels, everywhere and
    around the hole), ``flags`` (``poor fit``
    above ``max_context_error``), ``ok``, ``masks``, ``weights``, ``seconds``, and
    ``method`` ``"net"``; no loss curve (``loss`` is ``(0, n)``) and no D score (NaN)."""
    from model.apps.blend import blend
    from model.apps.masks import WINDOW, check_mask, context_weights
    from model.apps.quality import QualityLimits

    start = time.time()
    images = np.asarray(images)
    if images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(f"images must be (n, S, S, C) uint8 aligned faces, got {images.dtype} {images.shape}")
    n, S = len(images), images.shape[1]
    if tuple(network.input_shape[1:3]) != (S, S) or network.input_shape[-1] != images.shape[-1] + 1:
        raise ValueError(f"the completion network takes {network.input_shape[1]}x{network.input_shape[2]} "
                         f"faces with {network.input_shape[-1] - 1} channel(s); got {images.shape[1:]}")
    masks = np.asarray(masks)
    if masks.ndim == 2:
        masks = np.repeat(check_mask(masks, S)[None], n, axis=0)
    if masks.shape != images.shape[:3]:
        raise ValueError(f"masks must be ({n}, {S}, {S}) bool (one per image), got {masks.shape}")
    masks = np.stack([check_mask(m, S, f"mask {i}") for i, m in enumerate(masks)]) if n else masks.astype(bool)
    painted = paint(network, images, masks, mirror, batch_size)
    blended = blend(images, painted, masks, blend_method)
    weights = context_weights(masks, window or WINDOW)
    diff = np.abs(painted.astype(np.float32) - images.astype(np.float32)).mean(-1)
    known = ~masks
    known_error = (diff * known).sum((1, 2)) / np.maximum(known.sum((1, 2)), 1)
    context_error = (diff * weights).sum((1, 2)) / np.maximum(weights.sum((1, 2)), 1e-9)
    limit = QualityLimits.max_context_error if max_context_error is None else max_context_error
    flags = [[f"poor fit: the painted face misses the known pixels around the hole by {e:.1f} grey levels "
              f"(limit {limit:g})"] if e > limit else [] for e in context_error]
    return {"method": "net", "completed": painted, "blended": blended, "masks": masks, "weights": weights,
            "known_error": known_error, "context_error": context_error, "flags": flags,
            "ok": np.array([not f for f in flags], bool), "d_score": np.full(n, np.nan, np.float32),
            "loss": np.zeros((0, n), np.float32), "loss_restarts": np.zeros((0, n, 1), np.float32),
            "seconds": time.time() - start}


# -- which method ---------------------------------------------------------------------------------

METHODS = ("auto", "net", "search")


def choose_method(method: str, card, run_dir=None, completion: str | os.PathLike = "") -> dict:
    """Which completion runs for a generator run (``card``, ``run_dir``): ``{"method": "net" or
    "search", "network", "card", "run" (the completion run folder or None), "note"}``.

    ``net`` uses the network of ``completion`` (a completion run folder) or the one trained on
    the records version the generator's card names (:func:`find_completion_run`), and is an
    error when there is none. ``auto`` does the same when there is one and falls back to
    ``search`` otherwise; so does a completion run folder without its network, with a log line
    and ``note`` saying so. ``search`` never looks."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    none = {"method": "search", "network": None, "card": None, "run": None, "note": ""}
    if method == "search":
        return none
    if completion:
        found = Path(completion)
        read_completion_card(found)  # one clear error for a folder that is no completion run
    else:
        found = find_completion_run(card.dataset, completion_roots(run_dir))
    if found is None:
        version = (card.dataset or {}).get("version") or (card.dataset or {}).get("records") or "(none named)"
        note = (f"no completion network trained on records {version} (train one: luigi --module tasks "
                f"TrainCompletion --dataset {(card.dataset or {}).get('name', 'NAME')}): using search")
        if method == "net":
            raise FileNotFoundError(note.replace(": using search", ""))
        log.info(note)
        return {**none, "note": note}
    try:
        net_card, network = load_completion_network(found)
    except FileNotFoundError as exc:
        if method == "net":
            raise
        note = f"{exc}: falling back to search"
        log.warning(note)
        return {**none, "run": found, "note": note}
    check_network_card(net_card, card.resolution, card.channels, str(found))
    return {"method": "net", "network": network, "card": net_card, "run": found,
            "note": f"completion network {found} ({net_card.get('steps')} steps)"}
