"""The generators the studio serves: a listing of run folders by id, each loaded once.

A model id is a run folder's path relative to the models root (``celeba/dcgan-1a2b3c``),
or the folder's name for a ``--model`` outside it. Clients only ever name ids from
the listing; an id is a dictionary key here, never joined onto a path.
"""
from __future__ import annotations

import fnmatch
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from model.apps.directions import move, read_directions
from model.card import ModelCard, find_runs, load_generator, read_card, read_evaluation
from studio.batcher import MicroBatcher

#: Offsets along attribute directions, in standard deviations of z along the normal.
OFFSET_RANGE = (-3.0, 3.0)

log = logging.getLogger(__name__)


class UnknownModel(KeyError):
    """A model id that is not in the listing."""


@dataclass
class LoadedModel:
    """One served generator: its card, optional directions, compiled forward and batcher."""
    id: str
    run_dir: Path
    card: ModelCard
    directions: dict | None
    forward: object
    batcher: MicroBatcher
    names: list[str] = field(default_factory=list)     # kept direction names, in order
    normals: np.ndarray | None = None                  # (k, z size)
    scales: np.ndarray | None = None                   # (k,)
    _critic: tuple | None = None                       # (discriminator or None,) once looked up
    encoder: object = None                             # the run's learned inverse (encoder.keras), if any
    warm: str = "cold"                                 # the searches' graphs: cold, warming, ready, failed: ...
    _warming: tuple | None = None                      # (thread, stop event) while warm_up runs
    _completion: tuple = (None, None)                  # (key of the network files, choose_method's answer)
    _completion_lock: threading.Lock = field(default_factory=threading.Lock)
    net_lock: threading.Lock = field(default_factory=threading.Lock)  # one network completion at a time

    @classmethod
    def load(cls, model_id: str, run_dir: Path, max_rows: int | None = None, wait_s: float = 0.0,
             precision: str = "auto", engine: str = "auto") -> "LoadedModel":
        from model.train.serving import serving_forward

        card, generator = load_generator(run_dir)
        declared, takes = sorted(s.name for s in card.inputs), sorted(t.name for t in generator.inputs)
        if declared != takes:
            raise ValueError(f"{run_dir}: the card declares inputs {declared}, the generator takes {takes}")
        directions = read_directions(run_dir, card.z.size)
        forward = serving_forward(run_dir, card, generator, engine, precision)
        forward(_zeros(card, 1))  # trace (TensorFlow) or allocate (OpenVINO) now, not on the first request
        forward(_zeros(card, 2))
        kept = (directions or {}).get("directions", [])
        from model.apps.encoder import load_encoder
        loaded = cls(model_id, run_dir, card, directions, forward,
                     MicroBatcher(forward, max_rows, wait_s, name=model_id),
                     [d["name"] for d in kept],
                     np.array([d["normal"] for d in kept], np.float32).reshape(len(kept), card.z.size),
                     np.array([d["scale"] for d in kept], np.float32), encoder=load_encoder(run_dir))
        loaded.warm_up()
        return loaded

    def warm_up(self) -> threading.Thread:
        """Build and trace projection's and completion's graphs for one face now, in a background
        thread (a few seconds; ``warm`` says where it is), so a person's first request pays
        only the search: the graphs are kept per generator (model/apps/inversion.py). The
        completion network of :meth:`completion`, when there is one, is loaded and traced first.
        :meth:`close` stops it between steps and waits for it: TensorFlow must not be tracing
        in a thread while the interpreter exits (it aborts the process)."""
        from model.apps.inversion import Cancelled, stop_when

        stop = threading.Event()

        def work():
            try:
                from model.apps.complete import complete_faces, make_mask
                from model.apps.project import project_faces
                from model.card import sample_inputs
                from model.train.sampling import generate

                face = generate(self.forward.generator, sample_inputs(self.card, 1, seed=0))
                mask = make_mask("center", self.card.resolution)
                chosen = self.completion()
                if chosen["method"] == "net":  # load and trace the network too (its first call traces)
                    from model.apps.completion_net import complete_with_net
                    complete_with_net(chosen["network"], face, mask)
                project_faces(self.forward.generator, self.card, face, steps=2, encoder=self.encoder,
                              on_step=stop_when(stop))
                complete_faces(self.forward.generator, self.discriminator(), self.card, face, mask, steps=2,
                               encoder=self.encoder, on_step=stop_when(stop))
                self.warm = "ready"
            except Cancelled:
                self.warm = "cold"
            except Exception as exc:  # the features still work, cold; say why
                self.warm = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"

        self.warm = "warming"
        thread = threading.Thread(target=work, name=f"warm-{self.id}")
        self._warming = (thread, stop)
        thread.start()
        return thread

    def completion(self) -> dict:
        """Which completion a request runs: ``choose_method("auto", ...)`` of
        model/apps/completion_net.py, the one interface the CLI and CompleteFaces use. The
        network trained on this generator's records version (its card's ``dataset.version``;
        a completion run under ``processed/completion`` of the working directory or beside a
        folder above the run) when there is one, else the search. Looked up on every call
        (under a millisecond), so a network trained while the studio runs is used from the
        next request on; a network is loaded once, and again only when its files change."""
        from model.apps.completion_net import choose_method, completion_roots, find_completion_run
        from model.variants.completion import CARD_FILE, NETWORK_FILE

        found = find_completion_run(self.card.dataset, completion_roots(self.run_dir))
        key = None if found is None else (found, *(_mtime(found / name) for name in (CARD_FILE, NETWORK_FILE)))
        with self._completion_lock:
            if self._completion[0] != key or self._completion[1] is None:
                try:
                    chosen = choose_method("auto", self.card, self.run_dir, found or "")
                except Exception as exc:  # a network of another size, an unreadable file: the search still works
                    note = f"the completion network {found} cannot be used ({exc}): using search"
                    log.warning(note)
                    chosen = {"method": "search", "network": None, "card": None, "run": found, "note": note}
                self._completion = (key, chosen)
            return self._completion[1]

    def apply_directions(self, z: np.ndarray, offsets: dict[str, float], locks: list[str]) -> np.ndarray:
        """``z`` ``(d,)`` moved along the named directions (already validated names)."""
        if not self.names or not (offsets or locks):
            return z
        values = np.array([offsets.get(n, 0.0) for n in self.names], np.float32)
        locked = np.array([n in locks for n in self.names])
        return move(z, self.normals, self.scales, values, locked)

    def info(self) -> dict:
        """What the page needs to know about the model (``GET /api/model``)."""
        d = self.directions or {}
        z = self.card.z
        return {"id": self.id, "card": self.card.to_json(), "evaluation": read_evaluation(self.run_dir),
                "engine": getattr(self.forward, "engine", ""), "encoder": self.encoder is not None,
                "warm": self.warm,  # projection and completion: "warming" while their graphs are built
                "z": {"size": z.size, "distribution": z.distribution, "range": list(z.range),
                      "gray": {"black": z.range[0], "white": z.range[1], "mapping": "linear"}},
                "inputs": [s.to_json() for s in self.card.extra_inputs],
                "directions": [{k: e[k] for k in ("name", "accuracy", "chance", "scale")}
                               for e in d.get("directions", [])],
                "dropped": [{k: e[k] for k in ("name", "accuracy", "chance", "reason")}
                            for e in d.get("dropped", [])],
                "directions_classifier": d.get("classifier", {}).get("folder"),
                "offset_range": list(OFFSET_RANGE)}

    def discriminator(self):
        """The run's discriminator from its checkpoint, for completion's perceptual loss
        (model.apps.complete), loaded on first use; None when the folder has no checkpoint
        (a generator copied without ``ckpt/``): completion then uses the context alone."""
        if self._critic is None:
            from model.apps.inversion import checkpoint_discriminator

            self._critic = (checkpoint_discriminator(self.run_dir),)
        return self._critic[0]

    def close(self) -> None:
        if self._warming is not None:
            thread, stop = self._warming
            stop.set()
            thread.join(timeout=120)
        self.batcher.close()


def _mtime(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


def _zeros(card: ModelCard, n: int) -> dict[str, np.ndarray]:
    return {s.name: np.zeros((n, s.size), np.float32) for s in card.inputs}


def summary(model_id: str, run_dir: Path, card: ModelCard) -> dict:
    """One line of the model picker: the card's headline figures."""
    evaluation = read_evaluation(run_dir) or {}
    return {"id": model_id, "variant": card.variant, "dataset": card.dataset.get("name", ""),
            "steps": card.steps, "resolution": card.resolution, "z_size": card.z.size,
            "inputs": [s.name for s in card.extra_inputs], "fid": evaluation.get("fid"),
            "created": card.created, "directions": (run_dir / "directions.json").exists()}


class ModelRegistry:
    """Run folders under ``root`` (re-listed on demand) plus the ``default`` run; each
    model is loaded on first use and kept, served by ``engine`` in ``precision``
    (model.train.serving.serving_forward: ``auto``, ``float32`` or ``mixed_bfloat16``)."""

    def __init__(self, root: Path | None, default: Path, max_rows: int | None = None, wait_s: float = 0.0,
                 precision: str = "auto", engine: str = "auto", allow: tuple[str, ...] = ("*",)):
        self.root = Path(root).resolve() if root else None
        self.default_dir = Path(default).resolve()
        self.max_rows, self.wait_s, self.precision, self.engine = max_rows, wait_s, precision, engine
        self.allow = tuple(allow) or ("*",)
        self._loaded: dict[str, LoadedModel] = {}
        self._lock = threading.Lock()
        self.default_id = self._id(self.default_dir)
        if not self.allowed(self.default_id):
            raise ValueError(f"the run {self.default_id!r} to open first is not in --allow-models "
                             f"{','.join(self.allow)}: give --model one of them")
        self._runs: dict[str, Path] = {}
        self.refresh()

    def _id(self, run_dir: Path) -> str:
        if self.root is not None and run_dir.is_relative_to(self.root):
            return run_dir.relative_to(self.root).as_posix()
        return run_dir.name

    def refresh(self) -> dict[str, Path]:
        """Re-list the run folders (new exports appear without a restart)."""
        runs = {self.default_id: self.default_dir}
        if self.root is not None and self.root.is_dir():
            for run in find_runs(self.root):
                runs.setdefault(self._id(run.resolve()), run.resolve())
        self._runs = {k: v for k, v in runs.items() if self.allowed(k)}
        return self._runs

    def allowed(self, model_id: str) -> bool:
        """Whether ``model_id`` matches one of the ``--allow-models`` globs (``celeba/*``)."""
        return any(fnmatch.fnmatchcase(model_id, pattern) for pattern in self.allow)

    def listing(self) -> list[dict]:
        out = []
        for model_id, run in self.refresh().items():
            try:
                out.append(summary(model_id, run, read_card(run)))
            except (OSError, ValueError):
                continue  # removed or rewritten since it was listed
        return out

    def ready(self, model_id: str | None) -> LoadedModel | None:
        """The model ``model_id`` (None: the default) when it is loaded already, else None; never blocks."""
        return self._loaded.get(self.default_id if model_id is None else model_id)

    def get(self, model_id: str | None) -> LoadedModel:
        """The loaded model ``model_id`` (None: the default); :class:`UnknownModel` otherwise."""
        model_id = self.default_id if model_id is None else model_id
        if model_id in self._loaded:
            return self._loaded[model_id]
        if model_id not in self._runs and model_id not in self.refresh():
            raise UnknownModel(model_id)
        with self._lock:
            if model_id not in self._loaded:
                self._loaded[model_id] = LoadedModel.load(model_id, self._runs[model_id], self.max_rows,
                                                          self.wait_s, self.precision, self.engine)
        return self._loaded[model_id]

    def loaded(self) -> list[LoadedModel]:
        return list(self._loaded.values())

    def close(self) -> None:
        for model in self._loaded.values():
            model.close()
