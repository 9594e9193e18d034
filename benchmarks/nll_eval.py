"""Importance-sampled -log p(x) on the whole test set: vaelab's chunked estimator against a
hand-batched loop and (on a CPU) a row-at-a-time loop like pythae's `get_nll`, side by side.

    python benchmarks/nll_eval.py                 # k=5000 on all 10,000 test rows (~15 min on a CPU)
    python benchmarks/nll_eval.py --device cuda   # the same on a GPU (seconds)
    python benchmarks/nll_eval.py --run RUN       # for a trained run (default: trains the classic
                                                  # VAE for 5 epochs first, ~1 min)
    python benchmarks/nll_eval.py --smoke         # seconds, on embedded data

Prints wall time, achieved GFLOP/s as a fraction of the measured matmul peak, peak memory (the
process's maximum resident set), and the row-at-a-time reference's time on a seeded random
subset of rows (it is too slow for all of them), extrapolated to the whole set.
"""

from __future__ import annotations

import math
import resource
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import CLASSIC, binarized_mnist, machine, matmul_peak_gflops, parser
from vaelab import devices
from vaelab.config import RunConfig
from vaelab.estimators import log_px_importance
from vaelab.evaluate import evaluate_model
from vaelab.runs import load_model
from vaelab.train import train


def decoder_flops_per_sample(model) -> float:
    """Multiply-adds x2 of one decoder pass plus one encoder-free weight evaluation per sample."""
    linears = [m for m in model.decoder.modules() if isinstance(m, torch.nn.Linear)]
    return float(sum(2 * m.in_features * m.out_features for m in linears))


@torch.no_grad()
def row_at_a_time(model, x: torch.Tensor, k: int, batch: int = 100) -> torch.Tensor:
    """pythae-style: one test row at a time, its k samples in batches of `batch`."""
    values = []
    for row in x:
        log_w = []
        for start in range(0, k, batch):
            m = min(batch, k - start)
            xr = row.unsqueeze(0).expand(m, *row.shape)
            q = model.posterior(xr)
            z = q.rsample()
            log_w.append(model.likelihood(z).log_prob(xr) + model.prior().log_prob(z) - q.log_prob(z))
        log_w = torch.cat(log_w)
        values.append(torch.logsumexp(log_w, 0) - torch.log(torch.tensor(float(k))))
    return torch.stack(values)


@torch.no_grad()
def hand_batched(model, x: torch.Tensor, k: int, rows: int = 100, samples: int = 500) -> torch.Tensor:
    """What a user writes by hand: `rows` test rows at a time, their k samples in chunks of
    `samples`, log-weights kept and reduced by one logsumexp per row: (N,) log p(x)."""
    values = []
    p_z = model.prior()
    for xb in x.split(rows):
        q = model.posterior(xb)
        log_w = []
        for start in range(0, k, samples):
            z = q.rsample((min(samples, k - start),))  # (S, R, Z)
            log_w.append(model.likelihood(z).log_prob(xb) + p_z.log_prob(z) - q.log_prob(z))
        values.append(torch.logsumexp(torch.cat(log_w), 0) - math.log(k))
    return torch.cat(values)


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, help="a trained run (default: train the classic VAE 5 epochs)")
    p.add_argument("--k", type=int, default=5000)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="vaelab's network products")
    p.add_argument(
        "--reference-rows", type=int, default=20, help="rows timed for the row-at-a-time loop (CPU)"
    )
    args = p.parse_args()
    device = devices.resolve_device(args.device)
    k = 200 if args.smoke else args.k
    splits = binarized_mnist(args.smoke)
    with tempfile.TemporaryDirectory() as tmp:
        run = args.run
        if run is None:
            run = Path(tmp) / "classic"
            config = RunConfig().replace(
                data={"source": splits.name},
                model=dict(CLASSIC),
                train={"epochs": 1 if args.smoke else 5, "seed": 0, "device": str(device)},
            )
            train(config, run, progress=False, splits=splits)
        model = load_model(run, device=device)
    x = splits.inputs("test")
    cpu = device.type == "cpu"
    peak = matmul_peak_gflops(torch.float32) if cpu else math.nan
    rss_before = peak_rss_gb()
    devices.reset_peak_memory(device)

    # vaelab as `vaelab evaluate` runs it: batch and chunk sizes from the device's free memory
    result = evaluate_model(model, x, k=k, precision=args.precision, progress=False)
    device_peak = devices.peak_memory_bytes(device)
    vaelab_seconds = result.seconds_log_px or math.nan
    flops = decoder_flops_per_sample(model) * k * len(x)
    gflops = flops / vaelab_seconds / 1e9

    x_device = x.to(device)
    torch.manual_seed(0)
    devices.synchronize(device)
    start = time.perf_counter()
    by_hand = hand_batched(model, x_device, k)
    devices.synchronize(device)
    hand_seconds = time.perf_counter() - start

    slow_seconds = math.nan
    if cpu:
        pick = torch.randperm(len(x), generator=torch.Generator().manual_seed(1))[: args.reference_rows]
        start = time.perf_counter()
        slow = row_at_a_time(model, x[pick], k)
        slow_seconds = (time.perf_counter() - start) / len(pick) * len(x)
        fast_subset = log_px_importance(model, x[pick], k, generator=torch.Generator().manual_seed(0)).value

    print(f"machine: {machine()}; device: {devices.describe(device)}")
    print(f"data: {splits.name}, all {len(x)} test rows, k = {k}")
    if cpu:
        print(f"matmul peak: {peak:.0f} GFLOP/s fp32 (1024x1024 products)")
    assert result.log_px is not None and result.log_px_stderr is not None
    print(
        f"-log p(x) = {-result.log_px:.3f} ± {result.log_px_stderr:.3f} nats (IS, k={k}, all {len(x)} rows)"
    )
    print(f"hand-batched loop: -log p(x) = {-float(by_hand.mean()):.3f} nats (its own draws)")
    if cpu:
        print(
            f"agreement on {len(pick)} random rows: vaelab {-fast_subset.mean():.3f}, "
            f"row-at-a-time {-slow.mean():.3f} nats"
        )
    print(f"{'':<30}{'seconds':>10}{'GFLOP/s':>10}{'of peak':>9}")
    name = f"vaelab (chunked, {args.precision})"
    print(f"{name:<30}{vaelab_seconds:>10.2f}{gflops:>10.1f}{gflops / peak:>9.0%}")
    hand_gflops = flops / hand_seconds / 1e9
    print(
        f"{'hand-batched loop (fp32)':<30}{hand_seconds:>10.2f}{hand_gflops:>10.1f}{hand_gflops / peak:>9.0%}"
    )
    if cpu:
        slow_gflops = flops / slow_seconds / 1e9
        print(
            f"{'row at a time (extrap.)':<30}{slow_seconds:>10.1f}{slow_gflops:>10.1f}"
            f"{slow_gflops / peak:>9.0%}"
        )
        print(f"peak memory: {peak_rss_gb():.2f} GB resident (before the estimate: {rss_before:.2f} GB)")
    else:
        print(f"peak device memory: {(device_peak or 0) / 2**30:.2f} GiB")
    print(f"ratio: vaelab is {hand_seconds / vaelab_seconds:.2f}x the speed of the hand-batched loop")
    if cpu:
        print(f"ratio: vaelab is {slow_seconds / vaelab_seconds:.1f}x faster than row-at-a-time")


if __name__ == "__main__":
    main()
