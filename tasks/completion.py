"""Training a completion network on the records of a data set (model/apps/completion_net.py does the work)."""
from __future__ import annotations

import time
from dataclasses import fields

import luigi

from model.config import PRECISIONS, CompletionConfig
from pipeline.atomic import write_json
from tasks.common import Progress, defaults_of, describe, processed_dir, version
from tasks.errors import Checked, settings_of
from tasks.records import BuildTFRecords
from tasks.storage import target

#: The one default of each completion training setting (model/config.py).
C = defaults_of(CompletionConfig)


class TrainCompletion(Checked, luigi.Task):
    """Trains a completion network (model/variants/completion.py) on the train split of a data
    set's records, with holes drawn as it goes (center, eyes, mouth, free-form strokes), on
    the one training loop; re-running resumes from the last checkpoint.

    Output: ``processed/completion/{dataset}/{version}/``: ``completion.keras`` (the float32
    network, written last) and ``completion_card.json`` (the records version it belongs to;
    completions of a generator trained on the same records find it there), next to ``ckpt/``,
    ``metrics.csv``, ``tb/`` (TensorBoard), ``progress/`` (input and completion of 32 fixed
    held-out faces), ``losses.png``, ``result.json`` and ``lineage.json``. docs/completion.md.
    """
    dataset = luigi.Parameter(default="sample", description="Data set whose records to train on.")
    steps = luigi.IntParameter(default=C["steps"], description="Training steps (batches); with max_minutes, "
                                                               "the most it trains.")
    max_minutes = luigi.FloatParameter(default=C["max_minutes"], description="Training budget in minutes (0: "
                                                                             "off), as TrainGAN's.")
    batch_size = luigi.IntParameter(default=C["batch_size"], description="Faces per step.")
    width = luigi.IntParameter(default=C["width"], description="Channels of the network's first convolution "
                                                               "(2x and 4x deeper down).")
    d_width = luigi.IntParameter(default=C["d_width"], description="Channels of the discriminators' first "
                                                                   "convolution.")
    lr = luigi.FloatParameter(default=C["lr"], description="Adam learning rate (network and discriminators).")
    beta1 = luigi.FloatParameter(default=C["beta1"], description="Adam beta1.")
    beta2 = luigi.FloatParameter(default=C["beta2"], description="Adam beta2.")
    known_weight = luigi.FloatParameter(default=C["known_weight"], description="Weight of the L1 loss on the "
                                                                               "known pixels (the hole's is 1).")
    adversarial = luigi.FloatParameter(default=C["adversarial"], description="Weight of the adversarial loss "
                                                                             "(0: L1 only, no discriminator).")
    local = luigi.BoolParameter(default=C["local"], parsing=luigi.BoolParameter.EXPLICIT_PARSING,
                                description="Add a local discriminator on a half-side square around the hole "
                                            "(Iizuka et al. 2017).")
    flip = luigi.BoolParameter(default=C["flip"], parsing=luigi.BoolParameter.EXPLICIT_PARSING,
                               description="Mirror half of the training faces.")
    seed = luigi.IntParameter(default=C["seed"], description="Seed of weights, holes and data order.")
    precision = luigi.ChoiceParameter(default=C["precision"], choices=PRECISIONS,
                                      description="As TrainGAN's (auto: mixed_bfloat16 where the CPU has it); "
                                                  "the exported network is float32.")
    log_every = luigi.IntParameter(default=C["log_every"], significant=False,
                                   description="Steps between metrics.csv rows.")
    checkpoint_every = luigi.IntParameter(default=C["checkpoint_every"], significant=False,
                                          description="Steps between checkpoints.")
    sample_every = luigi.IntParameter(default=C["sample_every"], significant=False,
                                      description="Steps between grids in progress/ (0: only at the end).")

    def config(self, resolution: int = 64, channels: int = 3) -> CompletionConfig:
        params = {f.name: getattr(self, f.name) for f in fields(CompletionConfig) if hasattr(self, f.name)}
        return CompletionConfig(**{**params, "resolution": resolution, "channels": channels})

    def validate(self):
        records = self.requires()
        side = None if records.labeled() else records.requires().size
        with settings_of(self):
            self.config(resolution=side or 64)

    def requires(self):
        return BuildTFRecords(dataset=self.dataset)

    def run_dir(self):
        return processed_dir("completion", self.dataset, version(self))

    def output(self):
        from model.variants.completion import NETWORK_FILE
        return target(str(self.run_dir() / NETWORK_FILE))

    def run(self):
        from model.apps.completion_net import train_completion
        from pipeline.records import read_info
        from tasks.train import dataset_card

        folder = self.requires().folder()
        side, _, channels = read_info(folder)["image_shape"]
        config = self.config(side, channels)
        run_dir = self.run_dir()
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / "lineage.json", describe(self))
        progress = Progress(self, config.steps, "steps", every=1)
        start = time.time()
        result = train_completion(config, folder, run_dir, dataset_card(self.dataset, folder), progress)
        progress.close()
        write_json(run_dir / "result.json", {**result, "seconds": round(time.time() - start, 1)})
