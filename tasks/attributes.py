"""The CelebA attribute classifier and a generator's attribute directions in z."""
from __future__ import annotations

from pathlib import Path

import luigi

from tasks.common import Progress, processed_dir, version
from tasks.errors import Checked, at_least, check, settings_of
from tasks.records import BuildTFRecords
from tasks.storage import stored_json, target

#: Attributes trained and fitted unless told otherwise (the ones the EGAN thesis and
#: InterFaceGAN edit, plus a few that a face editor is asked for).
DEFAULT_ATTRIBUTES = ("Male,Smiling,Mouth_Slightly_Open,Eyeglasses,Wearing_Lipstick,Young,"
                      "Blond_Hair,Black_Hair,Bangs,Heavy_Makeup,No_Beard,Pale_Skin")


def check_attributes(task: luigi.Task) -> None:
    """``task.attributes`` must be CelebA attribute names (one line listing the valid ones)."""
    from model.apps.attributes import parse_attributes

    with settings_of(task, "attributes"):
        parse_attributes(task.attributes)


class TrainAttributeClassifier(Checked, luigi.Task):
    """Trains the CelebA attribute classifier (model/apps/attributes.py) on real records.

    Output: ``processed/classifiers/{dataset}/attributes-{version}/`` with
    ``classifier.keras`` and ``classifier.json`` (attributes, held-out accuracy per
    attribute next to the majority-class rate, records version).
    """
    dataset = luigi.Parameter(default="celeba", description="Data set whose records carry the attributes.")
    attributes = luigi.Parameter(default=DEFAULT_ATTRIBUTES,
                                 description="Comma-separated CelebA attribute names, one sigmoid output each.")
    epochs = luigi.IntParameter(default=30, description="Passes over the train split; the epoch with the "
                                                        "best mean validation accuracy is kept.")
    batch_size = luigi.IntParameter(default=64, description="Batch size.")
    lr = luigi.FloatParameter(default=1e-3, description="Adam learning rate (beta1 0.5).")
    width = luigi.IntParameter(default=32, description="Channels of the first conv layer (then 2x, 4x).")
    seed = luigi.IntParameter(default=0, description="Seed of weights, data order and flips.")

    def validate(self):
        check_attributes(self)
        for name in ("epochs", "batch_size", "width"):
            at_least(self, name, 1)
        check(self, "lr", self.lr > 0, "must be positive")

    def requires(self):
        return BuildTFRecords(dataset=self.dataset)

    def output(self):
        return target(str(processed_dir("classifiers", self.dataset, f"attributes-{version(self)}")), folder=True)

    def run(self):
        from model.apps.attributes import parse_attributes, train_classifier

        names = parse_attributes(self.attributes)
        progress = Progress(self, self.epochs, "epochs")
        card = train_classifier(self.requires().folder(), names, self.output().path, epochs=self.epochs,
                                batch_size=self.batch_size, lr=self.lr, width=self.width, seed=self.seed,
                                progress=lambda done, total, extra: progress(done, total, extra))
        progress.close()
        self.set_status_message(f"mean held-out accuracy {card['mean_test_accuracy']}")


def parse_names(text: str) -> list[str]:
    """The comma-separated attribute names of a parameter (checked when the task runs)."""
    return [n.strip() for n in text.split(",") if n.strip()]


def check_run_dir(task: luigi.Task) -> None:
    """A task's ``run_dir`` parameter, when set, names a run folder with a model card."""
    if task.run_dir:
        from model.card import CARD_FILE
        check(task, "run_dir", (Path(task.run_dir) / CARD_FILE).is_file(),
              f"holds no {CARD_FILE}: give a run folder of an exported generator")


def newest_run() -> Path:
    """The newest run folder with a model card under processed/models."""
    from model.card import newest_run as newest

    return newest(processed_dir("models"), "train one first, or pass --run <run folder>")


class FitAttributeDirections(Checked, luigi.Task):
    """Fits one direction in z per attribute for a run's generator (model/apps/directions.py)
    and writes ``directions.json`` into the run folder, for the studio's sliders.

    Attributes whose boundary is no better than chance are listed under ``dropped``
    with the reason. Re-runs when the classifier or the sampling settings change.
    """
    run_dir = luigi.Parameter(default="", description="Run folder holding generator.keras and "
                                                      "model_card.json (default: the newest under "
                                                      "processed/models).")
    dataset = luigi.Parameter(default="celeba", description="Data set of the attribute classifier.")
    attributes = luigi.Parameter(default=DEFAULT_ATTRIBUTES, description="Comma-separated attributes to fit.")
    n = luigi.IntParameter(default=10_000, description="Inputs sampled and scored.")
    seed = luigi.IntParameter(default=0, description="Seed of the sampled inputs and the held-out split.")
    keep = luigi.FloatParameter(default=0.5, description="Fraction of the samples used: the top and bottom "
                                                         "keep/2 by classifier score (InterFaceGAN).")
    holdout = luigi.FloatParameter(default=0.2, description="Fraction of the kept samples held out to "
                                                            "measure each boundary's accuracy.")

    def validate(self):
        check_attributes(self)
        at_least(self, "n", 100, "the boundaries are fitted and tested on a part of the samples")
        check(self, "keep", 0 < self.keep <= 1, "must be in (0, 1]")
        check(self, "holdout", 0 < self.holdout < 1, "must be in (0, 1)")
        check_run_dir(self)

    def requires(self):
        return TrainAttributeClassifier(dataset=self.dataset, attributes=self.attributes)

    def run_path(self) -> Path:
        return Path(self.run_dir) if self.run_dir else newest_run()

    def output(self):
        from model.card import DIRECTIONS_FILE
        return target(str(self.run_path() / DIRECTIONS_FILE))

    def complete(self):
        # directions.json from another classifier or other settings is out of date.
        stored = stored_json(self.output())
        if stored is None:
            return False
        wanted = {"samples": self.n, "seed": self.seed, "keep": self.keep, "holdout": self.holdout,
                  "names": sorted(parse_names(self.attributes))}
        names = sorted(d["name"] for d in stored.get("directions", []) + stored.get("dropped", []))
        return (stored.get("classifier", {}).get("folder") == self.input().path and names == wanted["names"]
                and all(stored.get(k) == v for k, v in wanted.items() if k != "names"))

    def run(self):
        from model.apps.attributes import load_classifier, parse_attributes
        from model.apps.directions import fit_directions, write_directions
        from model.card import load_generator

        names = parse_attributes(self.attributes)
        classifier = load_classifier(self.input().path)
        card, generator = load_generator(self.run_path())
        cols = classifier.columns(names)
        progress = Progress(self, self.n, "faces scored", every=1000)
        directions = fit_directions(generator, card, lambda images: classifier.predict(images)[:, cols], names,
                                    n=self.n, seed=self.seed, keep=self.keep, holdout=self.holdout,
                                    progress=progress)
        progress.close()
        directions["classifier"] = {"folder": str(self.input().path), "records": classifier.card["records"],
                                    "accuracy": {n: classifier.card["accuracy"][n] for n in names}}
        write_directions(self.run_path(), directions)
        self.set_status_message(f"kept {[d['name'] for d in directions['directions']]}, "
                                f"dropped {[d['name'] for d in directions['dropped']]}")
