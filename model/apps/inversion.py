"""Finding the generator inputs that reproduce known pixels: what completion
(model/apps/complete.py) and projection (model/apps/project.py) share.

:func:`fit_inputs` is the search of Yeh et al. (2017), "Semantic Image Inpainting
with Deep Generative Models": for each target image, a batch of ``restarts``
starting points is optimised with Adam to minimise

    loss(z) = sum_pixels W * |G(z) - y|  +  lam * log(1 - D(G(z)))

(the weighted contextual L1 plus the perceptual loss; ``log(1 - sigmoid(l)) =
-softplus(l)`` on D's logit ``l`` keeps it finite), and the restart with the
lowest loss seen is kept. Every image and restart of a chunk runs in one
TensorFlow graph (a ``tf.while_loop`` over the iterations, Adam written out on
the loop's tensors), so there is no Python per pixel or per iteration.

The inputs of the model card (model/card.py) are handled by kind:

* ``noise`` (z), ``continuous`` codes, ``attribute`` codes c: optimised, and clipped
  back into the card's ``range`` after every Adam step (projected gradient descent,
  as in Yeh et al.'s code; a uniform prior's support is then never left);
* ``onehot`` (a class, a categorical code): not differentiable in a useful way, so
  it is *searched*: candidate ``k`` of an image takes class ``k mod size``, and the
  best candidates keep theirs while z is optimised;
* any input given in ``fixed`` is held at the given values (e.g. "complete this
  face as class 3").

Starting points: ``candidates`` draws per image from the card's distributions are
scored (forward passes only) and the ``restarts`` best are optimised.

Stopping early: given an ``on_step(fraction)`` callback, the search runs in segments of
about :data:`SEGMENT_SECONDS` (the same arithmetic: Adam's state is carried from one
segment to the next) and the callback is called between them with the share of the
search done; raising from it (:class:`Cancelled`, e.g. through :func:`stop_when` and a
``threading.Event``) stops the work there. Without one the search is one graph call.
"""
from __future__ import annotations

import json
import os
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

#: Kinds of generator input that are optimised (the others are searched over).
OPTIMISED_KINDS = ("noise", "continuous", "attribute")
#: With an ``on_step`` callback, the search's graph calls last about this long (seconds):
#: how late a cancel can be seen, once the first call (which traces the graph) is over.
SEGMENT_SECONDS = 0.2


class Cancelled(Exception):
    """A search stopped between steps because its caller asked (see :func:`stop_when`)."""


def stop_when(event: threading.Event, report: Callable[[float], None] | None = None) -> Callable[[float], None]:
    """An ``on_step`` callback for :func:`fit_inputs`: reports the share done to ``report`` and
    raises :class:`Cancelled` once ``event`` is set."""
    def on_step(fraction: float) -> None:
        if report is not None:
            report(fraction)
        if event.is_set():
            raise Cancelled("cancelled")
    return on_step


@dataclass(frozen=True)
class FitSettings:
    """How the inputs are searched for; each default here is the one default.

    ``steps`` Adam iterations of every restart, ``restarts`` optimised starting
    points per image, ``candidates`` random draws per image scored to pick them,
    ``lr`` Adam's step size (betas 0.9, 0.999), ``lam`` the weight of the
    perceptual loss (Yeh et al.: 0.003; ignored without a discriminator),
    ``batch`` rows (images x restarts) per graph call."""
    steps: int = 50
    restarts: int = 2
    candidates: int = 32
    lr: float = 0.05
    lam: float = 0.003
    batch: int = 64

    def __post_init__(self):
        for name in ("steps", "restarts", "candidates", "batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.lam < 0:
            raise ValueError(f"lam (the perceptual loss weight) must be >= 0, got {self.lam}")


def to_float(images: np.ndarray) -> np.ndarray:
    """``uint8`` [0, 255] -> float32 [-1, 1], the generator's range."""
    return np.asarray(images, np.float32) / 127.5 - 1.0


def check_images(images, card, what: str = "images") -> np.ndarray:
    """``images`` as ``(n, S, S, C) uint8`` matching the card's resolution and channels, else
    one clear ``ValueError``."""
    images = np.asarray(images)
    if images.ndim == 3 and card.channels == 1 and images.shape[-1] != 1:
        images = images[..., None]
    shape = (card.resolution, card.resolution, card.channels)
    if images.ndim != 4 or images.shape[1:] != shape or images.dtype != np.uint8 or not len(images):
        raise ValueError(f"{what} must be (n, {shape[0]}, {shape[1]}, {shape[2]}) uint8 aligned faces for this "
                         f"generator (its model card: {card.resolution}px, {card.channels} channel(s)), got "
                         f"{images.shape} {images.dtype}")
    return images


def _fixed_rows(card, fixed: dict | None, n: int) -> dict[str, np.ndarray]:
    """``fixed`` values as ``(n, size) float32``, checked against the card."""
    out = {}
    for name, value in (fixed or {}).items():
        spec = card.input(name)
        value = np.asarray(value, np.float32)
        value = np.broadcast_to(value, (n, spec.size)) if value.ndim == 1 else value
        if value.shape != (n, spec.size) or not np.isfinite(value).all():
            raise ValueError(f"fixed input {name!r} must be ({spec.size},) or ({n}, {spec.size}) finite values, "
                             f"got {np.shape(value)}")
        out[name] = np.ascontiguousarray(value)
    return out


def draw_candidates(card, n: int, count: int, seed: int, fixed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``count`` starting points for each of ``n`` images, ``{name: (n, count, size)}``: draws from
    the card's distributions (:func:`model.card.sample_inputs`), a ``onehot`` input cycling
    through its classes, ``fixed`` inputs repeated."""
    from model.card import sample_inputs

    draws = sample_inputs(card, n * count, seed)
    out = {}
    for spec in card.inputs:
        if spec.name in fixed:
            out[spec.name] = np.repeat(fixed[spec.name][:, None], count, axis=1)
        elif spec.kind == "onehot":
            classes = np.arange(count) % spec.size
            out[spec.name] = np.broadcast_to(np.eye(spec.size, dtype=np.float32)[classes],
                                             (n, count, spec.size)).copy()
        else:
            out[spec.name] = draws[spec.name].reshape(n, count, spec.size)
    return out


class _Objective:
    """The per-row loss of G's inputs against targets, and the whole Adam search as one
    ``tf.function`` (traced once per chunk shape)."""

    def __init__(self, generator, discriminator, card, lam: float, fixed_names):
        import tensorflow as tf

        self.tf = tf
        self.source_D, self.card = discriminator, card
        # The search differentiates through copies with the matmul-route layers: half the
        # time per step of the exported plain layers on CPUs (model.train.serving.fast_copy).
        self.G = _fast(generator)
        self.D = None if discriminator is None else _fast(discriminator)
        self.lam = float(lam) if discriminator is not None else 0.0
        self.names = [s.name for s in card.inputs]
        self.optimised = [s for s in card.inputs if s.kind in OPTIMISED_KINDS and s.name not in fixed_names]
        self.search = tf.function(self._search)
        self.score = tf.function(self._losses)
        d_inputs = getattr(self.D, "inputs", None) or []  # the names of the network called
        self.d_names = [t.name.split(":")[0] for t in d_inputs] if len(d_inputs) > 1 else []

    def _generate(self, inputs: dict):
        return self.G(inputs["z"] if len(self.G.inputs) == 1 else inputs, training=False)

    def _logit(self, images, inputs: dict):
        tf = self.tf
        if self.d_names:  # a conditional D: the image and the inputs it names
            feed = {name: (images if name not in inputs else inputs[name]) for name in self.d_names}
            logit = self.D(feed, training=False)
        else:
            logit = self.D(images, training=False)
        if isinstance(logit, dict):  # a D with heads (ACGAN, InfoGAN): "logit" is the source head
            logit = logit["logit"]
        return tf.reshape(tf.cast(logit, tf.float32), [-1])

    def _losses(self, inputs: dict, targets, weights):
        """``(total, contextual, perceptual, logit, images)`` per row."""
        tf = self.tf
        images = self._generate(inputs)
        context = tf.reduce_sum(weights * tf.abs(images - targets), axis=[1, 2, 3])
        if self.lam:
            logit = self._logit(images, inputs)
            perceptual = -tf.nn.softplus(logit)  # log(1 - D(G(z))), stable for any logit
        else:
            logit = tf.zeros_like(context)
            perceptual = tf.zeros_like(context)
        return context + self.lam * perceptual, context, perceptual, logit, images

    def start(self, inputs: dict) -> tuple[dict, dict]:
        """``(fixed inputs, search state)`` at the starting points ``inputs``: step 0, Adam's
        moments zero, each row's best so far the start itself at an infinite loss."""
        tf = self.tf
        names = {s.name for s in self.optimised}
        x0 = [inputs[s.name] for s in self.optimised]
        zeros = [tf.zeros_like(x) for x in x0]
        rows = tf.shape(x0[0])[0] if x0 else tf.shape(next(iter(inputs.values())))[0]
        state = {"t": tf.constant(0), "x": x0, "m": zeros, "v": zeros, "best": x0,
                 "best_loss": tf.fill([rows], np.float32(np.inf))}
        return {k: v for k, v in inputs.items() if k not in names}, state

    def _search(self, fixed: dict, state: dict, targets, weights, steps, lr):
        """``steps`` more Adam iterations from ``state`` (:meth:`start`); returns the new state
        (its ``best`` inputs are each row's at its lowest loss so far, ``best_loss`` that loss)
        and the loss of each of these iterations ``(steps, rows)``."""
        tf = self.tf
        b1, b2, eps = 0.9, 0.999, 1e-8
        low = [tf.constant(s.range[0], tf.float32) for s in self.optimised]
        high = [tf.constant(s.range[1], tf.float32) for s in self.optimised]
        t0 = state["t"]

        def body(t, xs, ms, vs, best, best_loss, history):
            with tf.GradientTape() as tape:
                tape.watch(xs)
                loss = self._losses({**fixed, **dict(zip([s.name for s in self.optimised], xs))},
                                    targets, weights)[0]
                summed = tf.reduce_sum(loss)  # rows are independent: each gets its own gradient
            grads = tape.gradient(summed, xs)
            better = loss < best_loss
            best = [tf.where(better[:, None], x, b) for x, b in zip(xs, best)]
            best_loss = tf.minimum(loss, best_loss)
            step = tf.cast(t + 1, tf.float32)
            scale = lr * tf.sqrt(1.0 - b2 ** step) / (1.0 - b1 ** step)
            ms = [b1 * m + (1.0 - b1) * g for m, g in zip(ms, grads)]
            vs = [b2 * v + (1.0 - b2) * g * g for v, g in zip(vs, grads)]
            xs = [tf.clip_by_value(x - scale * m / (tf.sqrt(v) + eps), lo, hi)
                  for x, m, v, lo, hi in zip(xs, ms, vs, low, high)]
            return t + 1, xs, ms, vs, best, best_loss, history.write(t - t0, loss)

        loop = (t0, state["x"], state["m"], state["v"], state["best"], state["best_loss"],
                tf.TensorArray(tf.float32, size=steps))
        t, xs, ms, vs, best, best_loss, history = tf.while_loop(
            lambda t, *_: t < t0 + steps, body, loop, parallel_iterations=1)
        return {"t": t, "x": xs, "m": ms, "v": vs, "best": best, "best_loss": best_loss}, history.stack()

    def run(self, start: dict, targets, weights, steps: int, lr: float,
            on_step: Callable[[int], None] | None = None):
        """Adam from ``start`` for ``steps`` iterations: ``(inputs at each row's lowest loss,
        that loss, the loss of every iteration (steps, rows))``. One graph call, or, with
        ``on_step(steps done)``, segments of about :data:`SEGMENT_SECONDS` with the callback
        between them."""
        tf = self.tf
        fixed, state = self.start(start)
        lr = tf.constant(lr, tf.float32)
        if on_step is None:
            state, history = self.search(fixed, state, targets, weights, tf.constant(steps), lr)
            history = history.numpy()
        else:
            parts, done, segment = [], 0, 1  # the first segment also traces the graph: one step
            while done < steps:
                n = min(segment, steps - done)
                began = time.perf_counter()
                state, part = self.search(fixed, state, targets, weights, tf.constant(n), lr)
                parts.append(part.numpy())
                done += n
                segment = max(1, int(SEGMENT_SECONDS * n / max(time.perf_counter() - began, 1e-6)))
                on_step(done)
            history = np.concatenate(parts)
        found = {**fixed, **dict(zip([s.name for s in self.optimised], state["best"]))}
        return found, state["best_loss"], history


def _chunks(total: int, size: int):
    for i in range(0, total, size):
        yield i, min(i + size, total)


def _pad(array: np.ndarray, rows: int) -> np.ndarray:
    """``array`` with its first row repeated up to ``rows`` rows (a few traced shapes for every chunk)."""
    return array if len(array) == rows else np.concatenate([array, np.repeat(array[:1], rows - len(array), 0)])


def _bucket(rows: int, cap: int) -> int:
    """The padded size of a chunk of ``rows``: the next power of two, at most ``cap``. One face
    in the studio is searched at its own few rows, not padded to a whole batch, and the graphs
    are traced for at most log2(cap) + 1 shapes."""
    return min(cap, 1 << max(0, rows - 1).bit_length())


#: The fast copy of each network the searches differentiate through (weakly keyed), one per
#: network whichever searches share it (projection's and completion's of one generator).
_FAST: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _fast(network):
    from model.train.serving import fast_copy

    copy = _FAST.get(network)
    if copy is None:
        copy = fast_copy(network)
        if copy is not network:  # a value holding its own key would keep it alive
            _FAST[network] = copy
    return copy


#: Searches built for a generator (weakly keyed: they go with it): one per discriminator, loss
#: weight and set of fixed inputs. Building one traces its graphs; a studio request reuses them.
_OBJECTIVES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_OBJECTIVES_LOCK = threading.Lock()


def _objective(generator, discriminator, card, lam: float, fixed_names) -> _Objective:
    key = (id(discriminator), tuple((s.name, s.kind, s.size) for s in card.inputs), float(lam),
           tuple(sorted(fixed_names)))
    with _OBJECTIVES_LOCK:
        built = _OBJECTIVES.setdefault(generator, {})
        if key not in built or built[key].source_D is not discriminator:
            built[key] = _Objective(generator, discriminator, card, lam, fixed_names)
        return built[key]


@dataclass
class Fit:
    """What :func:`fit_inputs` found, ``n`` images searched with ``R`` restarts of ``steps``
    iterations each. Arrays are float32 unless noted."""

    #: ``{name: (n, size)}``: each image's inputs at the best restart's lowest loss.
    inputs: dict
    #: ``(n, S, S, C)``: G(inputs) in [-1, 1].
    images: np.ndarray
    #: ``(steps, n)``: the loss of every iteration of the restart kept.
    loss: np.ndarray
    #: ``(steps, n, R)``: the loss of every iteration of every restart.
    loss_restarts: np.ndarray
    #: ``(n,)`` int: the restart kept.
    restart: np.ndarray
    #: ``{name: (n, R, size)}`` and ``(n, R)``: every restart's best inputs and loss
    #: (the alternative completions).
    restart_inputs: dict
    restart_loss: np.ndarray
    #: ``(n,)``: the loss terms at the inputs kept.
    total: np.ndarray
    contextual: np.ndarray
    perceptual: np.ndarray
    #: ``(n,)``: D's probability that G(inputs) is real (NaN without D).
    d_score: np.ndarray
    #: ``(n * candidates,)``: D's probabilities of the random candidates, the generator's
    #: usual level (empty without D).
    sample_d_scores: np.ndarray
    #: ``(n,)``: the best candidate's contextual loss before optimisation (what the search gained).
    start_contextual: np.ndarray

    def as_dict(self) -> dict:
        """The fields by name (the arrays themselves, not copies)."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass
class _Scored:
    """Phase 1's result: every candidate's loss terms ``(n, count)`` and the ``restarts`` best."""

    total: np.ndarray
    contextual: np.ndarray
    logit: np.ndarray
    order: np.ndarray  # (n, R) int: the candidates kept, best first
    start: dict  # {name: (n, R, size)}: their inputs


@dataclass
class _Searched:
    """Phase 2's result: each restart's best inputs, its loss and the loss of every iteration."""

    found: dict  # {name: (n, R, size)}
    best_loss: np.ndarray  # (n, R)
    history: np.ndarray  # (steps, n, R)


def fit_inputs(generator, card, targets: np.ndarray, weights: np.ndarray, *, discriminator=None,
               settings: FitSettings | None = None, seed: int = 0, fixed: dict | None = None,
               progress: Callable[[int, int], None] | None = None,
               on_step: Callable[[float], None] | None = None, guess: dict | None = None) -> Fit:
    """The generator inputs that best reproduce ``targets`` where ``weights`` say (a :class:`Fit`).

    ``targets`` ``(n, S, S, C) float32`` in [-1, 1]; ``weights`` ``(n, S, S) float32``
    (0 where a pixel does not count); ``discriminator`` (a Keras model of the run, or
    None) adds the perceptual loss. ``progress(done, n)`` is called after each chunk of
    images; ``on_step(fraction)`` between the search's segments with the share of its
    iterations done (0 while candidates are scored): raising from it stops the search
    (see :class:`Cancelled`). ``guess`` ``{name: (n, size)}`` (a learned encoder's E(x),
    model/apps/encoder.py) is each image's first candidate, scored beside the random draws:
    the search starts from it when it fits best, so a few steps refine it.

    Three phases: :func:`_score_candidates` (forward passes only), :func:`_optimise_restarts`
    (Adam on the best few) and :func:`_keep_best` (each image's best restart, its terms)."""
    s = settings or FitSettings()
    targets = np.asarray(targets, np.float32)
    weights = np.asarray(weights, np.float32)
    n = len(targets)
    if weights.shape != targets.shape[:3]:
        raise ValueError(f"weights must be {targets.shape[:3]} (one per pixel), got {weights.shape}")
    fixed_rows = _fixed_rows(card, fixed, n)
    objective = _objective(generator, discriminator, card, s.lam, set(fixed_rows))
    candidates = draw_candidates(card, n, max(s.candidates, s.restarts), seed, fixed_rows)
    for name, value in (guess or {}).items():
        if name in candidates and name not in fixed_rows:
            low, high = card.input(name).range  # where the search keeps it
            candidates[name][:, 0] = np.clip(np.asarray(value, np.float32).reshape(n, -1), low, high)
    w4 = weights[..., None]
    scored = _score_candidates(objective, candidates, targets, w4, s, on_step)
    searched = _optimise_restarts(objective, scored.start, targets, w4, s, progress, on_step)
    return _keep_best(objective, scored, searched, targets, w4, s)


def _score_candidates(objective, candidates: dict, targets, w4, s: FitSettings, on_step) -> _Scored:
    """Phase 1: every candidate ``{name: (n, count, size)}`` scored against its image by
    forward passes in chunks of ``s.batch`` rows; the ``s.restarts`` best per image kept."""
    import tensorflow as tf

    n, count = next(iter(candidates.values())).shape[:2]
    total, context, logit = (np.empty((n, count), np.float32) for _ in range(3))
    flat = {k: v.reshape(n * count, -1) for k, v in candidates.items()}
    rows = max(s.batch, 1)
    for lo, hi in _chunks(n * count, rows):
        if on_step is not None:
            on_step(0.0)
        img = np.arange(lo, hi) // count
        size = _bucket(hi - lo, rows)
        feed = {k: tf.constant(_pad(v[lo:hi], size)) for k, v in flat.items()}
        scores = objective.score(feed, tf.constant(_pad(targets[img], size)), tf.constant(_pad(w4[img], size)))
        for out, value in zip((total, context, logit), (scores[0], scores[1], scores[3])):
            out.reshape(-1)[lo:hi] = value.numpy()[:hi - lo]
    order = np.argsort(total, axis=1, kind="stable")[:, :s.restarts]
    start = {k: np.take_along_axis(v, order[..., None], axis=1) for k, v in candidates.items()}
    return _Scored(total, context, logit, order, start)


def _optimise_restarts(objective, start: dict, targets, w4, s: FitSettings, progress, on_step) -> _Searched:
    """Phase 2: Adam on every restart ``{name: (n, R, size)}``; all restarts of a chunk of
    images run in one graph (``s.batch // R`` images a chunk)."""
    import tensorflow as tf

    n, R = next(iter(start.values())).shape[:2]
    per_chunk = max(1, max(s.batch, 1) // R)
    best_loss = np.empty((n, R), np.float32)
    history = np.empty((s.steps, n, R), np.float32)
    found = {k: np.empty_like(v) for k, v in start.items()}
    chunks = list(_chunks(n, per_chunk))
    for k_chunk, (lo, hi) in enumerate(chunks):
        m = hi - lo
        size = _bucket(m, per_chunk)
        feed = {k: tf.constant(_pad(v[lo:hi], size).reshape(size * R, -1)) for k, v in start.items()}
        tgt = tf.constant(np.repeat(_pad(targets[lo:hi], size), R, axis=0))
        wts = tf.constant(np.repeat(_pad(w4[lo:hi], size), R, axis=0))
        steps_done = None if on_step is None else (
            lambda done, k_chunk=k_chunk: on_step((k_chunk * s.steps + done) / (len(chunks) * s.steps)))
        inputs, loss, hist = objective.run(feed, tgt, wts, s.steps, s.lr, steps_done)
        for k, v in inputs.items():
            found[k][lo:hi] = v.numpy().reshape(size, R, -1)[:m]
        best_loss[lo:hi] = loss.numpy().reshape(size, R)[:m]
        history[:, lo:hi] = hist.reshape(s.steps, size, R)[:, :m]
        if progress is not None:
            progress(hi, n)
    return _Searched(found, best_loss, history)


def _keep_best(objective, scored: _Scored, searched: _Searched, targets, w4, s: FitSettings) -> Fit:
    """Phase 3: each image's restart of lowest loss, and its loss terms and image at the inputs kept."""
    import tensorflow as tf

    n = len(targets)
    rows = max(s.batch, 1)
    keep = np.argmin(searched.best_loss, axis=1)
    inputs = {k: v[np.arange(n), keep] for k, v in searched.found.items()}
    images = np.empty_like(targets)
    terms = {k: np.empty(n, np.float32) for k in ("total", "contextual", "perceptual", "logit")}
    for lo, hi in _chunks(n, rows):
        size = _bucket(hi - lo, rows)
        feed = {k: tf.constant(_pad(v[lo:hi], size)) for k, v in inputs.items()}
        *values, generated = objective.score(feed, tf.constant(_pad(targets[lo:hi], size)),
                                             tf.constant(_pad(w4[lo:hi], size)))
        for name, value in zip(("total", "contextual", "perceptual", "logit"), values):
            terms[name][lo:hi] = value.numpy()[:hi - lo]
        images[lo:hi] = generated.numpy()[:hi - lo]
    if objective.lam:
        d_score = 1.0 / (1.0 + np.exp(-terms["logit"]))
        sample_d = (1.0 / (1.0 + np.exp(-scored.logit))).reshape(-1)
    else:
        d_score, sample_d = np.full(n, np.nan, np.float32), np.full(0, np.nan, np.float32)
    return Fit(inputs=inputs, images=images, loss=searched.history[:, np.arange(n), keep],
               loss_restarts=searched.history, restart=keep, restart_inputs=searched.found,
               restart_loss=searched.best_loss, total=terms["total"], contextual=terms["contextual"],
               perceptual=terms["perceptual"], d_score=d_score.astype(np.float32),
               sample_d_scores=sample_d.astype(np.float32),
               start_contextual=scored.contextual[np.arange(n), scored.order[:, 0]])


# -- the networks and the aligner of a run ------------------------------------------------------

def load_networks(run_dir: str | os.PathLike, precision: str = "float32", discriminator: bool = True):
    """``(card, generator, discriminator or None, note)`` of a run folder.

    With ``precision`` float32 the generator is the exported ``generator.keras`` (the
    weights the card names); otherwise both networks are rebuilt under that Keras
    dtype policy from the latest checkpoint (``auto``: mixed bfloat16 where the CPU
    has bfloat16 units, as training chooses). The discriminator comes from the
    checkpoint (model.train.loop.restore_networks); when the run folder has none,
    ``discriminator`` is None and ``note`` says so (completion then runs without the
    perceptual loss)."""
    from model.card import load_generator, read_card
    from model.train.loop import resolve_precision, restore_networks

    card = read_card(run_dir)
    policy = resolve_precision(precision)
    ckpt = Path(run_dir) / "ckpt"
    has_ckpt = (ckpt / "checkpoint").exists()
    which = ("discriminator",) if discriminator else ()
    if policy != "float32" and has_ckpt:
        nets = restore_networks(run_dir, which=("generator", *which), weights=card.weights, precision=policy)
        return card, nets["generator"], nets.get("discriminator"), ""
    _, generator = load_generator(run_dir)
    note = "" if has_ckpt or not discriminator else (
        f"{ckpt} holds no checkpoint, so there is no discriminator: no perceptual loss, and the float32 "
        f"exported generator")
    return card, generator, checkpoint_discriminator(run_dir) if discriminator else None, note


def checkpoint_discriminator(run_dir: str | os.PathLike):
    """The float32 discriminator from the run's latest checkpoint, or None when the run
    folder has no checkpoint (a generator copied without ``ckpt/``)."""
    from model.train.loop import restore_networks

    if not (Path(run_dir) / "ckpt" / "checkpoint").exists():
        return None
    return restore_networks(run_dir, which=("discriminator",))["discriminator"]


def newest_run(root: str | os.PathLike = "processed/models") -> Path:
    """The newest run folder with a model card under ``root``, or one clear error."""
    from model.card import newest_run as newest

    return newest(root, "train one (luigi --module tasks TrainDCGAN --local-scheduler) or pass --model RUN_FOLDER")


def records_folder(card, run_dir: str | os.PathLike | None = None) -> Path | None:
    """The records version folder the card names, or None when it is not on this machine. A
    relative path (training writes ``processed/records/...``) is tried from the working
    directory, then from each folder above ``run_dir`` (the project the run was trained in)."""
    named = (card.dataset or {}).get("records")
    if not named:
        return None
    path = Path(named)
    candidates = [path] + ([] if path.is_absolute() or run_dir is None else
                           [parent / path for parent in Path(run_dir).resolve().parents])
    return next((c for c in candidates if (c / "manifest.json").exists()), None)


def alignment_settings(card, run_dir: str | os.PathLike | None = None) -> dict:
    """The DetectAlignFaces settings (size, mode, landmarks, margin) the run's training faces
    were aligned with, read from its records' lineage; ``{"size": resolution}`` when unknown."""
    records = records_folder(card, run_dir)
    settings = {"size": card.resolution}
    try:
        lineage = json.loads((records / "manifest.json").read_text()).get("lineage", {}) if records else {}
    except (OSError, ValueError):
        lineage = {}
    stack = [lineage]
    while stack:
        node = stack.pop()
        if node.get("task") in ("DetectAlignFaces", "AlignShard"):
            params = node.get("params", {})
            for key, cast in (("size", int), ("mode", str), ("landmarks", str), ("margin", float)):
                if key in params:
                    settings[key] = cast(params[key])
            break
        stack.extend(node.get("requires", []))
    return settings


def aligner_for(card, run_dir: str | os.PathLike | None = None, **overrides):
    """A :class:`pipeline.align.aligner.FaceAligner` that aligns photos the way the run's training faces
    were aligned (:func:`alignment_settings`), at the generator's resolution."""
    from pipeline.align.aligner import FaceAligner

    settings = {**alignment_settings(card, run_dir), **overrides}
    if settings["size"] != card.resolution:
        settings["size"] = card.resolution  # the generator's side wins over a stale lineage
    return FaceAligner(**settings)
