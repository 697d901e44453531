"""DCGAN training throughput against the machine's own matmul rate.

    python bench/train_throughput.py [--steps 6] [--repeats 3] [--batch 64] [--resolution 64]

Times the full training step (model.train.GANTrainer.train_step, a D update
and a G update) in float32 and mixed bfloat16 on an in-memory batch, counts
the step's FLOPs from the layer shapes, measures large-matmul GFLOP/s at both
precisions in the same run, and prints one JSON line. On a shared 2-core VM the
bfloat16 matmul rate alone varied from 390 to 794 GFLOP/s between runs, so each precision
alternates a matmul block and a block of training steps ``--repeats`` times and
keeps the best of each (as ``timeit`` does): both rates then come from the same
stretch of machine time. The line has
images_per_s_fp32/_bf16, gflop_per_image, matmul_gflops_fp32/_bf16,
utilization_fp32/_bf16 (achieved GFLOP/s over the matmul rate of that
precision), and images_per_s/utilization for TrainDCGAN's default precision.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from model.train import GANTrainer, TrainConfig, resolve_precision  # noqa: E402


def forward_macs(model: keras.Model) -> int:
    """Multiply-accumulates of one forward pass of one image (dense and conv layers)."""
    macs = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Dense):
            macs += int(np.prod(layer.kernel.shape))
        elif isinstance(layer, keras.layers.Conv2DTranspose):
            # each input pixel scatters a k x k x Cout patch
            h, w, _ = layer.input.shape[1:]
            macs += h * w * int(np.prod(layer.kernel.shape))
        elif isinstance(layer, keras.layers.Conv2D):
            h, w, _ = layer.output.shape[1:]
            macs += h * w * int(np.prod(layer.kernel.shape))
    return macs


def step_flops_per_image(trainer: GANTrainer) -> float:
    """FLOPs of one training step per real image, from the layer shapes.

    D step: G forward (1x G), D forward on real and fake (2x D), backward of
    both for D's weights (2 x 2x D). G step (reusing the fake, as the Torch
    reference does): D forward (1x D), backward to its input (1x D), G
    backward (2x G). Total 3 G + 8 D forward-equivalents; extra G steps add
    3 G + 2 D each. Batch norm and activations are not counted.
    """
    g, d = forward_macs(trainer.generator), forward_macs(trainer.discriminator)
    extra = trainer.config.g_steps - 1
    return 2.0 * ((3 + 3 * extra) * g + (8 + 2 * extra) * d)


def seconds(run) -> float:
    """Wall-clock seconds of one call of ``run``."""
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def matmul_block(dtype, n: int = 4096, reps: int = 10):
    """A callable doing ``reps`` n-square matmuls, and its FLOPs."""
    a = tf.cast(tf.random.normal((n, n), dtype=tf.float32), dtype)
    f = tf.function(lambda x: tf.matmul(x, x))
    f(a).numpy()

    def block():
        for _ in range(reps):
            r = f(a)
        r.numpy()
    return block, 2.0 * n ** 3 * reps


def measure(precision: str, batch: int, resolution: int, steps: int, repeats: int):
    """``(images/s, matmul GFLOP/s, trainer)`` for ``precision``: the best of ``repeats``
    rounds, each timing a matmul block and then ``steps`` training steps, so both
    rates see the same machine conditions."""
    trainer = GANTrainer(TrainConfig(resolution=resolution, batch_size=batch, precision=precision))
    real = tf.constant(np.random.default_rng(0).uniform(-1, 1, (batch, resolution, resolution, 3)), tf.float32)
    for _ in range(2):  # trace + warm up
        float(trainer.train_step(real)["d_loss"])
    matmul, flops = matmul_block(tf.bfloat16 if "bfloat16" in precision else tf.float32)

    def train():
        for _ in range(steps):
            out = trainer.train_step(real)
        float(out["d_loss"])
    best_mm = best_train = float("inf")
    for _ in range(repeats):
        best_mm = min(best_mm, seconds(matmul))
        best_train = min(best_train, seconds(train))
    return batch * steps / best_train, flops / best_mm / 1e9, trainer


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=6, help="training steps per timed block")
    p.add_argument("--repeats", type=int, default=3, help="timed blocks; the best one counts")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--resolution", type=int, default=64)
    args = p.parse_args()

    ips32, mm32, trainer = measure("float32", args.batch, args.resolution, args.steps, args.repeats)
    gflop = step_flops_per_image(trainer) / 1e9
    ips16, mm16, _ = measure("mixed_bfloat16", args.batch, args.resolution, args.steps, args.repeats)
    from tasks.train import TrainDCGAN
    default = resolve_precision(TrainDCGAN.precision._default)  # what TrainDCGAN trains with
    result = {
        "cpu_count": os.cpu_count(), "batch": args.batch, "resolution": args.resolution,
        "steps": args.steps, "repeats": args.repeats,
        "gflop_per_image": round(gflop, 3),
        "images_per_s_fp32": round(ips32, 2), "images_per_s_bf16": round(ips16, 2),
        "matmul_gflops_fp32": round(mm32, 1), "matmul_gflops_bf16": round(mm16, 1),
        "utilization_fp32": round(ips32 * gflop / mm32, 3), "utilization_bf16": round(ips16 * gflop / mm16, 3),
        "default_precision": default,
    }
    bf16 = default == "mixed_bfloat16"
    result["images_per_s"] = result["images_per_s_bf16" if bf16 else "images_per_s_fp32"]
    result["utilization"] = result["utilization_bf16" if bf16 else "utilization_fp32"]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
