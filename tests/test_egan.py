"""EGAN: the extractor formulas against hand computations, one training step in each
mode, c entering the generator, the sweep grid, and the card and serving signature
that declare c."""
from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from model.card import load_generator, read_card, sample_inputs  # noqa: E402
from model.config import EGANOptions, TrainConfig  # noqa: E402
from model.train.loop import GANTrainer, train  # noqa: E402
from model.train.sampling import attribute_sweeps, generate  # noqa: E402
from model.train.serving import load_serving  # noqa: E402
from model.variants.extractors import brightness, luma, measure, np_gradient, sharpness  # noqa: E402

SMALL = dict(base_width=8, batch_size=4, steps=2, checkpoint_every=1, log_every=1, seed=3,
             precision="float32", resolution=32, variant="egan", z_dist="uniform01")


def _to_model(uint8):
    return tf.constant(np.asarray(uint8, np.float32) / 127.5 - 1.0)


def test_brightness_is_the_mean_rec709_luma():
    image = np.zeros((1, 2, 2, 3), np.uint8)
    image[0, 0, 0] = (255, 0, 0)        # luma 0.2126
    image[0, 0, 1] = (0, 255, 0)        # 0.7152
    image[0, 1, 0] = (0, 0, 255)        # 0.0722
    image[0, 1, 1] = (255, 255, 255)    # 1
    expected = (0.2126 + 0.7152 + 0.0722 + 1.0) * 255 / (255 * 2 * 2)
    assert float(brightness(_to_model(image))[0]) == pytest.approx(expected, abs=1e-6)
    assert measure("brightness", image)[0] == pytest.approx(expected, abs=1e-6)
    gray = np.full((1, 3, 3, 1), 51, np.uint8)
    assert float(brightness(_to_model(gray))[0]) == pytest.approx(0.2, abs=1e-6)


def test_gradient_matches_numpy_at_the_borders_and_inside():
    f = np.random.default_rng(0).uniform(0, 1, (2, 5, 4)).astype(np.float32)
    for axis in (1, 2):
        np.testing.assert_allclose(np_gradient(tf.constant(f), axis).numpy(), np.gradient(f, axis=axis), atol=1e-6)


def test_sharpness_by_hand():
    # A 3x3 gray ramp 0, 0.5, 1 along x: numpy.gradient gives 0.5 everywhere along x
    # (one-sided at the borders: 0.5 - 0 and 1 - 0.5; central inside: (1 - 0) / 2), 0 along y.
    ramp = np.tile(np.array([0, 127.5, 255]), (3, 1))[None, :, :, None]
    assert float(sharpness(_to_model(ramp))[0]) == pytest.approx(9 * 0.5 / (9 * 0.5), abs=1e-4)
    # One bright pixel in a corner: magnitudes by hand, summed, over W*H*max.
    spot = np.zeros((1, 3, 3, 1))
    spot[0, 0, 0, 0] = 255
    g = np.gradient(spot[0, :, :, 0] / 255.0)
    mag = np.hypot(g[0], g[1])
    assert mag.max() == pytest.approx(np.sqrt(2))  # the corner: one-sided differences of 1 in x and y
    expected = mag.sum() / (9 * mag.max())
    assert float(sharpness(_to_model(spot))[0]) == pytest.approx(expected, abs=1e-4)
    assert measure("sharpness", spot.astype(np.uint8))[0] == pytest.approx(expected, abs=1e-4)
    flat = np.full((1, 4, 4, 3), 90, np.uint8)
    assert float(sharpness(_to_model(flat))[0]) == pytest.approx(0.0, abs=1e-3)


def test_sharpness_against_the_edges_p_norm():
    """sharpness_norm p: the sum of magnitudes over W * H * (mean m^p)^(1/p), which is the
    formula when every edge is as strong as the strongest, and whose gradient reaches every
    strong edge, not the strongest pixel alone."""
    rng = np.random.default_rng(1)
    images = rng.uniform(0, 255, (3, 8, 8, 3))
    gray = (images / 255.0) @ np.array([0.2126, 0.7152, 0.0722])
    g = np.gradient(gray, axis=(1, 2))
    mag = np.hypot(g[0], g[1])
    for p in (1.0, 12.0):
        expected = mag.sum(axis=(1, 2)) / (64 * np.mean(mag ** p, axis=(1, 2)) ** (1 / p))
        np.testing.assert_allclose(sharpness(_to_model(images), p).numpy(), expected, rtol=1e-4)
    ramp = np.tile(np.array([0, 127.5, 255]), (3, 1))[None, :, :, None]  # every magnitude 0.5
    assert float(sharpness(_to_model(ramp), 12.0)[0]) == pytest.approx(float(sharpness(_to_model(ramp))[0]), abs=1e-4)

    x = tf.constant(_to_model(images[:1]))
    reached = {}
    for p in (0.0, 12.0):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = sharpness(x, p)
        # pixels whose gradient is at least a tenth of the largest: the p-norm spreads the pull
        grad = np.abs(tape.gradient(y, x).numpy()).sum(axis=-1)
        reached[p] = int((grad >= 0.1 * grad.max()).sum())
    assert reached[12.0] > 2 * reached[0.0]
    with pytest.raises(ValueError, match="sharpness_norm"):
        EGANOptions(extractors=["sharpness"], sharpness_norm=0.5)


def _images(n=16):
    rng = np.random.default_rng(0)
    return tf.data.Dataset.from_tensor_slices(rng.uniform(-1, 1, (n, 32, 32, 3)).astype("float32")).repeat().batch(4)


@pytest.mark.parametrize("extractors", [["brightness"], ["brightness", "sharpness"]])
def test_one_step_changes_generator_and_discriminator(extractors):
    trainer = GANTrainer(TrainConfig(**SMALL, options={"extractors": extractors}))
    variables = trainer.generator.trainable_variables + trainer.discriminator.trainable_variables
    before = [v.numpy().copy() for v in variables]
    out = trainer.train_step(next(iter(_images())))
    assert all(not np.array_equal(a, v.numpy()) for a, v in zip(before, variables))
    assert {"e_loss", *(f"e_{e}" for e in extractors)} <= set(out) and float(out["e_loss"]) > 0


def test_c_enters_the_generator_and_the_card_and_signature_declare_it(tmp_path):
    train(TrainConfig(**SMALL, options={"extractors": ["brightness", "sharpness"], "c_max": 5.0}), _images(),
          tmp_path)
    card = read_card(tmp_path)
    c = card.input("c")
    assert card.variant == "egan" and c.kind == "attribute" and c.labels == ("brightness", "sharpness")
    assert c.range == (0.0, 5.0) and c.meta["extractors"] == ["brightness", "sharpness"]
    assert card.z.range == (0.0, 1.0)  # U(0, 1), the thesis' z
    card, g = load_generator(tmp_path)
    inputs = sample_inputs(card, 3, seed=1)
    low = generate(g, {**inputs, "c": np.zeros((3, 2), np.float32)})
    high = generate(g, {**inputs, "c": np.full((3, 2), 5.0, np.float32)})
    assert not np.array_equal(low, high)
    serve = load_serving(tmp_path / "saved_model")
    assert set(serve.structured_input_signature[1]) == {"z", "c"}
    served = serve(z=tf.constant(inputs["z"]), c=tf.zeros((3, 2)))["images"].numpy()
    assert np.abs(served.astype(int) - low.astype(int)).max() <= 1

    out = tmp_path / "sweep"
    out.mkdir()
    index = attribute_sweeps(tmp_path, out, high=2.0, rows=3, columns=11)
    assert set(index) == {"c_brightness.png", "c_sharpness.png"}
    from PIL import Image
    assert Image.open(out / "c_brightness.png").size == (11 * 34 + 2, 3 * 34 + 2)
    assert index["c_brightness.png"]["values"][0] == 0 and index["c_brightness.png"]["values"][-1] == 2


def test_bad_egan_options_are_clear():
    from model.variants.egan import EGAN
    with pytest.raises(ValueError, match="mode must be one of"):
        EGAN(TrainConfig(**SMALL, options={"mode": "both"}))
    with pytest.raises(ValueError, match="at least one extractor"):
        EGAN(TrainConfig(**SMALL, options={"extractors": []}))
    with pytest.raises(ValueError, match=r"c_distribution must be one of \('bernoulli', 'uniform'\), got 'normal'"):
        EGAN(TrainConfig(**SMALL, options={"c_distribution": "normal"}))
    with pytest.raises(ValueError, match=r"target must be one of \('coin', 'quantile'\), got 'median'"):
        EGAN(TrainConfig(**SMALL, options={"target": "median"}))
    with pytest.raises(ValueError, match="target quantile needs c_distribution uniform"):
        EGAN(TrainConfig(**SMALL, options={"target": "quantile"}))


QUANTILE = {"target": "quantile", "c_distribution": "uniform", "extractors": ["brightness", "sharpness"]}


def test_the_quantile_target_is_the_real_faces_level_at_quantile_c():
    """Q tracks the real batches' quantiles (the first batch sets them, later ones move them by
    1 - decay); Q(c) interpolates between the tracked levels; the loss is the L1 gap to Q(c)."""
    from model.variants.egan import EGAN
    variant = EGAN(TrainConfig(**SMALL, options={**QUANTILE, "quantile_points": 5, "quantile_decay": 0.5}))
    variant.build()
    levels = np.linspace(-1.0, 1.0, 5, dtype=np.float32)  # brightness 0, 0.25, ..., 1: five flat faces
    flat = tf.constant(np.broadcast_to(levels[:, None, None, None], (5, 32, 32, 3)).copy())
    variant.track_quantiles(variant.extract(flat))
    np.testing.assert_allclose(variant.quantiles.numpy()[0], [0, 0.25, 0.5, 0.75, 1.0], atol=1e-6)
    c = tf.constant([[0.0, 0.5], [0.125, 1.0], [1.0, 0.0]])
    np.testing.assert_allclose(variant.target_of(c).numpy()[:, 0], [0.0, 0.125, 1.0], atol=1e-6)
    variant.e_steps.assign_add(1.0)  # one training step done: later batches move Q by 1 - decay
    variant.track_quantiles(variant.extract(tf.fill((5, 32, 32, 3), -1.0)))  # all black: halfway towards 0
    np.testing.assert_allclose(variant.quantiles.numpy()[0], [0, 0.125, 0.25, 0.375, 0.5], atol=1e-6)
    fake = tf.fill((3, 32, 32, 3), 0.0)  # brightness 0.5 each
    loss, scalars = variant.extra_generator_loss(fake, {"c": c})
    target = variant.target_of(c).numpy()
    f = variant.extract(fake).numpy()
    expected = SMALL["batch_size"] ** -1 * np.abs(f - target).sum()
    assert float(loss) == pytest.approx(variant.options.weight * expected, rel=1e-5)
    assert float(scalars["e_brightness"]) == pytest.approx((f - target)[:, 0].sum() / SMALL["batch_size"], rel=1e-5)


def test_z_pairs_draw_each_z_twice_and_ask_the_pairs_difference_of_levels(tmp_path):
    """z_pairs: rows 2i and 2i + 1 of G's batch share a z with their own c (an odd last row
    keeps its z); the pair term is the mean over pairs of |F_a - F_b - (Q_a - Q_b)|, added to
    the L1 loss and logged as e_pair; a run with it trains."""
    import csv

    from model.variants.egan import EGAN
    options = {**QUANTILE, "extractors": ["brightness"], "z_pairs": True}
    variant = EGAN(TrainConfig(**SMALL, options=options))
    variant.build()
    variant.rng = tf.random.Generator.from_seed(0)  # the trainer's draws
    inputs = {k: v.numpy() for k, v in variant.sample_inputs(5).items()}
    z, c = inputs["z"], inputs["c"]
    np.testing.assert_array_equal(z[0], z[1])
    np.testing.assert_array_equal(z[2], z[3])
    assert not np.array_equal(z[1], z[2]) and not np.array_equal(z[3], z[4]) and c[0, 0] != c[1, 0]
    f = tf.constant([[0.2], [0.5], [0.4], [0.1]])
    target = tf.constant([[0.3], [0.3], [0.9], [0.2]])
    # pairs: (0.2 - 0.5) - (0.3 - 0.3) = -0.3, (0.4 - 0.1) - (0.9 - 0.2) = -0.4; two pairs in a batch of 4
    assert float(variant.pair_loss(f, target)) == pytest.approx((0.3 + 0.4) / 2)
    with pytest.raises(ValueError, match="z_pairs needs target quantile"):
        EGAN(TrainConfig(**SMALL, options={"z_pairs": True}))

    train(TrainConfig(**SMALL, options=options), _images(), tmp_path / "run")
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    assert rows and all(np.isfinite(float(r["e_pair"])) and float(r["e_pair"]) >= 0 for r in rows)


def test_pair_weight_weighs_the_pair_term_alone():
    """pair_weight: G's extractor loss is weight * (per-face term + pair_weight * pair term) on
    the same batch, e_pair logs the unweighted pair term; refused without z_pairs or below 0."""
    from model.variants.egan import EGAN

    losses = {}
    for pair_weight in (1.0, 3.0):
        options = {**QUANTILE, "extractors": ["brightness"], "z_pairs": True, "pair_weight": pair_weight,
                   "weight": 2.0}
        variant = EGAN(TrainConfig(**SMALL, options=options))
        variant.build()
        variant.quantiles.assign(tf.linspace(0.0, 1.0, variant.options.quantile_points)[None, :])  # Q(c) = c
        fake = tf.random.stateless_uniform((4, 32, 32, 3), (1, 2), -1.0, 1.0)
        inputs = {"c": tf.constant([[0.1], [0.8], [0.5], [0.2]])}
        loss, scalars = variant.extra_generator_loss(fake, inputs)
        losses[pair_weight] = float(loss), float(scalars["e_loss"]), float(scalars["e_pair"])
    (one, face, pair), (three, face3, pair3) = losses[1.0], losses[3.0]
    assert (face, pair) == pytest.approx((face3, pair3)) and pair > 0
    assert one == pytest.approx(2.0 * (face + pair), rel=1e-5)
    assert three == pytest.approx(2.0 * (face + 3.0 * pair), rel=1e-5)
    with pytest.raises(ValueError, match="pair_weight weighs the z pairs' term: needs --z-pairs.*without z_pairs"):
        EGAN(TrainConfig(**SMALL, options={**QUANTILE, "pair_weight": 2.0}))
    with pytest.raises(ValueError, match="pair_weight .* got -1.0"):
        EGAN(TrainConfig(**SMALL, options={**QUANTILE, "z_pairs": True, "pair_weight": -1.0}))


def test_extra_pairs_leave_the_batch_its_own_z_and_draw_their_pairs_beside_it(tmp_path):
    """pairs_from="extra": G's batch keeps a z per row (what D judges); the pair term is on n/2
    faces drawn beside it in pairs sharing a z, normalised by the global batch's pairs; a run
    with it trains and logs e_pair."""
    import csv

    from model.variants.egan import EGAN
    options = {**QUANTILE, "extractors": ["brightness"], "z_pairs": True, "pairs_from": "extra"}
    variant = EGAN(TrainConfig(**{**SMALL, "batch_size": 8}, options=options))
    variant.build()
    variant.rng = tf.random.Generator.from_seed(0)
    z = variant.sample_inputs(8)["z"].numpy()
    assert len({row.tobytes() for row in z}) == 8  # no row shares its z
    variant.quantiles.assign(tf.linspace(0.0, 1.0, variant.options.quantile_points)[None, :])  # Q(c) = c
    drawn = []
    call = variant.generator.call
    variant.generator.call = lambda inputs, **kw: (drawn.append({k: v.numpy() for k, v in inputs.items()}),
                                                   call(inputs, **kw))[1]
    f, target = variant.extra_pairs(tf.constant(8))
    (inputs,) = drawn
    assert f.shape == target.shape == (4, 1) and inputs["z"].shape == (4, variant.config.z_dim)
    np.testing.assert_array_equal(inputs["z"][0], inputs["z"][1])
    np.testing.assert_array_equal(inputs["z"][2], inputs["z"][3])
    assert not np.array_equal(inputs["z"][1], inputs["z"][2])
    np.testing.assert_allclose(target.numpy(), inputs["c"], atol=1e-6)
    # two pairs in a global batch of 8: the mean over 8 // 4 = 2 pairs
    f = tf.constant([[0.2], [0.5], [0.4], [0.1]])
    assert float(variant.pair_loss(f, target)) == pytest.approx(
        (abs(-0.3 - float(target[0, 0] - target[1, 0])) + abs(0.3 - float(target[2, 0] - target[3, 0]))) / 2,
        rel=1e-5)
    with pytest.raises(ValueError, match="pairs_from must be one of"):
        EGAN(TrainConfig(**SMALL, options={**options, "pairs_from": "both"}))

    train(TrainConfig(**SMALL, options=options), _images(), tmp_path / "run")  # batch 4: one extra pair
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    assert rows and all(np.isfinite(float(r["e_pair"])) and float(r["e_pair"]) >= 0 for r in rows)


def test_the_extractor_weight_warms_up_linearly_then_stays():
    from model.variants.egan import EGAN
    variant = EGAN(TrainConfig(**SMALL, options={"weight": 2.0, "weight_warmup": 4}))
    variant.build()
    weights = []
    for _ in range(6):
        weights.append(float(variant.extractor_weight()))
        variant.e_steps.assign_add(1.0)
    assert weights == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0, 2.0])
    plain = EGAN(TrainConfig(**SMALL, options={"weight": 2.0}))
    plain.build()
    assert float(plain.extractor_weight()) == 2.0 and "e_steps" not in plain.trackables()
    with pytest.raises(ValueError, match="weight_warmup must be >= 0 steps"):
        EGAN(TrainConfig(**SMALL, options={"weight_warmup": -1}))


def test_the_quantile_target_trains_and_resumes_with_its_estimate(tmp_path):
    """Training with the quantile target tracks Q from the real batches; Q is in the checkpoint,
    so a resumed run ends with the estimate an uninterrupted one has."""
    def run(steps, folder):
        seen = {}
        train(TrainConfig(**{**SMALL, "steps": steps}, options={**QUANTILE, "weight_warmup": 3}), _images(),
              tmp_path / folder,
              on_checkpoint=lambda step, trainer: seen.update(model=trainer.model))
        return seen["model"]

    whole = run(4, "whole")
    assert run(2, "cut").e_steps.numpy() == 2
    resumed = run(4, "cut")
    assert whole.e_steps.numpy() == resumed.e_steps.numpy() == 4  # one clock: warm-up and quantiles resume
    np.testing.assert_allclose(whole.quantiles.numpy(), resumed.quantiles.numpy(), rtol=1e-6)
    assert np.ptp(whole.quantiles.numpy(), axis=1).min() > 0  # levels spread, not one value


def test_a_conditional_d_sees_the_real_faces_level_and_the_fakes_c(tmp_path):
    """d_condition: real faces reach D with the level of their own F among the tracked
    quantiles (Q inverted), fakes with the c they were made from; D's logit is the plain
    logit plus the projection <V c, phi(x)>, so it changes with c for the same image; training
    with it runs, and completion's restored D takes the image and c."""
    from model.apps.inversion import checkpoint_discriminator
    from model.variants.egan import EGAN
    options = {**QUANTILE, "extractors": ["brightness"], "quantile_points": 5, "d_condition": True}
    variant = EGAN(TrainConfig(**SMALL, options=options))
    variant.build()
    levels = np.linspace(-1.0, 1.0, 5, dtype=np.float32)  # brightness 0, 0.25, ..., 1
    variant.track_quantiles(variant.extract(tf.constant(np.broadcast_to(levels[:, None, None, None],
                                                                        (5, 32, 32, 3)).copy())))
    np.testing.assert_allclose(variant.level_of(tf.constant([[0.0], [0.125], [0.6], [1.0], [1.5]])).numpy()[:, 0],
                               [0.0, 0.125, 0.6, 1.0, 1.0], atol=1e-6)  # Q^-1 inverts Q (clipped outside)
    real = tf.constant(np.broadcast_to(np.float32([-0.5, 0.5])[:, None, None, None], (2, 32, 32, 3)).copy())
    feed = variant.d_feed(real, batch={"image": real, "level": variant.level_of(variant.extract(real))})
    np.testing.assert_allclose(feed["c"].numpy()[:, 0], [0.25, 0.75], atol=1e-6)
    c = tf.constant([[0.1], [0.9]])
    assert variant.d_feed(real, inputs={"c": c})["c"] is c
    D = variant.discriminator
    assert {t.name.split(":")[0] for t in D.inputs} == {"image", "c"}
    D.get_layer("projection").set_weights([np.ones((1, D.get_layer("projection").kernel.shape[1]), np.float32)])
    same = tf.concat([real[:1], real[:1]], 0)
    logits = D({"image": same, "c": tf.constant([[0.0], [1.0]])}, training=False).numpy()[:, 0]
    assert logits[0] != pytest.approx(logits[1])  # the same face judged differently at another level
    with pytest.raises(ValueError, match="d_condition needs target quantile"):
        EGAN(TrainConfig(**SMALL, options={"d_condition": True}))

    train(TrainConfig(**SMALL, options=options), _images(), tmp_path / "run")
    restored = checkpoint_discriminator(tmp_path / "run")
    assert {t.name.split(":")[0] for t in restored.inputs} == {"image", "c"}


def test_c_in_every_generator_block_trains_exports_and_reaches_the_last_block(tmp_path):
    """c_every_block: c is concatenated as constant maps before every upsampling convolution
    (the last, to_image, included), so c changes the output; the run trains and exports a
    generator that loads as plain Keras; the seed family refuses it in one line."""
    from model.nets.networks import build_generator
    from model.variants.egan import EGAN
    options = {"extractors": ["brightness", "sharpness"], "c_every_block": True}
    variant = EGAN(TrainConfig(**SMALL, options=options))
    variant.build()
    G = variant.generator
    def convs(model):
        return [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2DTranspose)]
    plain = EGAN(TrainConfig(**SMALL, options={"extractors": ["brightness", "sharpness"]}))
    plain.build()
    grown = [a.input.shape[-1] - b.input.shape[-1] for a, b in zip(convs(G), convs(plain.generator))]
    assert len(grown) == len(convs(plain.generator)) >= 2 and grown == [2] * len(grown)  # two c maps before each
    z = tf.random.uniform((2, 100), seed=1)
    far = [G({"z": z, "c": tf.fill((2, 2), value)}).numpy() for value in (0.0, 1.0)]
    assert not np.allclose(*far)

    run = tmp_path / "run"
    train(TrainConfig(**SMALL, options=options), _images(), run)
    _, exported = load_generator(run)
    assert any(type(layer).__name__ == "RepeatVector" for layer in exported.layers)
    with pytest.raises(ValueError, match="every generator block need --generator dcgan"):
        build_generator(TrainConfig(**{**SMALL, "generator": "seed"}), {"c": 2}, extra_ways={"every_block"})


def test_c_modulation_starts_as_the_plain_block_then_scales_each_blocks_features(tmp_path):
    """c_modulation: every batch-normalised block is scaled by 1 + W c and shifted by W' c per
    channel, zero-initialised, so a new generator draws what the plain one draws from the same
    weights; once W is set, c changes the output multiplicatively; the run trains, its card says
    so, its exported generator loads as plain Keras; the seed family refuses it in one line."""
    from model.nets.networks import build_generator
    from model.variants.egan import EGAN
    options = {"extractors": ["sharpness"], "c_modulation": True}
    variant = EGAN(TrainConfig(**SMALL, options=options))
    variant.build()
    G = variant.generator
    plain = EGAN(TrainConfig(**SMALL, options={"extractors": ["sharpness"]}))
    plain.build()
    gains = [layer for layer in G.layers if isinstance(layer, keras.layers.Multiply)]
    blocks = [layer for layer in plain.generator.layers if isinstance(layer, keras.layers.ReLU)]
    assert len(gains) == len(blocks) >= 2  # one per batch-normalised block
    dense = [layer for layer in G.layers if isinstance(layer, keras.layers.Dense) and layer.name != "project"]
    own = [layer for layer in G.layers if layer.weights and layer not in dense]
    theirs = [layer for layer in plain.generator.layers if layer.weights]
    assert len(own) == len(theirs) and len(dense) == 2 * len(gains)
    for mine, other in zip(own, theirs):  # the plain generator's weights in the modulated one
        mine.set_weights(other.get_weights())
    z = tf.random.uniform((2, 100), seed=1)
    inputs = [{"z": z, "c": tf.fill((2, 1), value)} for value in (0.0, 1.0)]
    np.testing.assert_allclose(G(inputs[1], training=False), plain.generator(inputs[1], training=False), atol=1e-6)
    for layer in dense:
        layer.kernel.assign(tf.fill(layer.kernel.shape, 0.5))
    far = [G(x, training=False).numpy() for x in inputs]
    assert not np.allclose(*far, atol=1e-3)

    run = tmp_path / "run"
    train(TrainConfig(**SMALL, options=options), _images(), run)
    assert read_card(run).inputs[-1].meta["c_modulation"] is True
    _, exported = load_generator(run)
    assert sum(isinstance(layer, keras.layers.Multiply) for layer in exported.layers) == len(gains)
    with pytest.raises(ValueError, match="every generator block need --generator dcgan"):
        build_generator(TrainConfig(**{**SMALL, "generator": "seed"}), {"c": 1}, extra_ways={"modulation"})


@pytest.mark.parametrize("distribution", ["bernoulli", "uniform"])
def test_training_draws_c_as_the_card_declares(distribution):
    """The 0/1 coin gives only 0 and 1; uniform gives values spread over [0, 1] (not the wider
    range a user may set), in the training loop (TensorFlow) and in numpy alike."""
    from model.variants.egan import EGAN
    variant = EGAN(TrainConfig(**SMALL, options={"c_distribution": distribution, "c_max": 5.0}))
    spec = variant.inputs()[-1]
    assert spec.name == "c" and spec.distribution == distribution and spec.range == (0.0, 5.0)
    variant.rng = tf.random.Generator.from_seed(0)
    drawn = [variant.sample_inputs(2000)["c"].numpy(), sample_inputs([spec], 2000, seed=0)["c"]]
    for c in drawn:
        assert c.shape == (2000, 1) and c.min() >= 0.0 and c.max() <= 1.0
        if distribution == "bernoulli":
            assert set(np.unique(c)) == {0.0, 1.0} and abs(c.mean() - 0.5) < 0.05
        else:
            assert len(np.unique(c)) > 1900 and abs(c.mean() - 0.5) < 0.05 and c.max() > 0.95


def test_a_run_without_c_has_no_sweep(tmp_path):
    train(TrainConfig(**{**SMALL, "variant": "dcgan", "z_dist": "uniform"}), _images(), tmp_path)
    with pytest.raises(ValueError, match="declares no attribute input c"):
        attribute_sweeps(tmp_path, tmp_path, 1.0)


def _classifier_folder(tmp_path, names=("Male",)):
    """A tiny attribute classifier saved as TrainAttributeClassifier writes one."""
    import json

    from model.apps.attributes import CARD_FILE, FORMAT, MODEL_FILE, build_classifier
    keras.utils.set_random_seed(0)
    folder = tmp_path / "classifier"
    folder.mkdir()
    build_classifier(len(names), 32, 3, width=4).save(folder / MODEL_FILE)
    (folder / CARD_FILE).write_text(json.dumps({"format": FORMAT, "attributes": list(names)}))
    return folder


def _with_attributes(n=16):
    rng = np.random.default_rng(0)
    data = {"image": rng.uniform(-1, 1, (n, 32, 32, 3)).astype("float32"),
            "attributes": rng.integers(0, 2, (n, 1)).astype("float32")}
    return tf.data.Dataset.from_tensor_slices(data).repeat().batch(4)


def test_pretrain_mode_trains_g_and_d_through_a_frozen_classifier(tmp_path):
    folder = _classifier_folder(tmp_path, ("Smiling", "Male"))
    trainer = GANTrainer(TrainConfig(**SMALL, options={"extractors": ["Male"], "classifier": str(folder)}))
    model = trainer.model
    assert model.features == ("image",) and model._columns == [1]  # Male is the classifier's 2nd output
    frozen = [w.copy() for w in model.classifier.get_weights()]
    variables = trainer.generator.trainable_variables + trainer.discriminator.trainable_variables
    before = [v.numpy().copy() for v in variables]
    out = trainer.train_step(next(iter(_images())))
    assert all(not np.array_equal(a, v.numpy()) for a, v in zip(before, variables))
    for a, b in zip(frozen, model.classifier.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert float(out["e_loss"]) > 0 and "f_loss" not in out


def test_joint_mode_updates_the_classifier_on_real_labels():
    trainer = GANTrainer(TrainConfig(**SMALL, options={"extractors": ["Male"], "mode": "joint",
                                                       "classifier_width": 4}))
    model = trainer.model
    assert model.features == ("image", "attributes") and model.data_attributes() == ["Male"]
    before = [w.copy() for w in model.classifier.get_weights()]
    g_before = trainer.generator.trainable_variables[0].numpy().copy()
    out = trainer.train_step(next(iter(_with_attributes())))
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.classifier.get_weights()))
    assert not np.array_equal(g_before, trainer.generator.trainable_variables[0].numpy())
    assert 0 <= float(out["f_acc"]) <= 1 and float(out["f_loss"]) > 0


def test_an_attribute_celeba_lacks_is_one_line_listing_the_valid_names(luigi_config):
    from model.variants.egan import EGAN
    with pytest.raises(ValueError, match=r"unknown CelebA attribute 'Moustache'; valid names: 5_o_Clock_Shadow, "):
        EGAN(TrainConfig(**SMALL, options={"extractors": ["Moustache"], "mode": "joint"}))
    import tasks
    from tasks.errors import ConfigError
    with pytest.raises(ConfigError, match=r"\[TrainEGAN\] attribute = 'Moustache': unknown CelebA attribute"):
        tasks.TrainEGAN(dataset="celeba", extractor="attribute", attribute="Moustache")
    with pytest.raises(ConfigError, match=r"\[TrainEGAN\] extractor = 'attribute': needs --attribute"):
        tasks.TrainEGAN(dataset="celeba", extractor="attribute")


def test_c_lowpass_mixes_a_blurred_copy_by_c_and_keeps_the_range(tmp_path):
    """c_lowpass: G's image mixed with its fixed Gaussian blur, a = sigmoid(10 (W c + b)) per
    image: at the start (W = 0, a = sigmoid(-3)) nearly the plain image; with W set, c changes
    the output; the full blur is the edge-padded Gaussian (a face-like image's sharpness, the
    edges' mean against the strongest, rises, as it does for a blurred real face),
    a convex mix stays in [-1, 1], a flat image stays flat (edge padding: no frame); the run
    trains, its card says so, the exported generator loads as plain Keras; the seed family refuses."""
    from model.nets.networks import build_generator
    from model.variants.egan import EGAN
    from model.variants.extractors import sharpness
    options = {"extractors": ["sharpness"], "c_lowpass": True}
    variant = EGAN(TrainConfig(**SMALL, options=options))
    variant.build()
    G = variant.generator
    image = G.get_layer("tanh").output
    plain = keras.Model(G.inputs, image)
    z = tf.random.uniform((4, 100), seed=1)
    low, high = ({"z": z, "c": tf.fill((4, 1), value)} for value in (0.0, 1.0))
    start = plain(low, training=False).numpy()
    before = G(low, training=False).numpy()
    assert np.abs(before - start).max() < 0.1 * np.abs(start).max()  # sigmoid(-3) of a blur
    G.get_layer("lowpass_mix").kernel.assign([[20.0]])
    sharp, blurred = G(low, training=False).numpy(), G(high, training=False).numpy()
    np.testing.assert_allclose(sharp, before, atol=1e-7)  # W c = 0 at c = 0
    assert not np.allclose(blurred, sharp, atol=1e-3 * np.abs(sharp).max())
    from model.nets.dcgan import _lowpass_mixed
    img, codes = keras.Input((32, 32, 3)), keras.Input((1,))
    mix = keras.Model([img, codes], _lowpass_mixed(img, codes))
    mix.get_layer("lowpass_mix").bias.assign([30.0])  # a = 1: all blur
    flat = np.full((1, 32, 32, 3), 0.25, np.float32)
    np.testing.assert_allclose(mix([flat, np.ones((1, 1))]), flat, atol=1e-5)  # no frame at the border
    step = np.where(np.arange(32) < 16, -1.0, 1.0).astype(np.float32)[None, None, :, None] * np.ones((1, 32, 1, 3))
    out = mix([step.astype(np.float32), np.ones((1, 1))]).numpy()
    assert np.all(np.diff(out[0, 5, :, 0]) >= 0) and -1 < out[0, 5, 15, 0] < 0 < out[0, 5, 16, 0] < 1
    # on a face-like image (smooth shading, a few strong edges) the full blur is the Gaussian of
    # sigma LOWPASS_SIGMA with edge padding, stays in [-1, 1], and raises sharpness as on real faces
    from model.nets.dcgan import LOWPASS_SIGMA
    yy, xx = np.mgrid[0:32, 0:32] / 31.0
    face = np.where((xx - 0.5) ** 2 + (yy - 0.5) ** 2 < 0.12, 0.6 * np.cos(3 * xx), -0.9)
    face = np.repeat(face[None, :, :, None], 3, axis=3).astype(np.float32)
    r = int(np.ceil(2 * LOWPASS_SIGMA))
    taps = np.exp(-0.5 * (np.arange(-r, r + 1) / LOWPASS_SIGMA) ** 2)
    padded = np.pad(face, ((0, 0), (r, r), (r, r), (0, 0)), mode="edge")
    rows = sum(w * padded[:, i:i + 32] for i, w in enumerate(taps / taps.sum()))
    want = sum(w * rows[:, :, i:i + 32] for i, w in enumerate(taps / taps.sum()))
    got = mix([face, np.ones((1, 1))]).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert got.min() >= -1.0 and got.max() <= 1.0
    assert sharpness(got).numpy()[0] > sharpness(face).numpy()[0]

    run = tmp_path / "run"
    train(TrainConfig(**SMALL, options=options), _images(), run)
    assert read_card(run).inputs[-1].meta["c_lowpass"] is True
    _, exported = load_generator(run)
    assert any(type(layer).__name__ == "DepthwiseConv2D" for layer in exported.layers)
    with pytest.raises(ValueError, match="every generator block need --generator dcgan"):
        build_generator(TrainConfig(**{**SMALL, "generator": "seed"}), {"c": 1}, extra_ways={"lowpass"})


def test_c_lowpass_draft_is_a_feedback_that_can_sharpen(tmp_path):
    """c_lowpass_draft: the mix's logit also sees the edges of the draft and of its blur (the luma
    gradient's mean and largest magnitude, as the sharpness extractor measures them, and their
    direction), batch-normalised, and the mix spans [-LOWPASS_SHARPEN, 1]: at the start (a = 0)
    G's image is the plain draft; with weight on the edges two z at one c get different mixes,
    without it the same; at a = -0.5 the output is an unsharp mask clipped to [-1, 1] (on real
    faces it lowers sharpness: bench/sharpness_norm.py); options refuse it without c_lowpass;
    the run trains, its card says so, the exported generator loads."""
    from model.nets.dcgan import LOWPASS_SHARPEN, _lowpass_mixed, lowpassed
    from model.variants.egan import EGAN
    options = {"extractors": ["sharpness"], "c_lowpass": True, "c_lowpass_draft": True}
    variant = EGAN(TrainConfig(**SMALL, options=options))
    variant.build()
    G = variant.generator
    assert variant.extra_ways() == {"lowpass_draft"}
    z = tf.random.uniform((4, 100), seed=1)
    inputs = {"z": z, "c": tf.fill((4, 1), 0.5)}
    draft = keras.Model(G.inputs, G.get_layer("tanh").output)(inputs, training=False).numpy()
    np.testing.assert_allclose(G(inputs, training=False).numpy(), draft, atol=1e-6)  # a = 0
    amount = keras.Model(G.inputs, G.get_layer("lowpass_amount").output)
    mix = G.get_layer("lowpass_mix")
    np.testing.assert_allclose(amount(inputs, training=False).numpy(), 0.0, atol=1e-6)
    kernel = np.zeros(mix.kernel.shape, np.float32)
    kernel[0] = 0.1  # c alone: every z gets the same mix
    mix.kernel.assign(kernel)
    same = amount(inputs, training=True).numpy()[:, 0]
    assert np.ptp(same) < 1e-6 and same[0] > 1e-3
    kernel[1:] = 0.05  # the draft's edges (batch-normalised in training): each z its own
    mix.kernel.assign(kernel)
    assert np.ptp(amount(inputs, training=True).numpy()[:, 0]) > 1e-2

    img, codes = keras.Input((32, 32, 3)), keras.Input((1,))
    net = keras.Model([img, codes], _lowpass_mixed(img, codes, draft=True))
    net.get_layer("lowpass_mix").bias.assign([-30.0])  # a = -LOWPASS_SHARPEN: all unsharp mask
    yy, xx = np.mgrid[0:32, 0:32] / 31.0
    face = np.where((xx - 0.5) ** 2 + (yy - 0.5) ** 2 < 0.12, 0.6 * np.cos(3 * xx), -0.9)
    face = np.repeat(face[None, :, :, None], 3, axis=3).astype(np.float32)
    got = net([face, np.ones((1, 1))], training=False).numpy()
    blurred = keras.Model(img, lowpassed(img))(face).numpy()
    want = np.clip(face - LOWPASS_SHARPEN * (blurred - face), -1.0, 1.0)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert got.min() >= -1.0 and got.max() <= 1.0 and np.abs(face - LOWPASS_SHARPEN * (blurred - face)).max() > 1.0

    # the edges the mix sees: the luma gradient's mean and largest magnitude as the extractor
    # takes them (numpy.gradient: one-sided at the border, where generated faces' strongest
    # edges often are), and (m, M) / |(m, M)|
    from model.nets.dcgan import _edge_sizes
    rgb = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    rgb[0, :, :2] = 1.0  # a strong edge along the border
    sizes = keras.Model(img, _edge_sizes(img))(rgb).numpy()
    gray = luma(tf.constant(rgb))
    m = tf.sqrt(np_gradient(gray, 1) ** 2 + np_gradient(gray, 2) ** 2).numpy()
    want = np.stack([m.mean((1, 2)), m.max((1, 2))], axis=1)
    np.testing.assert_allclose(sizes[:, :2], want, rtol=1e-4)
    np.testing.assert_allclose(sizes[:, 2:], want / np.linalg.norm(want, axis=1, keepdims=True), rtol=1e-4)

    with pytest.raises(ValueError, match="set --c-lowpass too"):
        EGANOptions(extractors=["sharpness"], c_lowpass_draft=True)
    run = tmp_path / "run"
    train(TrainConfig(**SMALL, options=options), _images(), run)
    assert read_card(run).inputs[-1].meta["c_lowpass_draft"] is True
    _, exported = load_generator(run)
    assert any(layer.name == "lowpass_amount" for layer in exported.layers)


def test_c_lowpass_only_leaves_the_drawn_face_to_z_and_c_to_the_mix(tmp_path):
    """c_lowpass_only: the first projection sees z alone, so what G draws (before the mix) is the
    same at every c and only the mix follows c; options refuse it without c_lowpass or beside
    the other ways; the net refuses a skipped projection with no other way in; the run trains
    and its exported generator still takes c."""
    from model.nets.dcgan import build_generator
    from model.variants.egan import EGAN
    options = {"extractors": ["sharpness"], "c_lowpass": True, "c_lowpass_draft": True, "c_lowpass_only": True}
    variant = EGAN(TrainConfig(**SMALL, options=options))
    variant.build()
    G = variant.generator
    assert variant.extra_ways() == {"lowpass_draft", "skip_projection"}
    assert G.get_layer("project").kernel.shape[0] == variant.config.z_dim  # c is not projected
    G.get_layer("lowpass_mix").kernel.assign(np.full(G.get_layer("lowpass_mix").kernel.shape, 0.1, np.float32))
    z = tf.random.uniform((4, 100), seed=1)
    draft = keras.Model(G.inputs, G.get_layer("tanh").output)
    low, high = {"z": z, "c": tf.fill((4, 1), 0.0)}, {"z": z, "c": tf.fill((4, 1), 1.0)}
    np.testing.assert_array_equal(draft(low, training=False).numpy(), draft(high, training=False).numpy())
    amount = keras.Model(G.inputs, G.get_layer("lowpass_amount").output)
    assert (amount(high, training=False).numpy() - amount(low, training=False).numpy()).min() > 0.1
    # an untrained draft is nearly flat, so its blur differs from it only a little
    assert np.abs(G(low, training=False).numpy() - G(high, training=False).numpy()).max() > 0
    for bad in ({"c_lowpass": False, "c_lowpass_draft": False}, {"c_every_block": True}, {"c_modulation": True}):
        with pytest.raises(ValueError, match="c_lowpass_only lets c enter G by the blur mix alone"):
            EGAN(TrainConfig(**SMALL, options={**options, **bad}))
    with pytest.raises(ValueError, match="skip_projection: name another way"):
        build_generator(32, 3, extra_inputs={"c": 1}, extra_ways={"skip_projection"})

    train(TrainConfig(**SMALL, options=options), _images(), tmp_path / "run")
    card, exported = load_generator(tmp_path / "run")
    assert card.input("c").meta["c_lowpass_only"] is True and {i.name for i in exported.inputs} == {"z", "c"}


@pytest.mark.parametrize("fit,weight,g_steps", [(True, 0.0, 2), (False, 0.0, 1), (True, 5.0, 1)])
def test_c_lowpass_fit_keeps_ds_gradient_off_the_blur_mix(fit, weight, g_steps):
    """c_lowpass_fit: the blur mix's logit and the draft edges' batch norm learn from the
    extractor loss alone. With that loss at weight 0 a step (also the second G update of
    g_steps 2) leaves them as they were and moves the rest of G; without the option D's
    verdict moves the mix too; with a weight the extractor loss moves it."""
    from model.nets.dcgan import MIX_EDGES, MIX_LOGIT

    options = {"extractors": ["sharpness"], "c_lowpass": True, "c_lowpass_draft": True, "c_lowpass_fit": fit,
               "weight": weight}
    trainer = GANTrainer(TrainConfig(**{**SMALL, "g_steps": g_steps}, options=options))
    G = trainer.generator
    mix = G.get_layer(MIX_LOGIT).trainable_variables
    own = mix + G.get_layer(MIX_EDGES).trainable_variables
    assert {id(v) for v in trainer.model.extra_loss_variables()} == ({id(v) for v in own} if fit else set())
    rest = [v for v in G.trainable_variables if all(v is not o for o in own)]
    before = {id(v): v.numpy().copy() for v in G.trainable_variables}
    trainer.train_step(next(iter(_images())))
    assert all(not np.array_equal(before[id(v)], v.numpy()) for v in rest)
    moved = [not np.array_equal(before[id(v)], v.numpy()) for v in (own if fit and not weight else mix)]
    assert all(moved) if weight or not fit else not any(moved)
    with pytest.raises(ValueError, match="c_lowpass_fit trains the blur mix .* set --c-lowpass too"):
        EGANOptions(extractors=["sharpness"], c_lowpass_fit=True)


def test_mode_seeking_term_grows_as_different_z_draw_alike_faces():
    """MSGAN's term 1 / (mean|x_a - x_b| / mean|z_a - z_b| + eps) over the rows (i, i + n/2), by
    hand; weighted by the replica's share of the global batch; its gradient pushes the pair's
    faces apart."""
    from model.variants import losses

    z = tf.constant([[0.0, 0.0], [1.0, -1.0], [0.5, 0.5], [0.0, 1.0]])  # |z_a - z_b|: 0.5, 0.5, 1, 2: mean 1
    x = np.zeros((4, 2, 2, 1), np.float32)
    x[2:] = 0.4  # every pixel of both pairs 0.4 apart
    want = 1.0 / (0.4 / 1.0 + 1e-5)
    np.testing.assert_allclose(losses.mode_seeking(tf.constant(x), z, 4).numpy(), want, rtol=1e-5)
    np.testing.assert_allclose(losses.mode_seeking(tf.constant(x), z, 8).numpy(), want / 2, rtol=1e-5)
    alike = tf.constant(np.full_like(x, 0.1) + x / 10)
    assert losses.mode_seeking(alike, z, 4).numpy() > 5 * want
    images = tf.Variable(x)
    with tf.GradientTape() as tape:
        term = losses.mode_seeking(images, z, 4)
    grad = tape.gradient(term, images).numpy()
    assert (grad[:2] > 0).all() and (grad[2:] < 0).all()  # descending it moves x_a down, x_b up: apart
    one = tf.Variable(x[:1])  # a replica with one row has no pair: 0 and a zero gradient, not NaN
    with tf.GradientTape() as tape:
        term = losses.mode_seeking(one, z[:1], 4)
    assert term.numpy() == 0.0 and np.all(tape.gradient(term, one).numpy() == 0.0)


def test_ema_raw_mix_keeps_the_blur_mix_out_of_the_weight_average():
    """ema_raw_mix: after two steps the weight average holds the blur mix's last weights and an
    average of the rest of G; without it the mix is averaged too. It needs c_lowpass_fit and an
    average to keep the mix out of, each refused with one line otherwise."""
    base = {"extractors": ["sharpness"], "c_lowpass": True, "c_lowpass_draft": True, "c_lowpass_fit": True,
            "weight": 2.0}
    for raw in (False, True):
        trainer = GANTrainer(TrainConfig(**SMALL, ema=0.9, options={**base, "ema_raw_mix": raw}))
        G = trainer.generator
        mix = {id(v) for v in trainer.model.extra_loss_variables()}
        assert mix and {id(v) for v in trainer.model.unaveraged_variables()} == (mix if raw else set())
        for batch in _images().take(2):
            trainer.train_step(batch)
        averaged = dict(zip((id(w) for w in G.weights), trainer.ema.values()))
        trainable = {id(w) for w in G.trainable_weights}
        for w in G.trainable_weights:
            same = np.array_equal(averaged[id(w)], w.numpy())
            assert same == (raw and id(w) in mix), (w.name, raw)
        assert len(trainable & mix) == len(mix)
    with pytest.raises(ValueError, match="ema_raw_mix keeps the blur mix of c_lowpass_fit"):
        EGANOptions(extractors=["sharpness"], c_lowpass=True, ema_raw_mix=True)
    with pytest.raises(ValueError, match="this run keeps none: set --ema"):
        GANTrainer(TrainConfig(**SMALL, options={**base, "ema_raw_mix": True}))


def test_the_average_s_own_statistics_reach_the_blur_mix_s_edges():
    """ema_bn_batches on an EGAN (G takes z and c): the exported average gets statistics of its
    own draws in every batch norm, the feedback mix's draft edges among them."""
    from model.nets.dcgan import MIX_EDGES

    base = {"extractors": ["sharpness"], "c_lowpass": True, "c_lowpass_draft": True, "c_lowpass_fit": True}
    trainer = GANTrainer(TrainConfig(**SMALL, ema=0.9, ema_bn_batches=2, options=base))
    for batch in _images().take(2):
        trainer.train_step(batch)
    exported = trainer.export_generator()
    copied = trainer.model.inference_generator()
    copied.set_weights(trainer.ema.values())
    norms = [[layer for layer in g.layers if isinstance(layer, keras.layers.BatchNormalization)]
             for g in (exported, copied)]  # the same layers in the same order (auto names differ)
    assert MIX_EDGES in [layer.name for layer in norms[0]] and len(norms[0]) > 1
    for own, raw in zip(*norms):
        assert not np.allclose(own.moving_variance.numpy(), raw.moving_variance.numpy()), own.name
        np.testing.assert_array_equal(own.gamma.numpy(), raw.gamma.numpy())


def test_mode_seeking_trains_the_drawn_face_and_leaves_the_mix_to_the_extractor_loss():
    """mode_seeking: one step at weight 5 moves the rest of G otherwise than at weight 0 and the
    blur mix of c_lowpass_fit exactly as at 0 (same seed, same batch); the step reports the term;
    a negative weight is refused."""
    after, scalars = {}, {}
    for weight in (0.0, 5.0):
        options = {"extractors": ["sharpness"], "c_lowpass": True, "c_lowpass_draft": True, "c_lowpass_fit": True,
                   "weight": 2.0, "mode_seeking": weight}
        trainer = GANTrainer(TrainConfig(**SMALL, options=options))
        G = trainer.generator
        own = {id(v) for v in trainer.model.extra_loss_variables()}
        before = [v.numpy().copy() for v in G.trainable_variables]
        scalars[weight] = trainer.train_step(next(iter(_images())))
        after[weight] = [(id(v) in own, b, v.numpy().copy()) for v, b in zip(G.trainable_variables, before)]
    assert "ms_loss" in scalars[5.0] and "ms_loss" not in scalars[0.0]
    assert float(scalars[5.0]["ms_loss"]) > 0
    rest_moved_otherwise = False
    for (in_own, b0, a0), (_, b5, a5) in zip(after[0.0], after[5.0]):
        np.testing.assert_array_equal(b0, b5)
        if in_own:
            np.testing.assert_array_equal(a0, a5)
        else:
            rest_moved_otherwise |= not np.allclose(a0, a5, rtol=1e-5, atol=1e-7)
    assert rest_moved_otherwise
    with pytest.raises(ValueError, match="mode_seeking is a weight"):
        EGANOptions(extractors=["sharpness"], mode_seeking=-1.0)


def test_c_lowpass_split_leaves_the_drawn_face_to_d_alone():
    """c_lowpass_split: the extractor loss trains the blur mix alone. One step at weight 5 moves
    the rest of G exactly as one at weight 0 does (D's verdict alone; same seed, same batch) and
    moves the mix, which weight 0 leaves; refused without c_lowpass_fit."""
    from model.nets.dcgan import MIX_LOGIT

    after = {}
    for weight in (0.0, 5.0):
        options = {"extractors": ["sharpness"], "c_lowpass": True, "c_lowpass_draft": True, "c_lowpass_fit": True,
                   "c_lowpass_split": True, "weight": weight}
        trainer = GANTrainer(TrainConfig(**SMALL, options=options))
        G = trainer.generator
        own = {id(v) for v in trainer.model.extra_loss_variables()}  # the mix's logit and edges' norm
        logit = {id(v) for v in G.get_layer(MIX_LOGIT).trainable_variables}
        before = [v.numpy().copy() for v in G.trainable_variables]
        trainer.train_step(next(iter(_images())))
        after[weight] = [(id(v) in own, id(v) in logit, b, v.numpy().copy())
                         for v, b in zip(G.trainable_variables, before)]
    for (in_own, in_logit, b0, a0), (_, _, b5, a5) in zip(after[0.0], after[5.0]):
        np.testing.assert_array_equal(b0, b5)  # the same start
        if in_own:
            assert np.array_equal(a0, b0) and (np.array_equal(a5, b5) != in_logit)
        else:
            np.testing.assert_allclose(a0, a5, rtol=1e-5, atol=1e-7)
            assert not np.array_equal(a0, b0)
    with pytest.raises(ValueError, match="c_lowpass_split keeps the extractor loss .* set --c-lowpass-fit too"):
        EGANOptions(extractors=["sharpness"], c_lowpass=True, c_lowpass_split=True)
