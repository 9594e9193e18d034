"""CLI subcommands for the theory toolkit: `bayes`, `estimators`, `kl-directions`.

`vaelab.cli` calls `add_subcommands(subparsers)`; each subparser sets `func=handler(args) -> int`.
Handlers print (the library never does); bad input raises `vaelab.errors.UserError`, which the main
CLI turns into one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from vaelab.errors import UserError

__all__ = ["add_subcommands", "run_bayes", "run_estimators", "run_kl_directions"]

DEFAULT_KS = (1, 10, 100, 1000, 10_000)


def _probability(flag: str):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise UserError(f"{flag}: expected a probability in [0, 1], got {text!r}") from None
        if not 0.0 <= value <= 1.0:  # also rejects nan
            raise UserError(f"{flag}: expected a probability in [0, 1], got {text!r}")
        return value

    return parse


def _positive_int(flag: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise UserError(f"{flag}: expected a positive integer, got {text!r}") from None
        if value < 1:
            raise UserError(f"{flag}: expected a positive integer, got {text!r}")
        return value

    return parse


def _int(flag: str):
    def parse(text: str) -> int:
        try:
            return int(text)
        except ValueError:
            raise UserError(f"{flag}: expected an integer, got {text!r}") from None

    return parse


def _k_list(text: str) -> tuple[int, ...]:
    parse = _positive_int("--k")
    parts = [part.strip() for part in text.split(",")]
    if not all(parts):
        raise UserError(f"--k: expected positive integers like 1,10,100, got {text!r}")
    return tuple(parse(part) for part in parts)


def _fmt(value: float) -> str:
    """4 decimals without a "-0.0000" for a tiny negative number."""
    return f"{round(value, 4) + 0.0:.4f}"


def add_subcommands(subparsers) -> None:
    """Add `bayes`, `estimators` and `kl-directions` to an argparse subparsers object."""
    from vaelab.theory.exact import EXACT_MODELS

    bayes = subparsers.add_parser(
        "bayes",
        help="Bayes' rule on a diagnostic test: P(+) and P(disease | +)",
        description="P(D | +) = P(+ | D) P(D) / [P(+ | D) P(D) + P(+ | not D) P(not D)].",
    )
    bayes.add_argument("--prior", type=_probability("--prior"), required=True, help="P(disease)")
    bayes.add_argument(
        "--sensitivity", type=_probability("--sensitivity"), required=True, help="P(+ | disease)"
    )
    bayes.add_argument(
        "--false-positive-rate",
        type=_probability("--false-positive-rate"),
        required=True,
        help="P(+ | healthy)",
    )
    bayes.set_defaults(func=run_bayes)

    estimators = subparsers.add_parser(
        "estimators",
        help="compare ELBO, IWAE, importance sampling and naive MC against an exact log p(x)",
        description="On a model whose log p(x) is known exactly, run every estimator of log p(x) at "
        "several k and print value, standard error, error against the exact answer and wall time.",
    )
    estimators.add_argument(
        "--model", choices=sorted(EXACT_MODELS), default="linear-gaussian", help="exact model"
    )
    estimators.add_argument(
        "--k",
        type=_k_list,
        default=DEFAULT_KS,
        metavar="K1,K2,...",
        help="numbers of samples (default 1,10,100,1000,10000)",
    )
    estimators.add_argument(
        "--seed", type=_int("--seed"), default=0, help="seed for the model, the data and the estimators"
    )
    estimators.add_argument(
        "--batch-size",
        type=_positive_int("--batch-size"),
        default=16,
        help="examples x sampled from the model (default 16)",
    )
    estimators.add_argument(
        "--replicates",
        type=_positive_int("--replicates"),
        default=8,
        help="independent runs averaged for the ELBO and IWAE bounds (default 8)",
    )
    estimators.set_defaults(func=run_estimators)

    kl = subparsers.add_parser(
        "kl-directions",
        help="fit one Gaussian to a bimodal mixture by reverse and by forward KL",
        description="Fit q = N(m, s^2) to p = 0.5 N(-3, 1) + 0.5 N(3, 1) by minimizing KL(q||p) "
        "(reverse: mode-seeking) and KL(p||q) (forward: mass-covering).",
    )
    kl.add_argument("--out", type=Path, default=None, metavar="PNG", help="also save a plot here")
    kl.set_defaults(func=run_kl_directions)


def run_bayes(args: argparse.Namespace) -> int:
    """Print the 2x2 joint table, the evidence P(+) and the posterior P(disease | +)."""
    from vaelab.theory.bayes import medical_test

    try:
        r = medical_test(args.prior, args.sensitivity, args.false_positive_rate)
    except ValueError as err:
        raise UserError(str(err)) from None
    print(
        f"P(disease) = {r.prior:g}, P(+ | disease) = {r.sensitivity:g}, "
        f"P(+ | healthy) = {r.false_positive_rate:g}"
    )
    print()
    print(f"{'joint probability':<18} {'test +':>10} {'test -':>10} {'total':>10}")
    print(f"{'disease':<18} {r.true_positive:>10.6f} {r.false_negative:>10.6f} {r.prior:>10.6f}")
    print(f"{'healthy':<18} {r.false_positive:>10.6f} {r.true_negative:>10.6f} {1 - r.prior:>10.6f}")
    print(f"{'total':<18} {r.evidence:>10.6f} {1 - r.evidence:>10.6f} {1.0:>10.6f}")
    print()
    print(f"evidence P(+) = {r.evidence:.6f}")
    print(f"posterior P(disease | +) = {r.posterior:.6f}")
    negative = "undefined" if math.isnan(r.posterior_negative) else f"{r.posterior_negative:.6f}"
    print(f"posterior P(disease | -) = {negative}")
    return 0


def run_estimators(args: argparse.Namespace) -> int:
    """Sample a batch from an exact model and print the estimator table for each k."""
    from vaelab.theory.exact import EXACT_MODELS, build_exact_model, estimator_table, format_table

    generator = torch.Generator().manual_seed(args.seed)
    model = build_exact_model(args.model, args.seed)
    x = model.sample(args.batch_size, generator)
    rows = estimator_table(model, x, args.k, generator=generator, replicates=args.replicates)
    description = (EXACT_MODELS[args.model].__doc__ or "").strip()
    print(f"model {args.model}: {description}")
    print(
        f"{args.batch_size} examples x ~ p(x), seed {args.seed}; "
        "values are batch means of log p(x) in nats per example"
    )
    print()
    print(format_table(rows, num_dims=x[0].numel()))
    return 0


def run_kl_directions(args: argparse.Namespace) -> int:
    """Run the forward vs reverse KL experiment, print the fits, optionally save the plot."""
    from vaelab.theory.kl import kl_directions_experiment
    from vaelab.viz.theory import plot_kl_directions

    if args.out is not None:
        if args.out.suffix.lower() != ".png":
            raise UserError(f"--out: expected a .png path, got {str(args.out)!r}")
        if not args.out.parent.is_dir():
            raise UserError(f"--out: directory {str(args.out.parent)!r} does not exist")
    result = kl_directions_experiment()
    parts = " + ".join(
        f"{w:g} N({m:g}, {s:g}²)" for w, m, s in zip(result.weights, result.means, result.stds, strict=True)
    )
    print(f"p = {parts}: mean {result.p_mean:g}, variance {result.p_variance:g}")
    print()
    print("reverse KL(q || p), one fit per start (mode-seeking):")
    rev, fwd, closed = result.reverse, result.forward, result.forward_closed_form
    for fit in result.reverse_fits:
        note = "  (a local optimum straddling both modes)" if fit.kl > rev.kl + 1e-6 else ""
        print(
            f"  start N({fit.start[0]:g}, {fit.start[1]:g}²) -> N({_fmt(fit.mean)}, {fit.std:.4f}²), "
            f"KL = {fit.kl:.4f} nats{note}"
        )
    print(
        f"  best: mean {rev.mean:.4f}, std {rev.std:.4f}, KL = {rev.kl:.4f} nats (ln 2 = {math.log(2):.4f})"
    )
    print("forward KL(p || q) (mass-covering):")
    for name, fit in (("optimizer", fwd), ("moment matching", closed)):
        print(f"  {name}: mean {_fmt(fit.mean)}, variance {fit.variance:.4f}, KL = {fit.kl:.4f} nats")
    print()
    print("reverse KL locks q onto one mode (std ~ 1); forward KL spreads q over both (variance 1 + 9 = 10).")
    if args.out is not None:
        path = plot_kl_directions(result, args.out)
        print(f"written: {path}")
    return 0
