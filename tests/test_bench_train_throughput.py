"""bench/train_throughput.py finishes on every CPU kind: a smoke run at --tiny settings on a
pretended CPU without bfloat16 units (FACEGAN_CPU_FLAGS) skips mixed_bfloat16 with the reason,
times float32, and reports its GFLOP/s against the FMA peak model/cpu.py computes (here from
FACEGAN_CPU_GHZ and FACEGAN_FMA_UNITS, so the figure is checked exactly)."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
AVX2_ONLY = "fpu sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2"


@pytest.mark.slow
def test_tiny_run_on_a_cpu_without_bfloat16_skips_it_with_the_reason(zygote):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACEGAN_")}
    env.update(FACEGAN_CPU_FLAGS=AVX2_ONLY, FACEGAN_CPU_GHZ="2.0", FACEGAN_FMA_UNITS="2")
    proc = zygote.run(["bench/train_throughput.py", "--tiny"], ROOT, env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])

    cpu = result["cpu"]
    assert (cpu["isa"], cpu["lanes"], cpu["fma_units"], cpu["flop_per_cycle"]) == ("avx2", 8, 2, 32)
    assert cpu["clock_source"] == "FACEGAN_CPU_GHZ" and cpu["flags_from"] == "FACEGAN_CPU_FLAGS"
    assert cpu["bf16_units"] == [] and cpu["bf16_peak_gflops"] is None
    assert result["fma_peak_gflops"] == pytest.approx(cpu["cores"] * 2.0 * 32, abs=0.1)

    assert "no bfloat16 units" in result["skipped"]["mixed_bfloat16"]
    assert "--force-precisions" in result["skipped"]["mixed_bfloat16"]
    for key in ("images_per_s", "gflops", "matmul_gflops", "utilization", "of_peak", "matmul_of_peak", "cores_busy"):
        assert result[f"{key}_bf16"] is None
        assert result[f"{key}_fp32"] > 0, key
    assert result["gflops_fp32"] == pytest.approx(result["images_per_s_fp32"] * result["gflop_per_image"], rel=0.05)
    peak = result["fma_peak_gflops"]
    assert result["of_peak_fp32"] == pytest.approx(result["gflops_fp32"] / peak, rel=0.05, abs=2e-3)
    assert result["default_precision"] == "float32"  # auto on a CPU without bfloat16 units
    assert result["images_per_s"] == result["images_per_s_fp32"] and result["of_peak"] == result["of_peak_fp32"]
    assert (result["batch"], result["base_width"], result["steps"], result["repeats"]) == (4, 8, 2, 1)
    assert "variants" not in result and result["load_avg_start"] >= 0 and result["load_avg_end"] >= 0
    # the PyTorch eager peer ran in the same process, and the ratio is TensorFlow's over it
    assert result["torch_images_per_s_fp32"] > 0
    assert result["vs_torch_fp32"] == pytest.approx(result["images_per_s_fp32"] / result["torch_images_per_s_fp32"],
                                                    rel=0.01)


def test_the_torch_peer_is_the_same_network():
    """bench/torch_peer.py's G and D have model/nets/dcgan.py's trainable weights, layer by layer
    in shape, so ``vs_torch_fp32`` compares one network in two frameworks."""
    from components import require_module

    torch = require_module("torch")
    sys.path.insert(0, str(ROOT / "bench"))
    from torch_peer import build

    from model.nets.dcgan import build_discriminator, build_generator

    for resolution, width in ((64, 8), (32, 4)):
        g, d = build(resolution, 3, width)
        for keras_model, torch_model in ((build_generator(resolution, 3, base_width=width, fast=False), g),
                                         (build_discriminator(resolution, 3, base_width=width, fast=False), d)):
            ours = sorted(int(w.shape.num_elements()) for w in keras_model.trainable_weights)
            theirs = sorted(p.numel() for p in torch_model.parameters())
            assert ours == theirs, keras_model.name
        z = torch.zeros(2, 100)
        assert tuple(g(z).shape) == (2, 3, resolution, resolution)
        assert tuple(d(g(z)).shape) == (2, 1)
