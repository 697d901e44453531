"""The studio's HTTP API against a real uvicorn server on 127.0.0.1, serving real
Keras generators (tests/studio_runs.py), and its command line."""
from __future__ import annotations

import io
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
from PIL import Image
from studio_runs import free_port, make_run, serving  # noqa: F401  (free_port: the browser test's)

NO_PROXY = {"http": None, "https": None}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {"root": root,
            "dcgan": make_run(root / "celeba" / "dcgan-a", with_directions=True),
            "egan": make_run(root / "celeba" / "egan-b", with_c=True, seed=1)}


@pytest.fixture(scope="module")
def server(runs):
    """The studio app in a real uvicorn server on a free loopback port (in this process)."""
    from studio.app import create_app
    from studio.models import ModelRegistry

    registry = ModelRegistry(runs["root"], runs["dcgan"])
    registry.get(None)
    with serving(create_app(registry)) as (url, _, session):
        yield {"url": url, "registry": registry, "http": session}
    registry.close()


def post(server, path, body=None, **kwargs):
    return server["http"].post(server["url"] + path, json=body, timeout=30, **kwargs)


def get(server, path):
    return server["http"].get(server["url"] + path, timeout=30)


def image(response) -> np.ndarray:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    return np.asarray(Image.open(io.BytesIO(response.content)))


def data_image(url: str) -> np.ndarray:
    import base64
    assert url.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))


def z_of(seed: int, size: int = 100) -> list[float]:
    return np.random.default_rng(seed).uniform(-1, 1, size).round(6).tolist()


# --- listing and cards -------------------------------------------------------------------

def test_models_lists_every_run_with_its_card(server):
    listing = get(server, "/api/models").json()
    assert listing["default"] == "celeba/dcgan-a"
    by_id = {m["id"]: m for m in listing["models"]}
    assert set(by_id) == {"celeba/dcgan-a", "celeba/egan-b"}
    assert by_id["celeba/dcgan-a"] == {**by_id["celeba/dcgan-a"], "variant": "dcgan", "dataset": "celeba",
                                       "steps": 10, "resolution": 64, "z_size": 100, "inputs": [],
                                       "fid": None, "directions": True}
    assert by_id["celeba/egan-b"]["inputs"] == ["c"] and by_id["celeba/egan-b"]["directions"] is False


def test_model_card_directions_features_and_limits(server):
    from studio import features

    info = get(server, "/api/model").json()
    assert info["id"] == "celeba/dcgan-a" and info["card"]["variant"] == "dcgan"
    assert info["z"] == {"size": 100, "distribution": "uniform", "range": [-1.0, 1.0],
                         "gray": {"black": -1.0, "white": 1.0, "mapping": "linear"}}
    assert [d["name"] for d in info["directions"]] == ["Brightness"]
    assert info["directions"][0]["accuracy"] > info["directions"][0]["chance"]
    assert [d["name"] for d in info["dropped"]] == ["Noise"] and "chance" in info["dropped"][0]["reason"]
    assert info["features"] == {"align": True, "project": features.optional(*features.PROJECT) is not None,
                                "complete": features.optional(*features.COMPLETE) is not None}
    assert info["limits"]["max_json_bytes"] == 65536
    egan = get(server, "/api/model?id=celeba/egan-b").json()
    assert egan["inputs"] == [{"name": "c", "kind": "attribute", "size": 2, "distribution": "bernoulli",
                               "range": [0.0, 2.0], "labels": ["brightness", "sharpness"]}]
    assert egan["directions"] == [] and egan["dropped"] == []


def test_optional_features_are_detected_by_module_and_function():
    from studio.features import optional

    assert optional("model.train.sampling", "slerp") is not None
    assert optional("model.train.sampling", "no_such_function") is None
    assert optional("model.no_such_module", "project_faces") is None
    assert optional("no_such_package.project", "project_faces") is None


def test_page_vue_and_static_files_are_served(server):
    page = get(server, "/")
    assert page.status_code == 200 and '<div id="app">' in page.text and "/vendor/vue.js" in page.text
    vue = get(server, "/vendor/vue.js")
    assert vue.status_code == 200 and "createApp" in vue.text and "javascript" in vue.headers["content-type"]
    assert get(server, "/static/app.js").status_code == 200
    assert get(server, "/api/health").json() == {"ok": True}
    assert get(server, "/api/nothing-here").json() == {"error": "Not Found"}


# --- generation --------------------------------------------------------------------------

def test_generate_is_deterministic_and_follows_z(server, runs):
    from model.card import load_generator
    from model.train.sampling import generate

    a = image(post(server, "/api/generate", {"z": z_of(1)}))
    assert a.shape == (64, 64, 3)
    assert np.array_equal(a, image(post(server, "/api/generate", {"z": z_of(1)})))
    assert not np.array_equal(a, image(post(server, "/api/generate", {"z": z_of(2)})))
    # the served pixels are the generator's through plain Keras (float32 serving: the
    # matmul-route layers may round one level differently)
    _, generator = load_generator(runs["dcgan"])
    assert np.abs(a - generate(generator, np.float32([z_of(1)]))[0].astype(int)).max() <= 1
    big = image(post(server, "/api/generate", {"z": z_of(1), "scale": 4}))
    assert big.shape == (256, 256, 3) and np.array_equal(big[::4, ::4], a)


@pytest.mark.parametrize("with_c", [False, True])
def test_the_bfloat16_serving_copy_draws_the_same_faces(runs, with_c):
    from model.card import load_generator, sample_inputs
    from model.train.sampling import generate
    from model.train.serving import compile_generator

    card, generator = load_generator(runs["egan" if with_c else "dcgan"])
    inputs = sample_inputs(card, 16, seed=3)
    reference = generate(generator, inputs).astype(int)
    # float32: the matmul-route layers round differently, by at most one level
    assert np.abs(compile_generator(generator, "float32")(inputs) - reference).max() <= 1
    diff = np.abs(compile_generator(generator, "mixed_bfloat16")(inputs) - reference)
    assert diff.max() <= 8 and diff.mean() < 0.5, (diff.max(), diff.mean())


def test_out_of_range_z_is_clipped_and_counted(server):
    z = z_of(3)
    z[:5] = [5.0, -7.0, 1.5, 2.0, -1.0001]
    r = post(server, "/api/generate", {"z": z})
    assert r.headers["X-Clipped"] == "5"
    assert np.array_equal(image(r), image(post(server, "/api/generate", {"z": np.clip(z, -1, 1).tolist()})))


def test_c_inputs_change_the_face_and_are_checked(server):
    body = {"model": "celeba/egan-b", "z": z_of(4)}
    low = image(post(server, "/api/generate", {**body, "c": {"c": [0.0, 0.0]}}))
    high = image(post(server, "/api/generate", {**body, "c": {"c": [2.0, 2.0]}}))
    assert not np.array_equal(low, high)
    # c defaults to the middle of its range
    assert np.array_equal(image(post(server, "/api/generate", body)),
                          image(post(server, "/api/generate", {**body, "c": {"c": [1.0, 1.0]}})))
    r = post(server, "/api/generate", {**body, "c": {"c": [1.0]}})
    assert r.status_code == 422 and "c.c has 1 values; it takes 2" in r.json()["error"]
    r = post(server, "/api/generate", {**body, "c": {"label": [1.0, 0.0]}})
    assert r.status_code == 422 and "unknown input(s) ['label']" in r.json()["error"]
    r = post(server, "/api/generate", {"z": z_of(4), "c": {"c": [1.0, 1.0]}})
    assert r.status_code == 422 and "z only" in r.json()["error"]


def test_direction_offsets_move_the_attribute(server):
    from studio_runs import brightness

    z = z_of(5)
    mean = {s: brightness(image(post(server, "/api/generate", {"z": z, "offsets": {"Brightness": s}}))[None])[0, 0]
            for s in (-3.0, 0.0, 3.0)}
    assert mean[-3.0] < mean[0.0] < mean[3.0], mean
    # offsets beyond the range are clipped to it; a lock on the only direction keeps its own move
    same = image(post(server, "/api/generate", {"z": z, "offsets": {"Brightness": 3.0}}))
    assert np.array_equal(same, image(post(server, "/api/generate", {"z": z, "offsets": {"Brightness": 30.0}})))
    locked = post(server, "/api/generate", {"z": z, "offsets": {"Brightness": 3.0}, "locks": ["Brightness"]})
    assert np.array_equal(same, image(locked))
    for bad in ({"offsets": {"Smiling": 1.0}}, {"locks": ["Smiling"]}):
        r = post(server, "/api/generate", {"z": z, **bad})
        assert r.status_code == 422 and "unknown direction(s) ['Smiling']" in r.json()["error"]


BAD_BODIES = [
    ({"z": [0.1] * 99}, "z has 99 values; model 'celeba/dcgan-a' takes 100"),
    ({"z": [0.1] * 101}, "z has 101 values"),
    ({"z": []}, "z has 0 values"),
    ('{"z": [NaN' + ", 0.1" * 99 + "]}", "z[0]: Input should be a finite number"),
    ('{"z": [0.1, Infinity' + ", 0.1" * 98 + "]}", "z[1]: Input should be a finite number"),
    ('{"z": [0.1, -Infinity]}', "z[1]: Input should be a finite number"),
    ('{"z": [1e999]}', "z[0]: Input should be a finite number"),
    ({"z": "0.1, 0.2"}, "z: Input should be a valid list"),
    ({"z": ["0.5"] + [0.1] * 99}, 'z[0]: Input should be a valid number (got "0.5")'),
    ({"z": [True] + [0.1] * 99}, "z[0]: Input should be a valid number (got true)"),
    ({"z": [[0.1, 0.2]] + [0.1] * 99}, "z[0]: Input should be a valid number (got list)"),
    ({"z": [{"x": 1}] + [0.1] * 99}, "z[0]: Input should be a valid number (got dict)"),
    ({"z": None}, "z: Input should be a valid list"),
    ({}, "z: Field required"),
    ({"z": [0.1] * 100, "zz": 1}, "zz: Extra inputs are not permitted"),
    ({"z": [0.1] * 100, "scale": 9}, "scale: Input should be less than or equal to 8"),
    ({"z": [0.1] * 100, "scale": "2"}, "scale: Input should be a valid integer"),
    ({"z": [0.1] * 100, "offsets": {"Brightness": "up"}}, "offsets.Brightness: Input should be a valid number"),
    ({"z": [0.1] * 100, "locks": "Brightness"}, "locks: Input should be a valid list"),
    ({"z": [0.1] * 5000}, "z: List should have at most 4096 items"),
    ([0.1] * 100, "body: Input should be a valid dictionary"),
    ('{"z": [0.1,', "the body is not valid JSON"),
    ("", "the body must be a JSON object"),
]


@pytest.mark.parametrize("body,message", BAD_BODIES, ids=range(len(BAD_BODIES)))
def test_bad_generate_requests_are_422_with_a_clear_message(server, body, message):
    if isinstance(body, str):
        r = server["http"].post(server["url"] + "/api/generate", data=body,
                                headers={"Content-Type": "application/json"}, timeout=30)
    else:
        r = post(server, "/api/generate", body)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/json"
    assert message in r.json()["error"], r.json()


def test_huge_bodies_are_413_whether_announced_or_streamed(server):
    huge = json.dumps({"z": [0.123456789] * 20_000}).encode()
    r = server["http"].post(server["url"] + "/api/generate", data=huge,
                            headers={"Content-Type": "application/json"}, timeout=30)
    assert r.status_code == 413 and "over 65536 bytes" in r.json()["error"]

    def chunks():  # no Content-Length: the limit must hold while streaming
        for i in range(0, len(huge), 8192):
            yield huge[i:i + 8192]

    r = server["http"].post(server["url"] + "/api/generate", data=chunks(),
                            headers={"Content-Type": "application/json"}, timeout=30)
    assert r.status_code == 413 and "over 65536 bytes" in r.json()["error"]


@pytest.mark.parametrize("model_id", ["celeba/nope", "../../etc/passwd", "/etc", "celeba/../celeba/dcgan-a",
                                      "", "dcgan-a"])
def test_model_ids_come_only_from_the_listing(server, model_id):
    r = post(server, "/api/generate", {"model": model_id, "z": z_of(0)})
    assert r.status_code == 404 and f"unknown model id {model_id!r}" in r.json()["error"]
    assert get(server, "/api/model?id=" + requests.utils.quote(model_id)).status_code == 404


def test_a_real_run_folder_path_is_not_a_model_id(server, runs):
    for path in (str(runs["dcgan"]), str(runs["egan"].resolve())):
        r = post(server, "/api/generate", {"model": path, "z": z_of(0)})
        assert r.status_code == 404, r.text


# --- random, interpolate, batching -------------------------------------------------------

def test_random_is_reproducible_by_seed(server):
    a = post(server, "/api/random", {"seed": 7}).json()
    b = post(server, "/api/random", {"seed": 7}).json()
    c = post(server, "/api/random", {"seed": 8}).json()
    assert a == b and a["z"] != c["z"] and a["seed"] == 7 and a["c"] == {}
    assert len(a["z"]) == 100 and max(map(abs, a["z"])) <= 1
    # the image is the one /api/generate draws for that z
    assert np.array_equal(data_image(a["image"]), image(post(server, "/api/generate", {"z": a["z"]})))
    unseeded = post(server, "/api/random", {}).json()
    assert 0 <= unseeded["seed"] < 2 ** 32
    egan = post(server, "/api/random", {"model": "celeba/egan-b", "seed": 1}).json()
    assert set(egan["c"]) == {"c"} and all(v in (0.0, 1.0) for v in egan["c"]["c"])
    for bad, message in (({"seed": -1}, "greater than or equal to 0"), ({"seed": "x"}, "valid integer"),
                         ({"seed": 2 ** 40}, "less than")):
        r = post(server, "/api/random", bad)
        assert r.status_code == 422 and message in r.json()["error"]


def test_a_state_sent_to_the_page_reads_back_as_the_same_float32_inputs():
    """The page sends back the z it was given; rounding it (6 decimals, as before) changed
    the last bits of some values, and the face drawn for them, by a grey level here and there."""
    from studio.schemas import state_of

    rng = np.random.default_rng(0)
    z = (rng.normal(size=(2, 5000)) * 10.0 ** rng.integers(-8, 3, (2, 5000))).astype(np.float32)
    state = json.loads(json.dumps(state_of({"z": z, "c": z[:, :3] / 3}, 1)))
    assert np.array_equal(np.asarray(state["z"], np.float32), z[1])
    assert np.array_equal(np.asarray(state["c"]["c"], np.float32), z[1, :3] / 3)
    assert sum(np.float32(round(float(v), 6)) != v for v in z[1]) > 100  # the old rounding did lose them


def test_interpolate_goes_from_a_to_b_on_the_sphere(server):
    from model.train.sampling import slerp

    a, b = z_of(10), z_of(11)
    r = post(server, "/api/interpolate", {"a": {"z": a}, "b": {"z": b}, "steps": 5})
    assert r.status_code == 200, r.text
    frames = r.json()["frames"]
    assert [f["t"] for f in frames] == [0.0, 0.25, 0.5, 0.75, 1.0]
    np.testing.assert_allclose(frames[2]["z"], slerp(np.float32(a), np.float32(b), np.array([0.5]))[0], atol=1e-5)
    assert np.array_equal(data_image(frames[0]["image"]), image(post(server, "/api/generate", {"z": a})))
    assert np.array_equal(data_image(frames[-1]["image"]), image(post(server, "/api/generate", {"z": b})))
    for steps in (1, 17):
        r = post(server, "/api/interpolate", {"a": {"z": a}, "b": {"z": b}, "steps": steps})
        assert r.status_code == 422
    r = post(server, "/api/interpolate", {"a": {"z": a}, "b": {"z": b[:3]}})
    assert r.status_code == 422 and "z has 3 values" in r.json()["error"]


def test_concurrent_requests_each_get_their_own_face(server):
    zs = [z_of(100 + i) for i in range(24)]
    alone = [image(post(server, "/api/generate", {"z": z})) for z in zs[:4]]
    batcher = server["registry"].get(None).batcher
    rows_before = batcher.rows
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda z: image(post(server, "/api/generate", {"z": z})), zs))
    for k in range(4):
        assert np.array_equal(got[k], alone[k])
    assert len({g.tobytes() for g in got}) == len(zs)
    assert batcher.rows - rows_before == len(zs)


def test_micro_batcher_joins_requests_that_wait_together():
    import asyncio

    from studio.batcher import MicroBatcher

    gate, sizes = threading.Event(), []

    def forward(inputs):
        sizes.append(len(inputs["z"]))
        gate.wait(5)  # the first call holds the worker while the others queue
        return inputs["z"] * 2

    batcher = MicroBatcher(forward, max_rows=8)

    async def main():
        first = asyncio.ensure_future(batcher.submit({"z": np.float32([[0.0]])}))
        await asyncio.sleep(0.05)
        rest = [asyncio.ensure_future(batcher.submit({"z": np.float32([[i], [i + 0.5]])}, lambda x: x.sum()))
                for i in range(1, 7)]
        await asyncio.sleep(0.05)
        gate.set()
        return await first, await asyncio.gather(*rest)

    first, rest = asyncio.run(main())
    batcher.close()
    assert sizes == [1, 8, 4]  # 1 alone, then the 6 waiting requests (12 rows) in batches of at most 8
    assert first.tolist() == [[0.0]] and rest == [pytest.approx(2 * (2 * i + 0.5)) for i in range(1, 7)]


def test_a_failing_generator_call_fails_every_request_in_it():
    import asyncio

    from studio.batcher import MicroBatcher

    def forward(inputs):
        raise RuntimeError("out of memory")

    batcher = MicroBatcher(forward)

    async def main():
        return await asyncio.gather(*[batcher.submit({"z": np.zeros((1, 2), np.float32)}) for _ in range(3)],
                                    return_exceptions=True)

    results = asyncio.run(main())
    batcher.close()
    assert [str(r) for r in results] == ["out of memory"] * 3


# --- photos ------------------------------------------------------------------------------

def png_of(array) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def test_align_finds_the_astronauts_face(server):
    from skimage.data import astronaut

    r = server["http"].post(server["url"] + "/api/align", files={"photo": ("astronaut.png", png_of(astronaut()))},
                            timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["size"] == 64 and len(body["faces"]) == 1
    face = body["faces"][0]
    assert data_image(face["image"]).shape == (64, 64, 3)
    left, top, right, bottom = face["box"]
    assert 150 < left < right < 320 and 40 < top < bottom < 260 and face["score"] > 0.1


def test_align_rejects_bad_photos_with_the_reason(server):
    def upload(data, name="photo.png"):
        return server["http"].post(server["url"] + "/api/align", files={"photo": (name, data)}, timeout=60)

    r = upload(b"GIF89a not really")
    assert r.status_code == 422 and "photo 'photo.png': undecodable" in r.json()["error"]
    r = upload(png_of(np.full((300, 300, 3), 120, np.uint8)), "wall.png")
    assert r.status_code == 422 and "photo 'wall.png': no_face" in r.json()["error"]
    huge = Image.new("L", (8000, 6000), 128)  # 48 MP of gray: a small file, too many pixels
    buf = io.BytesIO()
    huge.save(buf, format="PNG")
    r = upload(buf.getvalue(), "huge.png")
    assert r.status_code == 413 and "too_large" in r.json()["error"]
    r = server["http"].post(server["url"] + "/api/align", files={"photo": ("big.bin", b"0" * (17 * 1024 * 1024))},
                            timeout=60)
    assert r.status_code == 413 and "over 16777216 bytes" in r.json()["error"]
    r = server["http"].post(server["url"] + "/api/align", timeout=30)
    assert r.status_code == 422 and "photo: Field required" in r.json()["error"]


def test_projection_and_completion_say_when_they_are_not_installed(server, monkeypatch):
    from studio import features

    monkeypatch.setattr(features, "PROJECT", ("model.no_such_project", "project_faces"))
    monkeypatch.setattr(features, "COMPLETE", ("model.complete_missing", "complete_faces"))
    face = features.data_url(np.zeros((64, 64, 3), np.uint8))
    assert get(server, "/api/model").json()["features"] == {"align": True, "project": False, "complete": False}
    r = post(server, "/api/project", {"image": face})
    assert r.status_code == 501 and "projection is not installed" in r.json()["error"]
    r = post(server, "/api/complete", {"image": face, "mask": face})
    assert r.status_code == 501 and "completion is not installed" in r.json()["error"]


def test_projection_finds_a_z_that_reproduces_a_generated_face(server):
    """The installed model.apps.project: a face the generator made is found again, and the z
    returned makes the image returned (the page can keep editing from it)."""
    from studio import features

    assert get(server, "/api/model").json()["features"]["project"] is True
    face = image(post(server, "/api/generate", {"z": z_of(5)}))
    r = post(server, "/api/project", {"image": features.data_url(face)})
    assert r.status_code == 200, r.text
    out = r.json()
    assert len(out["z"]) == 100 and max(abs(v) for v in out["z"]) <= 1.0  # inside the prior's range
    found = data_image(out["image"])
    assert np.array_equal(found, image(post(server, "/api/generate", {"z": out["z"]})))
    assert out["psnr"] > 15 and 0 < out["ssim"] <= 1


def test_completion_fills_the_hole_and_keeps_every_known_pixel(server):
    """The installed model.apps.complete: the blended face equals the upload outside the mask
    (Poisson blending changes the hole only); a run without a checkpoint completes from
    the context alone and says so."""
    from studio import features

    assert get(server, "/api/model").json()["features"]["complete"] is True
    face = image(post(server, "/api/generate", {"z": z_of(6)}))
    mask = np.zeros((64, 64, 3), np.uint8)
    mask[32:48, 16:48] = 255
    hole = mask[..., 0] > 0
    photo = face.copy()
    photo[hole] = 0  # what is under the hole must not matter
    r = post(server, "/api/complete", {"image": features.data_url(photo), "mask": features.data_url(mask)})
    assert r.status_code == 200, r.text
    out = r.json()
    blended, completed = data_image(out["blended"]), data_image(out["completed"])
    assert np.array_equal(blended[~hole], photo[~hole])
    assert not np.array_equal(blended[hole], photo[hole])
    assert np.array_equal(completed, image(post(server, "/api/generate", {"z": out["z"]})))
    assert out["perceptual"] is False and isinstance(out["flags"], list) and out["method"] == "search"


def test_completion_runs_the_network_of_the_generators_records_else_the_search(tmp_path):
    """The studio chooses as the CLI and CompleteFaces do (choose_method "auto"): the search while no
    completion network was trained on the generator's records version, the network from the next
    request on once one is beside the runs; it is answered at once (no job, even with
    wait=false) in milliseconds, and every answer says which method ran."""
    import time

    from studio_runs import completion_run

    from studio import features
    from studio.app import create_app
    from studio.models import ModelRegistry

    root = tmp_path / "models"
    run = make_run(root / "celeba" / "dcgan-a")  # records v-test
    registry = ModelRegistry(root, run)
    assert registry.ready(None) is None  # nothing loaded yet: the routes load it off the event loop
    assert registry.get(None) is registry.ready(None) is registry.ready("celeba/dcgan-a")
    assert registry.ready("celeba/other") is None
    face = features.data_url(np.full((64, 64, 3), 90, np.uint8))
    mask = np.zeros((64, 64, 3), np.uint8)
    mask[16:48, 16:48] = 255
    body = {"image": face, "mask": features.data_url(mask)}
    with serving(create_app(registry, fit={"steps": 3, "candidates": 2, "restarts": 1})) as (url, _, http):
        r = http.post(url + "/api/complete", json=body, timeout=120)
        assert r.status_code == 200, r.text
        assert r.json()["method"] == "search" and len(r.json()["z"]) == 100 and "X-Job-Id" in r.headers
        r = http.post(url + "/api/complete", json={**body, "method": "net"}, timeout=30)
        assert r.status_code == 404 and "no completion network trained on records v-test" in r.json()["error"]

        completion_run(root, "v-test", dataset="celeba")  # trained while the studio runs
        seconds = []
        for wait in ("true", "true", "true", "false", "false"):
            start = time.perf_counter()
            r = http.post(url + "/api/complete?wait=" + wait, json=body, timeout=60)
            seconds.append(time.perf_counter() - start)
            assert r.status_code == 200, r.text
            out = r.json()
            assert out["method"] == "net" and "X-Job-Id" not in r.headers and "z" not in out
            assert out["network"] == {"dataset": "celeba", "version": "v-test", "steps": 1}
            blended = data_image(out["blended"])
            assert np.array_equal(blended[~(mask[..., 0] > 0)], data_image(face)[~(mask[..., 0] > 0)])
        assert out["seconds"] < 0.5 and sorted(seconds)[2] < 1.0, seconds  # the first loads and traces it
        r = http.post(url + "/api/complete", json={**body, "method": "search"}, timeout=120)
        assert r.status_code == 200 and r.json()["method"] == "search" and "X-Job-Id" in r.headers
        assert http.get(url + "/api/jobs", timeout=30).json()["running"] == 0
    registry.close()


def test_projection_and_completion_check_the_face_size(server, monkeypatch):
    from studio import features

    monkeypatch.setattr(features, "PROJECT", ("model.train.sampling", "slerp"))  # installed: reach the checks
    monkeypatch.setattr(features, "COMPLETE", ("model.train.sampling", "slerp"))
    small = features.data_url(np.zeros((32, 32, 3), np.uint8))
    r = post(server, "/api/project", {"image": small})
    assert r.status_code == 422 and "image is 32x32; send the aligned 64x64 face" in r.json()["error"]
    r = post(server, "/api/project", {"image": "data:image/png;base64,@@@"})
    assert r.status_code == 422 and "image: not a base64 data URL" in r.json()["error"]
    face = features.data_url(np.zeros((64, 64, 3), np.uint8))
    r = post(server, "/api/complete", {"image": face})
    assert r.status_code == 422 and "mask is missing" in r.json()["error"]
    r = post(server, "/api/complete", {"image": face, "mask": face})
    assert r.status_code == 422 and "the mask is empty" in r.json()["error"]


# --- the command line --------------------------------------------------------------------

def test_cli_refuses_a_missing_or_unreadable_model_in_one_line(tmp_path, capsys, monkeypatch):
    from studio.cli import main

    assert main(["--model", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--model" in err and "no such folder" in err

    assert main(["--models-root", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no exported generator with a model card under" in err

    broken = make_run(tmp_path / "broken")
    (broken / "generator.keras").write_bytes(b"not a keras file")
    assert main(["--model", str(broken)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "cannot load the generator" in err

    (broken / "model_card.json").write_text("{")
    assert main(["--model", str(broken)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "is not a readable model card" in err

    import studio.app
    monkeypatch.setattr(studio.app, "VUE", tmp_path / "vue.esm-browser.prod.js")
    assert main(["--model", str(broken)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "make studio" in err


def test_stats_count_generator_calls_and_rows(server):
    model_id = server["registry"].default_id
    before = get(server, "/api/stats").json()[model_id]
    image(post(server, "/api/generate", {"z": z_of(50)}))
    after = get(server, "/api/stats").json()[model_id]
    assert after["batches"] == before["batches"] + 1 and after["rows"] == before["rows"] + 1
    assert after["mean_batch"] >= 1
