"""The peer of bench/train_throughput.py: the same 64x64 DCGAN training step in PyTorch eager.

    python bench/torch_peer.py [--batch 64] [--base-width 128] [--steps 6] [--repeats 3]

The networks are model/nets/dcgan.py's at the same sizes (G: dense to 4x4x(8w), transposed
4x4 stride-2 convolutions, batch norm, ReLU, tanh; D: 4x4 stride-2 convolutions, batch norm
but on the input layer, LeakyReLU(0.2), a dense logit), the step is the same (a D update on
a real and a fake batch, then a G update reusing the fake, Adam 2e-4 / 0.5, the logistic
loss), in float32 with torch's intra-op threads = the cores the process may use. Prints one
JSON line: images per second (best of ``--repeats`` blocks of ``--steps`` steps) and the
torch version and threads; train_throughput.py imports :func:`block` for its ``torch_*``
figures (same process, blocks alternating with TensorFlow's).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def build(resolution: int = 64, channels: int = 3, base_width: int = 128, z_dim: int = 100):
    """``(G, D)`` torch modules of model/nets/dcgan.py's shapes (NCHW)."""
    from torch import nn

    from model.nets.dcgan import widths

    start, chans = widths(resolution, base_width)

    class Generator(nn.Module):
        def __init__(self):
            super().__init__()
            self.project = nn.Linear(z_dim, start * start * chans[0], bias=False)
            self.bn0 = nn.BatchNorm2d(chans[0])
            blocks = []
            for a, b in zip(chans, chans[1:]):
                blocks += [nn.ConvTranspose2d(a, b, 4, 2, 1, bias=False), nn.BatchNorm2d(b), nn.ReLU()]
            blocks += [nn.ConvTranspose2d(chans[-1], channels, 4, 2, 1), nn.Tanh()]
            self.blocks = nn.Sequential(*blocks)

        def forward(self, z):
            x = self.project(z).view(-1, chans[0], start, start)
            return self.blocks(nn.functional.relu(self.bn0(x)))

    layers = []
    c_in = channels
    for i, w in enumerate(reversed(chans)):
        layers.append(nn.Conv2d(c_in, w, 4, 2, 1, bias=i == 0))
        if i > 0:
            layers.append(nn.BatchNorm2d(w))
        layers.append(nn.LeakyReLU(0.2))
        c_in = w
    layers += [nn.Flatten(), nn.Linear(c_in * start * start, 1)]
    return Generator(), nn.Sequential(*layers)


def trainer(batch: int, resolution: int = 64, base_width: int = 128, z_dim: int = 100):
    """A callable doing one DCGAN training step on a fixed real batch (float32, eager)."""
    import torch

    torch.manual_seed(0)
    g, d = build(resolution, 3, base_width, z_dim)
    opt_g = torch.optim.Adam(g.parameters(), 2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), 2e-4, betas=(0.5, 0.999))
    loss = torch.nn.BCEWithLogitsLoss()
    real = torch.rand(batch, 3, resolution, resolution) * 2 - 1
    ones, zeros = torch.ones(batch, 1), torch.zeros(batch, 1)

    def step() -> float:
        fake = g(torch.rand(batch, z_dim) * 2 - 1)
        opt_d.zero_grad(set_to_none=True)
        d_loss = loss(d(real), ones) + loss(d(fake.detach()), zeros)
        d_loss.backward()
        opt_d.step()
        opt_g.zero_grad(set_to_none=True)
        g_loss = loss(d(fake), ones)
        g_loss.backward()
        opt_g.step()
        return d_loss.item()
    return step


def block(batch: int, steps: int, resolution: int = 64, base_width: int = 128):
    """A warmed-up callable running ``steps`` torch training steps (torch's intra-op threads
    set to the cores this process may use), for callers that alternate it with their own
    timed blocks."""
    import torch

    from pipeline.align.engine import usable_cores

    torch.set_num_threads(usable_cores())
    step = trainer(batch, resolution, base_width)
    for _ in range(2):  # warm up (oneDNN primitive caches)
        step()

    def run():
        for _ in range(steps):
            step()
    return run


def images_per_s(batch: int, steps: int, repeats: int, resolution: int = 64, base_width: int = 128) -> float:
    """Best of ``repeats`` blocks of ``steps`` torch steps, in images per second."""
    run = block(batch, steps, resolution, base_width)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return batch * steps / best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--base-width", type=int, default=128)
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    import torch

    ips = images_per_s(args.batch, args.steps, args.repeats, args.resolution, args.base_width)
    print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(), "batch": args.batch,
                      "base_width": args.base_width, "images_per_s_fp32": round(ips, 2),
                      "load_avg": round(os.getloadavg()[0], 2)}))


if __name__ == "__main__":
    main()
