"""Importance-sampled -log p(x) on the whole test set: vaelab's chunked estimator against a
row-at-a-time loop like pythae's `get_nll`, side by side in one process.

    python benchmarks/nll_eval.py                 # k=5000 on all 10,000 test rows (~10 min)
    python benchmarks/nll_eval.py --run RUN       # for a trained run (default: trains the classic
                                                  # VAE for 5 epochs first, ~1 min)
    python benchmarks/nll_eval.py --smoke         # seconds, on embedded data

Prints wall time, achieved GFLOP/s as a fraction of the measured matmul peak, peak memory (the
process's maximum resident set), and the row-at-a-time reference's time on a seeded random
subset of rows (it is too slow for all of them), extrapolated to the whole set.
"""

from __future__ import annotations

import resource
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import CLASSIC, binarized_mnist, machine, matmul_peak_gflops, parser
from vaelab.config import RunConfig
from vaelab.estimators import dataset_log_px, log_px_importance
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


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, help="a trained run (default: train the classic VAE 5 epochs)")
    p.add_argument("--k", type=int, default=5000)
    p.add_argument("--batch-size", type=int, default=100, help="test rows per estimator call")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="vaelab's network products")
    p.add_argument("--reference-rows", type=int, default=20, help="rows timed for the row-at-a-time loop")
    args = p.parse_args()
    k = 200 if args.smoke else args.k
    splits = binarized_mnist(args.smoke)
    with tempfile.TemporaryDirectory() as tmp:
        run = args.run
        if run is None:
            run = Path(tmp) / "classic"
            config = RunConfig().replace(
                data={"source": splits.name},
                model=dict(CLASSIC),
                train={"epochs": 1 if args.smoke else 5, "seed": 0},
            )
            train(config, run, progress=False, splits=splits)
        model = load_model(run)
    x = splits.test
    peak = matmul_peak_gflops(torch.float32)
    rss_before = peak_rss_gb()

    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16"):
        result = dataset_log_px(model, x, k, args.batch_size, torch.Generator().manual_seed(0))
    flops = decoder_flops_per_sample(model) * k * len(x)
    gflops = flops / result.seconds / 1e9

    pick = torch.randperm(len(x), generator=torch.Generator().manual_seed(1))[: args.reference_rows]
    torch.manual_seed(0)
    start = time.perf_counter()
    slow = row_at_a_time(model, x[pick], k)
    slow_seconds = (time.perf_counter() - start) / len(pick) * len(x)
    fast_subset = log_px_importance(model, x[pick], k, generator=torch.Generator().manual_seed(0)).value

    print(f"machine: {machine()}; data: {splits.name}, all {len(x)} test rows, k = {k}")
    print(f"matmul peak: {peak:.0f} GFLOP/s fp32 (1024x1024 products)")
    print(f"-log p(x) = {-result.mean:.3f} ± {result.mean_stderr:.3f} nats (IS, k={k}, all {len(x)} rows)")
    print(
        f"agreement on {len(pick)} random rows: vaelab {-fast_subset.mean():.3f}, "
        f"row-at-a-time {-slow.mean():.3f} nats"
    )
    print(f"{'':<26}{'seconds':>10}{'GFLOP/s':>10}{'of peak':>9}")
    name = f"vaelab (chunked, {args.precision})"
    print(f"{name:<26}{result.seconds:>10.1f}{gflops:>10.1f}{gflops / peak:>9.0%}")
    slow_gflops = flops / slow_seconds / 1e9
    print(
        f"{'row at a time (extrap.)':<26}{slow_seconds:>10.1f}{slow_gflops:>10.1f}{slow_gflops / peak:>9.0%}"
    )
    print(f"peak memory: {peak_rss_gb():.2f} GB resident (before the estimate: {rss_before:.2f} GB)")
    print(f"ratio: vaelab is {slow_seconds / result.seconds:.1f}x faster than row-at-a-time")


if __name__ == "__main__":
    main()
