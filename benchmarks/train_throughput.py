"""Training throughput: vaelab's trainer against a plain PyTorch loop, side by side in one process.

    python -m benchmarks.train_throughput            # 8 epochs each on binarized MNIST, ~3 minutes
    python -m benchmarks.train_throughput --smoke    # seconds, on embedded data

All train the classic MLP VAE (784-400-20, Bernoulli, Adam lr 1e-3, batch 128) from the same
initial weights on the same data for the same epochs. The reference is what a careful user
writes by hand: tensors in memory, a shuffled index per epoch, Adam with PyTorch's defaults,
BCE-with-logits summed over pixels plus the analytic KL. vaelab runs three ways: fp32, bf16, and
bf16 with the step compiled (`--compile`), its fastest settings. Training time only (validation
passes are excluded on every side, and the one-time compile is reported on its own line, with
what it costs a run of this length); the sides alternate epochs, in a rotating order, so machine
noise hits all of them. Prints images/s, the ratios, the measured matmul GFLOP/s and each side's
fraction of it, and the final test -ELBOs (evaluated identically, in float32).
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.common import (
    CLASSIC,
    binarized_mnist,
    classic_flops_per_image,
    machine,
    matmul_peak_gflops,
    parser,
)
from vaelab.config import RunConfig
from vaelab.objectives import dataset_terms
from vaelab.train import Trainer


class Reference(nn.Module):
    """pytorch/examples-style VAE, written out by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc21, self.fc22 = nn.Linear(784, 400), nn.Linear(400, 20), nn.Linear(400, 20)
        self.fc3, self.fc4 = nn.Linear(20, 400), nn.Linear(400, 784)

    def loss(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        h = F.relu(self.fc1(x))
        mu, log_var = self.fc21(h), self.fc22(h)
        z = mu + torch.exp(0.5 * log_var) * torch.randn(mu.shape, generator=generator)
        logits = self.fc4(F.relu(self.fc3(z)))
        bce = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
        kl = -0.5 * torch.sum(1 + log_var - mu.pow(2) - log_var.exp())
        return (bce + kl) / len(x)


def reference_epochs(model: Reference, optimizer, x_train: torch.Tensor, epochs: int, seed: int) -> float:
    """Train `epochs` epochs; returns the seconds spent."""
    generator = torch.Generator().manual_seed(seed)
    x_flat = x_train.reshape(len(x_train), -1)
    start = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(len(x_flat), generator=generator)
        for begin in range(0, len(x_flat), 128):
            loss = model.loss(x_flat[order[begin : begin + 128]], generator)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return time.perf_counter() - start


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

        return standard_normal(20)

    def likelihood(self, z):
        from vaelab.distributions import bernoulli

        logits = self.ref.fc4(F.relu(self.ref.fc3(z)))
        return bernoulli(logits.reshape(*z.shape[:-1], 1, 28, 28), 3)


def warm_up(x_train: torch.Tensor, steps: int = 30) -> None:
    """Run throwaway steps in fp32 and bf16 so one-time kernel set-up is charged to no side."""
    model = Reference()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    x = x_train[:128].reshape(128, -1)
    for bf16 in (False, True):
        for _ in range(steps):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = model.loss(x, generator)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=8)
    args = p.parse_args()
    epochs = 1 if args.smoke else args.epochs
    splits = binarized_mnist(args.smoke)
    n = len(splits.train)
    peak32, peak16 = matmul_peak_gflops(torch.float32), matmul_peak_gflops(torch.bfloat16)

    warm_up(splits.train)
    torch.manual_seed(0)
    reference = Reference()
    ref_opt = torch.optim.Adam(reference.parameters(), lr=1e-3)
    config = RunConfig().replace(
        data={"source": splits.name},
        model=dict(CLASSIC),
        train={"epochs": epochs, "batch_size": 128, "lr": 1e-3, "seed": 0},
    )
    variants = {
        "vaelab (fp32)": {"precision": "fp32"},
        "vaelab (bf16)": {"precision": "bf16"},
        "vaelab (bf16, compiled)": {"precision": "bf16", "compile": True},
    }
    seconds = {"plain PyTorch loop": 0.0} | {name: 0.0 for name in variants}
    compile_seconds = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {
            name: Trainer(config.replace(train=train), Path(tmp) / str(i), progress=False, splits=splits)
            for i, (name, train) in enumerate(variants.items())
        }
        sides = list(seconds)
        for epoch in range(1, epochs + 1):  # alternate epochs so machine noise hits every side,
            shift = (epoch - 1) % len(sides)  # in a rotating order so none always follows another
            for name in sides[shift:] + sides[:shift]:
                if name == "plain PyTorch loop":
                    seconds[name] += reference_epochs(reference, ref_opt, splits.train, 1, seed=epoch)
                    continue
                record = trainers[name].run_epoch()
                seconds[name] += record["seconds"]
                compile_seconds += record.get("compile_seconds", 0.0)
        models = {"plain PyTorch loop": AsVaelab(reference)} | {k: t.model for k, t in trainers.items()}
        tests = {name: dataset_terms(model.eval(), splits.test, seed=0) for name, model in models.items()}

    flops = classic_flops_per_image()
    rates = {name: epochs * n / s for name, s in seconds.items()}
    print(f"machine: {machine()}; data: {splits.name}, {n} training images, {epochs} epoch(s), batch 128")
    print(f"matmul peak: {peak32:.0f} GFLOP/s fp32, {peak16:.0f} GFLOP/s bf16 (1024x1024 products)")
    print(
        f"{'':<25}{'images/s':>10}{'GFLOP/s':>10}{'of fp32 peak':>14}{'of bf16 peak':>14}{'test -ELBO':>12}"
    )
    for name, rate in rates.items():
        gflops = rate * flops / 1e9
        print(
            f"{name:<25}{rate:>10.0f}{gflops:>10.1f}{gflops / peak32:>14.0%}{gflops / peak16:>14.0%}"
            f"{-tests[name].elbo:>12.2f}"
        )
    compiled = "vaelab (bf16, compiled)"
    run_seconds = seconds[compiled] + compile_seconds
    break_even = _break_even(seconds, compile_seconds, compiled, epochs)
    print(
        f"compiling the step took {compile_seconds:.1f} s, once per process, before the first epoch "
        f"(not in the images/s above; inductor caches it on disk, so later processes compile faster). "
        f"Counted in, this {epochs}-epoch run is {epochs * n / run_seconds:.0f} images/s; it breaks even "
        f"with the uncompiled bf16 trainer after {break_even:.1f} "
        "epochs"
    )
    ref = "plain PyTorch loop"
    for name in trainers:
        print(
            f"ratio {name} / reference: {rates[name] / rates[ref]:.2f}x images/s; test -ELBO difference "
            f"{tests[ref].elbo - tests[name].elbo:+.2f} nats (vaelab - reference)"
        )


def _break_even(seconds: dict[str, float], compile_seconds: float, compiled: str, epochs: int) -> float:
    """Epochs after which compiling has paid for itself against the eager bf16 trainer."""
    saved_per_epoch = (seconds["vaelab (bf16)"] - seconds[compiled]) / epochs
    return compile_seconds / saved_per_epoch if saved_per_epoch > 0 else math.inf


if __name__ == "__main__":
    main()
