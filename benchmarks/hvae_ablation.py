"""What each ingredient of the `hvae` preset buys, at a short budget: two stochastic layers against
one, the VampPrior at the top against N(0, I), IWAE k = 10 against the ELBO, and free bits on the
ELBO, each trained under the same wall-clock budget on statically binarized MNIST, selected on
validation, then scored on the test split (importance sampling, k samples per row).

    python -u -m benchmarks.hvae_ablation --minutes 7 --k 500 --jobs 2   # ~35 min on 2 free cores
    python -u -m benchmarks.hvae_ablation --smoke                         # seconds, embedded data

Runs go two at a time at most (`--jobs`), one thread each, so that both see the same machine; the
machine's load is printed with the table (a shared machine slows every run alike, not equally).
KL warm-up is shortened to `--warmup` epochs for every variant (the preset's 20 would last the
whole short budget). Runs live in benchmarks/out/hvae-ablation/; a finished run is not retrained,
nor re-evaluated at the same k.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from benchmarks.common import SHARED, machine, parser
from vaelab import runs
from vaelab.config import RunConfig, preset

OUT = Path(__file__).resolve().parent / "out" / "hvae-ablation"


def variants(base: RunConfig, free_bits: float) -> dict[str, RunConfig]:
    """The preset and each variant that changes one ingredient (free bits: two, on the ELBO)."""
    elbo = {"name": "elbo", "k": 1}
    return {
        "hvae: 2 layers, VampPrior top, IWAE k=10": base,
        "1 stochastic layer (the recipe)": base.replace(model={"layers": 1}),
        "N(0, I) at the top, not the VampPrior": base.replace(model={"prior": "normal"}),
        "ELBO, not IWAE k=10": base.replace(objective=elbo),
        f"ELBO + free bits {free_bits:g} nats/layer": base.replace(
            objective={**elbo, "free_bits": free_bits}
        ),
    }


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")[:48]


def train_and_evaluate(name: str, config: dict[str, Any], out: str, k: int) -> dict[str, Any]:
    """One variant in its own process: train (or resume, or reuse a finished run), then evaluate."""
    from vaelab.evaluate import evaluate_run
    from vaelab.train import train

    run = Path(out)
    info = runs.run_info(run) if (run / runs.RUN).is_file() else {}
    if info.get("status") != "finished":
        train(RunConfig.from_dict(config), run, resume=bool(info), progress=False)
    history = runs.read_metrics(run)
    best = runs.best_record(history)
    path = run / "eval.json"
    evaluation = runs.read_evaluation(path) if path.is_file() else {}
    if evaluation.get("k") != k:  # (an evaluation of this run at this k is reused)
        evaluation = evaluate_run(run, k=k, progress=False).to_dict()
    return {
        "name": name,
        "history": history,
        "epochs": len(history),
        "best": best["epoch"],
        "valid": -best["valid_bound_nats"],
        "elbo": -evaluation["elbo"],
        "nll": evaluation["nll"],
        "se": evaluation["log_px_stderr"],
        "kl_layers": evaluation.get("kl_layers") or (evaluation["kl"],),
        "active": evaluation.get("active_units_layers") or (evaluation["active_units"],),
    }


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=7.0, help="training budget per run")
    p.add_argument("--k", type=int, default=500, help="importance samples per test row")
    p.add_argument(
        "--jobs", type=int, default=2, choices=(1, 2), help="runs trained at once (one thread each)"
    )
    p.add_argument("--warmup", type=int, default=5, help="KL warm-up epochs of every variant")
    p.add_argument("--free-bits", type=float, default=2.0, help="nats per layer of the free-bits variant")
    args = p.parse_args()
    smoke = args.smoke or not (SHARED / "test.npz").is_file()
    source = "mnist5k" if smoke else f"binarized-mnist:{SHARED}"
    minutes, k = (0.05, 20) if args.smoke else (args.minutes, args.k)
    base = preset("hvae").replace(
        data={"source": source, "binarize": "static" if smoke else "none"},
        objective={"kl_warmup_epochs": args.warmup},
        train={"minutes": minutes, "threads": 1, "compile": "off"},
    )
    root = OUT / ("smoke" if args.smoke else f"{minutes:g}min")
    chosen = variants(base, args.free_bits)
    print(f"{len(chosen)} runs of {minutes:g} min, {args.jobs} at a time -> {root}", flush=True)
    load_before = os.getloadavg()
    with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
        futures = [
            pool.submit(train_and_evaluate, name, config.to_dict(), str(root / slug(name)), k)
            for name, config in chosen.items()
        ]
        rows = [future.result() for future in futures]
    load_after = os.getloadavg()

    print(f"\nmachine: {machine()}; data: {source}; {minutes:g} min of training per run, {args.jobs} at once")
    print(f"load average (1, 5, 15 min): {load_before} before, {load_after} after")
    print(f"test -log p(x): IS with k = {k} on every test row; valid -bound: the objective's bound at its k")
    print(
        f"{'run':<42}{'epochs':>7}{'best@':>6}{'valid -bound':>13}{'test -ELBO':>11}"
        f"{'test -log p(x)':>15}{'± s.e.':>8}  KL per layer (active units)"
    )
    for r in rows:
        layers = ", ".join(f"{kl:.2f} ({a})" for kl, a in zip(r["kl_layers"], r["active"], strict=True))
        print(
            f"{r['name']:<42}{r['epochs']:>7}{r['best']:>6}{r['valid']:>13.2f}{r['elbo']:>11.2f}"
            f"{r['nll']:>15.2f}{r['se']:>8.3f}  {layers}"
        )
    # under a shared machine's load the budget buys each run a different number of epochs: the same
    # epoch for all, on validation (the bound each trains: IWAE k=10 or the ELBO), is load-free
    common = min(r["epochs"] for r in rows)
    print(f"\nvalidation -bound at epoch {common}, the last every run reached (weights of that epoch):")
    for r in rows:
        record = r["history"][common - 1]
        print(f"  {r['name']:<42}{-record['valid_bound_nats']:>9.2f}  ({record['bound']})")
    reference = rows[0]["nll"]
    print(
        "\nwhat each ingredient buys (variant's test -log p(x) minus the preset's; +: the preset is better):"
    )
    for r in rows[1:]:
        print(f"  {r['name']:<42}{r['nll'] - reference:+8.2f} nats")
    elbo, freed = rows[3], rows[4]
    print(f"free bits on the ELBO: {freed['nll'] - elbo['nll']:+.2f} nats (- = free bits are better)")


if __name__ == "__main__":
    main()
