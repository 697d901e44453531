"""A training run's settings, as plain data (no TensorFlow: tasks/ import this).

Each default here is the one default of that setting; the Luigi parameters of
tasks/train.py take theirs from these fields.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields

from model.variants import VARIANTS

PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")
Z_DISTS = ("uniform", "uniform01", "normal")  # see model.card.Z_PRIORS
#: Discriminator and generator network families (model/dcgan.py, ...).
DISCRIMINATORS = ("cnn",)
GENERATORS = ("dcgan",)
#: EGAN extractors computed by formula (model/extractors.py); other names are CelebA attributes.
EXTRACTOR_FORMULAS = ("brightness", "sharpness")
#: Transforms of the differentiable augmentation (model/augment.py).
AUGMENTATIONS = ("color", "translation", "cutout")


def parse_policy(policy: str) -> tuple[str, ...]:
    """``"translation,cutout,color"`` -> the transform names, in order ('' -> none)."""
    names = tuple(p.strip() for p in policy.split(",") if p.strip())
    unknown = [n for n in names if n not in AUGMENTATIONS]
    if unknown:
        raise ValueError(f"augment policy {policy!r}: unknown transform(s) {unknown}; choose from "
                         f"{', '.join(AUGMENTATIONS)}, comma separated (empty = off)")
    return names


@dataclass
class TrainConfig:
    """A run's settings; each default here is the one default of that setting (the
    Luigi tasks take theirs from these fields). None optimizer settings take the
    variant's paper defaults (``GANModel.defaults``)."""
    variant: str = "dcgan"      # model/variants: dcgan, ...
    discriminator: str = "cnn"  # the discriminator network family
    generator: str = "dcgan"    # the generator network family
    resolution: int = 64
    channels: int = 3
    z_dim: int = 100
    z_dist: str = "uniform"     # "uniform" U(-1, 1) as in the paper, "uniform01" U(0, 1), or "normal" N(0, 1)
    base_width: int = 128       # 4x4x1024 at 64x64
    kernel_size: int = 4        # 4 as in the reference Torch code; 5 as in DCGAN-tensorflow
    batch_size: int = 64        # global batch, split across replicas
    lr: float | None = None     # DCGAN: 2e-4
    beta1: float | None = None  # DCGAN: 0.5
    beta2: float | None = None  # DCGAN: 0.999
    d_lr: float | None = None   # the discriminator's own learning rate (two time-scale rule); None = lr
    g_steps: int = 1            # generator updates per discriminator update
    steps: int = 10_000
    seed: int = 0
    precision: str = "auto"     # see PRECISIONS; "auto" picks by hardware
    log_every: int = 10
    checkpoint_every: int = 100
    sample_every: int = 0       # fixed-noise grid every N steps (0: only at the end)
    shuffle_buffer: int = 10_000
    ema: float = 0.0            # decay of the generator's weight average (0 = off), e.g. 0.999
    augment: str = ""           # DiffAugment policy, e.g. "translation,cutout,color" ("" = off)
    augment_p: float = 1.0      # probability an image is augmented
    options: dict = field(default_factory=dict)  # the variant's own constants (its Options)
    labels: list = field(default_factory=list)   # class names of labeled records (set from the data)

    def __post_init__(self):
        for name, allowed in (("variant", tuple(VARIANTS)), ("discriminator", DISCRIMINATORS),
                              ("generator", GENERATORS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.z_dist not in Z_DISTS:
            raise ValueError(f"z_dist must be one of {Z_DISTS}, got {self.z_dist!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        for name in ("steps", "batch_size", "g_steps", "z_dim", "log_every", "checkpoint_every",
                     "base_width", "kernel_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("lr", "d_lr", "beta1", "beta2"):
            value = getattr(self, name)
            if value is not None and not (value > 0 if name.endswith("lr") else 0 <= value < 1):
                raise ValueError(f"{name} must be {'> 0' if name.endswith('lr') else 'in [0, 1)'}, got {value}")
        if not 0 <= self.ema < 1:
            raise ValueError(f"ema must be in [0, 1) (0 = off; e.g. 0.999), got {self.ema}")
        if not 0 < self.augment_p <= 1:
            raise ValueError(f"augment_p must be in (0, 1], got {self.augment_p}")
        parse_policy(self.augment)
        self.options = dict(self.options or {})
        self.labels = [str(x) for x in self.labels or ()]

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """A config from ``asdict()`` output (a model card's ``training``); keys this version
        does not know are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})
