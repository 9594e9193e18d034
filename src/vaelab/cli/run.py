"""Commands on one run: `train`, `evaluate`, `sample`, `reconstruct`.

vaelab train --data mnist5k --latent-dim 2 --epochs 30 --out runs/vae
vaelab evaluate runs/vae --k 1000
vaelab sample runs/vae --n 64
vaelab sample runs/cvae --label 7        # a conditional run (--condition label): given a class
vaelab reconstruct runs/vae
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field

from vaelab.cli.options import Fields, add_command, add_fields, add_run_config, build, run_config
from vaelab.config import (
    PRESETS,
    Count,
    Device,
    Flag,
    Options,
    Positive,
    Precision,
    PresetName,
    RunConfig,
    Samples,
    Seed,
    Split,
    preset,
)
from vaelab.errors import UserError
from vaelab.runs import check_run_dir

RunDir = Annotated[Path, Field(description="run directory"), Flag(name="RUN", positional=True)]


def add_subcommands(sub) -> None:
    for add in (add_train, add_evaluate, add_sample, add_reconstruct):
        add(sub)


# ------------------------------------------------------------------------------------- train


class TrainOptions(Options):
    """What `train` takes besides the run's config."""

    preset: Annotated[
        PresetName | None, Field(description=f"start from a named config: {', '.join(PRESETS)}")
    ] = None
    config: Annotated[
        Path | None,
        Field(description="JSON config with sections data, model, objective, train (flags override it)"),
        Flag(metavar="FILE"),
    ] = None
    out: Annotated[
        Path | None,
        Field(description="run directory to create (default runs/<data>-<model>)"),
        Flag(metavar="DIR"),
    ] = None
    resume: Annotated[
        Path | None,
        Field(description="continue an interrupted run from its last checkpoint"),
        Flag(metavar="RUN"),
    ] = None
    overwrite: Annotated[bool, Field(description="replace an existing run at --out")] = False
    quiet: Annotated[bool, Field(description="no progress bar or per-epoch lines")] = False
    nproc: Annotated[
        Count,
        Field(
            description="data-parallel ranks on this machine (launches torchrun's launcher; "
            "see README for several machines)"
        ),
    ] = 1
    ddp_timeout: Annotated[
        Positive,
        Field(description="seconds a data-parallel rank waits for the others before it fails"),
        Flag(metavar="SECONDS"),
    ] = 600.0


def add_train(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a VAE or an AE into a run directory",
        description="Train a model into the run directory --out. Flags override --config, which "
        "overrides --preset, which overrides the defaults.",
    )
    p.set_defaults(func=cmd_train, fields=add_run_config(p), own=add_fields(p, TrainOptions))


def train_config(fields: Fields, args: argparse.Namespace, options: TrainOptions) -> RunConfig:
    """Defaults, then --preset, then --config JSON, then flags, validated once. A setting the user
    gave that the config would ignore (e.g. --sigma with the bernoulli likelihood) is refused."""
    base = preset(options.preset) if options.preset else RunConfig()
    config, user_set = run_config(fields, args, base, options.config)
    for problem in config.ignored_settings(user_set):
        field, _, reason = problem.partition(": ")
        name = fields[field].flag if hasattr(args, fields[field].dest) else f"{options.config}: {field}"
        raise UserError(f"{name}: {reason}; drop it or change what it depends on")
    return config


def cmd_train(args: argparse.Namespace) -> int:
    from vaelab import distributed
    from vaelab.experiments.tracking import train_tracked

    options: TrainOptions = build(TrainOptions, args, args.own)
    if "ddp_timeout" in args.own.given(args) and options.nproc == 1 and not distributed.launched():
        raise UserError(
            "--ddp-timeout: ignored (it applies to data-parallel training, --nproc N or torchrun)"
        )
    if options.nproc > 1 and not distributed.launched():
        if options.resume is None:
            train_config(args.fields, args, options)  # a bad flag is one line here, not one per rank
        return distributed.launch(options.nproc, args.argv)
    device = None
    if options.resume is not None:
        flags = args.fields.given(args)
        device = flags.pop("train.device", None)  # a run may continue on another device
        given = [args.fields[f].flag for f in flags]
        if options.preset:
            given.append("--preset")
        if given or options.config:
            raise UserError(
                f"--resume uses the run's own config (and --device); drop {', '.join(given) or '--config'}"
            )
        out, config = options.resume, RunConfig()
    else:
        config = train_config(args.fields, args, options)
        out = options.out or Path("runs") / f"{config.data.source.split(':')[0]}-{config.model.kind}"
    # vaelab.train.train, or one rank's share under torchrun; rank 0 alone reports to trackers
    result = train_tracked(
        config,
        out,
        train_fn=distributed.train,
        tracked=distributed.rank() == 0,
        resume=options.resume is not None,
        overwrite=options.overwrite,
        progress=not options.quiet and sys.stderr.isatty(),
        on_epoch=None if options.quiet else print_epoch,
        timeout_seconds=options.ddp_timeout,
        device=device,
    )
    if result is None:  # a data-parallel rank other than 0: rank 0 reports
        return 0
    print(
        f"run: {result.run_dir}  (best validation {result.bound} {result.best_valid_bound:.3f} nats at epoch "
        f"{result.best_epoch}{', stopped early' if result.stopped_early else ''})"
    )
    print_settings(result.run_dir)
    return 0


def print_settings(run_dir: Path) -> None:
    """Where the run trained and with what it chose (`precision auto`, `compile auto`) and why."""
    from vaelab.runs import run_info

    info = run_info(run_dir)
    settings, environment = info.get("settings"), info.get("environment")
    if settings and environment:
        print(
            f"trained on {environment['device']}: precision {settings['precision']}, compile "
            f"{settings['compile']} ({settings['why']}); data {settings['data']}"
        )


def print_epoch(record: dict[str, Any]) -> None:
    """One line per epoch: the ELBO and its terms for a VAE (plus the bound selected on, when it
    is not the ELBO), the reconstruction term alone for an AE, whose record has no ELBO."""
    if "compile_seconds" in record:
        print(f"compiled the training step in {record['compile_seconds']:.1f} s", flush=True)
    if "device_memory_bytes" in record:
        print(f"device memory: {record['device_memory_bytes'] / 2**20:.0f} MiB at most", flush=True)
    speed = f"{record['images_per_second']:8.0f} img/s"
    if "valid_elbo_nats" not in record:
        line = (
            f"train recon {record['train_log_p_x_given_z_nats']:9.3f}  "
            f"valid recon {record['valid_log_p_x_given_z_nats']:9.3f} nats/example  {speed}"
        )
    else:
        line = (
            f"train ELBO {record['train_elbo_nats']:9.3f}  valid ELBO {record['valid_elbo_nats']:9.3f} "
            f"(recon {record['valid_log_p_x_given_z_nats']:9.3f}, KL {record['valid_kl_nats']:7.3f}) "
            f"nats/example  {speed}"
        )
        if record["bound"] != "ELBO":
            line += f"  valid {record['bound']} {record['valid_bound_nats']:9.3f}"
    print(f"epoch {record['epoch']:>3}  {line}", flush=True)


# ---------------------------------------------------------------------------------- evaluate


class EvaluateOptions(Options):
    run: RunDir
    k: Samples = 1000
    split: Split = "test"
    batch_size: Annotated[
        Count | None,
        Field(
            description="examples per importance-sampling batch (default: 100 on a CPU, from the free "
            "memory on a GPU)"
        ),
    ] = None
    seed: Seed = 0
    precision: Annotated[
        Precision,
        Field(
            description="importance sampling's network products: fp32 (auto: the estimate is a "
            "measurement), or bf16/fp16 (~2x faster; log-probabilities stay fp32)"
        ),
    ] = "fp32"
    gap_rows: Annotated[
        int,
        Field(
            ge=0,
            description="split the inference gap into approximation and amortization gaps on "
            "this many random rows (Cremer et al. 2018; 0: skip)",
        ),
        Flag(metavar="N"),
    ] = 100
    device: Device = "auto"


def add_evaluate(sub) -> None:
    add_command(
        sub,
        "evaluate",
        EvaluateOptions,
        cmd_evaluate,
        help="ELBO, its terms and an importance-sampled log p(x) of a run on a split",
        description="Evaluate a run on a data split; writes RUN/eval.json (RUN/eval-SPLIT.json for "
        "another split than test).",
    )


def cmd_evaluate(args: argparse.Namespace) -> int:
    from vaelab.evaluate import evaluate_run, format_evaluation

    options: EvaluateOptions = build(EvaluateOptions, args, args.own)
    result = evaluate_run(
        options.run,
        k=options.k,
        split=options.split,
        batch_size=options.batch_size,
        seed=options.seed,
        precision=options.precision,
        gap_rows=options.gap_rows,
        device=options.device,
    )
    print(format_evaluation(result))
    print(f"written: {result.path}")
    return 0


# ----------------------------------------------------------------------- sample, reconstruct


class SampleOptions(Options):
    run: RunDir
    n: Annotated[Count | None, Field(description="number of samples (default 64)")] = None
    mode: Annotated[
        Literal["mean", "sample"],
        Field(description="show the decoder mean E[x|z] or a draw x ~ p(x|z)"),
    ] = "mean"
    seed: Seed = 0
    device: Device = "auto"
    label: Annotated[
        str | None,
        Field(
            min_length=1,
            max_length=200,
            description="a conditional run (trained with --condition label): sample given this class, "
            "by code or name (e.g. 7, sneaker)",
        ),
        Flag(metavar="LABEL"),
    ] = None
    out: Annotated[
        Path | None,
        Field(
            description="a file: .png (a picture: image tiles, or a tabular run's column marginals), .csv "
            "or .npy (the rows, in the data's units, under the column names); default RUN/figures/"
            "samples.png, or RUN/samples.csv for a tabular run"
        ),
        Flag(metavar="FILE"),
    ] = None


class ReconstructOptions(Options):
    run: RunDir
    n: Annotated[Count | None, Field(description="number of examples (default 32)")] = None
    split: Split = "test"
    seed: Annotated[Seed, Field(description="seed of the random choice of examples")] = 0
    device: Device = "auto"
    out: Annotated[
        Path | None,
        Field(
            description="a file: .png (originals over reconstructions; a tabular run: each column against "
            "its reconstruction), .csv or .npy (the reconstructed rows, in the data's units, under the "
            "column names); default RUN/figures/reconstructions.png, or RUN/reconstructions.csv for a "
            "tabular run"
        ),
        Flag(metavar="FILE"),
    ] = None


def add_sample(sub) -> None:
    add_command(
        sub,
        "sample",
        SampleOptions,
        cmd_sample,
        help="decode samples z ~ p(z): a PNG, or rows (.csv, .npy) in the data's units",
    )


def cmd_sample(args: argparse.Namespace) -> int:
    from vaelab.tabular import write_samples
    from vaelab.viz.figures import FigureOptions, data_kind
    from vaelab.viz.plot import plot_run

    options: SampleOptions = build(SampleOptions, args, args.own)
    tabular = data_kind(check_run_dir(options.run)) == "tabular"
    rows = rows_wanted(options.out, tabular)
    label = sample_label(options.run, options.label, rows=rows)
    if rows:
        path = write_samples(
            options.run,
            options.out,
            n=options.n,
            mode=options.mode,
            seed=options.seed,
            device=options.device,
            label=label,
        )
    else:
        figure = FigureOptions(n=options.n, mode=options.mode, seed=options.seed, label=label)
        path = plot_run(
            options.run, "marginals" if tabular else "samples", options.out, figure, device=options.device
        )
    print(f"written: {path}")
    return 0


def sample_label(run: Path, label: str | None, *, rows: bool = True) -> int | None:
    """The class code `--label` names (a code or a class name), None without one; refused for a run
    that is not conditional, and a conditional run's rows (not its picture, which shows each class
    in turn without one) need one."""
    from vaelab.labels import describe_classes, label_code
    from vaelab.runs import read_config
    from vaelab.viz.conditional import conditional_config

    config = read_config(run)
    classes = config.model.classes if conditional_config(config) else None
    if label is None:
        if classes is not None and rows:
            raise UserError(
                f"{run} is a conditional run: sample its rows given a class, --label LABEL (its classes: "
                f"{describe_classes(classes)}); its picture (.png) without --label shows each class in turn"
            )
        return None
    if classes is None:
        raise UserError(
            f"argument --label: {run} is not a conditional run (trained without --condition label)"
        )
    try:
        return label_code(classes, label)
    except UserError as err:
        raise UserError(f"argument --label: {err}") from None


def rows_wanted(out: Path | None, tabular: bool) -> bool:
    """Whether `sample`/`reconstruct` write rows (.csv, .npy) rather than a picture (.png): by the
    suffix of --out, and for no --out by the data (a tabular run's default is rows)."""
    if out is None:
        return tabular
    if out.suffix not in (".png", ".csv", ".npy"):
        raise UserError(f"--out {out}: expected a .png, .csv or .npy file")
    return out.suffix != ".png"


def add_reconstruct(sub) -> None:
    add_command(
        sub,
        "reconstruct",
        ReconstructOptions,
        cmd_reconstruct,
        help="reconstructions of a split's examples: a PNG, or rows (.csv, .npy) in the data's units",
    )


def cmd_reconstruct(args: argparse.Namespace) -> int:
    from vaelab.tabular import write_reconstructions
    from vaelab.viz.figures import FigureOptions, data_kind
    from vaelab.viz.plot import plot_run

    options: ReconstructOptions = build(ReconstructOptions, args, args.own)
    tabular = data_kind(check_run_dir(options.run)) == "tabular"
    if rows_wanted(options.out, tabular):
        path = write_reconstructions(
            options.run,
            options.out,
            n=options.n,
            split=options.split,
            seed=options.seed,
            device=options.device,
        )
    else:
        figure = FigureOptions(n=options.n, split=options.split, seed=options.seed)
        kind = "column-reconstructions" if tabular else "reconstructions"
        path = plot_run(options.run, kind, options.out, figure, device=options.device)
    print(f"written: {path}")
    return 0
