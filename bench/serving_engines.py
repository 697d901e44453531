"""Inference engines for the studio's generator forward, side by side, on this CPU.

    python bench/serving_engines.py                     # the paper-size 64x64 DCGAN (base width 128)
    python bench/serving_engines.py --base-width 8 --repeats 5   # tiny, for the smoke test

Builds TrainDCGAN's default generator (random weights: speed does not depend on them),
exports it as the studio does (model/train/serving.py: the SavedModel, then OpenVINO IR; ONNX
through tf2onnx when installed), and times one forward at batch 1 and 8 in each engine:

- ``tensorflow``: the traced forward the studio ran before (compile_generator), float32 and,
  where the CPU has bfloat16 units, mixed bfloat16; ``tensorflow_no_onednn`` the same with
  ``TF_ENABLE_ONEDNN_OPTS=0`` (Eigen kernels; in a child process, the switch is read at import);
- ``openvino``: the studio's engine (serving_forward: batch 1 on all cores, larger calls row by
  row over one single-thread stream per core), f32 and bf16 where the CPU has bfloat16 units;
- ``onnxruntime``: the ONNX export with intra-op threads = cores (skipped, with the reason, when
  tf2onnx or onnxruntime is missing).

Each row: median ms per call at batch 1 and 8, ms per face at 8, the largest gray-level
difference from TensorFlow float32's pixels, and whether a face computed in a batch of 8
equals the same face alone (``batch_invariant``). The final line is JSON with every row, the
fastest engine at batch 1, and its speed-up over TensorFlow float32 (the peer, same run).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from model.cpu import bf16_units, cpu_model  # noqa: E402


def median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return round(1000 * float(np.median(times)), 2)


def measure(name: str, forward, z1, z8, reference, repeats: int) -> dict:
    """One engine's row: ``forward({"z": (n, 100)}) -> (n, 64, 64, 3) uint8``."""
    ms1 = median_ms(lambda: forward({"z": z1}), repeats)
    ms8 = median_ms(lambda: forward({"z": z8}), max(3, repeats // 4))
    out8 = forward({"z": z8})
    return {"engine": name, "ms_batch1": ms1, "ms_batch8": ms8, "ms_per_face_batch8": round(ms8 / 8, 2),
            "max_gray_diff": int(np.abs(out8.astype(int) - reference).max()),
            "batch_invariant": bool(all(np.array_equal(forward({"z": z8[i:i + 1]})[0], out8[i]) for i in range(8)))}


def child_tensorflow(args) -> dict:
    """TensorFlow float32 in this process (run by the parent with TF_ENABLE_ONEDNN_OPTS=0)."""
    from model.train.serving import compile_generator
    generator, z1, z8 = build(args)
    forward = compile_generator(generator, "float32")
    return measure("tensorflow_no_onednn float32", forward, z1, z8, np.load(args.reference), args.repeats)


def build(args):
    import keras

    from model.nets.dcgan import build_generator
    keras.utils.set_random_seed(0)
    generator = build_generator(64, 3, 100, base_width=args.base_width, fast=False)
    rng = np.random.default_rng(1)
    return generator, rng.standard_normal((1, 100)).astype(np.float32), rng.standard_normal((8, 100)).astype(np.float32)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--base-width", type=int, default=128, help="generator width (TrainDCGAN's default: 128)")
    p.add_argument("--repeats", type=int, default=100, help="timed calls at batch 1 (a quarter at batch 8)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--reference", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child_tensorflow(args)))
        return 0

    import tensorflow as tf

    from model.card import ModelCard, noise_spec
    from model.train.serving import compile_generator, export_openvino, export_saved_model, openvino_forward
    from pipeline.align.engine import usable_cores

    generator, z1, z8 = build(args)
    card = ModelCard(variant="dcgan", resolution=64, channels=3, inputs=[noise_spec(100)])
    bf16 = bool(bf16_units())
    rows, skipped = [], {}
    tf32 = compile_generator(generator, "float32")
    reference = tf32({"z": z8})
    rows.append(measure("tensorflow float32", tf32, z1, z8, reference, args.repeats))
    if bf16:
        rows.append(measure("tensorflow mixed_bfloat16", compile_generator(generator, "mixed_bfloat16"),
                            z1, z8, reference, args.repeats))
    else:
        skipped["tensorflow mixed_bfloat16"] = "no bfloat16 units on this CPU (emulated bfloat16 is slower)"
    with tempfile.TemporaryDirectory(prefix="serving-engines-") as tmp:
        tmp = Path(tmp)
        np.save(tmp / "reference.npy", reference)
        child = subprocess.run([sys.executable, __file__, "--child", "--base-width", str(args.base_width),
                                "--repeats", str(args.repeats), "--reference", str(tmp / "reference.npy")],
                               capture_output=True, text=True, timeout=1800,
                               env={**os.environ, "TF_ENABLE_ONEDNN_OPTS": "0"})
        if child.returncode == 0:
            rows.append(json.loads(child.stdout.strip().splitlines()[-1]))
        else:
            skipped["tensorflow_no_onednn float32"] = (child.stderr.strip().splitlines() or ["failed"])[-1]
        export_saved_model(generator, tmp / "saved_model", card)
        ir = export_openvino(tmp / "saved_model", tmp / "openvino" / "generator.xml")
        rows.append(measure("openvino float32", openvino_forward(ir, ["z"], "float32"), z1, z8, reference,
                            args.repeats))
        if bf16:
            rows.append(measure("openvino bfloat16", openvino_forward(ir, ["z"], "mixed_bfloat16"), z1, z8,
                                reference, args.repeats))
        else:
            skipped["openvino bfloat16"] = "no bfloat16 units on this CPU"
        try:
            import onnxruntime as ort
            converted = subprocess.run([sys.executable, "-m", "tf2onnx.convert", "--saved-model",
                                        str(tmp / "saved_model"), "--output", str(tmp / "g.onnx")],
                                       capture_output=True, text=True, timeout=600)
            if converted.returncode != 0:
                raise ImportError((converted.stderr.strip().splitlines() or ["tf2onnx failed"])[-1])
            options = ort.SessionOptions()
            options.intra_op_num_threads = usable_cores()
            session = ort.InferenceSession(str(tmp / "g.onnx"), options, providers=["CPUExecutionProvider"])
            rows.append(measure(f"onnxruntime {ort.__version__} float32",
                                lambda inputs: session.run(["images"], inputs)[0], z1, z8, reference, args.repeats))
        except ImportError as exc:
            skipped["onnxruntime float32"] = f"not measured: {exc} (pip install onnxruntime tf2onnx)"
    close = [r for r in rows if r["max_gray_diff"] <= 3]
    best = min(close, key=lambda r: r["ms_batch1"])
    peer = rows[0]["ms_batch1"]
    print(json.dumps({"generator": {"resolution": 64, "base_width": args.base_width},
                      "machine": {"cpu": cpu_model(), "bf16_units": bf16_units(), "cores": usable_cores(),
                                  "tensorflow": tf.__version__},
                      "rows": rows, "skipped": skipped, "fastest_batch1": best["engine"],
                      "speedup_batch1_vs_tensorflow_float32": round(peer / best["ms_batch1"], 2)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
