"""model/cpu.py on synthetic /proc/cpuinfo text: the CPU kinds this project meets, their
float32 FMA peak (cores x clock x FLOP/cycle), which precisions they compute natively, and
the environment overrides (FACEGAN_CPU_FLAGS, ONEDNN_MAX_CPU_ISA, FACEGAN_CPU_GHZ, ...).
Pure Python: no TensorFlow."""
from __future__ import annotations

import pytest

from model import cpu

ZEN4_FLAGS = ("fpu sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 avx512f avx512dq avx512cd avx512bw avx512vl "
              "avx512_bf16 avx512_vnni avx512vbmi")
AVX2_FLAGS = "fpu sse sse2 sse3 fma sse4_1 sse4_2 avx f16c avx2 bmi2"


def cpuinfo(model_name: str, flags: str, mhz: str | None, vendor="AuthenticAMD", family=25, model=17,
            cores=((0, 0), (0, 1))) -> str:
    """``/proc/cpuinfo`` text of one processor per ``(physical id, core id)`` in ``cores``."""
    blocks = []
    for i, (package, core) in enumerate(cores):
        lines = [f"processor\t: {i}", f"vendor_id\t: {vendor}", f"cpu family\t: {family}", f"model\t\t: {model}",
                 f"model name\t: {model_name}"]
        if mhz is not None:
            lines.append(f"cpu MHz\t\t: {mhz}")
        lines += [f"physical id\t: {package}", f"core id\t\t: {core}", f"flags\t\t: {flags}"]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n\n"


def test_this_vm_zen4_runs_avx512_at_avx2s_rate():
    """The 2-core AMD EPYC (Zen 4, AVX-512 BF16): 512-bit FMAs run as two halves, 32 FLOP a cycle."""
    peak = cpu.fma_peak(cpuinfo("AMD EPYC", ZEN4_FLAGS, "2596.128"))
    assert (peak.cores, peak.isa, peak.lanes, peak.fma_units, peak.flop_per_cycle) == (2, "avx512", 16, 1, 32)
    assert peak.clock_source == "cpu MHz" and peak.ghz == pytest.approx(2.596128)
    assert peak.gflops == pytest.approx(166.2, abs=0.1)
    assert peak.as_dict()["gflops"] == 166.2


def test_avx2_epyc_of_issue_27():
    """2 cores x 2.45 GHz x 32 FLOP/cycle = 157 GFLOP/s, as the issue computed by hand."""
    peak = cpu.fma_peak(cpuinfo("AMD EPYC 7763 64-Core Processor", AVX2_FLAGS, "2445.406", model=1))
    assert (peak.isa, peak.lanes, peak.fma_units, peak.flop_per_cycle) == ("avx2", 8, 2, 32)
    assert peak.gflops == pytest.approx(156.5, abs=0.1)
    assert cpu.emulated_reason("mixed_bfloat16", set(AVX2_FLAGS.split())) is not None


def test_intel_base_clock_from_the_model_name_and_smt_threads_share_a_core():
    smt = ((0, 0), (0, 1), (0, 0), (0, 1))  # 4 hardware threads on 2 cores
    text = cpuinfo("Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz", ZEN4_FLAGS, "3499.998", vendor="GenuineIntel",
                   family=6, model=106, cores=smt)
    peak = cpu.fma_peak(text)
    assert (peak.cores, peak.ghz, peak.clock_source) == (2, 2.9, "model name")
    assert (peak.lanes, peak.fma_units, peak.flop_per_cycle) == (16, 2, 64)
    assert peak.gflops == pytest.approx(2 * 2.9 * 64)


@pytest.mark.parametrize("family, model, units", [(23, 1, 1), (23, 8, 1), (23, 49, 2), (25, 1, 2), (26, 2, 2)])
def test_amd_avx2_fma_units_by_generation(family, model, units):
    """Zen 1/Zen+ split 256-bit FMAs in two; Zen 2, 3 and 5 have two full-width pipes."""
    assert cpu.fma_peak(cpuinfo("AMD EPYC", AVX2_FLAGS, "2000", family=family, model=model)).fma_units == units


def test_arguments_override_what_cpuinfo_says():
    peak = cpu.fma_peak(cpuinfo("AMD EPYC", ZEN4_FLAGS, "2596.128"), cores=4, ghz=3.0, units=2)
    assert (peak.cores, peak.ghz, peak.clock_source, peak.gflops) == (4, 3.0, "given", 4 * 3.0 * 64)
    narrower = cpu.fma_peak(cpuinfo("AMD EPYC", ZEN4_FLAGS, "2596.128"), flags=set(AVX2_FLAGS.split()))
    assert (narrower.isa, narrower.lanes, narrower.fma_units) == ("avx2", 8, 2)


def test_no_clock_means_no_peak_and_no_cpuinfo_is_one_core_of_sse():
    peak = cpu.fma_peak(cpuinfo("Some CPU", AVX2_FLAGS, None))
    assert peak.ghz is None and peak.gflops is None and peak.clock_source == "unknown"
    assert peak.as_dict()["gflops"] is None
    empty = cpu.fma_peak("")
    assert (empty.cores, empty.isa, empty.flop_per_cycle, empty.gflops) == (1, "sse", 8, None)


def test_onednn_isa_cap_drops_the_flags_above_it():
    flags = set(ZEN4_FLAGS.split())
    avx2 = cpu.isa_capped_flags(flags, "avx2")
    assert not any(f.startswith("avx512") for f in avx2) and {"avx2", "fma"} <= avx2
    assert cpu.bf16_units(avx2) == [] and cpu.vector_isa(avx2) == "avx2"
    core = cpu.isa_capped_flags(flags, "AVX512_CORE")
    assert "avx512f" in core and "avx512_bf16" not in core
    assert cpu.isa_capped_flags(flags, "AVX512_CORE_BF16") == flags
    assert cpu.isa_capped_flags(flags | {"amx_bf16"}, "AVX512_CORE_BF16") == flags
    assert cpu.isa_capped_flags(flags, None) == cpu.isa_capped_flags(flags, "ALL") == flags
    assert cpu.vector_isa(cpu.isa_capped_flags(flags, "SSE41")) == "sse"


def test_precisions_this_cpu_computes_natively():
    zen4, avx2 = set(ZEN4_FLAGS.split()), set(AVX2_FLAGS.split())
    assert cpu.emulated_reason("float32", avx2) is None
    assert cpu.emulated_reason("mixed_bfloat16", zen4) is None
    reason = cpu.emulated_reason("mixed_bfloat16", avx2)
    assert "no bfloat16 units" in reason and "avx512_bf16" in reason
    assert "no float16 units" in cpu.emulated_reason("mixed_float16", zen4)
    assert cpu.emulated_reason("mixed_float16", zen4 | {"avx512_fp16"}) is None


def test_bf16_peak_is_twice_float32s_with_avx512_bf16_only():
    zen4 = set(ZEN4_FLAGS.split())
    peak = cpu.fma_peak(cpuinfo("AMD EPYC", ZEN4_FLAGS, "2596.128"))
    assert cpu.bf16_peak_gflops(peak, zen4) == pytest.approx(2 * peak.gflops)
    assert cpu.bf16_peak_gflops(peak, zen4 | {"amx_bf16"}) is None  # AMX tiles: not tabled
    assert cpu.bf16_peak_gflops(peak, set(AVX2_FLAGS.split())) is None


def test_environment_overrides(monkeypatch):
    monkeypatch.setenv("FACEGAN_CPU_FLAGS", "fma,avx avx2 avx512f avx512_bf16")
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    assert cpu.cpu_flags() == {"fma", "avx", "avx2", "avx512f", "avx512_bf16"}
    assert cpu.bf16_units() == ["avx512_bf16"]
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # oneDNN's emulation of an AVX2-only CPU
    assert cpu.cpu_flags() == {"fma", "avx", "avx2"} and cpu.bf16_units() == []
    assert cpu.emulated_reason("mixed_bfloat16") is not None
    monkeypatch.setenv("FACEGAN_CPU_GHZ", "2.0")
    monkeypatch.setenv("FACEGAN_FMA_UNITS", "1")
    monkeypatch.setenv("FACEGAN_CPU_CORES", "3")
    peak = cpu.cpu_peak()
    assert (peak.cores, peak.ghz, peak.clock_source, peak.isa, peak.fma_units) == (3, 2.0, "FACEGAN_CPU_GHZ", "avx2", 1)
    assert peak.gflops == pytest.approx(3 * 2.0 * 16)


def test_a_precision_the_onednn_cap_forbids_is_one_line_not_a_crash(monkeypatch):
    """Under ONEDNN_MAX_CPU_ISA=AVX2 on a CPU with bfloat16 units TensorFlow's kernels still ask
    oneDNN for bfloat16, which it cannot give: explicit bfloat16 is refused up front; ``auto``
    is float32; a CPU that really lacks the units (TensorFlow emulates) has no conflict."""
    monkeypatch.setenv("FACEGAN_CPU_FLAGS", ZEN4_FLAGS)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    assert cpu.capped_reason("mixed_bfloat16") is None
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    reason = cpu.capped_reason("mixed_bfloat16")
    assert reason.startswith("precision mixed_bfloat16: ONEDNN_MAX_CPU_ISA=AVX2") and "\n" not in reason
    assert "unset ONEDNN_MAX_CPU_ISA" in reason and cpu.capped_reason("float32") is None
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")
    assert cpu.capped_reason("mixed_bfloat16") is None
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    monkeypatch.setenv("FACEGAN_CPU_FLAGS", AVX2_FLAGS)  # a real AVX2-only CPU
    assert cpu.capped_reason("mixed_bfloat16") is None
