"""Estimators and bounds of log p(x) for any model with `posterior`, `prior` and `likelihood`.

log p(x) = log ∫ p(x|z) p(z) dz has no closed form for a VAE, so it is either bounded or estimated:

- `elbo`: the evidence lower bound E_q[log p(x|z)] - KL(q(z|x) || p(z)) <= log p(x) (Jensen;
  Kingma & Welling 2014, eq. 3), averaged over k samples of z ~ q(z|x);
- `iwae_bound`: log (1/k) sum_i p(x, z_i) / q(z_i|x), z_i ~ q(z|x) (Burda et al. 2015, eq. 8), a
  tighter bound in expectation that rises to log p(x) as k grows;
- `log_px_importance`: the same importance-sampled estimate as a *measurement* of log p(x), with a
  delta-method standard error, chunked over samples so k = 5000 on a large test set fits in memory;
- `log_px_naive`: naive Monte Carlo log (1/k) sum_i p(x|z_i) with z_i ~ p(z), whose variance is
  exponentially worse than importance sampling; it exists so users can see that;
- `dataset_log_px` and `elbo_decomposition`: the same over a whole dataset, in batches; the latter
  splits the ELBO into its terms (the evaluation's table).

Every estimator returns per-example tensors of shape (B,) in nats; nothing is reduced over the
batch. Sign convention: `elbo` and `log_px` are higher-is-better, `nll = -log_px`.

The estimators only call `posterior(x).log_prob`, `prior().log_prob`, `likelihood(z).log_prob` and
`vaelab.distributions.draw`, so they work for discrete latents too: a Categorical q(z|x) has batch
shape (B,) and no event dimension, samples z have shape (K, B) instead of (K, B, Z), and
`likelihood(z)` accepts them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor
from torch.distributions import Distribution

from vaelab.diagnostics import ACTIVE_THRESHOLD, active_units
from vaelab.distributions import analytic_kl as closed_form_kl
from vaelab.distributions import draw, is_diagonal_normal, kl_diagonal_normal
from vaelab.hierarchical import active_units_per_layer, layer_log_ratios
from vaelab.models import LatentVariableModel, given_labels

__all__ = [
    "DatasetLogPx",
    "ELBOTerms",
    "ElboDecomposition",
    "LayeredELBOTerms",
    "LogPxEstimate",
    "bits_per_dim",
    "dataset_log_px",
    "default_chunk_size",
    "elbo",
    "elbo_decomposition",
    "elbo_terms",
    "iter_batches",
    "iter_labelled_batches",
    "iwae_bound",
    "log_px_importance",
    "log_px_naive",
]

MEMORY_BUDGET_BYTES = 8 * 2**20
"""Budget for the largest per-chunk tensor, (chunk, B, D) elements, when `chunk_size=None`.

Small on purpose: chunks whose tensors fit in the CPU's caches run the element-wise part of the
log-likelihood 1.5-2x faster than large ones (measured with benchmarks/nll_eval.py: the classic
VAE at k=1000, 100 rows per call, 25-sample chunks ~110 GFLOP/s against ~56 for one 1000-sample
chunk), and the decoder's matrix products are still large enough (chunk * B rows) to run well.

Peak memory is a small multiple of it plus the batch itself, independent of k: the decoder's
activations and the log-likelihood's temporaries have the same (chunk, B, ...) size."""

Proposal = Callable[[Tensor], Distribution]


@dataclass(frozen=True)
class ELBOTerms:
    """The ELBO and its two terms, each (B,) in nats: elbo = log_p_x_given_z - kl.

    log_p_x_given_z is the k-sample average of log p(x|z_i), z_i ~ q(z|x); kl is KL(q(z|x) || p(z)),
    analytic where `torch.distributions.kl_divergence` knows the pair (including the diagonal vs
    full-covariance Gaussian pairs registered in `vaelab.distributions`), else the k-sample average of
    log q(z_i|x) - log p(z_i).
    """

    elbo: Tensor
    log_p_x_given_z: Tensor
    kl: Tensor


@dataclass(frozen=True)
class LayeredELBOTerms(ELBOTerms):
    """The ELBO terms of a hierarchical model (`vaelab.hierarchical`), and kl_layers: (B, L) the
    Monte Carlo KL of each stochastic layer, E_q[log q(z_i | z_{>i}, x) - log p(z_i | z_{>i})] on
    the same samples as kl, which is their sum over layers."""

    kl_layers: Tensor


@dataclass(frozen=True)
class LogPxEstimate:
    """An estimate of log p(x) per example: value, stderr (B,) in nats, from k samples each.

    stderr is the delta-method standard error of the log of the sample mean of the weights (see
    `log_px_importance`); it measures Monte Carlo noise, not the (negative) bias of the log.
    """

    value: Tensor
    stderr: Tensor
    k: int

    @property
    def nll(self) -> Tensor:
        """-log p(x) per example, (B,) in nats."""
        return -self.value


@dataclass(frozen=True)
class DatasetLogPx:
    """Per-example log p(x) estimates for a whole dataset, and the wall time it took.

    value, stderr: (N,) in nats per example; seconds: wall-clock time of the whole pass.
    """

    value: Tensor
    stderr: Tensor
    k: int
    method: str
    seconds: float

    @property
    def mean(self) -> float:
        """Dataset mean of log p(x), nats per example."""
        return float(self.value.mean())

    @property
    def mean_stderr(self) -> float:
        """Monte Carlo standard error of `mean`: sqrt(sum_n se_n^2) / N (estimates are independent).

        This is the estimator's noise only, not the sampling error of the dataset itself.
        """
        return float(self.stderr.square().sum().sqrt() / self.value.numel())


def bits_per_dim(nats_per_example: Tensor | float, num_dims: int) -> Tensor | float:
    """nats / (D ln 2): nats per example to bits per dimension, for D = `num_dims` dimensions.

    Pass an NLL (= -log p(x)) to get the usual positive bits/dim. The NLL must be of the data as
    given for the figure to compare with the literature: add the input transform's correction
    (`Splits.log_det_nats()`, e.g. -D log 256 for a density on dequantized 8-bit data) to the
    model's log-density first, as `vaelab.evaluate` does; this function adds nothing.
    """
    return nats_per_example / (num_dims * math.log(2.0))


def default_chunk_size(
    k: int, batch_size: int, dims: int, element_size: int = 4, budget_bytes: int = MEMORY_BUDGET_BYTES
) -> int:
    """Samples per chunk so a (chunk, B, D) tensor stays within `budget_bytes` (the CPU's
    cache-sized `MEMORY_BUDGET_BYTES` by default; a device's share of its free memory from
    `vaelab.devices.chunk_budget_bytes`), in [1, k]."""
    per_sample = max(1, batch_size * max(1, dims) * element_size)
    return max(1, min(k, budget_bytes // per_sample))


def elbo_terms(
    model: LatentVariableModel,
    x: Tensor,
    k: int = 1,
    *,
    generator: torch.Generator | None = None,
    analytic_kl: bool = True,
) -> ELBOTerms:
    """The k-sample ELBO of Kingma & Welling (2014), eq. 3 (analytic KL) or eq. 2 (full MC), per example.

    elbo(x) = (1/k) sum_i log p(x|z_i) - KL(q(z|x) || p(z)),                      z_i ~ q(z|x),
    with the KL analytic when `analytic_kl` and torch knows the pair, otherwise
    elbo(x) = (1/k) sum_i [log p(x|z_i) + log p(z_i) - log q(z_i|x)].
    A hierarchical model's terms are `LayeredELBOTerms`: the Monte Carlo KL split by layer.

    x: (B, *x_shape) -> ELBOTerms of (B,) tensors in nats. Differentiable (reparameterized samples
    for Gaussian q), so objectives can reuse it; no reduction over the batch.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    q_z_given_x = model.posterior(x)
    p_z = model.prior()
    z = draw(q_z_given_x, (k,), generator)  # (k, B, Z), or (k, B) for a discrete latent
    log_p_x_given_z = model.likelihood(z).log_prob(x)  # (k, B)
    layered = layer_log_ratios(q_z_given_x, p_z, z)  # (k, B, L) for a hierarchical model, else None
    if layered is not None:
        kl_layers = layered.mean(0)  # (B, L)
        recon, kl_total = log_p_x_given_z.mean(0), kl_layers.sum(-1)
        return LayeredELBOTerms(recon - kl_total, recon, kl_total, kl_layers)
    kl = closed_form_kl(q_z_given_x, p_z) if analytic_kl else None
    if kl is None:
        kl = q_z_given_x.log_prob(z) - p_z.log_prob(z)  # (k, B)
        kl = kl.mean(0)
    kl = kl.expand(log_p_x_given_z.shape[1:])
    log_p_x_given_z = log_p_x_given_z.mean(0)
    return ELBOTerms(elbo=log_p_x_given_z - kl, log_p_x_given_z=log_p_x_given_z, kl=kl)


def elbo(
    model: LatentVariableModel,
    x: Tensor,
    k: int = 1,
    *,
    generator: torch.Generator | None = None,
    analytic_kl: bool = True,
) -> Tensor:
    """The k-sample average ELBO per example, (B,) in nats; see `elbo_terms`."""
    return elbo_terms(model, x, k, generator=generator, analytic_kl=analytic_kl).elbo


def iwae_bound(
    model: LatentVariableModel,
    x: Tensor,
    k: int,
    *,
    generator: torch.Generator | None = None,
    chunk_size: int | None = None,
) -> Tensor:
    """The importance-weighted bound L_k = log (1/k) sum_i p(x, z_i) / q(z_i|x), z_i ~ q(z|x).

    Burda, Grosse & Salakhutdinov (2015), eq. 8. E[L_k] <= E[L_{k+1}] <= log p(x), and L_1 is the
    single-sample Monte Carlo ELBO (with the same generator seed it is the same number as
    `elbo(model, x, 1, analytic_kl=False)`). x: (B, *x_shape) -> (B,) in nats. Runs in the caller's
    grad mode; chunks over samples with a running logsumexp (see `log_px_importance`).
    """
    return _importance_pass(model, x, k, generator, chunk_size, proposal=None, naive=False)[0]


def log_px_importance(
    model: LatentVariableModel,
    x: Tensor,
    k: int = 1000,
    *,
    generator: torch.Generator | None = None,
    chunk_size: int | None = None,
    proposal: Proposal | None = None,
) -> LogPxEstimate:
    """Importance-sampled log p(x) with a delta-method standard error, in bounded memory.

    log p(x) ≈ log (1/k) sum_i w_i,  w_i = p(x|z_i) p(z_i) / r(z_i|x),  z_i ~ r(z|x),
    with proposal r = q(z|x) (`model.posterior`) unless `proposal` (x -> distribution) is given
    (Burda et al. 2015, Section 5). The mean of the w_i is unbiased
    for p(x); its log is biased low by about Var(w) / (2 k mean(w)^2).

    Standard error by the delta method: se(log mean w) ≈ sd(w) / (sqrt(k) mean w). The k samples
    are drawn in chunks of `chunk_size` (automatic from `MEMORY_BUDGET_BYTES` when None); per chunk
    the log-mean of w and the relative sum of squares sum_i (w_i / mean w - 1)^2 are computed in log
    space and merged across chunks with Chan et al.'s (1979) pairwise update. Unlike
    mean(w^2) - mean(w)^2 from two running logsumexps, this keeps full relative precision when the
    weights are nearly equal (q close to the exact posterior, where the error must come out ~0).

    x: (B, *x_shape) -> LogPxEstimate with value, stderr (B,) in nats. Runs under no_grad; for
    k = 1 the stderr is NaN (a variance needs two samples).
    """
    with torch.no_grad():
        value, stderr = _importance_pass(model, x, k, generator, chunk_size, proposal, naive=False)
    return LogPxEstimate(value=value, stderr=stderr, k=k)


def log_px_naive(
    model: LatentVariableModel,
    x: Tensor,
    k: int = 1000,
    *,
    generator: torch.Generator | None = None,
    chunk_size: int | None = None,
) -> LogPxEstimate:
    """Naive Monte Carlo log p(x) ≈ log (1/k) sum_i p(x|z_i), z_i ~ p(z), with its standard error.

    Importance sampling with the prior as proposal: unbiased for p(x), but almost every z_i drawn
    from p(z) explains x badly, so the variance of the weights (and the low bias of the log) grows
    exponentially with the amount of information x carries about z. Same chunking and delta-method
    standard error as `log_px_importance`. x: (B, *x_shape) -> (B,) tensors in nats; no_grad.
    """
    with torch.no_grad():
        value, stderr = _importance_pass(model, x, k, generator, chunk_size, proposal=None, naive=True)
    return LogPxEstimate(value=value, stderr=stderr, k=k)


def iter_batches(data: Tensor | Iterable, batch_size: int | None = None) -> Iterator[Tensor]:
    """Yield x batches from a tensor (N, *x_shape) split into `batch_size` rows, or from an iterable.

    An iterable may yield tensors or (x, ...) tuples such as a DataLoader of (x, y); x is taken.
    """
    if isinstance(data, Tensor):
        if batch_size is None or batch_size < 1:
            raise ValueError("batch_size must be a positive integer when data is a tensor")
        yield from data.split(batch_size)
        return
    for batch in data:
        yield batch[0] if isinstance(batch, (tuple, list)) else batch


def iter_labelled_batches(
    data: Tensor | Iterable, batch_size: int | None = None, labels: Tensor | None = None
) -> Iterator[tuple[Tensor, Tensor | None]]:
    """Yield (x, y) batches: x as `iter_batches` does; y (B,) the batch's labels, from `labels` (N,)
    split alongside a tensor, or the second item of each (x, y, ...) batch of an iterable; None
    where there are none."""
    if isinstance(data, Tensor):
        y_batches = labels.split(batch_size) if labels is not None and batch_size else None
        for i, x in enumerate(iter_batches(data, batch_size)):
            yield x, None if y_batches is None else y_batches[i]
        return
    for batch in data:
        if isinstance(batch, (tuple, list)):
            yield batch[0], batch[1] if len(batch) > 1 else None
        else:
            yield batch, None


def dataset_log_px(
    model: LatentVariableModel,
    data: Tensor | Iterable,
    k: int,
    batch_size: int | None = None,
    generator: torch.Generator | None = None,
    *,
    method: str = "importance",
    chunk_size: int | None = None,
    labels: Tensor | None = None,
) -> DatasetLogPx:
    """log p(x) for every example of a dataset, in batches, with standard errors and wall time.

    method: "importance" (`log_px_importance`, proposal q(z|x)) or "naive" (`log_px_naive`).
    data: (N, *x_shape) tensor with `batch_size`, or an iterable of batches. Returns value, stderr
    (N,) in nats per example; the batch mean is left to the caller (`DatasetLogPx.mean`).
    A model that uses labels is scored given each batch's labels (`iter_labelled_batches`:
    `labels` (N,), or (x, y) batches): the estimate is then log p(x|y).
    """
    estimators = {"importance": log_px_importance, "naive": log_px_naive}
    if method not in estimators:
        raise ValueError(f"method must be one of {sorted(estimators)}, got {method!r}")
    estimate = estimators[method]
    values, stderrs = [], []
    start = time.perf_counter()
    for x, y in iter_labelled_batches(data, batch_size, labels):
        result = estimate(given_labels(model, y), x, k, generator=generator, chunk_size=chunk_size)
        values.append(result.value)
        stderrs.append(result.stderr)
    seconds = time.perf_counter() - start
    if not values:
        raise ValueError("dataset_log_px got an empty dataset")
    return DatasetLogPx(
        value=torch.cat(values), stderr=torch.cat(stderrs), k=k, method=method, seconds=seconds
    )


@dataclass(frozen=True)
class ElboDecomposition:
    """The ELBO of a model on a dataset, term by term. Dataset means in nats per example.

    elbo = log_p_x_given_z - kl = log_p_xz + entropy, where log_p_xz = E_q[log p(x, z)] and
    entropy = H(q(z|x)). kl_per_dim: (Z,) mean KL of each latent dimension (diagonal Gaussian q and
    prior only, else None); posterior_mean_variance: (Z,) Cov_x(E_q[z_u]) and active_units the count
    above `active_threshold` (Burda et al. 2015, Section 5). log_px / gap (= log p(x) - elbo, an
    estimate of E_x KL(q(z|x) || p(z|x))) when an importance-sampled log p(x) was requested.
    A hierarchical model's (`vaelab.hierarchical`) kl_layers (L,), the Monte Carlo KL of each
    stochastic layer on the same samples (their sum is kl), and active_units_layers (L,), each
    layer's active units; None for a model of one stochastic layer.
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
    kl_layers: tuple[float, ...] | None = None
    active_units_layers: tuple[int, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable dict (tuples become lists)."""
        out = asdict(self)
        return {key: list(value) if isinstance(value, tuple) else value for key, value in out.items()}


def elbo_decomposition(
    model: LatentVariableModel,
    data: Tensor | Iterable,
    *,
    batch_size: int | None = None,
    k: int = 1,
    k_importance: int = 0,
    generator: torch.Generator | None = None,
    active_threshold: float = ACTIVE_THRESHOLD,
    labels: Tensor | None = None,
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
    A model that uses labels is decomposed given each batch's labels (`iter_labelled_batches`).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    sums = dict.fromkeys(("recon", "kl", "cross", "entropy", "log_px", "log_px_var"), 0.0)
    kl_dims: Tensor | None = None
    layer_sums: Tensor | None = None  # a hierarchical model's per-layer KL sums, (L,)
    posterior_means: list[Tensor] = []
    n = 0
    closed_form = True
    with torch.no_grad():
        p_z = model.prior()
        for x, y in iter_labelled_batches(data, batch_size, labels):
            given = given_labels(model, y)
            q_z_given_x = given.posterior(x)
            z = draw(q_z_given_x, (k,), generator)  # (k, B, Z) or (k, B) for a discrete latent
            recon = given.likelihood(z).log_prob(x).mean(0)  # (B,)
            if is_diagonal_normal(q_z_given_x) and is_diagonal_normal(p_z):
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
                closed_form = False
                layered = layer_log_ratios(q_z_given_x, p_z, z)  # (k, B, L), or None
                if layered is not None:
                    layer_sums = layered.mean(0).sum(0) + (0 if layer_sums is None else layer_sums)  # (L,)
                log_q = q_z_given_x.log_prob(z).mean(0)
                cross = p_z.log_prob(z).mean(0)
                kl, entropy = log_q - cross, -log_q
            if len(q_z_given_x.event_shape) == 1:
                posterior_means.append(q_z_given_x.mean.to(torch.float64))  # (B, Z)
            if k_importance > 0:
                estimate = log_px_importance(given, x, k_importance, generator=generator)
                sums["log_px"] += float(estimate.value.sum())
                sums["log_px_var"] += float(estimate.stderr.square().sum())
            sums["recon"] += float(recon.sum())
            sums["kl"] += float(kl.sum())
            sums["cross"] += float(cross.sum())
            sums["entropy"] += float(entropy.sum())
            n += x.shape[0]
    if n == 0:
        raise ValueError("elbo_decomposition got an empty dataset")
    mean_recon, mean_kl = sums["recon"] / n, sums["kl"] / n
    mean_log_p_xz, mean_entropy = mean_recon + sums["cross"] / n, sums["entropy"] / n
    mean_variance = active = active_layers = None
    if sum(m.shape[0] for m in posterior_means) == n:  # every batch had a vector latent
        variance, active = active_units(torch.cat(posterior_means), active_threshold)  # (Z,), count
        mean_variance = tuple(float(v) for v in variance)
        if layer_sums is not None:
            active_layers = active_units_per_layer(
                torch.cat(posterior_means), len(layer_sums), active_threshold
            )
    log_px = sums["log_px"] / n if k_importance > 0 else None
    return ElboDecomposition(
        num_examples=n,
        num_samples=k,
        elbo=mean_recon - mean_kl,
        log_p_x_given_z=mean_recon,
        kl=mean_kl,
        log_p_xz=mean_log_p_xz,
        entropy=mean_entropy,
        kl_per_dim=tuple(float(v) / n for v in kl_dims) if closed_form and kl_dims is not None else None,
        posterior_mean_variance=mean_variance,
        active_units=active,
        active_threshold=active_threshold,
        log_px=log_px,
        log_px_stderr=math.sqrt(sums["log_px_var"]) / n if k_importance > 0 else None,
        log_px_k=k_importance if k_importance > 0 else None,
        gap=None if log_px is None else log_px - (mean_recon - mean_kl),
        closed_form=closed_form,
        kl_layers=None if layer_sums is None else tuple(float(v) / n for v in layer_sums),
        active_units_layers=active_layers,
    )


def _importance_pass(
    model: LatentVariableModel,
    x: Tensor,
    k: int,
    generator: torch.Generator | None,
    chunk_size: int | None,
    proposal: Proposal | None,
    naive: bool,
) -> tuple[Tensor, Tensor]:
    """log (1/k) sum_i w_i and its delta-method standard error, both (B,), over chunks of samples.

    naive: w = p(x|z), z ~ p(z); otherwise w = p(x|z) p(z) / r(z|x), z ~ r = proposal or q(z|x).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    batch = x.shape[0]
    p_z = model.prior()
    r_z_given_x = None if naive else (proposal or model.posterior)(x)  # None: sample the prior
    if chunk_size is None:
        latent = p_z.event_shape if r_z_given_x is None else r_z_given_x.event_shape
        dims = max(x[0].numel(), math.prod(latent))
        chunk_size = default_chunk_size(k, batch, dims, x.element_size())
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")

    # Running summary of the weights seen so far: n, log of their mean, and the relative sum of
    # squares R = sum_i (w_i / mean - 1)^2.
    n = 0
    log_mean = rel_ss = torch.empty(0)  # (B,) each once the first chunk is in (k >= 1)
    for start in range(0, k, chunk_size):
        m = min(chunk_size, k - start)
        if r_z_given_x is None:
            z = draw(p_z, (m, batch), generator)  # (m, B, Z)
            log_w = model.likelihood(z).log_prob(x)  # (m, B)
        else:
            z = draw(r_z_given_x, (m,), generator)  # (m, B, Z)
            log_w = model.likelihood(z).log_prob(x) + p_z.log_prob(z) - r_z_given_x.log_prob(z)  # (m, B)
        chunk_log_mean = torch.logsumexp(log_w, 0) - math.log(m)  # (B,)
        chunk_rel_ss = _relative_sum_of_squares(log_w, chunk_log_mean)
        if n == 0:
            n, log_mean, rel_ss = m, chunk_log_mean, chunk_rel_ss
            continue
        # Chan, Golub & LeVeque (1979): M2 = M2_a + M2_b + (mean_b - mean_a)^2 n_a n_b / n, divided
        # through by the merged mean^2, with every ratio of means bounded by n / n_a.
        total = n + m
        merged = torch.logaddexp(log_mean + math.log(n / total), chunk_log_mean + math.log(m / total))
        rho_a = _ratio(log_mean, merged)
        rho_b = _ratio(chunk_log_mean, merged)
        rel_ss = rel_ss * rho_a**2 + chunk_rel_ss * rho_b**2 + (rho_b - rho_a) ** 2 * (n * m / total)
        n, log_mean = total, merged
    if k == 1:
        stderr = torch.full_like(log_mean, math.nan)
    else:
        # Var(w) / mean^2 = R / (k - 1); se = sqrt(Var(w) / k) / mean.
        stderr = (rel_ss / ((k - 1) * k)).sqrt()
        stderr = torch.where(torch.isfinite(log_mean), stderr, math.nan)  # all weights zero: no scale
    return log_mean, stderr


def _ratio(log_a: Tensor, log_b: Tensor) -> Tensor:
    """exp(log_a - log_b), defined as 0 where both are -inf (every weight so far was zero)."""
    finite = torch.isfinite(log_b)
    return torch.where(finite, torch.exp(log_a - torch.where(finite, log_b, 0.0)), 0.0)


def _relative_sum_of_squares(log_w: Tensor, log_mean: Tensor) -> Tensor:
    """sum_i (w_i / mean - 1)^2 over dim 0, from log weights (m, B) and their log-mean (B,)."""
    return (_ratio(log_w, log_mean) - 1.0).square().sum(0)
