"""The studio's serving engines (model/train/serving.py): OpenVINO from a run's IR, its
SavedModel or its generator.keras, TensorFlow as the fallback; the same pixels for the same
inputs whatever else shares a call, and OpenVINO's pixels equal to TensorFlow's."""
from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
pytest.importorskip("openvino")

from studio_runs import make_run  # noqa: E402

from model.card import read_card  # noqa: E402
from model.train.serving import (  # noqa: E402
    OPENVINO_FILE,
    compile_generator,
    export_openvino,
    export_saved_model,
    serving_forward,
)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = make_run(tmp_path_factory.mktemp("runs") / "dcgan-a")
    import keras
    return folder, read_card(folder), keras.models.load_model(folder / "generator.keras")


def _z(n, seed=0):
    return {"z": np.random.default_rng(seed).standard_normal((n, 100)).astype(np.float32)}


@pytest.mark.parametrize("engine", ["openvino", "tensorflow"])
def test_a_face_does_not_depend_on_what_shares_its_call(run, engine):
    folder, card, generator = run
    forward = serving_forward(folder, card, generator, engine, "float32")
    assert forward.engine.startswith(engine) and forward.precision == "float32"
    z = _z(9)
    together = forward(z)
    assert together.shape == (9, 64, 64, 3) and together.dtype == np.uint8
    for i in range(9):
        assert np.array_equal(forward({"z": z["z"][i:i + 1]})[0], together[i]), i
    # and in another company, at another position
    mixed = forward({"z": np.concatenate([_z(3, seed=5)["z"], z["z"][4:5]])})
    assert np.array_equal(mixed[3], together[4])


def test_each_engine_says_how_many_rows_a_call_should_take(run):
    """The studio's batcher takes its call size from the forward: two rows per OpenVINO
    stream, four on TensorFlow (rows in turn); an explicit --max-batch still wins."""
    from pipeline.align.engine import usable_cores
    from studio.batcher import MicroBatcher

    folder, card, generator = run
    ov = serving_forward(folder, card, generator, "openvino", "float32")
    assert ov.rows_per_call == 2 * usable_cores()
    assert serving_forward(folder, card, generator, "tensorflow", "float32").rows_per_call == 4
    batchers = [MicroBatcher(ov), MicroBatcher(ov, max_rows=3), MicroBatcher(lambda inputs: inputs["z"])]
    try:
        assert [b.max_rows for b in batchers] == [2 * usable_cores(), 3, 32]
    finally:
        for b in batchers:
            b.close()


def test_openvino_gives_tensorflow_s_pixels_from_every_source(run, tmp_path):
    """The run's generator.keras alone (converted in memory), its SavedModel, and the IR the
    training export writes all serve the TensorFlow forward's pixels (a level at most apart)."""
    folder, card, generator = run
    reference = compile_generator(generator, "float32")(_z(4))
    from_keras = serving_forward(folder, card, generator, "openvino")
    export_saved_model(generator, tmp_path / "saved_model", card)
    export_openvino(tmp_path / "saved_model", tmp_path / OPENVINO_FILE)
    assert (tmp_path / OPENVINO_FILE).is_file() and (tmp_path / OPENVINO_FILE).with_suffix(".bin").is_file()
    from_saved = serving_forward(tmp_path, card, generator, "openvino")
    card.files["openvino"] = OPENVINO_FILE
    from_ir = serving_forward(tmp_path, card, generator, "auto")
    for forward in (from_keras, from_saved, from_ir):
        assert forward.engine.startswith("openvino")
        got = forward(_z(4))
        assert np.abs(got.astype(int) - reference).max() <= 1
        assert np.mean(got == reference) > 0.99


def test_unknown_engine_is_one_clear_error(run):
    folder, card, generator = run
    with pytest.raises(ValueError, match="serving engine must be one of"):
        serving_forward(folder, card, generator, "onnx")


def test_the_openvino_export_sends_no_usage_data(run, tmp_path, monkeypatch):
    """OpenVINO's converter starts its telemetry (Google Analytics; no consent file counts as
    consent) on every conversion; the export converts with the telemetry stub instead: a
    Telemetry that fails when made proves it is never made, and the converter's own module is
    left as it was."""
    telemetry = pytest.importorskip("openvino_telemetry")
    from openvino.tools.ovc import convert_impl

    def refuse(*args, **kwargs):
        raise AssertionError("openvino_telemetry.Telemetry was created")

    monkeypatch.setattr(telemetry.Telemetry, "__init__", refuse)
    # a singleton: forget the instance an earlier conversion in this process may have made
    monkeypatch.setattr(telemetry.Telemetry, "_SingletonMetaClass__single_instance", None)
    folder, card, generator = run
    export_saved_model(generator, tmp_path / "saved_model", card)
    assert export_openvino(tmp_path / "saved_model", tmp_path / OPENVINO_FILE).is_file()
    assert convert_impl.tm is telemetry
