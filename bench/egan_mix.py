"""How steep could a trained EGAN's blur mix be, and what would steeper cost?

    .venv/bin/python bench/egan_mix.py --run processed/models/celeba/egan-<hash> [--scales 1,1.5,2,3]
        [--samples 512] [--sweep-max 1] [--diversity-n 1000] [--workdir processed/bench-egan-mix] [--no-fid]
        [--records <records version folder>] [--eval KEY=VALUE ...]

For a run trained with ``c_lowpass`` (model/nets/dcgan.py ``_lowpass_mixed``: c sets how much
of a blurred copy G mixes into its image), each scale k of ``--scales`` makes a copy of the
run (card and exported generator, in ``--workdir``) whose mix weighs c k times as much, the
mix's bias moved so the mix at c = 0.5 stays where training left it: the same drawn faces
(the draft) with a steeper or flatter c. Per k it measures what bench/egan.py measures: the
mix's mean at c = 0 and at ``--sweep-max`` (``mix``), Spearman's rho of c against sharpness
over the sweep and within each z, the parts that set rho (slope, z's spread; bench/egan.py
``correlations``), for a p-norm run also in training's measure (``trained``), the MS-SSIM of
random pairs of ``--diversity-n`` faces at c = 0, half and all of ``--sweep-max``, before the mix
and after it (``diversity``: does c narrow the faces or only blur them), and, unless
``--no-fid``, FID, its spread, KID, face rate and MS-SSIM of sample pairs on the held-out
test faces (model/eval/evaluation.py; ``--eval`` sets any ``EvalSettings`` field).

What it answers: whether a run's rho is short because training left the mix too flat (rho
rises with k while FID stays) or because of z (it does not); docs/egan.md. Prints one JSON
line: ``scales`` (per k the figures above), ``run``, ``seconds``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: What a scaled copy needs of a run: the card and what it names, not checkpoints or exports.
SKIPPED = ("ckpt", "openvino", "saved_model", "tb", "progress")


def steepened(run_dir: Path, k: float, out: Path) -> dict:
    """Copies ``run_dir`` to ``out`` with c's weights on the blur mix's logit times ``k`` and the
    bias moved by ``(1 - k) W_c . 0.5`` (the mix at c = 0.5 unchanged). Returns the mix's
    weights before: ``{"w_c": [...], "bias": b}``."""
    import keras

    from model.card import read_card
    from model.nets.dcgan import MIX_LOGIT

    card = read_card(run_dir)
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(run_dir, out, ignore=shutil.ignore_patterns(*SKIPPED))
    path = out / card.files["keras"]
    generator = keras.models.load_model(path, compile=False)
    layer = generator.get_layer(MIX_LOGIT)
    kernel, bias = layer.get_weights()
    dims = card.input("c").size  # c comes first in what the mix sees (codes, then the draft's edges)
    w_c = kernel[:dims].copy()
    kernel[:dims] = k * w_c
    layer.set_weights([kernel, bias + (1.0 - k) * 0.5 * w_c.sum(axis=0)])
    generator.save(path)
    return {"w_c": [round(float(v), 4) for v in w_c.ravel()], "bias": round(float(bias[0]), 4)}


def mix_amounts(run_dir: Path, values, samples: int, seed: int) -> list[float]:
    """The mix's mean amount over ``samples`` z at each c of ``values`` (every c at that value):
    what the output layer ``lowpass_mixed`` adds of ``blur - image``."""
    import keras
    import numpy as np

    from model.card import load_generator
    from model.nets.dcgan import MIX_AMOUNT
    from model.train.sampling import vary_input

    card, generator = load_generator(run_dir)
    if not any(layer.name == MIX_AMOUNT for layer in generator.layers):
        raise SystemExit(f"--run {run_dir}: its generator names no {MIX_AMOUNT!r} layer (a c_lowpass run "
                         f"trained before the mix named its amount): retrain it to measure the mix")
    amount = keras.Model(generator.inputs, generator.get_layer(MIX_AMOUNT).output)
    out = []
    for value in values:
        inputs = vary_input(card, "c", [value], samples, seed, 0)
        if card.input("c").size > 1:  # every c at the value, not only the first
            inputs["c"] = np.full_like(inputs["c"], value)
        out.append(round(float(np.mean(amount.predict(inputs, batch_size=256, verbose=0))), 4))
    return out


def diversity(run_dir: Path, values, samples: int, seed: int) -> dict:
    """MS-SSIM of random pairs (model/eval/metrics.py; higher = more alike) among ``samples``
    faces at each c of ``values`` (every c at that value), of what G draws before the mix
    (``draft``, the ``tanh`` layer) and of its output (``output``): whether c narrows the faces
    themselves or only their blur."""
    import keras
    import numpy as np

    from model.card import load_generator, sample_inputs
    from model.eval.metrics import ms_ssim_diversity

    card, generator = load_generator(run_dir)
    parts = keras.Model(generator.inputs, [generator.get_layer("tanh").output, generator.output])
    inputs = sample_inputs(card, samples, seed)
    out = {"draft": [], "output": []}
    for value in values:
        images = parts.predict({**inputs, "c": np.full_like(inputs["c"], value)}, batch_size=256, verbose=0)
        for name, x in zip(("draft", "output"), images):
            x = np.clip((x + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)
            out[name].append(round(ms_ssim_diversity(x, pairs=min(1000, samples * 2), seed=seed), 4))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="an EGAN run folder trained with --c-lowpass")
    parser.add_argument("--scales", default="1,1.5,2,3", help="comma-separated factors on c's weight in the mix")
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--sweep-max", type=float, default=1.0)
    parser.add_argument("--diversity-n", type=int, default=1000, help="faces per c for the MS-SSIM figures")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default="processed/bench-egan-mix")
    parser.add_argument("--records", default="", help="records version folder for FID (default: the run card's)")
    parser.add_argument("--no-fid", dest="fid", action="store_false", help="control figures only")
    parser.add_argument("--eval", action="append", default=[], metavar="KEY=VALUE",
                        help="an EvalSettings field for the quality figures (repeatable), e.g. n=2000")
    args = parser.parse_args(argv)

    from egan import control

    from model.card import read_card
    from model.eval.evaluation import EvalSettings, evaluate_run

    start = time.time()
    run = Path(args.run)
    card = read_card(run)
    if not card.input("c").meta.get("c_lowpass"):
        parser.error(f"--run {run}: not trained with --c-lowpass (its card's c has no blur mix to steepen)")
    scales = [float(v) for v in args.scales.split(",") if v.strip()]
    if not scales or min(scales) < 0:
        parser.error(f"--scales {args.scales!r}: give factors >= 0, e.g. 1,1.5,2")
    settings = {}
    for item in args.eval:
        key, sep, value = item.partition("=")
        names = EvalSettings.__dataclass_fields__
        if not sep or key not in names:
            parser.error(f"--eval {item!r}: give KEY=VALUE with KEY one of {', '.join(names)}")
        settings[key] = type(getattr(EvalSettings(), key))(value)
    evaluation = EvalSettings(**{**settings, "checkpoints": False})
    records = Path(args.records or card.dataset.get("records", ""))
    extractors = [e for e in card.input("c").labels if e in ("brightness", "sharpness")]
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)

    out = {}
    for k in scales:
        copy = work / f"{run.name}-x{k:g}"
        row = {"weights": steepened(run, k, copy),
               "mix": dict(zip(("c0", f"c{args.sweep_max:g}"),
                               mix_amounts(copy, [0.0, args.sweep_max], args.samples, args.seed)))}
        row["diversity"] = diversity(copy, [0.0, args.sweep_max / 2, args.sweep_max], args.diversity_n, args.seed)
        for extractor in extractors:
            result = control(copy, extractor, None, args.samples, args.sweep_max, args.seed)
            row[extractor] = {key: result[key] for key in ("rho", "rho_within_z", "mean_by_c", "parts")}
            if "trained" in result:
                row[extractor]["trained"] = {key: result["trained"][key] for key in ("sharpness_norm", "parts")}
        if args.fid:
            with tempfile.TemporaryDirectory() as tmp:
                report = evaluate_run(copy, records, evaluation, tmp, work / "reference")
            row["quality"] = {key: report.get(key) for key in ("fid", "fid_std", "kid", "face_detect_rate",
                                                               "ms_ssim", "n", "split")}
        out[f"{k:g}"] = row
        print(f"[egan_mix] x{k:g}: " + ", ".join(f"{e} rho {row[e]['rho']}" for e in extractors)
              + (f", FID {row['quality']['fid']:.1f}" if args.fid else ""), file=sys.stderr, flush=True)
    print(json.dumps({"run": str(run), "scales": out, "samples": args.samples, "sweep_max": args.sweep_max,
                      "seconds": round(time.time() - start, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
