"""`vaelab explore` as a person uses it: the real command serving the session's trained VAE and AE
side by side on 127.0.0.1, driven in headless Chromium by Playwright (the `chromium` fixture:
Debian's browser; skipped where absent, a failure in CI).

Set VAELAB_EXPLORE_SCREENSHOTS=DIR to keep the screenshots for a look.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

PIXELS = """selector => {
    const canvas = document.querySelector(selector);
    const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
    let sum = 0, dark = 0;
    for (let i = 0; i < data.length; i += 4) { sum += data[i]; if (data[i] < 128) dark += 1; }
    return [sum, dark, Array.from(data.slice(0, 4096)).join(",")];
}"""


@pytest.fixture(scope="module")
def explorer_url(pair, tmp_path_factory, serve_explorer):
    """The real command on a free port (its stderr in a file); stopped after the module."""
    yield from serve_explorer(
        [pair.vae, pair.ae], 100, tmp_path_factory.mktemp("explore-server") / "stderr.txt"
    )


def open_page(watched_page, url: str):
    page = watched_page.page
    page.set_viewport_size({"width": 1280, "height": 1100})
    page.goto(url)
    page.wait_for_selector("body[data-ready=true]", timeout=60_000)
    return page


def screenshot(page, tmp_path: Path, name: str) -> Path:
    folder = Path(os.environ.get("VAELAB_EXPLORE_SCREENSHOTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def decoded_count(page, run: str) -> int:
    return int(page.eval_on_selector(f"[data-run={run}] .decoded", "c => Number(c.dataset.decoded || 0)"))


def move_and_wait(page, x: float, y: float) -> None:
    """Move the pointer over run A's map and wait until both runs have decoded the new point."""
    before = {run: decoded_count(page, run) for run in "ab"}
    box = page.locator("[data-run=a] .overlay").bounding_box()
    page.mouse.move(box["x"] + x * box["width"], box["y"] + y * box["height"])
    for run in "ab":
        count = f"Number(document.querySelector('[data-run={run}] .decoded').dataset.decoded || 0)"
        page.wait_for_function(f"() => {count} > {before[run]}", timeout=30_000)


def test_page_loads_both_runs_with_no_console_error_and_asks_only_its_server(
    explorer_url, watched_page, tmp_path
):
    page = open_page(watched_page, explorer_url)
    assert page.locator(".run").count() == 2
    assert page.inner_text("[data-run=a] .run-title") == "A: vae" and "AE" in page.inner_text(
        "[data-run=b] .run-facts"
    )
    for run in "ab":  # the codes are drawn, and the point (0, 0) decoded
        _, dark_points, _ = page.evaluate(PIXELS, f"[data-run={run}] .map")
        assert dark_points > 100
        assert decoded_count(page, run) >= 1
    assert "no prior to sample" in page.inner_text("[data-run=b] .samples-body")
    assert watched_page.errors == []
    assert all(url.startswith(explorer_url) for url in watched_page.requests), watched_page.requests
    screenshot(page, tmp_path, "explore-loaded")


def test_moving_over_the_map_changes_the_decoded_pixels_of_both_runs(explorer_url, watched_page):
    page = open_page(watched_page, explorer_url)
    move_and_wait(page, 0.35, 0.4)
    first = {run: page.evaluate(PIXELS, f"[data-run={run}] .decoded") for run in "ab"}
    move_and_wait(page, 0.65, 0.7)
    second = {run: page.evaluate(PIXELS, f"[data-run={run}] .decoded") for run in "ab"}
    for run in "ab":
        assert first[run][1] > 0  # something is drawn (dark ink on white)
        assert first[run][0] != second[run][0] or first[run][2] != second[run][2], run
    coords = page.inner_text("[data-run=a] .coords")
    assert coords == page.inner_text("[data-run=b] .coords")  # the same u for both: the same point
    assert watched_page.errors == []


def test_drawing_a_stroke_yields_an_encoding_and_its_log_px(explorer_url, watched_page, tmp_path):
    page = open_page(watched_page, explorer_url)
    box = page.locator("#draw").bounding_box()
    page.mouse.move(box["x"] + 70, box["y"] + 50)
    page.mouse.down()
    for step in range(12):  # a stroke down and to the left: a "1" or a "7"
        page.mouse.move(box["x"] + 150 - 4 * step, box["y"] + 50 + 12 * step)
    page.mouse.up()
    page.wait_for_selector("[data-run=a] .logpx b", timeout=60_000)
    text = page.inner_text("[data-run=a] .encoding-body")
    assert re.search(r"log p\(x\) ≈ -\d+\.\d\d ± \d+\.\d\d nats", text), text
    assert "bits/dim" in text and "test images' log p(x)" in text
    page.wait_for_selector("[data-run=b] .logpx", timeout=60_000)
    assert "no ELBO or log p(x)" in page.inner_text("[data-run=b] .encoding-body")
    images = page.eval_on_selector_all(
        ".encoding-body img", "imgs => imgs.map(i => i.complete && i.naturalWidth)"
    )
    assert images == [28, 28, 28, 28]  # input and reconstruction, for each run
    assert page.locator("[data-run=a] canvas.histogram").count() == 1
    ellipse = page.evaluate(
        """() => { const c = document.querySelector('[data-run=a] .overlay');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let red = 0;
        for (let i = 0; i < d.length; i += 4) if (d[i] > 200 && d[i + 1] < 80 && d[i + 3] > 0) red += 1;
        return red; }"""
    )
    assert ellipse > 20  # the posterior's mean and its ellipses are drawn on the map
    assert watched_page.errors == []
    screenshot(page, tmp_path, "explore-drawing")


def test_interpolation_between_two_pinned_points_fills_the_strips(explorer_url, watched_page, tmp_path):
    page = open_page(watched_page, explorer_url)
    box = page.locator("[data-run=a] .overlay").bounding_box()
    for x, y, button in ((0.15, 0.2, "#a-pin"), (0.85, 0.8, "#b-pin")):
        page.mouse.click(box["x"] + x * box["width"], box["y"] + y * box["height"])
        page.click(button)
    for run in "ab":
        page.wait_for_selector(f"[data-run={run}] img.strip", timeout=60_000)
        strip = f"document.querySelector('[data-run={run}] img.strip')"
        page.wait_for_function(f"() => {strip}.complete && {strip}.naturalWidth > 0", timeout=30_000)
        width = page.eval_on_selector(f"[data-run={run}] img.strip", "i => i.naturalWidth")
        assert width == 10 * 28 + 9  # ten decoded points, one pixel apart
    page.click("#sample")
    page.wait_for_selector("[data-run=a] img.samples-grid", timeout=60_000)
    assert watched_page.errors == []
    screenshot(page, tmp_path, "explore-interpolation")
