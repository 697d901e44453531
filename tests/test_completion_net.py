"""The trained completion network (model/apps/masks.py, model/variants/completion.py,
model/apps/completion_net.py): training holes, blending, one training step, resume, choosing
between the network and the search, bad masks. Tiny networks on 16x16 faces: fast."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import studio_runs

tf = pytest.importorskip("tensorflow")

from model.apps.complete import make_mask  # noqa: E402
from model.apps.completion_net import (  # noqa: E402
    choose_method,
    complete_with_net,
    find_completion_run,
    with_masks,
)
from model.apps.masks import TRAINING_KINDS, free_form_mask, training_mask, training_masks  # noqa: E402
from model.card import ModelCard, noise_spec  # noqa: E402
from model.config import CompletionConfig  # noqa: E402
from model.nets.completion import build_completion_network  # noqa: E402
from model.train.loop import GANTrainer, train  # noqa: E402
from model.variants.completion import CARD_FILE, NETWORK_FILE, CompletionModel  # noqa: E402

S = 16
TINY = dict(batch_size=4, width=4, d_width=4, resolution=S, precision="float32", log_every=1,
            checkpoint_every=2, sample_every=0, seed=5)


def faces(n: int, seed: int = 0) -> np.ndarray:
    """Smooth random ``(n, S, S, 3) uint8`` images."""
    rng = np.random.default_rng(seed)
    small = rng.uniform(0, 255, (n, 4, 4, 3)).astype(np.float32)
    return np.clip(tf.image.resize(small, (S, S)).numpy(), 0, 255).astype(np.uint8)


def model_for(config: CompletionConfig) -> CompletionModel:
    grid = faces(32, 9)
    masks = np.stack([make_mask("center", S)] * 32)
    return CompletionModel(config, grid, masks)


def dataset(config: CompletionConfig):
    images = faces(12, 1).astype(np.float32) / 127.5 - 1.0
    batches = tf.data.Dataset.from_tensor_slices(images).repeat().batch(config.batch_size, drop_remainder=True)
    return with_masks(batches, config)


# -- masks ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [16, 64])
def test_masks_of_every_kind_stay_inside_the_image_and_are_never_empty(size):
    rng = np.random.default_rng(0)
    for kind in TRAINING_KINDS:
        for _ in range(40):
            m = training_mask(kind, size, rng)
            assert m.shape == (size, size) and m.dtype == bool
            assert m.any() and not m.all(), kind
    for seed in range(100):
        m = free_form_mask(size, np.random.default_rng(seed))
        assert m.shape == (size, size) and m.any() and m.mean() <= 0.6
    batch = training_masks(3, 7, 16, size)
    assert batch.shape == (16, size, size) and batch.any((1, 2)).all() and not batch.all((1, 2)).any()
    assert (training_masks(3, 7, 16, size) == batch).all()  # (seed, batch index) alone decide
    assert not (training_masks(3, 8, 16, size) == batch).all()
    assert make_mask("free-form", size, seed=1).any()


# -- running the network ------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["paste", "poisson"])
def test_known_pixels_are_unchanged_after_blending(method):
    net = build_completion_network(S, 3, 4)
    images = faces(3)
    masks = np.stack([make_mask("center", S), make_mask("free-form", S, seed=2), make_mask("left", S)])
    hidden = images.copy()
    hidden[masks] = 0  # what is under the hole must not matter
    a = complete_with_net(net, images, masks, blend_method=method)
    b = complete_with_net(net, hidden, masks, blend_method=method)
    assert a["method"] == "net"
    assert (a["blended"][~masks] == images[~masks]).all()
    assert (a["blended"] == b["blended"]).all()


def test_bad_masks_give_one_clear_error():
    net = build_completion_network(S, 3, 4)
    images = faces(2)
    with pytest.raises(ValueError, match="every pixel is missing"):
        complete_with_net(net, images, np.ones((S, S), bool))
    with pytest.raises(ValueError, match=f"must be {S}x{S}"):
        complete_with_net(net, images, np.zeros((S + 1, S + 1), bool))
    with pytest.raises(ValueError, match="one per image"):
        complete_with_net(net, images, np.ones((3, S, S), bool))
    with pytest.raises(ValueError, match="nothing is missing"):
        complete_with_net(net, images, np.zeros((S, S), bool))


# -- training ---------------------------------------------------------------------------------------

def test_one_training_step_changes_every_variable():
    local = True  # the network, the global and the local discriminator
    config = CompletionConfig(**TINY, local=local)
    trainer = GANTrainer(config, model=model_for(config))
    nets = [trainer.model.generator, *trainer.model.discriminators()]
    before = [v.numpy().copy() for net in nets for v in net.trainable_variables]
    out = trainer.train_step(next(iter(dataset(config))))
    after = [v.numpy() for net in nets for v in net.trainable_variables]
    names = [v.path for net in nets for v in net.trainable_variables]
    assert len(nets) == (3 if local else 2)
    unchanged = [n for n, x, y in zip(names, before, after) if np.array_equal(x, y)]
    assert unchanged == []
    assert set(out) == set(CompletionModel.scalars)


def test_resume_equals_an_uninterrupted_run(tmp_path):
    config = CompletionConfig(**{**TINY, "steps": 4})
    whole = train(config, dataset(config), tmp_path / "whole", model=model_for(config))
    half = CompletionConfig(**{**TINY, "steps": 2})
    train(half, dataset(half), tmp_path / "resumed", model=model_for(half))
    (tmp_path / "resumed" / NETWORK_FILE).unlink()
    resumed = train(config, dataset(config), tmp_path / "resumed", model=model_for(config))
    assert resumed["step"] == whole["step"] == 4
    for key in CompletionModel.scalars:
        assert resumed[key] == pytest.approx(whole[key], rel=1e-5, abs=1e-6), key
    import keras
    a = keras.models.load_model(tmp_path / "whole" / NETWORK_FILE).get_weights()
    b = keras.models.load_model(tmp_path / "resumed" / NETWORK_FILE).get_weights()
    assert all(np.allclose(x, y, atol=1e-6) for x, y in zip(a, b))
    card = json.loads((tmp_path / "whole" / CARD_FILE).read_text())
    assert card["files"]["keras"] == NETWORK_FILE and card["steps"] == 4 and card["resolution"] == S
    assert (tmp_path / "whole" / "progress" / "step-0000004.png").exists()
    assert (tmp_path / "whole" / "metrics.csv").read_text().count("\n") == 5


# -- which method ---------------------------------------------------------------------------------------

def completion_run(root, version: str, network: bool = True):
    """A completion run folder under ``root`` for records ``version`` (16x16), with or without its network."""
    return studio_runs.completion_run(root, version, network, size=S)


def test_auto_takes_the_network_of_the_same_records_and_falls_back_to_search_with_a_line(tmp_path, caplog):
    run = tmp_path / "processed" / "models" / "faces" / "dcgan-x"
    run.mkdir(parents=True)
    card = ModelCard(variant="dcgan", resolution=S, channels=3, inputs=[noise_spec(8)],
                     dataset={"name": "faces", "version": "v-1"})
    processed = tmp_path / "processed"
    assert choose_method("auto", card, run)["method"] == "search"  # nothing trained yet
    with pytest.raises(FileNotFoundError, match="no completion network trained on records v-1"):
        choose_method("net", card, run)

    completion_run(processed, "v-2")  # other records: not this run's
    assert find_completion_run(card.dataset, [processed / "completion"]) is None
    assert choose_method("auto", card, run)["method"] == "search"

    broken = completion_run(processed, "v-1", network=False)
    with caplog.at_level(logging.INFO):
        chosen = choose_method("auto", card, run)
    assert chosen["method"] == "search" and chosen["run"] == broken
    assert "has no network" in chosen["note"] and "falling back to search" in chosen["note"]
    assert any("falling back to search" in r.getMessage() for r in caplog.records)
    with pytest.raises(FileNotFoundError, match="has no network"):
        choose_method("net", card, run)

    build_completion_network(S, 3, 4).save(broken / NETWORK_FILE)
    chosen = choose_method("auto", card, run)
    assert chosen["method"] == "net" and chosen["run"] == broken and chosen["network"] is not None
    assert choose_method("search", card, run)["method"] == "search"


def test_the_cli_says_which_method_ran(tmp_path, capsys, monkeypatch):
    from model.apps.complete import main
    from model.card import write_card
    from model.train.sampling import save_png

    run = tmp_path / "processed" / "models" / "faces" / "dcgan-x"
    run.mkdir(parents=True)
    write_card(run, ModelCard(variant="dcgan", resolution=S, channels=3, inputs=[noise_spec(8)],
                              dataset={"name": "faces", "version": "v-1"}))
    completion = completion_run(tmp_path / "processed", "v-1")
    save_png(faces(1)[0], tmp_path / "face.png")
    monkeypatch.chdir(tmp_path)
    assert main([str(tmp_path / "face.png"), "--aligned", "--model", str(run), "--mask", "center",
                 "--out", str(tmp_path / "out.png")]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["method"] == "net" and line["completion"] == str(completion) and line["loss_start"] is None
    assert (tmp_path / "out.png").exists()
    assert main([str(tmp_path / "face.png"), "--aligned", "--model", str(run), "--method", "net",
                 "--completion", str(tmp_path)]) == 2
    assert "is no completion run folder" in capsys.readouterr().err
