"""Training recipes: named bundles of training settings (:class:`model.config.TrainConfig`
fields, i.e. ``TrainGAN``/``TrainDCGAN`` parameters), declared here and only here.

``bench/quality.py --recipes paper,ema,ema+augment`` trains and scores them side by side;
``TuneGAN --recipe NAME`` searches around one; on the command line a recipe is just its
parameters, e.g. ``--TrainDCGAN-ema 0.999 --TrainDCGAN-augment translation,cutout,color``.
Every recipe states ``ema`` and ``augment``, because ``TrainDCGAN``'s defaults of the two are
a recipe's (:data:`DCGAN_DEFAULT`); every other setting keeps its one default.
"""
from __future__ import annotations

#: name -> settings it changes (docs/training.md explains each option).
RECIPES: dict[str, dict] = {
    # Radford et al. (2015) as they are: Adam 2e-4, beta1 0.5, batch 64, no averaging.
    "paper": {"ema": 0.0, "augment": ""},
    # + an exponential moving average of the generator's weights (Yazici et al. 2019).
    "ema": {"ema": 0.999, "augment": ""},
    # + differentiable augmentation of every discriminator input (Zhao et al. 2020).
    "ema+augment": {"ema": 0.999, "augment": "translation,cutout,color"},
    # + the two time-scale update rule (Heusel et al. 2017): a slower G, a faster D.
    "ema+augment+ttur": {"ema": 0.999, "augment": "translation,cutout,color", "lr": 1e-4, "d_lr": 4e-4},
    # ema+augment at half the paper's batch: twice the updates of G and D per CPU-minute.
    "ema+augment+b32": {"ema": 0.999, "augment": "translation,cutout,color", "batch_size": 32},
    # ... and at a quarter of it: b32 beat b64 at 40 minutes (FID 86.5 vs 99.7), still falling.
    "ema+augment+b16": {"ema": 0.999, "augment": "translation,cutout,color", "batch_size": 16},
    # The EGAN thesis' DCGAN (its base code, run on CIFAR-10): the paper's, G updated twice per D step.
    "thesis": {"ema": 0.0, "augment": "", "g_steps": 2},
}

#: ``TrainDCGAN``'s defaults: the recipe that scored best in ``bench/quality.py`` at the same
#: 20-minute budget (docs/benchmarks.md, "Quality per CPU-minute"), chosen on the test split by the
#: bench of then (it now chooses on validation; that rerun is pending). ``TrainGAN`` keeps the paper's.
DCGAN_DEFAULT = "ema+augment"


def recipe(name: str) -> dict:
    """The settings of recipe ``name`` (a copy); one clear error naming the recipes otherwise."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}: choose from {', '.join(RECIPES)}")
    return dict(RECIPES[name])


def parse_recipes(names: str) -> list[str]:
    """``"paper,ema"`` -> ``["paper", "ema"]``, each checked, in order, without repeats."""
    out = []
    for name in (n.strip() for n in names.split(",")):
        if name and name not in out:
            recipe(name)
            out.append(name)
    if not out:
        raise ValueError(f"no recipe named in {names!r}: choose from {', '.join(RECIPES)}")
    return out
