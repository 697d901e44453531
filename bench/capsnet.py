"""The CapsNet report's two claims, tested on MNIST: does a CapsNet discriminator need
(a) less data and (b) less training than the CNN one?

    python bench/capsnet.py --mnist ../shared/data/mnist --steps 3000 --eval-every 250 \
        --fractions 0.1,0.3,1 --variants dcgan

Every run is an ordinary ``TrainGAN`` run (same seed, batch and steps; ``--data-fraction``
the share of the 60,000 training digits it reads, the same first records for every run)
with ``eval_every``: its ``eval.csv`` holds the classifier FID (on the 128-d features of
``TrainClassifier``, the feature space of the MNIST ``CompareGANs``) of ``--eval-n`` samples
against as many test digits at every ``--eval-every`` steps.

(a) *less data*: for each variant and discriminator, the final FID at each share and its
ratio to the FID on all the data (a discriminator that needs less data loses less).
(b) *less training overhead*: seconds per training step (evaluations excluded), and the
steps and training seconds until the FID first reaches a threshold (``--threshold``, or by
default ``THRESHOLD_FACTOR`` times the CNN's final FID on all the data, per variant).
``flattened`` says whether each run's FID curve had flattened (each of its last
``FLAT_INTERVALS`` evaluation intervals moved the FID by at most ``FLAT``): a claim judged
before the CNN pairs flatten is not judged.

Prints one JSON line: ``runs`` (per ``variant/discriminator/fraction``), ``less_data``,
``overhead`` and ``claims`` (``agrees`` per claim and variant: true, false, or null when
the data cannot say).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import luigi_bench  # noqa: E402
from luigi_bench import build  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
#: The default threshold: this times the CNN's final FID on all the data (per variant).
THRESHOLD_FACTOR = 1.5
#: A curve has flattened when each of its last FLAT_INTERVALS evaluation intervals moved the FID
#: by at most this share. One interval within 10% was too lax: the CNN DCGAN on all of MNIST went
#: 320 -> 135 over 2,000 steps of batch 32 and its last 250 steps still took 8.7% off (2026-12-04).
FLAT, FLAT_INTERVALS = 0.05, 2


def read_eval(run_dir) -> list[dict]:
    """``eval.csv`` of a run: ``[{"step", "fid", "seconds"}, ...]`` by step."""
    path = Path(run_dir) / "eval.csv"
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        rows = [{"step": int(r["step"]), "fid": float(r["fid"]), "seconds": float(r["seconds"] or 0)}
                for r in csv.DictReader(fh)]
    return sorted(rows, key=lambda r: r["step"])


def flat(fids: list[float]) -> bool:
    """Whether an FID curve (by step) has flattened: :data:`FLAT_INTERVALS` intervals at its end,
    each moving the FID by at most :data:`FLAT` of its value before."""
    if len(fids) < FLAT_INTERVALS + 1:
        return False
    tail = fids[-FLAT_INTERVALS - 1:]
    return all(abs(b - a) <= FLAT * a for a, b in zip(tail, tail[1:]))


def summarize(run_dir, steps: int) -> dict:
    """One run's figures: training seconds per step (its wall time minus its evaluations),
    the FID curve, the final FID and whether the curve flattened."""
    result = json.loads((Path(run_dir) / "result.json").read_text())
    curve = read_eval(run_dir)
    training = max(result["seconds"] - sum(r["seconds"] for r in curve), 0.0)
    fids = [r["fid"] for r in curve]
    flattened = flat(fids)
    return {"run": str(run_dir), "s_per_step": round(training / steps, 4), "train_seconds": round(training, 1),
            "fid": fids[-1] if fids else None, "curve": [[r["step"], r["fid"]] for r in curve],
            "flattened": bool(flattened)}


def reach(run: dict, threshold: float) -> dict:
    """Steps and training seconds until the run's FID first is at most ``threshold`` (None:
    never within its steps)."""
    step = next((s for s, fid in run["curve"] if fid <= threshold), None)
    return {"steps": step, "seconds": None if step is None else round(step * run["s_per_step"], 1)}


def judge(runs: dict, variants, fractions, threshold: float | None) -> dict:
    """``less_data``, ``overhead`` and ``claims`` from the runs keyed ``variant/D/fraction``."""
    full = max(fractions)
    less_data, overhead, claims = {}, {}, {"less_data": {}, "overhead": {}}
    for v in variants:
        cnn, caps = runs.get(f"{v}/cnn/{full:g}"), runs.get(f"{v}/capsnet/{full:g}")
        ratios = {}
        for d in ("cnn", "capsnet"):
            base = runs.get(f"{v}/{d}/{full:g}")
            if base and base["fid"]:
                ratios[d] = {f"{f:g}": round(runs[f"{v}/{d}/{f:g}"]["fid"] / base["fid"], 3)
                             for f in fractions if f"{v}/{d}/{f:g}" in runs and runs[f"{v}/{d}/{f:g}"]["fid"]}
        less_data[v] = ratios
        smallest = f"{min(fractions):g}"
        judged = cnn is not None and cnn["flattened"] and smallest != f"{full:g}" and \
            all(smallest in ratios.get(d, {}) for d in ("cnn", "capsnet"))
        # The claim: with less data the CapsNet D loses less than the CNN D (a smaller FID ratio)
        # and still ends no worse than the CNN on the same share.
        claims["less_data"][v] = None if not judged else bool(
            ratios["capsnet"][smallest] < ratios["cnn"][smallest]
            and runs[f"{v}/capsnet/{smallest}"]["fid"] <= runs[f"{v}/cnn/{smallest}"]["fid"])
        if cnn is None or caps is None or not cnn["fid"]:
            continue
        limit = threshold if threshold is not None else round(THRESHOLD_FACTOR * cnn["fid"], 2)
        reached = {d: reach(r, limit) for d, r in (("cnn", cnn), ("capsnet", caps))}
        overhead[v] = {"threshold": limit, "step_cost_ratio": round(caps["s_per_step"] / cnn["s_per_step"], 2),
                       "reach": reached}
        cnn_s, caps_s = reached["cnn"]["seconds"], reached["capsnet"]["seconds"]
        # The claim: the CapsNet D reaches the threshold in less training time (never reaching
        # it where the CNN does is a no; neither reaching it says nothing).
        claims["overhead"][v] = None if cnn_s is None and caps_s is None else \
            bool(caps_s is not None and (cnn_s is None or caps_s < cnn_s))
    return {"less_data": less_data, "overhead": overhead, "claims": claims}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mnist", required=True, help="folder with MNIST's four IDX .gz files")
    parser.add_argument("--workdir", default=str(ROOT / "processed" / "bench-capsnet"))
    parser.add_argument("--steps", type=int, default=3000,
                        help="training steps of every run (same budget; the CNN DCGAN levels off at about 3000)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--eval-every", type=int, default=250, help="steps between classifier-FID evaluations")
    parser.add_argument("--eval-n", type=int, default=1000, help="samples (and test digits) per evaluation")
    parser.add_argument("--fractions", default="0.1,0.3,1", help="shares of the training images, comma separated")
    parser.add_argument("--variants", default="dcgan", help="comma separated (model/variants)")
    parser.add_argument("--discriminators", default="cnn,capsnet")
    parser.add_argument("--threshold", type=float, default=None,
                        help=f"classifier FID to reach (default: {THRESHOLD_FACTOR} x the CNN's final FID on all "
                             f"the data, per variant)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1, help="runs trained at once (1: clean step times)")
    luigi_bench.add_set_option(parser)
    args = parser.parse_args(argv)
    try:
        fractions = sorted({float(f) for f in args.fractions.split(",") if f.strip()})
    except ValueError:
        parser.error(f"--fractions: numbers in (0, 1] separated by commas, e.g. 0.1,0.3,1; got {args.fractions!r}")
    if not fractions or not all(0 < f <= 1 for f in fractions):
        parser.error(f"--fractions: every share must be in (0, 1], got {args.fractions!r}")
    if args.eval_every < 1 or args.eval_every > args.steps:
        parser.error(f"--eval-every must be in [1, --steps ({args.steps})], got {args.eval_every}")
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    discriminators = [d.strip() for d in args.discriminators.split(",") if d.strip()]
    os.chdir(ROOT)
    training = {"steps": args.steps, "batch_size": args.batch_size, "seed": args.seed, "eval_every": args.eval_every,
                "checkpoint_every": args.eval_every, "sample_every": args.eval_every,
                "log_every": max(1, args.eval_every // 5)}
    settings = {"DownloadMNIST": {"local_dir": Path(args.mnist).resolve()}, "TrainGAN": training,
                "EvaluateGenerator": {"training_n": args.eval_n, "split": "test"}}
    luigi_bench.configure(args.workdir, settings, args.set)

    import tasks
    log = lambda text: print(f"[capsnet] {text}", file=sys.stderr, flush=True)  # noqa: E731

    classifier = tasks.TrainClassifier(dataset="mnist")
    minutes = {"classifier": build(classifier)}
    report = json.loads((Path(classifier.output().path) / "report.json").read_text())
    log(f"classifier ready ({minutes['classifier']:.1f} min, test accuracy {report['test_accuracy']:.4f})")
    # Every run's FID on the classifier's features, as CompareGANs scores MNIST.
    luigi_bench.configure(args.workdir, {**settings, "EvaluateGenerator": {
        **settings["EvaluateGenerator"], "feature_network": Path(classifier.output().path) / "features.keras"}},
        args.set)

    jobs = {f"{v}/{d}/{f:g}": tasks.TrainGAN(dataset="mnist", variant=v, discriminator=d, data_fraction=f)
            for v in variants for d in discriminators for f in fractions}
    if args.workers == 1:
        for key, task in jobs.items():
            log(f"training {key} for {args.steps} steps")
            minutes[key] = build(task)
    else:
        minutes["runs"] = build(list(jobs.values()), args.workers)
    runs = {key: summarize(task.run_dir(), args.steps) for key, task in jobs.items()}
    from model.cpu import cpu_flags, cpu_model, vector_isa
    out = {"steps": args.steps, "batch_size": args.batch_size, "eval_every": args.eval_every, "eval_n": args.eval_n,
           "fractions": fractions, "classifier_test_accuracy": report["test_accuracy"], "runs": runs,
           **judge(runs, variants, fractions, args.threshold),
           "minutes": {k: round(v, 2) for k, v in minutes.items()},
           "cpu": cpu_model(), "isa": vector_isa(cpu_flags()), "workers": args.workers,
           "load_avg_end": round(os.getloadavg()[0], 2)}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
