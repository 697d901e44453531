"""The CelebA attribute classifier (model/apps/attributes.py) and its two Luigi tasks."""
from __future__ import annotations

import json

import numpy as np
import pytest

from model.apps.attributes import (
    CARD_FILE,
    MODEL_FILE,
    accuracy,
    attribute_columns,
    build_classifier,
    load_classifier,
    majority,
    masked_bce,
    parse_attributes,
    smooth_targets,
    train_classifier,
)
from pipeline.records import ATTRIBUTE_NAMES


def test_attribute_names_are_checked_in_one_line_listing_the_valid_ones():
    assert parse_attributes("Male, Smiling") == ("Male", "Smiling")
    assert parse_attributes(["Eyeglasses"]) == ("Eyeglasses",)
    assert attribute_columns(["Male", "5_o_Clock_Shadow"]) == [20, 0]
    with pytest.raises(ValueError) as err:
        parse_attributes("Male,Beard")
    message = str(err.value)
    assert "\n" not in message and "unknown CelebA attribute 'Beard'" in message
    assert all(name in message for name in ATTRIBUTE_NAMES)
    with pytest.raises(ValueError, match="no attribute given"):
        parse_attributes(" , ")
    with pytest.raises(ValueError, match="repeat"):
        parse_attributes("Male,Male")


def test_smoothed_targets_and_the_loss_skip_unknown_labels():
    labels = np.array([[1, 0, -1], [0, -1, 1]], np.int8)
    targets, known = smooth_targets(labels)
    np.testing.assert_allclose(targets, [[0.9, 0.1, 0.1], [0.1, 0.1, 0.9]])
    np.testing.assert_array_equal(known, [[1, 1, 0], [1, 0, 1]])
    probs = np.array([[0.8, 0.3, 0.5], [0.2, 0.99, 0.6]], np.float32)
    t, p = targets[known > 0], probs[known > 0]
    expected = -np.mean(t * np.log(p) + (1 - t) * np.log(1 - p))
    assert float(masked_bce(labels, probs)) == pytest.approx(expected, rel=1e-5)
    other = probs.copy()
    other[known == 0] = 0.01  # an unknown label's prediction does not count
    assert float(masked_bce(labels, other)) == pytest.approx(expected, rel=1e-5)
    # the smoothed loss is lowest at the smoothed target, not at certainty
    assert float(masked_bce([[1]], [[0.9]])) < float(masked_bce([[1]], [[0.999]]))


def test_accuracy_and_majority_count_known_labels_only():
    labels = np.array([[1, -1], [0, 1], [1, 1], [1, -1]])
    probs = np.array([[0.9, 0.1], [0.6, 0.7], [0.7, 0.2], [0.2, 0.9]])
    np.testing.assert_allclose(accuracy(probs, labels), [0.5, 0.5])
    np.testing.assert_allclose(majority(labels), [0.75, 1.0])


def test_the_network_has_three_conv_layers_and_a_sigmoid_per_attribute():
    import keras

    model = build_classifier(3)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(convs) == 3 and model.output_shape == (None, 3)
    out = np.asarray(model(np.zeros((2, 64, 64, 3), np.float32)))
    assert out.shape == (2, 3) and ((out > 0) & (out < 1)).all()


def synthetic_records(tmp_path, n=120):
    """A records version whose 'Male' label is 'the left half is brighter' and whose
    'Smiling' label is unknown for a third of the faces."""
    from test_records import _version

    rng = np.random.default_rng(0)
    images = rng.integers(60, 120, (n, 64, 64, 3), dtype=np.uint8)
    faces = []
    for i in range(n):
        male = bool(i % 2)
        images[i, :, :32] += 80 if male else 0
        attributes = {"Male": male}
        if i % 3:
            attributes["Smiling"] = bool(rng.integers(2))
        faces.append({"key": f"img/{i:05d}.jpg", "face": 0, "source": "synthetic",
                      "landmarks": np.zeros((68, 2)).tolist(), "transform": np.eye(2, 3).tolist(),
                      "meta": {"identity": i, "attributes": attributes}})
    return _version(tmp_path, images, faces)


def test_training_learns_a_visible_attribute_and_reports_held_out_accuracy(tmp_path):
    records = synthetic_records(tmp_path)
    epochs = []
    card = train_classifier(records, ["Male", "Smiling"], tmp_path / "clf", epochs=4, batch_size=16, width=8,
                            progress=lambda done, total, extra: epochs.append((done, total)))
    assert epochs == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert (tmp_path / "clf" / MODEL_FILE).exists() and json.loads((tmp_path / "clf" / CARD_FILE).read_text()) == card
    assert card["attributes"] == ["Male", "Smiling"] and card["targets"] == [0.9, 0.1]
    assert card["records"]["version"] == "v-test" and card["held_out_split"] == "test"
    male = card["accuracy"]["Male"]
    assert male["test"] >= 0.9 and male["n_test"] == card["records"]["test"]
    assert card["accuracy"]["Smiling"]["n_test"] < card["records"]["test"]  # unknown labels left out
    classifier = load_classifier(tmp_path / "clf")
    from model.apps.attributes import load_split
    images, labels = load_split(records, "test", ["Male"])
    probs = classifier.predict(images, ["Male"])
    assert probs.shape == (len(images), 1)
    assert accuracy(probs, labels)[0] == pytest.approx(male["test"], abs=1e-4)
    with pytest.raises(ValueError, match=r"not trained on \['Eyeglasses'\]; it has \['Male', 'Smiling'\]"):
        classifier.columns(["Eyeglasses"])


def test_a_data_set_without_labels_is_a_clear_error(tmp_path):
    records = synthetic_records(tmp_path)
    with pytest.raises(ValueError, match=r"no training example has a label for \['Eyeglasses'\]"):
        train_classifier(records, ["Eyeglasses"], tmp_path / "clf", epochs=1)
    assert not (tmp_path / "clf").exists()


@pytest.mark.slow
def test_luigi_trains_the_classifier_then_fits_directions(luigi_config, tmp_path):
    """The whole chain on a CelebA-format copy of real portraits: DownloadCelebA (local
    copy) -> alignment -> records -> TrainAttributeClassifier -> FitAttributeDirections."""
    import luigi
    from luigi.execution_summary import LuigiStatusCode
    from studio_runs import make_run
    from test_source_tasks import write_celeba

    from tasks import FitAttributeDirections, TrainAttributeClassifier

    write_celeba(tmp_path / "celeba")
    luigi_config("DownloadCelebA", "local_dir", tmp_path / "celeba")
    luigi_config("DownloadCelebA", "allow_partial", "true")
    run = make_run(tmp_path / "processed" / "models" / "celeba" / "dcgan-x")
    luigi_config("TrainAttributeClassifier", "epochs", 2)
    luigi_config("TrainAttributeClassifier", "width", 8)
    fit = FitAttributeDirections(attributes="Male,Smiling", n=400)
    train = TrainAttributeClassifier(attributes="Male,Smiling")
    result = luigi.build([fit], local_scheduler=True, detailed_summary=True)
    assert result.status == LuigiStatusCode.SUCCESS, result.summary_text
    assert fit.run_path() == run  # the newest run under processed/models
    card = json.loads((tmp_path / "processed" / "classifiers" / "celeba").glob("attributes-*/classifier.json")
                      .__next__().read_text())
    assert card["attributes"] == ["Male", "Smiling"] and set(card["accuracy"]) == {"Male", "Smiling"}
    directions = json.loads((run / "directions.json").read_text())
    assert directions["samples"] == 400 and directions["classifier"]["folder"] == train.output().path
    assert {d["name"] for d in directions["directions"] + directions["dropped"]} == {"Male", "Smiling"}
    assert fit.complete()
    assert not FitAttributeDirections(attributes="Male,Smiling", n=401).complete()  # other settings: re-fit
    assert not FitAttributeDirections(attributes="Male,Smiling", seed=1, n=400).complete()


def test_the_tasks_refuse_bad_settings_in_one_line_before_running(luigi_config, tmp_path):
    from tasks import FitAttributeDirections, TrainAttributeClassifier
    from tasks.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        TrainAttributeClassifier(attributes="Male,Beard")
    message = str(err.value)
    assert "\n" not in message and message.startswith("[TrainAttributeClassifier] attributes = 'Male,Beard'")
    assert "unknown CelebA attribute 'Beard'" in message and "Wearing_Necktie" in message
    assert "--TrainAttributeClassifier-attributes" in message
    with pytest.raises(ConfigError, match=r"\[TrainAttributeClassifier\] epochs = 0: must be at least 1"):
        TrainAttributeClassifier(epochs=0)
    with pytest.raises(ConfigError, match=r"\[FitAttributeDirections\] keep = 1.5: must be in \(0, 1\]"):
        FitAttributeDirections(keep=1.5)
    with pytest.raises(ConfigError, match=r"\[FitAttributeDirections\] run_dir = .*holds no model_card.json"):
        FitAttributeDirections(run_dir=str(tmp_path))
