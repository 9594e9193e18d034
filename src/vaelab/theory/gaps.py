"""The ELBO gap of each posterior family, against the closed form, on the linear-Gaussian model.

log p(x) - ELBO(q) = KL(q(z|x) || p(z|x)): the gap is the posterior's error. On the linear-Gaussian
model p(z|x) = N(m(x), Lambda^-1) is known exactly, with a precision Lambda = I + W^T W / sigma^2 that
does not depend on x, so what each family can reach is known too:

- the best mean-field Gaussian q = prod_i N(m_i, 1 / Lambda_ii) (Bishop 2006, Section 10.1.2: the
  reverse-KL mean-field fit to a Gaussian matches the precision's diagonal) leaves

      KL = 1/2 (sum_i log Lambda_ii - log det Lambda),

  zero exactly when Lambda is diagonal (`mean_field_gap`);
- a full-covariance Gaussian contains p(z|x), so its best gap is 0;
- a flow (IAF) lies in between or reaches 0, depending on its capacity.

`posterior_gap_table` checks all three by training an amortized encoder x -> q(z|x) of each family
(an affine map: the exact posterior mean is affine in x) by maximizing the ELBO with the decoder
held at the true parameters, then measuring the gap: exactly for the Gaussian families (closed-form
ELBO), by Monte Carlo with its standard error for the flow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from vaelab.distributions import draw
from vaelab.posteriors import build_posterior
from vaelab.theory.exact import LinearGaussian


def mean_field_gap(precision: Tensor) -> Tensor:
    """KL(q* || N(m, Lambda^-1)) of the best mean-field Gaussian q*: 1/2 (sum_i log Lambda_ii -
    log det Lambda) in nats. precision: (*, Z, Z) symmetric positive definite -> (*,)."""
    diagonal = precision.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    return 0.5 * (diagonal - torch.logdet(precision))


def posterior_precision(model: LinearGaussian) -> Tensor:
    """Lambda = I + W^T W / sigma^2, the exact posterior precision (the same for every x): (Z, Z)."""
    eye = torch.eye(model.latent_dim, dtype=model.W.dtype, device=model.W.device)
    return eye + model.W.T @ model.W / model.noise_std**2


@dataclass(frozen=True)
class GapRow:
    """One posterior family's gap log p(x) - ELBO, nats per example (batch mean), with its
    Monte Carlo standard error (0 where the ELBO is in closed form) and the theory's best value."""

    family: str
    gap: float
    stderr: float
    best: float | None  # the family's optimum by theory: the mean-field gap, 0, or unknown (None)
    how: str


def posterior_gap_table(
    model: LinearGaussian,
    x: Tensor,
    families: tuple[str, ...] = ("diagonal", "full", "iaf"),
    *,
    steps: int = 1500,
    lr: float = 0.02,
    samples: int = 16,
    flow_steps: int = 2,
    flow_hidden: int = 16,
    eval_samples: int = 4096,
    seed: int = 0,
) -> list[GapRow]:
    """Train an affine encoder of each family by maximizing the ELBO on x (B, D), the decoder held
    at `model`'s true parameters, and return each family's gap log p(x) - ELBO. Float64."""
    theory = float(mean_field_gap(posterior_precision(model)))
    exact = model.log_marginal(x)  # (B,)
    rows = []
    for name in families:
        torch.manual_seed(seed)
        family = build_posterior(name, model.latent_dim, flow_steps, flow_hidden).double()
        encoder = nn.Linear(model.x_dim, family.num_params).double()
        nn.init.zeros_(encoder.weight)  # start at q = N(0, I) (the prior) for every family
        nn.init.zeros_(encoder.bias)
        parameters = [*encoder.parameters(), *family.parameters()]
        optimizer = torch.optim.Adam(parameters, lr=lr)
        generator = torch.Generator().manual_seed(seed)
        for step in range(steps):
            for group in optimizer.param_groups:  # a cosine decay, so the fit settles at its optimum
                group["lr"] = 0.5 * lr * (1 + math.cos(math.pi * step / steps))
            elbo = _elbo_samples(model, family(encoder(x)), x, samples, generator).mean()
            optimizer.zero_grad()
            (-elbo).backward()
            optimizer.step()
        with torch.no_grad():
            q = family(encoder(x))
            if name in ("diagonal", "full"):  # Gaussian: the ELBO in closed form, no noise
                gap = exact - model.elbo_closed_form(q, x)
                rows.append(
                    GapRow(name, float(gap.mean()), 0.0, theory if name == "diagonal" else 0.0, "closed form")
                )
            else:
                per_sample = exact - _elbo_samples(model, q, x, eval_samples, generator)  # (S, B)
                gaps = per_sample.mean(1)  # (S,): the batch-mean gap of each sample
                stderr = float(gaps.std() / math.sqrt(len(gaps)))
                rows.append(
                    GapRow(name, float(gaps.mean()), stderr, None, f"Monte Carlo, {eval_samples} samples")
                )
    return rows


def _elbo_samples(model: LinearGaussian, q, x: Tensor, samples: int, generator) -> Tensor:
    """log p(x, z) - log q(z|x) for `samples` reparameterized z ~ q(z|x): (S, B)."""
    z = draw(q, (samples,), generator)
    return model.likelihood(z).log_prob(x) + model.prior().log_prob(z) - q.log_prob(z)


def format_gap_table(rows: list[GapRow]) -> str:
    header = f"{'q(z|x)':<10} {'gap [nats]':>11} {'± stderr':>9} {'theory':>8}  how"
    lines = [header, "-" * len(header)]
    for row in rows:
        best = "?" if row.best is None else f"{row.best:.4f}"
        stderr = "-" if row.stderr == 0 else f"{row.stderr:.4f}"
        lines.append(f"{row.family:<10} {row.gap:>11.4f} {stderr:>9} {best:>8}  {row.how}")
    lines.append(
        "gap = log p(x) - ELBO = KL(q || p(z|x)); theory: the family's best gap (mean field: "
        "1/2 (sum log Lambda_ii - log det Lambda); full covariance: 0)"
    )
    return "\n".join(lines)
