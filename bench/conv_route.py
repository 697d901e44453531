"""Which strided layers should take model/nets/layers.py's matmul route on this machine?

    python bench/conv_route.py [--rounds 5] [--batch 64] [--force-precisions]

For each strided layer of the 64x64 DCGAN (D's convolutions 32->16, 16->8, 8->4;
G's transposed convolutions 4->8, 8->16, 16->32, at their real widths) and each
precision, times forward + both gradients on the native kernels
(``tf.nn.conv2d`` / ``conv2d_transpose``) and as matmuls
(``model.nets.layers.conv2d_same`` / ``conv2d_transpose_same``). The two are timed
back to back in each of ``--rounds`` rounds and the median counts, so a VM
whose speed drifts affects both alike. Prints one JSON line: per layer and
precision the two times in ms, ``speedup`` (native / matmul) and ``routed``
(whether ``model.nets.layers.MATMUL_MAX_SIDE`` sends that layer down the matmul route);
``agrees`` is true when every routed layer is faster as matmuls and every
unrouted one is not faster by more than 10%. bfloat16 on a CPU without bfloat16 units
(emulated, slower than float32) is left out with the reason in ``skipped`` unless
``--force-precisions``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import tensorflow as tf  # noqa: E402

from model.cpu import bench_skip_reason  # noqa: E402
from model.nets.layers import conv2d_same, conv2d_transpose_same, matmul_route_for  # noqa: E402

# (name, transposed, small side, big side, channels at the small side, at the big side)
LAYERS = [("D conv 32->16", False, 16, 32, 256, 128), ("D conv 16->8", False, 8, 16, 512, 256),
          ("D conv 8->4", False, 4, 8, 1024, 512), ("G conv-transpose 4->8", True, 4, 8, 1024, 512),
          ("G conv-transpose 8->16", True, 8, 16, 512, 256), ("G conv-transpose 16->32", True, 16, 32, 256, 128)]


def forward_backward(f):
    """A compiled function: ``f(x, w)`` and its gradients with respect to both."""
    @tf.function
    def run(x, w):
        with tf.GradientTape() as tape:
            tape.watch([x, w])
            y = f(x, w)
        return tape.gradient(y, [x, w], output_gradients=tf.ones_like(y))
    return run


def seconds(run, x, w, reps: int = 2) -> float:
    start = time.perf_counter()
    for _ in range(reps):
        out = run(x, w)
    out[0].numpy()
    return (time.perf_counter() - start) / reps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--force-precisions", action="store_true",
                   help="time bfloat16 even where the CPU only emulates it")
    args = p.parse_args()
    results, agrees, skipped = [], True, {}
    for dtype in (tf.bfloat16, tf.float32):
        skip = bench_skip_reason(dtype.name, args.force_precisions)
        if skip:
            skipped[dtype.name] = skip
            continue
        for name, transposed, small, big, c_small, c_big in LAYERS:
            w = tf.cast(tf.random.normal((4, 4, c_big, c_small), stddev=0.02), dtype)
            if transposed:  # kernel (k, k, out, in), input at the small side
                x = tf.random.normal((args.batch, small, small, c_small))
                runs = {"native": forward_backward(lambda x, w, big=big: tf.nn.conv2d_transpose(
                            x, w, [args.batch, big, big, w.shape[2]], 2, "SAME")),
                        "matmul": forward_backward(lambda x, w: conv2d_transpose_same(x, w, 2))}
            else:
                x = tf.random.normal((args.batch, big, big, c_big))
                runs = {"native": forward_backward(lambda x, w: tf.nn.conv2d(x, w, 2, "SAME")),
                        "matmul": forward_backward(lambda x, w: conv2d_same(x, w, 2))}
            x = tf.cast(x, dtype)
            times = {key: [] for key in runs}
            for run in runs.values():
                seconds(run, x, w, reps=1)  # trace and warm up
            for r in range(args.rounds):
                for key in (list(runs) if r % 2 == 0 else reversed(list(runs))):
                    times[key].append(seconds(runs[key], x, w))
            t_native, t_matmul = statistics.median(times["native"]), statistics.median(times["matmul"])
            routed = matmul_route_for(dtype.name, small, transposed)
            speedup = t_native / t_matmul
            agrees &= speedup > 1.0 if routed else speedup <= 1.1
            results.append({"layer": name, "dtype": dtype.name, "native_ms": round(t_native * 1e3, 1),
                            "matmul_ms": round(t_matmul * 1e3, 1), "speedup": round(speedup, 2), "routed": routed})
    print(json.dumps({"cpu_count": os.cpu_count(), "batch": args.batch, "rounds": args.rounds,
                      "layers": results, "agrees": agrees, "skipped": skipped}))


if __name__ == "__main__":
    main()
