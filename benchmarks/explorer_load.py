"""Load on `vaelab explore`: many clients decoding (and a few encoding) at once, with and without
micro-batching.

    .venv/bin/python -u -m benchmarks.explorer_load --run runs/demo/vae
    .venv/bin/python -m benchmarks.explorer_load --smoke        # seconds: 5 clients, 2 s, a tiny model

For each setting (micro-batching on, then off: `--max-batch 1`) it starts the real server
(`vaelab explore RUN --port 0`) in its own process on 127.0.0.1 and offers an open-loop load:
`--clients` decode clients each sending `--rate` requests per second at fixed times (random
phases) for `--seconds`, each to a random point of the latent map, plus `--encode-clients`
clients each sending a drawn digit to /encode once a second. Open loop: a request is sent at its
time whether or not the client's previous one has come back (a client opens another keep-alive
connection when all of its are busy), and its latency counts from that time, so a slow server
cannot hide its queue by slowing the clients (no coordinated omission). A request fails on a
non-200 status, a broken connection or no answer within 10 s. The clients run in this process,
on the same 2 cores as the server: the figures include that contention.

Prints throughput and p50/p95/p99 latency per endpoint and setting, the server's mean batch
size, its CPU time per answered decode (with the clients' and the load average: on a shared
machine latency measures the other users too, CPU time much less so), and the ratios last.
Target (issue 14, for the demo's 2-D model, 50 clients x 10 req/s
for 20 s): decode p95 <= 50 ms, no failed request.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import random
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks.common import machine, parser

REQUEST_TIMEOUT = 10.0
MAX_CONNECTIONS_PER_CLIENT = 16  # bounds the sockets an overloaded server can make us open


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)  # seconds, successful requests
    failures: list[str] = field(default_factory=list)

    def line(self, name: str, seconds: float) -> str:
        done = np.array(self.latencies) * 1000
        if len(done) == 0:
            return f"{name:<28} no successful request, {len(self.failures)} failed"
        p50, p95, p99 = np.percentile(done, [50, 95, 99])
        return (
            f"{name:<28} {len(done) / seconds:8.1f} req/s  p50 {p50:7.1f}  p95 {p95:7.1f}  p99 {p99:7.1f}  "
            f"max {done.max():7.1f} ms  failed {len(self.failures)} of {len(done) + len(self.failures)}"
        )

    def p95(self) -> float:
        return float(np.percentile(self.latencies, 95) * 1000) if self.latencies else float("inf")


class Connection:
    """One keep-alive HTTP/1.1 connection: a request, then its whole response, at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def request(self, host: str, path: str, body: bytes, content_type: str) -> tuple[int, bytes]:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        self.writer.write(head.encode("ascii") + body)
        status_line = await self.reader.readline()
        status = int(status_line.split()[1])
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


class Client:
    """One simulated user: a pool of keep-alive connections to the server."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.idle: list[Connection] = []
        self.open = 0

    async def send(self, path: str, body: bytes, content_type: str, scheduled: float, tally: Tally) -> None:
        connection = None
        try:
            if self.idle:
                connection = self.idle.pop()
            elif self.open < MAX_CONNECTIONS_PER_CLIENT:
                self.open += 1
                connection = Connection(*await asyncio.open_connection(self.host, self.port))
            else:
                tally.failures.append("client out of connections (server far behind)")
                return
            status, payload = await asyncio.wait_for(
                connection.request(f"{self.host}:{self.port}", path, body, content_type), REQUEST_TIMEOUT
            )
            if status != 200:
                tally.failures.append(f"{status}: {payload[:120]!r}")
            else:
                tally.latencies.append(time.perf_counter() - scheduled)
            self.idle.append(connection)
            connection = None
        except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError, IndexError) as err:
            tally.failures.append(f"{type(err).__name__}: {err}")
        finally:
            if connection is not None:  # broken or timed out: not reused
                connection.close()
                self.open -= 1

    def close(self) -> None:
        for connection in self.idle:
            connection.close()


async def offer(
    client: Client, rate: float, seconds: float, start: float, make, tally: Tally, rng: random.Random
) -> None:
    """Open loop: request i at start + phase + i / rate, whether or not earlier ones came back."""
    phase = rng.random() / rate
    tasks = []
    for i in range(int(seconds * rate)):
        scheduled = start + phase + i / rate
        await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
        path, body, content_type = make(rng)
        tasks.append(asyncio.create_task(client.send(path, body, content_type, scheduled, tally)))
    await asyncio.gather(*tasks)


def drawn_digit() -> bytes:
    """A '7' drawn as black strokes on white, as the page's canvas sends it."""
    from PIL import Image, ImageDraw

    image = Image.new("L", (224, 224), 255)
    ImageDraw.Draw(image).line([(50, 50), (170, 50), (90, 190)], fill=0, width=16)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


async def load(port: int, args, latent_dim: int, bound: float) -> tuple[Tally, Tally, float]:
    host = "127.0.0.1"
    decode, encode = Tally(), Tally()
    digit = drawn_digit()

    def decode_request(rng: random.Random):
        z = [round(rng.uniform(-bound, bound), 4) for _ in range(latent_dim)]
        return "/api/run/a/decode", json.dumps({"z": z}).encode(), "application/json"

    def encode_request(rng: random.Random):
        return "/api/run/a/encode", digit, "image/png"

    decoders = [Client(host, port) for _ in range(args.clients)]
    encoders = [Client(host, port) for _ in range(args.encode_clients)]
    start = time.perf_counter() + 0.5
    rng = random.Random(0)
    jobs = [
        offer(c, args.rate, args.seconds, start, decode_request, decode, random.Random(rng.random()))
        for c in decoders
    ]
    jobs += [
        offer(c, 1.0, args.seconds, start, encode_request, encode, random.Random(rng.random()))
        for c in encoders
    ]
    await asyncio.gather(*jobs)
    elapsed = time.perf_counter() - start
    for client in decoders + encoders:
        client.close()
    return decode, encode, elapsed


def start_server(run: Path, extra: list[str]) -> tuple[subprocess.Popen, int]:
    command = [sys.executable, "-m", "vaelab", "explore", str(run), "--port", "0", *extra]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()  # "explore: http://127.0.0.1:PORT/ ..." once the run is loaded
    match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
    if not match:
        process.kill()
        raise SystemExit(f"the server did not start: {line}{process.stderr.read() if process.stderr else ''}")
    return process, int(match.group(1))


def get(port: int, path: str) -> dict:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=60) as response:
        return json.load(response)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc), in seconds."""
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def stop(process: subprocess.Popen) -> None:
    process.terminate()  # uvicorn shuts down cleanly on SIGTERM
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def smoke_run(out: Path) -> Path:
    """A tiny 2-D VAE on the embedded digits, trained in seconds, for --smoke."""
    from vaelab.config import RunConfig
    from vaelab.train import train

    config = RunConfig().replace(
        data={"source": "digits"}, model={"latent_dim": 2, "hidden": (32,)}, train={"epochs": 1, "seed": 0}
    )
    train(config, out, overwrite=True, progress=False)
    return out


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, help="run to serve (default runs/demo/vae, the demo's 2-D VAE)")
    p.add_argument("--clients", type=int, default=50, help="decode clients")
    p.add_argument("--rate", type=float, default=10.0, help="decode requests per second per client")
    p.add_argument("--seconds", type=float, default=20.0, help="how long each setting is loaded")
    p.add_argument("--encode-clients", type=int, default=2, help="clients sending a drawing once a second")
    args = p.parse_args()
    if (
        args.clients < 1
        or args.clients > 500
        or args.rate <= 0
        or args.rate > 100
        or not 0 < args.seconds <= 300
    ):
        raise SystemExit("bounded load only: 1-500 clients, rate in (0, 100] per second, 0-300 s")
    run = args.run or Path("runs/demo/vae")
    if args.smoke:
        import tempfile

        args.clients, args.rate, args.seconds, args.encode_clients = 5, 5.0, 2.0, 1
        if args.run is None:
            run = smoke_run(Path(tempfile.mkdtemp(prefix="explorer-load-")) / "vae")
    if not (run / "model.safetensors").is_file():
        raise SystemExit(f"{run}: no run there; `make demo` trains the demo's runs (or pass --run)")
    print(f"{machine()}; server and clients share this machine's cores")
    print(
        f"offered: {args.clients} decode clients x {args.rate:g} req/s (open loop) + {args.encode_clients} "
        f"encode clients x 1 req/s, {args.seconds:g} s per setting, run {run}"
    )
    results, cpu = {}, {}
    for name, extra in (("micro-batching on", []), ("micro-batching off", ["--max-batch", "1"])):
        process, port = start_server(run, extra)
        try:
            facts = get(port, "/api/runs")["runs"][0]
            bound = min(4.0, facts["coordinate_bound"])
            server_before, clients_before = cpu_seconds(process.pid), own_cpu_seconds()
            decode, encode, elapsed = asyncio.run(load(port, args, facts["latent_dim"], bound))
            server_cpu, clients_cpu = (
                cpu_seconds(process.pid) - server_before,
                own_cpu_seconds() - clients_before,
            )
            batches = get(port, "/api/stats")["a"]
        finally:
            stop(process)
        results[name] = decode
        print(decode.line(f"decode, {name}", elapsed))
        if args.encode_clients:
            print(encode.line(f"encode, {name}", elapsed))
        per_decode = 1000 * server_cpu / max(1, len(decode.latencies))  # the encodes' share included
        print(
            f"  CPU: server {server_cpu:.1f} s ({per_decode:.2f} ms per answered decode), clients "
            f"{clients_cpu:.1f} s, in {elapsed:.1f} s of wall time on {os.cpu_count()} cores "
            f"(load average {os.getloadavg()[0]:.1f})"
        )
        cpu[name] = per_decode
        mean_batch = batches["requests"] / max(1, batches["batches"])
        print(
            f"  {batches['batches']} forward passes for {batches['requests']} decodes: "
            f"mean batch {mean_batch:.1f}, "
            f"largest {batches['largest']}"
        )
        for failure in sorted(set(decode.failures + encode.failures))[:5]:
            print(f"  failure: {failure}")
    on, off = results["micro-batching on"], results["micro-batching off"]
    print(f"ratio decode p95 off / on: {off.p95() / on.p95():.2f}x")
    cpu_ratio = cpu["micro-batching off"] / cpu["micro-batching on"]
    print(f"ratio server CPU per answered decode off / on: {cpu_ratio:.2f}x")
    verdict = "met" if on.p95() <= 50 and not on.failures else "NOT met"
    print(
        f"target decode p95 <= 50 ms with no failed request (micro-batching on): {verdict} "
        f"({on.p95():.1f} ms)"
    )


if __name__ == "__main__":
    main()
