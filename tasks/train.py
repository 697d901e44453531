"""Training a GAN variant on the records of a data set (model/train/loop.py does the work)."""
from __future__ import annotations

import json
import time
from dataclasses import fields

import luigi

from model.config import (
    C_DISTRIBUTIONS,
    DISCRIMINATORS,
    EGAN_MODES,
    EGAN_PAIRS_FROM,
    EGAN_TARGETS,
    EXTRACTOR_FORMULAS,
    GENERATORS,
    PRECISIONS,
    Z_DISTS,
    EGANOptions,
    TrainConfig,
    policy_off,
    resolution_ok,
)
from model.train.recipes import DCGAN_DEFAULT, recipe
from model.variants import VARIANTS
from pipeline.atomic import write_json
from tasks.common import Progress, defaults_of, describe, processed_dir, version
from tasks.errors import Checked, ConfigError, check, settings_of
from tasks.records import BuildTFRecords
from tasks.storage import target

#: The one default of each training setting (model/config.py).
DEFAULTS = {f.name: f.default for f in fields(TrainConfig) if not callable(f.default_factory)}


class PolicyParameter(luigi.Parameter):
    """An augmentation policy: transforms comma separated, or ``none`` for none, kept as ''
    (what runs without augmentation always had, so their folders stay theirs). luigi drops an
    empty value on the command line, so ``--augment ''`` would leave the default on."""

    def normalize(self, x):
        return "" if policy_off(str(x)) else str(x)


class TrainGAN(Checked, luigi.Task):
    """Trains a GAN variant (G and D, plus any network the variant has), checkpointing as
    it goes; re-running resumes from the last checkpoint.

    Output: ``processed/models/{dataset}/{variant}-{version}/``: ``generator.keras``,
    ``saved_model/`` (every generator input -> uint8 images) and ``model_card.json``
    (what the generator is: model/card.py), next to ``ckpt/``, ``metrics.csv``,
    ``tb/`` (TensorBoard), ``progress/`` (fixed-noise grids), ``losses.png``,
    ``result.json`` and ``lineage.json``. The version hashes the parameters and the
    upstream tasks; ``TrainDCGAN`` with the same settings is the same run.

    On several machines, each runs the same command with ``TF_CONFIG`` set
    (``MultiWorkerMirroredStrategy``; ``batch_size`` stays the global batch): only the chief
    writes this folder (docs/training.md, "Multi-worker training").
    """
    # Parameters added after runs existed, with the value the runs before them had: at it a run's
    # version (its folder) is as before (tasks/common.py version).
    added_later = {"data_fraction": 1.0, "ema_bn_batches": 0}
    dataset = luigi.Parameter(default="sample", description="Data set to train on.")
    variant = luigi.ChoiceParameter(default=DEFAULTS["variant"], choices=tuple(VARIANTS),
                                    description="GAN variant (model/variants/).")
    discriminator = luigi.ChoiceParameter(default=DEFAULTS["discriminator"], choices=DISCRIMINATORS,
                                          description="Discriminator network family.")
    generator = luigi.ChoiceParameter(default=DEFAULTS["generator"], choices=GENERATORS,
                                      description="Generator network family.")
    steps = luigi.IntParameter(default=DEFAULTS["steps"], description="Training steps (batches); with "
                                                                      "max_minutes, the most it trains.")
    max_minutes = luigi.FloatParameter(default=DEFAULTS["max_minutes"],
                                       description="Training budget in minutes (0: off): the run times its "
                                                   "first steps and trains as many as fit, at most --steps; "
                                                   "the count chosen is kept in budget.json and the model "
                                                   "card (model/train/budget.py).")
    batch_size = luigi.IntParameter(default=DEFAULTS["batch_size"], description="Global batch size (paper: 64).")
    lr = luigi.OptionalFloatParameter(default=None, description="Learning rate; empty: the variant's paper "
                                                                "value (DCGAN: Adam 0.0002).")
    beta1 = luigi.OptionalFloatParameter(default=None, description="Adam beta1; empty: the variant's "
                                                                   "(DCGAN: 0.5).")
    beta2 = luigi.OptionalFloatParameter(default=None, description="Adam beta2; empty: the variant's "
                                                                   "(DCGAN: 0.999).")
    d_lr = luigi.OptionalFloatParameter(default=None, description="The discriminator's own learning rate (the "
                                                                  "two time-scale update rule); empty: lr.")
    ema = luigi.FloatParameter(default=DEFAULTS["ema"], description="Decay of the moving average of the "
                                                                    "generator's weights, exported and used for "
                                                                    "the grids when on (0: off; e.g. 0.999).")
    ema_bn_batches = luigi.IntParameter(default=DEFAULTS["ema_bn_batches"],
                                        description="With ema: the averaged generator's batch-norm statistics "
                                                    "recomputed from this many batches of 64 of its own draws "
                                                    "(SWA's update_bn), not copied from the raw generator "
                                                    "(0: copied; e.g. 50).")
    augment = PolicyParameter(default=DEFAULTS["augment"], description="Differentiable augmentation of every "
                                                                       "discriminator input (DiffAugment), e.g. "
                                                                       "translation,cutout,color (none: off).")
    augment_p = luigi.FloatParameter(default=DEFAULTS["augment_p"],
                                     description="Probability that an image is augmented.")
    data_fraction = luigi.FloatParameter(default=DEFAULTS["data_fraction"],
                                         description="Share of the training images the run reads, in (0, 1]: "
                                                     "the split's first records, the same for every seed "
                                                     "(e.g. 0.1 for a less-data experiment).")
    z_dim = luigi.IntParameter(default=DEFAULTS["z_dim"], description="Dimension of z (paper: 100).")
    z_dist = luigi.ChoiceParameter(default=DEFAULTS["z_dist"], choices=Z_DISTS,
                                   description="Noise distribution: uniform in [-1, 1] (paper) or normal.")
    base_width = luigi.IntParameter(default=DEFAULTS["base_width"],
                                    description="Width of the last generator feature map; 128 gives "
                                                "4x4x1024 at 64x64.")
    kernel_size = luigi.IntParameter(default=DEFAULTS["kernel_size"],
                                     description="Convolution kernel side (4: reference Torch code; "
                                                 "5: DCGAN-tensorflow).")
    g_steps = luigi.IntParameter(default=DEFAULTS["g_steps"],
                                 description="Generator updates per discriminator update.")
    seed = luigi.IntParameter(default=DEFAULTS["seed"], description="Seed of weights, noise and data order.")
    precision = luigi.ChoiceParameter(default=DEFAULTS["precision"], choices=PRECISIONS,
                                      description="auto (mixed_bfloat16 on CPUs with AMX/AVX-512 BF16, "
                                                  "else float32), float32, mixed_bfloat16, or mixed_float16 "
                                                  "(GPUs, loss-scaled). Outputs stay float32.")
    options = luigi.DictParameter(default={}, description="The variant's own constants as JSON, e.g. "
                                                          "'{\"clip\": 0.01}' for wgan or "
                                                          "'{\"routing\": \"dynamic\"}' for the CapsNet "
                                                          "(docs/variants.md).")
    sample_every = luigi.IntParameter(default=DEFAULTS["sample_every"], significant=False,
                                      description="Steps between fixed-noise grids in progress/ and "
                                                  "TensorBoard (0: only at the end).")
    checkpoint_every = luigi.IntParameter(default=DEFAULTS["checkpoint_every"], significant=False,
                                          description="Steps between checkpoints.")
    log_every = luigi.IntParameter(default=DEFAULTS["log_every"], significant=False,
                                   description="Steps between metrics.csv rows and progress updates.")
    eval_every = luigi.IntParameter(default=0, significant=False,
                                    description="Steps between FID/KID evaluations written to eval.csv, "
                                                "at the next checkpoint (0: off; settings from "
                                                "[EvaluateGenerator], e.g. training_n).")

    def validate(self):
        """Refuse bad settings when the task is built, before anything runs."""
        side = self.expected_resolution()
        if side is not None and not resolution_ok(side):
            raise ConfigError(f"[DetectAlignFaces] size = {side}: a generator makes images 4 or 7 times a "
                              f"power of two (28, 32, 56, 64, 112, 128, ...); set --DetectAlignFaces-size")
        with settings_of(self):
            self.config(resolution=side or 64, channels=3)

    def expected_resolution(self) -> int | None:
        """The image side the records will have: the aligned size of a face data set (None for a
        labeled one, whose size is the source's)."""
        records = self.records()
        return None if records.labeled() else records.requires().size

    def requires(self):
        return self.records()

    def records(self) -> BuildTFRecords:
        """The records this run trains on."""
        return BuildTFRecords(dataset=self.dataset)

    def run_dir(self):
        return processed_dir("models", self.dataset, f"{self.variant}-{version(self, family='TrainGAN')}")

    def output(self):
        return {"keras": target(str(self.run_dir() / "generator.keras")),
                "saved_model": target(str(self.run_dir() / "saved_model"), folder=True),
                "card": target(str(self.run_dir() / "model_card.json"))}

    def config(self, resolution: int | None = None, channels: int | None = None,
               labels: list | None = None) -> TrainConfig:
        """The run's :class:`TrainConfig`; image size, channels and class names (labeled
        records) from the records."""
        if resolution is None:
            from pipeline.records import read_info
            resolution, _, channels = read_info(self.records().folder())["image_shape"]
        labels = list(labels or [])
        params = {f.name: getattr(self, f.name) for f in fields(TrainConfig) if hasattr(self, f.name)}
        params["options"] = json.loads(luigi.DictParameter().serialize(self.options))  # a plain dict
        return TrainConfig(**{**params, "resolution": resolution, "channels": channels, "labels": labels})

    def run(self):
        from model.train.data import class_names
        from model.train.distribute import is_chief, make_strategy
        from model.train.loop import train
        from model.variants import build_variant

        # First: under TF_CONFIG the multi-worker strategy must come before any TensorFlow op.
        strategy = make_strategy()
        chief = is_chief()  # only the chief of a TF_CONFIG cluster writes the run folder
        folder = self.records().folder()
        config = self.config(labels=class_names(folder))
        model = build_variant(config)
        run_dir = self.run_dir()
        if chief:
            run_dir.mkdir(parents=True, exist_ok=True)
            write_json(run_dir / "lineage.json", describe(self))
        data = training_data(folder, config, model)
        progress = Progress(self, config.steps, "steps", every=1)
        on_checkpoint = None
        if self.eval_every and chief:
            from luigi.task_register import Register

            from model.eval.evaluation import training_evaluator
            # EvaluateGenerator's settings ([EvaluateGenerator] in luigi.cfg), looked up by name
            # so that tasks/evaluate.py, which requires this task, is not imported back.
            settings = Register.get_task_cls("EvaluateGenerator")(dataset=self.dataset).settings()
            on_checkpoint = training_evaluator(run_dir, folder, settings, self.eval_every, config.steps,
                                               processed_dir("evaluations", self.dataset, "reference"),
                                               status=self.set_status_message)
        start = time.time()
        result = train(config, data, run_dir, progress, strategy=strategy, on_checkpoint=on_checkpoint,
                       model=model, dataset_card=dataset_card(self.dataset, folder))
        progress.close()
        if chief:  # wall-clock of this invocation (a resumed run counts only its own part)
            write_json(run_dir / "result.json", {**result, "seconds": round(time.time() - start, 1)})


def training_data(folder, config: TrainConfig, model):
    """The batches ``model`` (a variant) trains on, from the records version ``folder``: dicts
    of the features it reads, ``model.images_per_step()`` images each."""
    from model.train.data import training_dataset
    return training_dataset(folder, "train", model.images_per_step(), config.shuffle_buffer, config.seed,
                            features=model.features, attributes=model.data_attributes(),
                            fraction=config.data_fraction)


def dataset_card(dataset: str, folder) -> dict:
    """The model card's ``dataset``: name, records version and folder, split sizes."""
    from pipeline.records import read_info
    info = read_info(folder)
    return {"name": dataset, "version": info.get("version", ""), "records": str(folder),
            "splits": {s: v["num_examples"] for s, v in info["splits"].items()}}


class TrainDCGAN(TrainGAN):
    """The DCGAN of Radford et al. (2015): ``TrainGAN --variant dcgan`` (the same run
    folder for the same settings). The default entry point: ``make run`` and the
    nightly ``luigi --module tasks TrainDCGAN``. Its network and optimiser are the paper's;
    its ``ema`` and ``augment`` defaults are the recipe that won ``bench/quality.py``
    (model/train/recipes.py ``DCGAN_DEFAULT``; ``--TrainDCGAN-ema 0 --augment none`` trains the paper's
    way: luigi's parser takes a bare ``--ema`` for an abbreviation of its ``--email-*`` flags)."""
    variant = luigi.ChoiceParameter(default="dcgan", choices=("dcgan",),
                                    description="Always dcgan (use TrainGAN for the other variants).")
    ema = luigi.FloatParameter(default=recipe(DCGAN_DEFAULT)["ema"], description=TrainGAN.ema.description)
    augment = PolicyParameter(default=recipe(DCGAN_DEFAULT)["augment"], description=TrainGAN.augment.description)


#: EGANOptions' defaults: TrainEGAN's parameters take theirs from here.
G = defaults_of(EGANOptions)


class TrainEGAN(TrainGAN):
    """EGAN (model/variants/egan.py): a DCGAN whose generator takes attribute codes c beside
    z, tied by an extractor loss to brightness, sharpness or a CelebA attribute, so that c
    controls it at sampling time. ``TrainGAN --variant egan`` with these parameters as its
    ``options``; in ``pretrain`` mode an attribute extractor is the classifier of
    ``TrainAttributeClassifier`` (trained first, then frozen)."""
    # Parameters added after EGAN runs existed, with the value those runs had: at it the run's
    # version is as it was.
    added_later = {**TrainGAN.added_later, "weight_warmup": 0, "target": "coin", "d_condition": False,
                   "c_every_block": False, "sharpness_norm": 0.0, "z_pairs": False,
                   "pairs_from": "batch", "c_modulation": False,
                   "c_lowpass": False, "c_lowpass_draft": False, "pair_weight": 1.0,
                   "c_lowpass_only": False, "c_lowpass_fit": False,
                   "c_lowpass_split": False, "mode_seeking": 0.0, "ema_raw_mix": False}
    variant = luigi.ChoiceParameter(default="egan", choices=("egan",), description="Always egan.")
    z_dist = luigi.ChoiceParameter(default="uniform01", choices=Z_DISTS,
                                   description="Noise distribution; the thesis samples U(0, 1) (uniform01).")
    extractor = luigi.Parameter(default=",".join(EGANOptions().extractors),
                                description="brightness, sharpness or attribute; comma separated for "
                                            "several c (one per extractor).")
    attribute = luigi.Parameter(default="", description="CelebA attribute(s) for --extractor attribute, "
                                                        "e.g. Male or Male,Mouth_Slightly_Open.")
    mode = luigi.ChoiceParameter(default=G["mode"], choices=EGAN_MODES,
                                 description="Attribute extractors: pretrain (train the classifier first, "
                                             "then freeze it) or joint (update it each step on real images).")
    weight = luigi.FloatParameter(default=G["weight"], description="lambda, the weight of the extractor loss.")
    weight_warmup = luigi.IntParameter(default=G["weight_warmup"],
                                       description="Steps over which lambda ramps linearly from 0 (0: none, "
                                                   "the thesis).")
    c_max = luigi.FloatParameter(default=G["c_max"], description="Largest c a user may set (the card's range; "
                                                          "training draws c in [0, 1]).")
    c_distribution = luigi.ChoiceParameter(default=G["c_distribution"], choices=C_DISTRIBUTIONS,
                                           description="How training draws c: bernoulli (0 or 1, p = 1/2, "
                                                       "the thesis) or uniform (U(0, 1)).")
    target = luigi.ChoiceParameter(default=G["target"], choices=EGAN_TARGETS,
                                   description="What the extractor loss pulls F(G(z, c)) to: coin (BCE against "
                                               "c, the thesis) or quantile (the real faces' level at quantile "
                                               "c; needs --c-distribution uniform).")
    d_condition = luigi.BoolParameter(default=G["d_condition"],
                                      description="Quantile target: D also sees c (real faces: the level of "
                                                  "their own F), a projection discriminator.")
    c_every_block = luigi.BoolParameter(default=G["c_every_block"],
                                        description="c also enters every upsampling block of G, not only "
                                                    "its first projection (dcgan generator).")
    c_modulation = luigi.BoolParameter(default=G["c_modulation"],
                                       description="c also scales and shifts every block's batch-normalised "
                                                   "features in G (conditional batch norm; dcgan generator).")
    c_lowpass = luigi.BoolParameter(default=G["c_lowpass"],
                                    description="c also sets how much of a blurred copy of G's image is mixed "
                                                "into its output (dcgan generator).")
    c_lowpass_draft = luigi.BoolParameter(default=G["c_lowpass_draft"],
                                          description="With --c-lowpass: the mix also sees the edges of the "
                                                      "image G drew and spans sharpening (-0.5) to the full "
                                                      "blur, a feedback that cancels z's part of sharpness.")
    c_lowpass_only = luigi.BoolParameter(default=G["c_lowpass_only"],
                                         description="With --c-lowpass: c enters G by the blur mix alone, not "
                                                     "its first projection (the face drawn does not depend on c).")
    c_lowpass_fit = luigi.BoolParameter(default=G["c_lowpass_fit"],
                                        description="With --c-lowpass: the blur mix's weights learn from the "
                                                    "extractor loss alone, not D's verdict (D still trains "
                                                    "the face G draws).")
    c_lowpass_split = luigi.BoolParameter(default=G["c_lowpass_split"],
                                          description="With --c-lowpass-fit: the extractor loss trains the "
                                                      "blur mix alone; the face G draws learns from D alone.")
    sharpness_norm = luigi.FloatParameter(default=G["sharpness_norm"],
                                          description="Training's sharpness divides by the edges' p-norm "
                                                      "with this p (e.g. 12) instead of the strongest edge "
                                                      "(0: the formula).")
    z_pairs = luigi.BoolParameter(default=G["z_pairs"],
                                  description="Quantile target: each z drawn twice with two c's, the loss also "
                                              "on each pair's difference in F (z's part cancels).")
    pairs_from = luigi.ChoiceParameter(default=G["pairs_from"], choices=EGAN_PAIRS_FROM,
                                       description="z pairs: rows of G's batch (batch) or n/2 extra faces "
                                                   "drawn for the pair term alone, so D's batch keeps n z (extra).")
    pair_weight = luigi.FloatParameter(default=G["pair_weight"],
                                       description="z pairs: the pair term's weight beside the per-face term "
                                                   "(both times --weight); the pair term asks for c's slope.")
    mode_seeking = luigi.FloatParameter(default=G["mode_seeking"],
                                        description="Weight of MSGAN's mode-seeking term on the face G draws "
                                                    "(0: off; e.g. 1): keeps different z's faces apart.")
    ema_raw_mix = luigi.BoolParameter(default=G["ema_raw_mix"],
                                      description="With --c-lowpass-fit and --ema: the weight average copies "
                                                  "the blur mix's last weights instead of averaging them.")

    @classmethod
    def option_parameters(cls) -> dict:
        """This task's parameters that are EGAN options (``EGANOptions`` fields of the same name),
        by name: what :meth:`config` passes on as they are, and bench/egan.py's flags."""
        return {f.name: getattr(cls, f.name) for f in fields(EGANOptions)
                if isinstance(getattr(cls, f.name, None), luigi.Parameter)}

    def extractors(self) -> list[str]:
        """One extractor per c: the formulas by name, ``attribute`` expanded to ``--attribute``."""
        from model.apps.attributes import parse_attributes

        out = []
        for name in (e.strip() for e in self.extractor.split(",") if e.strip()):
            if name == "attribute":
                check(self, "extractor", bool(self.attribute), "needs --attribute NAME (a CelebA attribute "
                                                               "such as Male or Mouth_Slightly_Open)")
                with settings_of(self, "attribute"):
                    out += parse_attributes(self.attribute)
            else:
                check(self, "extractor", name in EXTRACTOR_FORMULAS,
                      f"{name!r} is not an extractor: choose brightness, sharpness or attribute")
                out.append(name)
        check(self, "extractor", bool(out), "names no extractor: choose brightness, sharpness or attribute")
        return out

    def classifier_task(self):
        """The pre-trained attribute classifier, or None (formulas only, or joint mode)."""
        if all(e.strip() in EXTRACTOR_FORMULAS for e in self.extractor.split(",") if e.strip()):
            return None
        from tasks.attributes import TrainAttributeClassifier

        attributes = [e for e in self.extractors() if e not in EXTRACTOR_FORMULAS]
        if not attributes or self.mode != "pretrain":
            return None
        return TrainAttributeClassifier(dataset=self.dataset, attributes=",".join(attributes))

    def requires(self):
        classifier = self.classifier_task()
        return [self.records()] + ([classifier] if classifier is not None else [])

    def config(self, resolution=None, channels=None, labels=None):
        options = {"extractors": self.extractors(),
                   **{name: getattr(self, name) for name in self.option_parameters()},
                   **json.loads(luigi.DictParameter().serialize(self.options))}
        classifier = self.classifier_task()
        if classifier is not None:
            options["classifier"] = classifier.output().path
        config = super().config(resolution, channels, labels)
        config.options = options
        return config


#: The training task of a variant whose runs other tasks read (others: TrainGAN --variant).
TRAINING_TASKS = {"dcgan": TrainDCGAN, "egan": TrainEGAN}


def training_task(dataset: str, variant: str = "dcgan") -> TrainGAN:
    """The training task ``ExportSamples``/``EvaluateGenerator`` of ``dataset`` and ``variant``
    require: ``TrainDCGAN`` (the default entry point, ``[TrainDCGAN]`` settings) for dcgan,
    ``TrainEGAN`` for egan, else ``TrainGAN --variant`` (``[TrainGAN]`` settings)."""
    if variant in TRAINING_TASKS:
        return TRAINING_TASKS[variant](dataset=dataset)
    return TrainGAN(dataset=dataset, variant=variant)


class TrainedRun:
    """What a task that reads a trained run declares (a mixin): the run of ``--dataset`` and
    ``--variant`` (trained first if needed, see :func:`training_task`), or any exported
    run folder given by ``--model`` (e.g. one copied from another machine), read through
    its model card."""
    dataset = luigi.Parameter(default="sample", description="Data set whose run to use.")
    variant = luigi.ChoiceParameter(default="dcgan", choices=tuple(VARIANTS),
                                    description="Variant whose run to use (dcgan: TrainDCGAN's run, "
                                                "others: TrainGAN's).")
    model = luigi.Parameter(default="", description="An exported run folder (with model_card.json) to use "
                                                    "instead of --dataset/--variant's training run.")

    def requires(self):
        return [] if self.model else training_task(self.dataset, self.variant)

    def run_folder(self):
        from pathlib import Path
        return Path(self.model) if self.model else self.requires().run_dir()

    def card(self):
        """The run's model card (a clear error when ``--model`` is not an exported run)."""
        from model.card import read_card
        return read_card(self.run_folder())

    def run_dataset(self) -> str:
        return (self.card().dataset.get("name") or self.dataset) if self.model else self.dataset

    def run_variant(self) -> str:
        return self.card().variant if self.model else self.variant

    def complete(self):
        if self.model:
            self.card()  # fail while scheduling, not after other work
        return super().complete()
