"""bench/studio.py runs to its JSON line, its --mixed phases included: a smoke run against a tiny
generator (tests/studio_runs.py), one edit client and one client completing back to back, one
second per phase. The figures mean nothing here; that they are there, and that the heavy
client's completions ran by the method asked, does."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from studio_runs import make_run

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_studio_bench_measures_edits_beside_completions(zygote, tmp_path):
    run = make_run(tmp_path / "models" / "celeba" / "dcgan-a")
    proc = zygote.run(["bench/studio.py", "--model", run, "--seconds", "1", "--clients", "1", "--mixed", "1",
                       "--ramp-seconds", "0.5", "--max-batch", "2"],
                      ROOT, dict(os.environ), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])

    assert result["clients_1"]["requests"] > 0 and result["forward_batch1_ms"] > 0
    assert result["clients_1"]["ramp"]["requests"] > 0 and result["clients_1"]["ramp"]["errors"] == 0
    assert (result["max_batch"], result["ramp_seconds"]) == (2, 0.5)
    mixed = result["mixed"]
    assert (mixed["edit_clients"], mixed["heavy_clients"], mixed["heavy_method"]) == (1, 1, "search")
    for edits in (mixed["edits_alone"], mixed["together"]["edits"]):
        assert edits["requests"] > 0 and edits["errors"] == 0 and edits["p99_ms"] >= edits["p50_ms"] > 0
    for heavy in (mixed["heavy_alone"], mixed["together"]["heavy"]):
        assert heavy["completions"] >= 1 and heavy["errors"] == 0 and heavy["methods"] == ["search"]
        assert heavy["p99_ms"] >= heavy["p50_ms"] > 0
    assert mixed["edit_p50_ratio"] > 0 and mixed["heavy_p50_ratio"] > 0
    assert set(result["checks"]) >= {"mixed_edit_p99_ms", "mixed_no_errors"} and result["checks"]["mixed_no_errors"]
