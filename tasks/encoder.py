"""TrainEncoder: a learned inverse of a run's generator (model/apps/encoder.py), written into
the run folder and declared in its model card, for projection and completion."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import luigi

from model.config import EncoderSettings
from tasks.attributes import check_run_dir, newest_run
from tasks.common import Progress, defaults_of
from tasks.errors import Checked, settings_of
from tasks.storage import stored_json, target

E = defaults_of(EncoderSettings)


class TrainEncoder(Checked, luigi.Task):
    """Trains an encoder E from aligned faces to the generator's inputs for one run (in-domain
    GAN inversion): on the generator's own samples (latent and image loss) and on the real
    training faces of the run's records (image loss). Writes ``encoder.keras`` and
    ``encoder.json`` (settings, losses, held-out latent error) into the run folder and adds
    ``encoder`` to its model card; projection, completion and the studio then start from E.
    Re-runs when a setting changes."""
    run_dir = luigi.Parameter(default="", description="Run folder holding generator.keras and model_card.json "
                                                      "(default: the newest under processed/models).")
    steps = luigi.IntParameter(default=E["steps"], description="Adam steps.")
    batch_size = luigi.IntParameter(default=E["batch_size"], description="Generated faces per step (and as many "
                                                                          "real faces).")
    lr = luigi.FloatParameter(default=E["lr"], description="Adam learning rate (beta1 0.5).")
    base_width = luigi.IntParameter(default=E["base_width"], description="Channels of E's first convolution.")
    latent_weight = luigi.FloatParameter(default=E["latent_weight"], description="Weight of |E(G(w)) - w|^2.")
    image_weight = luigi.FloatParameter(default=E["image_weight"], description="Weight of the image losses "
                                                                               "|G(E(x)) - x| (0: latent only).")
    real_faces = luigi.BoolParameter(default=True, parsing=luigi.BoolParameter.EXPLICIT_PARSING,
                                     description="Train the image loss on the run's real training faces too "
                                                 "(the records its card names).")
    seed = luigi.IntParameter(default=E["seed"], description="Seed of E's weights, the draws and the data order.")

    def settings(self) -> EncoderSettings:
        return EncoderSettings(**{name: getattr(self, name) for name in E})

    def validate(self):
        with settings_of(self):
            self.settings()
        check_run_dir(self)

    def run_path(self) -> Path:
        return Path(self.run_dir) if self.run_dir else newest_run()

    def output(self):
        from model.apps.encoder import ENCODER_INFO
        return target(str(self.run_path() / ENCODER_INFO))

    def records(self) -> str | None:
        from model.card import read_card
        records = read_card(self.run_path()).dataset.get("records") if self.real_faces else None
        return records if records and Path(records).is_dir() else None

    def complete(self):
        stored = stored_json(self.output())
        if stored is None:
            return False
        return stored.get("settings") == asdict(self.settings()) and stored.get("records") == self.records()

    def run(self):
        from model.apps.encoder import fit_encoder

        progress = Progress(self, self.steps, "steps", every=50)
        info = fit_encoder(self.run_path(), self.records(), self.settings(), progress)
        progress.close()
        self.set_status_message(f"held-out latent MSE {info['heldout_latent_mse']}")
