"""The theory behind variational inference as small, checked tools: KL divergences, Bayes' rule,
forward vs reverse KL, and the decomposition of the ELBO of a trained model.

The identities used throughout (Kingma & Welling 2014, eqs. 1-3; Blei et al. 2017, Section 2.2):

    log p(x) = ELBO(q) + KL(q(z|x) || p(z|x)),
    ELBO(q)  = E_q[log p(x|z)] - KL(q(z|x) || p(z))  =  E_q[log p(x, z)] + H(q(z|x)).

KL pairs missing from `torch.distributions.kl` (a diagonal Gaussian `Independent(Normal)` against a
full-covariance `MultivariateNormal`, both ways) are registered here with `register_kl`, so
`torch.distributions.kl_divergence` works for them once this module is imported (`vaelab.estimators`
imports it, so the ELBO's analytic KL does not depend on import order).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor
from torch.distributions import Distribution, Independent, MultivariateNormal, Normal
from torch.distributions.kl import register_kl

from vaelab.distributions import draw, is_diagonal_normal, kl_diagonal_normal, kl_standard_normal

__all__ = [
    "ElboDecomposition",
    "GaussianFit",
    "HypothesisPosterior",
    "KLDirectionsResult",
    "MedicalTestResult",
    "MonteCarloKL",
    "elbo_decomposition",
    "kl_diagonal_normal",
    "kl_directions_experiment",
    "kl_discrete",
    "kl_gaussian",
    "kl_monte_carlo",
    "kl_standard_normal",
    "medical_test",
    "plot_kl_directions",
    "posterior_over_hypotheses",
]


# --------------------------------------------------------------------------------------------- KL


def kl_discrete(p: Tensor, q: Tensor) -> Tensor:
    """KL(p || q) = sum_k p_k log(p_k / q_k) for probability vectors over the last dim: (..., K) -> (...).

    Cover & Thomas (2006), Section 2.3, with 0 log(0/q) = 0 and p log(p/0) = +inf for p > 0. In nats.
    """
    p, q = torch.as_tensor(p, dtype=torch.float64), torch.as_tensor(q, dtype=torch.float64)
    return (torch.xlogy(p, p) - torch.xlogy(p, q)).sum(-1)


def kl_gaussian(mu0: Tensor, cov0: Tensor, mu1: Tensor, cov1: Tensor) -> Tensor:
    """KL(N(mu0, cov0) || N(mu1, cov1)) for full covariances, via Cholesky factors. In nats.

    KL = 1/2 [tr(S1^-1 S0) + (mu1 - mu0)^T S1^-1 (mu1 - mu0) - k + ln(det S1 / det S0)]
    (Rasmussen & Williams 2006, Appendix A.5). With S = L L^T: tr(S1^-1 S0) = ||L1^-1 L0||_F^2,
    the quadratic form = ||L1^-1 (mu1 - mu0)||^2 and ln det S = 2 sum log diag L.
    mu: (..., k), cov: (..., k, k), broadcasting over the batch dims -> (...).
    """
    batch = torch.broadcast_shapes(mu0.shape[:-1], mu1.shape[:-1], cov0.shape[:-2], cov1.shape[:-2])
    dim = mu0.shape[-1]
    l0 = torch.linalg.cholesky(cov0).expand(batch + (dim, dim))
    l1 = torch.linalg.cholesky(cov1).expand(batch + (dim, dim))
    diff = (mu1 - mu0).expand(batch + (dim,)).unsqueeze(-1)  # (..., k, 1)
    trace = torch.linalg.solve_triangular(l1, l0, upper=False).square().sum((-2, -1))
    quad = torch.linalg.solve_triangular(l1, diff, upper=False).square().sum((-2, -1))
    log_det = 2 * (l1.diagonal(dim1=-2, dim2=-1).log().sum(-1) - l0.diagonal(dim1=-2, dim2=-1).log().sum(-1))
    return 0.5 * (trace + quad - dim + log_det)


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


@register_kl(Independent, MultivariateNormal)
def _kl_diagonal_normal_mvn(q: Independent, p: MultivariateNormal) -> Tensor:
    if not is_diagonal_normal(q):
        raise NotImplementedError
    return kl_gaussian(q.mean, torch.diag_embed(q.variance), p.loc, p.covariance_matrix)


@register_kl(MultivariateNormal, Independent)
def _kl_mvn_diagonal_normal(q: MultivariateNormal, p: Independent) -> Tensor:
    if not is_diagonal_normal(p):
        raise NotImplementedError
    return kl_gaussian(q.loc, q.covariance_matrix, p.mean, torch.diag_embed(p.variance))


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
    Murphy 2012, Section 21.2.2). The source documents state these the other way round; the
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


def _fit_gaussian(objective, start: tuple[float, float]) -> GaussianFit:
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


def plot_kl_directions(result: KLDirectionsResult, path: str | Path) -> Path:
    """Draw p and the reverse- and forward-KL Gaussian fits on one axis; save a PNG at `path`.

    Uses matplotlib's object API with the Agg canvas (no pyplot, no global backend change).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    w = torch.tensor(result.weights, dtype=torch.float64)
    mu = torch.tensor(result.means, dtype=torch.float64)
    sd = torch.tensor(result.stds, dtype=torch.float64)
    spread = max(4 * max(result.stds), 3 * result.forward.std)
    x = torch.linspace(min(result.means) - spread, max(result.means) + spread, 1000, dtype=torch.float64)
    p = _mixture_log_density(x, w, mu, sd).exp()
    fig = Figure(figsize=(7, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(x, p, color="black", lw=2, label="p(x): Gaussian mixture")
    peak = float(p.max())
    for fit, name, style in (
        (result.reverse, "reverse KL(q||p): mode-seeking", "-"),
        (result.forward, "forward KL(p||q): mass-covering", "--"),
    ):
        q = Normal(torch.tensor(fit.mean), torch.tensor(fit.std)).log_prob(x).exp()
        peak = max(peak, float(q.max()))
        mean = round(fit.mean, 2) + 0.0  # no "-0.00"
        ax.plot(x, q, ls=style, lw=2, label=f"{name}, N({mean:.2f}, {fit.std:.2f}²), KL={fit.kl:.3f} nats")
    ax.set_ylim(0, 1.45 * peak)  # room for the legend above the curves
    ax.set_title("Fitting one Gaussian q to a bimodal p: the direction of the KL decides")
    ax.set_xlabel("x")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, format="png", dpi=100)
    return path


# ---------------------------------------------------------------------------------------- Bayes


@dataclass(frozen=True)
class HypothesisPosterior:
    """Bayes' rule over a finite set of hypotheses: posterior (..., K) and evidence (...)."""

    posterior: Tensor
    evidence: Tensor


def posterior_over_hypotheses(
    prior: Tensor | Sequence[float], likelihood: Tensor | Sequence[float]
) -> HypothesisPosterior:
    """P(h | d) = P(d | h) P(h) / P(d), with evidence P(d) = sum_h P(d | h) P(h).

    prior: (K,) probabilities summing to 1; likelihood: (..., K), P(d | h) for each hypothesis
    (a probability or a density, so non-negative). Returns posterior (..., K), evidence (...). float64.
    """
    prior = torch.as_tensor(prior, dtype=torch.float64)
    likelihood = torch.as_tensor(likelihood, dtype=torch.float64)
    if (prior < 0).any() or abs(float(prior.sum()) - 1.0) > 1e-9:
        raise ValueError("prior must be non-negative and sum to 1")
    if (likelihood < 0).any():
        raise ValueError("likelihoods must be non-negative")
    joint = prior * likelihood  # (..., K)
    evidence = joint.sum(-1)
    if (evidence <= 0).any():
        raise ValueError("the evidence P(d) is zero: the data are impossible under every hypothesis")
    return HypothesisPosterior(posterior=joint / evidence.unsqueeze(-1), evidence=evidence)


@dataclass(frozen=True)
class MedicalTestResult:
    """A diagnostic test read through Bayes' rule. All fields are probabilities.

    The 2x2 joint: true_positive = P(D, +), false_negative = P(D, -), false_positive = P(¬D, +),
    true_negative = P(¬D, -). evidence = P(+); posterior = P(D | +); posterior_negative = P(D | -).
    """

    prior: float
    sensitivity: float
    false_positive_rate: float
    true_positive: float
    false_negative: float
    false_positive: float
    true_negative: float
    evidence: float
    posterior: float
    posterior_negative: float


def medical_test(prior: float, sensitivity: float, false_positive_rate: float) -> MedicalTestResult:
    """P(D | +) = P(+ | D) P(D) / [P(+ | D) P(D) + P(+ | ¬D) P(¬D)].

    prior = P(D), sensitivity = P(+ | D), false_positive_rate = P(+ | ¬D). For prior 0.01,
    sensitivity 0.95, FPR 0.05: P(+) = 0.0095 + 0.0495 = 0.059 and P(D | +) = 0.0095 / 0.059 ≈ 0.161
    — a positive result from a 95%-sensitive test still leaves the disease unlikely when it is rare.
    """
    for name, value in (
        ("prior", prior),
        ("sensitivity", sensitivity),
        ("false_positive_rate", false_positive_rate),
    ):
        if not 0.0 <= value <= 1.0 or math.isnan(value):
            raise ValueError(f"{name} must be a probability in [0, 1], got {value}")
    tp, fn = prior * sensitivity, prior * (1 - sensitivity)
    fp, tn = (1 - prior) * false_positive_rate, (1 - prior) * (1 - false_positive_rate)
    evidence = tp + fp
    if evidence == 0:
        raise ValueError("P(+) = 0: a positive result is impossible with these numbers")
    negative = fn + tn
    return MedicalTestResult(
        prior=prior,
        sensitivity=sensitivity,
        false_positive_rate=false_positive_rate,
        true_positive=tp,
        false_negative=fn,
        false_positive=fp,
        true_negative=tn,
        evidence=evidence,
        posterior=tp / evidence,
        posterior_negative=fn / negative if negative > 0 else math.nan,
    )


# ------------------------------------------------------------------------- ELBO decomposition


@dataclass(frozen=True)
class ElboDecomposition:
    """The ELBO of a model on a dataset, term by term. Dataset means in nats per example.

    elbo = log_p_x_given_z - kl = log_p_xz + entropy, where log_p_xz = E_q[log p(x, z)] and
    entropy = H(q(z|x)). kl_per_dim: (Z,) mean KL of each latent dimension (diagonal Gaussian q and
    prior only, else None); posterior_mean_variance: (Z,) Cov_x(E_q[z_u]) and active_units the count
    above `active_threshold` (Burda et al. 2015, Section 5). log_px / gap (= log p(x) - elbo, an
    estimate of E_x KL(q(z|x) || p(z|x))) when an importance-sampled log p(x) was requested.
    """

    num_examples: int
    num_samples: int
    elbo: float
    log_p_x_given_z: float
    kl: float
    log_p_xz: float
    entropy: float
    kl_per_dim: tuple[float, ...] | None
    posterior_mean_variance: tuple[float, ...] | None
    active_units: int | None
    active_threshold: float
    log_px: float | None
    log_px_stderr: float | None
    log_px_k: int | None
    gap: float | None
    closed_form: bool

    def to_dict(self) -> dict:
        """A JSON-serializable dict (tuples become lists)."""
        out = asdict(self)
        return {key: list(value) if isinstance(value, tuple) else value for key, value in out.items()}


def elbo_decomposition(
    model,
    data: Tensor | Iterable,
    *,
    batch_size: int | None = None,
    k: int = 1,
    k_importance: int = 0,
    generator: torch.Generator | None = None,
    active_threshold: float = 0.01,
) -> ElboDecomposition:
    """Decompose the ELBO of `model` over a dataset: reconstruction, KL, E_q[log p(x,z)], H(q).

    Per example, with z_i ~ q(z|x), i = 1..k:
        log_p_x_given_z = (1/k) sum_i log p(x|z_i),
        KL(q || p(z)),  E_q[log p(z)],  H(q)  — each in closed form when q(z|x) and p(z) are both
        diagonal Gaussians (Kingma & Welling 2014, Appendix B; per dimension), otherwise all three
        by Monte Carlo on the same z_i, so that recon - KL = E_q[log p(x,z)] + H(q) holds to float
        rounding either way (in closed form it checks three independent formulas against each other).
    Active units (Burda et al. 2015): A_u = Cov_x(E_q[z_u]) > active_threshold, for a q with a
    vector event (not for a discrete latent). With k_importance > 0, log p(x) is estimated by
    `log_px_importance` and gap = log p(x) - ELBO ≈ E_x KL(q(z|x) || p(z|x)).

    data: (N, *x_shape) tensor with `batch_size`, or an iterable of batches. Runs under no_grad.
    """
    from vaelab.estimators import iter_batches, log_px_importance

    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    sums = dict.fromkeys(("recon", "kl", "cross", "entropy", "log_px", "log_px_var"), 0.0)
    kl_dims: Tensor | None = None
    posterior_means: list[Tensor] = []
    n = 0
    closed_form = True
    with torch.no_grad():
        p_z = model.prior()
        for x in iter_batches(data, batch_size):
            q_z_given_x = model.posterior(x)
            z = draw(q_z_given_x, (k,), generator)  # (k, B, Z) or (k, B) for a discrete latent
            recon = model.likelihood(z).log_prob(x).mean(0)  # (B,)
            batch_closed = is_diagonal_normal(q_z_given_x) and is_diagonal_normal(p_z)
            closed_form = closed_form and batch_closed
            if batch_closed:
                q_loc, q_scale = q_z_given_x.base_dist.loc, q_z_given_x.base_dist.scale  # (B, Z)
                p_loc, p_scale = p_z.base_dist.loc, p_z.base_dist.scale  # (Z,)
                kl_per_dim = kl_diagonal_normal(q_loc, q_scale, p_loc, p_scale)  # (B, Z)
                kl = kl_per_dim.sum(-1)
                entropy = (0.5 * math.log(2 * math.pi * math.e) + q_scale.log()).sum(-1)
                # E_q[log N(z; m_p, s_p^2)] = -1/2 log(2 pi s_p^2) - ((m_q - m_p)^2 + s_q^2) / (2 s_p^2)
                cross = -(
                    0.5 * torch.log(2 * math.pi * p_scale.square())
                    + ((q_loc - p_loc).square() + q_scale.square()) / (2 * p_scale.square())
                ).sum(-1)
                kl_dims = kl_per_dim.sum(0) if kl_dims is None else kl_dims + kl_per_dim.sum(0)
            else:
                log_q = q_z_given_x.log_prob(z).mean(0)
                cross = p_z.log_prob(z).mean(0)
                kl, entropy = log_q - cross, -log_q
            if len(q_z_given_x.event_shape) == 1:
                posterior_means.append(q_z_given_x.mean.to(torch.float64))  # (B, Z)
            if k_importance > 0:
                estimate = log_px_importance(model, x, k_importance, generator=generator)
                sums["log_px"] += float(estimate.value.sum())
                sums["log_px_var"] += float(estimate.stderr.square().sum())
            sums["recon"] += float(recon.sum())
            sums["kl"] += float(kl.sum())
            sums["cross"] += float(cross.sum())
            sums["entropy"] += float(entropy.sum())
            n += x.shape[0]
    if n == 0:
        raise ValueError("elbo_decomposition got an empty dataset")
    recon, kl = sums["recon"] / n, sums["kl"] / n
    log_p_xz, entropy = recon + sums["cross"] / n, sums["entropy"] / n
    mean_variance = active = None
    if sum(m.shape[0] for m in posterior_means) == n:  # every batch had a vector latent
        means = torch.cat(posterior_means)  # (N, Z)
        variance = means.var(0) if n > 1 else torch.zeros(means.shape[1], dtype=torch.float64)
        mean_variance = tuple(float(v) for v in variance)
        active = int((variance > active_threshold).sum())
    log_px = sums["log_px"] / n if k_importance > 0 else None
    return ElboDecomposition(
        num_examples=n,
        num_samples=k,
        elbo=recon - kl,
        log_p_x_given_z=recon,
        kl=kl,
        log_p_xz=log_p_xz,
        entropy=entropy,
        kl_per_dim=tuple(float(v) / n for v in kl_dims) if closed_form and kl_dims is not None else None,
        posterior_mean_variance=mean_variance,
        active_units=active,
        active_threshold=active_threshold,
        log_px=log_px,
        log_px_stderr=math.sqrt(sums["log_px_var"]) / n if k_importance > 0 else None,
        log_px_k=k_importance if k_importance > 0 else None,
        gap=None if log_px is None else log_px - (recon - kl),
        closed_form=closed_form,
    )
