"""The FID Inception-v3 TorchScript network, run faster on a CPU with the same weights.

``default_1.pt`` (model/eval/metrics.py) is a TorchScript module whose every convolution
layer (``Conv2dLayer``) is a convolution without bias, a batch norm (eps 1e-3) and a
ReLU, each a separate pass over memory, on NCHW tensors that oneDNN reorders to its
own layout and back around every convolution, and whose blocks make their outputs
NCHW-contiguous again before concatenating them. :class:`FusedInception` walks the
same module tree and runs each ``Conv2dLayer`` as ONE oneDNN convolution with the
batch norm folded into its weights and bias (folded in float32, then cast) and the
ReLU fused, on channels-last tensors throughout, in float32 or bfloat16. Inside each
Inception block the 1x1 convolutions that read the block input run as one wider
convolution, and an average pool followed by a 1x1 convolution runs after it (the two
commute), over the convolution's few channels. The pools are the module's own; the last
one runs in float32, so the 2048 features are averaged at float32 precision whatever the
compute type. In bfloat16 the first :data:`FLOAT32_LAYERS` layer stays float32: the
rounding of the first layers is what the features carry furthest, and that noise lowers
FID (it adds the same spread to both sets). On 200 + 200 CelebA faces the FID moved by
0.37% with the first two layers in float32, 0.62% with the first one, 0.96% with none.

The float32 features agree with the module's to 2e-6 (relative). bench/fid_speed.py
measures rates and FID on real faces (docs/evaluation.md, "FID speed").

Only module trees made of the kinds in :data:`KINDS` are accepted (``fusable``); any
other TorchScript network runs as it is. torch is imported by the caller.
"""
from __future__ import annotations

#: Module kinds (``original_name``) of the FID Inception-v3 file; the blocks concatenate
#: their children's outputs in declaration order, except ``InceptionE`` (see ``_block_e``).
KINDS = frozenset({"WrapNet", "InceptionV3", "Sequential", "Conv2dLayer", "MaxPool2d", "AvgPool2d",
                   "InceptionA", "InceptionB", "InceptionC", "InceptionD", "InceptionE"})
#: ``Conv2dLayer``'s batch-norm epsilon (its TorchScript code: ``batch_norm(..., 0.001)``).
BN_EPS = 1e-3
#: Output features of the network.
FEATURES = 2048
#: Top-level layers kept in float32 when the rest runs in bfloat16: the first 3x3
#: convolution (0.3% of the FLOPs; its 3 input channels gain nothing from bfloat16).
#: Two (the second one too, 3.5% of the FLOPs) ran at 29.0 images/s against 30.7.
FLOAT32_LAYERS = 1


def fusable(script) -> bool:
    """Whether ``script`` (a loaded TorchScript module) is the FID Inception-v3 tree that
    :class:`FusedInception` knows how to run."""
    try:
        kinds = {m.original_name for _, m in script.named_modules()}
        return kinds <= KINDS and script.net.layers.original_name == "Sequential"
    except AttributeError:
        return False


class FusedInception:
    """``script`` (the FID Inception-v3 TorchScript module) as fused channels-last
    convolutions in ``dtype`` (``torch.float32`` or ``torch.bfloat16``).

    Called with an ``(n, 3, 299, 299)`` float32 tensor in [-1, 1) (any memory format;
    an NHWC array's ``permute(0, 3, 1, 2)`` view is already channels-last) it returns
    the ``(n, 2048)`` float32 features."""

    def __init__(self, script, dtype, float32_layers: int = 0):
        import torch

        self.torch, self.dtype, self.layers = torch, dtype, script.net.layers
        self.float32_layers = float32_layers
        fused = getattr(torch.ops.mkldnn, "_convolution_pointwise", None)
        self._fused = fused if fused is not None and torch.backends.mkldnn.is_available() else None
        self._convs = {}
        first = {id(m) for child in list(self.layers.children())[:float32_layers] for _, m in child.named_modules()}
        with torch.no_grad():
            for _, mod in script.named_modules():
                if mod.original_name != "Conv2dLayer":
                    continue
                scale = 1.0 / torch.sqrt(mod.var.float() + BN_EPS)
                weight = mod.weight.float() * scale[:, None, None, None]
                bias = mod.beta.float() - mod.mean.float() * scale
                kind = torch.float32 if id(mod) in first else dtype
                self._convs[id(mod)] = (weight.to(kind).contiguous(memory_format=torch.channels_last),
                                        bias.to(kind), _pair(mod.padding), _pair(mod.stride))
        # Per block: its 1x1 head convolutions of the block input merged into one (one pass over
        # the input, one wider matrix product), and the average pools that may run after their
        # 1x1 convolution instead of before (_pool_then_conv). The features stay the same up to
        # round-off (tests/test_metrics.py).
        self._merged, self._swapped = {}, set()
        if self._fused is None:
            return
        for _, block in script.named_modules():
            if not block.original_name.startswith("Inception"):
                continue
            branches = _branches(block)
            heads = [ops[0] for ops in branches if self._pointwise(ops[0])]
            self._swapped |= {id(ops[0]) for ops in branches
                              if ops[0].original_name == "AvgPool2d" and len(ops) > 1 and self._pointwise(ops[1])}
            if len(heads) < 2:
                continue
            spans, start = {}, 0
            for head in heads:
                width = self._convs[id(head)][0].shape[0]
                spans[id(head)], start = (start, start + width), start + width
            self._merged[id(block)] = (
                torch.cat([self._convs[id(h)][0] for h in heads]).contiguous(memory_format=torch.channels_last),
                torch.cat([self._convs[id(h)][1] for h in heads]), spans)

    @property
    def arithmetic(self) -> str:
        """What decides the features' rounding, for cache keys and reports (the feature
        network's name): bfloat16 features cached under another arithmetic are not reused."""
        merged = "merged heads" if self._merged else "unmerged"
        if self.dtype == self.torch.float32:
            return merged
        return f"{merged}, {self.float32_layers} float32 layer{'s' if self.float32_layers != 1 else ''}"

    def _pointwise(self, mod) -> bool:
        """Whether ``mod`` is a 1x1, stride-1, unpadded ``Conv2dLayer``."""
        if mod.original_name != "Conv2dLayer":
            return False
        weight, _, padding, stride = self._convs[id(mod)]
        return tuple(weight.shape[2:]) == (1, 1) and padding == [0, 0] and stride == [1, 1]

    def conv(self, mod, x):
        """One ``Conv2dLayer``: relu(conv(x, W') + b') with the batch norm folded into W', b'."""
        weight, bias, padding, stride = self._convs[id(mod)]
        if self._fused is not None:
            return self._fused(x, weight, bias, padding, stride, [1, 1], 1, "relu", [], "")
        out = self.torch.nn.functional.conv2d(x, weight, bias, stride, padding)
        return out.relu_()

    def run(self, mod, x):
        kind = mod.original_name
        if kind == "Conv2dLayer":
            return self.conv(mod, x)
        if kind in ("MaxPool2d", "AvgPool2d"):
            return mod(x)
        if kind == "Sequential":
            for child in mod.children():
                x = self.run(child, x)
            return x
        if kind == "InceptionE":
            return self._block_e(mod, x)
        if kind in ("InceptionA", "InceptionB", "InceptionC", "InceptionD"):
            return self._block(mod, x)
        raise ValueError(f"FusedInception: unexpected module kind {kind!r}")

    def _heads(self, block, x):
        """The block's 1x1 head convolutions of ``x`` as ONE convolution: {id(head): output}."""
        heads = self._merged.get(id(block))
        if heads is None:
            return {}
        weight, bias, spans = heads
        out = self._fused(x, weight, bias, [0, 0], [1, 1], [1, 1], 1, "relu", [], "")
        return {key: out[:, a:b] for key, (a, b) in spans.items()}  # channel slices: views, no copy

    def _pool_then_conv(self, pool, mod, x):
        """``conv(pool(x))`` for an average pool as ``pool(x W) + b``: the pool and the 1x1
        convolution are both linear and per pixel / per channel, so they commute, and the pool
        then runs over the convolution's few channels instead of the block's many."""
        weight, bias, _, _ = self._convs[id(mod)]
        out = pool(self._fused(x, weight, None, [0, 0], [1, 1], [1, 1], 1, "none", [], ""))
        return out.add_(bias.view(1, -1, 1, 1)).relu_()

    def _branch(self, ops, x, heads):
        first, rest = ops[0], ops[1:]
        if id(first) in heads:
            x = heads[id(first)]
            if rest:
                x = x.contiguous(memory_format=self.torch.channels_last)
        elif rest and id(first) in self._swapped:
            return self._pool_then_conv(first, rest[0], x)
        else:
            x = self.run(first, x)
        for op in rest:
            x = self.run(op, x)
        return x

    def _block(self, mod, x):
        heads = self._heads(mod, x)
        return self.torch.cat([self._branch(ops, x, heads) for ops in _branches(mod)], 1)

    def _block_e(self, mod, x):
        # InceptionE's TorchScript forward: two towers split into 1x3 and 3x1 convolutions.
        heads = self._heads(mod, x)
        cl = self.torch.channels_last
        a = self._branch([mod.tower_conv], x, heads).contiguous(memory_format=cl)
        b = self._branch([mod.tower_1_conv, mod.tower_1_conv_1], x, heads)
        return self.torch.cat([self._branch([mod.conv], x, heads),
                               self.conv(mod.tower_mixed_conv, a), self.conv(mod.tower_mixed_conv_1, a),
                               self.conv(mod.tower_1_mixed_conv, b), self.conv(mod.tower_1_mixed_conv_1, b),
                               self._branch([mod.tower_2_pool, mod.tower_2_conv], x, heads)], 1)

    def __call__(self, x):
        torch = self.torch
        x = x.float().contiguous(memory_format=torch.channels_last)
        children = list(self.layers.children())
        for k, child in enumerate(children[:-1]):
            if k == self.float32_layers:
                x = x.to(self.dtype)
            x = self.run(child, x)
        # The final average pool in float32: the features keep float32 precision.
        return self.run(children[-1], x.float()).reshape(-1, FEATURES)


def _pair(value) -> list[int]:
    return [int(value), int(value)] if isinstance(value, int) else [int(v) for v in value]


def _branches(block) -> list[list]:
    """A block's branches as lists of modules, each starting with the one that reads the
    block input, in concatenation order (``InceptionE``: its own forward, see ``_block_e``;
    only the branches' first modules are read from its list)."""
    if block.original_name == "InceptionE":
        return [[block.conv], [block.tower_conv], [block.tower_1_conv], [block.tower_2_pool, block.tower_2_conv]]
    return [list(child.children()) if child.original_name == "Sequential" else [child] for child in block.children()]
