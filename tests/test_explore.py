"""The explorer's library and server: coordinates, contours, ellipses, images in, micro-batching,
every endpoint and every kind of bad request (in process, with Starlette's TestClient).

Runs here are tiny (scikit-learn's 8x8 digits, one epoch, seconds): a 3-D VAE (sliders, PCA), an AE
and a 3-D VAE with a mixture prior (standardization by the prior's moments). The browser tests
(test_explore_browser.py) use the session's trained 28x28 pair.
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from vaelab.errors import UserError
from vaelab.estimators import log_px_importance
from vaelab.evaluate import per_example_path, read_per_example_log_px
from vaelab.explore.batching import MicroBatcher
from vaelab.explore.images import check_image_header, image_input, png_bytes
from vaelab.explore.settings import ExploreSettings
from vaelab.explore.space import LatentSpace, _mixture_density, posterior_ellipses

pytest.importorskip("starlette", reason="the explore extra is not installed (pip install 'vaelab[explore]')")

from starlette.testclient import TestClient  # noqa: E402

from vaelab.explore.server import MAX_JSON_BYTES, Explorer  # noqa: E402
from vaelab.viz.run import Run  # noqa: E402

LOCAL = "http://127.0.0.1"


def drawing(size: int = 112, *, light: bool = True, fmt: str = "PNG") -> bytes:
    """A stroke like the page's canvas sends: black ink on white (or white on black)."""
    paper, ink = (255, 0) if light else (0, 255)
    image = Image.new("L", (size, size), paper)
    ImageDraw.Draw(image).line(
        [(size * 0.3, size * 0.2), (size * 0.6, size * 0.8)], fill=ink, width=size // 10
    )
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


# ------------------------------------------------------------------------------- the runs


@pytest.fixture(scope="module")
def spaces(explore_runs):
    return {name: LatentSpace(Run(path), k=50) for name, path in explore_runs.items()}


@pytest.fixture(scope="module")
def client(spaces):
    settings = ExploreSettings(max_upload_bytes=200_000, max_upload_pixels=1_000_000)
    app = Explorer([spaces["vae"], spaces["ae"]], settings).app()
    with TestClient(app, base_url=LOCAL, raise_server_exceptions=False) as client:
        yield client


def decode(client, z, rid="a"):
    return client.post(f"/api/run/{rid}/decode", json={"z": z})


# ------------------------------------------------------------------- per-example log p(x)


def test_evaluate_stores_per_example_log_px_whose_mean_and_error_are_eval_json(explore_runs):
    run = explore_runs["vae"]
    evaluation = json.loads((run / "eval.json").read_text())
    stored = read_per_example_log_px(run, "test", evaluation["num_examples"])
    assert stored is not None and stored.k == 20 and stored.split == "test"
    assert float(stored.value.mean()) == pytest.approx(evaluation["log_px"], rel=1e-6)  # float32 mean there
    combined = float(stored.stderr.square().sum().sqrt()) / evaluation["num_examples"]
    assert combined == pytest.approx(evaluation["log_px_stderr"], rel=1e-6)
    assert read_per_example_log_px(explore_runs["ae"], "test", evaluation["num_examples"]) is None


def test_per_example_log_px_is_checked_before_use(tmp_path):
    from safetensors.torch import save_file

    path = per_example_path(tmp_path)
    good = {
        "log_px": torch.full((4,), -80.0, dtype=torch.float64),
        "stderr": torch.ones(4, dtype=torch.float64),
    }
    header = {"k": "20", "split": "test"}
    cases = [
        ({**good, "log_px": torch.full((3,), -80.0, dtype=torch.float64)}, header, "shape \\(4,\\)"),
        ({**good, "log_px": torch.full((4,), math.nan, dtype=torch.float64)}, header, "not finite"),
        ({**good, "log_px": torch.zeros(4)}, header, "float64"),
        ({"log_px": good["log_px"]}, header, "expected tensors log_px and stderr"),
        (good, {"k": "1", "split": "test"}, "k >= 2"),
        (good, {"k": "20", "split": "valid"}, "split 'test'"),
    ]
    for tensors, metadata, problem in cases:
        save_file(tensors, str(path), metadata=metadata)
        with pytest.raises(UserError, match=problem):
            read_per_example_log_px(tmp_path, "test", 4)
    path.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage")
    with pytest.raises(UserError, match="corrupt or truncated"):
        read_per_example_log_px(tmp_path, "test", 4)
    save_file(good, str(path), metadata=header)
    assert read_per_example_log_px(tmp_path, "test", 4).value.tolist() == [-80.0] * 4
    # a file from before the header named log_det_nats held the model input's log p(x)
    assert read_per_example_log_px(tmp_path, "test", 4, log_det_nats=-5.0).value.tolist() == [-85.0] * 4


def test_per_example_log_px_is_stored_of_the_data_as_given(tmp_path):
    """Like eval.json's mean, the stored values include the input transform's log-determinant
    (e.g. -D log 256 for dequantized 8-bit data), and reading them back does not add it twice."""
    from vaelab.estimators import DatasetLogPx
    from vaelab.evaluate import write_per_example_log_px

    value = torch.tensor([10.0, 20.0], dtype=torch.float64)
    estimate = DatasetLogPx(value, torch.ones(2, dtype=torch.float64), k=5, method="importance", seconds=0.0)
    write_per_example_log_px(tmp_path, "test", estimate, log_det_nats=-4 * math.log(256))
    stored = read_per_example_log_px(tmp_path, "test", 2, log_det_nats=-4 * math.log(256))
    assert stored is not None
    assert stored.value.tolist() == pytest.approx(
        [10.0 - 4 * math.log(256), 20.0 - 4 * math.log(256)], abs=1e-12
    )


# ---------------------------------------------------------------------------------- the math


def test_mixture_density_is_a_normalized_gaussian_mixture():
    weights = np.array([0.3, 0.7])
    centres = np.array([[0.0, 0.0], [2.0, -1.0]])
    covariances = np.array([[[1.0, 0.3], [0.3, 0.5]], [[0.4, 0.0], [0.0, 2.0]]])
    grid = np.linspace(-9, 11, 801)
    g1, g2 = np.meshgrid(grid, grid)
    density = _mixture_density(np.stack([g1.ravel(), g2.ravel()], 1), weights, centres, covariances)
    assert density.sum() * (grid[1] - grid[0]) ** 2 == pytest.approx(1.0, abs=1e-6)
    # at a centre of a single Gaussian: 1 / (2 pi sqrt(det C))
    single = _mixture_density(np.zeros((1, 2)), np.ones(1), np.zeros((1, 2)), covariances[:1])
    assert single[0] == pytest.approx(1 / (2 * math.pi * math.sqrt(0.5 - 0.09)), rel=1e-12)


def test_posterior_ellipses_are_the_one_and_two_sigma_sets_of_the_projected_gaussian():
    rng = np.random.default_rng(0)
    v2 = np.linalg.qr(rng.standard_normal((4, 4)))[0][:, :2]  # two orthonormal directions in 4-D
    variance = np.array([0.5, 2.0, 0.1, 1.0])
    centre = np.array([0.3, -1.0])
    covariance = v2.T @ np.diag(variance) @ v2
    for r, ellipse in zip((1.0, 2.0), posterior_ellipses(centre, v2, variance), strict=True):
        d = np.asarray(ellipse) - centre
        mahalanobis = np.einsum("ni,ij,nj->n", d, np.linalg.inv(covariance), d)
        np.testing.assert_allclose(mahalanobis, r**2, rtol=1e-4)  # points are rounded to 1e-5


def test_standard_normal_prior_contours_are_the_sigma_circles(spaces):
    space = spaces["vae"]
    map_ = space.latent_map(space.plane())
    for contour in map_["contours"]:
        points = np.concatenate([np.asarray(line) for line in contour["lines"]])
        radius = np.hypot(points[:, 0], points[:, 1])
        # the HDR level comes from 20,000 draws: its radius is within a few hundredths of r
        assert np.abs(radius - contour["sigma"]).max() < 0.06, contour["sigma"]
        assert contour["mass"] == pytest.approx(1 - math.exp(-(contour["sigma"] ** 2) / 2), abs=1e-4)


def test_coordinates_are_prior_standardized_and_planes_round_trip(spaces):
    mog = spaces["mog"]
    p_z = mog.model.prior()
    torch.testing.assert_close(mog.prior_loc, p_z.mean.detach())
    torch.testing.assert_close(mog.prior_scale, p_z.variance.detach().sqrt())
    u = torch.tensor([[0.5, -1.0, 2.0]])
    torch.testing.assert_close(mog.to_z(u), p_z.mean.detach() + p_z.variance.detach().sqrt() * u)
    for space in spaces.values():
        for plane in (space.plane("dims"), space.plane("dims", (2, 0)), space.plane("pca")):
            np.testing.assert_allclose(plane.basis.T @ plane.basis, np.eye(space.latent_dim), atol=1e-12)
            w = space.plane_coordinates(plane, space.u_codes)
            np.testing.assert_allclose(plane.origin + w @ plane.basis.T, space.u_codes, atol=1e-9)
        dims = space.plane("dims", (2, 0))
        assert dims.axis_names[:2] == ("z3", "z1") and sorted(dims.axis_names) == ["z1", "z2", "z3"]
    pca = spaces["vae"].plane("pca")
    assert pca.explained is not None and list(pca.explained) == sorted(pca.explained, reverse=True)
    with pytest.raises(UserError, match="two different latent dims"):
        spaces["vae"].plane("dims", (1, 1))


def test_default_plane_takes_the_two_most_used_dims_lower_numbered_across(spaces):
    for space in spaces.values():
        order = np.argsort(-np.asarray(space.dim_scores), kind="stable")
        assert space.plane().axis_names[:2] == tuple(f"z{d + 1}" for d in sorted(order[:2]))
        assert space.plane().axis_names[2:] == tuple(f"z{d + 1}" for d in order[2:])


def test_encoding_reports_the_library_estimate_and_where_it_falls_among_the_test_set(spaces):
    space = spaces["vae"]
    x = space.run.x[:1]
    encoding = space.encode(x, space.plane())
    expected = log_px_importance(space.model, x, 50, generator=torch.Generator().manual_seed(0))
    assert encoding.log_px == float(expected.value[0]) and encoding.log_px_stderr == float(expected.stderr[0])
    assert encoding.nll_bpd == pytest.approx(-encoding.log_px / (64 * math.log(2)), rel=1e-12)
    stored = space.test_log_px.value
    assert encoding.percentile == pytest.approx(float((stored < encoding.log_px).double().mean()))
    mean = space.model.posterior(x).mean[0].detach().double().numpy()
    np.testing.assert_allclose(encoding.u, mean, atol=1e-5)  # N(0, I) prior: u = z
    assert len(encoding.ellipses) == 2 and encoding.note is None
    ae = spaces["ae"].encode(spaces["ae"].run.x[:1], spaces["ae"].plane())
    assert ae.log_px is None and ae.ellipses == [] and "no ELBO or log p(x)" in ae.note


def test_drawings_are_binarized_as_the_test_split_when_the_run_binarizes(spaces):
    space = spaces["vae"]
    image, inverted = image_input(drawing(), space.x_shape, max_bytes=10**6, max_pixels=10**6)
    assert inverted and image.shape == (1, 8, 8)
    x = space.model_input(image)
    torch.testing.assert_close(x, torch.from_numpy(image)[None])  # digits: float data, no binarization
    assert space.run.config.data.binarize == "none"


# ----------------------------------------------------------------------------------- images


def test_a_drawing_is_inverted_and_framed_as_mnist_digits_are():
    image, inverted = image_input(drawing(224), (1, 28, 28), max_bytes=10**6, max_pixels=10**6)
    assert inverted and image.shape == (1, 28, 28) and image.dtype == np.float32
    grey = image[0]
    rows, cols = np.nonzero(grey > 0.1)
    assert rows.max() - rows.min() + 1 <= 21 and cols.max() - cols.min() + 1 <= 21  # 20 of 28 (+ rounding)
    mass = grey.sum()
    centre = ((grey.sum(1) @ np.arange(28)) / mass, (grey.sum(0) @ np.arange(28)) / mass)
    assert abs(centre[0] - 13.5) < 1.0 and abs(centre[1] - 13.5) < 1.0
    dark, dark_inverted = image_input(
        drawing(224, light=False), (1, 28, 28), max_bytes=10**6, max_pixels=10**6
    )
    assert not dark_inverted
    np.testing.assert_allclose(dark, image, atol=0.02)
    blank = Image.new("L", (50, 50), 255)
    buffer = io.BytesIO()
    blank.save(buffer, format="PNG")
    empty, _ = image_input(buffer.getvalue(), (1, 28, 28), max_bytes=10**6, max_pixels=10**6)
    assert not empty.any()


def test_images_are_checked_before_they_are_decoded():
    big = drawing(64)
    with pytest.raises(UserError, match="max_upload_bytes 100"):
        check_image_header(big, max_bytes=100, max_pixels=10**6)
    bomb = io.BytesIO()
    Image.new("L", (5000, 5000), 0).save(bomb, format="PNG")  # a few KB on the wire, 25 Mpx unpacked
    with pytest.raises(UserError, match="5000x5000 pixels, more than max_upload_pixels"):
        image_input(bomb.getvalue(), (1, 28, 28), max_bytes=10**6, max_pixels=10**6)
    with pytest.raises(UserError, match="not an image Pillow can read"):
        check_image_header(b"not an image at all", max_bytes=10**6, max_pixels=10**6)
    with pytest.raises(UserError, match="pixels cannot be decoded"):
        image_input(big[: len(big) // 2], (1, 28, 28), max_bytes=10**6, max_pixels=10**6)
    with pytest.raises(UserError, match="request body is empty"):
        check_image_header(b"", max_bytes=10, max_pixels=10)
    with pytest.raises(UserError, match="not grey or RGB images"):
        image_input(big, (64,), max_bytes=10**6, max_pixels=10**6)


def test_png_bytes_draw_grey_as_ink_on_paper_and_rgb_as_is():
    grey = np.array([[0.0, 1.0]], dtype=np.float32)
    with Image.open(io.BytesIO(png_bytes(grey))) as image:
        assert image.mode == "L" and np.asarray(image).tolist() == [[255, 0]]  # 0 is paper, 1 is ink
    rgb = np.zeros((1, 1, 3), dtype=np.float32)
    rgb[0, 0] = (1.0, 0.5, 0.0)
    with Image.open(io.BytesIO(png_bytes(rgb))) as image:
        assert image.mode == "RGB" and np.asarray(image).tolist() == [[[255, 128, 0]]]


# ----------------------------------------------------------------------------- micro-batching


def test_concurrent_requests_share_forward_passes_and_each_gets_its_own_answer():
    from concurrent.futures import ThreadPoolExecutor

    sizes: list[int] = []

    def compute(items):
        sizes.append(len(items))
        return [item * 10 for item in items]

    async def scenario(max_batch):
        batcher = MicroBatcher(compute, ThreadPoolExecutor(1), max_batch=max_batch, max_wait=0.01)
        await batcher.start()
        results = await asyncio.gather(*(batcher.submit(i) for i in range(40)))
        await batcher.close()
        return results, batcher.stats

    results, stats = asyncio.run(scenario(16))
    assert results == [i * 10 for i in range(40)]
    assert stats.requests == 40 and stats.batches == len(sizes) < 40 and max(sizes) <= 16
    sizes.clear()
    results, stats = asyncio.run(scenario(1))  # off: one pass per request
    assert results == [i * 10 for i in range(40)] and stats.batches == 40 and sizes == [1] * 40


def test_a_failing_batch_fails_its_callers_and_the_next_batch_still_runs():
    from concurrent.futures import ThreadPoolExecutor

    def compute(items):
        if -1 in items:
            raise ValueError("bad item")
        return list(items)

    async def scenario():
        batcher = MicroBatcher(compute, ThreadPoolExecutor(1), max_batch=8, max_wait=0.01)
        await batcher.start()
        failed = await asyncio.gather(batcher.submit(-1), batcher.submit(2), return_exceptions=True)
        after = await batcher.submit(3)
        await batcher.close()
        return failed, after

    failed, after = asyncio.run(scenario())
    assert all(isinstance(f, ValueError) for f in failed) and after == 3


# --------------------------------------------------------------------------------- endpoints


def test_page_and_its_scripts_come_from_the_package_with_no_outside_address(client):
    page = client.get("/")
    assert page.status_code == 200 and "default-src 'self'" in page.headers["content-security-policy"]
    assert '<script src="/static/explore.js"' in page.text
    for name in ("explore.js", "explore.css"):
        response = client.get(f"/static/{name}")
        assert response.status_code == 200 and len(response.text) > 1000
    static = Path(__file__).resolve().parents[1] / "src" / "vaelab" / "explore" / "static"
    for path in static.iterdir():
        text = path.read_text(encoding="utf-8")
        assert "http:" not in text and "https:" not in text and "//cdn" not in text, path.name


def test_runs_describe_each_panel_or_say_why_it_does_not_apply(client):
    runs = client.get("/api/runs").json()["runs"]
    vae, ae = runs
    assert (vae["id"], ae["id"]) == ("a", "b") and vae["latent_dim"] == 3 and vae["x_shape"] == [1, 8, 8]
    assert vae["samples_note"] is None and vae["test_log_px"]["k"] == 20
    assert sum(vae["test_log_px"]["counts"]) == vae["num_test"]
    assert "no prior to sample" in ae["samples_note"] and "no ELBO or log p(x)" in ae["log_px_note"]
    assert ae["test_log_px"]["note"] == ae["log_px_note"]


def test_map_holds_codes_labels_contours_and_sliders(client, spaces):
    for query in ("", "?plane=pca", "?plane=dims&dims=3,1"):
        map_ = client.get(f"/api/run/a/map{query}").json()
        assert len(map_["points"]) == len(map_["labels"]) == spaces["vae"].run.x.shape[0]
        assert len(map_["contours"]) == 3 and all(c["lines"] for c in map_["contours"])
        assert len(map_["sliders"]) == 1 and len(map_["basis"]) == 3
        assert map_["class_names"] == [str(c) for c in range(10)]
    assert client.get("/api/run/a/map?plane=dims&dims=3,1").json()["axis_names"][:2] == ["z3", "z1"]


def test_decode_returns_the_decoder_mean_as_png(client, spaces):
    first, second = decode(client, [0.0, 0.0, 0.0]), decode(client, [2.0, -1.0, 0.5])
    assert first.status_code == second.status_code == 200 and first.headers["content-type"] == "image/png"
    assert first.content != second.content
    with Image.open(io.BytesIO(second.content)) as image:
        decoded = 1 - np.asarray(image, dtype=np.float64) / 255
    expected = spaces["vae"].decode(torch.tensor([[2.0, -1.0, 0.5]]))[0]
    np.testing.assert_allclose(decoded, expected, atol=0.5 / 255 + 1e-6)  # 8-bit rounding only


def test_encode_a_drawing_and_a_test_image(client):
    response = client.post("/api/run/a/encode", content=drawing())
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["inverted"] and len(body["u"]) == 3 and len(body["ellipses"]) == 2
    assert body["log_px"] < 0 and body["log_px_stderr"] > 0 and 0 <= body["percentile"] <= 1
    assert body["input"].startswith("data:image/png;base64,") and body["k"] == 50
    example = client.post("/api/run/a/encode-example", json={"index": 3, "plane": "pca"}).json()
    assert example["index"] == 3 and example["label_name"] == str(example["label"])
    assert isinstance(example["stored_log_px"], float)
    ae = client.post("/api/run/b/encode", content=drawing()).json()
    assert ae["log_px"] is None and "no ELBO" in ae["note"]


def test_interpolation_strip_and_prior_samples(client):
    strip = client.post("/api/run/a/interpolate", json={"a": [-2, 0, 0], "b": [2, 1, 0], "n": 7})
    assert strip.status_code == 200
    with Image.open(io.BytesIO(strip.content)) as image:
        assert image.size == (7 * 8 + 6, 8)  # 7 cells of 8 pixels, 1 apart
    slerp = client.post(
        "/api/run/a/interpolate", json={"a": [-2, 0, 0], "b": [2, 1, 0], "method": "spherical"}
    )
    assert slerp.status_code == 200 and slerp.content != strip.content
    samples = client.post("/api/run/a/samples", json={"n": 9, "seed": 1})
    assert samples.status_code == 200 and "prior samples" in json.loads(samples.headers["x-title"])
    assert client.post("/api/run/a/samples", json={"n": 9, "seed": 1}).content == samples.content
    example = client.get("/api/run/a/example/0")
    assert example.status_code == 200 and example.headers["content-type"] == "image/png"


@pytest.mark.parametrize(
    "method, path, kwargs, status, message",
    [
        ("post", "/api/run/a/decode", {"content": b'{"z": [0, 0'}, 400, "Invalid JSON"),
        ("post", "/api/run/a/decode", {"content": b'{"z": [NaN, 0, 0]}'}, 422, "finite number"),
        ("post", "/api/run/a/decode", {"content": b'{"z": [1e400, 0, 0]}'}, 422, "finite"),
        ("post", "/api/run/a/decode", {"json": {"z": [0, 0]}}, 422, "2 numbers, this run's latent has 3"),
        ("post", "/api/run/a/decode", {"json": {"z": [1e6, 0, 0]}}, 422, "within"),
        ("post", "/api/run/a/decode", {"json": {"z": ["1", 0, 0]}}, 422, "valid number"),
        ("post", "/api/run/a/decode", {"json": {"z": [0, 0, 0], "path": "/etc"}}, 422, "Extra inputs"),
        ("post", "/api/run/a/samples", {"json": {"\n": 1}}, 422, "\\n: Extra inputs"),  # one line (fuzz)
        ("post", "/api/run/a/decode", {"json": [0, 0, 0]}, 422, "should be an object"),
        ("post", "/api/run/a/decode", {"content": b" " * (MAX_JSON_BYTES + 1)}, 413, "limit"),
        ("post", "/api/run/c/decode", {"json": {"z": [0, 0, 0]}}, 404, "no run 'c'"),
        ("post", "/api/run/..%2F..%2Fetc/decode", {"json": {"z": [0, 0, 0]}}, 404, "Not Found"),
        ("post", "/api/run/ab/decode", {"json": {"z": [0, 0, 0]}}, 404, "no run 'ab'"),
        ("get", "/api/run/a/decode", {}, 405, "Method Not Allowed"),
        ("get", "/api/nothing", {}, 404, "Not Found"),
        ("get", "/static/../server.py", {}, 404, "Not Found"),
        ("get", "/api/run/a/map?plane=tsne", {}, 422, "not one of dims, pca"),
        ("get", "/api/run/a/map?dims=1,1", {}, 422, "two different latent dims"),
        ("get", "/api/run/a/map?dims=1,9", {}, 422, "two different latent dims"),
        ("get", "/api/run/a/map?dims=x", {}, 422, "expected two latent dims"),
        ("get", "/api/run/a/example/500000", {}, 422, "split has rows"),
        ("get", "/api/run/a/example/-1", {}, 422, "expected a row number"),
        ("get", "/api/run/a/example/%C2%B2", {}, 422, "expected a row number"),  # '²' passes isdigit (fuzz)
        ("get", "/api/run/a/map?dims=%C2%B9,%C2%B2", {}, 422, "expected two latent dims"),
        ("post", "/api/run/a/encode", {"content": b"GIF89a broken"}, 422, "not an image"),
        ("post", "/api/run/a/encode", {"content": b"x" * 200_001}, 413, "limit of 200000"),
        ("post", "/api/run/a/encode?frame=zoom", {"content": b"x"}, 422, "not one of digit, fit"),
        ("post", "/api/run/a/encode-example", {"json": {"index": -1}}, 422, "greater than or equal"),
        ("post", "/api/run/a/interpolate", {"json": {"a": [0, 0, 0], "b": [0, 0, 0], "n": 1000}}, 422, "n:"),
        ("post", "/api/run/a/interpolate", {"json": {"a": [0, 0, 0], "b": [0, 0]}}, 422, "b: 2 numbers"),
        ("post", "/api/run/a/samples", {"json": {"n": 10**6}}, 422, "n:"),
        ("post", "/api/run/a/samples", {"json": {"seed": 2**32}}, 422, "seed:"),
        ("post", "/api/run/b/samples", {"json": {}}, 409, "no prior to sample"),
    ],
)
def test_bad_requests_get_a_4xx_json_message_and_the_server_stays_up(
    client, method, path, kwargs, status, message
):
    response = getattr(client, method)(path, **kwargs)
    assert response.status_code == status, response.text
    assert message in response.json()["error"] and "Traceback" not in response.text
    assert decode(client, [0.0, 0.0, 0.0]).status_code == 200


def test_a_huge_image_declared_in_its_header_is_refused_before_decoding(client):
    bomb = io.BytesIO()
    Image.new("L", (1200, 1200), 0).save(bomb, format="PNG")  # 1.44 Mpx > the client's 1 Mpx limit
    response = client.post("/api/run/a/encode", content=bomb.getvalue())
    assert response.status_code == 422 and "more than max_upload_pixels" in response.json()["error"]


def test_requests_for_another_host_name_are_refused(client):
    response = client.get("/api/runs", headers={"Host": "attacker.example:8765"})
    assert response.status_code == 400 and "is not this machine" in response.json()["error"]
    assert client.get("/api/runs", headers={"Host": "localhost:8765"}).status_code == 200
    assert client.get("/api/runs", headers={"Host": "[::1]:8765"}).status_code == 200


def test_serving_leaves_the_run_directories_as_they_were(explore_runs, spaces):
    def snapshot():
        return {
            p: (p.stat().st_mtime_ns, p.stat().st_size)
            for run in explore_runs.values()
            for p in sorted(run.rglob("*"))
        }

    before = snapshot()
    app = Explorer([spaces["vae"], spaces["mog"]], ExploreSettings()).app()
    with TestClient(app, base_url=LOCAL) as local:
        local.get("/api/runs")
        local.get("/api/run/b/map?plane=pca")
        local.post("/api/run/b/encode", content=drawing())
        local.post("/api/run/b/samples", json={})
        decode(local, [1.0, 1.0, 1.0], rid="b")
    assert snapshot() == before


# ---------------------------------------------------------------------------------- the CLI


def test_explore_command_errors_are_one_line(explore_runs, tmp_path, capsys):
    from vaelab.cli import main

    vae, ae, mog = (str(explore_runs[name]) for name in ("vae", "ae", "mog"))
    for argv, problem in [
        ([str(tmp_path / "nothing")], "run directory not found"),
        ([str(explore_runs["vae"]), "--port", "70000"], "argument --port"),
        ([str(explore_runs["vae"]), "--max-batch", "0"], "argument --max-batch"),
        ([str(explore_runs["vae"]), "--batch-wait-ms", "nan"], "argument --batch-wait-ms"),
        ([vae, ae, mog], "unrecognized arguments"),
    ]:
        assert main(["explore", *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("vaelab: error: ") and problem in err[0], err


def test_another_host_is_warned_about_and_a_busy_port_is_one_line(explore_runs, capsys):
    import socket

    from vaelab.cli import main

    # 192.0.2.1 is TEST-NET-1 (RFC 5737): no interface here has it, so binding fails and nothing is sent
    assert main(["explore", str(explore_runs["vae"]), "--host", "192.0.2.1"]) == 2
    err = capsys.readouterr().err
    assert "warning: --host 192.0.2.1 serves the explorer" in err and "cannot listen on 192.0.2.1" in err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["explore", str(explore_runs["vae"]), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert "warning" not in err and f"cannot listen on 127.0.0.1:{port}" in err


def test_settings_know_loopback_addresses():
    assert ExploreSettings().loopback and ExploreSettings(host="127.0.0.2").loopback
    assert ExploreSettings(host="::1").loopback and not ExploreSettings(host="0.0.0.0").loopback


# -------------------------------------------------------------------------------- the benchmark


@pytest.mark.slow
def test_load_benchmark_runs_both_settings_in_its_smoke_mode(explore_runs):
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    command = [sys.executable, "-m", "benchmarks.explorer_load", "--smoke", "--run", str(explore_runs["vae"])]
    done = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    for setting in ("on", "off"):
        assert re.search(rf"decode, micro-batching {setting} +[\d.]+ req/s +p50 +[\d.]+ +p95", done.stdout)
    assert "ratio decode p95 off / on:" in done.stdout and "failed 0 of" in done.stdout
