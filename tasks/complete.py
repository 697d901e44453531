"""Completing the faces of a folder of photos with a trained run (model/apps/complete.py does the work)."""
from __future__ import annotations

import hashlib
import json
from dataclasses import fields
from pathlib import Path

import luigi

from model.apps.complete import BLENDS, KEEP, KEEPS, MASKS
from model.apps.completion_net import METHODS
from model.apps.inversion import FitSettings
from pipeline.atomic import atomic_dir
from tasks.common import Progress, describe, processed_dir, report_records, version
from tasks.storage import target
from tasks.train import TrainedRun

_FIT = {f.name: f.default for f in fields(FitSettings)}


class CompleteFaces(TrainedRun, luigi.Task):
    """Completes the largest face of every photo in ``--input-dir`` (detected and aligned by the
    pipeline's own aligner, with the run's alignment settings) under ``--mask``, and pastes
    each result back into its photo through the inverse alignment transform.

    ``--method net`` fills the holes with the completion network trained on the records the
    run's card names (``TrainCompletion``), ``search`` with the search over the generator's
    inputs; ``auto`` takes the network when there is one (``index.json`` says which ran).

    Output: ``processed/completions/{dataset}/{variant}-{version}/``: per photo
    ``<photo>/completed.png`` (G(z)), ``aligned.png`` (blended aligned face), ``photo.png``
    (the photo, only the hole changed), ``report.png`` (input, mask, completion, blended,
    original, loss curve) and ``loss.json``; ``index.json`` and ``index.md`` list every
    photo with its figures and flags, and the photos without a face with the reason.
    Re-runs when the photos in the folder change. See docs/completion.md.
    """
    input_dir = luigi.Parameter(description="Folder of photos (every image file under it, by suffix).")
    mask = luigi.ChoiceParameter(default="center", choices=MASKS, description="Which part of the aligned face "
                                                                              "is missing.")
    mask_file = luigi.Parameter(default="", description="A mask image of the aligned size (white = missing) "
                                                        "instead of --mask.")
    method = luigi.ChoiceParameter(default="auto", choices=METHODS,
                                   description="net (the completion network trained on the run's records), "
                                               "search, or auto (net when there is one, else search).")
    completion = luigi.Parameter(default="", description="A completion run folder to use instead of the one "
                                                         "trained on the run's records.")
    blend = luigi.ChoiceParameter(default="poisson", choices=BLENDS, description="poisson (the hole solved "
                                                                                 "from the completion's gradients "
                                                                                 "and its known border) or paste.")
    keep = luigi.ChoiceParameter(default=KEEP, choices=KEEPS, description="What fills the hole: the best "
                                                                          "restart's G(z) or the mean of all.")
    steps = luigi.IntParameter(default=_FIT["steps"], description="Adam iterations per restart.")
    restarts = luigi.IntParameter(default=_FIT["restarts"], description="Optimised starting points per face.")
    candidates = luigi.IntParameter(default=_FIT["candidates"], description="Random draws scored to pick "
                                                                            "the restarts.")
    lr = luigi.FloatParameter(default=_FIT["lr"], description="Adam learning rate.")
    lam = luigi.FloatParameter(default=_FIT["lam"], description="Weight of the perceptual loss "
                                                                "log(1 - D(G(z))) (Yeh et al.: 0.003).")
    seed = luigi.IntParameter(default=0, description="Seed of the starting points (and random masks).")
    precision = luigi.Parameter(default="auto", significant=False,
                                description="float32, mixed_bfloat16, or auto (bfloat16 where the CPU has it).")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        FitSettings(steps=self.steps, restarts=self.restarts, candidates=self.candidates, lr=self.lr,
                    lam=self.lam)  # refuse bad settings before anything runs
        if not Path(self.input_dir).is_dir():
            raise ValueError(f"CompleteFaces: --input-dir {self.input_dir!r} is not a folder")

    def photos(self) -> list[tuple[str, Path]]:
        from pipeline.sources.base import list_images
        return [(key, Path(self.input_dir) / key) for key in list_images(self.input_dir)]

    def _inputs_digest(self) -> str:
        """What the output depends on besides the parameters: the photos and the mask file."""
        items = []
        for key, path in self.photos():
            stat = path.stat()
            items.append([key, stat.st_size, stat.st_mtime_ns])
        if self.mask_file:
            items.append(["mask", hashlib.sha256(Path(self.mask_file).read_bytes()).hexdigest()])
        return hashlib.sha256(json.dumps(items).encode()).hexdigest()[:16]

    def output(self):
        folder = processed_dir("completions", self.run_dataset(), f"{self.run_variant()}-{version(self)}")
        return {"json": target(str(folder / "index.json")),
                "md": target(str(folder / "index.md"))}

    def complete(self):
        path = Path(self.output()["json"].path)
        if not path.exists():
            return super().complete()
        return report_records(path, "inputs_digest", self._inputs_digest())

    def run(self):
        from model.apps.complete import complete_photos, read_mask_file
        from model.apps.completion_net import choose_method
        from model.apps.inversion import aligner_for, load_networks
        from model.card import read_card

        run_dir = self.run_folder()
        chosen = choose_method(self.method, read_card(run_dir), run_dir, self.completion)
        if chosen["method"] == "net":
            card, generator, discriminator, note = read_card(run_dir), None, None, ""
            encoder = None
        else:
            from model.apps.encoder import load_encoder

            card, generator, discriminator, note = load_networks(run_dir, self.precision)
            encoder = load_encoder(run_dir)  # the search also starts from E(x) when the run has one
        note = "; ".join(n for n in (chosen["note"], note) if n)
        aligner = aligner_for(card, run_dir)
        mask = read_mask_file(self.mask_file, card.resolution) if self.mask_file else self.mask
        photos = self.photos()
        digest = self._inputs_digest()
        self.set_status_message(f"aligning {len(photos)} photos")
        progress = Progress(self, len(photos), "faces")
        folder = Path(self.output()["json"].path).parent
        with atomic_dir(folder) as tmp:
            index = complete_photos(photos, tmp, generator, discriminator, card, aligner, mask,
                                    blend_method=self.blend, seed=self.seed, progress=progress, note=note,
                                    extra={"inputs_digest": digest, "run": str(run_dir), "lineage": describe(self),
                                           "mask_file": self.mask_file or None,
                                           "completion": str(chosen["run"]) if chosen["run"] else None,
                                           "encoder": encoder is not None},
                                    network=chosen["network"],
                                    steps=self.steps, restarts=self.restarts, candidates=self.candidates,
                                    lr=self.lr, lam=self.lam, keep=self.keep, encoder=encoder)
        progress(len(photos))
        progress.close()
        c = index["counts"]
        self.set_status_message(f"{c['completed']} completed by {index['method']} ({c['flagged']} flagged), "
                                f"{c['rejected']} without a face")
