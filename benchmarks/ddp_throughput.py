"""Data-parallel training on this machine: `vaelab train` in one process against `--nproc 2`.

    .venv/bin/python -m benchmarks.ddp_throughput [--repeats 2] [--smoke]

Both train the same run (mnist5k, the default 512-256 MLP VAE, batch 128, seed 0) with one
PyTorch thread per process, alternately, in separate processes as a user runs them; the figure
is the training speed of epochs 2 and on (images/s from metrics.jsonl, so start-up and the first
epoch's warm-up are left out), and the largest relative difference of any epoch metric between
the two (the same noise, other summation order).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from vaelab import runs


def train(out: Path, flags: list[str], nproc: int) -> list[dict]:
    argv = [sys.executable, "-m", "vaelab", "train", *flags, "--threads", "1", "--quiet", "--out", str(out)]
    subprocess.run([*argv, "--nproc", str(nproc)] if nproc > 1 else argv, check=True, capture_output=True)
    return runs.read_metrics(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="digits, a tiny net, 2 epochs, once")
    args = parser.parse_args()
    if args.smoke:
        flags, repeats = ["--data", "digits", "--hidden", "16", "--epochs", "2"], 1
    else:
        flags, repeats = ["--data", "mnist5k", "--epochs", "4"], args.repeats
    speed: dict[int, list[float]] = {1: [], 2: []}
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(repeats):
            records = {n: train(Path(tmp) / f"n{n}-{repeat}", flags, n) for n in (1, 2)}
            for n, history in records.items():
                speed[n] += [r["images_per_second"] for r in history[1:]]
            for one, two in zip(records[1], records[2], strict=True):
                for key, value in one.items():
                    if key.endswith("_nats"):
                        worst = max(worst, abs(two[key] - value) / abs(value))
    for n in (1, 2):
        print(
            f"{n} process{'es' if n > 1 else ''}, 1 thread each: {statistics.median(speed[n]):8.0f} images/s"
        )
    ratio = statistics.median(speed[2]) / statistics.median(speed[1])
    print(f"ratio 2 ranks / 1 process: {ratio:.2f}x images/s")
    print(f"largest relative difference of an epoch metric: {worst:.1e}")


if __name__ == "__main__":
    main()
