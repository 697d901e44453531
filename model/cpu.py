"""What this CPU is, which number formats it computes fast, and its float32 FMA peak (plain
Python, no TensorFlow or torch at import): read from ``/proc/cpuinfo`` (Linux; elsewhere
nothing is found and the callers keep float32).

Environment overrides (for benches on machines whose ``/proc/cpuinfo`` says too little, and
for tests that pretend to be another CPU kind):

* ``FACEGAN_CPU_FLAGS``: the CPU's flags, space or comma separated, instead of the first
  processor's ``flags`` line (e.g. ``"fma avx avx2"``: a CPU without AVX-512 or bfloat16 units);
* ``ONEDNN_MAX_CPU_ISA``: oneDNN's own switch (``AVX2`` emulates an AVX2-only CPU for
  TensorFlow's and torch's oneDNN kernels); the flags above that instruction set are dropped,
  so the precision ``auto`` picks and the FMA peak are the emulated CPU's;
* ``FACEGAN_CPU_GHZ``, ``FACEGAN_FMA_UNITS``, ``FACEGAN_CPU_CORES``: the clock, the FMA
  instructions per cycle per core and the core count of :func:`cpu_peak`.
"""
from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass
from functools import lru_cache

#: CPU flags of bfloat16 arithmetic units: Intel AMX tiles, or AVX-512 BF16 dot products
#: (AMD Zen 4 and later, Intel Cooper Lake and later).
BF16_FLAGS = ("amx_bf16", "avx512_bf16")
#: CPU flags of float16 arithmetic units (Sapphire Rapids' AVX-512 FP16, Granite Rapids' AMX).
FP16_FLAGS = ("amx_fp16", "avx512_fp16")

#: float32 lanes of one vector register, by instruction set (see :func:`vector_isa`).
LANES = {"avx512": 16, "avx2": 8, "avx": 8, "sse": 4}
#: Vector FMA instructions one core starts per cycle when no row of :data:`FMA_UNITS` matches:
#: two FMA pipes, as AMD Zen 2 to Zen 5 and Intel's cores since Haswell (and, at 512 bits,
#: Xeon Gold/Platinum since Skylake-SP) have. Xeon Silver/Bronze and Intel's client chips
#: with AVX-512 have one 512-bit FMA pipe: ``FACEGAN_FMA_UNITS=1`` there.
DEFAULT_FMA_UNITS = 2
#: Exceptions to :data:`DEFAULT_FMA_UNITS`: ``(vendor_id, cpu family, (first model, last model),
#: instruction set, FMA instructions per cycle)``.
FMA_UNITS = (
    # Zen 4 (family 0x19 models 0x10-0x1f Genoa, 0x60-0x7f Raphael/Phoenix, 0xa0-0xaf Bergamo):
    # its two 256-bit FMA pipes run a 512-bit FMA as two halves, so AVX-512 has AVX2's peak
    ("AuthenticAMD", 0x19, (0x00, 0xff), "avx512", 1),
    # Zen 1 and Zen+ (family 0x17 below model 0x30): two 128-bit FMA pipes, one 256-bit FMA a cycle
    ("AuthenticAMD", 0x17, (0x00, 0x2f), "avx2", 1),
    # Sandy and Ivy Bridge, Bulldozer without FMA3: one multiply and one add a cycle (2 FLOP/lane)
    ("", -1, (0x00, 0xff), "avx", 1),
    ("", -1, (0x00, 0xff), "sse", 1),
)


@lru_cache(maxsize=1)
def _cpuinfo() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            return fh.read()
    except OSError:
        return ""


def parse_cpuinfo(text: str) -> list[dict[str, str]]:
    """``/proc/cpuinfo`` text -> one ``{field: value}`` per processor (blank-line separated)."""
    out, current = [], {}
    for line in text.splitlines():
        if not line.strip():
            if current:
                out.append(current)
            current = {}
            continue
        key, sep, value = line.partition(":")
        if sep:
            current[key.strip()] = value.strip()
    if current:
        out.append(current)
    return out


def isa_capped_flags(flags: set[str], max_isa: str | None) -> set[str]:
    """``flags`` without what oneDNN's ``ONEDNN_MAX_CPU_ISA=max_isa`` forbids it to use
    (``AVX2``: no AVX-512 and no AMX, so no bfloat16 units; ``AVX512_CORE``: no bfloat16
    units, ...). ``None``, ``""``, ``ALL`` and ``DEFAULT`` keep every flag. Only oneDNN
    obeys the cap: TensorFlow's Eigen kernels still use the real instruction set."""
    cap = (max_isa or "").strip().upper()
    if cap in ("", "ALL", "DEFAULT"):
        return set(flags)
    drop: tuple[str, ...] = ()
    if not cap.startswith(("AVX512", "AVX10")):  # SSE41, AVX, AVX2, AVX2_VNNI, AVX2_VNNI_2
        drop = ("avx512", "amx")
        if cap in ("SSE41", "AVX"):
            drop += ("avx2", "fma") + (("avx",) if cap == "SSE41" else ())
    elif "AMX" not in cap:
        drop = ("amx",)
        if cap in ("AVX512_CORE", "AVX512_CORE_VNNI"):
            drop += ("avx512_bf16", "avx512_fp16")
        elif cap == "AVX512_CORE_BF16":
            drop += ("avx512_fp16",)
    return {f for f in flags if not f.startswith(drop)}


def uncapped_flags() -> set[str]:
    """The CPU's flags: ``FACEGAN_CPU_FLAGS`` if set, else the first processor's (empty when
    ``/proc/cpuinfo`` is unreadable), whatever ``ONEDNN_MAX_CPU_ISA`` says."""
    override = os.environ.get("FACEGAN_CPU_FLAGS")
    if override is not None:
        return set(override.replace(",", " ").split())
    procs = parse_cpuinfo(_cpuinfo())
    return set(procs[0].get("flags", "").split()) if procs else set()


def cpu_flags() -> set[str]:
    """The flags this process should assume: :func:`uncapped_flags` less those above
    ``ONEDNN_MAX_CPU_ISA`` (:func:`isa_capped_flags`)."""
    return isa_capped_flags(uncapped_flags(), os.environ.get("ONEDNN_MAX_CPU_ISA"))


def bf16_units(flags: set[str] | None = None) -> list[str]:
    """The bfloat16 units of :data:`BF16_FLAGS` among ``flags`` (default: :func:`cpu_flags`);
    ``[]``: none, so bfloat16 would be emulated and slower than float32."""
    flags = cpu_flags() if flags is None else flags
    return [f for f in BF16_FLAGS if f in flags]


def emulated_reason(precision: str, flags: set[str] | None = None) -> str | None:
    """Why this CPU would only emulate the Keras policy ``precision`` (``None``: it computes
    it natively). ``flags`` default to :func:`cpu_flags`."""
    flags = cpu_flags() if flags is None else flags
    if "bfloat16" in precision and not bf16_units(flags):
        return (f"{precision}: this CPU has no bfloat16 units (none of {', '.join(BF16_FLAGS)} in its flags), "
                f"so bfloat16 would be emulated, slower than float32")
    if "float16" in precision and "bfloat16" not in precision and not any(f in flags for f in FP16_FLAGS):
        return (f"{precision}: this CPU has no float16 units (none of {', '.join(FP16_FLAGS)} in its flags), "
                f"so float16 would be emulated, slower than float32")
    return None


def bench_skip_reason(precision: str, force: bool = False, flags: set[str] | None = None) -> str | None:
    """Why a benchmark should not time ``precision`` here (``None``: time it): the CPU only
    emulates it (:func:`emulated_reason`; ``force``, a bench's ``--force-precisions``, times
    it anyway), or ``ONEDNN_MAX_CPU_ISA`` forbids it (:func:`capped_reason`; no flag helps)."""
    capped = capped_reason(precision)
    if capped:
        return capped
    reason = emulated_reason(precision, flags)
    return None if force or not reason else reason + " (--force-precisions times it anyway)"


def capped_reason(precision: str) -> str | None:
    """Why ``precision`` cannot run in this process although the CPU computes it natively:
    ``ONEDNN_MAX_CPU_ISA`` keeps oneDNN off the CPU's bfloat16 (float16) units, while
    TensorFlow's oneDNN kernels choose their bfloat16 path from the CPU itself, so oneDNN
    cannot create their primitives (an error in the first convolution, or an abort). On a CPU
    that really lacks the units TensorFlow emulates the format instead. ``None``: no conflict."""
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA")
    if not cap or "float16" not in precision:
        return None
    flags = uncapped_flags()
    if emulated_reason(precision, flags) is None and emulated_reason(precision, isa_capped_flags(flags, cap)):
        return (f"precision {precision}: ONEDNN_MAX_CPU_ISA={cap} keeps oneDNN off this CPU's "
                f"{precision.removeprefix('mixed_')} units, which TensorFlow's kernels would still ask it for: "
                f"unset ONEDNN_MAX_CPU_ISA, or use precision float32 (or auto)")
    return None


def cpu_model() -> str:
    """The CPU's model name, e.g. ``"AMD EPYC"`` (``"unknown"`` when not found)."""
    procs = parse_cpuinfo(_cpuinfo())
    return procs[0].get("model name", "unknown") if procs else "unknown"


def vector_isa(flags: set[str]) -> str:
    """The widest float32 vector instruction set of ``flags``: ``avx512`` (``avx512f``),
    ``avx2`` (``avx2`` with ``fma``), ``avx`` or ``sse``."""
    if "avx512f" in flags:
        return "avx512"
    if "avx2" in flags and "fma" in flags:
        return "avx2"
    return "avx" if "avx" in flags else "sse"


def fma_units(vendor: str, family: int, model: int, isa: str) -> int:
    """Vector FMA instructions per cycle per core: the first matching row of
    :data:`FMA_UNITS` (an empty vendor and family -1 match any CPU; -1 is an unknown family or model), else
    :data:`DEFAULT_FMA_UNITS`."""
    for row_vendor, row_family, (lo, hi), row_isa, units in FMA_UNITS:
        if row_isa == isa and row_vendor in ("", vendor) and row_family in (-1, family) and (
                model < 0 or lo <= model <= hi):  # an unknown model (-1) matches any range
            return units
    return DEFAULT_FMA_UNITS


def _int(value: str | None, default: int = -1) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


def cpu_clock_ghz(procs: list[dict[str, str]]) -> tuple[float | None, str]:
    """``(GHz, where it came from)``: the model name's ``@ 2.90GHz`` (Intel's base clock) when
    it has one, else the largest ``cpu MHz`` of the processors (on a VM usually the host's
    nominal clock; on bare metal with frequency scaling the current one, possibly an idle
    clock well below it), else ``(None, "unknown")``. Turbo clocks are above either, so a
    fully busy core can exceed the peak computed from them."""
    name = procs[0].get("model name", "") if procs else ""
    found = re.search(r"([0-9]+(?:\.[0-9]+)?)\s*GHz", name)
    if found:
        return float(found.group(1)), "model name"
    mhz = [float(p["cpu MHz"]) for p in procs if re.fullmatch(r"[0-9]+(?:\.[0-9]+)?", p.get("cpu MHz", ""))]
    if mhz:
        return max(mhz) / 1000, "cpu MHz"
    return None, "unknown"


def physical_cores(procs: list[dict[str, str]]) -> int:
    """Cores, not hardware threads: distinct ``(physical id, core id)`` pairs, else the
    number of processors (SMT siblings share their core's FMA pipes)."""
    pairs = {(p.get("physical id"), p.get("core id")) for p in procs if "core id" in p}
    return len(pairs) or len(procs)


@dataclass(frozen=True)
class FmaPeak:
    """The float32 FMA peak: ``cores x ghz x flop_per_cycle`` GFLOP/s, where one core does
    ``2 (multiply and add) x lanes x fma_units`` FLOP a cycle."""

    cores: int
    ghz: float | None
    clock_source: str
    isa: str
    lanes: int
    fma_units: int

    @property
    def flop_per_cycle(self) -> int:
        return 2 * self.lanes * self.fma_units

    @property
    def gflops(self) -> float | None:
        return None if self.ghz is None else self.cores * self.ghz * self.flop_per_cycle

    def as_dict(self) -> dict:
        gflops = self.gflops
        return {**asdict(self), "flop_per_cycle": self.flop_per_cycle,
                "gflops": None if gflops is None else round(gflops, 1)}


def fma_peak(cpuinfo: str, flags: set[str] | None = None, cores: int | None = None, ghz: float | None = None,
             units: int | None = None) -> FmaPeak:
    """The float32 FMA peak of the CPU ``cpuinfo`` (``/proc/cpuinfo`` text) describes.

    ``flags`` default to the first processor's (pass capped ones to ask what a smaller
    instruction set reaches); ``cores`` to :func:`physical_cores`, ``ghz`` to
    :func:`cpu_clock_ghz`, ``units`` to :func:`fma_units` of the vendor and family. It
    assumes float32 FMAs on every pipe every cycle at that clock: matmul kernels come close,
    nothing exceeds it but a turbo clock above the one read."""
    procs = parse_cpuinfo(cpuinfo)
    first = procs[0] if procs else {}
    flags = set(first.get("flags", "").split()) if flags is None else flags
    isa = vector_isa(flags)
    clock_source = "given"
    if ghz is None:
        ghz, clock_source = cpu_clock_ghz(procs)
    if units is None:
        units = fma_units(first.get("vendor_id", ""), _int(first.get("cpu family")), _int(first.get("model")), isa)
    return FmaPeak(cores=cores or physical_cores(procs) or 1, ghz=ghz, clock_source=clock_source, isa=isa,
                   lanes=LANES[isa], fma_units=units)


def cpu_peak() -> FmaPeak:
    """:func:`fma_peak` of this machine as this process sees it: :func:`cpu_flags` (so
    ``FACEGAN_CPU_FLAGS`` and ``ONEDNN_MAX_CPU_ISA`` apply), no more cores than the process
    may run on, and ``FACEGAN_CPU_GHZ``, ``FACEGAN_FMA_UNITS``, ``FACEGAN_CPU_CORES`` when set."""
    text = _cpuinfo()
    env = os.environ
    cores = _int(env.get("FACEGAN_CPU_CORES"), 0) or None
    if cores is None:
        try:
            usable = len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            usable = os.cpu_count() or 1
        cores = min(physical_cores(parse_cpuinfo(text)) or usable, usable)
    ghz = float(env["FACEGAN_CPU_GHZ"]) if env.get("FACEGAN_CPU_GHZ") else None
    units = _int(env.get("FACEGAN_FMA_UNITS"), 0) or None
    peak = fma_peak(text, flags=cpu_flags(), cores=cores, ghz=ghz, units=units)
    return peak if ghz is None else FmaPeak(**{**asdict(peak), "clock_source": "FACEGAN_CPU_GHZ"})


def bf16_peak_gflops(peak: FmaPeak, flags: set[str]) -> float | None:
    """The bfloat16 dot-product peak beside ``peak`` (float32): twice it where ``avx512_bf16``
    is the bfloat16 unit (``VDPBF16PS`` does two multiply-adds per float32 lane, on the same
    pipes), ``None`` without bfloat16 units and with AMX, whose tile peak is not tabled here."""
    if peak.gflops is None or "amx_bf16" in flags or "avx512_bf16" not in flags:
        return None
    return 2 * peak.gflops
