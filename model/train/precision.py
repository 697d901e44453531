"""Which Keras dtype policy a precision setting means on this machine."""
from __future__ import annotations

import tensorflow as tf

from model.cpu import bf16_units, capped_reason


def resolve_precision(precision: str) -> str:
    """The Keras dtype policy for ``precision``. ``auto`` (TrainDCGAN's default) is
    ``mixed_bfloat16`` on CPUs with AMX/AVX-512 bfloat16 units, where it was measured
    2-3x faster than float32 at the same sample quality (docs/training.md), and
    float32 elsewhere, GPUs included: ``mixed_float16`` must be asked for. A precision that
    ``ONEDNN_MAX_CPU_ISA`` keeps oneDNN from computing (:func:`model.cpu.capped_reason`) is a
    one-line ValueError, not a crash in the first convolution."""
    if precision != "auto":
        reason = capped_reason(precision)
        if reason:
            raise ValueError(reason)
        return precision
    if tf.config.list_physical_devices("GPU"):
        return "float32"
    return "mixed_bfloat16" if bf16_units() else "float32"
