"""Latent-variable models whose log p(x) and posterior p(z|x) are known exactly.

They implement the model protocol (`vaelab.models.LatentVariableModel`: `posterior(x)`, `prior()`,
`likelihood(z)`) so every estimator and objective in vaelab can be run on them and checked against
the truth:

- `LinearGaussian`: z ~ N(0, I_Z), x | z ~ N(W z + b, sigma^2 I_D) (probabilistic PCA, Tipping &
  Bishop 1999): Gaussian marginal and posterior in closed form.
- `BernoulliMixture`: a discrete z in {0..K-1} and Bernoulli pixels: log p(x) by enumerating K terms.
- `SigmoidBeliefNetwork`: z in {0,1}^d with independent Bernoulli priors and x | z ~ Bernoulli(
  sigmoid(W z + b)) (a one-layer sigmoid belief network, Neal 1992): log p(x) by enumerating the
  2^d configurations, the "sum over 2^30 configurations" argument for intractability made small
  enough (d <= 16) to compute.

Discrete latents: a Categorical q(z|x) has batch shape (B,) and *no* event dimension, so samples are
integer tensors z of shape (*S,) and `likelihood(z)` accepts those. The estimators only use `draw`
and `log_prob`, so they work unchanged.

Every model keeps the dtype of its parameters: pass float64 tensors to get float64 answers. Each
has `posterior(x)` defaulting to its stated q and `with_posterior(fn)`, which returns the same model
whose posterior(x) is fn(x), to study an estimator under a chosen (wrong) q.

`estimator_table` runs exact, ELBO, IWAE-k, IS-k and naive-MC-k side by side for the CLI.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Self

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import Bernoulli, Categorical, Distribution, Independent, MultivariateNormal

from vaelab.distributions import bernoulli, diagonal_normal, draw, gaussian, kl_gaussian, standard_normal
from vaelab.estimators import LogPxEstimate, bits_per_dim, elbo, iwae_bound, log_px_importance, log_px_naive

__all__ = [
    "EXACT_MODELS",
    "BernoulliMixture",
    "EstimatorRow",
    "ExactModel",
    "LinearGaussian",
    "SigmoidBeliefNetwork",
    "build_exact_model",
    "estimator_table",
    "format_table",
    "register_exact_model",
]

MAX_LATENT_BITS = 16
"""Largest d for `SigmoidBeliefNetwork`: 2^16 = 65,536 configurations are enumerated per x."""


class ExactModel:
    """A `LatentVariableModel` with an exact `log_marginal(x)`, over flat x: (B, D).

    Subclasses give `prior`, `likelihood`, `default_posterior`, `log_marginal`, `latent_dim` and
    `x_dim`; this base holds the posterior that `with_posterior` can replace, and sampling.
    """

    _posterior_fn: Callable[[Tensor], Distribution] | None = None
    deterministic = False  # q(z|x) is a distribution, never a point mass

    @property
    def latent_dim(self) -> int:
        raise NotImplementedError

    @property
    def x_dim(self) -> int:
        """D, the number of observed dimensions."""
        raise NotImplementedError

    @property
    def x_shape(self) -> tuple[int, ...]:
        return (self.x_dim,)

    def prior(self) -> Distribution:
        raise NotImplementedError

    def likelihood(self, z: Tensor) -> Distribution:
        raise NotImplementedError

    def log_marginal(self, x: Tensor) -> Tensor:
        """Exact log p(x), x: (B, D) -> (B,) in nats."""
        raise NotImplementedError

    def default_posterior(self, x: Tensor) -> Distribution:
        raise NotImplementedError

    def posterior(self, x: Tensor) -> Distribution:
        """q(z|x): `default_posterior` unless replaced by `with_posterior`. x: (B, D) -> batch (B,)."""
        return self._posterior_fn(x) if self._posterior_fn is not None else self.default_posterior(x)

    def with_posterior(self, fn: Callable[[Tensor], Distribution]) -> Self:
        """The same model (shared parameters) whose posterior(x) is fn(x)."""
        new = copy.copy(self)
        new._posterior_fn = fn
        return new

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Ancestral sampling z ~ p(z), x ~ p(x|z): (n, D)."""
        z = draw(self.prior(), (n,), generator)  # (n, Z) or (n,)
        return draw(self.likelihood(z), (), generator)


# ------------------------------------------------------------------------------ linear Gaussian


class LinearGaussian(ExactModel):
    """z ~ N(0, I_Z), x | z ~ N(W z + b, sigma^2 I_D); W: (D, Z), b: (D,), sigma = noise_std > 0.

    Marginal (Tipping & Bishop 1999, probabilistic PCA): x ~ N(b, C), C = W W^T + sigma^2 I_D.
    Posterior (ibid.): z | x ~ N(M^-1 W^T (x - b), sigma^2 M^-1), M = W^T W + sigma^2 I_Z.
    Both are computed through the Z x Z matrix M (Woodbury identity and the matrix determinant
    lemma), never by factorizing the D x D covariance C.
    """

    def __init__(self, W: Tensor, b: Tensor, noise_std: float | Tensor) -> None:
        if W.dim() != 2 or b.shape != W.shape[:1]:
            raise ValueError(f"W must be (D, Z) and b (D,), got {tuple(W.shape)} and {tuple(b.shape)}")
        self.W = W
        self.b = b.to(W.dtype)
        self.noise_std = torch.as_tensor(noise_std, dtype=W.dtype, device=W.device)
        if not (self.noise_std > 0).all():
            raise ValueError("noise_std must be positive")

    @property
    def x_dim(self) -> int:
        return self.W.shape[0]

    @property
    def latent_dim(self) -> int:
        return self.W.shape[1]

    def prior(self) -> Independent:
        """p(z) = N(0, I_Z)."""
        return standard_normal(self.latent_dim, dtype=self.W.dtype, device=self.W.device)

    def likelihood(self, z: Tensor) -> Independent:
        """p(x|z) = N(W z + b, sigma^2 I_D): z (*S, Z) -> batch (*S,), event (D,)."""
        return gaussian(z @ self.W.T + self.b, self.noise_std, 1)

    def _cholesky_m(self) -> Tensor:
        """Cholesky factor of M = W^T W + sigma^2 I_Z, (Z, Z)."""
        eye = torch.eye(self.latent_dim, dtype=self.W.dtype, device=self.W.device)
        return torch.linalg.cholesky(self.W.T @ self.W + self.noise_std**2 * eye)

    def log_marginal(self, x: Tensor) -> Tensor:
        """Exact log p(x) = log N(x; b, W W^T + sigma^2 I_D), x: (B, D) -> (B,) in nats.

        With r = x - b and M = L L^T: C^-1 = sigma^-2 (I - W M^-1 W^T) (Woodbury), so
        r^T C^-1 r = (|r|^2 - |L^-1 W^T r|^2) / sigma^2, and
        log det C = (D - Z) log sigma^2 + log det M (matrix determinant lemma).
        """
        var = self.noise_std**2
        chol = self._cholesky_m()
        r = x - self.b  # (B, D)
        u = torch.linalg.solve_triangular(chol, (r @ self.W).unsqueeze(-1), upper=False).squeeze(-1)  # (B, Z)
        quad = (r.square().sum(-1) - u.square().sum(-1)) / var
        log_det = (self.x_dim - self.latent_dim) * var.log() + 2 * chol.diagonal().log().sum()
        return -0.5 * (quad + log_det + self.x_dim * math.log(2 * math.pi))

    def exact_posterior(self, x: Tensor) -> MultivariateNormal:
        """p(z|x) = N(M^-1 W^T (x - b), sigma^2 M^-1): batch (B,), event (Z,), full covariance."""
        chol = self._cholesky_m()
        mean = torch.cholesky_solve(((x - self.b) @ self.W).unsqueeze(-1), chol).squeeze(-1)  # (B, Z)
        cov = self.noise_std**2 * torch.cholesky_inverse(chol)  # (Z, Z)
        return MultivariateNormal(mean, scale_tril=torch.linalg.cholesky(cov), validate_args=False)

    def default_posterior(self, x: Tensor) -> MultivariateNormal:
        """The exact posterior: with it the ELBO equals log p(x) and importance weights are constant."""
        return self.exact_posterior(x)

    def diagonal_posterior(self, x: Tensor, shift: float = 0.0, scale: float = 1.0) -> Independent:
        """A mean-field q(z|x) = prod_j N(m_j + shift, (scale * s_j)^2) from the exact marginals m_j, s_j^2.

        shift = 0, scale = 1 gives the exact posterior's marginals (the best diagonal q under the
        forward KL); other values give deliberately wrong q's. x: (B, D) -> batch (B,), event (Z,).
        """
        exact = self.exact_posterior(x)
        var = exact.covariance_matrix.diagonal(dim1=-2, dim2=-1)  # (B, Z)
        return diagonal_normal(exact.mean + shift, torch.log(scale**2 * var))

    def with_diagonal_posterior(self, shift: float = 0.0, scale: float = 1.0) -> LinearGaussian:
        """This model with q(z|x) = `diagonal_posterior(x, shift, scale)`."""
        return self.with_posterior(lambda x: self.diagonal_posterior(x, shift, scale))

    def kl_to_exact_posterior(self, q: Distribution, x: Tensor) -> Tensor:
        """KL(q(z|x) || p(z|x)) in closed form for a Gaussian q (diagonal or full), (B,) in nats.

        This is exactly log p(x) - ELBO(q) (Kingma & Welling 2014, eq. 1).
        """
        mean, cov = _gaussian_moments(q)
        post = self.exact_posterior(x)
        return kl_gaussian(mean, cov, post.loc, post.covariance_matrix)

    def elbo_closed_form(self, q: Distribution, x: Tensor) -> Tensor:
        """ELBO(q) = E_q[log p(x|z)] - KL(q || p(z)) in closed form for a Gaussian q = N(m, S), (B,).

        E_q[log p(x|z)] = -D/2 log(2 pi sigma^2) - (|x - W m - b|^2 + tr(W S W^T)) / (2 sigma^2);
        KL(N(m, S) || N(0, I)) = 1/2 (tr S + m^T m - Z - log det S).
        """
        mean, cov = _gaussian_moments(q)  # (B, Z), (B, Z, Z)
        var = self.noise_std**2
        resid = x - mean @ self.W.T - self.b  # (B, D)
        trace_wsw = (self.W @ cov @ self.W.T).diagonal(dim1=-2, dim2=-1).sum(-1)  # (B,)
        expected_ll = -0.5 * self.x_dim * torch.log(2 * math.pi * var) - (
            resid.square().sum(-1) + trace_wsw
        ) / (2 * var)
        trace_s = cov.diagonal(dim1=-2, dim2=-1).sum(-1)
        kl = 0.5 * (trace_s + mean.square().sum(-1) - self.latent_dim - torch.logdet(cov))
        return expected_ll - kl


def _gaussian_moments(q: Distribution) -> tuple[Tensor, Tensor]:
    """Mean (B, Z) and covariance (B, Z, Z) of a MultivariateNormal or a diagonal Normal q."""
    if isinstance(q, MultivariateNormal):
        return q.loc, q.covariance_matrix.expand(q.loc.shape + q.loc.shape[-1:])
    if isinstance(q, Independent) and q.reinterpreted_batch_ndims == 1 and hasattr(q.base_dist, "scale"):
        return q.mean, torch.diag_embed(q.variance)
    raise TypeError(f"expected a Gaussian q(z|x), got {type(q).__name__}")


# ----------------------------------------------------------------------------- Bernoulli mixture


class BernoulliMixture(ExactModel):
    """z ~ Categorical(weights) over K components, x | z = k ~ prod_d Bernoulli(sigmoid(logits[k, d])).

    weights: (K,) probabilities, logits: (K, D). log p(x) = logsumexp_k [log w_k + log p(x | k)]
    enumerates the K components exactly; p(z = k | x) are the responsibilities (Bishop 2006,
    Section 9.3.3). The latent is an integer: z of shape (*S,) and no event dimension.
    """

    def __init__(self, weights: Tensor, logits: Tensor) -> None:
        if logits.dim() != 2 or weights.shape != logits.shape[:1]:
            raise ValueError(
                f"weights must be (K,) and logits (K, D), got {tuple(weights.shape)}, {tuple(logits.shape)}"
            )
        if (weights < 0).any() or abs(float(weights.sum()) - 1.0) > 1e-6:
            raise ValueError("weights must be non-negative and sum to 1")
        self.weights = weights.to(logits.dtype)
        self.logits = logits

    @property
    def num_components(self) -> int:
        return self.logits.shape[0]

    @property
    def latent_dim(self) -> int:
        """1: a single categorical latent (its samples have no event dimension)."""
        return 1

    @property
    def x_dim(self) -> int:
        return self.logits.shape[1]

    def prior(self) -> Categorical:
        """p(z) = Categorical(weights), batch shape ()."""
        return Categorical(probs=self.weights, validate_args=False)

    def likelihood(self, z: Tensor) -> Independent:
        """p(x|z): integer z (*S,) -> batch (*S,), event (D,)."""
        return bernoulli(self.logits[z.long()], 1)

    def log_joint(self, x: Tensor) -> Tensor:
        """log p(x, z = k) for every k: x (B, D) -> (B, K).

        log p(x | k) = sum_d [x_d l_kd - softplus(l_kd)], the Bernoulli log-likelihood from logits.
        """
        log_lik = x @ self.logits.T - F.softplus(self.logits).sum(-1)  # (B, K)
        return self.weights.log() + log_lik

    def log_marginal(self, x: Tensor) -> Tensor:
        """Exact log p(x) = logsumexp_k log p(x, k), (B,) in nats."""
        return torch.logsumexp(self.log_joint(x), -1)

    def exact_posterior(self, x: Tensor) -> Categorical:
        """p(z | x) = softmax_k log p(x, k): batch (B,)."""
        return Categorical(logits=self.log_joint(x), validate_args=False)

    def tempered_posterior(self, x: Tensor, temperature: float) -> Categorical:
        """q(z|x) proportional to p(z|x)^(1/T): T > 1 flattens it (a wrong but safe proposal)."""
        return Categorical(logits=self.log_joint(x) / temperature, validate_args=False)

    def default_posterior(self, x: Tensor) -> Categorical:
        """The exact posterior (responsibilities)."""
        return self.exact_posterior(x)


# ------------------------------------------------------------------------- sigmoid belief network


class SigmoidBeliefNetwork(ExactModel):
    """z in {0,1}^d, p(z) = prod_j Bernoulli(z_j; pi_j), x | z ~ prod_i Bernoulli(sigmoid((W z + b)_i)).

    A one-layer sigmoid belief network (Neal 1992). prior_probs: (d,), W: (D, d), b: (D,), d <= 16.
    log p(x) = logsumexp over all 2^d configurations c of [log p(c) + log p(x | c)]: the model is
    a Bernoulli mixture with 2^d components (`to_mixture`), and with d = 30 this sum would have
    2^30 terms, the textbook example of an intractable evidence.

    The default q(z|x) is mean-field: prod_j Bernoulli(z_j; p(z_j = 1 | x)) with the exact posterior
    marginals (not exact when the posterior is correlated). The exact posterior is a Categorical over
    the 2^d codes (`exact_posterior_codes`; decode an index with `codes`).
    """

    def __init__(self, prior_probs: Tensor, W: Tensor, b: Tensor) -> None:
        d = prior_probs.shape[-1]
        if prior_probs.dim() != 1 or W.shape[1:] != (d,) or b.shape != W.shape[:1]:
            raise ValueError("prior_probs must be (d,), W (D, d) and b (D,)")
        if d > MAX_LATENT_BITS:
            raise ValueError(
                f"d = {d} latent bits: at most {MAX_LATENT_BITS} (2^d configurations are enumerated)"
            )
        if ((prior_probs <= 0) | (prior_probs >= 1)).any():
            raise ValueError("prior probabilities must be strictly between 0 and 1")
        self.prior_probs = prior_probs.to(W.dtype)
        self.W = W
        self.b = b.to(W.dtype)
        bits = torch.arange(d, device=W.device)
        index = torch.arange(2**d, device=W.device).unsqueeze(-1)
        self.codes = ((index >> bits) & 1).to(W.dtype)  # (2^d, d): row c holds the bits of c
        log_prior = self.prior().log_prob(self.codes)  # (2^d,)
        self._mixture = BernoulliMixture(log_prior.exp(), self.codes @ W.T + self.b)

    @property
    def latent_dim(self) -> int:
        return self.prior_probs.shape[0]

    @property
    def x_dim(self) -> int:
        return self.W.shape[0]

    def prior(self) -> Independent:
        """p(z) = prod_j Bernoulli(pi_j): batch (), event (d,)."""
        return Independent(Bernoulli(probs=self.prior_probs, validate_args=False), 1, validate_args=False)

    def likelihood(self, z: Tensor) -> Independent:
        """p(x|z) = Bernoulli(sigmoid(W z + b)): z (*S, d) in {0,1} -> batch (*S,), event (D,)."""
        return bernoulli(z.to(self.W.dtype) @ self.W.T + self.b, 1)

    def to_mixture(self) -> BernoulliMixture:
        """The same model as a Bernoulli mixture over the 2^d codes (component c = configuration c)."""
        return self._mixture

    def log_marginal(self, x: Tensor) -> Tensor:
        """Exact log p(x) by enumerating the 2^d configurations, (B,) in nats."""
        return self._mixture.log_marginal(x)

    def exact_posterior_codes(self, x: Tensor) -> Categorical:
        """p(z | x) as a Categorical over the 2^d code indices: batch (B,)."""
        return self._mixture.exact_posterior(x)

    def posterior_marginals(self, x: Tensor) -> Tensor:
        """p(z_j = 1 | x) = sum_c p(c | x) c_j: (B, d)."""
        return self.exact_posterior_codes(x).probs @ self.codes

    def mean_field_posterior(self, x: Tensor) -> Independent:
        """q(z|x) = prod_j Bernoulli(p(z_j = 1 | x)): batch (B,), event (d,)."""
        return Independent(
            Bernoulli(probs=self.posterior_marginals(x), validate_args=False), 1, validate_args=False
        )

    def default_posterior(self, x: Tensor) -> Independent:
        return self.mean_field_posterior(x)


# --------------------------------------------------------------------------- registry and table

ExactModelBuilder = Callable[[torch.Generator], ExactModel]
EXACT_MODELS: dict[str, ExactModelBuilder] = {}
"""Named exact models for the CLI, each built from a generator, float64, with an approximate q."""


def register_exact_model(name: str) -> Callable[[ExactModelBuilder], ExactModelBuilder]:
    """A decorator that registers a builder under `name` in `EXACT_MODELS`."""

    def register(builder: ExactModelBuilder) -> ExactModelBuilder:
        EXACT_MODELS[name] = builder
        return builder

    return register


@register_exact_model("linear-gaussian")
def _linear_gaussian(generator: torch.Generator) -> LinearGaussian:
    """Z = 2, D = 6, sigma = 0.5; q = the exact marginals shifted by 0.25, 1.5x the std (wrong on purpose)."""
    W = torch.randn(6, 2, generator=generator, dtype=torch.float64)
    b = torch.randn(6, generator=generator, dtype=torch.float64)
    return LinearGaussian(W, b, 0.5).with_diagonal_posterior(shift=0.25, scale=1.5)


@register_exact_model("linear-gaussian-correlated")
def _linear_gaussian_correlated(generator: torch.Generator) -> LinearGaussian:
    """Z = 3, D = 5, sigma = 0.5, overlapping loadings: a strongly correlated posterior, where a
    mean-field q cannot be exact (best gap 0.789 nats); q = its exact marginals."""
    W = torch.tensor(
        [[1.0, 0.9, 0.0], [0.8, 1.0, 0.3], [0.0, 0.5, 1.0], [1.0, 1.0, 1.0], [0.3, -0.2, 0.6]],
        dtype=torch.float64,
    )
    return LinearGaussian(W, torch.zeros(5, dtype=torch.float64), 0.5).with_diagonal_posterior()


@register_exact_model("bernoulli-mixture")
def _bernoulli_mixture(generator: torch.Generator) -> BernoulliMixture:
    """K = 8 components over D = 24 pixels; q = the exact responsibilities tempered at T = 3."""
    weights = torch.softmax(torch.randn(8, generator=generator, dtype=torch.float64), 0)
    logits = 2.0 * torch.randn(8, 24, generator=generator, dtype=torch.float64)
    model = BernoulliMixture(weights, logits)
    return model.with_posterior(lambda x: model.tempered_posterior(x, 3.0))


@register_exact_model("binary-latent")
def _sigmoid_belief_network(generator: torch.Generator) -> SigmoidBeliefNetwork:
    """d = 10 latent bits (1,024 configurations), D = 24 pixels; q = mean-field exact marginals."""
    prior_probs = torch.sigmoid(torch.randn(10, generator=generator, dtype=torch.float64))
    W = 2.0 * torch.randn(24, 10, generator=generator, dtype=torch.float64)
    b = torch.randn(24, generator=generator, dtype=torch.float64)
    return SigmoidBeliefNetwork(prior_probs, W, b)


def build_exact_model(name: str, seed: int = 0) -> ExactModel:
    """An exact model from `EXACT_MODELS` with parameters drawn from a generator seeded with `seed`."""
    if name not in EXACT_MODELS:
        raise KeyError(f"unknown exact model {name!r}; choose from {sorted(EXACT_MODELS)}")
    return EXACT_MODELS[name](torch.Generator().manual_seed(seed))


@dataclass(frozen=True)
class EstimatorRow:
    """One estimator at one k, averaged over a batch of x. Values in nats per example.

    value: batch mean of the estimate of log p(x) (or of the bound); stderr: its Monte Carlo
    standard error; exact: batch mean of the exact log p(x); seconds: wall time of this estimator.
    k is None for the exact row.
    """

    estimator: str
    k: int | None
    value: float
    stderr: float
    exact: float
    seconds: float

    @property
    def error(self) -> float:
        """value - exact, in nats per example (negative for a bound)."""
        return self.value - self.exact


def estimator_table(
    model: ExactModel,
    x: Tensor,
    ks: Sequence[int] = (1, 10, 100, 1000, 10_000),
    *,
    generator: torch.Generator | None = None,
    replicates: int = 8,
    chunk_size: int | None = None,
) -> list[EstimatorRow]:
    """Exact log p(x) next to ELBO, IWAE-k, IS-k and naive-MC-k for each k, on a batch x: (B, D).

    - ELBO (k-sample average, analytic KL where available) and IWAE-k are *bounds*: the row shows
      the mean of `replicates` independent k-sample estimates and the standard error across them.
    - IS-k (`log_px_importance`, proposal q(z|x)) and naive-MC-k (`log_px_naive`, proposal p(z))
      are single *estimates*; the stderr is the delta-method one, sqrt(sum_n se_n^2) / B.
    `model` needs `log_marginal(x)`. Rows are in the order exact, then per k: ELBO, IWAE, IS, naive.
    """
    batch = x.shape[0]
    start = time.perf_counter()
    exact = float(model.log_marginal(x).mean())
    rows = [EstimatorRow("exact", None, exact, 0.0, exact, time.perf_counter() - start)]
    x_rep = x.repeat((replicates,) + (1,) * (x.dim() - 1))  # (R * B, D): R independent replicates

    def bound_row(name: str, k: int, fn: Callable[[Tensor], Tensor]) -> EstimatorRow:
        start = time.perf_counter()
        with torch.no_grad():
            per_replicate = fn(x_rep).reshape(replicates, batch).mean(1)  # (R,)
        seconds = time.perf_counter() - start
        stderr = float(per_replicate.std() / math.sqrt(replicates)) if replicates > 1 else math.nan
        return EstimatorRow(name, k, float(per_replicate.mean()), stderr, exact, seconds)

    def estimate_row(name: str, k: int, fn: Callable[..., LogPxEstimate]) -> EstimatorRow:
        start = time.perf_counter()
        estimate = fn(model, x, k, generator=generator, chunk_size=chunk_size)
        seconds = time.perf_counter() - start
        stderr = float(estimate.stderr.square().sum().sqrt() / batch)
        return EstimatorRow(name, k, float(estimate.value.mean()), stderr, exact, seconds)

    for k in ks:
        rows.append(bound_row("ELBO", k, partial(elbo, model, k=k, generator=generator)))
        rows.append(
            bound_row("IWAE", k, partial(iwae_bound, model, k=k, generator=generator, chunk_size=chunk_size))
        )
        rows.append(estimate_row("IS", k, log_px_importance))
        rows.append(estimate_row("naive MC", k, log_px_naive))
    return rows


def format_table(rows: Sequence[EstimatorRow], num_dims: int | None = None) -> str:
    """A plain-text table of `estimator_table` rows: nats per example and seconds; given the data
    dimension `num_dims`, also the NLL in bits per dim, -value / (D ln 2)."""
    header = (
        f"{'estimator':<10} {'k':>6} {'log p(x) [nats]':>16} {'± stderr':>10} {'- exact':>10} {'time [s]':>9}"
    )
    if num_dims is not None:
        header += f" {'NLL [bits/dim]':>15}"
    lines = [header, "-" * len(header)]
    for row in rows:
        k = "-" if row.k is None else str(row.k)
        stderr = "-" if row.k is None or math.isnan(row.stderr) else f"{row.stderr:.4f}"
        error = "-" if row.k is None else f"{row.error:+.4f}"
        line = f"{row.estimator:<10} {k:>6} {row.value:>16.4f} {stderr:>10} {error:>10} {row.seconds:>9.3f}"
        if num_dims is not None:
            line += f" {bits_per_dim(-row.value, num_dims):>15.4f}"
        lines.append(line)
    lines.append(
        "ELBO and IWAE rows: mean of independent replicates (bounds, <= exact); "
        "IS and naive MC: one estimate with delta-method stderr."
    )
    return "\n".join(lines)
