"""A training run's settings, as plain data (no TensorFlow: tasks/ import this).

Each default here is the one default of that setting; the Luigi parameters of
tasks/train.py take theirs from these fields.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import ClassVar

from model.variants import VARIANTS
from pipeline.settings import BadSetting, one_of, require

PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")
Z_DISTS = ("uniform", "uniform01", "normal")  # see model.card.Z_PRIORS
#: Discriminator and generator network families (model/nets/networks.py).
DISCRIMINATORS = ("cnn", "capsnet")
GENERATORS = ("dcgan", "seed")
#: EGAN extractors computed by formula (model/variants/extractors.py); other names are CelebA attributes.
EXTRACTOR_FORMULAS = ("brightness", "sharpness")
#: How EGAN training draws c (model/variants/egan.py): the thesis' 0/1 coin, or U(0, 1).
C_DISTRIBUTIONS = ("bernoulli", "uniform")
#: What EGAN's extractor loss pulls F(G(z, c)) towards: ``coin`` (the thesis: BCE against c
#: itself, so 0 and 1 are the targets) or ``quantile`` (L1 to the real faces' c-quantile of F).
EGAN_TARGETS = ("coin", "quantile")
#: Where EGAN's z pairs come from (``z_pairs``): rows of G's training batch, or extra faces
#: G draws for the pair term alone (D's batch keeps a z of its own per row).
EGAN_PAIRS_FROM = ("batch", "extra")
#: EGAN's CelebA attribute extractors: pre-trained and frozen, or trained jointly.
EGAN_MODES = ("pretrain", "joint")
#: Transforms of the differentiable augmentation (model/train/augment.py).
AUGMENTATIONS = ("color", "translation", "cutout")
#: The policy that names no transform, as one can write it on luigi's command line (which
#: drops an empty value: ``--augment ''`` keeps the default).
AUGMENT_OFF = "none"


def resolution_ok(side: int) -> bool:
    """Whether a generator can make ``side`` x ``side`` images: 4 or 7 times a power of two."""
    for start in (4, 7):
        if side >= start * 2 and side % start == 0 and (side // start) & (side // start - 1) == 0:
            return True
    return False


def policy_off(policy: str) -> bool:
    """Whether an augmentation policy names no transform: '' or ``none``."""
    return policy.strip().lower() in ("", AUGMENT_OFF)


def parse_policy(policy: str) -> tuple[str, ...]:
    """``"translation,cutout,color"`` -> the transform names, in order ('' or ``none`` -> ())."""
    if policy_off(policy):
        return ()
    names = tuple(p.strip() for p in policy.split(",") if p.strip())
    unknown = [n for n in names if n not in AUGMENTATIONS]
    if unknown:
        raise ValueError(f"augment policy {policy!r}: unknown transform(s) {unknown}; choose from "
                         f"{', '.join(AUGMENTATIONS)}, comma separated ({AUGMENT_OFF} = off)")
    return names


@dataclass
class TrainConfig:
    """A run's settings; each default here is the one default of that setting (the
    Luigi tasks take theirs from these fields). None optimizer settings take the
    variant's paper defaults (``GANModel.defaults``)."""
    variant: str = "dcgan"      # model/variants: dcgan, wgan, wgan-gp, acgan, infogan
    discriminator: str = "cnn"  # the discriminator network family: cnn (DCGAN) or capsnet (the seed report's)
    generator: str = "dcgan"    # the generator network family: dcgan or seed (the seed report's)
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
    max_minutes: float = 0.0    # training budget: the step count is chosen from the measured speed (0 = off)
    seed: int = 0
    precision: str = "auto"     # see PRECISIONS; "auto" picks by hardware
    log_every: int = 10
    checkpoint_every: int = 100
    sample_every: int = 0       # fixed-noise grid every N steps (0: only at the end)
    shuffle_buffer: int = 10_000
    data_fraction: float = 1.0  # share of the training split a run reads: its first records (1 = all)
    ema: float = 0.0            # decay of the generator's weight average (0 = off), e.g. 0.999
    ema_bn_batches: int = 0     # with ema: the average's batch-norm statistics recomputed from this many
                                # batches of 64 of its own draws (0 = copied from the raw generator)
    augment: str = ""           # DiffAugment policy, e.g. "translation,cutout,color" ("" = off)
    augment_p: float = 1.0      # probability an image is augmented
    options: dict = field(default_factory=dict)  # the variant's own constants (its Options)
    labels: list = field(default_factory=list)   # class names of labeled records (set from the data)

    def __post_init__(self):
        # Each rule names its setting (pipeline.settings.BadSetting), so the Luigi tasks can
        # say which parameter to fix without restating the rule.
        for name, allowed in (("variant", tuple(VARIANTS)), ("discriminator", DISCRIMINATORS),
                              ("generator", GENERATORS), ("z_dist", Z_DISTS), ("precision", PRECISIONS)):
            one_of(name, getattr(self, name), allowed)
        for name in ("steps", "batch_size", "g_steps", "z_dim", "log_every", "checkpoint_every",
                     "base_width", "kernel_size"):
            require(getattr(self, name) >= 1, name, getattr(self, name), ">= 1")
        for name in ("lr", "d_lr"):
            value = getattr(self, name)
            require(value is None or value > 0, name, value, "> 0 (or empty for the variant's default)")
        for name in ("beta1", "beta2"):
            value = getattr(self, name)
            require(value is None or 0 <= value < 1, name, value, "in [0, 1) (or empty for the variant's default)")
        require(0 <= self.ema < 1, "ema", self.ema, "in [0, 1) (0 = off; e.g. 0.999)")
        require(self.ema_bn_batches >= 0, "ema_bn_batches", self.ema_bn_batches, ">= 0 (0 = off; e.g. 50)")
        require(not self.ema_bn_batches or self.ema, "ema_bn_batches", self.ema_bn_batches,
                "0 without a weight average: set ema (e.g. 0.999) or drop ema_bn_batches")
        require(self.max_minutes >= 0, "max_minutes", self.max_minutes,
                ">= 0 (0 = off: train exactly steps; e.g. 5 to stop within 5 minutes)")
        require(0 < self.augment_p <= 1, "augment_p", self.augment_p, "in (0, 1]")
        require(0 < self.data_fraction <= 1, "data_fraction", self.data_fraction,
                "in (0, 1] (the share of the training images a run reads; e.g. 0.1)")
        require(resolution_ok(self.resolution), "resolution", self.resolution,
                "4 or 7 times a power of two (28, 32, 56, 64, 112, 128, ...): the generator doubles a 4x4 or "
                "7x7 start")
        try:
            parse_policy(self.augment)
        except ValueError as exc:
            raise BadSetting("augment", self.augment, str(exc).split(": ", 1)[1]) from None
        self.options = dict(self.options or {})
        self.labels = [str(x) for x in self.labels or ()]

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """A config from ``asdict()`` output (a model card's ``training``); keys this version
        does not know are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass(frozen=True)
class EncoderSettings:
    """How a run's encoder (model/apps/encoder.py) is trained; each default here is the one
    default (``TrainEncoder``'s parameters).

    ``steps`` Adam steps of ``batch_size`` generated faces (and as many real ones), ``lr``
    Adam's step size, ``base_width`` E's first convolution width, ``latent_weight`` and
    ``image_weight`` the weights of the two losses, ``seed`` the draws and the shuffle."""
    steps: int = 3000
    batch_size: int = 32
    lr: float = 2e-4
    base_width: int = 32
    latent_weight: float = 1.0
    image_weight: float = 1.0
    seed: int = 0

    def __post_init__(self):
        for name in ("steps", "batch_size", "base_width"):
            require(getattr(self, name) >= 1, name, getattr(self, name), ">= 1")
        for name in ("lr", "latent_weight"):
            require(getattr(self, name) > 0, name, getattr(self, name), "> 0")
        require(self.image_weight >= 0, "image_weight", self.image_weight, ">= 0")


@dataclass
class CompletionConfig:
    """How a completion network (model/variants/completion.py) is trained; each default here
    is the one default (``TrainCompletion``'s parameters). The fields the training loop reads
    of every run (steps, max_minutes, seed, precision, log/checkpoint/sample cadence) mean
    what they mean in :class:`TrainConfig`.

    ``width`` the network's first convolution width, ``d_width`` the discriminators';
    ``known_weight`` the weight of the L1 loss on the known pixels (the hole's weighs 1);
    ``adversarial`` the weight of the non-saturating GAN loss of the global discriminator
    (0: L1 only, no discriminator is trained); ``local`` adds Iizuka et al.'s local
    discriminator on a half-side square around the hole; ``flip`` mirrors half the faces."""
    steps: int = 6000
    max_minutes: float = 0.0
    batch_size: int = 32
    width: int = 32
    d_width: int = 32
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    known_weight: float = 0.1
    adversarial: float = 0.003
    local: bool = False
    flip: bool = True
    seed: int = 0
    precision: str = "auto"
    log_every: int = 10
    checkpoint_every: int = 200
    sample_every: int = 500
    shuffle_buffer: int = 10_000
    data_fraction: float = 1.0  # share of the training split a run reads: its first records (1 = all)
    resolution: int = 64        # set from the records
    channels: int = 3           # set from the records
    #: What the training loop reads of every run and a completion run does not use.
    ema: ClassVar[float] = 0.0
    augment: ClassVar[str] = ""
    options: ClassVar[dict] = {}

    def __post_init__(self):
        one_of("precision", self.precision, PRECISIONS)
        for name in ("steps", "batch_size", "width", "d_width", "log_every", "checkpoint_every"):
            require(getattr(self, name) >= 1, name, getattr(self, name), ">= 1")
        for name in ("lr",):
            require(self.lr > 0, name, self.lr, "> 0")
        for name in ("beta1", "beta2"):
            require(0 <= getattr(self, name) < 1, name, getattr(self, name), "in [0, 1)")
        for name in ("known_weight", "adversarial", "max_minutes", "sample_every"):
            require(getattr(self, name) >= 0, name, getattr(self, name), ">= 0")
        require(self.resolution >= 16 and self.resolution % 4 == 0, "resolution", self.resolution,
                "a multiple of 4, at least 16 (the network halves the side twice)")

    @classmethod
    def from_dict(cls, d: dict) -> "CompletionConfig":
        """A config from ``asdict()`` output (a completion card's ``training``)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class EGANOptions:
    """EGAN's options (model/variants/egan.py; ``TrainEGAN``'s parameters take their defaults here)."""
    extractors: list = field(default_factory=lambda: ["brightness"])  # one c per extractor
    weight: float = 1.0          # lambda of the extractor loss
    mode: str = "pretrain"       # CelebA attribute extractors: pretrain (frozen) or joint
    classifier: str = ""         # pretrain: folder of a trained attribute classifier
    classifier_width: int = 32   # joint: width of the classifier's first layer
    classifier_lr: float = 1e-3  # joint: the classifier's Adam learning rate (beta1 0.5)
    c_max: float = 2.0           # the largest c a user may set (sweeps run 0..c_max)
    # Training's c: 0/1 with p = 1/2 (the thesis) or U(0, 1). With the coin training never
    # sees a c between 0 and 1, so what G does there is whatever the network interpolates
    # (docs/egan.md); a uniform c asks every c in [0, 1] for its own level of the attribute.
    c_distribution: str = "bernoulli"
    # coin: the thesis' BCE(c, F(G(z, c))). quantile: |F(G(z, c)) - Q(c)|, Q the real faces'
    # quantile function of F (tracked from the real batches), so c = 0.3 asks for the level
    # 30% of real faces are below: the attribute's spread stays that of the data, which a
    # 0/1 target does not allow (it collapsed the generator; docs/egan.md). Needs a uniform c.
    target: str = "coin"
    # Training steps over which the extractor loss' weight ramps linearly from 0 to ``weight``
    # (0: full weight from the first step, the thesis), so G draws faces before it is steered.
    weight_warmup: int = 0
    quantile_points: int = 33    # quantile: levels of Q tracked, evenly spaced in [0, 1]
    quantile_decay: float = 0.98  # quantile: each batch moves Q by (1 - decay) of its own estimate
    # quantile: D also sees c (a projection discriminator): a real face comes with the level of
    # its own F among the real faces (Q inverted), a fake with the c it was made from. D then
    # judges each face against its level, so G cannot meet a level with texture no real face at
    # that level has, and learns what real faces at each level look like (docs/egan.md).
    d_condition: bool = False
    # c also enters every upsampling block of G (constant feature maps), not only the first
    # projection: the late blocks, which draw edges and texture, see it directly.
    c_every_block: bool = False
    # c also scales and shifts every generator block's batch-normalised features, per channel
    # (conditional batch norm, as BigGAN conditions on a class): a multiplicative way in, so c can
    # turn texture up or down where constant maps can only add a bias before a convolution.
    c_modulation: bool = False
    # c also sets how much of a Gaussian-blurred copy of G's image is mixed into its output
    # (a per-image convex mix, fixed blur): sharpness measures how spread the edges are against
    # the strongest, and a blur spreads them, a way in that does not go through the texture.
    c_lowpass: bool = False
    # c_lowpass as a feedback: the mix also sees the edges of the image G drew and of its blur
    # (the luma gradient's mean and largest magnitude), so it can blur a crisp draft more than a
    # soft one and cancel what z did to sharpness, and it spans an unsharp mask (-0.5, lowering
    # sharpness) to the full blur.
    c_lowpass_draft: bool = False
    # c enters G by the blur mix alone, not its first projection with z: the face G draws does not
    # depend on c (no colour or identity can follow c), only how much of its blur is mixed in.
    c_lowpass_only: bool = False
    # c_lowpass: the blur mix's weights learn from the extractor loss alone, not from D's verdict
    # (D still trains the face G draws). With D's gradient on it the mix stayed at 0.6-0.7 of the
    # slope the real faces ask for, and a steeper copy of it scored the same FID (docs/egan.md).
    c_lowpass_fit: bool = False
    # c_lowpass_fit, and the extractor loss trains the mix alone: the rest of G (the face it draws)
    # learns from D's verdict alone, as the plain DCGAN's does. Built to widen one seed's narrow
    # drafts; measured worse at both seeds (rho 0.29 / 0.79, the faces narrower): left to D the
    # draft pre-sharpens against the blur (docs/egan.md). An option to measure, not a recipe.
    c_lowpass_split: bool = False
    # sharpness in training divides by the edges' p-norm (this p) instead of the strongest edge
    # (0: the formula, as the bench measures it). The maximum's gradient reaches one pixel, which
    # the next step's maximum replaces; the p-norm's reaches every strong edge (docs/egan.md).
    sharpness_norm: float = 0.0
    # quantile: G's batch draws each z twice with two c's, and the loss also asks each pair's
    # difference in F to be the difference of its targets, Q(c_a) - Q(c_b): z's part of F cancels
    # there, so the pull on c's own effect is not lost among the z's (docs/egan.md).
    z_pairs: bool = False
    # z_pairs: "batch", rows 2i and 2i + 1 of G's batch share a z (D sees n/2 z per batch of n);
    # "extra", G also draws n/2 faces (n/4 z, each at two c) for the pair term alone, so G's
    # batch keeps n z for D, at the cost of G drawing half as many faces again.
    pairs_from: str = "batch"
    # z_pairs: the pair term's weight beside the per-face term (both times ``weight``). The pair
    # term is the one that asks for c's own effect, the slope; at 1 the discriminator held the
    # blur mix's slope to about 0.6 of the real faces' (docs/egan.md).
    pair_weight: float = 1.0
    # the weight of MSGAN's mode-seeking term on G (model/variants/losses.py mode_seeking; 0: off):
    # it grows as different z draw alike faces. Beside c_lowpass_fit it trains the face G draws,
    # not the blur mix. At 1 it widened one seed's narrow faces and narrowed the other's about as
    # much (docs/egan.md): an option to measure, not a recipe.
    mode_seeking: float = 0.0
    # c_lowpass_fit with the generator's weight average (TrainConfig.ema): the average copies the
    # blur mix's last weights instead of averaging them, so the averaged G draws its face with the
    # mix the extractor loss fitted last. Measured at one seed it did not bring the control back
    # (rho 0.532; the raw G of the same run 0.934): the averaged face, not the averaged mix, is what
    # the mix no longer controls (docs/egan.md). An option to measure, not a recipe.
    ema_raw_mix: bool = False

    def __post_init__(self):
        self.extractors = [str(e) for e in (self.extractors or [])]
        if not self.extractors:
            raise ValueError("EGAN needs at least one extractor: brightness, sharpness or a CelebA attribute")
        if len(set(self.extractors)) != len(self.extractors):
            raise ValueError(f"EGAN extractors repeat: {self.extractors}")
        attributes = [e for e in self.extractors if e not in EXTRACTOR_FORMULAS]
        if attributes:
            from model.apps.attributes import parse_attributes
            parse_attributes(attributes)  # one clear line listing the valid names
        if self.mode not in EGAN_MODES:
            raise ValueError(f"EGAN mode must be one of {EGAN_MODES}, got {self.mode!r}")
        if attributes and self.mode == "pretrain" and not self.classifier:
            raise ValueError("EGAN with an attribute extractor in pretrain mode needs options.classifier "
                             "(the folder of a TrainAttributeClassifier run); TrainEGAN sets it")
        if self.c_distribution not in C_DISTRIBUTIONS:
            raise ValueError(f"EGAN c_distribution must be one of {C_DISTRIBUTIONS}, got {self.c_distribution!r}")
        if self.target not in EGAN_TARGETS:
            raise ValueError(f"EGAN target must be one of {EGAN_TARGETS}, got {self.target!r}")
        if self.target == "quantile" and self.c_distribution != "uniform":
            raise ValueError("EGAN target quantile needs c_distribution uniform (a 0/1 c would ask for the "
                             "extremes of the real faces only): set both")
        if self.d_condition and self.target != "quantile":
            raise ValueError("EGAN d_condition needs target quantile (a real face's level is its place in the "
                             "tracked quantiles): set --target quantile --c-distribution uniform")
        if self.quantile_points < 2 or not 0.0 <= self.quantile_decay < 1.0:
            raise ValueError(f"EGAN quantile_points must be >= 2 and quantile_decay in [0, 1), got "
                             f"{self.quantile_points} and {self.quantile_decay}")
        if self.z_pairs and self.target != "quantile":
            raise ValueError("EGAN z_pairs needs target quantile (a pair's targets are the real faces' levels "
                             "at its two c): set --target quantile --c-distribution uniform")
        if self.pairs_from not in EGAN_PAIRS_FROM:
            raise ValueError(f"EGAN pairs_from must be one of {EGAN_PAIRS_FROM}, got {self.pairs_from!r}")
        if self.pair_weight < 0 or (self.pair_weight != 1.0 and not self.z_pairs):
            raise ValueError(f"EGAN pair_weight weighs the z pairs' term: needs --z-pairs and a value >= 0, "
                             f"got {self.pair_weight}" + ("" if self.z_pairs else " without z_pairs"))
        if self.sharpness_norm and self.sharpness_norm < 1.0:
            raise ValueError(f"EGAN sharpness_norm must be 0 (the strongest edge) or a p-norm's p >= 1, "
                             f"got {self.sharpness_norm}")
        if self.c_lowpass_only and (not self.c_lowpass or self.c_every_block or self.c_modulation):
            raise ValueError("EGAN c_lowpass_only lets c enter G by the blur mix alone: set --c-lowpass, "
                             "without --c-every-block or --c-modulation")
        if self.c_lowpass_fit and not self.c_lowpass:
            raise ValueError("EGAN c_lowpass_fit trains the blur mix of c_lowpass by the extractor loss alone: "
                             "set --c-lowpass too")
        if self.c_lowpass_split and not self.c_lowpass_fit:
            raise ValueError("EGAN c_lowpass_split keeps the extractor loss to the blur mix that c_lowpass_fit "
                             "keeps from D: set --c-lowpass-fit too")
        if self.ema_raw_mix and not self.c_lowpass_fit:
            raise ValueError("EGAN ema_raw_mix keeps the blur mix of c_lowpass_fit out of the weight average: "
                             "set --c-lowpass-fit (and --ema) too")
        if self.mode_seeking < 0:
            raise ValueError(f"EGAN mode_seeking is a weight (0: off; e.g. 1), got {self.mode_seeking}")
        if self.c_lowpass_draft and not self.c_lowpass:
            raise ValueError("EGAN c_lowpass_draft makes the blur mix of c_lowpass a feedback: set --c-lowpass too")
        if self.weight_warmup < 0:
            raise ValueError(f"EGAN weight_warmup must be >= 0 steps, got {self.weight_warmup}")
        if self.weight < 0 or self.c_max <= 0:
            raise ValueError(f"EGAN weight must be >= 0 and c_max > 0, got {self.weight} and {self.c_max}")
