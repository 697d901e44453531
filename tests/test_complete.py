"""Face completion and projection (model/apps/complete.py, model/apps/project.py, model/apps/inversion.py) and the
CompleteFaces task: masks, weights, blending, the search, the paste-back, bad inputs, a folder."""
from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

import luigi  # noqa: E402

from model.apps.complete import (  # noqa: E402
    QualityLimits,
    align_photo,
    blend,
    build_masks,
    check_mask,
    complete_faces,
    context_weights,
    main,
    make_mask,
    paste_back,
    read_mask_file,
)
from model.apps.inversion import alignment_settings, load_networks  # noqa: E402
from model.apps.project import project_faces  # noqa: E402
from model.card import InputSpec, ModelCard, noise_spec  # noqa: E402
from model.config import TrainConfig  # noqa: E402
from model.nets.dcgan import build_discriminator, build_generator  # noqa: E402
from model.train.loop import train  # noqa: E402
from model.train.sampling import generate  # noqa: E402
from pipeline.align.aligner import FaceAligner, template_points  # noqa: E402
from pipeline.imaging import decode_rgb  # noqa: E402
from pipeline.sources.sample_photos import portrait  # noqa: E402

FAST = dict(steps=10, restarts=2, candidates=4)


@pytest.fixture(scope="module")
def astronaut():
    return np.asarray(portrait("astronaut"))


@pytest.fixture(scope="module")
def run32(tmp_path_factory):
    """A tiny DCGAN run (32x32, base width 8) trained two steps through the real loop: card,
    exported generator and checkpoint (for the discriminator)."""
    run = tmp_path_factory.mktemp("run") / "dcgan-tiny"
    config = TrainConfig(base_width=8, batch_size=4, steps=2, checkpoint_every=1, log_every=1, seed=3,
                         precision="float32", resolution=32, z_dim=16)
    images = np.random.default_rng(1).uniform(-1, 1, (16, 32, 32, 3)).astype("float32")
    train(config, tf.data.Dataset.from_tensor_slices(images).repeat().batch(4), run)
    return run


def lively_generator(z_dim=16, resolution=32, extra_inputs=None):
    """An untrained tiny DCGAN generator whose batch-norm statistics are calibrated and whose
    output layer is scaled up, so that its images span the grey levels and depend on z (a
    freshly initialised one varies by about one grey level)."""
    keras.utils.set_random_seed(0)
    G = build_generator(resolution, 3, z_dim, 8, 4, fast=False, extra_inputs=extra_inputs)
    rng = np.random.default_rng(0)
    batch = {"z": rng.uniform(-1, 1, (64, z_dim)).astype("float32")}
    for name, size in (extra_inputs or {}).items():
        batch[name] = np.eye(size, dtype="float32")[rng.integers(0, size, 64)]
    for _ in range(40):  # moving statistics of batch norm -> the batch's
        G(batch["z"] if not extra_inputs else batch, training=True)
    layer = G.get_layer("to_image")
    layer.kernel.assign(layer.kernel * 40.0)
    return G


def _card(z_dim=16, resolution=32, extra=()):
    return ModelCard(variant="dcgan", resolution=resolution, channels=3, inputs=[noise_spec(z_dim), *extra])


# -- masks and weights ------------------------------------------------------------------------------

def test_context_weights_match_a_hand_computation():
    mask = np.zeros((8, 8), bool)
    mask[0, 0] = True          # a missing corner pixel
    mask[4:6, 4:6] = True      # a 2x2 hole
    w = context_weights(mask, window=3)
    assert w[0, 0] == 0 and w[4, 4] == 0                     # missing pixels weigh 0
    assert w[0, 1] == pytest.approx(1 / 6)                   # border: 6 window pixels in the image, 1 missing
    assert w[1, 1] == pytest.approx(1 / 9)
    assert w[3, 3] == pytest.approx(1 / 9)                   # touches the hole's corner
    assert w[3, 4] == pytest.approx(2 / 9) and w[4, 3] == pytest.approx(2 / 9)
    assert w[4, 6] == pytest.approx(2 / 9) and w[6, 6] == pytest.approx(1 / 9)
    assert w[2, 2] == 0 and w[7, 0] == 0                     # no missing neighbour
    # Yeh et al.'s window 7 on the center mask of a 64 px face: beside an edge of the hole,
    # 3 of the 7 columns (21 of 49 pixels) are missing; 4 px away nothing is.
    center = make_mask("center", 64)
    w7 = context_weights(center)
    assert w7[32, 15] == pytest.approx(21 / 49) and w7[32, 12] == pytest.approx(0)
    assert w7[32, 13] == pytest.approx(7 / 49) and w7[center].max() == 0
    assert np.allclose(context_weights(np.stack([center, mask.repeat(8, 0).repeat(8, 1)]))[0], w7)


def test_masks_cover_what_they_say():
    S = 64
    center = make_mask("center", S)
    assert center.mean() == 0.25 and center[S // 2, S // 2] and not center[0, 0]
    assert (make_mask("left", S) ^ make_mask("right", S)).all() and make_mask("left", S)[:, 0].all()
    points = template_points(S)
    for kind, idx in (("eyes", range(36, 48)), ("mouth", range(48, 68))):
        m = make_mask(kind, S)
        xy = np.round(points[list(idx)]).astype(int)
        assert m[xy[:, 1], xy[:, 0]].all(), kind          # every landmark of the feature is hidden
        assert 0.05 < m.mean() < 0.25, kind
    assert not (make_mask("eyes", S) & make_mask("mouth", S)).any()
    rnd = build_masks("random-pixels", 2, S, seed=1)
    assert 0.75 < rnd.mean() < 0.85 and not (rnd[0] == rnd[1]).all()
    grid = make_mask("grid", S)
    assert (~grid).sum() == (S // 4) ** 2 and not grid[0, 0] and not grid[4, 8]
    with pytest.raises(ValueError, match="mask must be one of center, left"):
        make_mask("nose", S)


def test_bad_masks_give_one_clear_error_each(tmp_path):
    with pytest.raises(ValueError, match="nothing is missing"):
        check_mask(np.zeros((32, 32), bool), 32)
    with pytest.raises(ValueError, match="every pixel is missing: nothing is known"):
        check_mask(np.ones((32, 32), bool), 32)
    with pytest.raises(ValueError, match=r"must be 32x32 .* got shape \(64, 64\)"):
        check_mask(make_mask("center", 64), 32)
    good = tmp_path / "mask.png"
    cv2.imwrite(str(good), make_mask("center", 32).astype(np.uint8) * 255)
    assert (read_mask_file(good, 32) == make_mask("center", 32)).all()
    with pytest.raises(ValueError, match=r"mask file .*mask.png: must be 64x64"):
        read_mask_file(good, 64)
    empty = tmp_path / "empty.png"
    cv2.imwrite(str(empty), np.zeros((32, 32), np.uint8))
    with pytest.raises(ValueError, match="empty.png: nothing is missing"):
        read_mask_file(empty, 32)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not a png at all")
    with pytest.raises(ValueError, match="junk.png: not a readable image"):
        read_mask_file(junk, 32)
    with pytest.raises(ValueError, match="missing.png: cannot read it"):
        read_mask_file(tmp_path / "missing.png", 32)


# -- blending and pasting back ------------------------------------------------------------------

@pytest.mark.parametrize("method", ["paste", "poisson"])
def test_blend_keeps_known_pixels_and_never_reads_the_hole(method):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    completed = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    masks = np.stack([make_mask("center", 32), make_mask("left", 32), make_mask("random-pixels", 32)])
    out = blend(images, completed, masks, method)
    assert (out[~masks] == images[~masks]).all()           # known pixels untouched
    other = images.copy()
    other[masks] = 255 - other[masks]                       # different pixels under the hole only
    assert (blend(other, completed, masks, method) == out).all()
    if method == "paste":
        assert (out[masks] == completed[masks]).all()
    else:  # Poisson: the hole follows the completion's gradients, shifted to meet its border
        assert not (out[masks] == completed[masks]).all()


def test_poisson_blend_solves_the_hole_from_its_border_and_the_completions_gradients():
    """On a ramp (a harmonic image): a completion with the right gradients but 50 grey levels
    off comes back exactly; a flat completion gives the smoothest fill from the border, the
    ramp itself inside, constant along the image's edge where the hole meets it."""
    ramp = np.linspace(0, 200, 32)[None, :, None] * np.ones((32, 1, 3))
    image = np.rint(ramp).astype(np.uint8)
    shifted = np.rint(ramp + 50).astype(np.uint8)
    for kind in ("center", "left", "eyes", "random-pixels"):
        hole = make_mask(kind, 32)
        assert (blend(image, shifted, hole, "poisson") == image).all(), kind
    flat = np.full_like(image, 128)
    inner = blend(image, flat, make_mask("center", 32), "poisson").astype(int)
    assert np.abs(inner - image.astype(int)).max() <= 1
    left = blend(image, flat, make_mask("left", 32), "poisson").astype(int)
    hole = make_mask("left", 32)
    edge = image[0, hole.sum(1).max(), 0]  # the first known column: the hole's border
    assert np.abs(left[hole] - int(edge)).max() <= 1  # no flux through the image edge: constant
    with pytest.raises(ValueError, match="mask hides the whole image"):
        blend(image, flat, np.ones((32, 32), bool), "poisson")


def test_paste_back_puts_the_face_where_it_came_from():
    rng = np.random.default_rng(0)
    photo = cv2.GaussianBlur(rng.integers(0, 256, (180, 240, 3), dtype=np.uint8), (0, 0), 3)
    # a synthetic source->aligned transform: rotate 20 degrees, scale 0.4, shift
    angle, scale = np.deg2rad(20), 0.4
    matrix = np.array([[scale * np.cos(angle), -scale * np.sin(angle), -20.0],
                       [scale * np.sin(angle), scale * np.cos(angle), -30.0]])
    aligned = cv2.warpAffine(photo, matrix, (64, 64), flags=cv2.INTER_LINEAR)
    hole = make_mask("center", 64)
    filled = blend(aligned, np.full_like(aligned, (255, 0, 0)), hole, "paste")
    out = paste_back(photo, filled, hole, matrix, "paste")
    changed = (out != photo).any(-1)
    ys, xs = np.nonzero(changed)
    mapped = np.stack([xs, ys], 1) @ matrix[:, :2].T + matrix[:, 2]   # each changed pixel, in the aligned face
    assert ((mapped >= 16 - 1) & (mapped <= 48)).all()                # ... lies in the hole (32 px square at 16)
    # the whole hole came back: its inverse image is a 80x80 rotated square of the photo
    assert changed.sum() == pytest.approx((32 / scale) ** 2, rel=0.05)
    centre = np.linalg.solve(matrix[:, :2], np.array([31.5, 31.5]) - matrix[:, 2])
    assert np.allclose([xs.mean(), ys.mean()], centre, atol=1.0)
    assert (out[changed] == (255, 0, 0)).all(-1).mean() > 0.9         # red inside; bilinear edge pixels
    poisson = paste_back(photo, filled, hole, matrix, "poisson")
    assert ((poisson != photo).any(-1) <= changed).all()              # Poisson changes no pixel outside


# -- the search ---------------------------------------------------------------------------------

def test_projection_of_a_generator_sample_recovers_its_image():
    G = lively_generator()
    card = _card()
    rng = np.random.default_rng(5)
    z = rng.uniform(-1, 1, (3, 16)).astype("float32")
    target = generate(G, z)
    random = generate(G, rng.uniform(-1, 1, (3, 16)).astype("float32"))
    result = project_faces(G, card, target, steps=100, restarts=2, candidates=8, seed=0)
    assert set(result) >= {"inputs", "images", "psnr", "ssim", "loss"}
    assert result["inputs"]["z"].shape == (3, 16) and result["inputs"]["z"].dtype == np.float32
    assert result["images"].shape == (3, 32, 32, 3) and result["images"].dtype == np.uint8
    error = np.abs(result["images"].astype(float) - target).mean()
    assert error < 0.05 * np.abs(random.astype(float) - target).mean()
    assert (result["psnr"] > 40).all() and (result["ssim"] > 0.99).all()
    assert (np.abs(result["inputs"]["z"]) <= 1).all()                   # kept inside the uniform prior
    assert result["loss"].shape == (100, 3) and (result["loss"][-1] < result["loss"][0]).all()


def test_completion_fits_known_pixels_and_ignores_the_hole(run32):
    card, G, D, note = load_networks(run32, "float32")
    assert D is not None and note == ""
    G = lively_generator()  # the run's two-step generator barely varies; its D is real
    rng = np.random.default_rng(1)
    faces = generate(G, rng.uniform(-1, 1, (2, 16)).astype("float32"))
    masks = np.stack([make_mask("center", 32), make_mask("eyes", 32)])
    result = complete_faces(G, D, card, faces, masks, steps=40, restarts=2, candidates=8, blend_method="paste")
    assert result["completed"].shape == result["blended"].shape == (2, 32, 32, 3)
    assert (result["blended"][~masks] == faces[~masks]).all()          # known pixels untouched
    assert result["loss"].shape == (40, 2) and np.isfinite(result["loss"]).all()
    assert result["loss_restarts"].shape == (40, 2, 2)
    assert (result["total"] <= result["loss"][0] + 1e-3).all()          # the best point seen is kept
    assert (result["contextual"] < result["start_contextual"]).all()
    assert np.isfinite(result["d_score"]).all() and ((result["d_score"] > 0) & (result["d_score"] < 1)).all()
    # what is under the hole never matters: the same result with other pixels there
    other = faces.copy()
    other[masks] = 0
    again = complete_faces(G, D, card, other, masks, steps=40, restarts=2, candidates=8, blend_method="paste")
    assert (again["completed"] == result["completed"]).all() and (again["blended"] == result["blended"]).all()
    # keep="mean": the mean of every restart's G(z), from the same search
    assert result["restart_completed"].shape == (2, 2, 32, 32, 3)
    assert (generate(G, result["inputs"]) == result["completed"]).all()  # the kept restart's own G(z)
    assert (result["restart_completed"][np.arange(2), result["restart"]] == result["completed"]).all()
    mean = complete_faces(G, D, card, faces, masks, steps=40, restarts=2, candidates=8, blend_method="paste",
                          keep="mean")
    expected = np.rint(mean["restart_completed"].astype(np.float32).mean(1)).astype(np.uint8)
    assert (mean["completed"] == expected).all() and (mean["blended"][~masks] == faces[~masks]).all()
    with pytest.raises(ValueError, match=r"keep must be one of \('best', 'mean'\), got 'median'"):
        complete_faces(G, D, card, faces, masks, keep="median", **FAST)


def test_a_poor_fit_is_flagged(run32):
    card, G, D, _ = load_networks(run32, "float32")
    image = np.zeros((1, 32, 32, 3), np.uint8)
    image[..., 0] = 255  # a red square: nothing this generator makes
    result = complete_faces(G, D, card, image, make_mask("center", 32), **FAST)
    assert not result["ok"][0] and "poor fit" in result["flags"][0][0]
    assert result["context_error"][0] > QualityLimits().max_context_error
    # unrealistic: below the chosen quantile of D's scores for the generator's random draws
    faces = generate(G, np.random.default_rng(0).uniform(-1, 1, (4, 16)).astype("float32"))
    strict = complete_faces(G, D, card, faces, make_mask("center", 32), limits=QualityLimits(1e9, 0.5), **FAST)
    assert strict["d_floor"] == pytest.approx(np.median(strict["sample_d_scores"]))
    for d, flags in zip(strict["d_score"], strict["flags"]):
        assert any(f.startswith("unrealistic") for f in flags) == (d < strict["d_floor"])
    assert complete_faces(G, None, card, faces, make_mask("center", 32), **FAST)["d_floor"] is None


def test_luigi_cfg_holds_the_search_defaults():
    import configparser
    from pathlib import Path

    from model.apps.inversion import FitSettings
    cfg = configparser.ConfigParser()
    cfg.read(Path(__file__).parent.parent / "luigi.cfg")
    d = FitSettings()
    for key in ("steps", "restarts", "candidates", "lr", "lam"):
        assert float(cfg["CompleteFaces"][key]) == getattr(d, key), key


def test_every_kind_of_generator_input_is_handled():
    """A class input is searched over (each candidate a class), z optimised; a fixed input is kept."""
    label = InputSpec("label", "onehot", 3, labels=("a", "b", "c"))
    code = InputSpec("code", "continuous", 2, range=(-1.0, 1.0))
    G = lively_generator(extra_inputs={"label": 3, "code": 2})
    D = build_discriminator(32, 3, 8, 4, fast=False)
    card = _card(extra=(label, code))
    faces = generate(G, {"z": np.zeros((2, 16), "float32"), "label": np.eye(3, dtype="float32")[[1, 2]],
                         "code": np.full((2, 2), 0.5, "float32")})
    result = complete_faces(G, D, card, faces, make_mask("center", 32), **FAST)
    onehot = result["inputs"]["label"]
    assert onehot.shape == (2, 3) and (onehot.sum(1) == 1).all() and set(np.unique(onehot)) <= {0.0, 1.0}
    assert (np.abs(result["inputs"]["code"]) <= 1).all()
    fixed = complete_faces(G, D, card, faces, make_mask("center", 32), fixed={"label": [0, 0, 1]}, **FAST)
    assert (fixed["inputs"]["label"] == [0, 0, 1]).all()
    with pytest.raises(KeyError, match="no input 'colour'"):
        complete_faces(G, D, card, faces, make_mask("center", 32), fixed={"colour": [1]}, **FAST)


def test_wrong_sizes_give_one_clear_error(run32):
    card, G, D, _ = load_networks(run32, "float32")
    faces = np.zeros((2, 32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match=r"images must be \(n, 32, 32, 3\) uint8 aligned .* got \(2, 64, 64, 3\)"):
        complete_faces(G, D, card, np.zeros((2, 64, 64, 3), np.uint8), make_mask("center", 64), **FAST)
    with pytest.raises(ValueError, match=r"masks must be \(2, 32, 32\) bool"):
        complete_faces(G, D, card, faces, np.stack([make_mask("center", 32)] * 3), **FAST)
    with pytest.raises(ValueError, match="mask 1: nothing is missing"):
        complete_faces(G, D, card, faces, np.stack([make_mask("center", 32), np.zeros((32, 32), bool)]), **FAST)
    with pytest.raises(ValueError, match="restarts must be >= 1"):
        complete_faces(G, D, card, faces, make_mask("center", 32), steps=5, restarts=0)


def test_bfloat16_networks_restore_from_the_checkpoint(run32):
    card, G32, D32, _ = load_networks(run32, "float32")
    _, G16, D16, _ = load_networks(run32, "mixed_bfloat16")
    z = np.random.default_rng(0).uniform(-1, 1, (4, 16)).astype("float32")
    a, b = G32(z, training=False).numpy(), G16(z, training=False).numpy()
    assert np.abs(a - b).max() < 0.05 and G16.compute_dtype == "bfloat16"
    assert np.abs(D32(a).numpy() - D16(a).numpy()).max() < 0.05


def test_the_studio_completes_with_the_runs_discriminator(run32):
    """A served run with a checkpoint gives completion its discriminator (the perceptual
    loss), the same network load_networks restores."""
    from studio.models import LoadedModel

    model = LoadedModel.load("tiny", run32)
    try:
        _, _, D, _ = load_networks(run32, "float32")
        x = np.random.default_rng(2).uniform(-1, 1, (2, 32, 32, 3)).astype("float32")
        assert model.discriminator() is model.discriminator()  # loaded once
        np.testing.assert_allclose(model.discriminator()(x).numpy(), D(x).numpy(), atol=1e-6)
    finally:
        model.close()


def test_alignment_settings_come_from_the_records_lineage(tmp_path):
    records = tmp_path / "v-1"
    records.mkdir()
    lineage = {"task": "BuildTFRecords", "params": {}, "requires": [
        {"task": "DetectAlignFaces", "params": {"size": "64", "mode": "similarity", "margin": "0.1",
                                                "landmarks": "outerEyesAndNose", "detector": "hog"}, "requires": []}]}
    (records / "manifest.json").write_text(json.dumps({"lineage": lineage}))
    card = ModelCard(variant="dcgan", resolution=64, channels=3, inputs=[noise_spec()],
                     dataset={"records": str(records)})
    assert alignment_settings(card) == {"size": 64, "mode": "similarity", "margin": 0.1,
                                        "landmarks": "outerEyesAndNose"}
    assert alignment_settings(_card()) == {"size": 32}
    # a relative records path (as training writes it) is found from the run's project folder
    project = tmp_path / "project"
    (project / "processed" / "records").mkdir(parents=True)
    records.rename(project / "processed" / "records" / "v-1")
    card.dataset["records"] = "processed/records/v-1"
    run = project / "processed" / "models" / "celeba" / "dcgan-x"
    assert alignment_settings(card, run)["mode"] == "similarity"
    assert "mode" not in alignment_settings(card)  # not found from the working directory


# -- photos: the aligner, the CLI and the task ----------------------------------------------------

def test_photo_without_a_face_or_unreadable_gives_a_reason(tmp_path):
    aligner = FaceAligner(size=32)
    flat = tmp_path / "wall.png"
    cv2.imwrite(str(flat), np.full((120, 160, 3), 90, np.uint8))
    assert align_photo(flat, aligner)["reason"] == "no_face"
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"\xff\xd8 not really a jpeg")
    assert align_photo(junk, aligner)["reason"] in ("undecodable", "truncated")
    assert align_photo(tmp_path / "gone.jpg", aligner)["reason"] == "unreadable"


def test_cli_completes_a_photo_and_names_bad_input(run32, astronaut, tmp_path, capsys):
    photo = tmp_path / "astronaut.png"
    cv2.imwrite(str(photo), cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR))
    out = tmp_path / "result.png"
    code = main([str(photo), "--mask", "center", "--out", str(out), "--model", str(run32), "--steps", "5",
                 "--restarts", "2", "--candidates", "2", "--precision", "float32", "--report",
                 str(tmp_path / "report.png")])
    assert code == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["out"] == str(out) and summary["known_error"] >= 0
    result = cv2.cvtColor(cv2.imread(str(out)), cv2.COLOR_BGR2RGB)
    assert result.shape == astronaut.shape
    changed = (result != astronaut).any(-1)
    assert 0 < changed.mean() < 0.2                                     # only the hole, within the face
    assert (tmp_path / "report.png").exists()
    # projection of the same photo, and completion of an already aligned face
    from model.apps.project import main as project_main
    fast = ["--model", str(run32), "--steps", "5", "--restarts", "2", "--candidates", "2", "--precision", "float32"]
    assert project_main([str(photo), "--out", str(tmp_path / "projected.png"), *fast]) == 0
    projected = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert len(projected["inputs"]["z"]) == 16 and projected["psnr"] > 0 and 0 < projected["ssim"] <= 1
    assert cv2.imread(str(tmp_path / "projected.png")).shape == (32, 32, 3)
    face = tmp_path / "face.png"
    cv2.imwrite(str(face), cv2.imread(str(tmp_path / "projected.png")))
    assert main([str(face), "--aligned", "--mask", "eyes", "--out", str(tmp_path / "face_done.png"), *fast]) == 0
    capsys.readouterr()
    assert project_main([str(photo), "--aligned", *fast]) == 2                 # a whole photo is no aligned face
    assert re.fullmatch(r"error: aligned face .*astronaut.png must be \(n, 32, 32, 3\) .* got \(1, 512, 512, 3\) "
                        r"uint8\n", capsys.readouterr().err)
    wall = tmp_path / "wall.png"
    cv2.imwrite(str(wall), np.full((120, 160, 3), 90, np.uint8))
    for argv, message in (([str(wall)], "wall.png: no_face"),
                          ([str(photo), "--mask-file", str(wall)], "mask file .*wall.png: must be 32x32"),
                          ([str(tmp_path / "nope.jpg")], "nope.jpg: unreadable")):
        assert main([*argv, "--model", str(run32), "--precision", "float32", "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and re.search(message, err), err


def test_complete_faces_task_completes_a_folder_and_lists_bad_photos(run32, astronaut, tmp_path, luigi_config):
    from tasks import CompleteFaces

    photos = tmp_path / "photos"
    photos.mkdir()
    cv2.imwrite(str(photos / "astronaut.jpg"), cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(photos / "wall.png"), np.full((120, 160, 3), 90, np.uint8))
    (photos / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    params = dict(input_dir=str(photos), mask="mouth", model=str(run32), steps=5, restarts=2, candidates=2,
                  precision="float32")
    assert luigi.build([CompleteFaces(**params)], local_scheduler=True)
    root = Path(CompleteFaces(**params).output()["json"].path).parent
    assert root.parent == tmp_path / "processed" / "completions" / "sample"
    index = json.loads((root / "index.json").read_text())
    assert index["counts"] == {"inputs": 3, "completed": 1, "rejected": 2, "flagged": index["counts"]["flagged"]}
    assert {r["photo"]: r["reason"] for r in index["rejected"]} == {"wall.png": "no_face",
                                                                    "broken.jpg": index["rejected"][0]["reason"]}
    assert index["rejected"][0]["reason"] in ("undecodable", "truncated")
    done = index["photos"][0]
    assert done["photo"] == "astronaut.jpg"
    assert set(done["files"]) == {"completed", "aligned", "photo", "report", "loss"}
    for name in done["files"].values():
        assert (root / name).exists(), name
    pasted = decode_rgb((root / done["files"]["photo"]).read_bytes())
    original = decode_rgb((photos / "astronaut.jpg").read_bytes())
    assert 0 < (pasted != original).any(-1).mean() < 0.05                # the mouth region only
    assert len(json.loads((root / done["files"]["loss"]).read_text())["loss"]) == 5
    md = (root / "index.md").read_text()
    assert "wall.png | no_face" in md and "![report](astronaut.jpg/report.png)" in md
    assert CompleteFaces(**params).complete()
    cv2.imwrite(str(photos / "second.png"), np.full((50, 50, 3), 10, np.uint8))  # new photo: stale
    assert not CompleteFaces(**params).complete()
