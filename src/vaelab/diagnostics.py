"""What a trained encoder does with its latent dimensions: posterior means, KL per dim, active units.

One function, `latent_statistics`, measures a model's latent use over a data set, and one constant,
`ACTIVE_THRESHOLD`, decides which dimensions count as used. The definition (Burda et al. 2015,
"Importance Weighted Autoencoders", Section 5.2):

    A_u = Cov_x( E_{q(z|x)}[z_u] ),   unit u is active when A_u > 0.01,

the variance over the data of the posterior mean of dimension u (`active_units_rule()` says so in
text, for tables and figures). Latent dimensions are named 1-based everywhere a person reads them:
index d of a (..., Z) tensor is `latent_name(d)` = "z{d+1}", as in the papers (z1, z2, ...).

Core layer: torch and numpy only (no plotting), so figures, tables and a web page can share it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from vaelab.devices import model_device
from vaelab.distributions import is_diagonal_normal, kl_diagonal_normal

ACTIVE_THRESHOLD = 0.01
"""Unit u is active when A_u = Cov_x(E_q[z_u]) exceeds this (Burda et al. 2015, Section 5.2)."""


def active_units_rule(threshold: float = ACTIVE_THRESHOLD) -> str:
    """The active-unit rule as printed in tables and figure titles: "A_u = Cov_x(E_q[z_u]) > 0.01"."""
    return f"A_u = Cov_x(E_q[z_u]) > {threshold:g}"


def latent_name(index: int) -> str:
    """The name of latent dimension `index` (0-based position in z): 0 -> "z1", 1 -> "z2", ..."""
    return f"z{index + 1}"


@torch.no_grad()
def posterior_means(model, x: Tensor, batch_size: int = 1000) -> Tensor:
    """E_q[z|x] for every row of x: (N, *x_shape) -> (N, Z), on x's device (the model may run on
    another: each chunk goes there and back). For an AE this is the code f(x)."""
    device = model_device(model)
    return torch.cat([model.posterior(chunk.to(device)).mean.to(x.device) for chunk in x.split(batch_size)])


@dataclass(frozen=True)
class LatentStatistics:
    """Per-latent-dimension summaries of q(z|x) over a data set of `num_examples` rows.

    kl_per_dim: (Z,) mean over x of KL(q(z_u|x) || p(z_u)) in nats per example, where q(z|x) and
    p(z) are both diagonal Gaussians (the closed form exists per dimension); their sum is the data
    set's mean KL term. None for an AE (a point-mass code has no finite KL) and for a mixture prior
    (a mixture's KL does not split into dimensions). posterior_mean_variance: (Z,) A_u =
    Cov_x(E_q[z_u]); active_units counts A_u > threshold (Burda et al. 2015, Section 5.2).
    """

    kl_per_dim: np.ndarray | None
    posterior_mean_variance: np.ndarray
    active_units: int
    threshold: float
    num_examples: int


@torch.no_grad()
def latent_statistics(
    model, x: Tensor, *, threshold: float = ACTIVE_THRESHOLD, batch_size: int = 1000
) -> LatentStatistics:
    """KL per latent dim against the prior (closed form) and the active units, over the rows of x.

    KL(N(m, s^2) || N(m_p, s_p^2)) = log(s_p / s) + (s^2 + (m - m_p)^2) / (2 s_p^2) - 1/2 per
    dimension (Kingma & Welling 2014, Appendix B, for p(z) = N(0, I)), averaged over the rows of
    x: (N, *x_shape) -> (Z,). A_u = Var_x(E_q[z_u]) over the same rows (unbiased, N - 1). Float64.
    """
    p_z = model.prior()
    closed_form = not getattr(model, "deterministic", False) and is_diagonal_normal(p_z)
    device = model_device(model)  # (x may live elsewhere: each chunk goes to the model)
    kl_sum = torch.zeros(model.latent_dim, dtype=torch.float64, device=device)
    means = []
    for chunk in x.split(batch_size):
        q_z_given_x = model.posterior(chunk.to(device))
        means.append(q_z_given_x.mean.double().cpu())  # (B, Z)
        closed_form = closed_form and is_diagonal_normal(q_z_given_x)
        if closed_form:
            q, p = q_z_given_x.base_dist, p_z.base_dist
            kl = kl_diagonal_normal(q.loc.double(), q.scale.double(), p.loc.double(), p.scale.double())
            kl_sum += kl.sum(0)  # (Z,)
    m = torch.cat(means)  # (N, Z)
    variance, active = active_units(m, threshold)
    kl_per_dim = (kl_sum / len(m)).cpu().numpy() if closed_form else None
    return LatentStatistics(kl_per_dim, variance.numpy(), active, threshold, len(m))


def active_units(posterior_means: Tensor, threshold: float = ACTIVE_THRESHOLD) -> tuple[Tensor, int]:
    """(A, count): A_u = Cov_x(E_q[z_u]), the unbiased variance over the N rows of
    `posterior_means` (N, Z) -> (Z,) in float64 (zeros for one row), and how many exceed
    `threshold` (Burda et al. 2015, Section 5.2)."""
    m = posterior_means.to(torch.float64)
    variance = m.var(0) if len(m) > 1 else torch.zeros(m.shape[1], dtype=torch.float64)
    return variance, int((variance > threshold).sum())
