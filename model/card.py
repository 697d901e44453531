"""The model card: a JSON file beside every exported generator that says what it is.

Training writes ``model_card.json`` into the run folder next to ``generator.keras``
and ``saved_model/``; export, evaluation, sampling, completion and the studio read
the card, never task parameters. A run folder copied to another machine is usable
with the card alone::

    {
      "format": "facegan-model-card/1",
      "variant": "dcgan", "discriminator": "cnn", "generator": "dcgan",
      "resolution": 64, "channels": 3,
      "inputs": [
        {"name": "z", "kind": "noise", "size": 100, "distribution": "uniform", "range": [-1.0, 1.0]},
        {"name": "label", "kind": "onehot", "size": 10, "distribution": "categorical",
         "labels": ["0", "1", ...]}
      ],
      "dataset": {"name": "mnist", "version": "v-0123abcd", "records": "processed/records/..."},
      "precision": "mixed_bfloat16", "steps": 1000,
      "weights": "generator",
      "files": {"keras": "generator.keras", "saved_model": "saved_model"},
      "training": {...the run's TrainConfig...},
      "created": "2026-11-30T12:00:00+0000"
    }

Generator inputs (:class:`InputSpec`), in the order the generator takes them; the
first is always the noise ``z``:

* ``noise``: ``size`` values from ``distribution`` ``uniform`` (on ``range``) or
  ``normal`` (N(0, 1); ``range`` is then where a UI clips it);
* ``onehot``: a one-hot row over ``size`` classes (``labels`` names them), drawn
  uniformly (a class label, or InfoGAN's categorical code);
* ``continuous``: ``size`` values uniform on ``range`` (InfoGAN's continuous codes);
* ``attribute``: ``size`` attribute codes c (``labels`` names them, one per extractor),
  drawn in training 0 or 1 with probability 1/2 (``distribution`` ``bernoulli``) or
  from U(0, 1) (``uniform``); ``range`` is the span a user may set (EGAN's sweeps go
  beyond 1).

Beside the card a run folder may hold ``evaluation.json`` (the latest
EvaluateGenerator figures: :func:`read_evaluation`) and ``directions.json``
(attribute directions in z: model/apps/directions.py fits them, ``FitAttributeDirections``
writes them, the studio's sliders use them; read with
``model.apps.directions.read_directions``)::

    {
      "format": "facegan-directions/1",
      "input": "z", "size": 100,               # the input the normals live in, and its size
      "samples": 10000, "seed": 0,              # inputs sampled (card distribution) and scored
      "keep": 0.5, "holdout": 0.2,              # top/bottom keep/2 by score; held-out fraction
      "offset_range": [-3.0, 3.0],              # slider range, in units of "scale"
      "directions": [                           # kept: held-out accuracy above chance + 3 s.e.
        {"name": "Male", "normal": [100 floats, unit length], "bias": 0.01,
         "scale": 0.577,                         # std of z . normal over the samples
         "accuracy": 0.91, "chance": 0.5, "n_train": 4000, "n_holdout": 1000,
         "score_mean": 0.41, "score_std": 0.32}
      ],
      "dropped": [{"name": "Eyeglasses", "accuracy": 0.52, "chance": 0.5, ...,
                   "reason": "held-out accuracy 0.520 is not above chance 0.500 + 3 standard errors (0.547)"}],
      "classifier": {"folder": "processed/classifiers/celeba/attributes-<v>",
                     "records": {...}, "accuracy": {"Male": {"test": 0.95, "majority": 0.54, ...}}},
      "created": "2026-11-30T12:00:00+0000"
    }

Moving z by offset ``s`` along attribute k is ``z + s * scale_k * normal_k``; locked
attributes' normals are projected out of the other moves (model.apps.directions.move).
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

FORMAT = "facegan-model-card/1"
CARD_FILE = "model_card.json"
EVALUATION_FILE = "evaluation.json"
DIRECTIONS_FILE = "directions.json"
KINDS = ("noise", "onehot", "continuous", "attribute")
WEIGHTS = ("generator", "ema")


@dataclass(frozen=True)
class InputSpec:
    """One generator input: ``name`` (the Keras input and serving-signature name),
    ``kind`` (see the module docstring), ``size`` (values per example)."""
    name: str
    kind: str
    size: int
    distribution: str = ""
    range: tuple[float, float] | None = None
    labels: tuple[str, ...] = ()
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"input {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")
        if self.size < 1:
            raise ValueError(f"input {self.name!r}: size must be >= 1, got {self.size}")
        if self.labels and len(self.labels) != self.size:
            raise ValueError(f"input {self.name!r}: {len(self.labels)} labels for size {self.size}")
        defaults = {"noise": "uniform", "onehot": "categorical", "continuous": "uniform",
                    "attribute": "bernoulli"}
        object.__setattr__(self, "distribution", self.distribution or defaults[self.kind])
        if self.range is None and self.kind != "onehot":
            span = (-3.0, 3.0) if self.distribution == "normal" else (0.0, 1.0) \
                if self.kind == "attribute" else (-1.0, 1.0)
            object.__setattr__(self, "range", span)
        if self.range is not None:
            object.__setattr__(self, "range", (float(self.range[0]), float(self.range[1])))
        object.__setattr__(self, "labels", tuple(str(x) for x in self.labels))

    def to_json(self) -> dict:
        out = {"name": self.name, "kind": self.kind, "size": self.size, "distribution": self.distribution}
        if self.range is not None:
            out["range"] = list(self.range)
        if self.labels:
            out["labels"] = list(self.labels)
        if self.meta:
            out["meta"] = dict(self.meta)
        return out

    @classmethod
    def from_json(cls, d: dict) -> "InputSpec":
        return cls(name=d["name"], kind=d["kind"], size=int(d["size"]), distribution=d.get("distribution", ""),
                   range=tuple(d["range"]) if d.get("range") is not None else None,
                   labels=tuple(d.get("labels", ())), meta=dict(d.get("meta", {})))


#: z priors by name: ``uniform`` U(-1, 1) (the DCGAN paper), ``uniform01`` U(0, 1) (the EGAN
#: thesis), ``normal`` N(0, 1).
Z_PRIORS = {"uniform": ("uniform", (-1.0, 1.0)), "uniform01": ("uniform", (0.0, 1.0)), "normal": ("normal", None)}


def noise_spec(size: int = 100, prior: str = "uniform") -> InputSpec:
    """The ``z`` input with the named prior (:data:`Z_PRIORS`)."""
    if prior not in Z_PRIORS:
        raise ValueError(f"z distribution must be one of {tuple(Z_PRIORS)}, got {prior!r}")
    distribution, span = Z_PRIORS[prior]
    return InputSpec("z", "noise", size, distribution, span)


@dataclass
class ModelCard:
    """What a run's exported generator is (see the module docstring for the JSON)."""
    variant: str
    resolution: int
    channels: int
    inputs: list[InputSpec]
    discriminator: str = "cnn"
    generator: str = "dcgan"
    dataset: dict = field(default_factory=dict)
    precision: str = "float32"
    steps: int = 0
    weights: str = "generator"
    files: dict = field(default_factory=lambda: {"keras": "generator.keras", "saved_model": "saved_model"})
    training: dict = field(default_factory=dict)
    created: str = ""
    format: str = FORMAT

    def __post_init__(self):
        if not self.inputs or self.inputs[0].name != "z" or self.inputs[0].kind != "noise":
            raise ValueError("a model card's first input must be the noise 'z'")
        names = [s.name for s in self.inputs]
        if len(set(names)) != len(names):
            raise ValueError(f"input names must be unique, got {names}")
        if self.weights not in WEIGHTS:
            raise ValueError(f"weights must be one of {WEIGHTS}, got {self.weights!r}")

    @property
    def z(self) -> InputSpec:
        return self.inputs[0]

    @property
    def extra_inputs(self) -> list[InputSpec]:
        """The declared inputs beyond ``z`` (class, codes, attribute c)."""
        return self.inputs[1:]

    def input(self, name: str) -> InputSpec:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise KeyError(f"the model has no input {name!r}; it has {[s.name for s in self.inputs]}")

    def to_json(self) -> dict:
        d = asdict(self)
        d["inputs"] = [s.to_json() for s in self.inputs]
        return d

    @classmethod
    def from_json(cls, d: dict) -> "ModelCard":
        if d.get("format") != FORMAT:
            raise ValueError(f"not a model card of format {FORMAT!r}: {d.get('format')!r}")
        d = dict(d)
        d["inputs"] = [InputSpec.from_json(s) for s in d["inputs"]]
        return cls(**d)


def write_card(run_dir: str | os.PathLike, card: ModelCard) -> Path:
    """Write ``card`` as ``run_dir/model_card.json`` (atomically); sets ``created``."""
    from pipeline.atomic import write_json

    if not card.created:
        card.created = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    path = Path(run_dir) / CARD_FILE
    write_json(path, card.to_json())
    return path


def read_card(run_dir: str | os.PathLike) -> ModelCard:
    """The card of a run folder; one clear error when there is none or it is unreadable."""
    path = Path(run_dir) / CARD_FILE
    try:
        return ModelCard.from_json(json.loads(path.read_text()))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} not found: {run_dir} is not an exported run folder "
                                f"(train it to the end, e.g. luigi --module tasks TrainGAN)") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path} is not a readable model card ({exc})") from None


def newest_run(root: str | os.PathLike, advice: str) -> Path:
    """The newest run folder under ``root`` (find_runs), or FileNotFoundError naming
    ``root`` with ``advice`` (what the caller's user should do)."""
    runs = find_runs(root) if Path(root).is_dir() else []
    if not runs:
        raise FileNotFoundError(f"no exported generator with a model card under {root}; {advice}")
    return runs[0]


def find_runs(root: str | os.PathLike) -> list[Path]:
    """Run folders under ``root`` (any depth) that hold a card and its generator, newest first."""
    runs = [p.parent for p in Path(root).glob(f"**/{CARD_FILE}")
            if not any(part.startswith(".") for part in p.parent.relative_to(root).parts)]
    found = []
    for run in runs:
        try:
            card = read_card(run)
        except (OSError, ValueError):
            continue
        if (run / card.files["keras"]).exists():
            found.append(run)
    return sorted(found, key=lambda r: (r / CARD_FILE).stat().st_mtime, reverse=True)


def load_generator(run_dir: str | os.PathLike):
    """``(card, generator)``: the run's card and its float32 Keras generator (plain Keras
    layers; loads without this project's code)."""
    import keras

    card = read_card(run_dir)
    path = Path(run_dir) / card.files["keras"]
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: the card names it but the run folder lacks it")
    return card, keras.models.load_model(path, compile=False)


def read_evaluation(run_dir: str | os.PathLike) -> dict | None:
    """The run's latest evaluation summary (FID, KID, n, split, report path), or None."""
    path = Path(run_dir) / EVALUATION_FILE
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


# -- drawing generator inputs (numpy; the training loop draws them in TensorFlow) ---------------

def sample_input(spec: InputSpec, n: int, rng: np.random.Generator) -> np.ndarray:
    """``(n, spec.size) float32`` values of one input, from its training distribution."""
    if spec.kind == "onehot":
        return np.eye(spec.size, dtype=np.float32)[rng.integers(0, spec.size, n)]
    if spec.kind == "attribute":
        if spec.distribution == "uniform":  # training's span, not the wider range a user may set
            return rng.uniform(0.0, 1.0, (n, spec.size)).astype(np.float32)
        return rng.integers(0, 2, (n, spec.size)).astype(np.float32)
    if spec.distribution == "normal":
        return rng.standard_normal((n, spec.size)).astype(np.float32)
    low, high = spec.range
    return rng.uniform(low, high, (n, spec.size)).astype(np.float32)


def sample_inputs(card_or_specs, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A reproducible batch of every generator input, ``{name: (n, size) float32}``.

    ``z`` is drawn first from ``default_rng(seed)``, so the noise of a seed does not depend
    on which other inputs a model declares."""
    specs = card_or_specs.inputs if isinstance(card_or_specs, ModelCard) else list(card_or_specs)
    rng = np.random.default_rng(seed)
    return {spec.name: sample_input(spec, n, rng) for spec in specs}


def check_inputs(card: ModelCard, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``inputs`` as float32 arrays checked against the card: every declared input present,
    shape ``(n, size)`` with one ``n``, finite; raises ``ValueError`` naming the input."""
    out, n = {}, None
    for spec in card.inputs:
        if spec.name not in inputs:
            raise ValueError(f"missing generator input {spec.name!r} ({spec.kind}, size {spec.size})")
        x = np.asarray(inputs[spec.name], np.float32)
        if x.ndim == 1:
            x = x[None]
        if x.ndim != 2 or x.shape[1] != spec.size:
            raise ValueError(f"input {spec.name!r} must have shape (n, {spec.size}), got {x.shape}")
        if n is not None and len(x) != n:
            raise ValueError(f"input {spec.name!r} has {len(x)} rows, the others {n}")
        if not np.isfinite(x).all():
            raise ValueError(f"input {spec.name!r} holds NaN or infinite values")
        n = len(x)
        out[spec.name] = x
    unknown = sorted(set(inputs) - set(out))
    if unknown:
        raise ValueError(f"unknown generator inputs {unknown}; the model takes {[s.name for s in card.inputs]}")
    return out
