"""Serving a generator: as a TensorFlow SavedModel, and as a fast in-process forward.

The serving signature ``serving_default`` takes every input the model card
declares, by name (``z`` ``(n, z_dim) float32``, then e.g. ``label``
``(n, classes)`` or ``c`` ``(n, k)``), and returns ``images`` ``(n, H, W, C)
uint8``, so a client (TF Serving, ``tf.saved_model.load``) needs no knowledge of
the [-1, 1] convention. :func:`compile_generator` is the same mapping in process,
traced once, for the web studio.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from pipeline.atomic import atomic_path


def to_uint8(images: tf.Tensor) -> tf.Tensor:
    """Generator output in [-1, 1] -> ``uint8`` in [0, 255] (in the graph)."""
    x = tf.cast(images, tf.float32)
    return tf.cast(tf.clip_by_value(tf.round((x + 1.0) * 127.5), 0, 255), tf.uint8)


def export_saved_model(generator: keras.Model, path: str | os.PathLike, card=None) -> None:
    """Write ``generator`` as a SavedModel at ``path`` (atomically: temp folder, rename).

    The signature's inputs are the ``card``'s (a :class:`model.card.ModelCard`); without
    a card, the generator's single ``z`` input."""
    path = Path(path)
    if card is not None:
        names, sizes = [s.name for s in card.inputs], [s.size for s in card.inputs]
    else:
        names, sizes = ["z"], [generator.input_shape[-1]]

    def serve(*args):
        inputs = dict(zip(names, args))
        return {"images": to_uint8(generator(inputs["z"] if len(names) == 1 else inputs, training=False))}

    archive = keras.export.ExportArchive()
    archive.track(generator)
    archive.add_endpoint("serving_default", serve,
                         input_signature=[tf.TensorSpec((None, k), tf.float32, name=name)
                                          for name, k in zip(names, sizes)])
    with atomic_path(path) as tmp:
        archive.write_out(str(tmp), verbose=False)


def load_serving(path: str | os.PathLike):
    """The ``serving_default`` function of a SavedModel written by :func:`export_saved_model`."""
    return tf.saved_model.load(str(path)).signatures["serving_default"]


def fast_copy(network, precision: str = "float32"):
    """A copy of a functional Keras ``network`` (a generator or a discriminator) for fast
    inference and input gradients, same weights: transposed and strided convolutions become
    model/nets/layers.py's drop-in matmul-route layers, and with ``precision``
    ``mixed_bfloat16`` every layer but the output one computes in bfloat16 (measured 2x
    faster on CPUs with AVX-512 BF16; pixels within a few levels of float32, most identical).
    With ``float32`` each layer keeps its own dtype policy, and a network without
    convolutions comes back as itself. The copy is frozen (``trainable`` False, the
    matmul-route kernels constants: model/nets/layers.py ``freeze``): gradients reach its
    inputs only, and changing its weights later needs ``freeze`` again. Serving
    (:func:`compile_generator`) and the search of projection and completion
    (model/apps/inversion.py) run through it: on the AVX2 EPYC a search step (forward and
    input gradient, batch 2) of the paper-size generator took 36-42 ms through the copy against 75 ms
    through the exported plain layers."""
    from model.nets.layers import MatmulConv2D, MatmulConv2DTranspose
    from model.train.precision import resolve_precision

    precision = resolve_precision(precision)  # a precision this process cannot run: one line
    swap = {keras.layers.Conv2DTranspose: MatmulConv2DTranspose, keras.layers.Conv2D: MatmulConv2D}
    outputs = {id(t._keras_history[0]) for t in network.outputs}

    def clone(layer):
        config = layer.get_config()
        if precision != "float32" and id(layer) not in outputs:
            config["dtype"] = precision
        return swap.get(type(layer), type(layer)).from_config(config)

    if precision == "float32" and not any(type(layer) in swap for layer in network.layers):
        return network
    copy = keras.models.clone_model(network, clone_function=clone)
    copy.set_weights(network.get_weights())
    copy.trainable = False  # its matmul-route kernels are constants now
    for layer in copy.layers:
        if isinstance(layer, (MatmulConv2D, MatmulConv2DTranspose)):
            layer.freeze()
    return copy


def compile_generator(generator, precision: str = "float32"):
    """A fast ``forward(inputs) -> (n, H, W, C) uint8`` for serving: one traced TensorFlow
    graph for any batch size (no per-call Keras overhead) over :func:`fast_copy`,
    the [-1, 1] -> uint8 conversion inside it. ``inputs`` is ``{name: (n, size) float32}``
    with every input of the generator (a z-only generator takes ``{"z": z}``)."""
    names = [t.name for t in generator.inputs]
    fast = fast_copy(generator, precision)
    spec = {name: tf.TensorSpec((None, t.shape[-1]), tf.float32, name=name)
            for name, t in zip(names, generator.inputs, strict=True)}

    @tf.function(input_signature=[spec])
    def forward(inputs):
        return to_uint8(fast(inputs[names[0]] if len(names) == 1 else inputs, training=False))

    def call(inputs: dict):
        return forward({k: np.asarray(inputs[k], np.float32) for k in names}).numpy()

    call.input_names, call.generator, call.precision = names, generator, precision
    return call


# -- OpenVINO: the studio's engine ---------------------------------------------------------------

#: Where a run keeps its OpenVINO copy of the serving signature (``model_card.json`` files key
#: ``openvino``), beside ``generator.keras``.
OPENVINO_FILE = "openvino/generator.xml"
#: Serving engines: ``auto`` is OpenVINO when installed (bench/serving_engines.py: 1.8-3.7x faster
#: than TensorFlow at batch 1 while the CPU has cores to spare, pixels within a grey level;
#: docs/benchmarks.md), else TensorFlow.
ENGINES = ("auto", "openvino", "tensorflow")


def openvino_available() -> bool:
    import importlib.util
    return importlib.util.find_spec("openvino") is not None


def convert_offline(source: str):
    """``openvino.convert_model(source)`` without its usage telemetry. OpenVINO's converter
    reports every conversion to Google Analytics unless a consent file in the user's home says
    no (openvino_telemetry with ``enable_opt_in_dialog=False``: no file counts as consent); an
    export here sends nothing anywhere, so the converter gets OpenVINO's own stand-in, the stub
    it uses when the telemetry package is missing, for the call."""
    import openvino as ov
    from openvino.tools.ovc import convert_impl, telemetry_stub, telemetry_utils

    saved = convert_impl.tm, telemetry_utils.tm
    convert_impl.tm = telemetry_utils.tm = telemetry_stub
    try:
        return ov.convert_model(source)
    finally:
        convert_impl.tm, telemetry_utils.tm = saved


def export_openvino(saved_model: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Convert the SavedModel of :func:`export_saved_model` (every input -> ``uint8`` images) to
    OpenVINO IR at ``path`` (``.xml`` and its ``.bin``), atomically. Weights stay float32
    (``compress_to_fp16=False``: half-precision weights would change pixels)."""
    import openvino as ov

    path = Path(path)
    model = convert_offline(str(saved_model))
    with atomic_path(path.parent) as tmp:
        tmp.mkdir(parents=True, exist_ok=True)
        ov.save_model(model, str(tmp / path.name), compress_to_fp16=False)
    return path


def openvino_forward(source: str | os.PathLike, names: list[str], precision: str = "float32",
                     streams: int | None = None):
    """``forward(inputs) -> (n, H, W, C) uint8`` on OpenVINO's CPU plugin from an IR ``.xml`` or
    a SavedModel folder (converted in memory).

    Every row runs alone at batch 1, the rows of a call spread over ``streams`` concurrent
    infer requests of one thread each (default: one per usable core): a face never depends on
    which other requests shared its call, on any CPU (float32 sums of one row do not change
    with the batch), and batch 1 is where this network runs fastest per row. A call with one
    row runs on all cores instead. ``precision``: ``float32``, or ``mixed_bfloat16`` for
    OpenVINO's bfloat16 inference (CPUs with bfloat16 units only)."""
    import openvino as ov

    from pipeline.align.engine import usable_cores

    core = ov.Core()
    model = core.read_model(str(source)) if str(source).endswith(".xml") else convert_offline(str(source))
    hint = "bf16" if precision == "mixed_bfloat16" else "f32"
    streams = streams or usable_cores()
    one = core.compile_model(model, "CPU", {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": hint,
                                            "INFERENCE_NUM_THREADS": usable_cores()})
    many = core.compile_model(model, "CPU", {"NUM_STREAMS": streams, "INFERENCE_NUM_THREADS": streams,
                                             "INFERENCE_PRECISION_HINT": hint})
    single = one.create_infer_request()
    pool = ov.AsyncInferQueue(many, streams)
    lock = threading.Lock()  # one call at a time owns the requests

    def call(inputs: dict) -> np.ndarray:
        rows = {k: np.ascontiguousarray(inputs[k], np.float32) for k in names}
        n = len(rows[names[0]])
        with lock:
            if n == 1:
                return single.infer(rows)[0].copy()
            out: list = [None] * n
            pool.set_callback(lambda request, i: out.__setitem__(i, request.get_output_tensor(0).data.copy()))
            for i in range(n):
                pool.start_async({k: v[i:i + 1] for k, v in rows.items()}, i)
            pool.wait_all()
            return np.concatenate(out)

    call.input_names, call.precision, call.engine = names, precision, f"openvino {ov.get_version().split('-')[0]}"
    # Two rows per stream: a call then lasts about two row times, so a request arriving during
    # it waits little, and the next call's rows queue while this one runs. With 8 clients on 2
    # cores: p99 78-82 ms against 122-125 ms for calls of up to 32 rows, and 117 against
    # 108-111 requests/s (docs/benchmarks.md, studio speed).
    call.rows_per_call = 2 * streams
    return call


def serving_forward(run_dir: str | os.PathLike, card, generator, engine: str = "auto", precision: str = "auto"):
    """The studio's forward for a run: OpenVINO from the run's IR (or its SavedModel, converted
    in memory, for runs exported before the IR existed) when ``engine`` allows and OpenVINO is
    installed, else :func:`compile_generator`. ``precision`` ``auto`` is float32 on OpenVINO
    (its bfloat16 was slower here: bench/serving_engines.py) and
    :func:`model.train.loop.resolve_precision`'s choice on TensorFlow. ``forward.engine`` says
    which ran. Either engine computes every row alone, so a face never depends on which
    requests shared a call (oneDNN's float32 kernels change their sums with the batch size
    on AVX2 CPUs)."""
    forward = _serving_forward(run_dir, card, generator, engine, precision)
    forward.generator = generator  # the Keras model, for the searches of completion and projection
    return forward


def _serving_forward(run_dir, card, generator, engine: str, precision: str):
    if engine not in ENGINES:
        raise ValueError(f"serving engine must be one of {ENGINES}, got {engine!r}")
    run_dir = Path(run_dir)
    names = [s.name for s in card.inputs]
    if engine == "openvino" or (engine == "auto" and openvino_available()):
        ov_precision = "float32" if precision == "auto" else precision
        ir = run_dir / card.files.get("openvino", OPENVINO_FILE)
        saved = run_dir / card.files.get("saved_model", "saved_model")
        if ir.is_file() or saved.is_dir():
            return openvino_forward(ir if ir.is_file() else saved, names, ov_precision)
        import tempfile  # a run folder with only generator.keras: its signature, converted once here

        with tempfile.TemporaryDirectory(prefix="facegan-serving-") as tmp:
            export_saved_model(generator, Path(tmp) / "saved_model", card)
            return openvino_forward(Path(tmp) / "saved_model", names, ov_precision)
    from model.train.precision import resolve_precision

    batched = compile_generator(generator, resolve_precision(precision))

    def forward(inputs: dict) -> np.ndarray:  # row by row: the same promise as OpenVINO's
        return np.concatenate([batched({k: v[i:i + 1] for k, v in inputs.items()})
                               for i in range(len(inputs[names[0]]))])

    forward.input_names, forward.precision = names, batched.precision
    forward.engine = f"tensorflow {tf.__version__}"
    # rows run one after another on all cores: 4 rows a call kept the 8-client p99 at 99 ms
    # against 147 ms for up to 32 (AVX2 EPYC, docs/benchmarks.md, studio speed)
    forward.rows_per_call = 4
    return forward
