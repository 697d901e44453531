"""DCGAN training throughput against the machine's own matmul rate and the CPU's FMA peak,
and every variant x discriminator at 64x64 RGB and 28x28 gray.

    python bench/train_throughput.py [--steps 6] [--repeats 3] [--batch 64] [--resolution 64]
                                     [--base-width 128] [--matmul-size 4096]
                                     [--precisions float32,mixed_bfloat16] [--force-precisions]
                                     [--variant-steps 1] [--variants all|none|wgan,acgan] [--tiny]
                                     [--no-torch]

Times the full training step (model.train.loop.GANTrainer.train_step, a D update
and a G update) in each precision on an in-memory batch, counts the step's FLOPs
from the layer shapes, measures large-matmul GFLOP/s at that precision in the same
run, and prints one JSON line. A precision this CPU only emulates (mixed_bfloat16
without bfloat16 units: model/cpu.py) is not timed, since it would take hours on an
AVX2 CPU: ``skipped`` gives the reason, its figures are null, and ``--force-precisions``
times it anyway. On a shared 2-core VM the bfloat16 matmul rate alone varied from 390
to 794 GFLOP/s between runs, so each precision alternates a matmul block and a block
of training steps ``--repeats`` times and keeps the best of each (as ``timeit`` does):
both rates then come from the same stretch of machine time. Per precision (suffix
_fp32, _bf16) the line has images_per_s, gflops (the step's achieved GFLOP/s),
matmul_gflops, utilization (step GFLOP/s over the matmul rate), of_peak (step GFLOP/s
over the CPU's FMA peak: float32's, bfloat16's where model/cpu.py tables it),
matmul_of_peak and cores_busy (the process's CPU seconds per second in the best block of
steps: below the core count, other work shared the CPU and of_peak reads low; the load
average is recorded at the start and the end); ``cpu`` says how the peak was computed (cores x GHz x FLOP/cycle,
flags, ONEDNN_MAX_CPU_ISA), and images_per_s/utilization/of_peak repeat TrainDCGAN's
default precision. A matmul rate far below the peak hides a slow step in
``utilization``; ``of_peak`` does not. ``--tiny`` runs a smoke-test size in seconds
(batch 4, base width 8, 2 steps, one block, 256-square matmuls, no variants).

The peer: the same network and step in PyTorch eager, float32 (bench/torch_peer.py),
timed in the same process with its blocks alternating with TensorFlow's float32 blocks:
``torch_images_per_s_fp32`` and ``vs_torch_fp32`` (TensorFlow's images/s over torch's;
the goal is 2 on AVX2). ``--no-torch`` leaves it out; without torch installed it is null
and ``skipped`` says so.

Then, in the default precision, ``variants`` times one step of every variant x
discriminator (model/variants, model/nets/networks.py) at 64x64 RGB and 28x28 gray
(batch ``--batch``; a timed block of ``--variant-steps`` steps after one warm-up step,
a matmul block right before it): per entry ``images_per_s`` (real images read per
second: a WGAN step reads n_critic batches), ``steps_per_s``, ``gflop_per_step``,
``utilization`` and ``of_peak``. ``capsnet_convs`` times the CapsNet's two 9x9 convolutions alone
(forward and both gradients, native kernels) against the same matmul rate, and says
whether model/nets/layers.py's matmul route would take them (``routed``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from pipeline.console import quiet_start  # noqa: E402

quiet_start()  # before TensorFlow: no oneDNN or CUDA-probe lines (FACEGAN_VERBOSE=1 shows them)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from model.cpu import (  # noqa: E402
    bench_skip_reason,
    bf16_peak_gflops,
    bf16_units,
    cpu_flags,
    cpu_model,
    cpu_peak,
    emulated_reason,
)
from model.train.loop import GANTrainer, TrainConfig, resolve_precision  # noqa: E402

#: JSON key suffix of each precision.
SUFFIX = {"float32": "fp32", "mixed_bfloat16": "bf16", "mixed_float16": "fp16"}
#: ``--tiny``: a smoke test's settings (explicit options still win), and the full run's.
TINY = {"steps": 2, "repeats": 1, "batch": 4, "base_width": 8, "matmul_size": 256, "variants": "none"}
FULL = {"steps": 6, "repeats": 3, "batch": 64, "base_width": 128, "matmul_size": 4096, "variants": "all"}


def forward_macs(model: keras.Model) -> int:
    """Multiply-accumulates of one forward pass of one image (dense and conv layers, and the
    CapsNet's routing-by-agreement)."""
    from model.nets.capsnet import DynamicRouting

    macs = 0
    for layer in model.layers:
        if isinstance(layer, DynamicRouting):
            n_in, caps, dim, d_in = layer.w.shape
            # predictions u_hat, then per round the weighted sum and (but the last) the agreement
            macs += n_in * caps * dim * d_in + n_in * caps * dim * (2 * layer.iterations - 1)
        elif isinstance(layer, keras.layers.Dense):
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


def variant_step_flops(trainer: GANTrainer) -> float:
    """FLOPs of one training step of any variant (all its images), from the layer shapes.

    DCGAN, ACGAN, InfoGAN: as :func:`step_flops_per_image` per image (the heads are
    counted in D). WGAN: per critic update 1 G + 2 D forward and 4 D for the backward
    of both batches; the generator update 3 G + 2 D. WGAN-GP adds per critic update
    about 6 D for the penalty (a forward on the interpolates, the gradient to the input,
    and the double backward through both): an estimate, stated as such.
    """
    c = trainer.config
    if not trainer.model.name.startswith("wgan"):
        return step_flops_per_image(trainer) * c.batch_size
    g, d = forward_macs(trainer.generator), forward_macs(trainer.discriminator)
    critic = g + 6 * d + (6 * d if trainer.model.name == "wgan-gp" else 0)
    return 2.0 * c.batch_size * (trainer.model.options.n_critic * critic + 3 * g + 2 * d)


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


def measure(precision: str, batch: int, resolution: int, steps: int, repeats: int, base_width: int = 128,
            matmul_size: int = 4096, peer=None):
    """``(images/s, matmul GFLOP/s, trainer, cores busy, peer images/s)`` for ``precision``: the
    best of ``repeats`` rounds, each timing a matmul block, ``steps`` training steps and, with
    ``peer`` (a callable running ``steps`` steps of another framework), the peer's block, so all
    rates see the same machine conditions; ``cores busy`` is the process's CPU seconds per
    second during the best block of steps (2.0 on an idle 2-core machine)."""
    trainer = GANTrainer(TrainConfig(resolution=resolution, batch_size=batch, precision=precision,
                                     base_width=base_width))
    real = tf.constant(np.random.default_rng(0).uniform(-1, 1, (batch, resolution, resolution, 3)), tf.float32)
    for _ in range(2):  # trace + warm up
        float(trainer.train_step(real)["d_loss"])
    matmul, flops = matmul_block(tf.bfloat16 if "bfloat16" in precision else tf.float32, matmul_size)

    def train():
        for _ in range(steps):
            out = trainer.train_step(real)
        float(out["d_loss"])
    best_mm = best_train = best_peer = float("inf")
    share = 0.0
    for _ in range(repeats):
        best_mm = min(best_mm, seconds(matmul))
        cpu_start = time.process_time()
        t = seconds(train)
        if t < best_train:
            best_train, share = t, (time.process_time() - cpu_start) / t
        if peer is not None:
            best_peer = min(best_peer, seconds(peer))
    return (batch * steps / best_train, flops / best_mm / 1e9, trainer, share,
            None if peer is None else batch * steps / best_peer)


def measure_variant(variant: str, discriminator: str, resolution: int, channels: int, batch: int,
                    steps: int, precision: str, matmul_size: int = 4096, peak: float | None = None) -> dict:
    """One variant x discriminator: a warm-up step, a matmul block, ``steps`` timed steps;
    ``of_peak`` against ``peak`` GFLOP/s (null without one)."""
    labels = [str(i) for i in range(10)]
    config = TrainConfig(variant=variant, discriminator=discriminator, resolution=resolution, channels=channels,
                         batch_size=batch, precision=precision, labels=labels)
    trainer = GANTrainer(config)
    n = trainer.model.images_per_step()
    rng = np.random.default_rng(0)
    data = {"image": tf.constant(rng.uniform(-1, 1, (n, resolution, resolution, channels)), tf.float32),
            "label": tf.constant(rng.integers(0, 10, n), tf.int64)}
    float(trainer.train_step(data)["d_loss"])  # trace + warm up
    matmul, flops = matmul_block(tf.bfloat16 if "bfloat16" in precision else tf.float32, matmul_size)
    mm = flops / seconds(matmul) / 1e9

    def train():
        for _ in range(steps):
            out = trainer.train_step(data)
        float(out["d_loss"])
    t = seconds(train)
    step_flops = variant_step_flops(trainer)
    return {"images_per_s": round(n * steps / t, 2), "steps_per_s": round(steps / t, 4),
            "gflop_per_step": round(step_flops / 1e9, 1), "matmul_gflops": round(mm, 1),
            "utilization": round(step_flops * steps / t / 1e9 / mm, 3),
            "of_peak": round(step_flops * steps / t / 1e9 / peak, 3) if peak else None,
            "d_params": trainer.discriminator.count_params()}


def capsnet_convs(resolution: int, channels: int, batch: int, precision: str, matmul_size: int = 4096) -> list[dict]:
    """The CapsNet's two 9x9 'valid' convolutions (model/nets/capsnet.py), forward + both gradients
    on the native kernels, against the matmul rate; ``routed``: whether model/nets/layers.py's
    rule (strided, 'same', output side <= MATMUL_MAX_SIDE) would take them."""
    from model.nets.layers import matmul_route_for

    dtype = tf.bfloat16 if "bfloat16" in precision else tf.float32
    matmul, flops = matmul_block(dtype, matmul_size)
    mm = flops / seconds(matmul) / 1e9
    out, side, cin, padding = [], resolution, channels, "valid"
    for name, stride, cout in (("conv1 9x9 stride 1", 1, 256), ("primary caps 9x9 stride 2", 2, 256)):
        out_side = (side - 9) // stride + 1
        x = tf.cast(tf.random.normal((batch, side, side, cin)), dtype)
        w = tf.cast(tf.random.normal((9, 9, cin, cout)) * 0.01, dtype)

        @tf.function
        def run(x, w, stride=stride):
            with tf.GradientTape() as tape:
                tape.watch([x, w])
                y = tf.nn.conv2d(x, w, stride, "VALID")
            return tape.gradient(y, [x, w], output_gradients=tf.ones_like(y))
        run(x, w)[0].numpy()
        t = min(seconds(lambda x=x, w=w, run=run: run(x, w)[0].numpy()) for _ in range(3))
        conv_flops = 3 * 2.0 * batch * out_side * out_side * 81 * cin * cout  # forward + 2 gradients
        out.append({"layer": name, "input": [side, side, cin], "output": [out_side, out_side, cout],
                    "ms": round(1e3 * t, 1), "gflops": round(conv_flops / t / 1e9, 1),
                    "of_matmul": round(conv_flops / t / 1e9 / mm, 3),
                    # the route takes 'same' strided layers with a small output; these are 'valid'
                    "routed": stride > 1 and matmul_route_for(dtype.name, out_side) and padding == "same"})
        side, cin = out_side, cout
    return out


def torch_peer(args):
    """``(block, skip reason)``: bench/torch_peer.py's warmed-up block of ``args.steps`` torch
    steps, or None and why not (None with ``--no-torch``, a reason when torch is missing)."""
    if args.no_torch:
        return None, None
    try:
        import torch  # noqa: F401
    except ImportError:
        return None, "torch is not installed (pip install -e '.[metrics]')"
    from torch_peer import block
    return block(args.batch, args.steps, args.resolution, args.base_width), None


def peaks(flags: set[str]) -> tuple[dict, dict]:
    """``(cpu, peak GFLOP/s by precision)``: what the FMA peak was computed from
    (model/cpu.py), and the peak each precision's step is held against."""
    peak = cpu_peak()
    bf16 = bf16_peak_gflops(peak, flags)
    cpu = {"model": cpu_model(), **peak.as_dict(), "bf16_peak_gflops": None if bf16 is None else round(bf16, 1),
           "bf16_units": bf16_units(flags),
           "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"),
           "flags_from": "FACEGAN_CPU_FLAGS" if "FACEGAN_CPU_FLAGS" in os.environ else "/proc/cpuinfo"}
    by_precision = {"float32": cpu["gflops"], "mixed_bfloat16": cpu["bf16_peak_gflops"], "mixed_float16": None}
    return cpu, by_precision


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, help=f"training steps per timed block (default {FULL['steps']})")
    p.add_argument("--repeats", type=int, help=f"timed blocks; the best one counts (default {FULL['repeats']})")
    p.add_argument("--batch", type=int, help=f"default {FULL['batch']}")
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--base-width", type=int, help=f"the networks' width (default {FULL['base_width']}, TrainDCGAN's)")
    p.add_argument("--matmul-size", type=int, help=f"side of the square matmuls (default {FULL['matmul_size']})")
    p.add_argument("--precisions", default="float32,mixed_bfloat16", help="comma separated (default: %(default)s)")
    p.add_argument("--force-precisions", action="store_true",
                   help="also time precisions this CPU only emulates (bfloat16 without bfloat16 units: slow)")
    p.add_argument("--variant-steps", type=int, default=1, help="timed steps per variant x discriminator")
    p.add_argument("--variants", help="'all', 'none', or variant names, comma separated (default: all)")
    p.add_argument("--no-torch", action="store_true", help="leave out the PyTorch eager peer (float32)")
    p.add_argument("--tiny", action="store_true", help="smoke-test settings: " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in TINY.items()) + " (explicit options still win)")
    args = p.parse_args()
    for key, value in (TINY if args.tiny else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)

    flags = cpu_flags()
    cpu, peak = peaks(flags)
    from tasks.train import TrainDCGAN
    default = resolve_precision(TrainDCGAN.precision._default)  # what TrainDCGAN trains with
    result = {
        "cpu_count": os.cpu_count(), "batch": args.batch, "resolution": args.resolution,
        "base_width": args.base_width, "steps": args.steps, "repeats": args.repeats,
        "matmul_size": args.matmul_size, "cpu": cpu, "fma_peak_gflops": cpu["gflops"], "skipped": {},
        "load_avg_start": round(os.getloadavg()[0], 2), "torch_images_per_s_fp32": None, "vs_torch_fp32": None,
    }
    gflop = None
    for precision in args.precisions.split(","):
        suffix = SUFFIX[precision]
        reason = emulated_reason(precision, flags)
        figures = dict.fromkeys(("images_per_s", "gflops", "matmul_gflops", "utilization", "of_peak",
                                 "matmul_of_peak", "cores_busy"))
        skip = bench_skip_reason(precision, args.force_precisions, flags)
        if skip:
            result["skipped"][precision] = skip
        else:
            peer, why = torch_peer(args) if precision == "float32" else (None, None)
            if why:
                result["skipped"]["torch"] = why
            ips, mm, trainer, busy, peer_ips = measure(precision, args.batch, args.resolution, args.steps,
                                                       args.repeats, args.base_width, args.matmul_size, peer)
            gflop = step_flops_per_image(trainer) / 1e9
            top = peak[precision]
            figures = {"images_per_s": round(ips, 2), "gflops": round(ips * gflop, 1), "matmul_gflops": round(mm, 1),
                       "utilization": round(ips * gflop / mm, 3),
                       "of_peak": round(ips * gflop / top, 3) if top else None,
                       "matmul_of_peak": round(mm / top, 3) if top else None, "cores_busy": round(busy, 2)}
            if reason:
                figures["emulated"] = True
            if peer_ips is not None:
                result["torch_images_per_s_fp32"] = round(peer_ips, 2)
                result["vs_torch_fp32"] = round(ips / peer_ips, 3)
            print(precision, json.dumps(figures), file=sys.stderr, flush=True)
        result.update({f"{k}_{suffix}": v for k, v in figures.items()})
    result["gflop_per_image"] = None if gflop is None else round(gflop, 3)
    result["default_precision"] = default
    for key in ("images_per_s", "utilization", "of_peak"):
        result[key] = result.get(f"{key}_{SUFFIX[default]}")
    if args.variants != "none":
        from model.variants import VARIANTS
        names = list(VARIANTS) if args.variants == "all" else args.variants.split(",")
        result["variants"] = {}
        for resolution, channels in ((64, 3), (28, 1)):
            for name in names:
                for disc in ("cnn", "capsnet"):
                    key = f"{name}/{disc}/{resolution}"
                    result["variants"][key] = measure_variant(name, disc, resolution, channels, args.batch,
                                                              args.variant_steps, default, args.matmul_size,
                                                              peak[default])
                    print(key, json.dumps(result["variants"][key]), file=sys.stderr, flush=True)
            result["capsnet_convs_" + str(resolution)] = capsnet_convs(resolution, channels, args.batch, default,
                                                                       args.matmul_size)
    result["load_avg_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
