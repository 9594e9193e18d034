"""CLI commands that show what a model learned: `plot`, `compare`, `sweep` and `report`.

`vaelab.cli` registers them through `add_subcommands(sub)`. Like the rest of the CLI they parse
flags and call the library (`vaelab.viz`, `vaelab.experiments.compare`, `.sweep`, `.report`);
bad input is a `UserError`, printed as one line with exit status 2.

    vaelab plot RUN --kind grid --range -10,5,-5,5 --n 21
    vaelab plot RUN --kind all                       # every figure into RUN/figures/
    vaelab compare runs/demo/vae runs/demo/ae --out runs/demo/compare
    vaelab sweep latent --values 2,4,8,16 --data mnist5k --epochs 20 --out runs/sweep-latent --jobs 2
    vaelab report runs/demo/compare                  # -> runs/demo/compare/report.html
"""

from __future__ import annotations

import re
from pathlib import Path

from vaelab.cli_types import FlagTable, flag_changes, hidden_sizes, integer, number, sigma_or_learned
from vaelab.errors import UserError
from vaelab.viz.figures import FIGURE_KINDS

KINDS = (*FIGURE_KINDS, "all")


def _range(text: str) -> tuple[float, float, float, float]:
    parts = text.split(",")
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 4:
        raise UserError(f"--range: expected z1min,z1max,z2min,z2max such as -10,5,-5,5, got {text!r}")
    return values  # type: ignore[return-value]


def _dims(text: str) -> tuple[int, int]:
    try:
        first, second = (int(p) for p in text.split(","))
    except ValueError:
        raise UserError(f"--dims: expected two latent dims such as 0,1, got {text!r}") from None
    return first, second


def add_subcommands(sub) -> None:
    for add in (add_plot, add_compare, add_sweep, add_report):
        _accept_negative_lists(add(sub))


def _accept_negative_lists(parser) -> None:
    """Let `--range -10,5,-5,5` parse: argparse reads a value starting with '-' as an option unless it
    looks like a negative number, and its (private) test knows no comma-separated lists."""
    if hasattr(parser, "_negative_number_matcher"):
        parser._negative_number_matcher = re.compile(r"^-\d[\d.,eE+-]*$|^-\.\d[\d.,eE+-]*$")


# ---------------------------------------------------------------------------------------- plot


def add_plot(sub):
    p = sub.add_parser(
        "plot",
        help="draw a figure of a run (PNG): grid, scatter, samples, ...",
        description="Draw one figure of a run, or all of them with --kind all.",
    )
    p.add_argument("run", type=Path, metavar="RUN")
    p.add_argument("--kind", default="all", choices=KINDS, help="which figure (default all)")
    p.add_argument(
        "--out",
        type=Path,
        metavar="PNG",
        help="PNG path (default RUN/figures/<kind>.png, named after any non-default options, e.g. "
        "grid-n11.png); for --kind all, a directory (default RUN/figures)",
    )
    p.add_argument(
        "--n",
        type=integer,
        metavar="N",
        help="images (reconstructions 32, samples 64), grid points per "
        "axis (grid 21), path points (interpolation 10) or steps (traversals 9)",
    )
    p.add_argument(
        "--range",
        type=_range,
        dest="z_range",
        metavar="Z1MIN,Z1MAX,Z2MIN,Z2MAX",
        help="latent range of the grid, e.g. -10,5,-5,5 (default: Gaussian quantiles of the prior)",
    )
    p.add_argument(
        "--dims",
        type=_dims,
        metavar="I,J",
        help="latent dims of the grid axes, from 0 (default: for Z > 2 the two of largest KL)",
    )
    p.add_argument(
        "--base",
        type=integer,
        metavar="INDEX",
        help="hold the other latent dims of a grid or traversal at "
        "the posterior mean of this image of --split (default: at 0, the prior mean)",
    )
    p.add_argument(
        "--mode",
        default="mean",
        choices=["mean", "sample"],
        help="samples: show the decoder mean E[x|z] or a draw x ~ p(x|z) (default mean)",
    )
    p.add_argument(
        "--method",
        default="linear",
        choices=["linear", "spherical"],
        help="interpolation path (default linear)",
    )
    p.add_argument(
        "--split", default="test", choices=["train", "valid", "test"], help="data split (default test)"
    )
    p.add_argument("--seed", type=integer, default=0, help="seed of the random choices of images and samples")
    p.set_defaults(func=cmd_plot)
    return p


def cmd_plot(args) -> int:
    from vaelab.runs import check_run_dir
    from vaelab.viz.figures import FigureOptions
    from vaelab.viz.plot import plot_all, plot_run

    run = check_run_dir(args.run)
    options = FigureOptions(
        split=args.split,
        seed=args.seed,
        n=args.n,
        z_range=args.z_range,
        dims=args.dims,
        base=args.base,
        mode=args.mode,
        method=args.method,
    )
    if args.kind == "all":
        written = plot_all(run, args.out, options)
        for path in written.values():
            print(f"written: {path}")
        return 0
    path = plot_run(run, args.kind, args.out, options)
    print(f"written: {path}")
    return 0


# ------------------------------------------------------------------------------------- compare


def add_compare(sub):
    p = sub.add_parser(
        "compare",
        help="AE vs VAE: two runs of the same data side by side",
        description="Measure two runs on the test split (reconstruction, ELBO and log p(x) where "
        "defined, a logistic-regression probe on the codes) and draw them side by side.",
    )
    p.add_argument("run_a", type=Path, metavar="RUN_A")
    p.add_argument("run_b", type=Path, metavar="RUN_B")
    p.add_argument("--out", type=Path, metavar="DIR", help="output directory (default: RUN_A/../compare)")
    p.add_argument(
        "--k",
        type=integer,
        default=1000,
        help="importance samples for log p(x) when a run has no current eval.json (default 1000)",
    )
    p.add_argument("--n", type=integer, default=21, help="grid points per axis (default 21)")
    p.add_argument(
        "--range",
        type=_range,
        dest="z_range",
        metavar="Z1MIN,Z1MAX,Z2MIN,Z2MAX",
        help="latent range of the grids (default: Gaussian quantiles of the prior)",
    )
    p.add_argument("--seed", type=integer, default=0)
    p.set_defaults(func=cmd_compare)
    return p


def cmd_compare(args) -> int:
    from vaelab.experiments.compare import compare_runs, format_comparison

    out = args.out or args.run_a.parent / "compare"
    result = compare_runs(
        args.run_a, args.run_b, out, k=args.k, seed=args.seed, n_grid=args.n, z_range=args.z_range
    )
    print(format_comparison(result), end="")
    print(f"written: {out / 'compare.json'}, {out / 'compare.md'} and {len(result.figures)} figures in {out}")
    return 0


# --------------------------------------------------------------------------------------- sweep

# sweep base flag -> (config section, field, parser)
SWEEP_FLAGS: FlagTable = {
    "data": ("data", "source", str),
    "binarize": ("data", "binarize", str),
    "latent_dim": ("model", "latent_dim", integer),
    "net": ("model", "net", str),
    "hidden": ("model", "hidden", hidden_sizes),
    "likelihood": ("model", "likelihood", str),
    "sigma": ("model", "sigma", sigma_or_learned),
    "beta": ("objective", "beta", number),
    "epochs": ("train", "epochs", integer),
    "batch_size": ("train", "batch_size", integer),
    "lr": ("train", "lr", number),
    "seed": ("train", "seed", integer),
    "patience": ("train", "patience", integer),
}


def add_sweep(sub):
    p = sub.add_parser(
        "sweep",
        help="train one run per value of a knob; CSV, markdown table and plot",
        description="Train and evaluate one run per value. Finished points are not re-run; "
        "running the same command again resumes an interrupted sweep.",
    )
    p.add_argument(
        "kind",
        choices=["latent", "sigma", "beta", "lr"],
        help="latent size, Gaussian decoder sigma, KL weight beta, or learning rate",
    )
    p.add_argument("--values", required=True, metavar="V[,V...]", help="values, e.g. 2,4,8,16,32,64,128")
    p.add_argument(
        "--out", type=Path, required=True, metavar="DIR", help="sweep directory (one run per value)"
    )
    p.add_argument(
        "--jobs", type=integer, default=1, metavar="N", help="points trained in parallel processes"
    )
    p.add_argument("--k", type=integer, default=100, help="importance samples for log p(x) (default 100)")
    p.add_argument("--config", type=Path, help="JSON base config (flags below override it)")
    p.add_argument("--data", help="data spec (default mnist5k)", metavar="SPEC")
    p.add_argument("--binarize", choices=["none", "static", "dynamic"], help="default none")
    p.add_argument("--latent-dim", metavar="N", help="latent size of the other sweeps (default 2)")
    p.add_argument("--net", choices=["mlp", "gated", "conv"])
    p.add_argument("--hidden", metavar="H[,H...]", help="hidden sizes (default 512,256)")
    p.add_argument("--likelihood", choices=["bernoulli", "gaussian"])
    p.add_argument("--sigma", metavar="S", help="Gaussian decoder sigma of the other sweeps")
    p.add_argument("--beta", metavar="B", help="KL weight of the other sweeps (default 1)")
    p.add_argument("--epochs", metavar="N", help="epochs per point (default 30)")
    p.add_argument("--batch-size", metavar="N")
    p.add_argument("--lr", metavar="F")
    p.add_argument("--seed", metavar="N")
    p.add_argument("--patience", metavar="N")
    p.set_defaults(func=cmd_sweep)
    return p


def sweep_base_config(args):
    from vaelab.config import RunConfig
    from vaelab.runs import read_json

    config = (
        RunConfig.from_dict(read_json(args.config), where=str(args.config)) if args.config else RunConfig()
    )
    return config.replace(**flag_changes(args, SWEEP_FLAGS)).validate()


def cmd_sweep(args) -> int:
    from vaelab.experiments.sweep import parse_values, run_sweep, sweep_markdown

    try:
        values = parse_values(args.kind, args.values)
    except UserError as err:
        raise UserError(f"--{err}") from None  # the library names the field `values`
    result = run_sweep(
        args.kind,
        values,
        sweep_base_config(args),
        args.out,
        jobs=args.jobs,
        k=args.k,
    )
    print(sweep_markdown(result), end="")
    print(f"written: {args.out / 'sweep.csv'}, {args.out / 'sweep.md'}, {args.out / 'sweep.png'}")
    return 0


# -------------------------------------------------------------------------------------- report


def add_report(sub):
    p = sub.add_parser(
        "report",
        help="one self-contained report.html of a run, comparison or sweep",
        description="Write one HTML file with every figure embedded; it opens offline.",
    )
    p.add_argument("target", type=Path, metavar="RUN_OR_DIR")
    p.add_argument("--out", type=Path, metavar="HTML", help="output file (default RUN_OR_DIR/report.html)")
    p.add_argument(
        "--k",
        type=integer,
        default=1000,
        help="importance samples for log p(x) when a run has no current eval.json (default 1000)",
    )
    p.add_argument("--refresh", action="store_true", help="redraw figures that already exist")
    p.set_defaults(func=cmd_report)
    return p


def cmd_report(args) -> int:
    from vaelab.experiments.report import write_report

    path = write_report(args.target, out=args.out, k=args.k, refresh=args.refresh)
    print(f"report: {path}")
    return 0
