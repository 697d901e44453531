"""The learned inverse (model/apps/encoder.py, TrainEncoder): E learns the generator's inputs
from its faces, its outputs stay in the card's ranges, the run folder and card declare it,
and the task re-runs only when a setting changes."""
from __future__ import annotations

import json

import luigi
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from studio_runs import make_run  # noqa: E402

from model.apps.encoder import ENCODER_FILE, ENCODER_INFO, encode, load_encoder, train_encoder  # noqa: E402
from model.card import load_generator, read_card, sample_inputs  # noqa: E402
from model.config import EncoderSettings  # noqa: E402
from model.train.sampling import generate  # noqa: E402

TINY = dict(steps=150, batch_size=16, base_width=8, lr=1e-3)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("runs") / "dcgan-a", seed=2)


def test_training_changes_every_variable_and_learns_the_inputs(run):
    card, generator = load_generator(run)
    import keras

    from model.apps.encoder import build_encoder
    keras.utils.set_random_seed(0)
    untrained = build_encoder(card, 8)
    encoder, losses = train_encoder(generator, card, EncoderSettings(**TINY))
    assert set(losses) == {"latent", "image_fake", "total"} and all(np.isfinite(list(losses.values())))
    before = [v.numpy() for v in untrained.trainable_variables]  # same seed, same start
    after = [v.numpy() for v in encoder.trainable_variables]
    assert [b.shape for b in before] == [a.shape for a in after]
    assert all(not np.array_equal(b, a) for b, a in zip(before, after))  # every variable moved
    held = sample_inputs(card, 128, seed=99)
    guess = encode(encoder, generate(generator, held))
    assert guess["z"].shape == (128, 100) and guess["z"].min() >= -1 and guess["z"].max() <= 1
    prior_mse = np.mean((held["z"] - held["z"].mean(0)) ** 2)
    assert np.mean((guess["z"] - held["z"]) ** 2) < 0.9 * prior_mse  # better than the prior's mean


def test_an_attribute_input_is_encoded_in_its_training_range(tmp_path):
    folder = make_run(tmp_path / "egan", with_c=True, seed=1)
    card, generator = load_generator(folder)
    encoder, _ = train_encoder(generator, card, EncoderSettings(steps=2, batch_size=4, base_width=8))
    out = encode(encoder, generate(generator, sample_inputs(card, 4)))
    assert set(out) == {"z", "c"} and out["c"].shape == (4, 2)
    assert out["c"].min() >= 0 and out["c"].max() <= 1


def test_train_encoder_task_writes_and_declares_the_encoder(run, luigi_config):
    import tasks
    assert load_encoder(run) is None
    task = tasks.TrainEncoder(run_dir=str(run), steps=3, batch_size=4, base_width=8)
    assert luigi.build([task], local_scheduler=True, log_level="WARNING")
    info = json.loads((run / ENCODER_INFO).read_text())
    assert info["settings"]["steps"] == 3 and info["records"] is None  # the card names no records here
    assert read_card(run).files["encoder"] == ENCODER_FILE and (run / ENCODER_FILE).is_file()
    assert load_encoder(run) is not None and task.complete()
    assert not tasks.TrainEncoder(run_dir=str(run), steps=4, batch_size=4, base_width=8).complete()
    written = (run / ENCODER_INFO).read_text()
    (run / ENCODER_INFO).write_text(written[:20])  # cut short (a killed copy): trained again
    assert not task.complete()
    (run / ENCODER_INFO).write_text(written)


def test_bad_settings_are_one_clear_error(run):
    import tasks
    with pytest.raises(tasks.ConfigError, match=r"\[TrainEncoder\] steps = 0: must be >= 1"):
        tasks.TrainEncoder(run_dir=str(run), steps=0)
    with pytest.raises(tasks.ConfigError, match="run_dir"):
        tasks.TrainEncoder(run_dir=str(run / "nowhere"))


def test_a_guess_is_a_starting_point_of_the_search(run):
    """fit_inputs scores ``guess`` beside the random draws: the true inputs of a generated face,
    given as the guess, are where the search starts, and the face comes back exactly."""
    from model.apps.inversion import FitSettings, fit_inputs, to_float
    card, generator = load_generator(run)
    truth = sample_inputs(card, 3, seed=7)
    faces = generate(generator, truth)
    weights = np.ones(faces.shape[:3], np.float32)
    settings = FitSettings(steps=2, restarts=1, candidates=4)
    blind = fit_inputs(generator, card, to_float(faces), weights, settings=settings)
    guided = fit_inputs(generator, card, to_float(faces), weights, settings=settings, guess=truth)
    # what is left of the guess is the faces' rounding to uint8
    assert np.all(guided.start_contextual < 0.2 * blind.start_contextual), (guided.start_contextual,
                                                                                  blind.start_contextual)
    assert np.abs(guided.images - to_float(faces)).mean() < np.abs(blind.images - to_float(faces)).mean()


def test_projection_and_completion_start_from_the_encoder(run):
    from model.apps.complete import complete_faces
    from model.apps.project import REFINE_STEPS, project_faces
    card, generator = load_generator(run)
    encoder, _ = train_encoder(generator, card, EncoderSettings(**TINY))
    faces = generate(generator, sample_inputs(card, 2, seed=11))
    with_e = project_faces(generator, card, faces, steps=REFINE_STEPS, restarts=1, candidates=1, encoder=encoder)
    without = project_faces(generator, card, faces, steps=REFINE_STEPS, restarts=1, candidates=1)
    assert with_e["psnr"].mean() > without["psnr"].mean()  # one candidate: E's guess against one random draw
    # The default step count: a refinement of E's guess with an encoder, the whole search without.
    from model.apps.project import PROJECT_STEPS
    assert project_faces(generator, card, faces[:1], restarts=1, candidates=1, encoder=encoder)["loss"].shape == (
        REFINE_STEPS, 1)
    assert project_faces(generator, card, faces[:1], restarts=1, candidates=1)["loss"].shape == (PROJECT_STEPS, 1)
    mask = np.zeros((64, 64), bool)
    mask[20:44, 20:44] = True
    done = complete_faces(generator, None, card, faces, mask, steps=3, restarts=1, candidates=1, encoder=encoder)
    assert done["blended"].shape == faces.shape
    assert np.array_equal(done["blended"][:, ~mask], faces[:, ~mask])  # known pixels kept
