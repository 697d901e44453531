"""Face completion: fill the missing part of an aligned face with a trained generator
(semantic inpainting, Yeh et al. 2017), blend it in, and paste it back into the photo.

    python -m model.apps.complete photo.jpg --mask center --out result.png [--model RUN] [--method auto]

Two methods fill the hole: ``net``, the completion network trained on the run's records
(model/apps/completion_net.py, ``TrainCompletion``), and ``search``, the search over the
generator's inputs below; ``auto`` (the default) takes the network when there is one.

* masks (:func:`make_mask`): ``True`` = missing, in aligned-face pixels;
* :func:`context_weights`: Yeh et al.'s importance weights of the known pixels;
* :func:`complete_faces`: the search (model/apps/inversion.py) and the blend, arrays in/out;
* :func:`blend`: Poisson blending (an exact sparse solve) or a plain paste, given the
  known pixels and the completion only: the hole's original pixels never reach it;
* :func:`paste_back`: the aligned result into the original photo through the inverse
  of the aligner's source->aligned transform (only the hole changes);
* :func:`complete_photos`: photos in (decoded, detected and aligned by the pipeline's
  own code), results, report grids and an index out (the CompleteFaces task's work).

docs/completion.md describes the method, its parameters and the benchmark.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

from model.apps.blend import BLENDS, blend  # noqa: F401  (re-exported: the public names stay importable here)
from model.apps.inversion import FitSettings, check_images, to_float
from model.apps.masks import (  # noqa: F401  (re-exported)
    FEATURE_LANDMARKS,
    FEATURE_PAD,
    GRID_PITCH,
    MASKS,
    RANDOM_MISSING,
    WINDOW,
    build_masks,
    check_mask,
    context_weights,
    make_mask,
    read_mask_file,
)
from model.apps.quality import QualityLimits  # noqa: F401  (re-exported)

#: What fills the hole from the optimised restarts: ``best``, the restart with the lowest
#: loss (Yeh et al.), or ``mean``, the mean of every restart's G(z): where the restarts
#: disagree (details the known pixels do not decide) the mean keeps what they share.
KEEPS = ("best", "mean")
KEEP = "best"


# -- completion ---------------------------------------------------------------------------------

def keep_restarts(restart_completed: np.ndarray, restart: np.ndarray, keep: str = KEEP) -> np.ndarray:
    """What fills the hole, ``(n, S, S, C) uint8``, from every restart's G(z) ``(n, R, S, S, C)
    uint8``: the best restart's (``restart`` ``(n,)`` its index) or the mean of all (:data:`KEEPS`)."""
    if keep not in KEEPS:
        raise ValueError(f"keep must be one of {KEEPS}, got {keep!r}")
    if keep == "best":
        return restart_completed[np.arange(len(restart_completed)), restart]
    return np.rint(restart_completed.astype(np.float32).mean(1)).astype(np.uint8)


def complete_faces(generator, discriminator, card, images, masks, *, steps: int = FitSettings.steps,
                   restarts: int = FitSettings.restarts, seed: int = 0, lr: float = FitSettings.lr,
                   lam: float = FitSettings.lam, candidates: int = FitSettings.candidates,
                   window: int = WINDOW, blend_method: str = "poisson", keep: str = KEEP,
                   fixed: dict | None = None, batch: int = FitSettings.batch, limits: QualityLimits | None = None,
                   progress: Callable[[int, int], None] | None = None,
                   on_step: Callable[[float], None] | None = None, encoder=None) -> dict:
    """Complete aligned faces.

    ``images`` ``(n, S, S, C) uint8`` aligned faces (what is under the hole is ignored),
    ``masks`` ``(n, S, S) bool`` (or one ``(S, S)`` for all), ``True`` = missing;
    ``discriminator`` may be None (no perceptual loss). ``fixed`` holds inputs other than
    z at given values (see model/apps/inversion.py for how each kind of input is handled).
    ``progress`` and ``on_step`` are :func:`model.apps.inversion.fit_inputs`'s (``on_step``
    may raise ``Cancelled`` to stop the search between steps). With a run's ``encoder``
    (model/apps/encoder.py) the search also starts from E of the harmonic fill (the known
    pixels with the hole Poisson-filled from a flat face). Returns

    * ``completed`` ``(n, S, S, C) uint8``: the whole generated face, G(inputs) of the
      best restart (``keep`` ``best``) or the mean of every restart's (``mean``);
    * ``restart_completed`` ``(n, restarts, S, S, C) uint8``: every restart's G(z);
    * ``blended`` ``(n, S, S, C) uint8``: the known pixels with the hole filled
      (``blend_method`` ``poisson`` or ``paste``);
    * ``inputs`` ``{name: (n, size) float32}``: the generator inputs found;
    * ``loss`` ``(steps, n)``: the loss per iteration of the restart kept
      (``loss_restarts`` ``(steps, n, restarts)``), ``contextual``, ``perceptual``,
      ``total``, ``d_score`` ``(n,)`` at the end, ``restart`` ``(n,)``;
    * ``known_error`` ``(n,)``: mean absolute error of G(inputs) on all known pixels, and
      ``context_error`` ``(n,)`` on the known pixels around the hole (weighted as the
      contextual loss weighs them), in grey levels; ``flags`` a list per image of what
      looks wrong (:class:`QualityLimits`; ``d_floor`` the D score below which a face is
      flagged), ``ok`` ``(n,) bool``;
    * ``masks``, ``weights`` ``(n, S, S)`` and ``seconds``.
    """
    start = time.time()
    images = check_images(images, card)
    masks = np.asarray(masks, bool)
    S = card.resolution
    if masks.ndim == 2:
        masks = np.repeat(check_mask(masks, S)[None], len(images), axis=0)
    if masks.shape != images.shape[:3]:
        raise ValueError(f"masks must be ({len(images)}, {S}, {S}) bool (one per image), got {masks.shape}")
    for i, m in enumerate(masks):
        check_mask(m, S, f"mask {i}")
    if blend_method not in BLENDS:
        raise ValueError(f"blend must be one of {BLENDS}, got {blend_method!r}")
    if keep not in KEEPS:
        raise ValueError(f"keep must be one of {KEEPS}, got {keep!r}")
    settings = FitSettings(steps=steps, restarts=restarts, candidates=candidates, lr=lr, lam=lam, batch=batch)
    known = np.where(masks[..., None], 0, images).astype(np.uint8)  # the hole is never read again
    weights = context_weights(masks, window)
    guess = None
    if encoder is not None:
        from model.apps.encoder import encode
        guess = encode(encoder, blend(known, np.full_like(known, 128), masks, "poisson"))
    from model.apps.inversion import fit_inputs
    fit = fit_inputs(generator, card, to_float(known), weights, discriminator=discriminator,
                     settings=settings, seed=seed, fixed=fixed, progress=progress, on_step=on_step, guess=guess)
    from model.train.sampling import generate
    restarts = fit.restart_loss.shape[1]
    every = generate(generator, {k: v.reshape(len(images) * restarts, -1) for k, v in fit.restart_inputs.items()})
    every = every.reshape(len(images), restarts, *every.shape[1:])
    completed = keep_restarts(every, fit.restart, keep)
    diff = np.abs(completed.astype(np.float32) - known.astype(np.float32)).mean(-1)
    known_error = (diff * ~masks).sum((1, 2)) / (~masks).sum((1, 2))
    context_error = (diff * weights).sum((1, 2)) / np.maximum(weights.sum((1, 2)), 1e-9)
    limits = limits or QualityLimits()
    d_floor = float(np.quantile(fit.sample_d_scores, limits.d_quantile)) if len(fit.sample_d_scores) else None
    flags = []
    for err, d in zip(context_error, fit.d_score):
        f = []
        if err > limits.max_context_error:
            f.append(f"poor fit: the generated face misses the known pixels around the hole by {err:.1f} grey "
                     f"levels (limit {limits.max_context_error:g})")
        if d_floor is not None and d < d_floor:
            f.append(f"unrealistic: the discriminator scores it {d:.3g}, below {100 * (1 - limits.d_quantile):g}% "
                     f"of the generator's random samples ({d_floor:.3g})")
        flags.append(f)
    searched = {k: v for k, v in fit.as_dict().items() if k != "images"}
    return {**searched, "completed": completed, "restart_completed": every,
            "blended": blend(known, completed, masks, blend_method), "known_error": known_error.astype(np.float32),
            "context_error": context_error.astype(np.float32), "d_floor": d_floor,
            "flags": flags, "ok": np.array([not f for f in flags]), "masks": masks, "weights": weights,
            "seconds": time.time() - start}


# -- back into the photo ------------------------------------------------------------------------

def paste_back(photo: np.ndarray, aligned: np.ndarray, hole: np.ndarray, transform: np.ndarray,
               method: str = "poisson") -> np.ndarray:
    """``photo`` ``(H, W, 3) uint8`` with the hole of an aligned face replaced.

    ``aligned`` ``(S, S, 3) uint8`` is the completed face, ``hole`` ``(S, S) bool`` its
    mask, ``transform`` the ``(2, 3)`` source->aligned matrix the aligner reported
    (pipeline/align/aligner.py ``Face.transform``, kept in ``faces.jsonl``). The face is warped
    back through its inverse; only photo pixels whose aligned position lies in the hole
    change, blended into their neighbours as :func:`blend` does (``poisson`` or ``paste``)."""
    import cv2

    photo = np.asarray(photo)
    h, w = photo.shape[:2]
    matrix = np.asarray(transform, np.float64)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    face = cv2.warpAffine(np.ascontiguousarray(aligned), matrix, (w, h), flags=flags, borderMode=cv2.BORDER_REPLICATE)
    if face.ndim == 2:
        face = face[..., None]
    region = cv2.warpAffine(hole.astype(np.float32), matrix, (w, h), flags=flags) > 0.5
    if not region.any():
        return photo.copy()
    # Work on the hole's bounding box and a border: Poisson blending is local.
    ys, xs = np.nonzero(region)
    margin = 8
    y0, y1 = max(ys.min() - margin, 0), min(ys.max() + margin + 1, h)
    x0, x1 = max(xs.min() - margin, 0), min(xs.max() + margin + 1, w)
    out = photo.copy()
    out[y0:y1, x0:x1] = blend(photo[y0:y1, x0:x1], face[y0:y1, x0:x1], region[y0:y1, x0:x1], method)
    return out


def inside_photo(transform: np.ndarray, photo_shape: tuple[int, int], size: int) -> np.ndarray:
    """``(size, size) bool``: aligned pixels that come from inside the photo (the aligner fills
    the rest black; they are no context)."""
    import cv2

    h, w = photo_shape[:2]
    ones = np.ones((h, w), np.float32)
    return cv2.warpAffine(ones, np.asarray(transform, np.float64), (size, size), flags=cv2.INTER_LINEAR) > 0.999


# -- photos in, files out (the CompleteFaces task and the CLI) ---------------------------------

def align_photo(path: str | os.PathLike, aligner) -> dict:
    """Decode and align one photo the way the pipeline does (pipeline.align.engine.align_bytes:
    the largest face); never raises for bad input. ``{"face": aligned (S, S, 3) uint8,
    "transform": (2, 3), "meta": ...}`` or ``{"reason": ..., "detail": ...}``."""
    from pipeline.align.engine import align_bytes

    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        return {"reason": "unreadable", "detail": f"{path}: {exc.strerror or exc}"}
    result = align_bytes(aligner, data)
    if "reason" in result:
        return result
    image, meta = result["faces"][0]
    return {"face": image, "transform": np.asarray(meta["transform"], np.float64), "meta": meta,
            "width": result["width"], "height": result["height"]}


def read_face(path: str | os.PathLike, card, aligner, aligned: bool = False) -> dict:
    """The face of one image file for the CLIs: ``{"face": (S, S, C) uint8, "photo": the decoded
    photo or None, "transform": (2, 3) or None}``; with ``aligned`` the file is taken as an
    aligned face of the generator's size. One clear ``ValueError`` for any bad input."""
    from pipeline.imaging import DecodeError, decode_rgb

    if aligned:
        try:
            face = decode_rgb(Path(path).read_bytes())
        except (OSError, DecodeError) as exc:
            raise ValueError(f"{path}: cannot read it as an image ({exc})") from None
        return {"face": check_images(face[None], card, f"aligned face {path}")[0], "photo": None, "transform": None}
    found = align_photo(path, aligner)
    if "reason" in found:
        raise ValueError(f"{path}: {found['reason']} ({found['detail']})")
    face = check_images(found["face"][None], card, f"aligned face of {path}")[0]
    return {"face": face, "photo": decode_rgb(Path(path).read_bytes()), "transform": found["transform"]}


def cli(run: Callable, args) -> int:
    """Run a CLI body; bad input ends in one ``error: ...`` line on stderr and exit code 2."""
    try:
        return run(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

def report_figure(panels: list[tuple[str, np.ndarray]], loss: np.ndarray | None, title: str,
                  flags: list[str], out_png: str | os.PathLike) -> None:
    """One row of labelled images and the loss curve (a completion's report grid), as PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipeline.atomic import atomic_file

    cols = len(panels) + (loss is not None)
    fig, axes = plt.subplots(1, cols, figsize=(2.2 * cols, 2.9), squeeze=False)
    for ax, (label, image) in zip(axes[0], panels):
        ax.imshow(image.squeeze(-1) if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=255,
                  interpolation="nearest")
        ax.set_title(label, fontsize=9)
        ax.axis("off")
    if loss is not None:
        ax = axes[0][-1]
        ax.plot(np.arange(1, len(loss) + 1), loss, lw=1)
        ax.set_title("loss per iteration", fontsize=9)
        ax.tick_params(labelsize=7)
    fig.suptitle(title + ("\n" + "; ".join(flags) if flags else ""), fontsize=8,
                 color="red" if flags else "black")
    fig.tight_layout()
    with atomic_file(out_png) as fh:
        fig.savefig(fh, format="png", dpi=100)
    plt.close(fig)


def show_mask(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``image`` with the hole painted mid-grey (what the method was given)."""
    out = np.array(image)
    out[mask] = 128
    return out


def complete_photos(paths: list[tuple[str, Path]], out_dir: str | os.PathLike, generator, discriminator, card,
                    aligner, mask: np.ndarray | str, *, blend_method: str = "poisson", seed: int = 0,
                    progress: Callable[[int, int], None] | None = None, note: str = "", extra: dict | None = None,
                    network=None, **settings) -> dict:
    """Complete the face of every photo in ``paths`` (``(key, path)`` pairs) into ``out_dir``.

    Each photo is decoded and aligned by the pipeline's own code (the largest face), its
    aligned face completed under ``mask`` (a :data:`MASKS` name or an ``(S, S) bool``
    array) with every other face in one batch, and written under ``out_dir/<key>/``:
    ``completed.png`` (G(z), the whole generated face), ``aligned.png`` (the blended
    aligned face), ``photo.png`` (the original photo with the hole's pixels replaced
    through the inverse alignment transform), ``report.png`` (input, mask, completion,
    blended, original aligned face, loss curve) and ``loss.json`` (loss per iteration).
    With ``network`` (a completion network, model/apps/completion_net.py) the network fills the
    holes instead of the search (``generator`` and ``discriminator`` are then not used; the
    index's ``method`` says which ran). A photo that gives no face (unreadable, undecodable, no
    face, ...) is listed with its reason. Writes ``index.json`` (with ``extra``, e.g. the task's lineage) and
    ``index.md`` and returns the index."""
    from model.eval.metrics import psnr, ssim
    from pipeline.atomic import atomic_file, write_json

    out_dir = Path(out_dir)
    S = card.resolution
    if card.channels != 3:
        raise ValueError(f"photo completion needs an RGB generator; this run's model card says "
                         f"{card.channels} channel(s)")
    faces, masks, rejected = [], [], []
    for i, (key, path) in enumerate(paths):
        found = align_photo(path, aligner)
        if "reason" in found:
            rejected.append({"photo": key, "reason": found["reason"], "detail": found["detail"]})
            continue
        m = mask if isinstance(mask, np.ndarray) else make_mask(mask, S, margin=aligner.margin, seed=seed + i)
        # Aligned pixels from outside the photo are black fill, not context: they join the hole.
        found["inside"] = inside_photo(found["transform"], (found["height"], found["width"]), S)
        if (m | ~found["inside"]).all():
            rejected.append({"photo": key, "reason": "face_outside_photo",
                             "detail": "no aligned pixel outside the mask comes from the photo"})
            continue
        faces.append((key, path, found))
        masks.append(m | ~found["inside"])
    photos = []
    if faces:
        masks = np.stack(masks)
        images = np.stack([face["face"] for _, _, face in faces])
        if network is not None:
            from model.apps.completion_net import complete_with_net
            result = complete_with_net(network, images, masks, blend_method=blend_method)
        else:
            result = complete_faces(generator, discriminator, card, images, masks, seed=seed,
                                    blend_method=blend_method, progress=progress, **settings)
        # "the original where known": the aligned photo itself, under the part of the hole inside it
        truth = np.stack([m & face["inside"] for m, (_, _, face) in zip(masks, faces)])
        result["hole_psnr"], result["hole_ssim"] = psnr(result["blended"], images, truth), \
            ssim(result["blended"], images, truth)
        for i, (key, path, face) in enumerate(faces):
            photos.append(_write_photo(out_dir, key, path, face, images[i], masks[i], result, i, blend_method))
    index = {"photos": photos, "rejected": rejected, "counts": {"inputs": len(paths), "completed": len(photos),
                                                                 "rejected": len(rejected),
                                                                 "flagged": sum(not p["ok"] for p in photos)},
             "mask": mask if isinstance(mask, str) else "file", "blend": blend_method,
             "method": "net" if network is not None else "search",
             "settings": {**settings, "seed": seed}, "model": card.to_json() | {"training": None}, "note": note,
             **(extra or {})}
    write_json(out_dir / "index.json", index)
    with atomic_file(out_dir / "index.md", "w") as fh:
        fh.write(render_index(index))
    return index


def _write_photo(out_dir: Path, key: str, path, face: dict, image: np.ndarray, hole: np.ndarray, result: dict,
                 i: int, blend_method: str) -> dict:
    """One photo's files (see :func:`complete_photos`) and its index entry."""
    from model.train.sampling import save_png
    from pipeline.atomic import write_json
    from pipeline.imaging import decode_rgb

    folder = out_dir / key
    files = {"completed": "completed.png", "aligned": "aligned.png", "photo": "photo.png",
             "report": "report.png", "loss": "loss.json"}
    photo = decode_rgb(Path(path).read_bytes())
    save_png(result["completed"][i], folder / files["completed"])
    save_png(result["blended"][i], folder / files["aligned"])
    save_png(paste_back(photo, result["blended"][i], hole, face["transform"], blend_method), folder / files["photo"])
    d = float(result["d_score"][i])
    metrics = {"known_error": round(float(result["known_error"][i]), 2),
               "context_error": round(float(result["context_error"][i]), 2),
               "d_score": float(f"{d:.3g}") if np.isfinite(d) else None,
               "hole_psnr": round(float(result["hole_psnr"][i]), 2),
               "hole_ssim": round(float(result["hole_ssim"][i]), 4), "hole_pixels": int(hole.sum()),
               **_loss_ends(result["loss"], i)}
    write_json(folder / files["loss"], {"loss": np.round(result["loss"][:, i], 4).tolist(),
                                        "restarts": np.round(result["loss_restarts"][:, i].T, 4).tolist()})
    panels = [("input", show_mask(image, hole)), ("mask", np.repeat(hole[..., None], 3, -1).astype(np.uint8) * 255),
              (painted_label(result), result["completed"][i]), (f"blended ({blend_method})", result["blended"][i]),
              ("original", image)]
    title = (f"{key}: error around the hole {metrics['context_error']} grey levels, D {metrics['d_score']}, "
             f"hole PSNR {metrics['hole_psnr']} dB / SSIM {metrics['hole_ssim']}")
    report_figure(panels, result["loss"][:, i] if len(result["loss"]) else None, title, result["flags"][i],
                  folder / files["report"])
    return {"photo": key, "files": {k: f"{key}/{v}" for k, v in files.items()}, **metrics,
            "ok": bool(result["ok"][i]), "flags": result["flags"][i],
            "transform": np.round(face["transform"], 6).tolist()}


def _loss_ends(loss: np.ndarray, i: int) -> dict:
    """The first and last loss of image ``i`` (None when the method has no loss curve: the network)."""
    if not len(loss):
        return {"loss_start": None, "loss_end": None}
    return {"loss_start": round(float(loss[0, i]), 3), "loss_end": round(float(loss[-1, i]), 3)}


def painted_label(result: dict) -> str:
    """What the whole painted face is called in a report: the network's output or G(z)."""
    return "network output" if result.get("method") == "net" else "completion G(z)"


def render_index(index: dict) -> str:
    """The Markdown index of a folder's completions: every photo with its figures, then the
    photos that gave no face with their reasons."""
    c = index["counts"]
    lines = [f"# Face completion ({index['mask']} mask, {index['blend']} blending)", "",
             f"{c['inputs']} photos: {c['completed']} completed ({c['flagged']} flagged), "
             f"{c['rejected']} without a face.",
             ""]
    if index.get("note"):
        lines += [f"Note: {index['note']}", ""]
    if index["photos"]:
        lines += ["| photo | report | error around the hole | D score | hole PSNR | hole SSIM | flags |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for p in index["photos"]:
            lines.append(f"| [{p['photo']}]({p['files']['photo']}) | ![report]({p['files']['report']}) | "
                         f"{p['context_error']} | {p['d_score']} | {p['hole_psnr']} | {p['hole_ssim']} | "
                         f"{'; '.join(p['flags']) or 'ok'} |")
        lines.append("")
    if index["rejected"]:
        lines += ["## Photos without a completion", "", "| photo | reason | detail |", "| --- | --- | --- |"]
        lines += [f"| {r['photo']} | {r['reason']} | {r['detail']} |" for r in index["rejected"]]
        lines.append("")
    return "\n".join(lines)


# -- command line -------------------------------------------------------------------------------

def add_fit_arguments(parser: argparse.ArgumentParser) -> None:
    """The search's options (model/apps/inversion.py FitSettings), shared with model.apps.project."""
    d = FitSettings()
    parser.add_argument("--model", default="", help="run folder with model_card.json (default: the newest "
                                                    "under processed/models)")
    parser.add_argument("--steps", type=int, default=d.steps, help=f"Adam iterations (default {d.steps})")
    parser.add_argument("--restarts", type=int, default=d.restarts, help=f"optimised starting points per image "
                                                                         f"(default {d.restarts})")
    parser.add_argument("--candidates", type=int, default=d.candidates,
                        help=f"random draws scored to choose the restarts (default {d.candidates})")
    parser.add_argument("--lr", type=float, default=d.lr, help=f"Adam learning rate (default {d.lr})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the starting points (and random masks)")
    parser.add_argument("--precision", default="auto", help="float32, mixed_bfloat16 or auto (bfloat16 where "
                                                            "the CPU has it)")
    parser.add_argument("--aligned", action="store_true", help="IMAGE is already an aligned face of the "
                                                               "generator's size: no detection")


def main(argv=None) -> int:
    """``python -m model.apps.complete IMAGE --mask center --out result.png``: prints one JSON line."""
    parser = argparse.ArgumentParser(prog="python -m model.apps.complete", description=__doc__.split("\n")[0])
    parser.add_argument("image", help="a photo (its largest face is completed), or an aligned face with --aligned")
    parser.add_argument("--mask", default="center", choices=MASKS, help="which part is missing (default center)")
    parser.add_argument("--mask-file", default="", help="a mask image of the aligned size: white = missing")
    parser.add_argument("--out", default="result.png", help="the photo with the face completed (with --aligned: "
                                                            "the blended aligned face)")
    parser.add_argument("--report", default="", help="also write the report grid here")
    parser.add_argument("--blend", default="poisson", choices=BLENDS)
    parser.add_argument("--keep", default=KEEP, choices=KEEPS, help=f"what fills the hole: the best restart's "
                                                                   f"G(z) or the mean of all (default {KEEP})")
    parser.add_argument("--lam", type=float, default=FitSettings.lam,
                        help=f"weight of the perceptual loss (default {FitSettings.lam})")
    parser.add_argument("--method", default="auto", choices=("auto", "net", "search"),
                        help="net: the completion network trained on the run's records; search: the search over "
                             "the generator's inputs; auto (default): net when there is one, else search")
    parser.add_argument("--completion", default="", help="a completion run folder (default: the one trained on "
                                                         "the records the run's card names)")
    add_fit_arguments(parser)
    return cli(_complete_cli, parser.parse_args(argv))


def _complete_cli(args) -> int:
    from model.apps.completion_net import choose_method, complete_with_net
    from model.apps.inversion import aligner_for, load_networks, newest_run
    from model.card import read_card
    from model.train.sampling import save_png

    run = Path(args.model) if args.model else newest_run()
    chosen = choose_method(args.method, read_card(run), run, args.completion)
    if chosen["method"] == "net":
        card, note = read_card(run), ""
    else:
        card, generator, discriminator, note = load_networks(run, args.precision)
    aligner = aligner_for(card, run)
    S = card.resolution
    hole = read_mask_file(args.mask_file, S) if args.mask_file else make_mask(args.mask, S, margin=aligner.margin,
                                                                               seed=args.seed)
    found = read_face(args.image, card, aligner, args.aligned)
    face, photo, transform = found["face"], found["photo"], found["transform"]
    if photo is not None:
        hole = hole | ~inside_photo(transform, photo.shape, S)
    settings = dict(steps=args.steps, restarts=args.restarts, candidates=args.candidates, lr=args.lr, lam=args.lam,
                    keep=args.keep)
    if chosen["method"] != "net":
        from model.apps.encoder import load_encoder
        settings["encoder"] = load_encoder(run)  # the search also starts from E(x) when the run has one
    if chosen["method"] == "net":
        result = complete_with_net(chosen["network"], face[None], hole[None], blend_method=args.blend)
    else:
        result = complete_faces(generator, discriminator, card, face[None], hole[None], seed=args.seed,
                                blend_method=args.blend, **settings)
    blended = result["blended"][0]
    save_png(blended if photo is None else paste_back(photo, blended, hole, transform, args.blend), args.out)
    if args.report:
        panels = [("input", show_mask(face, hole)), (painted_label(result), result["completed"][0]),
                  (f"blended ({args.blend})", blended), ("original", face)]
        report_figure(panels, result["loss"][:, 0] if len(result["loss"]) else None, f"{Path(args.image).name}",
                      result["flags"][0], args.report)
    d = float(result["d_score"][0])
    print(json.dumps({"image": args.image, "out": args.out, "report": args.report or None, "model": str(run),
                      "method": chosen["method"], "completion": str(chosen["run"]) if chosen["run"] else None,
                      "known_error": round(float(result["known_error"][0]), 2),
                      "context_error": round(float(result["context_error"][0]), 2),
                      "d_score": float(f"{d:.3g}") if np.isfinite(d) else None, "flags": result["flags"][0],
                      **_loss_ends(result["loss"], 0), "seconds": round(result["seconds"], 2),
                      "note": "; ".join(n for n in (chosen["note"], note) if n) or None}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
