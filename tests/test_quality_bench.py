"""bench/quality.py --extend: which finished run a longer run of a recipe continues."""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import quality  # noqa: E402

from tasks.common import describe  # noqa: E402


def _run(task, finished: bool = True) -> Path:
    """A run folder of ``task`` as TrainDCGAN leaves it: its lineage, and generator.keras when done."""
    folder = task.run_dir()
    folder.mkdir(parents=True)
    (folder / "lineage.json").write_text(json.dumps(describe(task)))
    if finished:
        (folder / "generator.keras").write_bytes(b"")
    return folder


def test_a_longer_run_continues_the_longest_finished_shorter_run_of_its_recipe(luigi_config):
    longer = quality.recipe_task("ema", 300, 6)
    assert quality.shorter_run(longer) is None
    first = _run(quality.recipe_task("ema", 100, 6))
    best = _run(quality.recipe_task("ema", 200, 4))        # the checkpoint spacing is no setting
    _run(quality.recipe_task("ema", 250, 6), finished=False)  # killed: nothing to continue from
    _run(quality.recipe_task("paper", 280, 6))              # another recipe
    _run(quality.recipe_task("ema", 400, 6))                # longer, not shorter
    assert quality.shorter_run(longer) == best
    assert quality.shorter_run(quality.recipe_task("ema", 150, 6)) == first
    assert quality.shorter_run(quality.recipe_task("ema+augment", 300, 6)) is None
