"""The DCGAN generator and discriminator of Radford et al. (2015).

At 64x64: z (100) -> 4x4x1024 -> fractionally-strided convolutions to 8x8x512,
16x16x256, 32x32x128 -> 64x64x3 tanh. The discriminator mirrors it with
strided convolutions and LeakyReLU(0.2). Batch norm everywhere except the
generator output and the discriminator input; weights ~ N(0, 0.02), batch-norm
scales ~ N(1, 0.02) as in the reference Torch code. The first generator layer
is a dense projection (the paper's "project and reshape"), the last
discriminator layer a dense logit.

With ``fast=True`` (training) the layers are the drop-in subclasses of
model/nets/layers.py, which compute the same function faster on CPUs; ``fast=False``
builds plain Keras layers (the exported ``generator.keras`` loads anywhere).
"""
from __future__ import annotations

import keras
import numpy as np
from keras import layers

from model.config import resolution_ok
from model.nets.heads import discriminator_model
from model.nets.layers import MatmulConv2D, MatmulConv2DTranspose
from model.nets.norms import apply_norm, batch_norm, check_norm
from model.variants.extractors import LUMA

Z_DIM = 100


def _init():
    return keras.initializers.RandomNormal(0.0, 0.02)


def widths(resolution: int, base_width: int = 128) -> tuple[int, list[int]]:
    """``(start, channels)``: the generator's first feature-map side and the
    widths of its feature maps from ``start`` up to ``resolution / 2``.

    64 -> (4, [1024, 512, 256, 128]); 32 -> (4, [512, 256, 128]); 28 -> (7, [256, 128]).
    """
    if not resolution_ok(resolution):
        raise ValueError(f"resolution {resolution} is not 4 or 7 times a power of two")
    start, ups = resolution, 0
    while start % 2 == 0 and start > 4:
        start //= 2
        ups += 1
    return start, [base_width * 2 ** k for k in reversed(range(ups))]


def generator_inputs(z_dim: int, extra_inputs: dict[str, int] | None = None):
    """``(inputs, x)``: the generator's Keras input(s) and the vector its first layer sees.

    Only ``z``: a single ``(n, z_dim)`` input. With ``extra_inputs`` (name -> size,
    e.g. ``{"label": 10}``: a one-hot class, latent codes, attribute codes c) a dict
    of named inputs, ``z`` first, concatenated in that order (the conditional
    input of Mirza & Osindero 2014 and of ACGAN/InfoGAN/EGAN generators)."""
    z = keras.Input((z_dim,), name="z")
    if not extra_inputs:
        return z, z
    inputs = {"z": z, **{name: keras.Input((size,), name=name) for name, size in extra_inputs.items()}}
    return inputs, layers.Concatenate(name="inputs")(list(inputs.values()))


def _with_codes(x, codes):
    """``x`` ``(n, h, w, c)`` with the ``(n, k)`` ``codes`` appended as k constant feature maps."""
    h, w, k = x.shape[1], x.shape[2], codes.shape[-1]
    maps = layers.Reshape((h, w, k))(layers.RepeatVector(h * w)(codes))
    return layers.Concatenate(axis=-1)([x, maps])


def _modulated(x, codes):
    """``x`` ``(n, h, w, ch)`` (batch-normalised) scaled by 1 + W_s codes and shifted by W_b codes,
    per channel: conditional batch norm (BigGAN's class-conditional BN, for continuous codes).
    Zero-initialised, so it starts as the plain block; multiplicative, so a code can turn a
    channel's texture up or down, which constant maps added before a convolution can only bias."""
    ch = x.shape[-1]
    gain = layers.Dense(ch, kernel_initializer="zeros", bias_initializer="ones")(codes)
    shift = layers.Dense(ch, kernel_initializer="zeros")(codes)
    x = layers.Multiply()([x, layers.Reshape((1, 1, ch))(gain)])
    return layers.Add()([x, layers.Reshape((1, 1, ch))(shift)])


def _border_padded(x, r: int = 1, extrapolate: bool = False):
    """``x`` ``(n, h, w, ch)`` with ``r`` more rows and columns on every side, float32 as the image
    it pads. By default each copies its border (zero padding would draw a frame, an edge the
    sharpness extractor measures); with ``extrapolate`` (``r`` 1) each is 2 x[0] - x[1], so a
    central difference there is the one-sided difference ``numpy.gradient`` takes at the border
    and edges at the border weigh as the extractor weighs them (copying would halve them)."""
    for axis in (1, 2):
        n = x.shape[axis]
        crop = lambda a, b, x=x, axis=axis: layers.Cropping2D(  # noqa: E731
            ((a, b), (0, 0)) if axis == 1 else ((0, 0), (a, b)), dtype="float32")(x)
        first, last = crop(0, n - 1), crop(n - 1, 0)
        if extrapolate:
            twice = lambda edge: layers.Rescaling(2.0, dtype="float32")(edge)  # noqa: E731
            first = layers.Subtract(dtype="float32")([twice(first), crop(1, n - 2)])
            last = layers.Subtract(dtype="float32")([twice(last), crop(n - 2, 1)])
        x = layers.Concatenate(axis=axis, dtype="float32")([first] * r + [x] + [last] * r)
    return x


#: The Gaussian's standard deviation (pixels) of :func:`_lowpass_mixed`: at 64x64 a full mix
#: moves real faces' sharpness from their median to about their 95th percentile (docs/egan.md).
LOWPASS_SIGMA = 1.5


#: The mix's logit is this times W c + b, an equalised learning rate for its two weights: Adam
#: moves a weight by about its learning rate a step, so at 2e-4 over 3,200 steps W itself
#: reached 0.46 (the mix 0.07 -> 0.10 over c in [0, 1]: the lever unused; docs/egan.md).
LOWPASS_GAIN = 10.0


#: With the ``lowpass_draft`` way the mix spans ``[-LOWPASS_SHARPEN, 1]``: below 0 it subtracts the
#: blur's difference (an unsharp mask), which lowers sharpness, the one end a blur cannot reach
#: (half a mask moves real faces' median by about -0.015 of the 12-norm, a full blur by +0.11).
LOWPASS_SHARPEN = 0.5

#: How c enters the DCGAN generator beyond its first projection (``build_generator``'s
#: ``extra_ways``): ``every_block`` (constant feature maps before every upsampling block),
#: ``modulation`` (conditional batch norm, :func:`_modulated`), ``lowpass`` (a blurred copy
#: mixed in by c, :func:`_lowpass_mixed`), ``lowpass_draft`` (that mix also sees the draft's
#: edges and can sharpen); ``skip_projection``: the extra inputs leave the first projection to
#: z alone and enter only by the other ways named (with ``lowpass`` alone, what G draws does not
#: depend on c at all; only the mix does).
EXTRA_WAYS = ("every_block", "modulation", "lowpass", "lowpass_draft", "skip_projection")


#: Names of the blur mix's layers: its logit (``Dense``), the batch norm of the draft's edges that
#: feeds it (``lowpass_draft``) and the amount ``a`` ``(n, 1)`` it mixes in (bench/egan_mix.py reads
#: it; EGAN's ``c_lowpass_fit`` trains the first two by the extractor loss alone).
MIX_LOGIT, MIX_EDGES, MIX_AMOUNT = "lowpass_mix", "draft_edges", "lowpass_amount"


def lowpassed(image, sigma: float = LOWPASS_SIGMA, name: str | None = None):
    """``image`` ``(n, h, w, ch)`` float32 blurred by a fixed (untrained) Gaussian of ``sigma``
    pixels, edge padded: the same shape. Keras layers, so a model holding it saves and loads
    as plain Keras."""
    r = int(np.ceil(2 * sigma))
    taps = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    kernel = np.outer(taps, taps) / taps.sum() ** 2
    blur = layers.DepthwiseConv2D(2 * r + 1, padding="valid", use_bias=False, trainable=False,
                                  dtype="float32", name=name)
    blurred = blur(_border_padded(image, r))
    blur.set_weights([np.repeat(kernel[:, :, None, None], image.shape[-1], axis=2).astype(np.float32)])
    return blurred


def _edge_sizes(image):
    """``(n, 4)`` float32 of ``image`` ``(n, h, w, ch)`` in [-1, 1]: the mean m and the largest M of
    its luma gradient's magnitude (``numpy.gradient``'s differences: as the sharpness extractor
    measures edges) and (m, M) / |(m, M)|, a monotone function of sharpness' ratio m / M.
    Fixed (untrained) plain Keras layers: |g| is g . g / |g| (UnitNormalization), so the
    exported generator still loads without this project's code."""
    ch = image.shape[-1]
    to_luma = layers.Conv2D(1, 1, use_bias=False, trainable=False, dtype="float32")
    gray = to_luma(image)
    # luma of (image + 1) / 2: its gradient is half the weighted gradient of the image
    to_luma.set_weights([(0.5 * np.array(LUMA if ch == 3 else [1.0] * ch, np.float32))[None, None, :, None]])
    central = layers.Conv2D(2, 3, padding="valid", use_bias=False, trainable=False, dtype="float32")
    gradient = central(_border_padded(gray, extrapolate=True))
    kernel = np.zeros((3, 3, 1, 2), np.float32)
    kernel[2, 1, 0, 0], kernel[0, 1, 0, 0] = 0.5, -0.5  # down the rows
    kernel[1, 2, 0, 1], kernel[1, 0, 0, 1] = 0.5, -0.5  # across the columns
    central.set_weights([kernel])
    along = layers.Multiply(dtype="float32")([gradient, layers.UnitNormalization(dtype="float32")(gradient)])
    to_size = layers.Conv2D(1, 1, use_bias=False, trainable=False, dtype="float32")
    magnitude = to_size(along)
    to_size.set_weights([np.ones((1, 1, 2, 1), np.float32)])
    sizes = layers.Concatenate(dtype="float32")([layers.GlobalAveragePooling2D(dtype="float32")(magnitude),
                                                 layers.GlobalMaxPooling2D(dtype="float32")(magnitude)])
    return layers.Concatenate(dtype="float32")([sizes, layers.UnitNormalization(dtype="float32")(sizes)])


def _draft_edges(image, blurred):
    """``(n, 8)``: :func:`_edge_sizes` of the draft and of its full blur, batch-normalised (at the
    scale of c): what the mix needs to know to land a draft at a level, the draft's own edges
    and where a full blur would take them. On a trained ``c_lowpass`` generator a linear fit
    from them explains 85% of the faces' spread in sharpness at one c (97% at c = 0.1, 68% at
    c = 0.9), the mean and largest |blur - image| per channel 22-31% (bench/egan.py
    ``edges_explain``; docs/egan.md)."""
    stats = layers.Concatenate(dtype="float32")([_edge_sizes(image), _edge_sizes(blurred)])
    return layers.BatchNormalization(dtype="float32", name=MIX_EDGES)(stats)


def _lowpass_mixed(image, codes, sigma: float = LOWPASS_SIGMA, draft: bool = False):
    """``image`` ``(n, h, w, ch)`` in [-1, 1] mixed with its Gaussian-blurred copy,
    ``image + a (blur(image) - image)`` with ``a = sigmoid(LOWPASS_GAIN (W codes + b))`` ``(n, 1)``
    per image: a convex mix, so the output stays in [-1, 1]. The blur is fixed (not trained) and the mix
    starts near 0 (sigmoid(-3)), so training starts from the plain image. How spread-out the edges
    are then has a way in that does not pass through the convolutions' texture.

    With ``draft`` the mix is a feedback: its logit also sees :func:`_draft_edges`, the edges of
    the image G drew and of its blur (so G can blur a crisp draft more than a soft one,
    cancelling what z did to its sharpness), and ``a`` spans ``[-LOWPASS_SHARPEN, 1]`` (an
    unsharp mask below 0), starting at 0; the output is clipped to [-1, 1]."""
    blurred = lowpassed(image, sigma, name="lowpass")
    detail = layers.Subtract(dtype="float32")([blurred, image])
    seen = layers.Concatenate(dtype="float32")([codes, _draft_edges(image, blurred)]) if draft else codes
    low = LOWPASS_SHARPEN if draft else 0.0
    # the logit where a starts: sigmoid(-3) for the blur alone, a = 0 for the feedback's range
    start = keras.initializers.Constant((np.log(low) if draft else -3.0) / LOWPASS_GAIN)
    logit = layers.Dense(1, kernel_initializer="zeros", bias_initializer=start, dtype="float32",
                         name=MIX_LOGIT)(seen)
    a = layers.Activation("sigmoid", dtype="float32", name=None if draft else MIX_AMOUNT)(
        layers.Rescaling(LOWPASS_GAIN, dtype="float32")(logit))
    if draft:
        a = layers.Rescaling(1.0 + low, offset=-low, dtype="float32", name=MIX_AMOUNT)(a)
    mixed = layers.Multiply(dtype="float32")([layers.Reshape((1, 1, 1), dtype="float32")(a), detail])
    out = layers.Add(dtype="float32", name="lowpass_mixed")([image, mixed])
    if draft:
        # an unsharp mask can overshoot [-1, 1]: clip, as plain layers (shift, ReLU capped at 2, shift back)
        out = layers.Rescaling(1.0, offset=1.0, dtype="float32")(out)
        out = layers.Rescaling(1.0, offset=-1.0, dtype="float32", name="clipped")(
            layers.ReLU(max_value=2.0, dtype="float32")(out))
    return out


def build_generator(resolution: int = 64, channels: int = 3, z_dim: int = Z_DIM,
                    base_width: int = 128, kernel_size: int = 4, name: str = "generator",
                    fast: bool = True, extra_inputs: dict[str, int] | None = None,
                    extra_ways=()) -> keras.Model:
    """G: ``(n, z_dim) float32`` (plus ``extra_inputs``, see :func:`generator_inputs`) ->
    ``(n, resolution, resolution, channels)`` in [-1, 1]. ``extra_ways`` (names of
    :data:`EXTRA_WAYS`) say how the extra inputs also enter: ``every_block``, every upsampling
    convolution as constant feature maps (so the late layers, which draw texture, see them
    directly, not only through the projection); ``modulation``, scaling and shifting every
    block's normalised features (:func:`_modulated`); ``lowpass``, how much of a blurred copy
    of the image is mixed into the output (:func:`_lowpass_mixed`); ``lowpass_draft``, that mix
    as a feedback on the drawn image; ``skip_projection``, not through the first projection (z's
    alone then)."""
    ways = set(extra_ways)
    unknown = ways - set(EXTRA_WAYS)
    if unknown:
        raise ValueError(f"extra_ways {sorted(unknown)}: choose from {', '.join(EXTRA_WAYS)}")
    if "skip_projection" in ways and not ways - {"skip_projection"}:
        raise ValueError("extra_ways skip_projection: name another way for the extra inputs to enter by")
    start, chans = widths(resolution, base_width)
    conv_t = MatmulConv2DTranspose if fast else layers.Conv2DTranspose
    z, x = generator_inputs(z_dim, extra_inputs)
    codes = None
    if ways and extra_inputs:
        extra = [z[name] for name in extra_inputs]
        codes = extra[0] if len(extra) == 1 else layers.Concatenate(name="codes")(extra)
    if "skip_projection" in ways and codes is not None:
        x = z["z"]
    x = layers.Dense(start * start * chans[0], use_bias=False, kernel_initializer=_init(), name="project")(x)
    x = layers.Reshape((start, start, chans[0]))(x)
    modulate = (lambda h: _modulated(h, codes)) if "modulation" in ways and codes is not None else (lambda h: h)
    every = (lambda h: _with_codes(h, codes)) if "every_block" in ways and codes is not None else (lambda h: h)
    x = layers.ReLU()(modulate(batch_norm(fast)(x)))
    for w in chans[1:]:
        x = every(x)
        x = conv_t(w, kernel_size, 2, "same", use_bias=False, kernel_initializer=_init())(x)
        x = layers.ReLU()(modulate(batch_norm(fast)(x)))
    x = every(x)
    x = conv_t(channels, kernel_size, 2, "same", kernel_initializer=_init(), name="to_image")(x)
    # float32 output even under a mixed-precision policy: tanh saturates badly in bf16.
    out = layers.Activation("tanh", dtype="float32", name="tanh")(x)
    if ways & {"lowpass", "lowpass_draft"} and codes is not None:
        out = _lowpass_mixed(out, codes, draft="lowpass_draft" in ways)
    return keras.Model(z, out, name=name)


def discriminator_body(resolution: int = 64, channels: int = 3, base_width: int = 128, kernel_size: int = 4,
                       fast: bool = True, norm: str = "batch"):
    """``(image input, features)``: the DCGAN discriminator up to its last feature map,
    flattened to ``(n, d)``. ``norm`` is ``batch`` (the paper), ``layer`` (per example over
    the whole feature map, as the WGAN-GP reference critic) or ``none``; never on the input
    layer."""
    check_norm(norm)
    _, chans = widths(resolution, base_width)
    conv = MatmulConv2D if fast else layers.Conv2D
    img = keras.Input((resolution, resolution, channels), name="image")
    x = img
    for i, w in enumerate(reversed(chans)):
        # a bias only where no normalisation follows (its shift would cancel it)
        x = conv(w, kernel_size, 2, "same", use_bias=i == 0 or norm == "none", kernel_initializer=_init())(x)
        if i > 0:  # no normalisation on the input layer
            x = apply_norm(x, norm, fast, axis=[1, 2, 3])
        x = layers.LeakyReLU(0.2)(x)
    return img, layers.Flatten()(x)


def build_discriminator(resolution: int = 64, channels: int = 3, base_width: int = 128,
                        kernel_size: int = 4, name: str = "discriminator", fast: bool = True,
                        heads: dict[str, int] | None = None, hidden: dict | None = None,
                        norm: str = "batch", condition: dict[str, int] | None = None) -> keras.Model:
    """D: ``(n, resolution, resolution, channels)`` in [-1, 1] -> ``(n, 1)`` float32 logits,
    or ``{head: (n, size)}`` with ``heads``; with ``condition`` it also takes those inputs
    (a projection discriminator; model/nets/heads.py)."""
    img, x = discriminator_body(resolution, channels, base_width, kernel_size, fast, norm)
    return discriminator_model(img, x, heads, hidden, norm, fast, _init, condition, name)
