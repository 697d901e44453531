"""The comparison of GAN variants: the project's classifier as a feature network and
judge, the Hungarian code accuracy, the curves and grids, and CompareGANs end to end."""
from __future__ import annotations

import json
from pathlib import Path

import luigi
import numpy as np
import pytest
from luigi.execution_summary import LuigiStatusCode
from PIL import Image

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from model.card import InputSpec, ModelCard, noise_spec  # noqa: E402
from model.eval.classifier import (  # noqa: E402
    feature_network,
    matched_accuracy,
    predict,
    to_float,
    train_classifier,
)
from model.eval.comparison import classifier_figures, crop_grid, final_values, read_metrics  # noqa: E402
from model.train.sampling import grid  # noqa: E402

LEVELS = np.linspace(-0.9, 0.9, 4)  # gray level of each toy class


def _levels(n, rng, noise=0.05):
    """Toy 28x28 gray images: class k is flat gray level LEVELS[k] plus noise."""
    labels = rng.integers(0, 4, n)
    images = LEVELS[labels][:, None, None, None] + noise * rng.normal(size=(n, 28, 28, 1))
    return np.clip(images, -1, 1).astype("float32"), labels


@pytest.fixture(scope="module")
def classifier():
    images, labels = _levels(256, np.random.default_rng(0))
    data = tf.data.Dataset.from_tensor_slices({"image": images, "label": labels}).repeat().batch(32)
    # 200 steps at 1e-3 learn the toy task whatever the arithmetic: at 60 steps and 3e-3 one seed in
    # six stopped at 0.84 on TensorFlow's Eigen kernels, and seed 0 at 0.67 on an AVX2-only CPU.
    return train_classifier(data, 200, 28, 1, 4, lr=1e-3, seed=0)


def _uint8(images):
    return np.clip(np.rint((images + 1) * 127.5), 0, 255).astype(np.uint8)


def test_classifier_learns_and_its_feature_network_takes_rgb(classifier, tmp_path):
    images, labels = _levels(64, np.random.default_rng(1))
    assert np.mean(predict(classifier, _uint8(images)) == labels) == 1.0
    net = feature_network(classifier)
    assert net.input_shape == (None, 28, 28, 3) and net.output_shape == (None, 128)
    # RGB made from gray (model/eval/evaluation.py to_rgb) gives the gray image's features exactly.
    body = keras.Model(classifier.input, classifier.get_layer("features").output)
    gray = to_float(_uint8(images[:8]))
    np.testing.assert_allclose(net(np.repeat(gray, 3, -1)).numpy(), body(gray).numpy(), rtol=1e-5, atol=1e-5)
    # Saved, it loads as a model/eval/metrics.py feature network.
    from model.eval.metrics import load_feature_network
    net.save(tmp_path / "features.keras")
    features = load_feature_network(str(tmp_path / "features.keras"))
    out = features(np.repeat(_uint8(images[:5]), 3, -1))
    assert out.shape == (5, 128) and np.isfinite(out).all()


def test_matched_accuracy_finds_the_best_one_to_one_mapping():
    codes = np.array([0, 0, 1, 1, 2, 2, 2])
    labels = np.array([5, 5, 3, 3, 1, 1, 3])  # code 2 is mostly label 1
    acc, mapping = matched_accuracy(codes, labels, 3, 10)
    assert acc == pytest.approx(6 / 7) and mapping == {0: 5, 1: 3, 2: 1}
    # One-to-one: two codes that both mean "3" cannot both map to it.
    acc, _ = matched_accuracy(np.array([0, 1]), np.array([3, 3]), 2, 10)
    assert acc == 0.5


def _toy_generator(permutation):
    """G(z, code) = flat image at the gray level of class permutation[code]; z is ignored."""
    z, code = keras.Input((4,), name="z"), keras.Input((4,), name="code")
    levels = keras.layers.Dense(28 * 28, use_bias=False, trainable=False)
    ignore_z = keras.layers.Dense(28 * 28, use_bias=False, kernel_initializer="zeros")
    image = keras.layers.Reshape((28, 28, 1))(keras.layers.Add()([levels(code), ignore_z(z)]))
    model = keras.Model({"z": z, "code": code}, image)
    levels.set_weights([(LEVELS[permutation][:, None] * np.ones((4, 28 * 28))).astype("float32")])
    return model


def test_classifier_figures_score_conditional_generators(classifier):
    permutation = np.array([2, 0, 3, 1])
    generator = _toy_generator(permutation)
    real, _ = _levels(64, np.random.default_rng(2))
    net = feature_network(classifier)
    from model.eval.metrics import FeatureNetwork
    features = FeatureNetwork(lambda x: net(x).numpy(), 28, "NHWC", 32)
    real_features = features(np.repeat(_uint8(real), 3, -1))
    spec = [noise_spec(4), InputSpec("code", "onehot", 4)]
    info = classifier_figures(generator, ModelCard("infogan", 28, 1, spec), classifier, features, real_features, 40)
    assert info["code_acc"] == 1.0 and info["code_map"] == {k: int(p) for k, p in enumerate(permutation)}
    assert info["fid"] >= 0 and sum(info["label_histogram"]) == 40
    # As ACGAN, the requested class must be the label itself: the permutation makes it wrong.
    acgan = classifier_figures(generator, ModelCard("acgan", 28, 1, [noise_spec(4), InputSpec("code", "onehot", 4)]),
                               classifier, features, real_features, 40)
    assert acgan["class_acc"] == 0.0 and "code_acc" not in acgan


def test_curves_and_grids_read_the_run_folder(tmp_path):
    (tmp_path / "metrics.csv").write_text("step,d_loss,g_loss,d_acc_real,d_acc_fake\n"
                                          + "".join(f"{s},{1 / s},{s},1,0.5\n" for s in range(1, 11)))
    cols = read_metrics(tmp_path)
    assert list(cols["d_acc"]) == [0.75] * 10
    assert final_values(cols) == {"g_loss": 10.0, "d_loss": 0.1, "d_acc": 0.75}
    images = np.arange(64)[:, None, None, None].repeat(6, 1).repeat(6, 2).repeat(3, 3).astype(np.uint8)
    cropped = crop_grid(grid(images, 8, 8), 6, 5)
    assert cropped.shape == (5 * 8 + 2, 5 * 8 + 2, 3)
    assert cropped[2 + 8 * 4 + 1, 2 + 8 * 4 + 1, 0] == 4 * 8 + 4  # row 4, column 4 of the 8x8 grid


@pytest.fixture
def tiny_faces(luigi_config, tmp_path):
    keras.utils.set_random_seed(0)
    net = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(8, 3, strides=2, activation="relu"),
                            keras.layers.GlobalAveragePooling2D()])
    net.save(tmp_path / "features.keras")
    luigi_config("Sample", "n", 16)
    luigi_config("DetectAlignFaces", "size", 32)  # the smallest face RGB size the variants support
    for key, value in (("base_width", 8), ("precision", "float32"), ("z_dim", 8)):
        luigi_config("TrainGAN", key, value)
    return tmp_path / "features.keras"


@pytest.mark.slow
def test_compare_gans_on_faces_end_to_end(tiny_faces):
    import tasks

    task = tasks.CompareGANs(dataset="sample", steps=2, batch_size=4, intervals=2, n=8, face_n=4,
                             variants=["wgan"], feature_network=str(tiny_faces))
    result = luigi.build([task], local_scheduler=True, detailed_summary=True, workers=1)
    assert result.status == LuigiStatusCode.SUCCESS, result.summary_text
    folder = Path(task.output()["json"].path).parent
    report = json.loads((folder / "report.json").read_text())
    assert [(r["variant"], r["discriminator"]) for r in report["runs"]] == [("wgan", "cnn"),
                                                                            ("wgan", "capsnet")]
    for row in report["runs"]:
        assert row["steps"] == 2 and row["fid"] >= 0 and 0 <= row["face_detect_rate"] <= 1
        assert {"g_loss", "d_loss", "d_acc", "seconds_per_step"} <= set(row)
    assert report["grid_steps"] == [1, 2]
    markdown = (folder / "report.md").read_text()
    for name in ("wgan_curves.png", "wgan_curves_zoom.png", "wgan_samples.png"):
        assert f"]({name})" in markdown and Image.open(folder / name).format == "PNG"
    # The runs are ordinary TrainGAN runs: asking for one finds it done.
    run = tasks.TrainGAN(dataset="sample", variant="wgan", discriminator="capsnet", steps=2, batch_size=4)
    assert run.complete()


@pytest.mark.slow
def test_compare_gans_on_mnist_uses_the_trained_classifier(luigi_config, tmp_path):
    """Labeled records: TrainClassifier runs first, its features score every run, ACGAN
    gets a class accuracy and InfoGAN a code accuracy; ExportSamples shows their codes."""
    from labeled_data import use_mnist, write_mnist

    import tasks

    use_mnist(luigi_config, write_mnist(tmp_path / "mnist", n_train=40, n_test=20))
    for key, value in (("base_width", 8), ("precision", "float32"), ("z_dim", 8)):
        luigi_config("TrainGAN", key, value)
    luigi_config("TrainClassifier", "steps", 5)
    task = tasks.CompareGANs(dataset="mnist", steps=2, batch_size=4, intervals=1, n=20, data_fraction=0.5,
                             variants=["acgan", "infogan"], discriminators=["cnn"])
    result = luigi.build([task], local_scheduler=True, detailed_summary=True)
    assert result.status == LuigiStatusCode.SUCCESS, result.summary_text
    report = json.loads(Path(task.output()["json"].path).read_text())
    assert 0 <= report["classifier"]["test_accuracy"] <= 1 and report["classifier"]["test_n"] == 20
    acgan, infogan = report["runs"]
    assert 0 <= acgan["class_acc"] <= 1 and "code_acc" not in acgan
    assert 0 <= infogan["code_acc"] <= 1 and len(infogan["code_map"]) == 10
    assert "classifier" in report["notes"][0]
    header = Path(task.output()["md"].path).read_text().split("\n| ---")[0]
    assert "| class acc | code acc |" in header and "face rate" not in header
    assert "0.5 of the training images" in header  # every run read the first 20 of the 40 digits
    assert all(json.loads((Path(r["run"]) / "model_card.json").read_text())["training"]["data_fraction"] == 0.5
               for r in report["runs"])
    export = tasks.ExportSamples(model=infogan["run"])
    assert luigi.build([export], local_scheduler=True)
    assert (Path(export.output().path) / "cont_c1_sweep.png").exists()


def test_compare_and_classifier_settings_are_checked_when_built(luigi_config):
    """One line naming the parameter, before anything trains."""
    import tasks
    from tasks.errors import ConfigError

    for params, where in [({"variants": ["wgan", "bigan"]}, "variants"), ({"variants": []}, "variants"),
                          ({"discriminators": ["resnet"]}, "discriminators"), ({"steps": 0}, "steps"),
                          ({"steps": 2, "intervals": 3}, "intervals"), ({"n": 0}, "n"),
                          ({"data_fraction": 0.0}, "data_fraction")]:
        with pytest.raises(ConfigError, match=rf"^\[CompareGANs\] {where} = .*--CompareGANs-{where.replace('_', '-')}"):
            tasks.CompareGANs(**params)
    with pytest.raises(ConfigError, match=r"^\[CompareGANs\] acgan_attributes = .*'Beard'"):
        tasks.CompareGANs(dataset="sample", acgan_attributes=["Beard"])
    with pytest.raises(ConfigError, match=r"^\[TrainClassifier\] dataset = 'sample': needs labeled records"):
        tasks.TrainClassifier(dataset="sample")
    with pytest.raises(ConfigError, match=r"^\[TrainClassifier\] lr = 0"):
        tasks.TrainClassifier(lr=0)
