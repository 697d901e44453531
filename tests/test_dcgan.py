"""The networks match Radford et al. (2015); one training step updates everything."""
from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from model.nets.dcgan import build_discriminator, build_generator, widths  # noqa: E402


def _shapes(model, kind):
    return [tuple(layer.output.shape[1:]) for layer in model.layers if isinstance(layer, kind)]


def test_generator_64_matches_the_paper():
    g = build_generator(64)
    assert g.input_shape == (None, 100)
    assert g.get_layer("project").output.shape[1:] == (4 * 4 * 1024,)
    assert _shapes(g, keras.layers.Conv2DTranspose) == [(8, 8, 512), (16, 16, 256), (32, 32, 128), (64, 64, 3)]
    # batch norm after every layer but the output; ReLU inside, tanh out
    assert [tuple(b.output.shape[1:]) for b in g.layers if isinstance(b, keras.layers.BatchNormalization)] \
        == [(4, 4, 1024), (8, 8, 512), (16, 16, 256), (32, 32, 128)]
    assert len([x for x in g.layers if isinstance(x, keras.layers.ReLU)]) == 4
    assert g.layers[-1].get_config()["activation"] == "tanh"
    trainable = (100 * 16384                                   # project (no bias: batch norm follows)
                 + 16 * 1024 * 512 + 16 * 512 * 256 + 16 * 256 * 128  # 4x4 transposed convs
                 + 16 * 128 * 3 + 3                            # output conv with bias
                 + 2 * (1024 + 512 + 256 + 128))               # batch-norm gamma and beta
    assert trainable == 12_658_435
    assert sum(int(np.prod(w.shape)) for w in g.trainable_weights) == trainable


def test_discriminator_64_matches_the_paper():
    d = build_discriminator(64)
    assert d.input_shape == (None, 64, 64, 3)
    assert _shapes(d, keras.layers.Conv2D) == [(32, 32, 128), (16, 16, 256), (8, 8, 512), (4, 4, 1024)]
    bns = [b for b in d.layers if isinstance(b, keras.layers.BatchNormalization)]
    assert [tuple(b.output.shape[1:]) for b in bns] == [(16, 16, 256), (8, 8, 512), (4, 4, 1024)]
    relus = [x for x in d.layers if isinstance(x, keras.layers.LeakyReLU)]
    assert len(relus) == 4 and all(abs(x.get_config()["negative_slope"] - 0.2) < 1e-6 for x in relus)
    trainable = (16 * 3 * 128 + 128                            # input conv, bias, no batch norm
                 + 16 * 128 * 256 + 16 * 256 * 512 + 16 * 512 * 1024
                 + 2 * (256 + 512 + 1024)
                 + 4 * 4 * 1024 + 1)                           # logit
    assert trainable == 11_036_289
    assert sum(int(np.prod(w.shape)) for w in d.trainable_weights) == trainable
    assert d.output_shape == (None, 1)


@pytest.mark.parametrize("resolution,channels,start,chans", [
    (64, 3, 4, [1024, 512, 256, 128]), (32, 3, 4, [512, 256, 128]), (28, 1, 7, [256, 128])])
def test_other_resolutions(resolution, channels, start, chans):
    assert widths(resolution) == (start, chans)
    g = build_generator(resolution, channels)
    d = build_discriminator(resolution, channels)
    assert g.output_shape == (None, resolution, resolution, channels)
    assert d(g(np.zeros((2, 100), "float32"))).shape == (2, 1)


def test_weights_are_normal_0_002():
    keras.utils.set_random_seed(1)
    g = build_generator(64)
    kernel = g.get_layer("project").kernel.numpy()
    assert abs(kernel.mean()) < 1e-3 and abs(kernel.std() - 0.02) < 1e-3
    gamma = [b for b in g.layers if isinstance(b, keras.layers.BatchNormalization)][0].gamma.numpy()
    assert abs(gamma.mean() - 1.0) < 5e-3 and abs(gamma.std() - 0.02) < 5e-3


def test_bad_resolution_is_refused():
    with pytest.raises(ValueError, match="not 4 or 7 times a power of two"):
        widths(30)
