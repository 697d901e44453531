"""What the Luigi-driven benchmarks share: their settings on top of the repository's
luigi.cfg, and one local-scheduler build that fails loudly.

    from luigi_bench import configure, build
    configure(workdir, {"TrainDCGAN": {"steps": 100}})
    minutes = build(tasks.TrainDCGAN(dataset="celeba"))
"""
from __future__ import annotations

import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def configure(workdir: str | Path, settings: dict[str, dict]) -> None:
    """Load ``luigi.cfg``, put ``[paths]`` raw/processed under ``workdir`` and set
    ``settings`` (``{section: {key: value}}``, values as str())."""
    import luigi.configuration

    luigi.configuration.add_config_path(str(ROOT / "luigi.cfg"))
    config = luigi.configuration.get_config()
    work = Path(workdir).resolve()
    for section, values in {"paths": {"raw": work / "raw", "processed": work / "processed"}, **settings}.items():
        if not config.has_section(section):
            config.add_section(section)
        for key, value in values.items():
            config.set(section, key, str(value))


def build(task, workers: int = 1) -> float:
    """Run ``task`` (and what it needs) with a local scheduler; minutes taken. A failure
    exits with Luigi's summary."""
    import luigi
    from luigi.execution_summary import LuigiStatusCode

    start = time.time()
    result = luigi.build([task], local_scheduler=True, workers=workers, detailed_summary=True)
    if result.status not in (LuigiStatusCode.SUCCESS, LuigiStatusCode.SUCCESS_WITH_RETRY):
        raise SystemExit(f"{task.task_id} failed:\n{result.summary_text}")
    return (time.time() - start) / 60
