"""bench/capsnet.py's judgement of when a classifier-FID curve has flattened (the claims are
judged only then), on a measured curve and on made ones."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import capsnet  # noqa: E402

#: The CNN DCGAN on all of MNIST, batch 32, every 250 steps to 2,000 (2026-12-04, AVX2 EPYC):
#: still falling, 8.7% in its last 250 steps.
MEASURED = [320.08, 252.37, 212.91, 194.50, 170.25, 152.27, 148.46, 135.48]


def test_a_curve_still_falling_has_not_flattened():
    assert not capsnet.flat(MEASURED)
    assert not capsnet.flat(MEASURED[:-1] + [148.0, 135.0])  # one small step is not enough


def test_a_curve_level_over_its_last_intervals_has_flattened():
    level = MEASURED + [131.0, 129.5]  # 3.3% then 1.1%
    assert capsnet.flat(level)
    assert capsnet.flat([100.0, 104.9, 100.0])  # up or down, within 5% of the value before
    assert not capsnet.flat([100.0, 100.0])  # fewer evaluations than the rule needs
    assert not capsnet.flat([100.0, 100.0, 106.0])


def test_summarize_reports_the_rule(tmp_path):
    (tmp_path / "result.json").write_text('{"seconds": 100.0}')
    rows = "".join(f"{250 * (i + 1)},{fid},1.0\n" for i, fid in enumerate(MEASURED))
    (tmp_path / "eval.csv").write_text("step,fid,seconds\n" + rows)
    run = capsnet.summarize(tmp_path, 2000)
    assert run["flattened"] is False and run["fid"] == MEASURED[-1] and len(run["curve"]) == 8
    assert run["s_per_step"] == round((100.0 - 8.0) / 2000, 4)
