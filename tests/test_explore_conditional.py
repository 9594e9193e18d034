"""The explorer on a run conditional on a label: the label picker's endpoints (decode, encode,
interpolate, samples take the label; bad labels are a 4xx JSON message), the map's codes
E_q[z|x, y] at the true labels, and the picker in a real headless Chromium (Playwright, the
`chromium` fixture: skipped where absent, a failure in CI).

The runs: conftest's `conditional_run` (a 2-D conditional VAE on 8x8 digits) as "a", beside a
plain 3-D VAE of `explore_runs` as "b", which takes no label.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from vaelab.explore.space import LatentSpace
from vaelab.viz.conditional import conditional_posterior_means
from vaelab.viz.run import Run

pytest.importorskip("starlette", reason="the explore extra is not installed (pip install 'vaelab[explore]')")

from starlette.testclient import TestClient  # noqa: E402

from vaelab.explore.server import Explorer  # noqa: E402
from vaelab.explore.settings import ExploreSettings  # noqa: E402

CLASSES = [str(c) for c in range(10)]  # the digits' classes, named by their codes


def stroke() -> bytes:
    image = Image.new("L", (64, 64), 255)
    ImageDraw.Draw(image).line([(20, 10), (40, 54)], fill=0, width=6)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def spaces(conditional_run, explore_runs):
    return LatentSpace(Run(conditional_run), k=20), LatentSpace(Run(explore_runs["vae"]), k=20)


@pytest.fixture(scope="module")
def client(spaces):
    with TestClient(Explorer(list(spaces), ExploreSettings()).app(), base_url="http://127.0.0.1") as client:
        yield client


def png_pixels(response) -> np.ndarray:
    assert response.status_code == 200, response.text
    with Image.open(io.BytesIO(response.content)) as image:
        return np.asarray(image, dtype=np.float64)


def test_runs_name_the_classes_of_a_conditional_run_only(client):
    conditional, plain = client.get("/api/runs").json()["runs"]
    assert conditional["classes"] == CLASSES and plain["classes"] is None


def test_the_map_shows_each_code_at_its_true_label(client, spaces):
    space = spaces[0]
    codes = conditional_posterior_means(space.model, space.run.x, space.run.labels)
    map_ = client.get("/api/run/a/map").json()
    points = np.asarray(map_["points"])  # N(0, I) prior: u = z, the dims plane of a 2-D latent
    assert map_["axis_names"] == ["z1", "z2"]
    np.testing.assert_allclose(points, codes.numpy(), atol=1e-4)
    assert map_["labels"] == space.run.labels.tolist()


def test_the_label_changes_what_a_point_decodes_to(client, spaces):
    three, eight = (client.post("/api/run/a/decode", json={"z": [0.5, -0.5], "label": c}) for c in (3, 8))
    assert not np.array_equal(png_pixels(three), png_pixels(eight))
    expected = spaces[0].decode(torch.tensor([[0.5, -0.5]]), torch.tensor([8]))[0]
    np.testing.assert_allclose(1 - png_pixels(eight) / 255, expected, atol=0.5 / 255 + 1e-6)
    # a batch of mixed labels decodes each point under its own
    mixed = spaces[0].decode(torch.tensor([[0.5, -0.5], [0.5, -0.5]]), torch.tensor([3, 8]))
    np.testing.assert_allclose(mixed[1], expected, atol=1e-6)


def test_encoding_interpolation_and_samples_follow_the_label(client):
    one, seven = (client.post(f"/api/run/a/encode?label={c}", content=stroke()).json() for c in (1, 7))
    assert one["given_label"] == 1 and one["u"] != seven["u"] and one["log_px"] != seven["log_px"]
    example = client.post("/api/run/a/encode-example", json={"index": 4}).json()
    assert example["given_label"] == example["label"]  # a test image: its own label by default
    other = client.post("/api/run/a/encode-example", json={"index": 4, "label": (example["label"] + 1) % 10})
    assert other.json()["u"] != example["u"]
    strips = [
        client.post("/api/run/a/interpolate", json={"a": [-1, 0], "b": [1, 0], "n": 4, "label": c})
        for c in (0, 5)
    ]
    assert all(s.status_code == 200 for s in strips) and strips[0].content != strips[1].content
    samples = client.post("/api/run/a/samples", json={"n": 4, "label": 6})
    assert samples.status_code == 200 and "given the class y = 6" in json.loads(samples.headers["x-title"])


@pytest.mark.parametrize(
    "path, kwargs, message",
    [
        ("/api/run/a/decode", {"json": {"z": [0, 0]}}, "conditional on a label; give one of 0..9"),
        ("/api/run/a/decode", {"json": {"z": [0, 0], "label": 10}}, "10 is not a label of this run (0..9)"),
        ("/api/run/a/decode", {"json": {"z": [0, 0], "label": -1}}, "label: Input should be greater"),
        (
            "/api/run/a/decode",
            {"json": {"z": [0, 0], "label": "3"}},
            "label: Input should be a valid integer",
        ),
        ("/api/run/a/decode", {"json": {"z": [0, 0], "label": 2**40}}, "label: Input should be less"),
        (
            "/api/run/a/decode",
            {"json": {"z": [0, 0], "label": 1.5}},
            "label: Input should be a valid integer",
        ),
        (
            "/api/run/b/decode",
            {"json": {"z": [0, 0, 0], "label": 1}},
            "not conditional on a label; send none",
        ),
        ("/api/run/a/encode?label=x", {"content": stroke()}, "expected a class code like 3"),
        ("/api/run/a/encode?label=99", {"content": stroke()}, "99 is not a label"),
        ("/api/run/a/encode", {"content": stroke()}, "give one of 0..9"),
        ("/api/run/b/encode?label=0", {"content": stroke()}, "send none"),
        ("/api/run/a/encode-example", {"json": {"index": 0, "label": 12}}, "12 is not a label"),
        ("/api/run/a/interpolate", {"json": {"a": [0, 0], "b": [1, 1]}}, "give one of 0..9"),
        ("/api/run/a/samples", {"json": {"label": 10}}, "10 is not a label"),
        ("/api/run/b/samples", {"json": {"label": 0}}, "send none"),
    ],
)
def test_bad_labels_get_a_422_json_message(client, path, kwargs, message):
    response = client.post(path, **kwargs)
    assert response.status_code == 422, response.text
    assert message in response.json()["error"] and "\n" not in response.json()["error"]


# ------------------------------------------------------------------------------- in a browser


@pytest.fixture(scope="module")
def explorer_url(conditional_run, tmp_path_factory, serve_explorer):
    """`vaelab explore` of the conditional run on a free port; stopped after the module."""
    log = tmp_path_factory.mktemp("explore-conditional") / "stderr.txt"
    yield from serve_explorer([conditional_run], 20, log)


DECODED = """() => { const c = document.querySelector('[data-run=a] .decoded');
    return [Number(c.dataset.decoded || 0),
            Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data).join(',')]; }"""


@pytest.mark.slow
def test_the_label_picker_changes_the_decoded_image_and_the_encoding(explorer_url, watched_page):
    page = watched_page.page
    page.goto(explorer_url)
    page.wait_for_selector("body[data-ready=true]", timeout=60_000)
    picker = page.locator("[data-run=a] .label-select")
    assert picker.is_visible() and picker.locator("option").all_inner_texts() == CLASSES
    assert page.inner_text("[data-run=a] .decoded-title") == "E[x | z, y] at the pointer"
    assert "at their true labels" in page.inner_text("[data-run=a] .run-facts")
    page.wait_for_function(f"() => ({DECODED})()[0] >= 1", timeout=30_000)
    count, before = page.evaluate(DECODED)
    picker.select_option("7")
    page.wait_for_function(f"() => ({DECODED})()[0] > {count}", timeout=30_000)
    assert page.evaluate(DECODED)[1] != before  # the same point, decoded under another label
    box = page.locator("#draw").bounding_box()
    page.mouse.move(box["x"] + 110, box["y"] + 40)
    page.mouse.down()
    page.mouse.move(box["x"] + 100, box["y"] + 190, steps=8)
    page.mouse.up()
    page.wait_for_selector("[data-run=a] .logpx b", timeout=60_000)
    assert "log p(x | y = 7) ≈" in page.inner_text("[data-run=a] .encoding-body")
    picker.select_option("2")
    page.wait_for_function(
        "() => document.querySelector('[data-run=a] .encoding-body').innerText.includes('y = 2')",
        timeout=30_000,
    )
    assert watched_page.errors == []
