"""Training throughput: vaelab's trainer against a plain PyTorch loop, side by side in one process.

    python -m benchmarks.train_throughput                    # 8 epochs each on binarized MNIST, ~4 min
    python -m benchmarks.train_throughput --device cuda      # the same on a GPU, with a CUDA-graph loop
    python -m benchmarks.train_throughput --smoke            # seconds, on embedded data

All train the classic MLP VAE (784-400-20, Bernoulli, Adam lr 1e-3, batch 128) from the same
initial weights on the same data for the same epochs, on `--device` (default auto). The
reference is what a careful user writes by hand: the data on the device, a shuffled index per
epoch, Adam with PyTorch's defaults, BCE-with-logits summed over pixels plus the analytic KL.
On CUDA a second reference captures that whole step (forward, backward and Adam) once as one CUDA
graph and replays it per batch (full batches only), the fastest plain loop we know.
vaelab runs with its defaults (no flags: precision and compile auto; the settings it chose are
printed), for comparison with fp32 and bf16 forced, uncompiled, and with fp32 and the compiled
whole step (forward, backward and Adam in one graph; on CUDA replayed as one CUDA graph, the
counterpart of the graphed plain loop). Training time only
(validation passes are excluded on every side, and the one-time compile is reported on its own
line, with what it costs a run of this length); the sides alternate epochs, in a rotating order,
so machine noise hits all of them. Prints images/s, the ratios, the measured matmul GFLOP/s and
each side's fraction of it (CPU), and the final test -ELBOs (evaluated identically, in float32).

This is the in-process benchmark; "as users run vaelab" (a `vaelab train` process against a plain
script, 17 epochs minus 7) is `--as-users-run`.
"""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.common import (
    CLASSIC,
    SHARED,
    binarized_mnist,
    classic_flops_per_image,
    machine,
    matmul_peak_gflops,
    parser,
)
from vaelab import devices
from vaelab.config import RunConfig
from vaelab.objectives import dataset_terms
from vaelab.train import Trainer

PLAIN = "plain PyTorch loop"
GRAPHED = "plain loop, one CUDA graph"
DEFAULTS = "vaelab (defaults)"
WHOLE = "vaelab (fp32, compiled)"  # the whole step in one graph; on CUDA one CUDA graph


class Reference(nn.Module):
    """pytorch/examples-style VAE, written out by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc21, self.fc22 = nn.Linear(784, 400), nn.Linear(400, 20), nn.Linear(400, 20)
        self.fc3, self.fc4 = nn.Linear(20, 400), nn.Linear(400, 784)

    def loss(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        h = F.relu(self.fc1(x))
        mu, log_var = self.fc21(h), self.fc22(h)
        eps = torch.randn(mu.shape, generator=generator, device=mu.device)
        z = mu + torch.exp(0.5 * log_var) * eps
        logits = self.fc4(F.relu(self.fc3(z)))
        bce = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
        kl = -0.5 * torch.sum(1 + log_var - mu.pow(2) - log_var.exp())
        return (bce + kl) / len(x)


def reference_epoch(model: Reference, optimizer, x_flat: torch.Tensor, seed: int) -> tuple[float, int]:
    """One epoch of the plain loop; returns (seconds, images)."""
    device = x_flat.device
    generator = devices.make_generator(device, seed)
    devices.synchronize(device)
    start = time.perf_counter()
    order = torch.randperm(len(x_flat), generator=generator, device=device)
    for begin in range(0, len(x_flat), 128):
        loss = model.loss(x_flat[order[begin : begin + 128]], generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    devices.synchronize(device)
    return time.perf_counter() - start, len(x_flat)


class GraphedReference:
    """The plain loop's whole step, forward, backward and Adam (capturable), captured once as one
    CUDA graph and replayed per full batch; the noise comes from the default CUDA generator, which
    graphs replay with fresh offsets. (PyTorch's "whole network capture" recipe.)"""

    def __init__(self, model: Reference, x_flat: torch.Tensor, batch: int = 128) -> None:
        self.model, self.x_flat, self.batch = model, x_flat, batch
        self.optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, capturable=True)
        self.static_x = x_flat[:batch].clone()
        initial = {k: v.clone() for k, v in model.state_dict().items()}
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up steps (lazy initialization happens outside the graph)
            for _ in range(3):
                self.optimizer.zero_grad(set_to_none=True)
                model.loss(self.static_x, None).backward()
                self.optimizer.step()
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.cuda.graph(self.graph):
            self.static_loss = model.loss(self.static_x, None)
            self.static_loss.backward()
            self.optimizer.step()
        with torch.no_grad():  # back to the shared initial weights and a fresh optimizer state
            for name, value in model.state_dict().items():
                value.copy_(initial[name])
            for state in self.optimizer.state.values():
                for value in state.values():
                    value.zero_()

    def epoch(self, seed: int) -> tuple[float, int]:
        device = self.x_flat.device
        torch.cuda.manual_seed(seed)
        devices.synchronize(device)
        start = time.perf_counter()
        order = torch.randperm(len(self.x_flat), device=device)
        full = len(self.x_flat) // self.batch * self.batch
        for begin in range(0, full, self.batch):
            self.static_x.copy_(self.x_flat[order[begin : begin + self.batch]])
            self.graph.replay()
        devices.synchronize(device)
        return time.perf_counter() - start, full


class AsVaelab(nn.Module):
    """The reference model seen through the protocol, so both are evaluated by the same code."""

    def __init__(self, ref: Reference) -> None:
        super().__init__()
        self.ref, self.x_shape, self.deterministic = ref, (1, 28, 28), False

    def posterior(self, x):
        from vaelab.distributions import diagonal_normal

        h = F.relu(self.ref.fc1(x.reshape(len(x), -1)))
        return diagonal_normal(self.ref.fc21(h), self.ref.fc22(h))

    def prior(self):
        from vaelab.distributions import standard_normal

        return standard_normal(20, device=self.ref.fc1.weight.device)

    def likelihood(self, z):
        from vaelab.distributions import bernoulli

        logits = self.ref.fc4(F.relu(self.ref.fc3(z)))
        return bernoulli(logits.reshape(*z.shape[:-1], 1, 28, 28), 3)


def warm_up(x_flat: torch.Tensor, steps: int = 30) -> None:
    """Run throwaway steps in fp32 and bf16 so one-time kernel set-up is charged to no side."""
    model = Reference().to(x_flat.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = devices.make_generator(x_flat.device, 0)
    for precision in ("fp32", "bf16"):
        for _ in range(steps):
            with devices.autocast(x_flat.device, precision):
                loss = model.loss(x_flat[:128], generator)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    p.add_argument(
        "--as-users-run",
        action="store_true",
        help="wall clock of `vaelab train` (defaults) against a plain script, separate processes",
    )
    args = p.parse_args()
    device = devices.resolve_device(args.device)
    if args.as_users_run:
        as_users_run(args.smoke, str(device))
        return
    epochs = 1 if args.smoke else args.epochs
    splits = binarized_mnist(args.smoke)
    n = len(splits.train)
    x_flat = splits.inputs("train").reshape(n, -1).to(device)
    cpu = device.type == "cpu"
    peak32 = matmul_peak_gflops(torch.float32) if cpu else math.nan
    peak16 = matmul_peak_gflops(torch.bfloat16) if cpu else math.nan

    warm_up(x_flat)
    torch.manual_seed(0)
    reference = Reference()
    initial = {k: v.clone() for k, v in reference.state_dict().items()}
    reference.to(device)
    ref_opt = torch.optim.Adam(reference.parameters(), lr=1e-3)
    graphed = None
    if device.type == "cuda":
        twin = Reference()
        twin.load_state_dict(initial)
        graphed = GraphedReference(twin.to(device), x_flat)
    config = RunConfig().replace(
        data={"source": splits.name},
        model=dict(CLASSIC),
        train={"epochs": epochs, "batch_size": 128, "lr": 1e-3, "seed": 0, "device": str(device)},
    )
    variants = {
        DEFAULTS: {},
        "vaelab (fp32)": {"precision": "fp32", "compile": "off"},
        "vaelab (bf16)": {"precision": "bf16", "compile": "off"},
        WHOLE: {"precision": "fp32", "compile": "on"},
    }
    sides = [PLAIN] + ([GRAPHED] if graphed is not None else []) + list(variants)
    seconds, images = dict.fromkeys(sides, 0.0), dict.fromkeys(sides, 0)
    compile_seconds = dict.fromkeys(variants, 0.0)
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {
            name: Trainer(config.replace(train=train), Path(tmp) / str(i), progress=False, splits=splits)
            for i, (name, train) in enumerate(variants.items())
        }
        for epoch in range(1, epochs + 1):  # alternate epochs so machine noise hits every side,
            shift = (epoch - 1) % len(sides)  # in a rotating order so none always follows another
            for name in sides[shift:] + sides[:shift]:
                if name == PLAIN:
                    took, count = reference_epoch(reference, ref_opt, x_flat, seed=epoch)
                elif name == GRAPHED and graphed is not None:
                    took, count = graphed.epoch(seed=epoch)
                else:
                    record = trainers[name].run_epoch()
                    took, count = record["seconds"], n
                    compile_seconds[name] += record.get("compile_seconds", 0.0)
                seconds[name] += took
                images[name] += count
        models = {PLAIN: AsVaelab(reference)} | {k: t.model for k, t in trainers.items()}
        if graphed is not None:
            models[GRAPHED] = AsVaelab(graphed.model)
        x_test = splits.inputs("test")
        tests = {name: dataset_terms(model.eval(), x_test, seed=0) for name, model in models.items()}
        chosen = trainers[DEFAULTS].settings

    flops = classic_flops_per_image()
    rates = {name: images[name] / seconds[name] for name in sides}
    print(f"machine: {machine()}; device: {devices.describe(device)}")
    print(f"data: {splits.name}, {n} training images, {epochs} epoch(s), batch 128")
    print(
        f"vaelab's defaults chose precision {chosen.precision}, "
        f"compile {'on' if chosen.compile else 'off'}: {chosen.why}"
    )
    if cpu:
        print(f"matmul peak: {peak32:.0f} GFLOP/s fp32, {peak16:.0f} GFLOP/s bf16 (1024x1024 products)")
    print(
        f"{'':<28}{'images/s':>10}{'GFLOP/s':>10}{'of fp32 peak':>14}{'of bf16 peak':>14}{'test -ELBO':>12}"
    )
    for name, rate in rates.items():
        gflops = rate * flops / 1e9
        fractions = f"{gflops / peak32:>14.0%}{gflops / peak16:>14.0%}" if cpu else f"{'':>14}{'':>14}"
        print(f"{name:<28}{rate:>10.0f}{gflops:>10.1f}{fractions}{-tests[name].elbo:>12.2f}")
    for name, took in compile_seconds.items():
        if took:
            print(
                f"{name}: compiling the step took {took:.1f} s, once per process, before the first epoch "
                f"(not in the images/s above; inductor caches it on disk, so later processes compile "
                f"faster). Counted in, this {epochs}-epoch run is "
                f"{epochs * n / (seconds[name] + took):.0f} images/s"
            )
    references = [PLAIN] + ([GRAPHED] if graphed is not None else [])
    for ref in references:
        for name in variants:
            print(
                f"ratio {name} / {ref}: {rates[name] / rates[ref]:.2f}x images/s; test -ELBO difference "
                f"{tests[ref].elbo - tests[name].elbo:+.2f} nats (vaelab - reference)"
            )


PLAIN_SCRIPT = """
import sys, time, torch, numpy as np
from benchmarks.train_throughput import Reference, reference_epoch
from benchmarks.common import binarized_mnist
from vaelab import devices
smoke, device, validate = sys.argv[1] == "1", torch.device(sys.argv[2]), sys.argv[4] == "1"
epochs = int(sys.argv[3])
splits = binarized_mnist(smoke)
x = splits.inputs("train").reshape(len(splits.train), -1).to(device)
x_valid = splits.inputs("valid").reshape(len(splits.valid), -1).to(device)
torch.manual_seed(0)
model = Reference().to(device)
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
for epoch in range(epochs):
    reference_epoch(model, optimizer, x, seed=epoch)
    if validate:  # pytorch/examples' test(): the held-out loss after every epoch
        with torch.no_grad():
            loss = sum(model.loss(x_valid[i : i + 1000], None).item() * len(x_valid[i : i + 1000])
                       for i in range(0, len(x_valid), 1000))
"""

VAELAB_TRAIN = "vaelab train (defaults)"
PLAIN_VALIDATING = "plain loop + validation"


def as_users_run(smoke: bool, device: str, rounds: int = 3) -> None:
    """Wall clock of whole processes: `vaelab train` with its defaults (it validates and
    checkpoints every epoch, as users run it) against the plain loop as a script, once training
    only and once validating after every epoch as pytorch/examples' VAE does (the like-for-like
    reference), each at 17 and at 7 epochs; the difference cancels start-up (imports, data
    loading, the compile) and leaves 10 epochs of training. (7 epochs, 2,737 steps, is the
    shortest run whose defaults compile, so both runs compile and the compile cancels too; 11
    minus 1 would charge it to vaelab's 10.) The processes run in `rounds` rounds, in a rotating
    order, and each side's median difference counts: the machine's noise moves single runs by 20%."""
    long, short = (3, 1) if smoke else (17, 7)
    rounds = 1 if smoke else rounds
    smoke = smoke or not (SHARED / "test.npz").is_file()  # (binarized_mnist's own fallback)
    data = ["--data", "mnist5k", "--binarize", "static"] if smoke else ["--data", f"binarized-mnist:{SHARED}"]
    with tempfile.TemporaryDirectory() as tmp:

        def vaelab_train(epochs: int) -> float:
            out = Path(tmp) / f"run-{epochs}"
            argv = [sys.executable, "-m", "vaelab", "train", "--preset", "classic", "--epochs", str(epochs)]
            return _wall([*argv, *data, "--device", device, "--out", str(out), "--quiet", "--overwrite"])

        def plain(validate: bool):
            def run(epochs: int) -> float:
                flags = ["1" if smoke else "0", device, str(epochs), "1" if validate else "0"]
                return _wall([sys.executable, "-c", PLAIN_SCRIPT, *flags])

            return run

        timings = {VAELAB_TRAIN: vaelab_train, PLAIN: plain(False), PLAIN_VALIDATING: plain(True)}
        names = list(timings)
        runs_of: dict[str, list[float]] = {name: [] for name in names}
        for r in range(rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                runs_of[name].append(timings[name](long) - timings[name](short))
        spent = {name: statistics.median(values) for name, values in runs_of.items()}
        settings = json.loads((Path(tmp) / f"run-{long}" / "run.json").read_text())["settings"]
    chose = f"precision {settings['precision']}, compile {settings['compile']}: {settings['why']}"
    print(f"vaelab train chose {chose}")
    n = len(binarized_mnist(smoke).train)
    print(f"{long} epochs minus {short}, median of {rounds} round(s) of separate processes:")
    for name, took in spent.items():
        each = ", ".join(f"{t:.1f}" for t in runs_of[name])
        rate = (long - short) * n / took
        print(f"{name:<28}{rate:>10.0f} images/s over {long - short} epochs ({took:.1f} s; {each})")
    for reference in (PLAIN_VALIDATING, PLAIN):
        ratio = spent[reference] / spent[VAELAB_TRAIN]
        print(f"ratio {VAELAB_TRAIN} / {reference}, as users run them: {ratio:.2f}x")


def _wall(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, cwd=Path(__file__).resolve().parents[1], stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
