"""How well sharpness against the edges' p-norm ranks real faces as the formula does
(EGAN's ``sharpness_norm``, model/variants/extractors.py).

    .venv/bin/python bench/sharpness_norm.py --records processed/records/celeba/<hash>/v-<version>

``--records`` is a version folder (with manifest.json) or a records folder holding
``latest.json``. On the ``--split`` faces it measures sharpness by the formula (the
strongest edge, as bench/egan.py measures it) and with each p of ``--norms``, and prints
one JSON line:

- ``spearman``: per p, Spearman's rho between the p-norm measure and the formula over
  the faces (how far control of the stand-in is control of the formula);
- ``quantiles``: the 5%, 50% and 95% levels of the formula (``formula``) and of each p;
- ``spread_ratio``: per p, its 5-95% spread over the formula's: lambda / spread_ratio
  gives the p-norm run the pull per unit of real spread that lambda gives the formula;
- ``blurred``: per sigma of ``--blurs``, the formula's quantiles on the faces blurred by the
  Gaussian EGAN's ``c_lowpass`` mixes in (model/nets/dcgan.py ``lowpassed``), the share of
  faces whose value rises, and Spearman's rho between each face's value before and after:
  which end of the real spread a blurred face lands at;
- ``unsharp``: per amount k of ``--unsharp``, the same for the faces unsharp-masked by k,
  ``x - k (blur(x) - x)`` clipped to [-1, 1] with the blur of sigma ``LOWPASS_SIGMA`` (what
  ``c_lowpass_draft``'s mix does below 0), and ``lowers``, the share of faces whose value falls;
  each of these also in training's ``--unsharp-norm``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from input_pipeline import split_images, version_folder  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", required=True, help="a records version folder, or one holding latest.json")
    parser.add_argument("--split", default="train")
    parser.add_argument("--norms", default="4,8,12,16,24", help="comma-separated p of the p-norms")
    parser.add_argument("--blurs", default="0.7,1.5", help="comma-separated Gaussian sigmas (pixels) to "
                                                           "blur the faces by ('' for none)")
    parser.add_argument("--unsharp", default="0.25,0.5", help="comma-separated unsharp-mask amounts ('' for none)")
    parser.add_argument("--unsharp-norm", type=float, default=12.0,
                        help="the p-norm sharpness the unsharp masks are also measured by")
    args = parser.parse_args(argv)

    import numpy as np
    from scipy.stats import spearmanr

    from model.variants.extractors import measure

    folder = version_folder(args.records)
    images = split_images(folder, args.split)
    formula = measure("sharpness", images)
    levels = (0.05, 0.5, 0.95)
    spread = float(np.subtract(*np.quantile(formula, [0.95, 0.05])))
    out = {"records": str(folder), "split": args.split, "n": int(len(images)),
           "quantiles": {"formula": [round(float(q), 4) for q in np.quantile(formula, levels)]},
           "spearman": {}, "spread_ratio": {}}
    for p in (float(v) for v in args.norms.split(",") if v.strip()):
        values = measure("sharpness", images, sharpness_norm=p)
        key = f"{p:g}"
        out["spearman"][key] = round(float(spearmanr(formula, values).statistic), 4)
        out["quantiles"][key] = [round(float(q), 4) for q in np.quantile(values, levels)]
        out["spread_ratio"][key] = round(float(np.subtract(*np.quantile(values, [0.95, 0.05]))) / spread, 3) \
            if spread > 0 else None
    sigmas = [float(v) for v in args.blurs.split(",") if v.strip()]
    amounts = [float(v) for v in args.unsharp.split(",") if v.strip()]
    if sigmas or amounts:
        import keras

        from model.nets.dcgan import LOWPASS_SIGMA, lowpassed
        from model.train.sampling import to_uint8

        x = images.astype(np.float32) / 127.5 - 1.0  # the faces in [-1, 1]
        blurs = {}

        def blurred(sigma):
            """The faces' Gaussian blur of ``sigma``, float32, made once per sigma."""
            if sigma not in blurs:
                image = keras.Input(images.shape[1:])
                blur = keras.Model(image, lowpassed(image, sigma))
                blurs[sigma] = np.concatenate([blur.predict_on_batch(x[i:i + 256]) for i in range(0, len(x), 256)])
            return blurs[sigma]

        def moved(values, base):
            return {"quantiles": [round(float(q), 4) for q in np.quantile(values, levels)],
                    "rises": round(float(np.mean(values > base)), 4),
                    "lowers": round(float(np.mean(values < base)), 4),
                    "spearman": round(float(spearmanr(base, values).statistic), 4)}

        out["blurred"] = {f"{sigma:g}": moved(measure("sharpness", to_uint8(blurred(sigma))), formula)
                          for sigma in sigmas}
        if amounts:
            b = blurred(LOWPASS_SIGMA)  # the default --blurs made it already
            p = args.unsharp_norm
            base = measure("sharpness", images, sharpness_norm=p)
            out["unsharp"] = {}
            for k in amounts:
                masked = to_uint8(np.clip(x - k * (b - x), -1.0, 1.0))
                out["unsharp"][f"{k:g}"] = {"formula": moved(measure("sharpness", masked), formula),
                                            f"{p:g}": moved(measure("sharpness", masked, sharpness_norm=p), base)}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
