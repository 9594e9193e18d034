"""`vaelab tune`: a hyperparameter study on Optuna, every trial an ordinary run.

vaelab tune --space space.yaml --data mnist5k --epochs 20 --trials 30 --jobs 2 --out runs/study
vaelab tune --param train.lr=float:1e-4:1e-2:log --param model.latent_dim=int:2:32 --out runs/study
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field

from vaelab.cli.options import add_command, add_run_config, build, run_config
from vaelab.config import Count, Flag, Options, RunConfig, Seed
from vaelab.errors import UserError


def add_subcommands(sub) -> None:
    p = add_command(
        sub,
        "tune",
        TuneOptions,
        cmd_tune,
        help="a hyperparameter study on Optuna: one run per trial, pruned on the validation bound",
        description="Search the parameters of --space/--param for the best validation bound. Every "
        "trial is a run directory in --out; the best is printed and linked as OUT/best. Starting the "
        "same command again resumes a killed study; several commands (or --jobs N) share one study. "
        "Run-config flags (--data, --epochs, ...) set what every trial shares.",
    )
    p.set_defaults(fields=add_run_config(p))


class TuneOptions(Options):
    out: Annotated[
        Path, Field(description="study directory: its storage and one run per trial"), Flag(metavar="DIR")
    ]
    space: Annotated[
        Path | None,
        Field(
            description="search space file, JSON or YAML: {section.field: {type: float|int|categorical, ...}}"
        ),
        Flag(metavar="FILE"),
    ] = None
    param: Annotated[
        tuple[str, ...],
        Field(
            description="a parameter: NAME=float:LOW:HIGH[:log], NAME=int:LOW:HIGH[:log] or "
            "NAME=choice:A|B|... (repeatable; adds to --space)"
        ),
        Flag(metavar="NAME=SPEC", repeat=True),
    ] = ()
    trials: Annotated[
        Count, Field(description="trials of the study in all (a resumed study counts its earlier ones)")
    ] = 20
    jobs: Annotated[Count, Field(description="worker processes on this machine")] = 1
    storage: Annotated[
        str | None,
        Field(
            min_length=1,
            description="Optuna storage: journal:FILE, or a database URL such as postgresql://... to "
            "share the study across machines (default OUT/study.db, SQLite, or OUT/study.journal "
            "with --jobs > 1)",
        ),
        Flag(metavar="URL"),
    ] = None
    study: Annotated[
        str,
        Field(min_length=1, max_length=200, description="study name in the storage"),
        Flag(metavar="NAME"),
    ] = "vaelab"
    sampler: Annotated[
        Literal["tpe", "random", "grid"],
        Field(description="tpe (Bayesian), random, or grid (every combination of categorical choices)"),
    ] = "tpe"
    sampler_seed: Annotated[Seed, Field(description="seed of the sampler")] = 0
    pruner: Annotated[
        Literal["median", "none"],
        Field(description="median: stop a trial whose epoch's bound is below the median of earlier trials'"),
    ] = "median"
    prune_after: Annotated[
        int, Field(ge=0, le=10**6, description="finished trials before the pruner starts"), Flag(metavar="N")
    ] = 2
    config: Annotated[
        Path | None, Field(description="JSON base config (flags override it)"), Flag(metavar="FILE")
    ] = None


def cmd_tune(args: argparse.Namespace) -> int:
    from vaelab.experiments.tune import load_search_space, tune

    options: TuneOptions = build(TuneOptions, args, args.own)
    base, user_set = run_config(args.fields, args, RunConfig(), options.config)
    for problem in base.ignored_settings(user_set):
        field, _, reason = problem.partition(": ")
        raise UserError(f"{args.fields[field].flag}: {reason}; drop it or change what it depends on")
    if options.space is None and not options.param:
        raise UserError("give a search space: --space FILE or --param NAME=SPEC (see 'vaelab tune --help')")
    try:
        space = load_search_space(options.space, options.param, base)
    except UserError as err:
        raise UserError(f"argument --{err}" if str(err).startswith("param") else str(err)) from None
    result = tune(
        base,
        space,
        options.out,
        trials=options.trials,
        jobs=options.jobs,
        storage=options.storage,
        study=options.study,
        sampler=options.sampler,
        seed=options.sampler_seed,
        pruner=options.pruner,
        prune_startup=options.prune_after,
        on_trial=print_trial,
    )
    params = ", ".join(f"{name}={value}" for name, value in result.best_params.items())
    print(
        f"best: {result.best_run}  (validation bound {result.best_value:.3f} nats; {params}); "
        f"linked as {options.out / 'best'}"
    )
    return 0


def print_trial(trial: Any) -> None:
    """One line per finished trial."""
    run = trial.user_attrs.get("run", "")
    params = ", ".join(f"{name}={value}" for name, value in trial.params.items())
    state = trial.state.name.lower()
    if state == "complete":
        what = f"validation bound {trial.value:.3f} nats"
    elif state == "pruned":
        what = f"pruned after epoch {trial.last_step}"
    else:
        what = f"failed: {trial.user_attrs.get('error', 'its worker stopped')}"
    print(f"trial {trial.number:>3}  {what}  ({params})  {run}", flush=True)
