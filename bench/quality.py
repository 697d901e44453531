"""Quality benchmark: training recipes side by side on a CelebA copy, each for the same
wall-clock budget, chosen on the validation faces and reported on the test faces.

    python bench/quality.py --data ../shared/data/celeba [--recipes paper,ema,ema+augment]
        [--minutes 20] [--workdir processed/bench-quality] [--precision auto] [--batch-size 64]
        [--steps N] [--points 6] [--extend] [--publish docs/images --prefix quality]
        [--set SECTION.KEY=VALUE ...]

Runs the project's own Luigi tasks through a local scheduler, in a work folder
of its own (``[paths]`` raw/processed under ``--workdir``):

1. ``BuildTFRecords --dataset celeba`` (DownloadCelebA with ``local_dir=--data``,
   ``allow_partial=true``, then DetectAlignFaces): align and write records, once for all
   recipes;
2. times a training step of every recipe (model.train.loop.step_seconds: interleaved rounds,
   so a change of machine load hits them alike) and gives each recipe the steps that fill
   ``--minutes`` at its own speed (or exactly ``--steps``); the times are kept in the
   workdir's ``step_seconds.json`` (``--retime`` measures again), so a second run plans the
   same steps and finds the trained runs in place;
3. per recipe (model/train/recipes.py), ``TrainDCGAN`` with the recipe's settings, checkpointing
   and scoring FID/KID every steps/``--points`` steps (``eval_every``: the curve, against all
   of the validation split, so at the same n as the recipe's figure), then ``EvaluateGenerator``
   of that run on the **validation** split (FID with its bootstrap spread over the real set,
   KID, face-detection rate, MS-SSIM of the exported generator, all of the split up to 10k
   images);
4. the winner, the recipe with the lowest validation FID, alone ``EvaluateGenerator`` on the
   **test** split: the figure reported, from faces the choice never saw (as TuneGAN does).
   Records without a validation and a test split of 2 or more faces each are refused.

With ``--extend`` a recipe's run starts from its finished shorter run in the workdir
(model.train.loop.continue_run; ``continued_from`` names it, ``minutes`` then count this
invocation's training only): the winner's 40 minutes reuse its first 20.

``--set SECTION.KEY=VALUE`` (repeatable) sets any luigi.cfg setting over the benchmark's own
(bench/luigi_bench.py); tests/test_bench_smoke.py runs it tiny with it: ``TrainDCGAN.base_width=8``,
``EvaluateGenerator.feature_network=<a small .keras network>``, ``EvaluateGenerator.face_n=4``.

Prints one JSON line last: per recipe its validation figures (``fid``, ``fid_std``, ...,
``split``), steps, seconds per step, training minutes (with and without the evaluations during
training) and its FID-over-steps curve; ``chosen_on`` (validation) and ``reported_on`` (test),
the ``winner`` (lowest validation FID), its validation figures (``winner_validation``) and its
test figures at the top level (the single-recipe output of earlier versions, ``split`` test);
n, CPU model and load average. ``--publish DIR`` writes
``{prefix}_recipes.png`` (the recipes' 8x8 sample grids side by side) and
``{prefix}_fid_curves.png`` (FID against steps and against training minutes); with one
recipe also ``{prefix}_grid.png`` and ``{prefix}_fid_over_steps.png``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import luigi_bench  # noqa: E402
from luigi_bench import build  # noqa: E402

from model.train.recipes import parse_recipes, recipe  # noqa: E402

#: The split the winner is chosen on, and the one its reported figures come from (never the same).
CHOOSE_ON, REPORT_ON = "validation", "test"
#: The figures of one evaluation that the JSON line carries.
FIGURES = ("fid", "fid_std", "fid_boot_mean", "kid", "kid_std", "face_detect_rate", "ms_ssim", "n", "split")


def configure(args) -> None:
    """The repository's luigi.cfg plus this benchmark's settings, in ``--workdir``."""
    luigi_bench.configure(args.workdir, {
        "DownloadCelebA": {"local_dir": Path(args.data).resolve(), "allow_partial": "true"},
        "TrainDCGAN": {"batch_size": args.batch_size, "precision": args.precision, "sample_every": 0},
        # The curve during training on the split the choice is made on, at the recipe figure's n:
        # all of it.
        "EvaluateGenerator": {"training_n": 10_000, "split": CHOOSE_ON},
    }, args.set)


def recipe_task(name: str, steps: int, points: int):
    """The ``TrainDCGAN`` of recipe ``name`` for ``steps`` steps, scored ``points`` times."""
    import tasks
    every = max(1, steps // points)
    return tasks.TrainDCGAN(dataset="celeba", steps=steps, checkpoint_every=every, eval_every=every,
                            **recipe(name))


def evaluation(train, split: str):
    """The ``EvaluateGenerator`` of ``train``'s exported generator (no checkpoints) on ``split``."""
    import tasks
    return tasks.EvaluateGenerator(dataset="celeba", model=str(train.run_dir()), checkpoints=False, split=split)


def scored(evaluate, split: str) -> dict:
    """The report of the finished ``evaluate``, which must be on ``split``: EvaluateGenerator falls
    back to another split when one is missing, and the choice must never see the reported split."""
    report = json.loads(Path(evaluate.output()["json"].path).read_text())
    if report["split"] != split:
        raise SystemExit(f"bench/quality.py: {report['run_dir']} was scored on {report['split']!r}, not "
                         f"{split!r} ({report.get('split_note')})")
    return report


def time_recipes(names: list[str], folder) -> dict[str, float]:
    """Seconds per training step of each recipe on this machine, now."""
    from model.train.data import image_dataset
    from model.train.loop import step_seconds

    configs = [recipe_task(name, 10, 1).config() for name in names]
    seconds = step_seconds(configs, lambda c: image_dataset(folder, "train", c.batch_size, c.shuffle_buffer,
                                                            c.seed))
    return dict(zip(names, seconds))


def planned_seconds(names: list[str], folder, path: Path, retime: bool = False) -> dict[str, float]:
    """Seconds per step of each recipe: measured (:func:`time_recipes`) for the recipes ``path``
    does not hold yet (all of them with ``retime``), then kept there, so that running the
    benchmark again plans the same steps and finds the trained runs in place."""
    from pipeline.atomic import write_json

    known = {} if retime or not path.exists() else json.loads(path.read_text())
    missing = [n for n in names if n not in known]
    if missing:
        known.update(time_recipes(missing, folder))
        write_json(path, known)
    return {n: known[n] for n in names}


def shorter_run(train) -> Path | None:
    """The finished run of ``train``'s settings with the most steps below its own, if any
    (a ``lineage.json`` equal but for ``steps``, and its ``generator.keras`` written)."""
    from tasks.common import describe

    mine = describe(train)
    steps = int(mine["params"].pop("steps"))
    best, best_steps = None, 0
    for lineage in train.run_dir().parent.glob("*/lineage.json"):
        other = json.loads(lineage.read_text())
        theirs = int(other["params"].pop("steps", 0))
        if (other == mine and best_steps < theirs < steps
                and (lineage.parent / "generator.keras").is_file()):
            best, best_steps = lineage.parent, theirs
    return best


def publish(results: dict, folders: dict, out_dir: Path, prefix: str) -> list[str]:
    """The recipes' sample grids side by side and their FID curves, as PNGs in ``out_dir``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    out_dir.mkdir(parents=True, exist_ok=True)
    names = list(results)
    written = []
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 4.6), squeeze=False)
    for ax, name in zip(axes[0], names):
        r = results[name]
        ax.imshow(Image.open(folders[name] / "grid.png"))
        spread = f" ± {r['fid_std']:.1f}" if r.get("fid_std") is not None else ""
        ax.set_title(f"{name}\n{r['split']} FID {r['fid']:.1f}{spread}, faces {r['face_detect_rate']:.2f}, "
                     f"{r['steps']} steps", fontsize=10)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out_dir / f"{prefix}_recipes.png", dpi=100)
    plt.close(fig)
    written.append(f"{prefix}_recipes.png")

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for name in names:
        curve = results[name]["fid_over_steps"]
        steps = [s for s, _ in curve]
        fids = [f for _, f in curve]
        axes[0].plot(steps, fids, "o-", label=name)
        axes[1].plot([s * results[name]["seconds_per_step"] / 60 for s in steps], fids, "o-", label=name)
    for ax, label in zip(axes, ("step", "training minutes (steps x measured s/step)")):
        ax.set_xlabel(label)
        first = next(iter(results.values()))
        ax.set_ylabel(f"FID ({first['fid_over_steps_split']}, n={first['fid_over_steps_n']})")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("FID over training, per recipe (lower is better)", fontsize=11)
    fig.tight_layout()
    fig.savefig(out_dir / f"{prefix}_fid_curves.png", dpi=100)
    plt.close(fig)
    written.append(f"{prefix}_fid_curves.png")
    if len(names) == 1:
        folder = folders[names[0]]
        shutil.copyfile(folder / "grid.png", out_dir / f"{prefix}_grid.png")
        shutil.copyfile(folder / "fid_over_steps.png", out_dir / f"{prefix}_fid_over_steps.png")
        written += [f"{prefix}_grid.png", f"{prefix}_fid_over_steps.png"]
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="CelebA copy (img_align_celeba/ and label files)")
    parser.add_argument("--recipes", default="paper",
                        help="comma-separated recipes of model/train/recipes.py (default paper)")
    parser.add_argument("--minutes", type=float, default=60.0,
                        help="training wall-clock budget per recipe (default 60)")
    parser.add_argument("--workdir", default=str(ROOT / "processed" / "bench-quality"),
                        help="folder for this benchmark's raw/ and processed/")
    parser.add_argument("--batch-size", type=int, default=64, help="batch of the recipes that do not set their own")
    parser.add_argument("--precision", default="auto",
                        help="TrainDCGAN precision (default auto, TrainDCGAN's default)")
    parser.add_argument("--steps", type=int, default=0,
                        help="train every recipe exactly this many steps instead of timing --minutes "
                             "(re-runs of a finished benchmark then find every output in place)")
    parser.add_argument("--retime", action="store_true",
                        help="measure the step times again instead of using those kept in the workdir's "
                             "step_seconds.json (new times: new step counts, new runs)")
    parser.add_argument("--extend", action="store_true",
                        help="start each recipe's run from its finished shorter run in the workdir (same "
                             "settings, fewer steps) when there is one: after --minutes 20, --minutes 40 "
                             "trains only the second 20 minutes (resume is exact: model.train.loop.continue_run)")
    parser.add_argument("--points", type=int, default=6, help="FID evaluations during training per recipe")
    parser.add_argument("--workers", type=int, default=2, help="Luigi workers for alignment")
    parser.add_argument("--publish", default="", help="write the grids and FID curves into this folder")
    parser.add_argument("--prefix", default="quality", help="file name prefix of the published images")
    luigi_bench.add_set_option(parser)
    args = parser.parse_args(argv)
    try:
        names = parse_recipes(args.recipes)
    except ValueError as exc:
        raise SystemExit(f"--recipes: {exc}") from None
    os.chdir(ROOT)
    configure(args)
    load_before = os.getloadavg()

    import tasks
    from model.cpu import cpu_model
    from model.eval.evaluation import read_eval_csv
    log = lambda text: print(f"[quality] {text}", file=sys.stderr, flush=True)  # noqa: E731

    records = tasks.BuildTFRecords(dataset="celeba")
    prep_minutes = build(records, args.workers)
    splits = json.loads(Path(records.output().path).read_text())["splits"]
    log(f"records ready in {prep_minutes:.1f} min: {splits}")
    from model.eval.evaluation import split_sizes
    sizes = split_sizes(records.folder())
    if min(sizes.get(CHOOSE_ON, 0), sizes.get(REPORT_ON, 0)) < 2:
        raise SystemExit(f"bench/quality.py: the records {records.folder()} need a {CHOOSE_ON!r} split to choose "
                         f"on and a {REPORT_ON!r} split to report on, 2 or more faces each; they have {sizes}: "
                         f"set --set BuildTFRecords.splits=train=0.8,validation=0.1,test=0.1")

    if args.steps:
        step_s, steps = dict.fromkeys(names), dict.fromkeys(names, args.steps)
    else:
        step_s = planned_seconds(names, records.folder(), Path(args.workdir) / "step_seconds.json", args.retime)
        steps = {n: max(3, int(args.minutes * 60 / s)) for n, s in step_s.items()}
        log(", ".join(f"{n}: {s:.3f} s/step -> {steps[n]} steps" for n, s in step_s.items())
            + f" for {args.minutes} min each")

    results, folders, trains, reports = {}, {}, {}, {}
    for name in names:
        train = recipe_task(name, steps[name], args.points)
        shorter = shorter_run(train) if args.extend and not train.complete() else None
        if shorter is not None and not (train.run_dir() / "ckpt").exists():
            from model.train.loop import continue_run
            log(f"{name}: continues {shorter.name} from step {continue_run(shorter, train.run_dir())}")
        train_minutes = build(train)
        evals = read_eval_csv(train.run_dir() / "eval.csv")
        eval_minutes_in_training = sum(e["seconds"] for e in evals) / 60
        log(f"{name}: trained {steps[name]} steps in {train_minutes:.1f} min "
            f"({eval_minutes_in_training:.1f} of them evaluating)")
        evaluate = evaluation(train, CHOOSE_ON)
        eval_minutes = build(evaluate)
        report = scored(evaluate, CHOOSE_ON)
        trains[name], reports[name] = train, report
        folders[name] = Path(evaluate.output()["json"].path).parent
        results[name] = {
            "settings": recipe(name), "batch_size": train.config().batch_size,  # a recipe may set its own
            # figures of an evaluation made before the FID's spread existed lack it: None
            **{k: report.get(k) for k in FIGURES}, "steps": report["steps"], "weights": report["weights"],
            "seconds_per_step": round(step_s[name], 4) if step_s[name] else None,
            "continued_from": str(shorter) if shorter else None,
            "minutes": round(train_minutes, 2),
            "minutes_training_only": round(train_minutes - eval_minutes_in_training, 2),
            "eval_minutes": round(eval_minutes, 2),
            "fid_over_steps": [[e["step"], round(e["fid"], 2)] for e in evals],
            # the split and n of the curve (a run trained before the curve moved to validation: test)
            "fid_over_steps_split": evals[-1]["split"] if evals else None,
            "fid_over_steps_n": evals[-1]["n"] if evals else None,
            "report": str(folders[name] / "report.md"),
        }
        log(f"{name}: {CHOOSE_ON} FID {report['fid']:.2f}, face rate {report['face_detect_rate']:.3f}")

    winner = min(results, key=lambda n: results[n]["fid"])
    best = results[winner]
    final = evaluation(trains[winner], REPORT_ON)  # after the choice, on faces it never saw
    test_eval_minutes = build(final)
    test = scored(final, REPORT_ON)
    log(f"winner {winner} ({CHOOSE_ON} FID {best['fid']:.2f}): {REPORT_ON} FID {test['fid']:.2f}")
    out = {
        "recipes": results, "winner": winner, "chosen_on": CHOOSE_ON, "reported_on": REPORT_ON,
        "winner_validation": {k: best[k] for k in FIGURES},
        **{k: test.get(k) for k in FIGURES}, "steps": test["steps"], "minutes": best["minutes"],
        "real_face_detect_rate": test["real"].get("face_detect_rate"), "real_ms_ssim": test["real"].get("ms_ssim"),
        "real_validation": {k: reports[winner]["real"].get(k) for k in ("face_detect_rate", "ms_ssim")},
        "test_eval_minutes": round(test_eval_minutes, 2),
        "budget_minutes": None if args.steps else args.minutes, "batch_size": best["batch_size"],
        "precision": test["precision"], "split_note": test["split_note"], "split_sizes": sizes,
        "feature_runner": test.get("feature_runner"),
        "cpu": cpu_model(), "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()], "prep_minutes": round(prep_minutes, 2),
    }
    if args.publish:
        out["published"] = publish(results, folders, Path(args.publish), args.prefix)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
