"""Comparing GAN variants trained side by side (the CompareGANs task): per variant the
loss and accuracy curves of its CNN and CapsNet runs overlaid, 5x5 sample grids at
fixed steps, and one table of final figures.

Figures per run (``figures_of_run``):

* face data (``inception``): FID and KID on the FID Inception-v3 features against the
  held-out split, and the dlib face-detection rate (model/eval/metrics.py);
* labeled data (``classifier``): FID and KID on the 128-d features of the project's own
  classifier of that data (model/eval/classifier.py, the TrainClassifier task); for ACGAN
  the classifier's accuracy on samples of each requested class; for InfoGAN how well the
  categorical code predicts the classifier's label under the best one-to-one mapping of
  codes to labels (Hungarian method).

The curves are the runs' ``metrics.csv``: G loss, D loss and D accuracy, the mean of
``d_acc_real`` and ``d_acc_fake`` (for the WGAN critics the midpoint accuracy of
model/variants/losses.py ``critic_stats``). Losses of different objectives are on different
scales: compare CNN with CapsNet within a variant, not across variants.
"""
from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np

from model.card import read_card, sample_inputs

#: Panels of the per-variant plot: (title, metrics.csv column or "d_acc").
CURVES = (("G loss", "g_loss"), ("D loss", "d_loss"), ("D accuracy", "d_acc"))
#: Share of the last logged rows averaged for a run's "final" losses and accuracy.
FINAL_SHARE = 0.1
STYLE = {"cnn": "tab:blue", "capsnet": "tab:red"}


def read_metrics(run_dir) -> dict[str, np.ndarray]:
    """A run's ``metrics.csv`` as columns, plus ``d_acc`` (mean of real and fake accuracy)."""
    with open(Path(run_dir) / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    cols = {k: np.array([float(r[k]) for r in rows]) for k in (rows[0] if rows else {})}
    if "d_acc_real" in cols:
        cols["d_acc"] = 0.5 * (cols["d_acc_real"] + cols["d_acc_fake"])
    return cols


def final_values(cols: dict[str, np.ndarray], share: float = FINAL_SHARE) -> dict[str, float]:
    """Mean of each curve over its last ``share`` of logged rows (at least one row)."""
    if not cols or not len(cols.get("step", [])):
        return {}
    k = max(1, int(round(len(cols["step"]) * share)))
    return {name: float(np.mean(cols[name][-k:])) for _, name in CURVES if name in cols}


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path) -> None:
    from pipeline.atomic import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    _plt().close(fig)


def plot_curves(variant: str, runs: dict[str, dict[str, np.ndarray]], out_png, zoom: bool = False) -> None:
    """G loss, D loss and D accuracy over steps, one line per discriminator (``runs``:
    discriminator -> metrics columns). ``zoom``: y limits from the 2nd to 98th percentile
    of the values after the first 10% of steps (the WGAN critics' losses are small next
    to their first steps and to other variants')."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(CURVES), figsize=(5 * len(CURVES), 3.4), squeeze=False)
    for ax, (title, key) in zip(axes[0], CURVES):
        values = []
        for disc, cols in runs.items():
            if key in cols:
                ax.plot(cols["step"], cols[key], label=disc, color=STYLE.get(disc), lw=1)
                values.append(cols[key][len(cols[key]) // 10:])
        if zoom and values:
            v = np.concatenate(values)
            low, high = np.percentile(v, 2), np.percentile(v, 98)
            pad = 0.1 * (high - low) or 1e-3
            ax.set_ylim(low - pad, high + pad)
        if key == "d_acc" and not zoom:
            ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"{variant}: {title}" + (" (zoomed)" if zoom else ""))
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    _save(fig, out_png)


def crop_grid(image: np.ndarray, side: int, cells: int = 5, pad: int = 2) -> np.ndarray:
    """The top-left ``cells x cells`` images of a model/train/sampling.py ``grid`` of ``side`` px
    images with ``pad`` px gaps (a training progress grid)."""
    end = cells * (side + pad) + pad
    return image[:end, :end]


def progress_grid(run_dir, step: int, side: int, cells: int = 5) -> tuple[np.ndarray, int] | None:
    """The run's fixed-noise grid at ``step`` (or the last one before it), cropped to
    ``cells x cells``, and its step; None when the run kept none."""
    from PIL import Image

    frames = sorted(Path(run_dir, "progress").glob("step-*.png"))
    kept = [(int(f.stem.split("-")[1]), f) for f in frames]
    kept = [(s, f) for s, f in kept if s <= step]
    if not kept:
        return None
    s, path = kept[-1]
    return crop_grid(np.asarray(Image.open(path).convert("RGB")), side, cells), s


def plot_samples(variant: str, runs: dict[str, Path], steps: list[int], side: int, out_png, cells: int = 5) -> None:
    """5x5 grids of each run's fixed inputs at ``steps``: one row per discriminator."""
    plt = _plt()
    fig, axes = plt.subplots(len(runs), len(steps), figsize=(2.3 * len(steps), 2.5 * len(runs)), squeeze=False)
    for row, (disc, run_dir) in zip(axes, runs.items()):
        for ax, step in zip(row, steps):
            found = progress_grid(run_dir, step, side, cells)
            ax.axis("off")
            if found is None:
                ax.set_title(f"{disc}: no grid", fontsize=8)
                continue
            image, at = found
            ax.imshow(image, cmap="gray" if image.ndim == 2 else None)
            ax.set_title(f"{variant} / {disc}, step {at}", fontsize=8)
    fig.tight_layout()
    _save(fig, out_png)


# -- figures of one run ---------------------------------------------------------------------------

def classifier_figures(generator, card, classifier, features, real_features: np.ndarray, n: int,
                       seed: int = 0) -> dict:
    """FID/KID on the classifier's features, and the conditional figures: ``class_acc``
    (ACGAN: the classifier's accuracy on samples of the requested class, the classes
    cycled evenly) and ``code_acc`` / ``code_map`` (InfoGAN: the categorical code's best
    one-to-one match with the classifier's labels)."""
    from model.eval.classifier import matched_accuracy, predict
    from model.eval.evaluation import to_rgb
    from model.eval.metrics import compute_features, frechet_distance, kid, statistics
    from model.train.sampling import generate

    inputs = sample_inputs(card, n, seed)
    out = {}
    onehot = next((s for s in card.extra_inputs if s.kind == "onehot"), None)
    if onehot is not None:
        inputs[onehot.name] = np.eye(onehot.size, dtype=np.float32)[np.arange(n) % onehot.size]
    images = generate(generator, inputs)
    fake = compute_features(features, to_rgb(images))
    g, r = statistics(fake), statistics(real_features)
    out["fid"] = frechet_distance(g.mu, g.sigma, r.mu, r.sigma)
    out["kid"], out["kid_std"] = kid(fake, real_features, 10, min(1000, n), seed)
    labels = predict(classifier, images)
    out["label_histogram"] = np.bincount(labels, minlength=classifier.output_shape[-1]).tolist()
    if onehot is not None:
        codes = np.arange(n) % onehot.size
        if card.variant == "acgan":
            out["class_acc"] = float(np.mean(labels == codes))
        else:
            out["code_acc"], mapping = matched_accuracy(codes, labels, onehot.size, classifier.output_shape[-1])
            out["code_map"] = mapping
    return out


def inception_figures(generator, card, features, real_features: np.ndarray, n: int, face_n: int,
                      seed: int = 0) -> dict:
    """FID, KID (Inception-v3 features) and the face-detection rate of ``n`` samples."""
    from model.eval.evaluation import to_rgb
    from model.eval.metrics import evaluate_samples
    from model.train.sampling import generate

    images = to_rgb(generate(generator, sample_inputs(card, n, seed)))
    figures = evaluate_samples(images, real_features, features, face_n, 0, 10, min(1000, n), seed)
    return {k: figures[k] for k in ("fid", "kid", "kid_std", "face_detect_rate") if k in figures}


# -- the comparison -----------------------------------------------------------------------------

def compare_runs(runs: list[dict], out_dir, evaluate, intervals: int = 4, cells: int = 5,
                 status=lambda text: None) -> dict:
    """Plots, grids and the table of ``runs`` (dicts with ``variant``, ``discriminator``,
    ``run_dir``) into the existing folder ``out_dir``; ``evaluate(run_dir)`` returns a
    run's figures (:func:`classifier_figures` / :func:`inception_figures` bound to their
    data). Writes ``report.json`` and ``report.md``; returns the report."""
    out_dir = Path(out_dir)
    start = time.time()
    rows, by_variant = [], {}
    for run in runs:
        by_variant.setdefault(run["variant"], {})[run["discriminator"]] = Path(run["run_dir"])
    for run in runs:
        run_dir = Path(run["run_dir"])
        card = read_card(run_dir)
        status(f"evaluating {run['variant']} / {run['discriminator']}")
        cols = read_metrics(run_dir)
        result = _read_json(run_dir / "result.json")
        seconds = result.get("seconds")
        row = {"variant": run["variant"], "discriminator": run["discriminator"], "generator": card.generator,
               "run": str(run_dir), "steps": card.steps, "seconds": seconds,
               "seconds_per_step": round(seconds / card.steps, 2) if seconds and card.steps else None,
               **final_values(cols), **evaluate(run_dir)}
        rows.append(row)
    images = {}
    steps = runs and read_card(runs[0]["run_dir"]).steps
    marks = sorted({max(1, round(steps * k / intervals)) for k in range(1, intervals + 1)}) if steps else []
    for variant, discs in by_variant.items():
        side = read_card(next(iter(discs.values()))).resolution
        curves = {d: read_metrics(p) for d, p in discs.items()}
        images[variant] = {"curves": f"{variant}_curves.png", "samples": f"{variant}_samples.png"}
        plot_curves(variant, curves, out_dir / images[variant]["curves"])
        if variant.startswith("wgan"):
            images[variant]["zoom"] = f"{variant}_curves_zoom.png"
            plot_curves(variant, curves, out_dir / images[variant]["zoom"], zoom=True)
        plot_samples(variant, discs, marks, side, out_dir / images[variant]["samples"], cells)
    report = {"runs": rows, "images": images, "grid_steps": marks, "final_share": FINAL_SHARE,
              "seconds": round(time.time() - start, 1), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    return report


def _read_json(path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, ValueError):
        return {}


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


#: Table columns: (header, row key, digits).
COLUMNS = (("variant", "variant", 0), ("D", "discriminator", 0), ("G", "generator", 0), ("steps", "steps", 0),
           ("s/step", "seconds_per_step", 3), ("G loss", "g_loss", 3), ("D loss", "d_loss", 3),
           ("D acc", "d_acc", 2), ("FID", "fid", 4), ("KID", "kid", 3), ("class acc", "class_acc", 3),
           ("code acc", "code_acc", 3), ("face rate", "face_detect_rate", 3))


def render_markdown(report: dict, title: str, notes: list[str] = ()) -> str:
    """The comparison as Markdown: the table (columns that some run has) and every plot."""
    rows = report["runs"]
    cols = [c for c in COLUMNS if any(r.get(c[1]) is not None for r in rows)]
    lines = [f"# {title}", "", *notes, "",
             "| " + " | ".join(c[0] for c in cols) + " |", "| " + " | ".join("---" for _ in cols) + " |"]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(k), d) if d else _fmt(r.get(k)) for _, k, d in cols) + " |")
    lines += ["", f"Losses and D accuracy: mean over the last {int(report['final_share'] * 100)}% of the logged "
              f"steps. Sample grids at steps {report['grid_steps']} (the runs' fixed inputs).", ""]
    for variant, files in report["images"].items():
        lines += [f"## {variant}", "", f"![{variant} curves]({files['curves']})", ""]
        if "zoom" in files:
            lines += [f"![{variant} curves, zoomed]({files['zoom']})", ""]
        lines += [f"![{variant} samples]({files['samples']})", ""]
    return "\n".join(lines)


def evaluator(records, classifier: str | None, feature_network: str | None, n: int, face_n: int,
              seed: int = 0) -> tuple:
    """``(evaluate(run_dir) -> figures, notes)`` for CompareGANs on ``records``: with a
    ``classifier`` folder (TrainClassifier: labeled data) the classifier's figures on its
    features, else FID/KID on ``feature_network`` (None: the FID Inception-v3) and the face
    rate on ``face_n`` samples; ``n`` real images of the test split (or the one
    :func:`model.eval.evaluation.choose_split` falls back to) and as many samples per run."""
    import json
    from pathlib import Path

    import keras

    from model.card import load_generator
    from model.eval.evaluation import choose_split, read_split_images, split_sizes, to_rgb
    from model.eval.metrics import compute_features, load_feature_network

    split, note = choose_split(split_sizes(records), "test")
    notes = [f"> {note}."] if note else []
    if classifier is not None:
        folder = Path(classifier)
        info = json.loads((folder / "report.json").read_text()) if (folder / "report.json").exists() else {}
        judge = keras.models.load_model(folder / "classifier.keras", compile=False)
        features = load_feature_network(str(folder / "features.keras"))
        real = read_split_images(records, split, n, seed)
        real_features = compute_features(features, to_rgb(real))
        notes.append(f"FID and KID on the {info.get('feature_dim', 128)}-d features of the project's "
                     f"classifier (TrainClassifier, test accuracy {info.get('test_accuracy', float('nan')):.4f}"
                     f"), {len(real)} samples per run against {len(real)} real `{split}` images. Class acc: "
                     f"the classifier's accuracy on ACGAN samples of the requested class; code acc: InfoGAN's "
                     f"categorical code against the classifier's label under the best one-to-one mapping.")

        def evaluate(run_dir):
            card, g = load_generator(run_dir)
            return classifier_figures(g, card, judge, features, real_features, len(real), seed)
    else:
        features = load_feature_network(feature_network)
        real = to_rgb(read_split_images(records, split, n, seed))
        real_features = compute_features(features, real)
        name = feature_network or "FID Inception-v3"
        notes.append(f"FID and KID on the {name} features, {len(real)} samples per run against "
                     f"{len(real)} real `{split}` images (FID at this n is biased upwards: compare runs, "
                     f"not papers); face rate: dlib's detector on {face_n} samples.")

        def evaluate(run_dir):
            card, g = load_generator(run_dir)
            return inception_figures(g, card, features, real_features, len(real), face_n, seed)
    return evaluate, notes
