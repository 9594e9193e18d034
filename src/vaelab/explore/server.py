"""The explorer's web application (Starlette) and `serve`, which runs it under uvicorn.

Endpoints (RID is "a", or "b" for a second run; everything else the client sends is a number,
a short word or image bytes, never a path; a bad request gets a 4xx with {"error": "..."}):

    GET  /                               the page (scripts and styles from /static, no CDN)
    GET  /api/runs                       each run's facts (`LatentSpace.info`)
    GET  /api/stats                      decode requests and forward passes per run (batching)
    GET  /api/run/RID/map?plane=&dims=   codes in plane coordinates, labels, the prior's contours
    POST /api/run/RID/decode             {"z": [u_1..u_Z]} -> PNG of E[x|z] (micro-batched)
    POST /api/run/RID/encode?plane=&dims=&frame=   image bytes -> JSON encoding, log p(x), ...
    POST /api/run/RID/encode-example     {"index": i, "plane": .., "dims": [i, j]} -> the same
    GET  /api/run/RID/example/INDEX      PNG of test image INDEX
    POST /api/run/RID/interpolate        {"a": u, "b": u, "n": 10, "method": "linear"} -> PNG strip
    POST /api/run/RID/samples            {"n": 16, "seed": 0} -> PNG of prior samples (409 for an AE)

A run whose model is conditional on a label (q(z|x, y), p(x|z, y)) takes the label y, a class
code 0..K-1 (`info()["classes"]` names them), as "label" in the decode, interpolate and samples
bodies and as `label=` in encode's query, and needs it there; encode-example takes it optionally
(default: the example's own). Its map's codes are E_q[z|x, y] at the true labels. A label sent
to a run that takes none, or outside 0..K-1, is a 422.

A hierarchical run (a Ladder VAE) is mapped on its top layer z_L: its z, u and dims are z_L's,
decoding follows the generative path down with each lower layer at its conditional prior mean, and
`info()["layer_note"]` says so (`vaelab.explore.layers`).

Coordinates are prior-standardized (`vaelab.explore.space`). Model work runs on two worker
threads, one for decoding (batched, `MicroBatcher`) and one for the rest, so a slow
importance-sampling estimate never holds up the live decoding.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from pydantic import Field, ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from vaelab.config import Options, Seed
from vaelab.errors import UserError
from vaelab.explore.batching import MicroBatcher
from vaelab.explore.images import image_input, png_bytes
from vaelab.explore.settings import LOOPBACK_HOSTS, ExploreSettings
from vaelab.explore.space import Encoding, LatentSpace, Plane, PlaneBasis
from vaelab.viz.run import Run

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")
RUN_IDS = ("a", "b")
MAX_JSON_BYTES = 256 * 1024
"""A JSON request holds at most two latent points: 256 KiB is thousands of latent dims."""
MAX_LATENT_NUMBERS = 16_384
MAX_STRIP = 32
MAX_SAMPLES = 100
MAP_CACHE = 64  # (run, plane, dims) maps kept; each is the test codes and a few contour lines
PAGE_HEADERS = {
    # the page may load only from this server (and show the images it makes): no CDN, no beacon
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}
PNG_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


class RequestError(Exception):
    """A bad request: its HTTP status and a one-line message for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# ------------------------------------------------------------------------------ request bodies

Latent = Annotated[list[float], Field(min_length=1, max_length=MAX_LATENT_NUMBERS)]
Dims = Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=2, max_length=2)]


# a class code; checked against the run's classes (and whether it takes any) by `Explorer.label`
Label = Annotated[int, Field(ge=0, le=2**31)]


class DecodeRequest(Options):
    z: Latent
    label: Label | None = None


class ExampleRequest(Options):
    index: Annotated[int, Field(ge=0)]
    plane: Plane = "dims"
    dims: Dims | None = None
    label: Label | None = None


class InterpolateRequest(Options):
    a: Latent
    b: Latent
    n: Annotated[int, Field(ge=2, le=MAX_STRIP)] = 10
    method: Literal["linear", "spherical"] = "linear"
    label: Label | None = None


class SamplesRequest(Options):
    n: Annotated[int, Field(ge=1, le=MAX_SAMPLES)] = 16
    seed: Seed = 0
    label: Label | None = None


def _validation_message(err: ValidationError) -> str:
    """A pydantic error as one line: where, and what (malformed JSON included)."""
    first = err.errors()[0]
    # a key the client chose may hold a newline or be long: escaped and cut, the message stays one line
    where = ".".join(
        json.dumps(part)[1:-1][:40] if isinstance(part, str) else str(part) for part in first["loc"]
    )
    message = first.get("msg", "invalid")
    return f"{where}: {message}" if where else message


async def read_body(request: Request, limit: int, what: str) -> bytes:
    """The request body, refused with 413 as soon as it passes `limit` bytes (a declared
    Content-Length is checked before anything is read)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"{what}: {declared} bytes, more than the limit of {limit}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise RequestError(413, f"{what}: more than the limit of {limit} bytes")
    return bytes(body)


async def read_json(request: Request, model: type[Options]) -> Any:
    """The body as `model`: strict JSON, finite numbers, no unknown keys (else 400/422)."""
    body = await read_body(request, MAX_JSON_BYTES, "JSON body")
    try:
        return model.model_validate_json(body)
    except ValidationError as err:
        status = 400 if err.errors()[0].get("type") == "json_invalid" else 422
        raise RequestError(status, _validation_message(err)) from None


def data_url(image) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(image)).decode("ascii")


# ----------------------------------------------------------------------------- the application


class Explorer:
    """The loaded runs and the work queues that serve them."""

    def __init__(self, spaces: Sequence[LatentSpace], settings: ExploreSettings) -> None:
        if not 1 <= len(spaces) <= len(RUN_IDS):
            raise ValueError(f"the explorer shows one or two runs, got {len(spaces)}")
        self.spaces = dict(zip(RUN_IDS, spaces, strict=False))
        self.settings = settings
        # OpenMP's thread count is per calling thread: set it in each worker, or each would start a
        # team as wide as the machine, and two spinning teams on 2 cores stall each other
        self.decode_executor, self.work_executor = (
            ThreadPoolExecutor(
                1, f"vaelab-{name}", initializer=torch.set_num_threads, initargs=(settings.threads,)
            )
            for name in ("decode", "work")
        )
        self.batchers = {
            rid: MicroBatcher(
                self._decoder(space),
                self.decode_executor,
                max_batch=settings.max_batch,
                max_wait=settings.batch_wait_ms / 1000,
            )
            for rid, space in self.spaces.items()
        }
        self._maps: dict[tuple[str, str, tuple[int, int] | None], dict[str, Any]] = {}

    @staticmethod
    def _decoder(space: LatentSpace) -> Callable[[Sequence[tuple[torch.Tensor, int | None]]], list[bytes]]:
        """Decode a batch of (u, label) points; a conditional run's labels go with them, (B,)."""

        def decode(points: Sequence[tuple[torch.Tensor, int | None]]) -> list[bytes]:
            u = torch.stack([point for point, _ in points])  # (B, Z)
            labels = None if not space.conditional else torch.tensor([label for _, label in points])
            return [png_bytes(image) for image in space.decode(u, labels)]

        return decode

    @staticmethod
    def label(space: LatentSpace, label: int | None) -> int | None:
        """The label a request names, checked against the run (a 422 where it does not fit)."""
        try:
            return space.check_label(label)
        except UserError as err:
            raise RequestError(422, str(err)) from None

    def space(self, rid: str) -> tuple[str, LatentSpace]:
        if rid not in self.spaces:
            names = ", ".join(f"{r} ({s.run.dir.name})" for r, s in self.spaces.items())
            raise RequestError(404, f"no run {rid[:20]!r}: this explorer serves {names}")
        return rid, self.spaces[rid]

    async def run_work(self, function: Callable[..., Any], *args: Any) -> Any:
        """function(*args) on the work thread; a UserError becomes a 422."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self.work_executor, function, *args)
        except UserError as err:
            raise RequestError(422, str(err)) from None

    def plane(self, space: LatentSpace, kind: str, dims: Sequence[int] | None) -> PlaneBasis:
        if kind not in ("dims", "pca"):
            raise RequestError(422, f"plane: {kind[:20]!r} is not one of dims, pca")
        pair = None
        if dims is not None:
            if len(dims) != 2 or not all(1 <= d <= space.latent_dim for d in dims) or dims[0] == dims[1]:
                raise RequestError(422, f"dims: need two different latent dims of 1..{space.latent_dim}")
            pair = (dims[0] - 1, dims[1] - 1)
        try:
            return space.plane("pca" if kind == "pca" else "dims", pair)
        except UserError as err:
            raise RequestError(422, str(err)) from None

    def plane_from_query(self, request: Request, space: LatentSpace) -> tuple[str, tuple[int, int] | None]:
        kind = request.query_params.get("plane", "dims")
        text = request.query_params.get("dims")
        if text is None or text == "":
            return kind, None
        parts = text.split(",")
        if len(parts) != 2 or not all(_row_number(p) for p in parts):
            raise RequestError(422, f"dims: expected two latent dims like 1,2, got {text[:40]!r}")
        return kind, (int(parts[0]), int(parts[1]))

    def encoding_json(self, space: LatentSpace, encoding: Encoding, extra: dict[str, Any]) -> dict[str, Any]:
        return {
            "u": encoding.u,
            "w": encoding.w,
            "ellipses": encoding.ellipses,
            "input": data_url(encoding.input_image),
            "reconstruction": data_url(encoding.reconstruction),
            "decoded_code": None if encoding.decoded_code is None else data_url(encoding.decoded_code),
            "log_px": encoding.log_px,
            "log_px_stderr": encoding.log_px_stderr,
            "nll_bpd": encoding.nll_bpd,
            "k": encoding.k,
            "percentile": encoding.percentile,
            "note": encoding.note,
            **extra,
        }

    # ---------------------------------------------------------------------------- endpoints

    async def page(self, request: Request) -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html", headers=PAGE_HEADERS)

    async def runs(self, request: Request) -> Response:
        infos = await self.run_work(lambda: [dict(id=rid, **s.info()) for rid, s in self.spaces.items()])
        return JSONResponse({"runs": infos, "max_strip": MAX_STRIP, "max_samples": MAX_SAMPLES})

    async def latent_map(self, request: Request) -> Response:
        rid, space = self.space(request.path_params["rid"])
        kind, dims = self.plane_from_query(request, space)
        plane = self.plane(space, kind, dims)
        key = (rid, kind, dims)
        if key not in self._maps:
            if len(self._maps) >= MAP_CACHE:
                self._maps.pop(next(iter(self._maps)))
            self._maps[key] = await self.run_work(space.latent_map, plane)
        return JSONResponse(self._maps[key])

    async def decode(self, request: Request) -> Response:
        rid, space = self.space(request.path_params["rid"])
        body: DecodeRequest = await read_json(request, DecodeRequest)
        try:
            u = space.check_u(body.z)
        except UserError as err:
            raise RequestError(422, str(err)) from None
        png = await self.batchers[rid].submit((u, self.label(space, body.label)))
        return Response(png, media_type="image/png", headers=PNG_HEADERS)

    async def encode(self, request: Request) -> Response:
        rid, space = self.space(request.path_params["rid"])
        kind, dims = self.plane_from_query(request, space)
        plane = self.plane(space, kind, dims)
        frame = request.query_params.get("frame", "digit")
        if frame not in ("digit", "fit"):
            raise RequestError(422, f"frame: {frame[:20]!r} is not one of digit, fit")
        text = request.query_params.get("label")
        if text is not None and not _row_number(text):
            raise RequestError(422, f"label: expected a class code like 3, got {text[:20]!r}")
        label = self.label(space, None if text is None else int(text))
        data = await read_body(request, self.settings.max_upload_bytes, "image")
        limits = {"max_bytes": self.settings.max_upload_bytes, "max_pixels": self.settings.max_upload_pixels}

        def work() -> dict[str, Any]:
            image, inverted = image_input(data, space.x_shape, frame=frame, **limits)  # type: ignore[arg-type]
            x = space.model_input(image)
            return self.encoding_json(
                space, space.encode(x, plane, label), {"inverted": inverted, "given_label": label}
            )

        return JSONResponse(await self.run_work(work))

    async def encode_example(self, request: Request) -> Response:
        rid, space = self.space(request.path_params["rid"])
        body: ExampleRequest = await read_json(request, ExampleRequest)
        plane = self.plane(space, body.plane, body.dims)
        index = self.example_index(space, body.index)

        own = None if space.labels is None else int(space.labels[index])
        # a conditional run encodes a test image under the label asked for, by default its own
        given = self.label(space, own if space.conditional and body.label is None else body.label)

        def work() -> dict[str, Any]:
            x = space.run.x[index : index + 1]
            extra: dict[str, Any] = {"index": index, "label": own, "label_name": None, "given_label": given}
            if own is not None:
                extra["label_name"] = space.class_names([own])[0]
            if space.test_log_px is not None:
                extra["stored_log_px"] = float(space.test_log_px.value[index])
            return self.encoding_json(space, space.encode(x, plane, given), extra)

        return JSONResponse(await self.run_work(work))

    def example_index(self, space: LatentSpace, index: int) -> int:
        if not 0 <= index < len(space.run.x):
            raise RequestError(422, f"index: the {space.run.split} split has rows 0..{len(space.run.x) - 1}")
        return index

    async def example(self, request: Request) -> Response:
        rid, space = self.space(request.path_params["rid"])
        text = request.path_params["index"]
        if not _row_number(text):
            raise RequestError(422, f"index: expected a row number, got {text[:20]!r}")
        index = self.example_index(space, int(text))
        png = await self.run_work(lambda: png_bytes(space.display(space.run.x[index : index + 1])[0]))
        return Response(png, media_type="image/png", headers=PNG_HEADERS)

    async def interpolate(self, request: Request) -> Response:
        rid, space = self.space(request.path_params["rid"])
        body: InterpolateRequest = await read_json(request, InterpolateRequest)
        label = self.label(space, body.label)

        def work() -> bytes:
            a, b = space.check_u(body.a, "a"), space.check_u(body.b, "b")
            return png_bytes(space.interpolation(a, b, body.n, body.method, label))

        return Response(await self.run_work(work), media_type="image/png", headers=PNG_HEADERS)

    async def samples(self, request: Request) -> Response:
        rid, space = self.space(request.path_params["rid"])
        body: SamplesRequest = await read_json(request, SamplesRequest)
        if space.deterministic:
            raise RequestError(409, space.info()["samples_note"])
        label = self.label(space, body.label)
        picture, title = await self.run_work(space.prior_samples, body.n, body.seed, label)
        headers = {**PNG_HEADERS, "X-Title": json.dumps(title)}
        return Response(png_bytes(picture), media_type="image/png", headers=headers)

    async def stats(self, request: Request) -> Response:
        """Decode requests and forward passes per run since start (mean batch = their ratio)."""
        return JSONResponse({rid: vars(b.stats) for rid, b in self.batchers.items()})

    # ------------------------------------------------------------------------------- wiring

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        for batcher in self.batchers.values():
            await batcher.start()
        try:
            yield
        finally:
            for batcher in self.batchers.values():
                await batcher.close()
            self.decode_executor.shutdown(wait=False, cancel_futures=True)
            self.work_executor.shutdown(wait=False, cancel_futures=True)

    def app(self) -> Starlette:
        routes = [
            Route("/", self.page),
            Route("/api/runs", self.runs),
            Route("/api/stats", self.stats),
            Route("/api/run/{rid}/map", self.latent_map),
            Route("/api/run/{rid}/decode", self.decode, methods=["POST"]),
            Route("/api/run/{rid}/encode", self.encode, methods=["POST"]),
            Route("/api/run/{rid}/encode-example", self.encode_example, methods=["POST"]),
            Route("/api/run/{rid}/example/{index}", self.example),
            Route("/api/run/{rid}/interpolate", self.interpolate, methods=["POST"]),
            Route("/api/run/{rid}/samples", self.samples, methods=["POST"]),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ]
        middleware = []
        if self.settings.loopback:  # a page on another site cannot reach us by rebinding its DNS name
            hosts = {*LOOPBACK_HOSTS, "[::1]", self.settings.host}
            middleware.append(Middleware(HostCheck, hosts=hosts))
        handlers = {RequestError: _request_error, HTTPException: _http_error, Exception: _server_error}
        return Starlette(
            routes=routes,
            middleware=middleware,
            exception_handlers=handlers,
            lifespan=self.lifespan,
        )


def _row_number(text: str) -> bool:
    """Whether `text` is a plain decimal number int() reads (isdigit alone passes '²')."""
    return text.isascii() and text.isdigit() and len(text) < 10


class HostCheck:
    """Refuse (400, JSON) a request whose Host header names another machine: a loopback server
    must not answer a page that reached it by rebinding its own DNS name to 127.0.0.1."""

    def __init__(self, app: Any, hosts: set[str]) -> None:
        self.app, self.hosts = app, hosts

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            host = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
            name = (
                host[: host.index("]") + 1]
                if host.startswith("[") and "]" in host
                else host.rsplit(":", 1)[0]
            )
            if name not in self.hosts:
                response = JSONResponse({"error": f"host {name[:60]!r} is not this machine"}, status_code=400)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def _request_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestError)
    return JSONResponse({"error": str(exc)}, status_code=exc.status)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code)


async def _server_error(request: Request, exc: Exception) -> Response:
    log.error("explore: %s %s failed", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"error": "internal error (the server's log has the details)"}, status_code=500)


# ---------------------------------------------------------------------------------- serving


def load_spaces(run_dirs: Sequence[str | Path], settings: ExploreSettings) -> list[LatentSpace]:
    """Each run loaded read-only (`vaelab.viz.run.Run`) and its latent space prepared."""
    return [LatentSpace(Run(run_dir), k=settings.k, seed=settings.seed) for run_dir in run_dirs]


def bind(settings: ExploreSettings) -> socket.socket:
    """A listening socket on (host, port), so that port 0 resolves before the server starts."""
    try:
        infos = socket.getaddrinfo(settings.host, settings.port, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        raise UserError(f"host {settings.host!r}: cannot resolve it ({err.strerror})") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as err:
        sock.close()
        raise UserError(f"cannot listen on {settings.host}:{settings.port} ({err.strerror})") from None
    sock.listen(1024)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/"


def serve(spaces: Sequence[LatentSpace], settings: ExploreSettings, sock: socket.socket) -> None:
    """Serve the explorer on `sock` until interrupted (uvicorn, its C parser and loop where present)."""
    import uvicorn

    torch.set_num_threads(settings.threads)
    app = Explorer(spaces, settings).app()
    config = uvicorn.Config(
        app,
        log_config=None,
        log_level="warning",
        access_log=False,
        limit_concurrency=1024,
        timeout_keep_alive=30,
        server_header=False,
    )
    uvicorn.Server(config).run(sockets=[sock])
