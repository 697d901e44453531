"""Projection with and without a learned encoder, on held-out faces, at batch 1.

    python bench/project.py --model processed/models/celeba/dcgan-<v> [--faces 40] [--encoder-steps 1500]
        [--split test|validation] [--refine-steps 30,60,100]
    python bench/project.py --model RUN --faces 2 --encoder-steps 2 --search-steps 2 --refine-steps 2   # smoke

The faces are the ``test`` split of the records the run's card names (held out from the
generator's and the encoder's training). The run's encoder (``encoder.keras``) is used when it
has one, else one is trained here with ``--encoder-steps`` (TrainEncoder's defaults otherwise;
written into the run folder only with ``--keep-encoder``). Each face is projected alone, as the
studio does for one person, by:

- ``search``: the search without an encoder (``--search-steps``, default PROJECT_STEPS: 200; several,
  comma-separated, are rows of ``search_sweep`` and ``search`` is the first: issue 29's target
  names the 50-step search, today's default is 200);
- ``encoder``: E(x) alone (no search);
- ``encoder+refine``: E(x) among the candidates, then ``--refine-steps`` (REFINE_STEPS); with
  several counts (``30,60,100``) each is a row of ``refine_sweep`` and ``encoder+refine`` is the
  first, and ``smallest_matching`` names, per search row, the fewest steps that meet the targets below.

Per method: mean PSNR and SSIM of G(inputs) against the face, and seconds per face (p50, p95).
Targets (issue 29): E alone <= 50 ms per face; encoder+refine at least the search's PSNR and
SSIM in <= 1 s. ``--split``: choose a step count on ``validation``, report it on ``test`` (the
default). The final line is JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from model.cpu import cpu_model  # noqa: E402

TARGETS = {"encoder_ms": 50.0, "refine_seconds": 1.0}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="run folder (its card names the records)")
    p.add_argument("--records", help="records folder of the held-out faces (default: the one the card names)")
    p.add_argument("--faces", type=int, default=40, help="held-out faces projected (default: %(default)s)")
    p.add_argument("--search-steps", default=None,
                   help="steps of the plain search, or several, comma-separated (default: PROJECT_STEPS)")
    p.add_argument("--refine-steps", default=None,
                   help="steps after E(x), or several, comma-separated (default: REFINE_STEPS)")
    p.add_argument("--split", default="test", choices=("test", "validation"),
                   help="the held-out faces: choose on validation, report on test (default: %(default)s)")
    p.add_argument("--encoder-steps", type=int, default=None, help="train an encoder this long when the run "
                                                                   "has none (default: TrainEncoder's)")
    p.add_argument("--keep-encoder", action="store_true", help="write the encoder trained here into the run")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    from model.apps.encoder import encode, load_encoder, train_encoder
    from model.apps.project import PROJECT_STEPS, REFINE_STEPS, project_faces
    from model.card import load_generator
    from model.config import EncoderSettings
    from model.eval.evaluation import read_split_images
    from model.eval.metrics import psnr, ssim
    from model.train.data import image_dataset
    from model.train.sampling import generate

    run = Path(args.model)
    card, generator = load_generator(run)
    records = args.records or card.dataset.get("records")
    if not records or not Path(records).is_dir():
        raise SystemExit(f"bench/project.py: {run}'s card names no records folder on this machine ({records})")
    faces = read_split_images(records, args.split, args.faces, args.seed)
    result = {"cpu": cpu_model(), "model": str(run), "faces": len(faces), "split": args.split,
              "load_avg_1min_before": round(os.getloadavg()[0], 2)}
    encoder, trained = load_encoder(run), None
    if encoder is None:
        settings = EncoderSettings(**({"steps": args.encoder_steps} if args.encoder_steps else {}))
        real = image_dataset(records, "train", batch_size=settings.batch_size, seed=settings.seed)
        start = time.monotonic()
        encoder, losses = train_encoder(generator, card, settings, real)
        trained = {"steps": settings.steps, "seconds": round(time.monotonic() - start, 1), "losses": losses}
        if args.keep_encoder:
            from model.apps.encoder import save_encoder
            save_encoder(run, encoder, {"settings": settings.__dict__, "records": records, **trained})
    result["encoder_trained_here"] = trained

    def measured(fn) -> dict:
        """Mean PSNR and SSIM of ``fn``'s images against the faces, each face projected alone,
        and its seconds per face (after one warm-up call: the graphs traced once, as the studio
        does at load)."""
        fn(faces[:1])
        seconds, outs = [], []
        for face in faces:
            start = time.perf_counter()
            outs.append(fn(face[None]))
            seconds.append(time.perf_counter() - start)
        images = np.concatenate(outs)
        return {"psnr": round(float(psnr(images, faces).mean()), 3),
                "ssim": round(float(ssim(images, faces).mean()), 4),
                "seconds_p50": round(float(np.percentile(seconds, 50)), 3),
                "seconds_p95": round(float(np.percentile(seconds, 95)), 3)}

    def sweep(counts: str, **kw) -> list[dict]:
        """One row per step count of a comma-separated list: project_faces with ``kw``."""
        return [{"steps": n, **measured(lambda x, n=n: project_faces(generator, card, x, steps=n, seed=args.seed,
                                                                     **kw)["images"])}
                for n in (int(v) for v in counts.split(","))]

    result["search_sweep"] = sweep(str(args.search_steps or PROJECT_STEPS))
    result["encoder"] = measured(lambda x: generate(generator, encode(encoder, x)))
    result["refine_sweep"] = sweep(str(args.refine_steps or REFINE_STEPS), encoder=encoder)
    result["search"], result["encoder+refine"] = result["search_sweep"][0], result["refine_sweep"][0]

    def meets(row, search):
        return (row["seconds_p50"] <= TARGETS["refine_seconds"] and row["psnr"] >= search["psnr"]
                and row["ssim"] >= search["ssim"])
    result["smallest_matching"] = {str(search["steps"]): min((r["steps"] for r in result["refine_sweep"]
                                                              if meets(r, search)), default=None)
                                   for search in result["search_sweep"]}
    encode(encoder, faces[:1])
    ms = []
    for face in faces:
        start = time.perf_counter()
        encode(encoder, face[None])
        ms.append(1000 * (time.perf_counter() - start))
    result["encoder_ms_p50"] = round(float(np.percentile(ms, 50)), 2)
    result["load_avg_1min_after"] = round(os.getloadavg()[0], 2)
    refine, search = result["encoder+refine"], result["search"]
    result["checks"] = {"encoder_ms": result["encoder_ms_p50"] <= TARGETS["encoder_ms"],
                        "refine_seconds": refine["seconds_p50"] <= TARGETS["refine_seconds"],
                        "refine_psnr_vs_search": refine["psnr"] >= search["psnr"],
                        "refine_ssim_vs_search": refine["ssim"] >= search["ssim"]}
    result["targets"] = TARGETS
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
