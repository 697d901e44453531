"""What the Luigi-driven benchmarks share: their settings on top of the repository's
luigi.cfg, and one local-scheduler build that fails loudly.

    from luigi_bench import configure, build
    configure(workdir, {"TrainDCGAN": {"steps": 100}})
    minutes = build(tasks.TrainDCGAN(dataset="celeba"))

``add_set_option(parser)`` gives a benchmark ``--set SECTION.KEY=VALUE`` (repeatable): any
luigi.cfg setting, over the benchmark's own; ``configure(workdir, settings, args.set)``
applies them. tests/test_bench_smoke.py runs the benchmarks tiny that way (small networks,
a small feature network for FID, few samples).
"""
from __future__ import annotations

import argparse
import os
import socket
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def setting(text: str) -> tuple[str, str, str]:
    """``"Section.key=value"`` -> ``(section, key, value)``, for ``--set``."""
    name, equals, value = text.partition("=")
    section, dot, key = name.strip().partition(".")
    if not equals or not dot or not section or not key:
        raise argparse.ArgumentTypeError(f"expected SECTION.KEY=VALUE (a luigi.cfg setting, e.g. "
                                         f"EvaluateGenerator.face_n=16), got {text!r}")
    return section, key.replace("-", "_"), value


def add_set_option(parser: argparse.ArgumentParser) -> None:
    """``--set SECTION.KEY=VALUE``, repeatable, into ``args.set``."""
    parser.add_argument("--set", action="append", default=[], type=setting, metavar="SECTION.KEY=VALUE",
                        help="any luigi.cfg setting, over the benchmark's own (repeatable), e.g. "
                             "--set EvaluateGenerator.feature_network=features.keras --set TrainDCGAN.base_width=8")


def configure(workdir: str | Path, settings: dict[str, dict], overrides=()) -> None:
    """Load ``luigi.cfg``, put ``[paths]`` raw/processed under ``workdir`` and set
    ``settings`` (``{section: {key: value}}``, values as str()), then ``overrides``
    (``(section, key, value)`` triples: ``--set``)."""
    import luigi.configuration

    luigi.configuration.add_config_path(str(ROOT / "luigi.cfg"))
    config = luigi.configuration.get_config()
    work = Path(workdir).resolve()
    merged = {section: dict(values) for section, values in settings.items()}
    for section, key, value in overrides:
        merged.setdefault(section, {})[key] = value
    for section, values in {"paths": {"raw": work / "raw", "processed": work / "processed"}, **merged}.items():
        if not config.has_section(section):
            config.add_section(section)
        for key, value in values.items():
            config.set(section, key, str(value))


def build(task, workers: int = 1) -> float:
    """Run ``task`` (or a list of tasks, ``workers`` at once) and what it needs with a local
    scheduler; minutes taken. A failure exits with Luigi's summary."""
    import luigi
    from luigi.execution_summary import LuigiStatusCode

    todo = list(task) if isinstance(task, (list, tuple)) else [task]
    start = time.time()
    result = luigi.build(todo, local_scheduler=True, workers=workers, detailed_summary=True)
    if result.status not in (LuigiStatusCode.SUCCESS, LuigiStatusCode.SUCCESS_WITH_RETRY):
        raise SystemExit(f"{', '.join(t.task_id for t in todo)} failed:\n{result.summary_text}")
    return (time.time() - start) / 60


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports free on 127.0.0.1 right now (all held until chosen)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 (for a server a benchmark starts)."""
    return free_ports(1)[0]


def wait_for_port(port: int, proc, what: str, timeout: float = 60) -> None:
    """Return once something listens on 127.0.0.1:``port``; exit if ``proc`` (the server's
    ``Popen``) ends first or ``timeout`` s pass."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"{what} did not start listening") from None
            time.sleep(0.1)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
