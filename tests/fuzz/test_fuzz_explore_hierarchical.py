"""Fuzz the explorer's endpoints on a hierarchical run (conftest's `hierarchical_run`, mapped on its
top layer z_2 of 2 units) beside a plain 3-D VAE: points of every length and kind (the whole z of
4 numbers is not what this run maps), interpolations and images. The endpoints and their outcomes
are test_fuzz_explore's (`answered`): a 2xx as promised or a one-line 4xx, and the server still up.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_fuzz_explore import NUMBERS, POINT_NUMBERS, answered, checked, images

pytest.importorskip("starlette", reason="the explore extra is not installed (pip install 'vaelab[explore]')")

from starlette.testclient import TestClient  # noqa: E402

from vaelab.explore.server import Explorer  # noqa: E402
from vaelab.explore.settings import ExploreSettings  # noqa: E402
from vaelab.explore.space import LatentSpace  # noqa: E402
from vaelab.viz.run import Run  # noqa: E402

FUZZ = settings.get_profile("vaelab-fuzz")
POINTS = st.lists(POINT_NUMBERS, min_size=2, max_size=2) | st.lists(NUMBERS, max_size=5)


@pytest.fixture(scope="module")
def client(hierarchical_run, explore_runs):
    spaces = [LatentSpace(Run(hierarchical_run), k=10), LatentSpace(Run(explore_runs["vae"]), k=10)]
    settings_ = ExploreSettings(max_upload_bytes=100_000, max_upload_pixels=250_000)
    with TestClient(Explorer(spaces, settings_).app(), base_url="http://127.0.0.1") as client:
        yield client
        assert client.post("/api/run/a/decode", json={"z": [0, 0]}).status_code == 200  # still up


@FUZZ
@given(z=POINTS, run=st.sampled_from(["a", "a", "b"]))
def test_fuzz_explore_hierarchical_decode(fuzz, client, z, run):
    content = json.dumps({"z": z}).encode()
    call = lambda: answered(client.post(f"/api/run/{run}/decode", content=content), "png")  # noqa: E731
    fuzz.check("explore hierarchical decode", call, accepted=checked)


@FUZZ
@given(
    a=POINTS,
    b=POINTS,
    n=st.integers(-1, 40),
    method=st.sampled_from(["linear", "spherical"]),
)
def test_fuzz_explore_hierarchical_interpolate(fuzz, client, a, b, n, method):
    content = json.dumps({"a": a, "b": b, "n": n, "method": method}).encode()
    call = lambda: answered(client.post("/api/run/a/interpolate", content=content), "png")  # noqa: E731
    fuzz.check("explore hierarchical interpolate", call, accepted=checked)


@FUZZ
@given(data=images(), plane=st.sampled_from(["dims", "pca"]))
def test_fuzz_explore_hierarchical_encode(fuzz, client, data, plane):
    call = lambda: answered(client.post(f"/api/run/a/encode?plane={plane}", content=data), "json")  # noqa: E731
    fuzz.check("explore hierarchical encode", call, accepted=checked)
