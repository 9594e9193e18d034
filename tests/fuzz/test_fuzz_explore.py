"""Fuzz the explorer's endpoints: mutated and arbitrary request bodies, images and query strings.

Every case is one request to the running application (Starlette's TestClient, the explorer of
two tiny runs from conftest's `explore_runs`). A 2xx answer must be what the endpoint promises (a
PNG of the right size, JSON with the right keys); a 4xx answer with a one-line JSON message is a
clean error; a 5xx, a 4xx without such a message, or anything raised is a traceback. After each
test the server must still decode.
"""

from __future__ import annotations

import io
import json
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from vaelab.errors import UserError

pytest.importorskip("starlette", reason="the explore extra is not installed (pip install 'vaelab[explore]')")

from starlette.testclient import TestClient  # noqa: E402

from vaelab.explore.server import Explorer  # noqa: E402
from vaelab.explore.settings import ExploreSettings  # noqa: E402
from vaelab.explore.space import LatentSpace  # noqa: E402
from vaelab.viz.run import Run  # noqa: E402

FUZZ = settings.get_profile("vaelab-fuzz")
LATENT_DIM = 3  # the explore_runs' latent


@pytest.fixture(scope="module")
def client(explore_runs):
    spaces = [LatentSpace(Run(explore_runs[name]), k=10) for name in ("vae", "ae")]
    settings_ = ExploreSettings(max_upload_bytes=100_000, max_upload_pixels=250_000)
    with TestClient(Explorer(spaces, settings_).app(), base_url="http://127.0.0.1") as client:
        yield client
        assert client.post("/api/run/a/decode", json={"z": [0, 0, 0]}).status_code == 200  # still up


def answered(response, expect: str):
    """A 2xx response as the endpoint promised it (else a problem), a 4xx as a UserError."""
    if 400 <= response.status_code < 500:
        try:
            message = response.json()["error"]
        except (ValueError, KeyError, TypeError):
            return response, f"a {response.status_code} without a JSON message: {response.text[:200]!r}"
        if not isinstance(message, str) or "\n" in message or not message:
            return response, f"a {response.status_code} whose message is not one line: {message!r}"
        raise UserError(f"{response.status_code}: {message}")
    if response.status_code != 200:
        raise RuntimeError(f"status {response.status_code}: {response.text[:300]}")
    if expect == "png":
        with Image.open(io.BytesIO(response.content)) as image:
            image.load()
    else:
        response.json()
    return response, None


def checked(result) -> str | None:
    return result[1]


def png(size: int = 40) -> bytes:
    image = Image.new("L", (size, size), 255)
    ImageDraw.Draw(image).line([(10, 5), (25, 35)], fill=0, width=4)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


PNG = png()

NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, 1.5, -3.0, 1e300, 1e-300]),
)
POINT_NUMBERS = st.one_of(st.floats(-50, 50), NUMBERS)
POINTS = st.lists(POINT_NUMBERS, min_size=LATENT_DIM, max_size=LATENT_DIM) | st.lists(NUMBERS, max_size=4)
JSON_SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, st.text(max_size=8))
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)


@st.composite
def decode_bodies(draw) -> bytes:
    """Mostly {"z": [...]} with numbers of every kind and length; sometimes any JSON, or bytes."""
    shape = draw(st.sampled_from(["point", "point", "z", "z", "json", "bytes", "mutated"]))
    if shape == "point":  # the right length, numbers of every size
        return json.dumps(
            {"z": draw(st.lists(POINT_NUMBERS, min_size=LATENT_DIM, max_size=LATENT_DIM))}
        ).encode()
    if shape == "z":
        z = draw(st.lists(NUMBERS, min_size=0, max_size=6))
        text = json.dumps({"z": z})  # NaN and Infinity are written as the literals JSON lacks
        return text.encode()
    if shape == "json":
        return json.dumps(draw(JSON_VALUES)).encode()
    if shape == "bytes":
        return draw(st.binary(max_size=64))
    body = bytearray(b'{"z": [0.5, -1.25, 2.0]}')
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(body) - 1))
        body[at] = draw(st.integers(0, 255))
    return bytes(body)


@st.composite
def images(draw) -> bytes:
    """A PNG after byte edits (headers included), another format, or a huge declared size."""
    shape = draw(st.sampled_from(["mutated", "mutated", "format", "huge", "bytes"]))
    if shape == "bytes":
        return draw(st.binary(max_size=200))
    if shape == "huge":  # small on the wire, large once decoded: refused from its header
        side = draw(st.sampled_from([600, 2000, 20000]))
        buffer = io.BytesIO()
        Image.new("1", (side, side)).save(buffer, format="PNG")
        return buffer.getvalue()
    if shape == "format":
        mode = draw(st.sampled_from(["L", "RGB", "RGBA", "LA", "P", "1", "I", "F"]))
        fmt = draw(st.sampled_from(["PNG", "GIF", "BMP", "TIFF", "JPEG", "WEBP"]))
        size = (draw(st.integers(1, 60)), draw(st.integers(1, 60)))
        image = Image.new(mode, size, draw(st.integers(0, 255)) if mode not in ("F", "I") else 0)
        buffer = io.BytesIO()
        try:
            image.save(buffer, format=fmt)
        except (OSError, ValueError, KeyError):  # a mode the format cannot hold: send the PNG
            return PNG
        return buffer.getvalue()
    data = bytearray(PNG)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data) - 1))
        edit = draw(st.sampled_from(["byte", "truncate", "insert"]))
        if edit == "byte":
            data[at] = draw(st.integers(0, 255))
        elif edit == "truncate":
            del data[at:]
            if not data:
                break
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


@FUZZ
@given(body=decode_bodies(), run=st.sampled_from(["a", "b", "a", "c", ""]))
def test_fuzz_explore_decode(fuzz, client, body, run):
    call = lambda: answered(client.post(f"/api/run/{run}/decode", content=body), "png")  # noqa: E731
    fuzz.check("explore decode body", call, accepted=checked)


@FUZZ
@given(data=images(), frame=st.sampled_from(["digit", "fit", "none"]), run=st.sampled_from(["a", "b"]))
def test_fuzz_explore_encode(fuzz, client, data, frame, run):
    call = lambda: answered(client.post(f"/api/run/{run}/encode?frame={frame}", content=data), "json")  # noqa: E731
    fuzz.check("explore encode image", call, accepted=checked)


@FUZZ
@given(
    body=st.one_of(
        st.fixed_dictionaries(
            {"a": POINTS, "b": POINTS},
            optional={
                "n": st.integers(-2, 40) | JSON_SCALARS,
                "method": st.sampled_from(["linear", "spherical"]),
            },
        ),
        st.fixed_dictionaries(
            {},
            optional={
                "n": st.integers(-2, 200) | JSON_SCALARS,
                "seed": st.integers(-1, 2**33),
                "index": st.integers(-2, 400),
            },
        ),
        JSON_VALUES,
    ),
    endpoint=st.sampled_from(["interpolate", "samples", "encode-example"]),
)
def test_fuzz_explore_json_endpoints(fuzz, client, body, endpoint):
    expect = "json" if endpoint == "encode-example" else "png"
    content = json.dumps(body).encode()
    call = lambda: answered(client.post(f"/api/run/a/{endpoint}", content=content), expect)  # noqa: E731
    fuzz.check(f"explore {endpoint} body", call, accepted=checked)


@FUZZ
@given(
    plane=st.one_of(st.sampled_from(["dims", "pca"]), st.text(max_size=6)),
    dims=st.one_of(st.none(), st.text(max_size=8), st.lists(st.integers(-3, 10**12), max_size=3)),
    index=st.one_of(st.integers(-5, 10**12), st.text(max_size=6)),
)
def test_fuzz_explore_queries(fuzz, client, plane, dims, index):
    query = {"plane": plane}
    if dims is not None:
        query["dims"] = ",".join(map(str, dims)) if isinstance(dims, list) else dims
    call = lambda: answered(client.get("/api/run/a/map", params=query), "json")  # noqa: E731
    fuzz.check("explore map query", call, accepted=checked)
    path = f"/api/run/a/example/{quote(str(index), safe='')}"
    example = lambda: answered(client.get(path), "png")  # noqa: E731
    fuzz.check("explore example path", example, accepted=checked)


@pytest.fixture(scope="module")
def per_example_file(explore_runs) -> bytes:
    from vaelab.evaluate import per_example_path

    return per_example_path(explore_runs["vae"]).read_bytes()


@st.composite
def mutated_file(draw, data: bytes) -> bytes:
    """`data` after one to four byte edits, truncations or insertions, half of them in its header."""
    out = bytearray(data)
    header = 8 + int.from_bytes(data[:8], "little")
    for _ in range(draw(st.integers(1, 4))):
        if not out:
            break
        end = min(len(out), header) if draw(st.booleans()) else len(out)
        at = draw(st.integers(0, end - 1))
        edit = draw(st.sampled_from(["byte", "truncate", "insert", "size"]))
        if edit == "byte":
            out[at] = draw(st.integers(0, 255))
        elif edit == "truncate":
            del out[at:]
        elif edit == "insert":
            out[at:at] = draw(st.binary(min_size=1, max_size=12))
        else:  # the header's length field, the first 8 bytes, made huge or small
            out[:8] = draw(st.sampled_from([0, 1, 2**31, 2**63, len(out)])).to_bytes(8, "little")
    return bytes(out)


@FUZZ
@given(data=st.data())
def test_fuzz_explore_per_example_log_px_file(fuzz, per_example_file, tmp_path_factory, data):
    from vaelab.evaluate import per_example_path, read_per_example_log_px

    folder = tmp_path_factory.mktemp("per-example")
    per_example_path(folder).write_bytes(data.draw(mutated_file(per_example_file)))
    rows = data.draw(st.sampled_from([180, 179, 0]), label="rows of the split")

    def finite(result) -> str | None:
        if result is None:
            return "a file that exists read as absent"
        ok = result.value.isfinite().all() and result.stderr.isfinite().all() and len(result.value) == rows
        return None if ok else "non-finite or mis-shaped estimates accepted"

    fuzz.check(
        "explore per-example log p(x)", lambda: read_per_example_log_px(folder, "test", rows), accepted=finite
    )


# ------------------------------------------------------------- a conditional run's label


@pytest.fixture(scope="module")
def conditional_client(conditional_run, explore_runs):
    """A conditional run (2-D latent, labels 0..9) as "a" beside the plain VAE as "b"."""
    spaces = [LatentSpace(Run(conditional_run), k=10), LatentSpace(Run(explore_runs["vae"]), k=10)]
    with TestClient(Explorer(spaces, ExploreSettings()).app(), base_url="http://127.0.0.1") as client:
        yield client
        assert client.post("/api/run/a/decode", json={"z": [0, 0], "label": 3}).status_code == 200


LABELS = st.one_of(st.integers(-3, 12), st.integers(-(2**70), 2**70), JSON_SCALARS, JSON_VALUES)
"""Labels of every kind; the runs take 0..9 ("a") or none ("b")."""


@st.composite
def labelled(draw) -> tuple[str, object, list]:
    """(run, label, z): half of them a label and a point that run takes, half anything."""
    run = draw(st.sampled_from(["a", "b"]))
    if draw(st.booleans()):
        label = draw(st.integers(0, 9)) if run == "a" else None
        return run, label, draw(st.lists(st.floats(-3, 3), min_size=2 if run == "a" else 3, max_size=3))
    return run, draw(LABELS), draw(st.lists(POINT_NUMBERS, min_size=2, max_size=3))


@FUZZ
@given(request=labelled(), endpoint=st.sampled_from(["decode", "interpolate", "samples", "encode-example"]))
def test_fuzz_explore_label(fuzz, conditional_client, request, endpoint):
    run, label, z = request
    body = {
        "decode": {"z": z},
        "interpolate": {"a": z, "b": z[::-1], "n": 3},
        "samples": {"n": 2},
        "encode-example": {"index": 1},
    }[endpoint]
    content = json.dumps({**body, "label": label}).encode()
    expect = "json" if endpoint == "encode-example" else "png"
    call = lambda: answered(conditional_client.post(f"/api/run/{run}/{endpoint}", content=content), expect)  # noqa: E731
    fuzz.check(f"explore {endpoint} label", call, accepted=checked)


@FUZZ
@given(
    label=st.one_of(
        st.none(), st.sampled_from(["0", "7", "9"]), st.text(max_size=8), st.integers(-3, 2**40).map(str)
    ),
    run=st.sampled_from(["a", "b"]),
)
def test_fuzz_explore_encode_label(fuzz, conditional_client, label, run):
    query = "" if label is None else f"?label={quote(label, safe='')}"
    call = lambda: answered(conditional_client.post(f"/api/run/{run}/encode{query}", content=PNG), "json")  # noqa: E731
    fuzz.check("explore encode label", call, accepted=checked)
