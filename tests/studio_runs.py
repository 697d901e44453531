"""Tiny exported run folders for the studio tests: real Keras generators and model cards.

``make_run(folder)`` saves an untrained DCGAN generator (base width 8) with its card;
``with_c=True`` makes a two-input functional generator (``z`` and an attribute ``c``)
instead. ``with_directions=True`` fits real directions for it: the attribute scored is
the mean brightness of the generated face (a property every image has), plus one
whose score is noise and must be dropped. ``completion_run(root, version)`` writes a tiny
(untrained, width 4) completion network with its card for records ``version``.
"""
from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from model.card import InputSpec, ModelCard, noise_spec, write_card

Z = 100


def brightness(images: np.ndarray) -> np.ndarray:
    """``(n, 1)``: mean Rec. 709 luma in [0, 1]."""
    luma = images[..., :3].astype(np.float32) @ np.float32([0.2126, 0.7152, 0.0722])
    return (luma.mean(axis=(1, 2)) / 255.0)[:, None]


def _generator(with_c: bool, seed: int):
    import keras

    from model.nets.dcgan import build_generator

    keras.utils.set_random_seed(seed)
    if with_c:
        z = keras.Input((Z,), name="z")
        c = keras.Input((2,), name="c")
        # c enters through its own projection so that changing it changes every pixel
        x = keras.layers.Concatenate()([z, keras.layers.Dense(16, activation="relu")(c)])
        x = keras.layers.Dense(4 * 4 * 32, activation="relu")(x)
        x = keras.layers.Reshape((4, 4, 32))(x)
        for width in (16, 8, 8):
            x = keras.layers.Conv2DTranspose(width, 4, 2, "same", activation="relu")(x)
        out = keras.layers.Conv2DTranspose(3, 4, 2, "same", activation="tanh", name="to_image")(x)
        generator = keras.Model({"z": z, "c": c}, out, name="generator")
    else:
        generator = build_generator(64, 3, Z, base_width=8, fast=False)
    # DCGAN's N(0, 0.02) start draws one flat gray face for every z; He-scaled weights
    # give images (textures) that change with z and c, as a trained generator's do.
    rng = np.random.default_rng(seed)
    for layer in generator.layers:
        if hasattr(layer, "kernel"):
            shape = layer.kernel.shape
            fan_in = np.prod(shape[:-2]) * shape[-1] if isinstance(layer, keras.layers.Conv2DTranspose) \
                else np.prod(shape[:-1])
            gain = 12.0 if layer.name == "to_image" else 1.0  # contrast: pre-tanh values of order 1
            layer.kernel.assign(rng.normal(0, gain * np.sqrt(2.0 / fan_in), shape).astype(np.float32))
    return generator


def make_run(folder: Path, with_c: bool = False, with_directions: bool = False, seed: int = 0,
             dataset: str = "celeba", steps: int = 10) -> Path:
    """Write ``generator.keras`` + ``model_card.json`` (+ ``directions.json``) into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    generator = _generator(with_c, seed)
    generator.save(folder / "generator.keras")
    inputs = [noise_spec(Z)]
    if with_c:
        inputs.append(InputSpec("c", "attribute", 2, range=(0.0, 2.0), labels=("brightness", "sharpness")))
    card = ModelCard(variant="egan" if with_c else "dcgan", resolution=64, channels=3, inputs=inputs,
                     dataset={"name": dataset, "version": "v-test"}, steps=steps)
    write_card(folder, card)
    if with_directions:
        from model.apps.directions import fit_directions, write_directions

        rng = np.random.default_rng(seed)

        def score(images):
            return np.hstack([brightness(images), rng.uniform(size=(len(images), 1))])

        write_directions(folder, fit_directions(generator, card, score, ["Brightness", "Noise"], n=1000, seed=seed))
    return folder


def completion_run(root: Path, version: str, network: bool = True, size: int = 64, dataset: str = "faces") -> Path:
    """A completion run folder ``root/completion/<dataset>/<version>`` (model/apps/completion_net.py finds
    it from a generator run below ``root`` trained on records ``version``), with or without its network."""
    import json
    from dataclasses import asdict

    from model.config import CompletionConfig
    from model.nets.completion import build_completion_network
    from model.variants.completion import CARD_FILE, CARD_FORMAT, NETWORK_FILE

    folder = Path(root) / "completion" / dataset / version
    folder.mkdir(parents=True)
    card = {"format": CARD_FORMAT, "kind": "completion", "resolution": size, "channels": 3,
            "dataset": {"name": dataset, "version": version}, "steps": 1, "files": {"keras": NETWORK_FILE},
            "training": asdict(CompletionConfig(width=4, resolution=size))}
    (folder / CARD_FILE).write_text(json.dumps(card))
    if network:
        build_completion_network(size, 3, 4).save(folder / NETWORK_FILE)
    return folder


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_studio(zygote, run: Path, root: Path, port: int, log: Path, env: dict | None = None):
    """``python -m studio --model run --models-root root --port port`` forked from the worker's
    zygote (tests/script_runner.py; the real start-up is tests/test_console.py's), its output in
    ``log``, extra environment ``env``; returned once it answers ``/api/health`` (its
    :class:`script_runner.Child`)."""
    import os

    import requests

    root_dir = Path(__file__).resolve().parents[1]
    proc = zygote.start(["-m", "studio", "--model", run, "--models-root", root, "--port", port], root_dir,
                        {**os.environ, "PYTHONPATH": str(root_dir), **(env or {})}, log)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the studio exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            if requests.get(f"http://127.0.0.1:{port}/api/health", timeout=1, proxies={"http": None}).ok:
                return proc
        except requests.ConnectionError:
            time.sleep(0.3)
    proc.kill()
    proc.wait()
    raise RuntimeError(f"the studio did not answer within 180 s: {log.read_text()[-2000:]}")


@contextmanager
def serving(app):
    """``app`` (ASGI) in a real uvicorn server on a free loopback port, in this process:
    yields ``(url, port, session)``, the session ignoring proxy settings; stopped on exit."""
    import requests
    import uvicorn

    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    for _ in range(200):
        if srv.started:
            break
        time.sleep(0.05)
    session = requests.Session()
    session.trust_env = False  # loopback only, whatever the proxy settings
    try:
        yield f"http://127.0.0.1:{port}", port, session
    finally:
        srv.should_exit = True
        thread.join(timeout=10)
