"""Kullback-Leibler divergences as small, checked tools, and the forward vs reverse KL experiment.

KL(q || p) = E_q[log q(z) - log p(z)] >= 0, in nats (Cover & Thomas 2006, Section 2.3). Here:

- `kl_discrete`: the closed form for probability vectors;
- `kl_gaussian`, `kl_diagonal_normal`, `kl_standard_normal`: the Gaussian closed forms, defined in
  `vaelab.distributions` beside the `register_kl` pairs that use them and re-exported here;
- `kl_monte_carlo`: the sampling estimate for any pair with `log_prob`, with its standard error;
- `kl_directions_experiment`: one Gaussian fitted to a bimodal mixture under each direction of the
  KL, and `kl_directions_curves`, the densities its figure shows (drawn by `vaelab.viz.theory`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.distributions import Distribution, Normal

from vaelab.distributions import draw, kl_diagonal_normal, kl_gaussian, kl_standard_normal

__all__ = [
    "GaussianFit",
    "KLDirectionsCurves",
    "KLDirectionsResult",
    "MonteCarloKL",
    "kl_diagonal_normal",
    "kl_directions_curves",
    "kl_directions_experiment",
    "kl_discrete",
    "kl_gaussian",
    "kl_monte_carlo",
    "kl_standard_normal",
]


def kl_discrete(p: Tensor | Sequence[float], q: Tensor | Sequence[float]) -> Tensor:
    """KL(p || q) = sum_k p_k log(p_k / q_k) for probability vectors over the last dim: (..., K) -> (...).

    Cover & Thomas (2006), Section 2.3, with 0 log(0/q) = 0 and p log(p/0) = +inf for p > 0. In nats.
    """
    p, q = torch.as_tensor(p, dtype=torch.float64), torch.as_tensor(q, dtype=torch.float64)
    return (torch.xlogy(p, p) - torch.xlogy(p, q)).sum(-1)


@dataclass(frozen=True)
class MonteCarloKL:
    """A Monte Carlo estimate of KL(q || p): value and standard error over the batch shape, n samples."""

    value: Tensor
    stderr: Tensor
    n: int


def kl_monte_carlo(
    q: Distribution, p: Distribution, n: int, generator: torch.Generator | None = None
) -> MonteCarloKL:
    """KL(q || p) ≈ (1/n) sum_i [log q(z_i) - log p(z_i)], z_i ~ q, with stderr sd / sqrt(n).

    Works for any pair with log_prob (samples via `vaelab.distributions.draw`). Returns tensors of
    q's batch shape (broadcast with p's). Unbiased; a single estimate may be negative.
    """
    if n < 2:
        raise ValueError(f"n must be >= 2 for a standard error, got {n}")
    z = draw(q, (n,), generator)  # (n, *batch, *event)
    log_ratio = q.log_prob(z) - p.log_prob(z)  # (n, *batch)
    return MonteCarloKL(value=log_ratio.mean(0), stderr=log_ratio.std(0) / math.sqrt(n), n=n)


# ------------------------------------------------------------------------- forward vs reverse KL


@dataclass(frozen=True)
class GaussianFit:
    """A single Gaussian N(mean, std^2) fitted to p, with the KL it reached (nats) and its start."""

    mean: float
    std: float
    kl: float
    start: tuple[float, float]

    @property
    def variance(self) -> float:
        return self.std**2


@dataclass(frozen=True)
class KLDirectionsResult:
    """Single-Gaussian fits to a 1-D Gaussian mixture p under both directions of the KL.

    reverse_fits: argmin_q KL(q || p) from each start; reverse: the best of them.
    forward: argmin_q KL(p || q) found by the optimizer; forward_closed_form: moment matching,
    q = N(E_p[x], Var_p[x]), the exact minimizer for a Gaussian family.
    """

    weights: tuple[float, ...]
    means: tuple[float, ...]
    stds: tuple[float, ...]
    reverse_fits: tuple[GaussianFit, ...]
    reverse: GaussianFit
    forward: GaussianFit
    forward_closed_form: GaussianFit

    @property
    def p_mean(self) -> float:
        return sum(w * m for w, m in zip(self.weights, self.means, strict=True))

    @property
    def p_variance(self) -> float:
        second = sum(w * (s**2 + m**2) for w, m, s in zip(self.weights, self.means, self.stds, strict=True))
        return second - self.p_mean**2


def _mixture_log_density(x: Tensor, weights: Tensor, means: Tensor, stds: Tensor) -> Tensor:
    """log sum_m w_m N(x; mu_m, s_m^2), x: (N,) -> (N,)."""
    return torch.logsumexp(weights.log() + Normal(means, stds).log_prob(x.unsqueeze(-1)), -1)


def kl_directions_experiment(
    weights: Sequence[float] = (0.5, 0.5),
    means: Sequence[float] = (-3.0, 3.0),
    stds: Sequence[float] = (1.0, 1.0),
    *,
    reverse_starts: Sequence[tuple[float, float]] = ((-5.0, 2.0), (-0.5, 3.0), (0.7, 0.5), (4.0, 1.5)),
    forward_start: tuple[float, float] = (1.5, 0.5),
    grid_points: int = 20_001,
) -> KLDirectionsResult:
    """Fit q = N(m, s^2) to a Gaussian mixture p by minimizing KL(q || p) and KL(p || q).

    Reverse KL(q || p) = E_q[log q - log p] is **mode-seeking** (zero-forcing): it is infinite-like
    wherever q puts mass that p lacks, so q locks onto one mode (for 0.5 N(-3,1) + 0.5 N(3,1):
    mean ±3, std ≈ 1, KL ≈ ln 2). Forward KL(p || q) = E_p[log p - log q] is **mass-covering**
    (zero-avoiding): q must cover everywhere p has mass, and its minimizer over Gaussians is moment
    matching, q = N(E_p[x], Var_p[x]) = N(0, 1 + 9 = 10) here (Bishop 2006, Section 10.1.2;
    Murphy 2012, Section 21.2.2). Some introductions state these the other way round; the
    optimizer below decides. The reverse KL is also non-convex: from a wide start near the middle
    L-BFGS can stop at a symmetric local optimum straddling both modes (mean 0, std ≈ 2.7,
    KL ≈ 0.84 > ln 2), which is why several starts are run and `reverse` is the best of them.

    Both KLs are computed in float64 by quadrature on a uniform grid over [min mean - 12 max std,
    max mean + 12 max std] (the integrands are smooth and decay like Gaussians, where the rectangle
    rule is exponentially accurate), with H(q) in closed form for the reverse direction. (m, log s)
    is optimized with L-BFGS (strong Wolfe line search) from each start.
    """
    w = torch.tensor(weights, dtype=torch.float64)
    mu = torch.tensor(means, dtype=torch.float64)
    sd = torch.tensor(stds, dtype=torch.float64)
    if not (len(w) == len(mu) == len(sd)) or (w <= 0).any() or (sd <= 0).any():
        raise ValueError("weights, means, stds must have equal lengths, positive weights and stds")
    if abs(float(w.sum()) - 1.0) > 1e-9:
        raise ValueError(f"mixture weights must sum to 1, got {float(w.sum())}")
    half_width = 12 * float(sd.max())
    x = torch.linspace(
        float(mu.min()) - half_width, float(mu.max()) + half_width, grid_points, dtype=torch.float64
    )
    h = float(x[1] - x[0])
    log_p = _mixture_log_density(x, w, mu, sd)  # (N,)
    p = log_p.exp()

    def reverse_kl(m: Tensor, log_s: Tensor) -> Tensor:
        q = Normal(m, log_s.exp())
        entropy = 0.5 * math.log(2 * math.pi * math.e) + log_s
        return -entropy - h * (q.log_prob(x).exp() * log_p).sum()

    def forward_kl(m: Tensor, log_s: Tensor) -> Tensor:
        return h * (p * (log_p - Normal(m, log_s.exp()).log_prob(x))).sum()

    if not reverse_starts:
        raise ValueError("reverse_starts must contain at least one start")
    reverse_fits = tuple(_fit_gaussian(reverse_kl, start) for start in reverse_starts)
    # Moment matching: E_p[x] = sum_m w_m mu_m, Var_p[x] = sum_m w_m (s_m^2 + mu_m^2) - E_p[x]^2.
    p_mean = float((w * mu).sum())
    p_std = math.sqrt(float((w * (sd.square() + mu.square())).sum()) - p_mean**2)
    with torch.no_grad():
        kl_closed = float(
            forward_kl(
                torch.tensor(p_mean, dtype=torch.float64), torch.tensor(math.log(p_std), dtype=torch.float64)
            )
        )
    return KLDirectionsResult(
        weights=tuple(map(float, weights)),
        means=tuple(map(float, means)),
        stds=tuple(map(float, stds)),
        reverse_fits=reverse_fits,
        reverse=min(reverse_fits, key=lambda f: f.kl),
        forward=_fit_gaussian(forward_kl, forward_start),
        forward_closed_form=GaussianFit(mean=p_mean, std=p_std, kl=kl_closed, start=(p_mean, p_std)),
    )


def _fit_gaussian(objective: Callable[[Tensor, Tensor], Tensor], start: tuple[float, float]) -> GaussianFit:
    """Minimize objective(m, log s) over (m, log s) with L-BFGS from start = (m0, s0)."""
    params = torch.tensor([start[0], math.log(start[1])], dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [params],
        lr=1.0,
        max_iter=500,
        tolerance_grad=1e-12,
        tolerance_change=1e-16,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = objective(params[0], params[1])
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        kl = float(objective(params[0], params[1]))
    mean, log_std = params.detach().tolist()
    return GaussianFit(mean=mean, std=math.exp(log_std), kl=kl, start=(float(start[0]), float(start[1])))


@dataclass(frozen=True)
class KLDirectionsCurves:
    """The densities of the KL-directions figure on one grid, float64, each (N,).

    x: the grid; p: the mixture's density; reverse, forward: the densities of the two fitted
    Gaussians N(x; m, s^2), the reverse-KL one (best of its starts) and the forward-KL one.
    """

    x: Tensor
    p: Tensor
    reverse: Tensor
    forward: Tensor


def kl_directions_curves(result: KLDirectionsResult, points: int = 1000) -> KLDirectionsCurves:
    """p and the two fits evaluated on `points` x's spanning the modes and the wider forward fit:
    [min mean - w, max mean + w], w = max(4 max std, 3 forward std)."""
    w = torch.tensor(result.weights, dtype=torch.float64)
    mu = torch.tensor(result.means, dtype=torch.float64)
    sd = torch.tensor(result.stds, dtype=torch.float64)
    spread = max(4 * max(result.stds), 3 * result.forward.std)
    x = torch.linspace(min(result.means) - spread, max(result.means) + spread, points, dtype=torch.float64)

    def density(fit: GaussianFit) -> Tensor:
        loc = torch.tensor(fit.mean, dtype=torch.float64)
        return Normal(loc, torch.tensor(fit.std, dtype=torch.float64)).log_prob(x).exp()

    return KLDirectionsCurves(
        x=x,
        p=_mixture_log_density(x, w, mu, sd).exp(),
        reverse=density(result.reverse),
        forward=density(result.forward),
    )
