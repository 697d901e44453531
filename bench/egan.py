"""EGAN control benchmark: does c control the attribute, and what does control cost?

    python bench/egan.py --data ../shared/data/celeba [--steps 1200] [--workdir processed/bench-egan]
        [--groups "brightness,sharpness;Male,Mouth_Slightly_Open,Smiling,Eyeglasses,Wearing_Lipstick"]
        [--mode pretrain] [--samples 512] [--sweep-max 1,2,5] [--publish docs/images] [--no-baseline]
        [--baseline-recipe paper] [--set SECTION.KEY=VALUE ...]

Runs the project's own Luigi tasks through a local scheduler in a work folder of its
own (``--workdir``; ``.`` reuses the repository's raw/ and processed/):

1. ``BuildTFRecords --dataset celeba`` from the CelebA copy ``--data`` (partial local copy);
2. the attribute classifier EGAN trains with (``TrainAttributeClassifier``, seed 0) and an
   independent measurer trained separately (seed 1, another width), each with its held-out
   accuracy on real test faces;
3. one ``TrainEGAN`` run per group of extractors (one c per extractor) and a plain
   ``TrainDCGAN`` run, all for the same ``--steps`` with the same seed and settings;
4. per extractor: ``--samples`` draws of z (and the other c, as in training), c swept over
   11 values from 0 to ``--sweep-max`` (training draws c from {0, 1}; the thesis' figures
   sweep to 1, 2 or 5, and a comma-separated list measures each), the attribute of every
   image measured independently (brightness and sharpness by their formulas, attributes by
   the measurer), and the Spearman correlation between c and the measurement over all of
   them (``rho``, the target) and along each z's own sweep (``rho_within_z``), with what sets
   the pooled figure (``parts``: the slope of each z's sweep, its spread between faces, what z
   alone sets); a run trained against the edges' p-norm also in that measure, beside the
   levels its quantile target asked for (``trained``); a run that mixes in a blur
   (``--c-lowpass``) also how much of each c's spread between faces the edges a feedback mix
   sees explain (``edges_explain``);
5. ``EvaluateGenerator`` (held-out test faces, same n; FID, KID, face rate and the MS-SSIM of
   sample pairs, which rises when a generator collapses) of every EGAN run and of the DCGAN
   (``--no-baseline`` skips the DCGAN: control only, no answer to what control costs). The
   DCGAN trains the paper's way, as TrainEGAN does, unless ``--baseline-recipe`` names another
   recipe (``ema``: the recipe's weight average, beside an EGAN run given the same ``TrainEGAN.ema``).

Every EGAN option TrainEGAN exposes is a flag of the same name (``--weight``, ``--target``,
``--c-lowpass-fit``, ...: EGANOptions' default, TrainEGAN's description), checked before any
training, set in the work folder's luigi.cfg and reported in the JSON line.

``--set SECTION.KEY=VALUE`` (repeatable) sets any luigi.cfg setting over the benchmark's own
(bench/luigi_bench.py); tests/test_bench_smoke.py runs it tiny with it: ``TrainEGAN.base_width=8``,
``EvaluateGenerator.feature_network=<a small .keras network>``, ``EvaluateGenerator.face_n=4``.

Prints one JSON line last: ``rho`` per extractor at the first ``--sweep-max``
(``rho_by_sweep``: at each), the classifiers' accuracies, FID/KID/face rate of each run,
steps and minutes. Targets (issue 15): brightness and sharpness
rho >= 0.9, Male and Mouth_Slightly_Open rho >= 0.5; the others are reported as they come.
``cost`` (with the baseline; issue 32): each EGAN's FID over the DCGAN's (<= 1.3) and its
MS-SSIM of sample pairs minus the DCGAN's (within 0.05). ``--target quantile
--c-distribution uniform`` trains the quantile target (model/variants/egan.py).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import luigi_bench  # noqa: E402
from input_pipeline import split_images, version_folder  # noqa: E402
from luigi_bench import build  # noqa: E402

from model.config import EGANOptions  # noqa: E402
from model.train.recipes import RECIPES, recipe  # noqa: E402

DEFAULT_GROUPS = "brightness,sharpness;Male,Mouth_Slightly_Open,Smiling,Eyeglasses,Wearing_Lipstick"
TARGETS = {"brightness": 0.9, "sharpness": 0.9, "Male": 0.5, "Mouth_Slightly_Open": 0.5}


def egan_parameters() -> dict:
    """TrainEGAN's parameters that are EGAN options (``TrainEGAN.option_parameters``), by name:
    this bench's flags of the same name (``c_lowpass_fit`` is ``--c-lowpass-fit``), each with the
    options' default and the task's description, set in the workdir's luigi.cfg and reported."""
    from tasks.train import TrainEGAN
    return TrainEGAN.option_parameters()


def configure(args) -> None:
    """The repository's luigi.cfg plus this benchmark's settings, in ``--workdir``."""
    common = {"steps": args.steps, "batch_size": args.batch_size, "checkpoint_every": max(1, args.steps // 4),
              "sample_every": max(1, args.steps // 8), "eval_every": 0, "seed": args.seed}
    luigi_bench.configure(args.workdir, {
        "DownloadCelebA": {"local_dir": Path(args.data).resolve(), "allow_partial": "true"},
        "DetectAlignFaces": {"jobs": 0},
        "TrainDCGAN": common,
        "TrainEGAN": {**common, **{name: str(getattr(args, name)).lower() if isinstance(getattr(args, name), bool)
                                   else getattr(args, name) for name in egan_parameters()}},
    }, args.set)


def correlations(values, rows) -> dict:
    """``rows`` ``(samples, len(values))``: the attribute measured along each z's sweep of c
    over ``values``. Spearman's rho over all images (``rho``) and the mean rho of each z's
    own sweep (``rho_within_z``; a sweep that does not change the measure counts as 0), the
    mean measure at each value, and what sets the pooled rho (``parts``): each z's sweep
    fitted by a line, the mean ``slope`` (measure per unit of c) and its spread between the
    faces (``slope_spread``), what z alone sets (``z_spread``: the standard deviation of each
    z's mean) and what neither explains (``residual``)."""
    import numpy as np
    from scipy.stats import spearmanr

    rows = np.asarray(rows, np.float64)
    rho = float(spearmanr(np.tile(values, len(rows)), rows.ravel()).statistic)
    within = [spearmanr(values, row).statistic if np.ptp(row) > 0 else 0.0 for row in rows]
    slopes, intercepts = np.polyfit(values, rows.T, 1)
    residual = rows - (intercepts[:, None] + slopes[:, None] * np.asarray(values)[None, :])
    parts = {"slope": slopes.mean(), "slope_spread": slopes.std(), "z_spread": rows.mean(axis=1).std(),
             "residual": residual.std()}
    return {"rho": round(rho, 4), "rho_within_z": round(float(np.mean(within)), 4),
            "mean_by_c": [round(float(v), 4) for v in rows.mean(axis=0)],
            "parts": {k: round(float(v), 4) for k, v in parts.items()}}


def control(run_dir, extractor: str, measurer, samples: int, sweep_max: float, seed: int, real=None) -> dict:
    """Spearman's rho between c (swept) and the independently measured attribute, over all
    ``samples`` x 11 images (``rho``: the target) and per z (``rho_within_z``: the mean rho of
    each face's own sweep). For a run that trained against the edges' p-norm
    (``sharpness_norm``), ``trained``: the same figures in that measure, and with ``real``
    (the training faces, ``(n, S, S, C)``) and the quantile target, ``targets``: the level
    training asked for at each c (the real faces' quantile c, c clipped to [0, 1]). For a run
    that keeps a weight average (``ema``; the card's generator is the average), ``raw_weights``:
    the same figures from its raw generator on the same inputs (what the average changes)."""
    import keras
    import numpy as np

    from model.card import load_generator
    from model.train.sampling import generate, vary_input
    from model.variants.extractors import FORMULAS, measure

    card, generator = load_generator(run_dir)
    spec = card.input("c")
    dim = spec.labels.index(extractor)
    values = np.linspace(0.0, sweep_max, 11)
    inputs = vary_input(card, "c", values, samples, seed, dim)

    def measured_by(g):
        """``(images, measures)`` of generator ``g`` on the sweep's inputs."""
        drawn = generate(g, inputs, batch_size=256)
        return drawn, (measure(extractor, drawn) if extractor in FORMULAS else
                       measurer.predict(drawn, [extractor])[:, 0].astype(np.float64))

    images, measured = measured_by(generator)
    out = {**correlations(values, measured.reshape(samples, len(values))),
           "c": [round(float(v), 3) for v in values], "n": int(len(measured))}
    if "raw_keras" in card.files:
        _, raw = measured_by(keras.models.load_model(Path(run_dir) / card.files["raw_keras"], compile=False))
        out["raw_weights"] = correlations(values, raw.reshape(samples, len(values)))
    if extractor == "sharpness" and any(layer.name == "lowpass" for layer in generator.layers):
        out["edges_explain"] = edges_explain(generator, inputs, measured.reshape(samples, len(values)))
    norm = spec.meta.get("sharpness_norm", 0.0) if extractor == "sharpness" else 0.0
    if norm:
        trained = measure(extractor, images, sharpness_norm=norm).reshape(samples, len(values))
        out["trained"] = {"sharpness_norm": norm, **correlations(values, trained)}
        if real is not None and spec.meta.get("target") == "quantile":
            levels = np.quantile(measure(extractor, real, sharpness_norm=norm), np.clip(values, 0.0, 1.0))
            out["trained"]["targets"] = [round(float(v), 4) for v in levels]
    return out


def edges_explain(generator, inputs: dict, rows) -> dict:
    """For a generator that mixes in a blur (``c_lowpass``): at each c of the sweep, the share of
    the faces' spread in ``rows`` (``(samples, len(values))``, the measured sharpness) a linear
    fit explains (R^2) from what ``c_lowpass_draft``'s mix sees, the edges of the draft and of
    its blur (``edges``: model/nets/dcgan.py ``_edge_sizes``), and from the sizes of blur minus
    draft per channel, their mean and largest (``detail``): how much of z's part of sharpness
    a feedback on those could cancel."""
    import keras
    import numpy as np

    from model.nets.dcgan import _edge_sizes

    parts = keras.Model(generator.inputs, [generator.get_layer("tanh").output, generator.get_layer("lowpass").output])
    draft, blur = parts.predict(inputs, batch_size=256, verbose=0)
    image = keras.Input(draft.shape[1:])
    sizes = keras.Model(image, _edge_sizes(image))
    detail = np.abs(blur - draft)
    features = {"edges": np.concatenate([sizes.predict(draft, batch_size=256, verbose=0),
                                         sizes.predict(blur, batch_size=256, verbose=0)], axis=1),
                "detail": np.concatenate([detail.mean(axis=(1, 2)), detail.max(axis=(1, 2))], axis=1)}
    samples, k = rows.shape
    out = {}
    for name, x in features.items():
        x = x.reshape(samples, k, -1)
        shares = []
        for j in range(k):
            design = np.concatenate([x[:, j].astype(np.float64), np.ones((samples, 1))], axis=1)
            beta = np.linalg.lstsq(design, rows[:, j], rcond=None)[0]
            spread = np.var(rows[:, j])
            shares.append(1.0 - np.var(rows[:, j] - design @ beta) / spread if spread > 0 else 0.0)
        out[name] = [round(float(v), 3) for v in shares]
    return out


#: What control may cost (issue 32): an EGAN's FID at most this times the plain DCGAN's ...
MAX_FID_RATIO = 1.3
#: ... and the MS-SSIM of its sample pairs at most this far from the DCGAN's (a collapse raises it).
MAX_MS_SSIM_GAP = 0.05


def control_cost(quality: dict) -> dict:
    """Per EGAN run of ``quality`` (``{"egan NAME": report, "dcgan": report, ...}``): its FID over
    the plain DCGAN's and its MS-SSIM of sample pairs minus the DCGAN's, each against its limit.
    Empty without the DCGAN baseline."""
    base = quality.get("dcgan")
    if base is None:
        return {}
    out = {}
    for name, report in quality.items():
        if not name.startswith("egan "):
            continue
        ratio = report["fid"] / base["fid"]
        gap = report["ms_ssim"] - base["ms_ssim"]
        out[name] = {"fid_ratio": round(ratio, 3), "ms_ssim_gap": round(gap, 4),
                     "met": bool(ratio <= MAX_FID_RATIO and abs(gap) <= MAX_MS_SSIM_GAP)}
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="CelebA copy (img_align_celeba/ and label files)")
    parser.add_argument("--workdir", default=str(ROOT / "processed" / "bench-egan"))
    parser.add_argument("--steps", type=int, default=1200, help="training steps of every run (same budget)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--groups", default=DEFAULT_GROUPS, help="';'-separated groups of extractors, one "
                                                                "EGAN run per group, one c per extractor")
    defaults = EGANOptions()  # the variant's own defaults: one place
    for name, parameter in egan_parameters().items():
        default = getattr(defaults, name)
        kind = {"action": argparse.BooleanOptionalAction} if isinstance(default, bool) else {"type": type(default)}
        parser.add_argument(f"--{name.replace('_', '-')}", default=default, help=parameter.description, **kind)
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--sweep-max", default="1", help="largest c of the sweep; a comma-separated list "
                        "measures each (the first is the one `rho` and the targets report)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--publish", default="", help="copy one sweep grid per extractor into this folder")
    parser.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=True,
                        help="train and score the plain DCGAN at the same budget (--no-baseline: control only)")
    parser.add_argument("--baseline-recipe", default="paper", choices=list(RECIPES),
                        help="the plain DCGAN's recipe (model/train/recipes.py): 'paper' trains it as TrainEGAN "
                             "does by default; 'ema' gives it the recipe's weight average, beside an EGAN run "
                             "given the same --set TrainEGAN.ema")
    luigi_bench.add_set_option(parser)
    args = parser.parse_args(argv)
    try:  # every option and combination checked before any training, one line naming the fix
        EGANOptions(extractors=["brightness"], **{name: getattr(args, name) for name in egan_parameters()})
    except ValueError as error:
        parser.error(str(error))
    try:
        sweep_maxima = [float(v) for v in args.sweep_max.split(",") if v.strip()]
    except ValueError:
        parser.error(f"--sweep-max: numbers separated by commas, e.g. 1,2,5; got {args.sweep_max!r}")
    if not sweep_maxima or min(sweep_maxima) <= 0:
        parser.error(f"--sweep-max: every maximum must be > 0, got {args.sweep_max!r}")
    os.chdir(ROOT)
    configure(args)

    import tasks
    from model.apps.attributes import load_classifier
    from model.variants.extractors import FORMULAS
    log = lambda text: print(f"[egan] {text}", file=sys.stderr, flush=True)  # noqa: E731

    groups = [[e.strip() for e in g.split(",") if e.strip()] for g in args.groups.split(";") if g.strip()]
    attributes = sorted({e for g in groups for e in g if e not in FORMULAS})
    minutes = {"records": build(tasks.BuildTFRecords(dataset="celeba"), 2)}
    log(f"records ready in {minutes['records']:.1f} min")
    classifiers, measurer = {}, None
    if attributes:  # formulas measure themselves; attributes need the independent classifier
        measurer_task = tasks.TrainAttributeClassifier(dataset="celeba", attributes=",".join(attributes), seed=1,
                                                       width=48)
        minutes["measurer"] = build(measurer_task)
        classifiers["measurer"] = load_classifier(measurer_task.output().path).card["accuracy"]
        measurer = load_classifier(measurer_task.output().path)

    runs = {}
    for group in groups:
        extractor = ",".join(dict.fromkeys(e if e in FORMULAS else "attribute" for e in group))
        task = tasks.TrainEGAN(dataset="celeba", extractor=extractor,
                               attribute=",".join(e for e in group if e not in FORMULAS))
        log(f"training EGAN {group} for {args.steps} steps")
        minutes[f"egan {'+'.join(group)}"] = build(task)
        if task.classifier_task() is not None:
            classifiers["training"] = load_classifier(task.classifier_task().output().path).card["accuracy"]
        runs["+".join(group)] = (task.run_dir(), group)
    # The EGAN trains as TrainGAN does, without averaging or augmentation, and so does its baseline
    # by default ("paper"; TrainDCGAN's own defaults are the ema+augment recipe).
    dcgan = tasks.TrainDCGAN(dataset="celeba", **recipe(args.baseline_recipe)) if args.baseline else None
    if dcgan is not None:
        log(f"training the plain DCGAN for {args.steps} steps")
        minutes["dcgan"] = build(dcgan)

    # The training faces, for the levels a p-norm run's quantile target asked for (control()).
    real = split_images(version_folder(str(tasks.BuildTFRecords(dataset="celeba").root())), "train") \
        if args.sharpness_norm and args.target == "quantile" else None
    rho, by_sweep, quality = {}, {}, {}
    for run_dir, group in runs.values():
        for extractor in group:
            for high in sweep_maxima:
                result = control(run_dir, extractor, measurer, args.samples, high, args.seed, real)
                rho.setdefault(extractor, result)
                by_sweep.setdefault(extractor, {})[f"{high:g}"] = {k: result[k] for k in ("rho", "rho_within_z")}
                log(f"{extractor}, c in [0, {high:g}]: rho {result['rho']}, within z {result['rho_within_z']}")
    scored = [(f"egan {k}", v[0]) for k, v in runs.items()] + ([("dcgan", dcgan.run_dir())] if dcgan else [])
    for name, run_dir in scored:
        evaluate = tasks.EvaluateGenerator(model=str(run_dir), checkpoints=False)
        build(evaluate)
        report = json.loads(Path(evaluate.output()["json"].path).read_text())
        # MS-SSIM of random sample pairs: a generator that collapsed to a few faces scores
        # near the real pairs' figure or above it (quality["real"]).
        quality[name] = {k: report[k] for k in ("fid", "kid", "face_detect_rate", "ms_ssim", "n", "split")}
        quality["real"] = {k: report["real"].get(k) for k in ("face_detect_rate", "ms_ssim")}
    cost = control_cost(quality)
    if args.publish:
        from model.train.sampling import attribute_sweeps
        for name, (run_dir, _) in runs.items():
            out = Path(args.publish) / f"egan_{name.replace('+', '_')}"
            out.mkdir(parents=True, exist_ok=True)
            attribute_sweeps(run_dir, out, high=2.0, rows=6, columns=11, seed=args.seed)
    print(json.dumps({
        "rho": {k: v["rho"] for k, v in rho.items()}, "rho_by_sweep": by_sweep,
        "targets": {k: {"rho": rho[k]["rho"], "target": t, "met": rho[k]["rho"] >= t}
                    for k, t in TARGETS.items() if k in rho},
        "control": rho, "classifiers": classifiers, "quality": quality, "cost": cost,
        "steps": args.steps, "batch_size": args.batch_size, **{name: getattr(args, name) for name in egan_parameters()},
        "samples": args.samples,
        "sweep_max": sweep_maxima,
        "minutes": {k: round(v, 2) for k, v in minutes.items()},
        "runs": {k: str(v[0]) for k, v in runs.items()}, "dcgan_run": str(dcgan.run_dir()) if dcgan else None,
        "baseline_recipe": args.baseline_recipe if dcgan else None}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
