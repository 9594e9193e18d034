"""The likelihood recipe on statically binarized MNIST: train under a wall-clock budget, select on
the validation split only, then report test -log p(x) (importance sampling, all 10,000 rows).

    python -m benchmarks.likelihood_recipe --minutes 60              # the recipe (~75 min)
    python -m benchmarks.likelihood_recipe --minutes 5 --k 1000 --ablations  # what each ingredient buys
    python -m benchmarks.likelihood_recipe --minutes 60 --compile    # the same with --compile
    python -m benchmarks.likelihood_recipe --smoke                   # seconds, embedded data
    python -m benchmarks.likelihood_recipe --preset hvae --minutes 60  # two stochastic layers

The recipe is the preset `vaelab train --preset recipe` (see vaelab/config.py). With
--ablations, each variant removes (or changes) one ingredient and trains under the same budget;
the classic MLP VAE is the baseline. Runs live in benchmarks/out/ and resume if interrupted; a finished run
is evaluated again, not retrained. The test split is touched only by the final evaluation.
"""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

from torch.optim.swa_utils import AveragedModel

from benchmarks.common import SHARED, machine, parser
from vaelab import runs
from vaelab.config import RunConfig, preset
from vaelab.data import load_data
from vaelab.evaluate import evaluate_run
from vaelab.models import build_model
from vaelab.objectives import dataset_terms
from vaelab.train import VALID_SEED_OFFSET, train

OUT = Path(__file__).resolve().parent / "out"
TARGETS = {"recipe": 85.0, "hvae": 83.0}
"""The presets this benchmark trains, and the test -log p(x) each aims at (nats)."""

PUBLISHED = [
    ("VAE, Burda et al. 2015 (App. D, Table 3)", 88.71),
    ("IWAE k=50, 2 stochastic layers, Burda et al. 2015", 85.32),
    ("VAE + VampPrior, Tomczak & Welling 2018", 85.57),
    ("HVAE (L = 2) + VampPrior, Tomczak & Welling 2018", 83.19),
    ("pythae reproduction: VAE", 89.78),
    ("pythae reproduction: IWAE k=50", 86.82),
]


def variants(recipe: RunConfig, ablations: list[str] | None, name: str = "recipe") -> dict[str, RunConfig]:
    """The recipe (preset `name`), plus each ablation whose name contains one of `ablations` (all for [])."""
    out = {name: recipe}
    if ablations is None:
        return out
    every = {
        "without VampPrior (N(0, I) prior)": recipe.replace(model={"prior": "normal"}),
        "without IWAE (ELBO, k = 1)": recipe.replace(objective={"name": "elbo", "k": 1}),
        "IWAE k = 5 instead of 10": recipe.replace(objective={"k": 5}),
        "without gated layers (ReLU MLP)": recipe.replace(model={"net": "mlp"}),
        "without KL warm-up": recipe.replace(objective={"kl_warmup_epochs": 0}),
        "without Polyak averaging": recipe.replace(train={"ema": 0.0}),
        "with dropout 0.1": recipe.replace(model={"dropout": 0.1}),
        "without the plateau schedule": recipe.replace(train={"lr_schedule": "constant"}),
        "without bf16 (fp32)": recipe.replace(train={"precision": "fp32"}),
        "classic MLP VAE (baseline)": preset("classic").replace(
            data={"source": recipe.data.source},
            train={"epochs": 2000, "patience": 50, "minutes": recipe.train.minutes},
        ),
    }
    chosen = {name: c for name, c in every.items() if not ablations or any(a in name for a in ablations)}
    if not chosen:
        raise SystemExit(f"--ablations: none of {ablations} names an ablation; known: {', '.join(every)}")
    return out | chosen


def within_run(out: Path) -> list[str]:
    """What the plateau schedule and Polyak averaging bought inside one finished run, on the
    validation split: the bound when the rate was first halved against the best, and the last
    epoch's raw weights against their average."""
    config, history = runs.read_config(out), runs.read_metrics(out)
    lines = []
    halved = [r for before, r in pairwise(history) if r["lr"] < before["lr"]]
    if halved:
        first = halved[0]["epoch"]
        before = max(r["valid_bound_nats"] for r in history if r["epoch"] < first)
        best = runs.best_record(history)["valid_bound_nats"]
        lines.append(
            f"plateau schedule: best validation bound {before:.3f} before the first halving (epoch "
            f"{first}), {best:.3f} at the end; {len(halved)} halvings, "
            f"last lr {history[-1]['lr']:.2e}"
        )
    state = runs.load_state(out / runs.STATE)
    if config.train.ema > 0 and "averaged_weights" in state:
        splits_valid = load_data(config.data, config.limits).valid
        values = {}
        for name, file in (("raw", state["weights"]), ("averaged", state["averaged_weights"])):
            model = build_model(config.model, tuple(runs.run_info(out)["x_shape"]))
            if name == "averaged":  # saved with AveragedModel's keys
                averaged = AveragedModel(model)
                runs.load_weights(out / file, averaged)
                model = averaged.module
            else:
                runs.load_weights(out / file, model)
            values[name] = dataset_terms(
                model,
                splits_valid,
                seed=config.train.seed + VALID_SEED_OFFSET,
                objective=config.objective.name,
                k=config.objective.k,
            ).bound
        lines.append(
            f"Polyak averaging: last epoch's validation bound {values['raw']:.3f} with the raw weights, "
            f"{values['averaged']:.3f} with their average ({values['averaged'] - values['raw']:+.3f} nats)"
        )
    return lines


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=60.0, help="training budget per run")
    p.add_argument("--k", type=int, default=5000, help="importance samples per test row")
    p.add_argument(
        "--ablations",
        nargs="*",
        metavar="WORD",
        help="also train each ablation under the same budget (those whose name contains a WORD, "
        "e.g. --ablations VampPrior IWAE; all without a WORD)",
    )
    p.add_argument(
        "--compile", action="store_true", help="train with the step compiled (train.compile; same recipe)"
    )
    p.add_argument(
        "--preset",
        choices=tuple(TARGETS),
        default="recipe",
        help="the preset trained: recipe, or hvae (the recipe with two stochastic layers)",
    )
    args = p.parse_args()
    source = "mnist5k" if args.smoke or not (SHARED / "test.npz").is_file() else f"binarized-mnist:{SHARED}"
    binarize = "static" if source == "mnist5k" else "none"
    minutes, k = (0.05, 50) if args.smoke else (args.minutes, args.k)
    recipe = preset(args.preset).replace(
        data={"source": source, "binarize": binarize}, train={"minutes": minutes, "compile": args.compile}
    )
    suffix = "-compiled" if args.compile else ""

    def run_dir(name: str) -> Path:  # one place, so the table and the within-run lines read one run
        return OUT / ("smoke" if args.smoke else "recipe") / f"{slug(name)}-{minutes:g}min{suffix}"

    rows = []
    for name, config in variants(recipe, args.ablations, args.preset).items():
        out = run_dir(name)
        info = runs.run_info(out) if (out / runs.RUN).is_file() else {}
        if info.get("status") != "finished":
            print(f"training {name!r} for up to {minutes:g} min -> {out}", flush=True)
            train(config, out, resume=bool(info), overwrite=False, progress=False)
        history = runs.read_metrics(out)
        best = runs.best_record(history)
        print(f"evaluating {name!r}: IS with k={k} on every test row", flush=True)
        result = evaluate_run(out, k=k)
        rows.append(
            (
                name,
                len(history),
                best["epoch"],
                -best["valid_bound_nats"],
                -result.elbo,
                result.nll,
                result.log_px_stderr,
                result.seconds_log_px,
            )
        )

    print(f"\nmachine: {machine()}; data: {source}; budget {minutes:g} min of training per run")
    print(
        f"{'run':<36}{'epochs':>7}{'best@':>6}{'valid -bound':>13}{'test -ELBO':>11}"
        f"{'test -log p(x)':>15}{'± s.e.':>8}{'IS s':>7}"
    )
    for name, epochs, best, valid, elbo, nll, se, seconds in rows:
        print(
            f"{name:<36}{epochs:>7}{best:>6}{valid:>13.2f}{elbo:>11.2f}{nll:>15.2f}{se:>8.3f}{seconds:>7.0f}"
        )
    print("\npublished test -log p(x), MLP models on static binarized MNIST (nats):")
    for name, value in PUBLISHED:
        print(f"  {name:<52}{value:>7.2f}")
    print(f"\nwithin the {args.preset} run (validation split):")
    for line in within_run(run_dir(args.preset)):
        print(f"  {line}")
    target = TARGETS[args.preset]
    nll = rows[0][5]
    print(
        f"\n{args.preset}: test -log p(x) = {nll:.2f} nats (target <= {target}): "
        f"{'met' if nll <= target else f'not met, {nll - target:+.2f} nats'}"
    )


if __name__ == "__main__":
    main()
