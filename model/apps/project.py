"""Projection: the generator inputs (z, and any other input of the model card) whose image is
closest to a given face, i.e. "start from my photo" in the studio.

    python -m model.apps.project photo.jpg [--model RUN] [--out projected.png]

The search is completion's (model/apps/inversion.py) with every pixel known and weighted 1:
the L1 distance over the whole aligned face, minimised by Adam from the best of
``candidates`` random draws, ``restarts`` at once. No discriminator term by default
(``lam`` 0): the photo itself is the target. The result says how close it got: PSNR
and SSIM of G(z) against the aligned face.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

from model.apps.inversion import FitSettings, check_images, fit_inputs, to_float

#: More iterations than completion: every pixel counts, and the fit is what is judged.
PROJECT_STEPS = 200
#: Iterations after a learned encoder's guess (a run with ``encoder.keras``): a refinement.
#: Chosen on the validation split (bench/project.py, docs/completion.md): from E(x), 30 steps
#: only tied the 50-step search's SSIM, 60 beat its PSNR and SSIM in 0.30 s per face.
REFINE_STEPS = 60


def project_faces(generator, card, images, *, steps: int | None = None, restarts: int = FitSettings.restarts,
                  seed: int = 0, lr: float = FitSettings.lr, candidates: int = FitSettings.candidates,
                  discriminator=None, lam: float = 0.0, fixed: dict | None = None,
                  batch: int = FitSettings.batch, progress: Callable[[int, int], None] | None = None,
                  on_step: Callable[[float], None] | None = None, encoder=None) -> dict:
    """Project aligned faces ``images`` ``(n, S, S, C) uint8`` onto the generator.

    Returns ``inputs`` ``{name: (n, size) float32}`` (feed them to the generator, the
    serving signature or the studio), ``images`` ``(n, S, S, C) uint8`` G(inputs), ``psnr``
    and ``ssim`` ``(n,)`` of those against ``images``, ``loss`` ``(steps, n)`` per
    iteration (``loss_restarts`` ``(steps, n, restarts)``) and ``seconds``. A
    ``discriminator`` with ``lam`` > 0 adds the perceptual loss; ``fixed`` holds inputs
    other than z at given values; ``progress`` and ``on_step`` are
    :func:`model.apps.inversion.fit_inputs`'s (``on_step`` may raise ``Cancelled`` to stop).
    With a run's ``encoder`` (model/apps/encoder.py) the search starts from E(images) among
    the candidates. ``steps`` defaults to :data:`REFINE_STEPS` with an encoder (a refinement of
    its guess) and :data:`PROJECT_STEPS` without."""
    from model.eval.metrics import psnr, ssim
    from model.train.sampling import to_uint8

    start = time.time()
    images = check_images(images, card)
    if steps is None:
        steps = REFINE_STEPS if encoder is not None else PROJECT_STEPS
    settings = FitSettings(steps=steps, restarts=restarts, candidates=candidates, lr=lr, lam=lam, batch=batch)
    guess = None
    if encoder is not None:
        from model.apps.encoder import encode
        guess = encode(encoder, images)
    fit = fit_inputs(generator, card, to_float(images), np.ones(images.shape[:3], np.float32),
                     discriminator=discriminator, settings=settings, seed=seed, fixed=fixed, progress=progress,
                     on_step=on_step, guess=guess)
    out = to_uint8(fit.images)
    return {"inputs": fit.inputs, "images": out, "psnr": psnr(out, images), "ssim": ssim(out, images),
            "loss": fit.loss, "loss_restarts": fit.loss_restarts, "d_score": fit.d_score,
            "seconds": time.time() - start}


def main(argv=None) -> int:
    """``python -m model.apps.project IMAGE``: prints one JSON line with the inputs found, PSNR and SSIM."""
    from model.apps.complete import add_fit_arguments, cli

    parser = argparse.ArgumentParser(prog="python -m model.apps.project", description=__doc__.split("\n")[0])
    parser.add_argument("image", help="a photo (its largest face is projected), or an aligned face with --aligned")
    parser.add_argument("--out", default="", help="also write G(inputs), the projected face, as PNG here")
    add_fit_arguments(parser)
    parser.set_defaults(steps=None)  # PROJECT_STEPS, or REFINE_STEPS when the run has an encoder
    return cli(_project_cli, parser.parse_args(argv))


def _project_cli(args) -> int:
    from model.apps.complete import read_face
    from model.apps.encoder import load_encoder
    from model.apps.inversion import aligner_for, load_networks, newest_run
    from model.train.sampling import save_png

    run = Path(args.model) if args.model else newest_run()
    card, generator, _, _ = load_networks(run, args.precision, discriminator=False)
    face = read_face(args.image, card, aligner_for(card, run), args.aligned)["face"]
    encoder = load_encoder(run)
    result = project_faces(generator, card, face[None], steps=args.steps, restarts=args.restarts, seed=args.seed,
                           lr=args.lr, candidates=args.candidates, encoder=encoder)
    if args.out:
        save_png(result["images"][0], args.out)
    print(json.dumps({"image": args.image, "model": str(run), "out": args.out or None,
                      "encoder": encoder is not None, "steps": int(result["loss"].shape[0]),
                      "psnr": round(float(result["psnr"][0]), 2), "ssim": round(float(result["ssim"][0]), 4),
                      "loss_start": float(result["loss"][0, 0]), "loss_end": float(result["loss"][-1, 0]),
                      "seconds": round(result["seconds"], 2),
                      "inputs": {k: np.round(v[0], 5).tolist() for k, v in result["inputs"].items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
