"""The studio page in real Chromium (Debian's /usr/bin/chromium driven by Playwright)
against the real server (``python -m studio``, forked from the worker's zygote) on a free
loopback port.

Screenshots land in test-artifacts/studio/ (git-ignored). The last test stops the
server to check the page's message, then starts it again.
"""
from __future__ import annotations

import base64
import io
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from studio_runs import brightness, completion_run, make_run, start_studio
from test_studio_api import free_port

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "studio"
ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                reason=f"{CHROMIUM} missing: `make test` installs Debian's chromium")




@pytest.fixture(scope="module")
def studio(zygote, tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    run = make_run(root / "celeba" / "dcgan-a", with_directions=True)
    make_run(root / "celeba" / "egan-b", with_c=True, seed=1)
    port = free_port()
    state = {"proc": start_studio(zygote, run, root, port, root / "studio.log"), "zygote": zygote,
             "url": f"http://127.0.0.1:{port}/", "run": run, "root": root, "port": port}
    yield state
    state["proc"].terminate()
    state["proc"].wait(timeout=30)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, studio):
    """A fresh page on the studio; fails the test on any console error or page error."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    context.set_default_timeout(60_000)  # a shared 2-core machine can be slow; a hang still fails
    pg = context.new_page()
    pg.errors = []
    pg.on("console", lambda m: pg.errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    pg.allow_errors = False
    pg.goto(studio["url"])
    wait_rendered(pg)
    yield pg
    errors = list(pg.errors)
    context.close()
    if not pg.allow_errors:
        assert errors == [], errors


def wait_rendered(pg, timeout=60_000):
    """Until the face shown is the one for the current state."""
    pg.wait_for_function("() => { const f = document.querySelector('#face');"
                         " return f && document.querySelector('#face-image') && f.dataset.wanted > 0"
                         " && f.dataset.shown === f.dataset.wanted; }", timeout=timeout)


def press_and_render(pg, key: str) -> None:
    """Press ``key`` in the focused control and wait until the page has asked for the new state
    and shows it (a face read right after the key press could be the previous one)."""
    before = int(pg.get_attribute("#face", "data-wanted"))
    pg.keyboard.press(key)
    pg.wait_for_function(f"() => Number(document.querySelector('#face').dataset.wanted) > {before}")
    wait_rendered(pg)


def face(pg) -> np.ndarray:
    wait_rendered(pg)
    data = pg.evaluate("async () => { const r = await fetch(document.querySelector('#face-image').src);"
                       " return Array.from(new Uint8Array(await r.arrayBuffer())); }")
    return np.asarray(Image.open(io.BytesIO(bytes(data))))


def z(pg) -> list[float]:
    return pg.eval_on_selector_all(".zgrid .cell", "cells => cells.map(c => Number(c.getAttribute('aria-valuenow')))")


def shot(pg, name):
    pg.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_page_loads_with_the_grid_the_mapping_and_the_panels(page):
    from studio import features

    assert len(z(page)) == 100 and all(-1 <= v <= 1 for v in z(page))
    legend = page.inner_text("#legend")
    assert "-1 = black" in legend and "1 = white" in legend and "linear" in legend
    assert face(page).shape == (64, 64, 3)
    options = page.eval_on_selector_all("header select option", "o => o.map(x => x.textContent)")
    assert len(options) == 2 and "dcgan · celeba · 10 steps · not evaluated" in options[0]
    assert page.locator("#dir-Brightness").count() == 1 and page.locator("#lock-Brightness").count() == 1
    assert "held-out accuracy" in page.inner_text("#directions")
    # the optional panels are there exactly when the installed code provides them
    available = features.available()
    assert page.locator("#tab-complete").count() == int(available["complete"])
    assert page.locator("#tab-photo").count() == int(available["project"])
    shot(page, "page")


def test_painting_a_cell_changes_z_and_the_image(page):
    before_z, before = z(page), face(page)
    page.click('.cell[data-index="0"]')                       # left button: lighter by brush/2 of the range
    wait_rendered(page)
    after_z = z(page)
    assert after_z[0] == pytest.approx(min(before_z[0] + 0.25, 1.0), abs=1e-6) and after_z[1:] == before_z[1:]
    assert not np.array_equal(face(page), before)
    page.click('.cell[data-index="1"]', button="right")       # right button: darker
    assert z(page)[1] == pytest.approx(max(before_z[1] - 0.25, -1.0), abs=1e-6)
    # a drag paints every cell it crosses
    box = [page.locator(f'.cell[data-index="{i}"]').bounding_box() for i in (20, 25)]
    page.mouse.move(box[0]["x"] + 5, box[0]["y"] + 5)
    page.mouse.down()
    page.mouse.move(box[1]["x"] + 5, box[1]["y"] + 5, steps=2)  # a fast drag: few events
    page.mouse.up()
    wait_rendered(page)
    changed = [i for i, (a, b) in enumerate(zip(before_z, z(page))) if a != b]
    assert set(range(20, 26)) - {i for i in range(20, 26) if abs(before_z[i]) == 1} <= set(changed)
    shot(page, "painted")


def test_random_changes_z_and_the_image(page):
    before_z, before, text = z(page), face(page), page.input_value("#z-text")
    page.click("#random")
    page.wait_for_function("(old) => document.querySelector('#z-text').value !== old", arg=text)
    wait_rendered(page)
    assert z(page) != before_z and not np.array_equal(face(page), before)


def test_undo_restores_the_previous_face_and_redo_reapplies(page):
    before_z, before = z(page), face(page)
    page.click('.cell[data-index="42"]')
    painted = face(page)
    assert not np.array_equal(painted, before)
    page.click("#undo")
    assert z(page) == before_z and np.array_equal(face(page), before)
    page.click("#redo")
    assert np.array_equal(face(page), painted)


def test_share_link_reproduces_the_face_in_a_new_page(page, browser):
    page.click('.cell[data-index="7"]')
    page.focus("#dir-Brightness")
    press_and_render(page, "End")
    expected, url = face(page), page.url
    assert "#m=" in url and "&z=" in url and "o=Brightness" in url
    other = browser.new_page()
    other.goto(url)
    wait_rendered(other)
    assert np.array_equal(face(other), expected) and z(other) == z(page)
    assert other.input_value("#dir-Brightness") == "3"
    other.close()


def test_a_slider_moves_the_face_along_its_attribute(page, studio):
    # The page opens on a random seed, and a direction fitted on the mean of 1,000 faces of the
    # test's random generator need not brighten every one of them (one in a few fresh-clone runs
    # drew a face it left as it was): a share link to the z on which test_studio_api.py checks
    # the same move through the API.
    from test_studio_api import z_of

    known = np.asarray(z_of(5), np.float32)
    encoded = base64.urlsafe_b64encode(known.astype("<f4").tobytes()).decode().rstrip("=")
    page.goto(f"{studio['url']}#m=celeba%2Fdcgan-a&z={encoded}")
    page.wait_for_function("() => document.querySelector('.zgrid .cell[data-index=\"0\"]')"
                           f".getAttribute('aria-valuenow') == {float(known[0])!r}")
    wait_rendered(page)
    page.focus("#dir-Brightness")
    press_and_render(page, "Home")
    assert page.input_value("#dir-Brightness") == "-3"
    dark = face(page)
    press_and_render(page, "End")
    assert page.input_value("#dir-Brightness") == "3"
    light = face(page)
    assert brightness(light[None])[0, 0] > brightness(dark[None])[0, 0]
    assert page.inner_text("#directions").count("3.0") >= 1
    page.check("#lock-Brightness")
    wait_rendered(page)
    assert "l=Brightness" in page.url
    shot(page, "slider")


def test_download_yields_png_files(page):
    with page.expect_download() as info:
        page.click("#download")
    small = Image.open(info.value.path())
    assert small.format == "PNG" and small.size == (64, 64)
    assert np.array_equal(np.asarray(small.convert("RGB")), face(page))
    with page.expect_download() as info:
        page.click("#download-large")
    large = Image.open(info.value.path())
    assert large.format == "PNG" and large.size == (256, 256)
    assert re.fullmatch(r"face-\d+-256px\.png", info.value.suggested_filename)


def test_keyboard_only_editing(page):
    start_z, start = z(page), face(page)
    for _ in range(60):  # Tab through the page until the grid has the focus
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.classList.contains('cell')"):
            break
    else:
        pytest.fail("the z grid cannot be reached with Tab")
    first = page.evaluate("Number(document.activeElement.dataset.index)")
    page.keyboard.press("ArrowUp")                  # a fine step on the focused cell
    page.keyboard.press("ArrowRight")               # the next cell
    page.keyboard.press("PageDown")                 # a brush step down
    page.keyboard.press("Shift+ArrowDown")          # the cell below
    page.keyboard.press("0")                        # to the middle
    wait_rendered(page)
    now = z(page)
    assert now[first] == pytest.approx(min(start_z[first] + 0.04, 1), abs=1e-6)
    assert now[first + 1] == pytest.approx(max(start_z[first + 1] - 0.25, -1), abs=1e-6)
    assert now[first + 11] == 0
    assert not np.array_equal(face(page), start)
    page.keyboard.press("Control+z")                # undo, from the keyboard too
    wait_rendered(page)
    assert z(page)[first + 11] == start_z[first + 11]
    page.keyboard.press("Shift+Tab")
    focused = page.evaluate("document.activeElement.id || document.activeElement.tagName")
    assert focused  # focus moved out of the grid, onto a real control
    page.focus("#random")
    page.keyboard.press("Enter")
    page.wait_for_function("(old) => document.querySelector('#z-text').value !== old",
                           arg=",".join(map(str, now)))
    shot(page, "keyboard")


def test_copy_and_paste_z_as_text(page):
    target = np.linspace(-1, 1, 100).round(3).tolist()
    page.fill("#paste-z", ", ".join(map(str, target)))
    page.click("#apply-z")
    wait_rendered(page)
    assert z(page) == pytest.approx(target)
    assert page.input_value("#z-text").startswith("-1, -0.98, -0.96")
    page.fill("#paste-z", "1, 2, three")
    page.click("#apply-z")
    assert '"three" is not a number' in page.inner_text("body")
    page.fill("#paste-z", "0.5 " * 99)
    page.click("#apply-z")
    assert "Expected 100 numbers, got 99" in page.inner_text("body")


def test_saved_faces_and_spherical_interpolation(page):
    page.click("#save")
    page.wait_for_selector("#saved figure")
    first = face(page)
    page.click("#random")
    wait_rendered(page)
    page.click("#save")
    page.wait_for_function("document.querySelectorAll('#saved figure').length === 2")
    page.click("#tab-interpolate")
    page.click("#interpolate")
    page.wait_for_function("document.querySelectorAll('#frames img').length === 8")
    page.click("#frames button >> nth=0")          # the first frame is face 1
    page.click("#tab-edit")
    assert np.array_equal(face(page), first)
    page.click("#saved figure >> nth=1 >> button.thumb")
    wait_rendered(page)
    shot(page, "interpolation")
    # a failing request says why: the server refuses 99 steps
    page.click("#tab-interpolate")
    page.fill("#interp-a ~ input, input[type=number]", "99")
    page.click("#interpolate")
    page.wait_for_selector("#error")
    assert "Request failed (422): steps: Input should be less than or equal to 16" in page.inner_text("#error")
    assert page.errors == ["Failed to load resource: the server responded with a status of 422 (Unprocessable Entity)"]
    page.allow_errors = True  # that one, and only that one, was expected


def test_model_picker_switches_to_a_model_with_c_sliders(page):
    page.select_option("header select", "celeba/egan-b")
    page.wait_for_selector("#c-c-1")
    wait_rendered(page)
    before = face(page)
    page.focus("#c-c-1")
    page.keyboard.press("End")
    wait_rendered(page)
    assert not np.array_equal(face(page), before)
    assert "c.c=" in page.url and "m=celeba%2Fegan-b" in page.url
    assert "no attribute directions yet" in page.inner_text("#directions")


def test_complete_a_photo_then_start_from_it(page, studio, tmp_path):
    """Upload a real photo: the face is aligned, the lower half masked from the keyboard
    path, completed by the latent search (no completion network for these records); then the
    same face projected, and its z becomes the edited face. Once a completion network trained
    on the run's records is there, Complete uses it, and the panel says which method ran."""
    from pipeline.sources.sample_photos import portrait

    photo = tmp_path / "astronaut.png"
    portrait("astronaut").save(photo)
    page.click("#tab-complete")
    page.set_input_files("#photo", str(photo))
    page.wait_for_selector("canvas.mask")
    page.get_by_role("button", name="Mask the lower half").click()
    page.wait_for_timeout(200)
    page.click("#complete")
    page.wait_for_selector("img[alt='Completed face']", timeout=120_000)
    assert page.locator("img[alt='Blended face']").get_attribute("src").startswith("data:image/png;base64,")
    assert "Completed by the latent search" in page.inner_text("#complete-method")
    shot(page, "completed")
    before = z(page)
    page.get_by_role("button", name="Edit this face").click()
    wait_rendered(page)
    after = z(page)
    assert after != before and page.locator("#tab-edit").get_attribute("aria-selected") == "true"

    page.click("#tab-photo")
    page.click("#project")
    page.wait_for_selector("img[alt='Closest generated face']", timeout=120_000)
    assert re.search(r"PSNR [0-9.]+, SSIM [0-9.]+", page.content())
    wait_rendered(page)
    assert z(page) != after
    shot(page, "projected")

    network = completion_run(studio["root"], "v-test", dataset="celeba")  # make_run's records
    try:
        page.click("#tab-complete")  # its canvas is drawn again: the face and the mask painted before
        page.wait_for_function("() => { const c = document.querySelector('canvas.mask');"
                               " const d = c.getContext('2d').getImageData(0, c.height - 4, c.width, 1).data;"
                               " return d[0] > 200 && d[1] < 80 && d[2] > 100; }")
        page.click("#complete")
        page.wait_for_selector("#complete-method:has-text('Completed by the completion network')")
        assert "trained 1 step on celeba records v-test" in page.inner_text("#complete-method")
        assert page.get_by_role("button", name="Edit this face").count() == 0  # the network has no z
        shot(page, "completed-by-network")
    finally:
        shutil.rmtree(network)


def test_the_page_shows_the_warm_up_until_the_model_is_ready(browser, studio):
    """While /api/model says the searches' graphs are being built (warm "warming") the header says
    "warming up…" and asks again every 2 s; once ready the note goes and the asking stops. These
    tiny runs warm up in seconds, often before a page loads, so the test holds the answers at
    "warming" (Playwright's routing) until it lets the server's own through."""
    context = browser.new_context()
    context.set_default_timeout(60_000)
    pg = context.new_page()
    asked, hold = [], [True]

    def answer(route):
        response = route.fetch()
        info = response.json()
        asked.append(time.monotonic())
        if hold[0]:
            info["warm"] = "warming"
        route.fulfill(response=response, json=info)

    pg.route(re.compile(r".*/api/model\?.*"), answer)
    pg.goto(studio["url"])
    wait_rendered(pg)
    assert pg.inner_text("#warm") == "warming up…"
    deadline = time.monotonic() + 60
    while len(asked) < 3 and time.monotonic() < deadline:  # the page's own asking (routed here)
        pg.wait_for_timeout(200)
    assert min(b - a for a, b in zip(asked[-3:], asked[-2:])) > 1.5  # a modest pace, not a busy loop
    assert pg.locator("#warm").is_visible()
    hold[0] = False
    pg.wait_for_selector("#warm", state="detached")
    done = len(asked)
    pg.wait_for_timeout(4500)
    assert len(asked) == done  # no more asking once warm
    context.close()


def test_phone_width_is_readable(browser, studio):
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2, has_touch=True)
    pg = context.new_page()
    pg.goto(studio["url"])
    wait_rendered(pg)
    assert pg.evaluate("document.documentElement.scrollWidth") <= 390
    grid = pg.locator(".zgrid").bounding_box()
    assert grid["width"] <= 390 and pg.locator(".cell").first.bounding_box()["width"] >= 25
    pg.screenshot(path=str(ARTIFACTS / "phone.png"), full_page=True)
    context.close()


def test_server_down_then_back(page, studio):
    """Stops the module's server (so this test runs last), then starts it again."""
    page.allow_errors = True  # the browser logs the refused connections
    studio["proc"].terminate()
    studio["proc"].wait(timeout=30)
    page.click('.cell[data-index="3"]')
    page.wait_for_selector("#error")
    assert "unreachable" in page.inner_text("#error")
    shot(page, "server-down")
    studio["proc"] = start_studio(studio["zygote"], studio["run"], studio["root"], studio["port"],
                                   studio["root"] / "studio-again.log")
    page.wait_for_selector("#notice:has-text('The server is back')", timeout=30_000)
    wait_rendered(page)
    assert page.locator("#error").count() == 0
