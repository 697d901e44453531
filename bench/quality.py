"""Quality benchmark: the whole DAG on a CelebA copy for a fixed wall-clock training budget.

    python bench/quality.py --data ../shared/data/celeba [--minutes 60] [--workdir processed/bench-quality]
        [--precision auto] [--batch-size 64] [--steps N] [--publish docs/images]

Runs the project's own Luigi tasks through a local scheduler, in a work folder
of its own (``[paths]`` raw/processed under ``--workdir``):

1. ``BuildTFRecords --dataset celeba`` (DownloadCelebA with ``local_dir=--data``,
   ``allow_partial=true``, then DetectAlignFaces): align and write records;
2. measures the training step on this machine (a few steps of the same
   configuration after a warm-up) and sets ``TrainDCGAN --steps`` so that
   training takes about ``--minutes`` (or takes ``--steps`` as given); checkpoints
   at a third, two thirds and the end;
3. ``TrainDCGAN``, then ``EvaluateGenerator`` (defaults: the held-out split, all of
   it up to 10k images, every kept checkpoint).

Prints one JSON line last: fid, kid, face_detect_rate, ms_ssim (and the real
split's face rate and MS-SSIM for scale), steps, minutes (training wall clock),
the split and n, and where the report is. ``--publish DIR`` copies the sample
grid and the FID-over-steps plot there as ``quality_grid.png`` and
``quality_fid_over_steps.png``. There is no threshold: the figure is the baseline.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def configure(args) -> None:
    """Point Luigi at the repository's luigi.cfg plus this benchmark's settings."""
    import luigi.configuration
    luigi.configuration.add_config_path(str(ROOT / "luigi.cfg"))
    config = luigi.configuration.get_config()
    work = Path(args.workdir).resolve()
    settings = {
        "paths": {"raw": work / "raw", "processed": work / "processed"},
        "DownloadCelebA": {"local_dir": Path(args.data).resolve(), "allow_partial": "true"},
        "TrainDCGAN": {"batch_size": args.batch_size, "precision": args.precision, "sample_every": 0,
                       "eval_every": 0},
    }
    for section, values in settings.items():
        if not config.has_section(section):
            config.add_section(section)
        for key, value in values.items():
            config.set(section, key, str(value))


def build(task, workers: int = 1) -> float:
    """Run ``task`` (and what it needs) with a local scheduler; minutes taken."""
    import luigi
    from luigi.execution_summary import LuigiStatusCode
    start = time.time()
    result = luigi.build([task], local_scheduler=True, workers=workers, detailed_summary=True)
    if result.status not in (LuigiStatusCode.SUCCESS, LuigiStatusCode.SUCCESS_WITH_RETRY):
        raise SystemExit(f"{task.task_id} failed:\n{result.summary_text}")
    return (time.time() - start) / 60


def seconds_per_step(train_task, warmup: int = 3, timed: int = 8) -> float:
    """Wall-clock seconds of one training step of ``train_task``'s configuration
    on its records (the input pipeline included), after ``warmup`` steps."""
    from model.data import image_dataset
    from model.train import GANTrainer, make_strategy

    config = train_task.config()
    strategy = make_strategy()
    trainer = GANTrainer(config, strategy)
    data = image_dataset(train_task.requires().folder(), "train", config.batch_size,
                         config.shuffle_buffer, config.seed)
    batches = iter(strategy.experimental_distribute_dataset(data.take(warmup + timed)))
    for _ in range(warmup):
        trainer.train_step(next(batches))["d_loss"].numpy()
    start = time.time()
    for _ in range(timed):
        out = trainer.train_step(next(batches))
    out["d_loss"].numpy()
    return (time.time() - start) / timed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="CelebA copy (img_align_celeba/ and label files)")
    parser.add_argument("--minutes", type=float, default=60.0, help="training wall-clock budget (default 60)")
    parser.add_argument("--workdir", default=str(ROOT / "processed" / "bench-quality"),
                        help="folder for this benchmark's raw/ and processed/")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--precision", default="auto",
                        help="TrainDCGAN precision (default auto, TrainDCGAN's default)")
    parser.add_argument("--steps", type=int, default=0,
                        help="train exactly this many steps instead of timing --minutes (re-runs of a "
                             "finished benchmark then find every output in place)")
    parser.add_argument("--workers", type=int, default=2, help="Luigi workers for alignment")
    parser.add_argument("--publish", default="", help="copy the grid and FID plot into this folder")
    args = parser.parse_args(argv)
    os.chdir(ROOT)
    configure(args)

    import tasks
    log = lambda text: print(f"[quality] {text}", file=sys.stderr, flush=True)  # noqa: E731

    records = tasks.BuildTFRecords(dataset="celeba")
    prep_minutes = build(records, args.workers)
    splits = json.loads(Path(records.output().path).read_text())["splits"]
    log(f"records ready in {prep_minutes:.1f} min: {splits}")

    if args.steps:
        step_s, steps = None, args.steps
    else:
        step_s = seconds_per_step(tasks.TrainDCGAN(dataset="celeba"))
        steps = max(3, int(args.minutes * 60 / step_s))
        log(f"{step_s:.3f} s/step -> {steps} steps for {args.minutes} min")
    import luigi.configuration
    config = luigi.configuration.get_config()
    config.set("TrainDCGAN", "steps", str(steps))
    config.set("TrainDCGAN", "checkpoint_every", str(max(1, steps // 3)))
    from luigi.task_register import Register
    Register.clear_instance_cache()

    train = tasks.TrainDCGAN(dataset="celeba")
    train_minutes = build(train)
    log(f"trained {steps} steps in {train_minutes:.1f} min")
    evaluate = tasks.EvaluateGenerator(dataset="celeba")
    eval_minutes = build(evaluate)
    report = json.loads(Path(evaluate.output()["json"].path).read_text())
    folder = Path(evaluate.output()["json"].path).parent
    if args.publish:
        Path(args.publish).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(folder / "grid.png", Path(args.publish) / "quality_grid.png")
        shutil.copyfile(folder / "fid_over_steps.png", Path(args.publish) / "quality_fid_over_steps.png")
    print(json.dumps({
        "fid": report["fid"], "kid": report["kid"], "face_detect_rate": report["face_detect_rate"],
        "ms_ssim": report["ms_ssim"], "real_face_detect_rate": report["real"].get("face_detect_rate"),
        "real_ms_ssim": report["real"].get("ms_ssim"), "steps": report["steps"],
        "minutes": round(train_minutes, 2), "budget_minutes": args.minutes,
        "seconds_per_step": round(step_s, 4) if step_s else None, "batch_size": args.batch_size,
        "precision": report["precision"],
        "split": report["split"], "n": report["n"], "split_note": report["split_note"],
        "fid_over_steps": [[p["step"], round(p["fid"], 2)] for p in report["checkpoints"]],
        "prep_minutes": round(prep_minutes, 2), "eval_minutes": round(eval_minutes, 2),
        "report": str(folder / "report.md")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
