"""What this CPU is and which number formats it computes fast (plain Python, no TensorFlow
or torch at import): read from ``/proc/cpuinfo`` (Linux; elsewhere nothing is found and
the callers keep float32)."""
from __future__ import annotations

from functools import lru_cache

#: CPU flags of bfloat16 arithmetic units: Intel AMX tiles, or AVX-512 BF16 dot products
#: (AMD Zen 4 and later, Intel Cooper Lake and later).
BF16_FLAGS = ("amx_bf16", "avx512_bf16")


@lru_cache(maxsize=1)
def _cpuinfo() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            return fh.read()
    except OSError:
        return ""


def cpu_flags() -> set[str]:
    """The first processor's feature flags (empty when ``/proc/cpuinfo`` is unreadable)."""
    for line in _cpuinfo().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def bf16_units() -> list[str]:
    """The bfloat16 units this CPU has, of :data:`BF16_FLAGS` (``[]``: none, so bfloat16
    would be emulated and slower than float32)."""
    flags = cpu_flags()
    return [f for f in BF16_FLAGS if f in flags]


def cpu_model() -> str:
    """The CPU's model name, e.g. ``"AMD EPYC"`` (``"unknown"`` when not found)."""
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"
