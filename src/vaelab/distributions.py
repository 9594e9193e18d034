"""The three distributions of a latent-variable model: p(z), q(z|x) and p(x|z).

Everything here is a `torch.distributions` object, so estimators and objectives work on any
model that returns them. Conventions:

- q(z|x) for a batch x: (B, ...) has batch shape (B,) and event shape (Z,).
- p(z) has batch shape () and event shape (Z,).
- p(x|z) for z: (..., Z) has batch shape (...) and the per-example shape of x as event shape,
  so `p_x_given_z.log_prob(x)` sums over pixels and returns (...).

Every constructor passes `validate_args=False`: argument validation costs a full pass over the
parameters on every call, which is a measurable share of a training step on a CPU. Inputs are
validated once, when the data are loaded (`vaelab.data`).

Randomness is explicit: `draw(dist, sample_shape, generator)` samples with a caller-owned
`torch.Generator` (reparameterized where the family allows), because `Distribution.rsample`
only uses the global RNG and a resumable run needs its own stream.

KL pairs missing from `torch.distributions.kl` (a diagonal Gaussian `Independent(Normal)` against
a full-covariance `MultivariateNormal`, both ways) are registered here with `register_kl`, where
the families are defined (as Pyro does), so `kl_divergence` and `analytic_kl` know them whenever
this module is loaded, which every model, objective and estimator does.
"""

from __future__ import annotations

import math
from typing import TypeGuard

import torch
from torch import Tensor
from torch.distributions import (
    Bernoulli,
    Categorical,
    Distribution,
    Independent,
    MixtureSameFamily,
    MultivariateNormal,
    Normal,
    constraints,
    kl_divergence,
)
from torch.distributions.kl import register_kl

__all__ = [
    "DiagonalGaussianMixture",
    "GeneratorSampled",
    "PointMass",
    "analytic_kl",
    "bernoulli",
    "diagonal_normal",
    "draw",
    "gaussian",
    "is_diagonal_normal",
    "kl_diagonal_normal",
    "kl_gaussian",
    "kl_standard_normal",
    "standard_normal",
]

LOG_VAR_CLAMP = (-30.0, 20.0)
"""Clamp for encoder log-variances: exp(-30/2) ~ 3e-7 and exp(20/2) ~ 2e4 bound sigma well inside
float32, so a diverging encoder gives a large but finite KL instead of inf/NaN."""


SampleShape = torch.Size | list[int] | tuple[int, ...]


class GeneratorSampled(Distribution):
    """A family that samples with a caller's generator itself, `sample(sample_shape, generator)`;
    `draw` hands it the generator (the likelihoods for 8-bit data in `vaelab.likelihoods` are)."""

    def sample(self, sample_shape: SampleShape = (), generator: torch.Generator | None = None) -> Tensor:
        raise NotImplementedError


class PointMass(Distribution):
    """A point mass at `loc`: the "posterior" of a deterministic (autoencoder) encoder.

    batch shape loc.shape[:-event_dims], event shape loc.shape[-event_dims:]. Sampling returns
    `loc` (differentiably); log_prob is 0 at loc and -inf elsewhere.
    """

    arg_constraints = {"loc": constraints.real}
    has_rsample = True

    def __init__(self, loc: Tensor, event_dims: int = 1) -> None:
        self.loc = loc
        split = loc.dim() - event_dims
        super().__init__(loc.shape[:split], loc.shape[split:], validate_args=False)

    @property
    def mean(self) -> Tensor:
        return self.loc

    @property
    def variance(self) -> Tensor:
        return torch.zeros_like(self.loc)

    def rsample(self, sample_shape: torch.Size | list[int] | tuple[int, ...] = ()) -> Tensor:
        return self.loc.expand(self._extended_shape(torch.Size(sample_shape)))

    def log_prob(self, value: Tensor) -> Tensor:
        event_dims = len(self.event_shape)
        equal = (value == self.loc).flatten(-event_dims).all(-1) if event_dims else value == self.loc
        return torch.where(equal, 0.0, -math.inf).to(self.loc.dtype)

    def entropy(self) -> Tensor:
        return torch.zeros(self.batch_shape, dtype=self.loc.dtype, device=self.loc.device)


class DiagonalGaussianMixture(MixtureSameFamily):
    """p(z) = sum_k pi_k N(z; m_k, diag(s_k^2)): logits (K,), loc and scale (K, Z); batch (), event (Z,).

    The mixture priors (a learned mixture, the VampPrior) are scored at every latent sample of
    every step and every importance sample of an evaluation. `MixtureSameFamily.log_prob`
    broadcasts z against all components, an element-wise pass over (N, K, Z). Expanding the square,

        log N(z; m_k, s_k) = -1/2 [z^2 . s_k^-2 - 2 z . (m_k s_k^-2) + m_k^2 . s_k^-2]
                             - sum_j log s_kj - Z/2 log(2 pi),

    turns that pass into two (N, Z) x (Z, K) matrix products. They run in float64 (and outside
    autocast), because the expanded terms cancel: with s = 0.01 and |z| = 3 each is ~1e5 per
    dimension, and float32 would lose ~0.01 nats of a density the estimators resolve to 0.005.
    Sampling, the mean and the variance are MixtureSameFamily's.
    """

    def __init__(self, logits: Tensor, loc: Tensor, scale: Tensor) -> None:
        if loc.dim() != 2 or loc.shape != scale.shape or logits.shape != loc.shape[:1]:
            raise ValueError(
                f"DiagonalGaussianMixture: expected logits (K,), loc and scale (K, Z); got "
                f"{tuple(logits.shape)}, {tuple(loc.shape)}, {tuple(scale.shape)}"
            )
        components = Independent(Normal(loc, scale, validate_args=False), 1, validate_args=False)
        super().__init__(Categorical(logits=logits, validate_args=False), components, validate_args=False)

    def log_prob(self, value: Tensor) -> Tensor:
        """log p(z) for z: (..., Z) -> (...), in the dtype of z."""
        components = self.component_distribution
        if not is_diagonal_normal(components):  # the constructor makes it one; `expand` keeps it
            raise TypeError(f"expected diagonal Gaussian components, got {type(components).__name__}")
        normal = components.base_dist
        latent_dim = normal.loc.shape[-1]
        with torch.autocast(value.device.type, enabled=False):
            z = value.reshape(-1, latent_dim).double()  # (N, Z)
            loc, scale = normal.loc.double(), normal.scale.double()  # (K, Z)
            precision = scale.pow(-2)
            quadratic = z.square() @ precision.T - 2.0 * (z @ (loc * precision).T)  # (N, K)
            constant = (loc.square() * precision).sum(-1)  # (K,)
            log_norm = -scale.log().sum(-1) - 0.5 * latent_dim * math.log(2 * math.pi)  # (K,)
            log_weights = torch.log_softmax(self.mixture_distribution.logits.double(), -1)
            log_joint = -0.5 * (quadratic + constant) + log_norm + log_weights  # (N, K)
            log_p = torch.logsumexp(log_joint, dim=-1)
        return log_p.to(value.dtype).reshape(value.shape[:-1])


def diagonal_normal(loc: Tensor, log_var: Tensor) -> Independent:
    """N(loc, diag(exp(log_var))) with the last dim as event: loc, log_var (B, Z) -> q(z|x).

    The encoder outputs a log-variance; this is the one place it becomes a scale,
    sigma = exp(log_var / 2), after the documented clamp `LOG_VAR_CLAMP`.
    """
    scale = torch.exp(0.5 * log_var.clamp(*LOG_VAR_CLAMP))
    return Independent(Normal(loc, scale, validate_args=False), 1, validate_args=False)


def standard_normal(
    dim: int, *, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
) -> Independent:
    """p(z) = N(0, I_dim): batch shape (), event shape (dim,)."""
    zeros = torch.zeros(dim, dtype=dtype, device=device)
    return Independent(Normal(zeros, torch.ones_like(zeros), validate_args=False), 1, validate_args=False)


def bernoulli(logits: Tensor, event_dims: int) -> Independent:
    """p(x|z) = prod_d Bernoulli(x_d; sigmoid(logits_d)), from logits for numerical stability.

    log p(x|z) = sum_d [x_d * logits_d - softplus(logits_d)], i.e. minus the summed binary
    cross-entropy. Defined for x in [0, 1] (for x strictly between 0 and 1 it is the usual
    "BCE on grey levels" objective, which is not a normalized density; see the README).
    """
    return Independent(Bernoulli(logits=logits, validate_args=False), event_dims, validate_args=False)


def gaussian(mean: Tensor, scale: Tensor, event_dims: int) -> Independent:
    """p(x|z) = prod_d N(x_d; mean_d, scale_d^2). scale broadcasts against mean.

    log p(x|z) = -sum_d [(x_d - mean_d)^2 / (2 scale_d^2) + log scale_d + log(2 pi) / 2]:
    with a fixed scale this is a scaled MSE plus a constant, which is why sigma acts as the
    weight of reconstruction against KL.
    """
    scale = scale.expand_as(mean) if scale.shape != mean.shape else scale
    return Independent(Normal(mean, scale, validate_args=False), event_dims, validate_args=False)


def kl_standard_normal(loc: Tensor, log_var: Tensor) -> Tensor:
    """KL(N(loc, diag(exp(log_var))) || N(0, I)) = 1/2 sum_j (mu_j^2 + sigma_j^2 - log sigma_j^2 - 1).

    Kingma & Welling (2014), Appendix B. loc, log_var: (..., Z) -> (...) in nats.
    """
    log_var = log_var.clamp(*LOG_VAR_CLAMP)
    return 0.5 * (loc.square() + log_var.exp() - log_var - 1.0).sum(-1)


def kl_diagonal_normal(loc0: Tensor, scale0: Tensor, loc1: Tensor, scale1: Tensor) -> Tensor:
    """Per-dimension KL(N(loc0, scale0^2) || N(loc1, scale1^2)), (..., Z) -> (..., Z), not summed.

    KL = log(s1 / s0) + (s0^2 + (m0 - m1)^2) / (2 s1^2) - 1/2 (the 1-D case of
    `kl_gaussian`). With loc1 = 0, scale1 = 1 its sum over Z is `kl_standard_normal`
    (Kingma & Welling 2014, Appendix B).
    """
    return (
        torch.log(scale1 / scale0) + (scale0.square() + (loc0 - loc1).square()) / (2 * scale1.square()) - 0.5
    )


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


def is_diagonal_normal(d: Distribution) -> TypeGuard[Independent[Normal]]:
    """Whether d is a diagonal Gaussian over its last dim: Independent(Normal, 1)."""
    return isinstance(d, Independent) and isinstance(d.base_dist, Normal) and d.reinterpreted_batch_ndims == 1


def _family(d: Independent) -> str:
    return f"Independent({type(d.base_dist).__name__})"


@register_kl(Independent, MultivariateNormal)
def _kl_diagonal_normal_mvn(q: Independent, p: MultivariateNormal) -> Tensor:
    """KL(diagonal N || full N) by `kl_gaussian`; any other `Independent` family has no formula here."""
    if not is_diagonal_normal(q):
        raise NotImplementedError(f"no closed form for KL({_family(q)} || MultivariateNormal)")
    return kl_gaussian(q.mean, torch.diag_embed(q.variance), p.loc, p.covariance_matrix)


@register_kl(MultivariateNormal, Independent)
def _kl_mvn_diagonal_normal(q: MultivariateNormal, p: Independent) -> Tensor:
    """KL(full N || diagonal N) by `kl_gaussian`; any other `Independent` family has no formula here."""
    if not is_diagonal_normal(p):
        raise NotImplementedError(f"no closed form for KL(MultivariateNormal || {_family(p)})")
    return kl_gaussian(q.loc, q.covariance_matrix, p.mean, torch.diag_embed(p.variance))


def analytic_kl(q: Distribution, p: Distribution) -> Tensor | None:
    """KL(q || p) in closed form, or None when there is none; shape: the broadcast batch shape.

    The VAE's own pair, two diagonal Gaussians, is computed here directly, without the lookup in
    torch's KL registry, which `torch.compile` cannot trace (it would split a compiled training
    step in two). No closed form exists against a mixture (`MixtureSameFamily`), so those give
    None at once. Other pairs go to `torch.distributions.kl_divergence`, with p (batch shape ()
    for a prior) first expanded to q's batch shape: some of torch's formulas (Bernoulli-Bernoulli
    in torch 2.x) index with masks and fail under broadcasting.
    """
    if is_diagonal_normal(q) and is_diagonal_normal(p):
        a, b = q.base_dist, p.base_dist
        return kl_diagonal_normal(a.loc, a.scale, b.loc, b.scale).sum(-1)
    if isinstance(p, MixtureSameFamily) or isinstance(q, MixtureSameFamily):
        return None
    shape = torch.broadcast_shapes(q.batch_shape, p.batch_shape)
    if p.batch_shape != shape:
        try:
            p = p.expand(shape)
        except NotImplementedError:  # a custom family without expand: try it as it is
            pass
    try:
        return kl_divergence(q, p)
    except NotImplementedError:
        return None


def draw(
    dist: Distribution,
    sample_shape: torch.Size | tuple[int, ...] = (),
    generator: torch.Generator | None = None,
) -> Tensor:
    """Sample `dist` with `generator`, reparameterized where the family allows.

    Returns a tensor of shape sample_shape + batch_shape + event_shape. Gaussian families are
    sampled as loc + scale * eps (eps ~ N(0, I) from `generator`), so gradients flow to the
    parameters; discrete families (Bernoulli, Categorical, mixtures) are sampled without
    gradient. With `generator=None` this is `dist.rsample` (or `dist.sample`), using the global RNG.
    """
    sample_shape = torch.Size(sample_shape)
    if generator is None:
        return dist.rsample(sample_shape) if dist.has_rsample else dist.sample(sample_shape)
    if isinstance(dist, Independent):
        return draw(dist.base_dist, sample_shape, generator)
    if isinstance(dist, PointMass):
        return dist.rsample(sample_shape)
    if isinstance(dist, GeneratorSampled):
        return dist.sample(sample_shape, generator)
    shape = dist._extended_shape(sample_shape)
    if isinstance(dist, Normal):
        eps = torch.randn(shape, generator=generator, dtype=dist.loc.dtype, device=dist.loc.device)
        return dist.loc + dist.scale * eps
    if isinstance(dist, MultivariateNormal):
        eps = torch.randn(shape, generator=generator, dtype=dist.loc.dtype, device=dist.loc.device)
        return dist.loc + (dist.scale_tril @ eps.unsqueeze(-1)).squeeze(-1)
    if isinstance(dist, Bernoulli):
        with torch.no_grad():
            return torch.bernoulli(dist.probs.expand(shape), generator=generator)
    if isinstance(dist, Categorical):
        with torch.no_grad():
            probs = dist.probs.reshape(-1, dist.probs.shape[-1])  # (batch, K)
            n = math.prod(sample_shape)
            idx = torch.multinomial(probs, n, replacement=True, generator=generator)  # (batch, n)
            return idx.T.reshape(shape)
    if isinstance(dist, MixtureSameFamily):
        with torch.no_grad():
            k = draw(dist.mixture_distribution, sample_shape, generator)  # sample_shape + batch
            components = draw(dist.component_distribution, sample_shape, generator)
            # components: sample_shape + batch + (K,) + event; pick component k per draw
            event_dims = len(dist.event_shape)
            index = k.reshape(k.shape + (1,) + (1,) * event_dims)
            index = index.expand(k.shape + (1,) + dist.event_shape)
            return components.gather(len(k.shape), index).squeeze(len(k.shape))
    raise TypeError(f"draw() cannot sample {type(dist).__name__} with an explicit generator")
