"""What one core does per image in each stage, and what the central scheduler costs per task:
the figures docs/scale.md scales to N machines.

    .venv/bin/python bench/scale.py [--n 256] [--celeba ../shared/data/celeba]
                                    [--scheduler-tasks 500,2000,5000]

1. Stages, one worker process, one alignment process (``jobs 1``), local scheduler: Sample
   makes ``--n`` photos, DetectAlignFaces aligns them, BuildTFRecords writes their records;
   with ``--celeba DIR`` (a CelebA copy, partial allowed) the same two on its photos
   (178x218 crops) after DownloadCelebA. Each stage's time is the sum of its tasks' run times
   as Luigi measures them (Event.PROCESSING_TIME: no start-up, no scheduling), over the
   stage's images: ``{stage}_s_per_image``.
2. The scheduler: ``All(n)``, a wrapper of ``n`` tasks that each write an empty file, run by
   one worker against a real ``luigid`` on 127.0.0.1 with the repository's settings
   (deploy/luigid.cfg, task history on, state and database in the work folder) and, as the
   peer, against the in-process local scheduler. ``scheduler_ms_per_task`` is the wall time per
   task (scheduling, every RPC, the history database, the run), by ``n``: growing with ``n``
   means the per-task cost is not constant (each get_work walks the pending tasks).
   ``luigid_cpu_ms_per_task`` is the scheduler process's own CPU time per task (from
   /proc/<pid>/stat): what it spends per task however many workers ask, a lower bound of its
   serial cost (its SQLite commits wait on the disk besides).

3. ``projection``: hours to align and write the records of 200,000 CelebA crops (the CelebA
   figures; the sample photos' without ``--celeba``) and of 1,280,000 photos the size of the
   sample photos (0.38 MP on average; ImageNet's are about 0.2 MP), on 1, 10 and 100 machines of 16 cores, from
   the per-core figures above (docs/scale.md states the model): ``--project-shard-size``
   photos a shard, so ``shards`` AlignShard and as many RecordShard tasks; each stage takes
   ``ceil(shards / (machines x 16))`` rounds of one shard's time on one core, or, when longer,
   its tasks times the scheduler's ms per task against luigid (it serves tasks one at a time).
   Not counted: moving data to and from object storage, start-up, the training.

Prints one JSON line; the load average is recorded at the start and the end.
"""
from __future__ import annotations

import argparse
import configparser
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(__file__)))
import luigi  # noqa: E402
from luigi_bench import ROOT, configure, cpu_seconds, free_port  # noqa: E402

from model.cpu import cpu_model  # noqa: E402


class Touch(luigi.Task):
    """A task with nothing to do but write an empty file: what the scheduler costs per task."""
    i = luigi.IntParameter()
    root = luigi.Parameter()

    def output(self):
        return luigi.LocalTarget(os.path.join(self.root, f"{self.i}"))

    def run(self):
        with self.output().open("w"):
            pass


class All(luigi.WrapperTask):
    n = luigi.IntParameter()
    root = luigi.Parameter()

    def requires(self):
        return [Touch(i=i, root=self.root) for i in range(self.n)]


def run_stage(task) -> None:
    """Build ``task`` with one worker on the local scheduler (its tasks' run times go to the
    PROCESSING_TIME handlers)."""
    from luigi.execution_summary import LuigiStatusCode

    result = luigi.build([task], local_scheduler=True, workers=1, detailed_summary=True)
    if result.status not in (LuigiStatusCode.SUCCESS, LuigiStatusCode.SUCCESS_WITH_RETRY):
        raise SystemExit(f"{task.task_id} failed:\n{result.summary_text}")


def stage_costs(work: Path, n: int, celeba: str | None, shard_size: int) -> dict:
    from luigi.task_register import Register

    import tasks
    from tasks.raw import raw_task

    times: dict[str, float] = defaultdict(float)

    @luigi.Task.event_handler(luigi.Event.PROCESSING_TIME)
    def timed(task, seconds):
        times[task.get_task_family()] += seconds

    out = {}
    settings = {"Sample": {"n": n}, "DetectAlignFaces": {"jobs": 1, "shard_size": shard_size}}
    if celeba:
        settings["DownloadCelebA"] = {"local_dir": celeba, "allow_partial": "true"}
    configure(work, settings)  # once: configure() re-reads luigi.cfg, dropping earlier settings
    Register.clear_instance_cache()
    stages = [("sample", "sample", tasks.Sample(), ("Sample",)),
              ("align_sample", "sample", tasks.DetectAlignFaces(dataset="sample"), ("AlignShard", "DetectAlignFaces")),
              ("records_sample", "sample", tasks.BuildTFRecords(dataset="sample"), ("RecordShard", "BuildTFRecords"))]
    if celeba:
        stages += [("align_celeba", "celeba", tasks.DetectAlignFaces(dataset="celeba"),
                    ("AlignShard", "DetectAlignFaces")),
                   ("records_celeba", "celeba", tasks.BuildTFRecords(dataset="celeba"),
                    ("RecordShard", "BuildTFRecords"))]
    for stage, dataset, task, families in stages:
        if dataset == "celeba" and stage == "align_celeba":
            run_stage(tasks.DownloadCelebA())  # untimed: the copy is used in place
        times.clear()
        run_stage(task)
        images = len(raw_task(dataset).source().keys())
        seconds = sum(times[f] for f in families)
        out[f"{stage}_images"] = images
        out[f"{stage}_s"] = round(seconds, 2)
        out[f"{stage}_s_per_image"] = round(seconds / images, 5)
    luigi.Task._event_callbacks[luigi.Task][luigi.Event.PROCESSING_TIME].discard(timed)
    return out


def _luigid(work: Path) -> tuple[subprocess.Popen, int]:
    """luigid on 127.0.0.1 with deploy/luigid.cfg, its state and history moved into ``work``."""
    config = configparser.ConfigParser(interpolation=None)
    config.read(ROOT / "deploy" / "luigid.cfg")
    config["scheduler"]["state_path"] = str(work / "state.pickle")
    config["task_history"]["db_connection"] = f"sqlite:///{work / 'task-history.db'}"
    with open(work / "luigid.cfg", "w") as fh:
        config.write(fh)
    port = free_port()
    exe = Path(sys.executable).with_name("luigid")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-c", "from luigi.cmdline import luigid; luigid()"]
    env = {**os.environ, "LUIGI_CONFIG_PATH": str(work / "luigid.cfg")}
    proc = subprocess.Popen([*cmd, "--port", str(port), "--address", "127.0.0.1"], cwd=work, env=env,
                            stdout=open(work / "luigid.log", "w"), stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"luigid exited: {(work / 'luigid.log').read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc, port
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit("luigid did not start listening") from None
            time.sleep(0.1)


def scheduler_costs(work: Path, counts: list[int]) -> tuple[dict, dict]:
    from luigi.execution_summary import LuigiStatusCode

    out: dict[str, dict] = {"luigid": {}, "local": {}}
    cpu: dict[str, float] = {}
    proc, port = _luigid(work)
    try:
        for n in counts:
            for kind in ("luigid", "local"):
                cpu_before = cpu_seconds(proc.pid)
                root = work / f"touch-{kind}-{n}"
                root.mkdir()
                where = {"local_scheduler": True} if kind == "local" else {"scheduler_host": "127.0.0.1",
                                                                          "scheduler_port": port}
                start = time.perf_counter()
                result = luigi.build([All(n=n, root=str(root))], workers=1, detailed_summary=True, **where)
                seconds = time.perf_counter() - start
                if result.status != LuigiStatusCode.SUCCESS:
                    raise SystemExit(f"All({n}) against {kind} failed:\n{result.summary_text}")
                out[kind][str(n)] = round(1000 * seconds / n, 2)
                if kind == "luigid":
                    cpu[str(n)] = round(1000 * (cpu_seconds(proc.pid) - cpu_before) / n, 2)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    return out, cpu


def projection(result: dict, shard_size: int, cores: int = 16, machines=(1, 10, 100)) -> dict:
    """Hours per case and machine count from the measured per-core figures (the module's doc)."""
    align = result.get("align_celeba_s_per_image", result["align_sample_s_per_image"])
    records = result.get("records_celeba_s_per_image", result["records_sample_s_per_image"])
    per_task = max(result.get("scheduler_ms_per_task", {}).get("luigid", {"0": 0}).values()) / 1000
    cases = {"200000_celeba" if "align_celeba_s_per_image" in result else "200000_sample": (200_000, align, records),
             "1280000_photos": (1_280_000, result["align_sample_s_per_image"], result["records_sample_s_per_image"])}
    out = {}
    for name, (images, align_s, records_s) in cases.items():
        shards = math.ceil(images / shard_size)
        row = {"shard_size": shard_size, "tasks": 2 * shards}
        for m in machines:
            rounds = math.ceil(shards / (m * cores))
            seconds = sum(max(rounds * shard_size * cost, shards * per_task) for cost in (align_s, records_s))
            row[str(m)] = round(seconds / 3600, 3)
        out[name] = row
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=256, help="sample photos (default: %(default)s)")
    parser.add_argument("--shard-size", type=int, default=128, help="photos per aligned shard (default: %(default)s)")
    parser.add_argument("--celeba", help="a CelebA copy to align too (e.g. ../shared/data/celeba)")
    parser.add_argument("--scheduler-tasks", default="500,2000,5000",
                        help="task counts of the scheduler runs, comma separated ('' = none; default: %(default)s)")
    parser.add_argument("--work", help="folder to work in (default: a temporary one, removed)")
    parser.add_argument("--project-shard-size", type=int, default=1024,
                        help="photos a shard in the projection (default: %(default)s)")
    args = parser.parse_args()
    import logging
    logging.getLogger("luigi-interface").setLevel(logging.WARNING)

    work = Path(args.work or tempfile.mkdtemp(prefix="bench-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    result = {"cpu": cpu_model(), "cores": os.cpu_count(), "load_avg_start": round(os.getloadavg()[0], 2)}
    try:
        result.update(stage_costs(work / "stages", args.n, args.celeba, args.shard_size))
        counts = [int(c) for c in args.scheduler_tasks.split(",") if c.strip()]
        if counts:
            (work / "scheduler").mkdir()
            result["scheduler_ms_per_task"], result["luigid_cpu_ms_per_task"] = scheduler_costs(
                work / "scheduler", counts)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    result["projection"] = projection(result, args.project_shard_size)
    result["load_avg_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
