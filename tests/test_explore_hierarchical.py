"""The explorer on a hierarchical run (a Ladder VAE, `vaelab.hierarchical`), mapped on its top layer
z_L (`vaelab.explore.layers.TopLayer`):

- the math in float64 against the model's own networks run by hand: a point of z_L decodes down the
  generative path with each lower layer at its conditional prior mean; q(z_L|x) and p(z_L) are the
  ladder's own top-layer terms;
- the latent space of conftest's `hierarchical_run` (2 layers of 2 units, VampPrior): codes, prior
  standardization, contours, encodings, the whole model's log p(x);
- the real `vaelab explore` serving it beside a plain 3-D VAE on 127.0.0.1, over HTTP and in headless
  Chromium (Playwright, the `chromium` fixture: skipped where absent, a failure in CI).
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from vaelab.config import ModelConfig
from vaelab.estimators import log_px_importance
from vaelab.explore.layers import TopLayer, map_latent
from vaelab.explore.space import LatentSpace
from vaelab.hierarchical import layer_slices
from vaelab.models import build_model
from vaelab.viz.run import Run

X_SHAPE = (1, 8, 8)


def ladder(layers: int, prior: str = "normal", net: str = "mlp", seed: int = 0):
    """An untrained Ladder VAE of `layers` layers of 3 units on 8x8 images, in float64."""
    torch.manual_seed(seed)
    config = ModelConfig(layers=layers, latent_dim=3, hidden=(16,), net=net, prior=prior, prior_components=4)
    return build_model(config, X_SHAPE).double().eval()


def stroke(size: int = 64) -> bytes:
    image = Image.new("L", (size, size), 255)
    ImageDraw.Draw(image).line(
        [(size * 0.3, size * 0.15), (size * 0.6, size * 0.85)], fill=0, width=size // 10
    )
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


# ---------------------------------------------------------------------------------- the math


@pytest.mark.parametrize("layers, net", [(2, "mlp"), (3, "mlp"), (3, "gated")])
def test_a_top_layer_point_decodes_with_each_lower_layer_at_its_conditional_prior_mean(layers, net):
    model = ladder(layers, net=net)
    z_top = torch.randn(5, 3, dtype=torch.float64)
    # by hand: z_i = mu_p,i(z_{i+1}), the first half of down[i]'s output, from the top down
    parts = [z_top]
    with torch.no_grad():
        for i in reversed(range(layers - 1)):
            parts.insert(0, model.down[i](parts[0])[..., :3])
        z = torch.cat(parts, -1)  # (5, L 3), layer 1 first
        x_mean = torch.sigmoid(model.decoder(z))  # a Bernoulli decoder's mean
        top = TopLayer(model)
        descended = top.descend(z_top)
        decoded = top.likelihood(z_top).mean
    assert descended.dtype == torch.float64 and descended.shape == (5, 3 * layers)
    torch.testing.assert_close(descended, z, rtol=0, atol=1e-12)
    torch.testing.assert_close(descended[..., layer_slices(layers, 3)[-1]], z_top, rtol=0, atol=0)
    # the likelihood head computes in float32 (`vaelab.models.Likelihood`): one rounding apart
    torch.testing.assert_close(decoded, x_mean.float(), rtol=0, atol=1e-6)
    # each lower layer is the mean of the model's own conditional p(z_i | z_{i+1})
    for i in range(layers - 1):
        loc_p, _ = model.top_down(i, descended[..., layer_slices(layers, 3)[i + 1]])
        torch.testing.assert_close(descended[..., layer_slices(layers, 3)[i]], loc_p, rtol=0, atol=1e-12)


@pytest.mark.parametrize("prior", ["normal", "mog", "vamp"])
def test_the_top_layers_posterior_and_prior_are_the_ladders_own_top_terms(prior):
    model = ladder(3, prior=prior)
    top = TopLayer(model)
    x = torch.rand(4, *X_SHAPE, dtype=torch.float64)
    with torch.no_grad():
        q_z_given_x, p_z = model.posterior(x), model.prior()
        z = q_z_given_x.rsample((2,))  # (2, 4, 9)
        z_top = z[..., 6:]
        q_top, p_top = top.posterior(x), top.prior()
        # q(z_L|x) is the marginal of the ladder's q(z|x) on z_L: its top-down walk starts there
        torch.testing.assert_close(
            q_top.log_prob(z_top), q_z_given_x.log_prob_layers(z)[..., -1], rtol=0, atol=1e-10
        )
        torch.testing.assert_close(q_top.mean, q_z_given_x.mean[..., 6:], rtol=0, atol=1e-12)
        torch.testing.assert_close(p_top.log_prob(z_top), p_z.log_prob_layers(z)[..., -1], rtol=0, atol=1e-10)
    assert top.latent_dim == 3 and top.layers == 3 and not top.deterministic
    assert map_latent(model).latent_dim == 3 and map_latent(model.decoder) is model.decoder


# ------------------------------------------------------------------------- the latent space


@pytest.fixture(scope="module")
def space(hierarchical_run):
    return LatentSpace(Run(hierarchical_run), k=20)


def test_the_map_is_the_top_layer_standardized_by_its_closed_form_prior(space):
    model = space.model
    top = TopLayer(model)
    assert space.latent_dim == 2 and space.dim_names == ("z2.1", "z2.2")
    p_top = top.prior()  # the VampPrior: a mixture of q(z_2 | u_k) at the pseudo-inputs
    torch.testing.assert_close(space.prior_loc, p_top.mean.detach().float())
    torch.testing.assert_close(space.prior_scale, p_top.variance.detach().sqrt().float())
    with torch.no_grad():
        codes = top.posterior(space.run.x).mean.double()
    u = (codes - space.prior_loc.double()) / space.prior_scale.double()
    np.testing.assert_allclose(space.u_codes, u.numpy(), rtol=0, atol=1e-12)
    map_ = space.latent_map(space.plane())
    assert map_["axis_names"] == ["z2.1", "z2.2"] and len(map_["points"]) == len(space.run.x)
    assert [c["sigma"] for c in map_["contours"]] == [1.0, 2.0, 3.0] and all(
        c["lines"] for c in map_["contours"]
    )
    weights, means, sds = space.prior_components()
    assert len(weights) == 4 and means.shape == sds.shape == (4, 2)  # the VampPrior's 4 components
    # the dims are ranked by the top layer's own posterior means (a mixture prior has no KL per dim)
    assert space.score_name == "Var_x(z)" and len(space.dim_scores) == 2
    np.testing.assert_allclose(space.dim_scores, codes.var(0).numpy(), rtol=1e-12)


def test_decoding_interpolation_and_encoding_go_through_the_top_layer(space):
    top = TopLayer(space.model)
    u = torch.tensor([[0.5, -1.0], [2.0, 0.3]])
    with torch.no_grad():
        expected = top.likelihood(space.to_z(u)).mean[:, 0].numpy()
    np.testing.assert_allclose(space.decode(u), expected, rtol=0, atol=1e-7)
    strip = space.interpolation(u[0], u[1], 3, "linear")
    assert strip.shape[-1] == 3 * 8 + 2  # three 8-pixel cells, one apart
    x = space.run.x[:1]
    encoding = space.encode(x, space.plane())
    with torch.no_grad():
        code = top.posterior(x)
        reconstruction = space.model.likelihood(space.model.posterior(x).mean).mean[0, 0].numpy()
    u_x = (code.mean[0].double() - space.prior_loc.double()) / space.prior_scale.double()
    np.testing.assert_allclose(encoding.u, u_x.numpy(), atol=1e-6)
    np.testing.assert_allclose(encoding.reconstruction, reconstruction, atol=1e-7)  # every layer's code
    np.testing.assert_allclose(encoding.decoded_code, space.decode(u_x.float()[None])[0], atol=1e-6)
    assert not np.allclose(encoding.decoded_code, encoding.reconstruction, atol=1e-3)
    # the ellipses are q(z_2|x)'s, in prior s.d.s: its 1-sigma ellipse's extent along z2.1
    sd = float(code.base_dist.scale[0, 0] / space.prior_scale[0])
    ellipse = np.asarray(encoding.ellipses[0])
    assert ellipse[:, 0].max() - ellipse[:, 0].min() == pytest.approx(2 * sd, rel=1e-3)
    # log p(x) and the "how typical" percentile are the whole model's, as `evaluate` stored them
    estimate = log_px_importance(space.model, x, 20, generator=torch.Generator().manual_seed(0))
    assert encoding.log_px == pytest.approx(float(estimate.value[0]) + space.log_det_nats, abs=1e-9)
    assert encoding.percentile is not None and 0 <= encoding.percentile <= 1
    picture, title = space.prior_samples(4, seed=0)
    assert picture.shape[-1] == 2 * 8 + 1 and "through every layer" in title


def test_info_says_which_layer_is_shown_and_how_the_lower_ones_are_set(space):
    info = space.info()
    assert info["layers"] == 2 and info["layer_shown"] == 2 and info["latent_dim"] == 2
    assert info["dim_names"] == ["z2.1", "z2.2"]
    assert "the map shows the top layer z2" in info["layer_note"]
    assert "z1 = E[z1 | z2]" in info["layer_note"] and "log p(x)" in info["layer_note"]
    assert info["test_log_px"]["k"] == 20 and info["samples_note"] is None and info["log_px_note"] is None


# ----------------------------------------------------------------- the real server, over HTTP
# (the endpoints in process, fuzzed: tests/fuzz/test_fuzz_explore_hierarchical.py)


@pytest.fixture(scope="module")
def explorer_url(hierarchical_run, explore_runs, tmp_path_factory, serve_explorer):
    """`vaelab explore` of the hierarchical run ("a") beside a plain 3-D VAE ("b") on a free port of
    127.0.0.1; stopped after the module."""
    runs = [hierarchical_run, explore_runs["vae"]]
    yield from serve_explorer(runs, 20, tmp_path_factory.mktemp("explore-hierarchical") / "stderr.txt")


@dataclass(frozen=True)
class Answer:
    """One HTTP response: status, headers (lower-case names) and body."""

    status_code: int
    headers: dict[str, str]
    content: bytes

    def json(self):
        return json.loads(self.content)

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")


class Http:
    """A minimal client of the running server (the standard library's, over real sockets)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")

    def request(self, method: str, path: str, body: bytes | None, content_type: str | None) -> Answer:
        request = urllib.request.Request(self.base_url + path, data=body, method=method)
        if content_type is not None:
            request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return Answer(
                    response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
                )
        except urllib.error.HTTPError as err:
            return Answer(err.code, {k.lower(): v for k, v in err.headers.items()}, err.read())

    def get(self, path: str) -> Answer:
        return self.request("GET", path, None, None)

    def post(self, path: str, *, body: object = None, content: bytes | None = None) -> Answer:
        """POST `content` as bytes, or `body` as JSON."""
        if content is not None:
            return self.request("POST", path, content, "application/octet-stream")
        return self.request("POST", path, json.dumps(body).encode(), "application/json")


@pytest.fixture(scope="module")
def http(explorer_url):
    return Http(explorer_url)


def png_pixels(response) -> np.ndarray:
    assert response.status_code == 200 and response.headers["content-type"] == "image/png", response.text
    with Image.open(io.BytesIO(response.content)) as image:
        return 1 - np.asarray(image, dtype=np.float64) / 255  # ink on paper, as the page draws it


@pytest.mark.slow  # (the real command starts in its own process: seconds)
def test_runs_and_maps_describe_the_top_layer_beside_a_one_layer_run(http):
    hierarchical, plain = http.get("/api/runs").json()["runs"]
    assert hierarchical["layers"] == 2 and hierarchical["latent_dim"] == 2
    assert "top layer z2" in hierarchical["layer_note"]
    assert plain["layers"] == 1 and plain["layer_note"] is None and plain["dim_names"] == ["z1", "z2", "z3"]
    map_a, map_b = http.get("/api/run/a/map").json(), http.get("/api/run/b/map?plane=pca").json()
    assert map_a["axis_names"] == ["z2.1", "z2.2"] and map_a["sliders"] == []
    assert len(map_a["contours"]) == 3 and len(map_b["sliders"]) == 1
    assert http.get("/api/run/a/map?dims=2,1").json()["axis_names"] == ["z2.2", "z2.1"]
    bad = http.get("/api/run/a/map?dims=1,3")
    assert bad.status_code == 422 and "latent dims of 1..2" in bad.json()["error"]


@pytest.mark.slow  # (the real command starts in its own process: seconds)
def test_the_same_pointer_position_is_decoded_by_both_runs_in_their_own_coordinates(http, space):
    # the page sends each run u = o + V w for one (w1, w2): on each default plane, (1.5, -0.5) is
    # u = (1.5, -0.5) for the hierarchical run's z2 and that on its two most used dims for the other
    first = png_pixels(http.post("/api/run/a/decode", body={"z": [1.5, -0.5]}))
    np.testing.assert_allclose(first, space.decode(torch.tensor([[1.5, -0.5]]))[0], atol=0.5 / 255 + 1e-6)
    other = png_pixels(http.post("/api/run/a/decode", body={"z": [-1.5, 0.5]}))
    assert not np.array_equal(first, other)
    plain = http.get("/api/runs").json()["runs"][1]
    u_b = [0.0, 0.0, 0.0]
    for w, d in zip((1.5, -0.5), sorted(plain["dim_order"][:2]), strict=True):
        u_b[d] = w
    assert png_pixels(http.post("/api/run/b/decode", body={"z": u_b})).shape == (8, 8)
    wrong = http.post("/api/run/a/decode", body={"z": [0.0, 0.0, 0.0, 0.0]})  # the whole z is not mapped
    assert wrong.status_code == 422 and "this run's latent has 2" in wrong.json()["error"]


@pytest.mark.slow  # (the real command starts in its own process: seconds)
def test_encoding_interpolation_and_samples_of_the_hierarchical_run(http):
    encoding = http.post("/api/run/a/encode", content=stroke()).json()
    assert len(encoding["u"]) == 2 and len(encoding["ellipses"]) == 2
    assert encoding["decoded_code"].startswith("data:image/png;base64,")
    assert encoding["log_px"] < 0 and encoding["log_px_stderr"] > 0 and 0 <= encoding["percentile"] <= 1
    plain = http.post("/api/run/b/encode", content=stroke()).json()
    assert plain["decoded_code"] is None and len(plain["u"]) == 3
    example = http.post("/api/run/a/encode-example", body={"index": 5, "plane": "pca"}).json()
    assert example["index"] == 5 and math.isfinite(example["stored_log_px"])
    strip = http.post(
        "/api/run/a/interpolate", body={"a": [-2, 0], "b": [2, 1], "n": 5, "method": "spherical"}
    )
    assert png_pixels(strip).shape == (8, 5 * 8 + 4)
    samples = http.post("/api/run/a/samples", body={"n": 4, "seed": 3})
    assert png_pixels(samples).shape == (17, 17) and "through every layer" in json.loads(
        samples.headers["x-title"]
    )


# -------------------------------------------------------------------------------- in a browser

DECODED = """run => { const c = document.querySelector(`[data-run=${run}] .decoded`);
    return [Number(c.dataset.decoded || 0),
            Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data).join(',')]; }"""


@pytest.mark.slow
def test_the_page_shows_the_top_layer_decodes_it_and_encodes_a_drawing(explorer_url, watched_page, tmp_path):
    page = watched_page.page
    page.set_viewport_size({"width": 1280, "height": 1300})
    page.goto(explorer_url)
    page.wait_for_selector("body[data-ready=true]", timeout=60_000)
    assert "top layer z2" in page.inner_text("[data-run=a] .layer-note")
    assert page.locator("[data-run=b] .layer-note").is_hidden()
    assert page.locator(".label-picker").first.is_hidden()  # neither run takes a label
    assert "2 stochastic layers" in page.inner_text("[data-run=a] .run-facts")
    assert page.inner_text("[data-run=a] .plane-controls") == "plane: z2.1, z2.2 (the whole top layer)"
    for run in "ab":
        page.wait_for_function(f"() => ({DECODED})('{run}')[0] >= 1", timeout=30_000)
    before = {run: page.evaluate(DECODED, run) for run in "ab"}
    box = page.locator("[data-run=a] .overlay").bounding_box()
    page.mouse.move(box["x"] + 0.8 * box["width"], box["y"] + 0.25 * box["height"])
    for run in "ab":
        page.wait_for_function(f"() => ({DECODED})('{run}')[0] > {before[run][0]}", timeout=30_000)
        assert page.evaluate(DECODED, run)[1] != before[run][1], run  # both decoded the new point
    draw = page.locator("#draw").bounding_box()
    page.mouse.move(draw["x"] + 110, draw["y"] + 40)
    page.mouse.down()
    page.mouse.move(draw["x"] + 100, draw["y"] + 190, steps=8)
    page.mouse.up()
    page.wait_for_selector("[data-run=a] .logpx b", timeout=60_000)
    page.wait_for_selector("[data-run=b] .logpx b", timeout=60_000)
    captions = page.eval_on_selector_all(
        "[data-run=a] .encoding-body figcaption", "fs => fs.map(f => f.innerText)"
    )
    assert len(captions) == 4 and "lower layers at their prior means" in captions[2], captions
    assert page.eval_on_selector_all("[data-run=b] .encoding-body .pair figure", "fs => fs.length") == 2
    assert re.search(
        r"log p\(x\) ≈ -\d+\.\d\d ± \d+\.\d\d nats", page.inner_text("[data-run=a] .encoding-body")
    )
    assert watched_page.errors == []
    folder = Path(os.environ.get("VAELAB_EXPLORE_SCREENSHOTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / "explore-hierarchical.png"), full_page=True)
