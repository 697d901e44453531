"""Seconds per DCGAN training step on one worker and on two (MultiWorkerMirroredStrategy,
TF_CONFIG, two processes on 127.0.0.1), at the same global batch.

    python bench/multiworker.py [--batch 16] [--base-width 32] [--precision auto]
                                [--warmup 3] [--timed 5] [--rounds 3] [--alternations 2]

Each measurement is a process (or two, the workers) that makes the strategy first, then
times ``model.train.loop.step_seconds``: the training step on in-memory global batches
(``--batch``, split over the replicas), ``--warmup`` untimed steps, then ``--rounds`` rounds of
``--timed`` steps, the median round. One worker and two workers alternate ``--alternations``
times, each keeps its best (so both come from the same stretch of machine time); the load
average is recorded at the start and the end.

Both workers of a two-worker run on ONE machine share its cores: on a 2-core machine that
measures the cost of the collectives and of splitting the batch (correctness, not speed);
on two machines each worker has cores of its own. Prints one JSON line: ``one_worker_s``,
``two_workers_s`` (seconds per global step; two workers: the slower worker), ``ratio``
(two over one), ``images_per_s`` of each, the settings, the load averages and the CPU count.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys

from luigi_bench import free_ports

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
TIMEOUT = 900  # seconds per measurement, a hard limit (the process groups are killed)


def worker(args) -> None:
    """One process of a measurement: the strategy first (TF_CONFIG, if set), then the timing."""
    sys.path.insert(0, ROOT)
    from pipeline.console import quiet_start
    quiet_start()
    from model.train.distribute import make_strategy
    make_strategy()  # before any other TensorFlow op (a multi-worker strategy requires it)
    import numpy as np
    import tensorflow as tf

    from model.train.loop import TrainConfig, step_seconds

    config = TrainConfig(batch_size=args.batch, base_width=args.base_width, precision=args.precision, seed=0)
    images = np.random.default_rng(0).uniform(-1, 1, (args.batch * 4, 64, 64, 3)).astype("float32")

    def batches(_config):
        return tf.data.Dataset.from_tensor_slices(images).batch(args.batch).repeat()

    (seconds,) = step_seconds([config], batches, warmup=args.warmup, timed=args.timed, rounds=args.rounds)
    print(json.dumps({"seconds_per_step": seconds}), flush=True)


def measure(args, workers: int) -> float:
    """Seconds per global step with ``workers`` processes (the slowest one's)."""
    ports = free_ports(workers) if workers > 1 else []
    procs = []
    try:
        for index in range(workers):
            env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
            if workers > 1:
                env["TF_CONFIG"] = json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                                               "task": {"type": "worker", "index": index}})
            cmd = [sys.executable, os.path.abspath(__file__), "--worker", *sys.argv[1:]]
            procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                          start_new_session=True))
        outputs = [p.communicate(timeout=TIMEOUT) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    seconds = []
    for p, (out, err) in zip(procs, outputs):
        if p.returncode != 0:
            raise SystemExit(f"a worker exited {p.returncode}:\n{err[-3000:]}")
        seconds.append(json.loads(out.strip().splitlines()[-1])["seconds_per_step"])
    return max(seconds)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=16, help="Global batch (split over the workers).")
    p.add_argument("--base-width", type=int, default=32)
    p.add_argument("--precision", default="auto")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--timed", type=int, default=5)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--alternations", type=int, default=2)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    load_start = os.getloadavg()[0]
    one, two = [], []
    for _ in range(args.alternations):
        one.append(measure(args, 1))
        two.append(measure(args, 2))
    one_s, two_s = min(one), min(two)
    print(json.dumps({
        "one_worker_s": round(one_s, 4), "two_workers_s": round(two_s, 4), "ratio": round(two_s / one_s, 3),
        "images_per_s": {"one_worker": round(args.batch / one_s, 1), "two_workers": round(args.batch / two_s, 1)},
        "all_one_worker_s": [round(s, 4) for s in one], "all_two_workers_s": [round(s, 4) for s in two],
        "batch": args.batch, "base_width": args.base_width, "precision": args.precision,
        "cpus": os.cpu_count(), "load_avg_start": round(load_start, 2), "load_avg_end": round(os.getloadavg()[0], 2),
    }))


if __name__ == "__main__":
    main()
