"""Commands of the theory toolkit: `bayes`, `estimators`, `kl-directions`.

vaelab bayes --prior 0.01 --sensitivity 0.95 --false-positive-rate 0.05
vaelab estimators --model linear-gaussian --k 1,10,100
vaelab kl-directions --out kl.png
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Annotated

from pydantic import Field

from vaelab.cli.options import add_command, build
from vaelab.config import Count, Device, Flag, Options, Seed
from vaelab.errors import UserError

Probability = Annotated[float, Field(ge=0.0, le=1.0), Flag(metavar="P")]


def _exact_models():
    from vaelab.theory.exact import EXACT_MODELS

    return sorted(EXACT_MODELS)


class BayesOptions(Options):
    prior: Annotated[Probability, Field(description="P(disease)")]
    sensitivity: Annotated[Probability, Field(description="P(+ | disease)")]
    false_positive_rate: Annotated[Probability, Field(description="P(+ | healthy)")]


class EstimatorsOptions(Options):
    model: Annotated[str, Field(description="exact model"), Flag(choices=_exact_models)] = "linear-gaussian"
    k: Annotated[
        tuple[Annotated[int, Field(ge=1)], ...],
        Field(min_length=1, description="numbers of samples"),
        Flag(metavar="K1,K2,..."),
    ] = (1, 10, 100, 1000, 10_000)
    seed: Annotated[Seed, Field(description="seed of the model, the data and the estimators")] = 0
    batch_size: Annotated[Count, Field(description="examples x sampled from the model")] = 16
    replicates: Annotated[
        Count, Field(description="independent runs averaged for the ELBO and IWAE bounds")
    ] = 8
    fit_steps: Annotated[
        int,
        Field(
            ge=0,
            description="linear-gaussian models: steps training a diagonal, a full-covariance "
            "and an iaf encoder, whose ELBO gaps are shown against theory (0: skip)",
        ),
        Flag(metavar="N"),
    ] = 1000
    device: Device = "auto"


class KLDirectionsOptions(Options):
    out: Annotated[
        Path | None, Field(description="also save the plot to this PNG file"), Flag(metavar="PNG")
    ] = None


def add_subcommands(sub) -> None:
    add_command(
        sub,
        "bayes",
        BayesOptions,
        run_bayes,
        help="Bayes' rule on a diagnostic test: P(+) and P(disease | +)",
        description="P(D | +) = P(+ | D) P(D) / [P(+ | D) P(D) + P(+ | not D) P(not D)].",
    )
    add_command(
        sub,
        "estimators",
        EstimatorsOptions,
        run_estimators,
        help="compare ELBO, IWAE, importance sampling and naive MC against an exact log p(x)",
        description="On a model whose log p(x) is known exactly, run every estimator of log p(x) at "
        "several k and print value, standard error, error against the exact answer and wall time.",
    )
    add_command(
        sub,
        "kl-directions",
        KLDirectionsOptions,
        run_kl_directions,
        help="fit one Gaussian to a bimodal mixture by reverse and by forward KL",
        description="Fit q = N(m, s^2) to p = 0.5 N(-3, 1) + 0.5 N(3, 1) by minimizing KL(q||p) "
        "(reverse: mode-seeking) and KL(p||q) (forward: mass-covering).",
    )


def _fmt(value: float) -> str:
    """4 decimals without a "-0.0000" for a tiny negative number."""
    return f"{round(value, 4) + 0.0:.4f}"


def run_bayes(args: argparse.Namespace) -> int:
    """Print the 2x2 joint table, the evidence P(+) and the posterior P(disease | +)."""
    from vaelab.theory.bayes import medical_test

    options: BayesOptions = build(BayesOptions, args, args.own)
    try:
        r = medical_test(options.prior, options.sensitivity, options.false_positive_rate)
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
    import torch

    from vaelab.devices import make_generator, move_tensors, resolve_device
    from vaelab.theory.exact import (
        EXACT_MODELS,
        LinearGaussian,
        build_exact_model,
        estimator_table,
        format_table,
    )

    options: EstimatorsOptions = build(EstimatorsOptions, args, args.own)
    device = resolve_device(options.device)
    generator = make_generator(device, options.seed)
    model = move_tensors(build_exact_model(options.model, options.seed), device)
    x = model.sample(options.batch_size, generator)
    rows = estimator_table(model, x, options.k, generator=generator, replicates=options.replicates)
    description = (EXACT_MODELS[options.model].__doc__ or "").strip()
    print(f"model {options.model}: {description}")
    print(
        f"{options.batch_size} examples x ~ p(x), seed {options.seed}; "
        "values are batch means of log p(x) in nats per example"
    )
    print()
    print(format_table(rows, num_dims=x[0].numel()))
    if isinstance(model, LinearGaussian) and options.fit_steps:
        from vaelab.theory.gaps import format_gap_table, posterior_gap_table

        print()
        print(
            f"posterior families, each an affine encoder trained {options.fit_steps} steps on the ELBO "
            "of these examples, the decoder held at the true parameters:"
        )
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # tensors of a few numbers: more threads only add synchronization
        try:
            cpu = torch.device("cpu")  # (the encoders it trains are small float64 CPU modules)
            gaps = posterior_gap_table(
                move_tensors(model, cpu), x.cpu(), steps=options.fit_steps, seed=options.seed
            )
        finally:
            torch.set_num_threads(threads)
        print(format_gap_table(gaps))
    return 0


def run_kl_directions(args: argparse.Namespace) -> int:
    """Run the forward vs reverse KL experiment, print the fits, optionally save the plot."""
    from vaelab.theory.kl import kl_directions_experiment
    from vaelab.viz.theory import plot_kl_directions

    options: KLDirectionsOptions = build(KLDirectionsOptions, args, args.own)
    if options.out is not None:
        if options.out.suffix.lower() != ".png":
            raise UserError(f"--out: expected a .png path, got {str(options.out)!r}")
        if not options.out.parent.is_dir():
            raise UserError(f"--out: directory {str(options.out.parent)!r} does not exist")
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
    if options.out is not None:
        path = plot_kl_directions(result, options.out)
        print(f"written: {path}")
    return 0
