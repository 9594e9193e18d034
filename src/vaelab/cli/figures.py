"""Commands that show what a model learned: `plot`, `compare`, `sweep` and `report`.

vaelab plot RUN --kind grid --range -10,5,-5,5 --n 21
vaelab plot RUN --kind all                       # every figure into RUN/figures/
vaelab compare runs/demo/vae runs/demo/ae --out runs/demo/compare
vaelab sweep latent --values 2,4,8,16 --data mnist5k --epochs 20 --out runs/sweep-latent --jobs 2
vaelab report runs/demo/compare                  # -> runs/demo/compare/report.html
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

from vaelab.cli.options import add_command, add_run_config, build, run_config
from vaelab.cli.run import RunDir
from vaelab.config import Count, Device, Flag, Options, RunConfig, Samples, Seed, Split
from vaelab.errors import UserError


def _figure_kinds():
    from vaelab.viz.figures import FIGURE_KINDS

    return (*FIGURE_KINDS, "all")


def _sweep_kinds():
    from vaelab.experiments.sweep import SWEEPS

    return tuple(SWEEPS)


ZRange = Annotated[
    tuple[float, ...] | None,
    Field(min_length=4, max_length=4, description="latent range z1min,z1max,z2min,z2max, e.g. -10,5,-5,5"),
    Flag(name="--range", metavar="Z1MIN,Z1MAX,Z2MIN,Z2MAX"),
]


def _z_box(z_range: tuple[float, ...] | None) -> tuple[float, float, float, float] | None:
    """A ZRange as the 4-tuple it is (building the options checked its length)."""
    if z_range is None:
        return None
    z1min, z1max, z2min, z2max = z_range
    return z1min, z1max, z2min, z2max


def add_subcommands(sub) -> None:
    for add in (add_plot, add_compare, add_sweep, add_report):
        add(sub)


# ---------------------------------------------------------------------------------------- plot


class PlotOptions(Options):
    run: RunDir
    kind: Annotated[str, Field(description="which figure"), Flag(choices=_figure_kinds)] = "all"
    out: Annotated[
        Path | None,
        Field(
            description="PNG file (default RUN/figures/<kind>.png); for --kind all, a directory "
            "(default RUN/figures)"
        ),
        Flag(metavar="PATH"),
    ] = None
    n: Annotated[
        Count | None,
        Field(
            description="images (reconstructions 32, samples 64), grid points per axis (grid 21), path "
            "points (interpolation 10), steps (traversals 9), examples (label-swap 10) or samples per "
            "class (class-samples 10)"
        ),
    ] = None
    z_range: Annotated[
        ZRange, Field(description="latent range of the grid (default: Gaussian quantiles of the prior)")
    ] = None
    dims: Annotated[
        tuple[Annotated[int, Field(ge=1)], ...] | None,
        Field(
            min_length=2,
            max_length=2,
            description="latent dims of the grid axes, numbered from 1 as in the figures (1,2: z1 and z2; "
            "default: for Z > 2 the two of largest KL)",
        ),
        Flag(metavar="I,J"),
    ] = None
    base: Annotated[
        int | None,
        Field(
            ge=0,
            description="hold the other latent dims of a grid or traversal at the posterior mean of "
            "this image of --split (default: at 0, the prior mean)",
        ),
        Flag(metavar="INDEX"),
    ] = None
    mode: Annotated[
        Literal["mean", "sample"], Field(description="samples: the decoder mean E[x|z] or a draw x ~ p(x|z)")
    ] = "mean"
    method: Annotated[Literal["linear", "spherical"], Field(description="interpolation path")] = "linear"
    label: Annotated[
        str | None,
        Field(
            min_length=1,
            max_length=200,
            description="a conditional run (trained with --condition label): decode the samples, grid and "
            "traversals under this class and interpolate between images of it, by code or name (default: "
            "samples under each class in turn, grid and traversals under the --base image's label or the "
            "first class, each interpolation under its pair's own label)",
        ),
        Flag(metavar="LABEL"),
    ] = None
    split: Split = "test"
    seed: Annotated[Seed, Field(description="seed of the random choices of images and samples")] = 0
    device: Device = "auto"


def _dim_pair(dims: tuple[int, ...] | None) -> tuple[int, int] | None:
    """PlotOptions.dims as the pair it is (building the options checked its length)."""
    if dims is None:
        return None
    d1, d2 = dims
    return d1, d2


def add_plot(sub) -> None:
    add_command(
        sub,
        "plot",
        PlotOptions,
        cmd_plot,
        help="draw a figure of a run (PNG): grid, scatter, samples, ...",
        description="Draw one figure of a run, or all of them with --kind all.",
    )


def cmd_plot(args: argparse.Namespace) -> int:
    from vaelab.runs import check_run_dir
    from vaelab.viz.figures import FigureOptions
    from vaelab.viz.plot import plot_all, plot_run

    options: PlotOptions = build(PlotOptions, args, args.own)
    run = check_run_dir(options.run)
    label = plot_label(run, options.kind, options.label)
    figure_options = FigureOptions(
        split=options.split,
        seed=options.seed,
        n=options.n,
        z_range=_z_box(options.z_range),
        dims=_dim_pair(options.dims),
        base=options.base,
        mode=options.mode,
        method=options.method,
        label=label,
    )
    if options.kind == "all":
        written = plot_all(run, options.out, figure_options, device=options.device)
        for path in written.values():
            print(f"written: {path}")
        return 0
    path = plot_run(run, options.kind, options.out, figure_options, device=options.device)
    print(f"written: {path}")
    return 0


def plot_label(run: Path, kind: str, label: str | None) -> int | None:
    """The class code `--label` names (a code or a class name), None without one; refused for a run
    that is not conditional and for a figure kind that does not decode under a given label."""
    from vaelab.labels import label_code
    from vaelab.runs import read_config
    from vaelab.viz.conditional import conditional_config
    from vaelab.viz.figures import LABEL_KINDS

    if label is None:
        return None
    config = read_config(run)
    if not conditional_config(config):
        raise UserError(
            f"argument --label: {run} is not a conditional run (trained without --condition label)"
        )
    if kind != "all" and kind not in LABEL_KINDS:
        raise UserError(
            f"argument --label: figure kind {kind!r} takes no label (each image keeps its own); "
            f"--label is for {', '.join(LABEL_KINDS)}"
        )
    try:
        return label_code(config.model.classes or (), label)
    except UserError as err:
        raise UserError(f"argument --label: {err}") from None


# ------------------------------------------------------------------------------------- compare


class CompareOptions(Options):
    run_a: Annotated[Path, Field(description="first run"), Flag(name="RUN_A", positional=True)]
    run_b: Annotated[Path, Field(description="second run"), Flag(name="RUN_B", positional=True)]
    out: Annotated[
        Path | None, Field(description="output directory (default: RUN_A/../compare)"), Flag(metavar="DIR")
    ] = None
    k: Annotated[
        Samples, Field(description="importance samples for log p(x) when a run has no current eval.json")
    ] = 1000
    n: Annotated[Count, Field(description="grid points per axis")] = 21
    z_range: Annotated[
        ZRange, Field(description="latent range of the grids (default: Gaussian quantiles of the prior)")
    ] = None
    seed: Seed = 0
    device: Device = "auto"


def add_compare(sub) -> None:
    add_command(
        sub,
        "compare",
        CompareOptions,
        cmd_compare,
        help="AE vs VAE: two runs of the same data side by side",
        description="Measure two runs on the test split (reconstruction, ELBO and log p(x) where "
        "defined, a logistic-regression probe on the codes) and draw them side by side.",
    )


def cmd_compare(args: argparse.Namespace) -> int:
    from vaelab.experiments.compare import compare_runs, format_comparison

    options: CompareOptions = build(CompareOptions, args, args.own)
    out = options.out or options.run_a.parent / "compare"
    result = compare_runs(
        options.run_a,
        options.run_b,
        out,
        k=options.k,
        seed=options.seed,
        n_grid=options.n,
        z_range=_z_box(options.z_range),
        device=options.device,
    )
    print(format_comparison(result), end="")
    print(f"written: {out / 'compare.json'}, {out / 'compare.md'} and {len(result.figures)} figures in {out}")
    return 0


# --------------------------------------------------------------------------------------- sweep

SWEEP_BASE_FIELDS = (
    "data.source",
    "data.binarize",
    "model.latent_dim",
    "model.net",
    "model.hidden",
    "model.likelihood",
    "model.sigma",
    "objective.beta",
    "train.epochs",
    "train.batch_size",
    "train.lr",
    "train.seed",
    "train.patience",
    "train.device",
)
"""The run-config fields a sweep's flags set for every point (the swept one aside)."""


class SweepOptions(Options):
    kind: Annotated[
        str,
        Field(
            description="what to vary: latent size, Gaussian decoder sigma, KL weight beta, or learning rate"
        ),
        Flag(name="KIND", positional=True, choices=_sweep_kinds),
    ]
    values: Annotated[
        str, Field(min_length=1, description="values, e.g. 2,4,8,16,32,64,128"), Flag(metavar="V[,V...]")
    ]
    out: Annotated[Path, Field(description="sweep directory (one run per value)"), Flag(metavar="DIR")]
    jobs: Annotated[Count, Field(description="points trained in parallel processes")] = 1
    k: Annotated[Samples, Field(description="importance samples for log p(x)")] = 100
    config: Annotated[
        Path | None, Field(description="JSON base config (flags override it)"), Flag(metavar="FILE")
    ] = None
    storage: Annotated[
        str | None,
        Field(
            min_length=1,
            description="the sweep's Optuna storage, as for vaelab tune: journal:FILE, or a database URL "
            "shared by sweeps on several machines (default in --out)",
        ),
        Flag(metavar="URL"),
    ] = None


def add_sweep(sub) -> None:
    p = add_command(
        sub,
        "sweep",
        SweepOptions,
        cmd_sweep,
        help="train one run per value of a knob; CSV, markdown table and plot",
        description="Train and evaluate one run per value. Finished points are not re-run; "
        "running the same command again resumes an interrupted sweep.",
    )
    p.set_defaults(fields=add_run_config(p, SWEEP_BASE_FIELDS))


def cmd_sweep(args: argparse.Namespace) -> int:
    from vaelab.experiments.sweep import parse_values, run_sweep, sweep_markdown

    options: SweepOptions = build(SweepOptions, args, args.own)
    base, _ = run_config(args.fields, args, RunConfig(), options.config)
    try:
        values = parse_values(options.kind, options.values)
    except UserError as err:
        raise UserError(f"argument --{err}") from None  # the library names the field `values`
    result = run_sweep(
        options.kind,
        values,
        base,
        options.out,
        jobs=options.jobs,
        k=options.k,
        storage=options.storage,
    )
    print(sweep_markdown(result), end="")
    print(f"written: {options.out / 'sweep.csv'}, {options.out / 'sweep.md'}, {options.out / 'sweep.png'}")
    return 0


# -------------------------------------------------------------------------------------- report


class ReportOptions(Options):
    target: Annotated[
        Path,
        Field(description="a run, comparison or sweep directory"),
        Flag(name="RUN_OR_DIR", positional=True),
    ]
    out: Annotated[
        Path | None, Field(description="output file (default RUN_OR_DIR/report.html)"), Flag(metavar="HTML")
    ] = None
    k: Annotated[
        Samples, Field(description="importance samples for log p(x) when a run has no current eval.json")
    ] = 1000
    refresh: Annotated[bool, Field(description="redraw figures that already exist")] = False
    device: Device = "auto"


def add_report(sub) -> None:
    add_command(
        sub,
        "report",
        ReportOptions,
        cmd_report,
        help="one self-contained report.html of a run, comparison or sweep",
        description="Write one HTML file with every figure embedded; it opens offline.",
    )


def cmd_report(args: argparse.Namespace) -> int:
    from vaelab.experiments.report import write_report

    options: ReportOptions = build(ReportOptions, args, args.own)
    path = write_report(
        options.target, out=options.out, k=options.k, refresh=options.refresh, device=options.device
    )
    print(f"report: {path}")
    return 0
