"""The `vaelab` command line: a thin layer that parses flags into configs and calls the library.

Bad input exits with status 2 and one line on stderr (`vaelab: error: ...`), never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from vaelab.cli_types import FlagTable, flag_changes, hidden_sizes, integer, number, sigma_or_learned
from vaelab.errors import UserError

# train flag -> (config section, field, parser of the flag's text)
TRAIN_FLAGS: FlagTable = {}


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line and exits 2."""

    def error(self, message: str):  # type: ignore[override]
        raise UserError(f"{message} (see '{self.prog} --help')")


# (flag, config section, field, parser, help, extra argparse keywords): one row per config field
TRAIN_FLAG_TABLE: list[tuple[str, str, str, Callable[[str], Any], str, dict[str, Any]]] = [
    (
        "--data",
        "data",
        "source",
        str,
        "data spec: mnist5k, digits, binarized-mnist:DIR, mnist:DIR, "
        "fashion-mnist:DIR, npz:FILE, npy:FILE, csv:FILE, folder:DIR (default mnist5k)",
        {"metavar": "SPEC"},
    ),
    (
        "--binarize",
        "data",
        "binarize",
        str,
        "none, static or dynamic (default none)",
        {"choices": ["none", "static", "dynamic"]},
    ),
    ("--model", "model", "kind", str, "vae or ae (default vae)", {"choices": ["vae", "ae"]}),
    ("--latent-dim", "model", "latent_dim", integer, "latent size Z (default 2)", {"metavar": "N"}),
    (
        "--net",
        "model",
        "net",
        str,
        "mlp, gated (gated MLP) or conv (default mlp)",
        {"choices": ["mlp", "gated", "conv"]},
    ),
    (
        "--hidden",
        "model",
        "hidden",
        hidden_sizes,
        "hidden sizes, e.g. 400 or 512,256 (default 512,256)",
        {"metavar": "H[,H...]"},
    ),
    ("--activation", "model", "activation", str, "relu, elu, tanh or gelu (default relu)", {}),
    (
        "--likelihood",
        "model",
        "likelihood",
        str,
        "bernoulli (from logits) or gaussian (default bernoulli)",
        {"choices": ["bernoulli", "gaussian"]},
    ),
    (
        "--sigma",
        "model",
        "sigma",
        sigma_or_learned,
        "gaussian decoder's sigma: a number, or 'learned' (default 0.1)",
        {"metavar": "S"},
    ),
    (
        "--prior",
        "model",
        "prior",
        str,
        "normal (N(0, I)), mog (learned mixture) or vamp (VampPrior)",
        {"choices": ["normal", "mog", "vamp"]},
    ),
    (
        "--prior-components",
        "model",
        "prior_components",
        integer,
        "components / pseudo-inputs of a mog or vamp prior (default 500)",
        {"metavar": "K"},
    ),
    (
        "--dropout",
        "model",
        "dropout",
        number,
        "dropout probability after every hidden layer while training (default 0)",
        {"metavar": "P"},
    ),
    ("--objective", "objective", "name", str, "elbo or iwae (default elbo)", {"choices": ["elbo", "iwae"]}),
    ("--beta", "objective", "beta", number, "weight of the KL term (default 1: the ELBO)", {"metavar": "B"}),
    (
        "--k",
        "objective",
        "k",
        integer,
        "samples of the iwae bound (default 1)",
        {"metavar": "K"},
    ),
    (
        "--kl-warmup-epochs",
        "objective",
        "kl_warmup_epochs",
        integer,
        "ramp the KL weight from 0 to beta over N epochs (default 0)",
        {"metavar": "N"},
    ),
    ("--epochs", "train", "epochs", integer, "epochs (default 30)", {"metavar": "N"}),
    ("--batch-size", "train", "batch_size", integer, "minibatch size (default 128)", {"metavar": "N"}),
    ("--lr", "train", "lr", number, "Adam learning rate (default 1e-3)", {"metavar": "F"}),
    (
        "--lr-schedule",
        "train",
        "lr_schedule",
        str,
        "constant; cosine decay to lr/100; or plateau: halve after --lr-patience epochs without "
        "validation improvement (default constant)",
        {"choices": ["constant", "cosine", "plateau"]},
    ),
    (
        "--lr-patience",
        "train",
        "lr_patience",
        integer,
        "epochs without improvement before the plateau schedule halves lr (default 10)",
        {"metavar": "N"},
    ),
    (
        "--ema",
        "train",
        "ema",
        number,
        "Polyak averaging of the weights with this decay per step, e.g. 0.999 (default 0: off)",
        {"metavar": "D"},
    ),
    (
        "--weight-decay",
        "train",
        "weight_decay",
        number,
        "decoupled weight decay, AdamW (default 0)",
        {"metavar": "F"},
    ),
    (
        "--seed",
        "train",
        "seed",
        integer,
        "seed of weights, order and noise (default 0)",
        {"metavar": "N"},
    ),
    (
        "--patience",
        "train",
        "patience",
        integer,
        "early stopping: stop after N epochs without validation improvement",
        {"metavar": "N"},
    ),
    (
        "--threads",
        "train",
        "threads",
        integer,
        "CPU threads (default: PyTorch's)",
        {"metavar": "N"},
    ),
    (
        "--minutes",
        "train",
        "minutes",
        number,
        "wall-clock budget for training (default: none)",
        {"metavar": "M"},
    ),
    (
        "--precision",
        "train",
        "precision",
        str,
        "fp32, or bf16: matrix products in bfloat16, log-probabilities in float32 (default fp32)",
        {"choices": ["fp32", "bf16"]},
    ),
    (
        "--compile",
        "train",
        "compile",
        bool,
        "compile the training step with torch.compile: faster epochs after a one-time compile "
        "of seconds to tens of seconds (needs a C++ compiler)",
        {"action": argparse.BooleanOptionalAction},
    ),
]
TRAIN_FLAGS.update(
    {flag.lstrip("-").replace("-", "_"): (sec, fld, conv) for flag, sec, fld, conv, _, _ in TRAIN_FLAG_TABLE}
)


def add_train(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a VAE or an AE into a run directory",
        description="Train a model. Flags override --config, which overrides defaults.",
    )
    for flag, _, _, _, help_text, extra in TRAIN_FLAG_TABLE:
        p.add_argument(flag, dest=flag.lstrip("-").replace("-", "_"), default=None, help=help_text, **extra)
    p.add_argument("--preset", help="start from a named config: classic, recipe (see vaelab/config.py)")
    p.add_argument("--config", type=Path, help="JSON config (sections data, model, objective, train)")
    p.add_argument("--out", type=Path, help="run directory to create (default runs/<data>-<model>)")
    p.add_argument(
        "--resume", type=Path, metavar="RUN", help="continue an interrupted run from its last checkpoint"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing run at --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    p.set_defaults(func=cmd_train)


def train_config(args) -> Any:
    """Defaults, then --preset, then --config JSON, then flags; the result is validated."""
    from vaelab.config import RunConfig, preset
    from vaelab.runs import read_json

    config = preset(args.preset) if args.preset else RunConfig()
    if args.config:
        raw = read_json(args.config)
        RunConfig.from_dict(raw, where=str(args.config))  # unknown sections or keys are errors
        merged = config.to_dict()
        for section, values in raw.items():
            merged[section].update(values)
        config = RunConfig.from_dict(merged, where=str(args.config))
    return config.replace(**flag_changes(args, TRAIN_FLAGS)).validate()


def _bound_column(record: dict[str, Any]) -> str:
    """The bound the run selects on, when it is not the ELBO already printed."""
    if record["bound"] == "ELBO":
        return ""
    return f"  valid {record['bound']} {record['valid_bound_nats']:9.3f}"


def cmd_train(args) -> int:
    from vaelab.train import train

    if args.resume is not None:
        given = [f"--{d.replace('_', '-')}" for d in TRAIN_FLAGS if getattr(args, d) is not None]
        if given or args.config:
            raise UserError(f"--resume uses the run's own config; drop {', '.join(given) or '--config'}")
        out, config = args.resume, None
    else:
        config = train_config(args)
        out = args.out or Path("runs") / f"{config.data.source.split(':')[0]}-{config.model.kind}"

    def report(record: dict[str, Any]) -> None:
        if "compile_seconds" in record:
            print(f"compiled the training step in {record['compile_seconds']:.1f} s", flush=True)
        print(
            f"epoch {record['epoch']:>3}  train ELBO {record['train_elbo_nats']:9.3f}  "
            f"valid ELBO {record['valid_elbo_nats']:9.3f} "
            f"(recon {record['valid_log_p_x_given_z_nats']:9.3f}, "
            f"KL {record['valid_kl_nats']:7.3f}) nats/example  {record['images_per_second']:8.0f} img/s"
            + _bound_column(record),
            flush=True,
        )

    from vaelab.config import RunConfig

    result = train(
        config or RunConfig(),
        out,
        resume=args.resume is not None,
        overwrite=args.overwrite,
        progress=not args.quiet and sys.stderr.isatty(),
        on_epoch=None if args.quiet else report,
    )
    print(
        f"run: {result.run_dir}  (best validation {result.bound} {result.best_valid_bound:.3f} nats at epoch "
        f"{result.best_epoch}{', stopped early' if result.stopped_early else ''})"
    )
    return 0


def add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="test-set ELBO, its terms and an importance-sampled log p(x)")
    p.add_argument("run", type=Path)
    p.add_argument("--k", type=integer, default=1000, help="importance samples per example (default 1000)")
    p.add_argument("--split", default="test", choices=["train", "valid", "test"])
    p.add_argument("--batch-size", type=integer, default=100, help="examples per importance-sampling batch")
    p.add_argument("--seed", type=integer, default=0)
    p.add_argument(
        "--precision",
        default="fp32",
        choices=["fp32", "bf16"],
        help="importance sampling's network products in fp32 (default) or bf16 (~2x faster)",
    )
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args) -> int:
    from vaelab.evaluate import evaluate_run, format_evaluation

    result = evaluate_run(
        args.run,
        k=args.k,
        split=args.split,
        batch_size=args.batch_size,
        seed=args.seed,
        precision=args.precision,
    )
    print(format_evaluation(result))
    print(f"written: {args.run / 'eval.json'}")
    return 0


def add_sample(sub) -> None:
    p = sub.add_parser("sample", help="decode samples z ~ p(z) into a PNG grid")
    p.add_argument("run", type=Path)
    p.add_argument("--n", type=integer, default=64, help="number of samples (default 64)")
    p.add_argument(
        "--mode",
        default="mean",
        choices=["mean", "sample"],
        help="show the decoder mean E[x|z] or a draw x ~ p(x|z) (default mean)",
    )
    p.add_argument("--seed", type=integer, default=0)
    p.add_argument("--out", type=Path, help="PNG path (default RUN/samples.png)")
    p.set_defaults(func=cmd_sample)


def cmd_sample(args) -> int:
    import vaelab
    from vaelab.viz.plot import plot_prior_samples

    if args.n < 1:
        raise UserError("--n must be >= 1")
    path = plot_prior_samples(
        vaelab.load(args.run), args.out or args.run / "samples.png", args.n, mode=args.mode, seed=args.seed
    )
    print(f"written: {path}")
    return 0


def add_reconstruct(sub) -> None:
    p = sub.add_parser("reconstruct", help="originals over their reconstructions, as a PNG")
    p.add_argument("run", type=Path)
    p.add_argument("--n", type=integer, default=32, help="number of examples (default 32)")
    p.add_argument("--split", default="test", choices=["train", "valid", "test"])
    p.add_argument("--seed", type=integer, default=0, help="seed of the random choice of examples")
    p.add_argument("--out", type=Path, help="PNG path (default RUN/reconstructions.png)")
    p.set_defaults(func=cmd_reconstruct)


def cmd_reconstruct(args) -> int:
    import torch

    import vaelab
    from vaelab.data import load_data
    from vaelab.runs import check_run_dir, read_config
    from vaelab.viz.plot import plot_reconstructions

    if args.n < 1:
        raise UserError("--n must be >= 1")
    model = vaelab.load(args.run)
    x = load_data(read_config(check_run_dir(args.run)).data).split(args.split)
    # a random subset: test files are often sorted by class, so a prefix would show one digit
    pick = torch.randperm(len(x), generator=torch.Generator().manual_seed(args.seed))[: args.n]
    path = plot_reconstructions(model, x[pick], args.out or args.run / "reconstructions.png")
    print(f"written: {path}")
    return 0


COMMANDS: list[Callable] = [add_train, add_evaluate, add_sample, add_reconstruct]


def build_parser() -> argparse.ArgumentParser:
    import vaelab

    parser = OneLineParser(prog="vaelab", description="Train, measure and look at variational autoencoders.")
    parser.add_argument("--version", action="version", version=f"vaelab {vaelab.__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the library does")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser, metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    for module in ("vaelab.cli_theory", "vaelab.cli_figures"):
        try:
            __import__(module, fromlist=["add_subcommands"]).add_subcommands(sub)
        except ModuleNotFoundError as err:
            if err.name != module:
                raise
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
        return args.func(args)
    except UserError as err:
        print(f"vaelab: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vaelab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
