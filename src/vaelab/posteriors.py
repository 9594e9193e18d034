"""Posterior families q(z|x): the encoder outputs a parameter vector, a family turns it into q.

    params = encoder(x)            # (B, P), P = family.num_params
    q_z_given_x = family(params)   # batch (B,), event (Z,)

Splitting the two is what lets one mechanism optimize q per example (the amortization gap,
`vaelab.gaps`): the encoder's output is the starting point, and the family is unchanged.

- `diagonal`: N(mu, diag(sigma^2)), the mean-field Gaussian of Kingma & Welling (2014).
  P = 2Z (mu, log sigma^2).
- `full`: N(mu, L L^T) with L lower triangular, positive diagonal: every Gaussian, so it contains
  the exact posterior of a linear-Gaussian model. P = 2Z + Z(Z-1)/2 (mu, log diag L, below-diagonal
  of L).
- `iaf`: inverse autoregressive flow (Kingma et al. 2016, eqs. 10-11): z_0 = mu + sigma * eps, then
  for t = 1..T, [m_t, s_t] = MADE_t(z_{t-1}, h), sigma_t = sigmoid(s_t),
  z_t = sigma_t * z_{t-1} + (1 - sigma_t) * m_t, the order of z reversed between steps; h is a
  context vector from the encoder. P = 2Z + C. Exactly
      log q(z_T|x) = sum_i [log N(eps_i; 0, 1) - log sigma_i] - sum_t sum_i log sigma_{t,i}.
  The MADE weights are the model's, shared by all x; mu, sigma and h are per example.

Flow log-determinants are computed in float32 even under bf16 autocast (DECISIONS).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, MultivariateNormal, constraints

from vaelab import distributions as D

FORGET_BIAS = 2.0
"""Initial bias of s_t: sigma_t = sigmoid(2) ~ 0.88, so each new step starts near the identity and
the flow starts near its base Gaussian (Kingma et al. 2016, Section 4: 'forget gate bias')."""


class PosteriorFamily(nn.Module):
    """params (*B, P) -> q(z|x) with batch (*B,), event (Z,)."""

    num_params: int

    def forward(self, params: Tensor) -> Distribution:
        raise NotImplementedError


class DiagonalFamily(PosteriorFamily):
    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.num_params = 2 * latent_dim

    def forward(self, params: Tensor) -> Distribution:
        loc, log_var = params.chunk(2, dim=-1)
        return D.diagonal_normal(loc, log_var)


class FullCovarianceFamily(PosteriorFamily):
    """N(mu, L L^T); L = tril(below) + diag(exp(log_diag))."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.num_params = 2 * latent_dim + latent_dim * (latent_dim - 1) // 2
        self.rows: Tensor
        self.cols: Tensor
        rows, cols = torch.tril_indices(latent_dim, latent_dim, offset=-1)
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols, persistent=False)

    def forward(self, params: Tensor) -> Distribution:
        z = self.latent_dim
        loc, log_diag, below = params[..., :z], params[..., z : 2 * z], params[..., 2 * z :]
        scale_tril = torch.diag_embed(log_diag.clamp(-15.0, 15.0).exp())
        scale_tril[..., self.rows, self.cols] = below  # a fresh tensor: in place is safe for autograd
        return MultivariateNormal(loc, scale_tril=scale_tril, validate_args=False)


class MaskedLinear(nn.Linear):
    mask: Tensor

    def __init__(self, in_features: int, out_features: int, mask: Tensor) -> None:
        super().__init__(in_features, out_features)
        self.register_buffer("mask", mask.to(self.weight.dtype), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.linear(x, self.weight * self.mask, self.bias)


class MADE(nn.Module):
    """An autoregressive net with context (Germain et al. 2015): [m, s] = f(z, h) with m_i and
    s_i depending on z_1..z_{i-1} and h only. z: (*S, Z), h: (*S, C) -> two (*S, Z)."""

    def __init__(self, latent_dim: int, context_dim: int, hidden: int) -> None:
        super().__init__()
        z_degrees = torch.arange(1, latent_dim + 1)  # input i has degree i
        h_degrees = torch.arange(hidden) % latent_dim  # 0..Z-1: a unit sees inputs of degree <= its own
        self.z_in = MaskedLinear(latent_dim, hidden, (h_degrees[:, None] >= z_degrees[None, :]))
        self.h_in = nn.Linear(context_dim, hidden)
        out_mask = z_degrees[:, None] > h_degrees[None, :]  # output i sees units of degree < i
        self.m_out = MaskedLinear(hidden, latent_dim, out_mask)
        self.s_out = MaskedLinear(hidden, latent_dim, out_mask)
        nn.init.constant_(self.s_out.bias, FORGET_BIAS)

    def forward(self, z: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        hidden = torch.nn.functional.elu(self.z_in(z) + self.h_in(h))
        return self.m_out(hidden), self.s_out(hidden)


class IAFPosterior(D.FromNoise):
    """q(z|x) of an inverse autoregressive flow; batch (*B,), event (Z,).

    `rsample` returns z_T and remembers log q(z_T|x) for the tensor it returned, so the
    objectives' `log_prob(z)` of their own samples costs nothing; `log_prob` of any other z
    inverts the flow exactly, one dimension at a time (Z passes per step).
    """

    arg_constraints: dict[str, constraints.Constraint] = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, loc: Tensor, log_var: Tensor, context: Tensor, steps: nn.ModuleList) -> None:
        self.loc, self.log_scale, self.context, self.steps = loc, 0.5 * log_var, context, steps
        self.scale = self.log_scale.exp()
        self._last: tuple[Tensor, Tensor] | None = None
        super().__init__(loc.shape[:-1], loc.shape[-1:], validate_args=False)

    def _context(self, z: Tensor) -> Tensor:
        return self.context.expand(*z.shape[:-1], self.context.shape[-1])

    def from_noise(self, eps: Tensor) -> tuple[Tensor, Tensor]:
        """z_T and log q(z_T|x) for base noise eps: (*S, *B, Z) -> (*S, *B, Z), (*S, *B)."""
        with torch.autocast(eps.device.type, enabled=False):
            z = self.loc + self.scale * eps
            log_q = (-0.5 * eps.square() - 0.5 * math.log(2 * math.pi) - self.log_scale).sum(-1)
            h = self._context(z)
            for step in self.steps:
                m, s = step(z, h)
                z = torch.sigmoid(s) * z + torch.sigmoid(-s) * m  # 1 - sigmoid(s) = sigmoid(-s)
                log_q = log_q - nn.functional.logsigmoid(s).sum(-1)
                z = z.flip(-1)
        return z, log_q

    def rsample(self, sample_shape: torch.Size | list[int] | tuple[int, ...] = ()) -> Tensor:
        shape = self._extended_shape(torch.Size(sample_shape))
        eps = torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device)
        return self.transformed(eps)

    def transformed(self, eps: Tensor) -> Tensor:
        """z_T for the base noise eps (as `rsample` draws it), remembering its log q."""
        z, log_q = self.from_noise(eps)
        self._last = (z, log_q)
        return z

    def log_prob(self, value: Tensor) -> Tensor:
        if self._last is not None and value is self._last[0]:
            return self._last[1]
        return self._inverse_log_prob(value)

    def _inverse_log_prob(self, value: Tensor) -> Tensor:
        with torch.autocast(value.device.type, enabled=False):
            z = value.to(self.loc.dtype)
            log_det = torch.zeros(z.shape[:-1], dtype=z.dtype, device=z.device)
            h = self._context(z)
            for step in reversed(self.steps):
                z_next = z.flip(-1)
                z = torch.zeros_like(z_next)
                for i in range(z.shape[-1]):  # z_i needs only z_1..z_{i-1}, already found
                    m, s = step(z, h)
                    solved = (z_next[..., i] - torch.sigmoid(-s[..., i]) * m[..., i]) / torch.sigmoid(
                        s[..., i]
                    )
                    z = torch.cat([z[..., :i], solved[..., None], z[..., i + 1 :]], dim=-1)
                _, s = step(z, h)
                log_det = log_det + nn.functional.logsigmoid(s).sum(-1)
            eps = (z - self.loc) / self.scale
            log_base = (-0.5 * eps.square() - 0.5 * math.log(2 * math.pi) - self.log_scale).sum(-1)
        return log_base - log_det

    @property
    def mean(self) -> Tensor:
        """Not E_q[z] (no closed form): the flow's image of the base mean (eps = 0), a point of
        high density that figures use as the code of x."""
        return self.from_noise(torch.zeros_like(self.loc))[0]


class IAFFamily(PosteriorFamily):
    def __init__(self, latent_dim: int, flow_steps: int, hidden: int) -> None:
        super().__init__()
        self.latent_dim, self.context_dim = latent_dim, hidden
        self.num_params = 2 * latent_dim + hidden
        self.steps = nn.ModuleList(MADE(latent_dim, hidden, hidden) for _ in range(flow_steps))

    def forward(self, params: Tensor) -> Distribution:
        z = self.latent_dim
        return IAFPosterior(params[..., :z], params[..., z : 2 * z], params[..., 2 * z :], self.steps)


POSTERIORS: dict[str, Callable[..., PosteriorFamily]] = {
    "diagonal": lambda latent_dim, flow_steps, flow_hidden: DiagonalFamily(latent_dim),
    "full": lambda latent_dim, flow_steps, flow_hidden: FullCovarianceFamily(latent_dim),
    "iaf": IAFFamily,
}
"""The posterior families by their `model.posterior` name."""


def build_posterior(name: str, latent_dim: int, flow_steps: int, flow_hidden: int) -> PosteriorFamily:
    return POSTERIORS[name](latent_dim, flow_steps, flow_hidden)
