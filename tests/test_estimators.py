"""Estimators of log p(x) against a conjugate model whose log p(x) and posterior are known densely.

The model here is written out independently of `vaelab.exact` (dense covariance algebra), so these
tests check the estimators alone. Tolerances are multiples of the estimators' own standard errors.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Categorical, MixtureSameFamily, MultivariateNormal, Normal

from vaelab.distributions import diagonal_normal, draw, gaussian, standard_normal
from vaelab.estimators import (
    MEMORY_BUDGET_BYTES,
    DatasetLogPx,
    ELBOTerms,
    LogPxEstimate,
    bits_per_dim,
    dataset_log_px,
    default_chunk_size,
    elbo,
    elbo_terms,
    iter_batches,
    iwae_bound,
    log_px_importance,
    log_px_naive,
)

DTYPE = torch.float64


class DenseLinearGaussian:
    """z ~ N(0, I_Z), x | z ~ N(W z + b, sigma^2 I_D), with q(z|x) given by `q` or the exact posterior."""

    def __init__(self, z_dim=2, x_dim=3, sigma=0.5, seed=0, q=None):
        g = torch.Generator().manual_seed(seed)
        self.W = torch.randn(x_dim, z_dim, generator=g, dtype=DTYPE)
        self.b = torch.randn(x_dim, generator=g, dtype=DTYPE)
        self.sigma = sigma
        self.q = q

    def prior(self):
        return standard_normal(self.W.shape[1], dtype=DTYPE)

    def likelihood(self, z):
        return gaussian(z @ self.W.T + self.b, torch.tensor(self.sigma, dtype=DTYPE), 1)

    def exact_posterior(self, x):
        eye = torch.eye(self.W.shape[1], dtype=DTYPE)
        cov = torch.linalg.inv(eye + self.W.T @ self.W / self.sigma**2)
        mean = (x - self.b) @ self.W @ cov / self.sigma**2  # cov is symmetric
        return MultivariateNormal(mean, covariance_matrix=cov)

    def posterior(self, x):
        return self.exact_posterior(x) if self.q is None else self.q(self, x)

    def log_px(self, x):
        cov = self.W @ self.W.T + self.sigma**2 * torch.eye(self.W.shape[0], dtype=DTYPE)
        return MultivariateNormal(self.b, covariance_matrix=cov).log_prob(x)

    def sample_x(self, n, seed):
        g = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.W.shape[1], generator=g, dtype=DTYPE)
        return z @ self.W.T + self.b + self.sigma * torch.randn(n, self.W.shape[0], generator=g, dtype=DTYPE)


def wrong_diagonal_q(model, x, shift=0.3, scale=2.0):
    """The exact posterior's marginals, means shifted by `shift`, standard deviations times `scale`."""
    exact = model.exact_posterior(x)
    var = exact.covariance_matrix.diagonal(dim1=-2, dim2=-1)
    return diagonal_normal(exact.mean + shift, torch.log(scale**2 * var))


def gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def exact_model():
    return DenseLinearGaussian()


@pytest.fixture
def wrong_model():
    return DenseLinearGaussian(q=wrong_diagonal_q)


@pytest.fixture
def x(exact_model):
    return exact_model.sample_x(6, seed=1)


def test_shapes_and_types(wrong_model, x):
    terms = elbo_terms(wrong_model, x, 3, generator=gen(0))
    assert isinstance(terms, ELBOTerms)
    assert terms.elbo.shape == terms.kl.shape == terms.log_p_x_given_z.shape == (6,)
    assert elbo(wrong_model, x, 3, generator=gen(0)).shape == (6,)
    assert iwae_bound(wrong_model, x, 5, generator=gen(0)).shape == (6,)
    for estimate in (log_px_importance(wrong_model, x, 5, generator=gen(0)), log_px_naive(wrong_model, x, 5)):
        assert isinstance(estimate, LogPxEstimate)
        assert estimate.value.shape == estimate.stderr.shape == (6,)
        assert estimate.value.dtype == DTYPE
        assert estimate.k == 5
        torch.testing.assert_close(estimate.nll, -estimate.value)


def test_elbo_terms_add_up(wrong_model, x):
    for analytic in (True, False):
        terms = elbo_terms(wrong_model, x, 4, generator=gen(0), analytic_kl=analytic)
        torch.testing.assert_close(terms.elbo, terms.log_p_x_given_z - terms.kl, rtol=0, atol=1e-12)


def test_analytic_kl_matches_closed_form(wrong_model, x):
    # Both diagonal Gaussians: the analytic branch must give the closed-form KL exactly.
    q = wrong_model.posterior(x)
    expected = 0.5 * (q.mean.square() + q.variance - q.variance.log() - 1.0).sum(-1)
    terms = elbo_terms(wrong_model, x, 1, generator=gen(0))
    torch.testing.assert_close(terms.kl, expected, rtol=0, atol=1e-12)


def test_elbo_is_differentiable():
    W = torch.randn(3, 2, dtype=DTYPE, requires_grad=True)
    model = DenseLinearGaussian(q=wrong_diagonal_q)
    model.W = W
    x = torch.randn(4, 3, dtype=DTYPE)
    elbo(model, x, 2, generator=gen(0)).sum().backward()
    assert W.grad is not None and torch.isfinite(W.grad).all() and W.grad.abs().sum() > 0


def test_elbo_with_exact_posterior_is_log_px(exact_model, x):
    exact = exact_model.log_px(x)
    # Full Monte Carlo form: every sample's log p(x,z) - log q(z|x) equals log p(x).
    mc = elbo(exact_model, x, 5, generator=gen(0), analytic_kl=False)
    torch.testing.assert_close(mc, exact, rtol=0, atol=1e-10)


def test_elbo_analytic_form_within_standard_error(wrong_model, x):
    # True ELBO = log p(x) - KL(q || p(z|x)); the k-sample estimate must be within 4 standard errors.
    k = 2000
    q = wrong_model.posterior(x)
    post = wrong_model.exact_posterior(x)
    z = draw(q, (k,), gen(3))  # (k, B, Z)
    log_ratio = q.log_prob(z) - post.log_prob(z)  # (k, B)
    # KL(q || p(z|x)) in closed form for Gaussians; checked against its own MC estimate below.
    cov_q = torch.diag_embed(q.variance)
    cov_p = post.covariance_matrix.expand_as(cov_q)
    kl_closed = 0.5 * (
        torch.linalg.solve(cov_p, cov_q).diagonal(dim1=-2, dim2=-1).sum(-1)
        + (
            (post.mean - q.mean).unsqueeze(-1).mT
            @ torch.linalg.solve(cov_p, (post.mean - q.mean).unsqueeze(-1))
        )
        .squeeze(-1)
        .squeeze(-1)
        - 2
        + torch.logdet(cov_p)
        - torch.logdet(cov_q)
    )
    kl_se = log_ratio.std(0) / math.sqrt(k)
    assert torch.all((log_ratio.mean(0) - kl_closed).abs() < 4 * kl_se)  # the closed form itself
    true_elbo = wrong_model.log_px(x) - kl_closed
    estimate = elbo(wrong_model, x, k, generator=gen(4))
    per_sample = wrong_model.likelihood(draw(q, (k,), gen(5))).log_prob(x)  # (k, B)
    se = per_sample.std(0) / math.sqrt(k)
    assert torch.all((estimate - true_elbo).abs() < 4 * se), (estimate - true_elbo) / se
    assert torch.all(estimate < wrong_model.log_px(x))


def test_kl_falls_back_to_monte_carlo_without_closed_form(x):
    # A mixture prior has no registered KL: the analytic request must fall back to the MC form.
    class MixturePrior(DenseLinearGaussian):
        def prior(self):
            mix = Categorical(probs=torch.tensor([0.3, 0.7], dtype=DTYPE))
            comp = torch.distributions.Independent(
                Normal(torch.tensor([[-1.0, 0.0], [1.0, 0.5]], dtype=DTYPE), torch.ones(2, 2, dtype=DTYPE)), 1
            )
            return MixtureSameFamily(mix, comp)

    model = MixturePrior(q=wrong_diagonal_q)
    a = elbo(model, x, 3, generator=gen(7), analytic_kl=True)
    b = elbo(model, x, 3, generator=gen(7), analytic_kl=False)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_iwae_k1_equals_monte_carlo_elbo(wrong_model, x):
    for seed in range(3):
        iw = iwae_bound(wrong_model, x, 1, generator=gen(seed))
        mc = elbo(wrong_model, x, 1, generator=gen(seed), analytic_kl=False)
        torch.testing.assert_close(iw, mc, rtol=0, atol=1e-12)


def test_iwae_rises_with_k_and_stays_below_log_px(wrong_model, x):
    exact = wrong_model.log_px(x).mean()
    replicates = 200
    x_rep = x.repeat(replicates, 1)  # (R * B, D): independent draws per replicate
    means, ses = {}, {}
    for k in (1, 10, 100):
        runs = iwae_bound(wrong_model, x_rep, k, generator=gen(k)).reshape(replicates, -1).mean(1)  # (R,)
        means[k], ses[k] = runs.mean(), runs.std() / math.sqrt(replicates)
    for small, large in ((1, 10), (10, 100)):
        # Independent runs: the difference of means has se sqrt(se_a^2 + se_b^2).
        gap = means[large] - means[small]
        assert gap > 4 * torch.hypot(ses[small], ses[large]), (small, large, gap)
    assert means[100] < exact + 4 * ses[100]


def test_importance_with_exact_posterior_has_zero_variance(exact_model, x):
    estimate = log_px_importance(exact_model, x, 500, generator=gen(0), chunk_size=64)
    torch.testing.assert_close(estimate.value, exact_model.log_px(x), rtol=0, atol=1e-10)
    assert torch.all(estimate.stderr < 1e-8)


def test_importance_k10000_within_four_standard_errors(wrong_model, x):
    exact = wrong_model.log_px(x)
    estimate = log_px_importance(wrong_model, x, 10_000, generator=gen(11))
    assert torch.all(estimate.stderr > 0)
    z_scores = (estimate.value - exact) / estimate.stderr
    assert torch.all(z_scores.abs() < 4), z_scores


class RecordingModel(DenseLinearGaussian):
    """Keeps every z the likelihood sees, so a test can recompute the weights by hand."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.seen = []

    def likelihood(self, z):
        self.seen.append(z)
        return super().likelihood(z)


@pytest.mark.parametrize("chunk_size", [1, 7, 50, None])
def test_chunked_estimate_and_stderr_match_direct_formula(x, chunk_size):
    k = 50
    model = RecordingModel(q=wrong_diagonal_q)
    estimate = log_px_importance(model, x, k, generator=gen(2), chunk_size=chunk_size)
    z = torch.cat(model.seen)  # (k, B, Z)
    assert z.shape[:2] == (k, x.shape[0])
    q = model.posterior(x)
    log_w = model.likelihood(z).log_prob(x) + model.prior().log_prob(z) - q.log_prob(z)
    w = log_w.exp()  # safe here: moderate magnitudes
    torch.testing.assert_close(estimate.value, w.mean(0).log(), rtol=0, atol=1e-12)
    delta_se = w.std(0) / (math.sqrt(k) * w.mean(0))
    torch.testing.assert_close(estimate.stderr, delta_se, rtol=1e-9, atol=0)


def test_naive_chunked_matches_direct_formula(x):
    k = 40
    model = RecordingModel()
    estimate = log_px_naive(model, x, k, generator=gen(2), chunk_size=9)
    z = torch.cat(model.seen)  # (k, B, Z): prior samples, one set per example
    w = model.likelihood(z).log_prob(x).exp()
    torch.testing.assert_close(estimate.value, w.mean(0).log(), rtol=0, atol=1e-12)
    torch.testing.assert_close(estimate.stderr, w.std(0) / (math.sqrt(k) * w.mean(0)), rtol=1e-9, atol=0)


def test_stderr_is_nan_for_a_single_sample(wrong_model, x):
    assert torch.isnan(log_px_importance(wrong_model, x, 1, generator=gen(0)).stderr).all()


def test_naive_variance_exceeds_importance(x):
    # A sharp likelihood (sigma = 0.2) makes prior samples poor explanations of x; q is a decent
    # (diagonal, 20% too wide) proposal. Equal k and the same x for both estimators.
    model = DenseLinearGaussian(sigma=0.2, q=lambda m, x: wrong_diagonal_q(m, x, shift=0.0, scale=1.2))
    x = model.sample_x(6, seed=5)
    k = 2000
    naive = log_px_naive(model, x, k, generator=gen(0))
    importance = log_px_importance(model, x, k, generator=gen(0))
    ratio = naive.stderr.square() / importance.stderr.square()
    assert torch.all(ratio > 10), ratio
    exact = model.log_px(x)
    assert torch.all((importance.value - exact).abs() < 4 * importance.stderr)


def test_estimates_are_reproducible_with_a_generator(wrong_model, x):
    a = log_px_importance(wrong_model, x, 100, generator=gen(9))
    b = log_px_importance(wrong_model, x, 100, generator=gen(9))
    assert torch.equal(a.value, b.value) and torch.equal(a.stderr, b.stderr)


def test_dataset_log_px_batches_and_times(wrong_model):
    x_all = wrong_model.sample_x(23, seed=4)
    result = dataset_log_px(wrong_model, x_all, 200, 5, gen(0))
    assert isinstance(result, DatasetLogPx)
    assert result.value.shape == result.stderr.shape == (23,)
    assert result.seconds > 0 and result.k == 200 and result.method == "importance"
    exact = wrong_model.log_px(x_all)
    assert abs(result.mean - float(exact.mean())) < 4 * result.mean_stderr
    naive = dataset_log_px(
        wrong_model, [(x_all[:10], None), (x_all[10:], None)], 50, None, gen(0), method="naive"
    )
    assert naive.value.shape == (23,) and naive.method == "naive"
    with pytest.raises(ValueError, match="method must be one of \\['importance', 'naive'\\], got 'magic'"):
        dataset_log_px(wrong_model, x_all, 10, 5, gen(0), method="magic")


def test_iter_batches():
    data = torch.arange(10.0).reshape(5, 2)
    assert [b.shape[0] for b in iter_batches(data, 2)] == [2, 2, 1]
    assert [b.shape[0] for b in iter_batches([(data, 0), data[:1]])] == [5, 1]
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        list(iter_batches(data))


def test_bits_per_dim():
    assert bits_per_dim(784 * math.log(2.0), 784) == pytest.approx(1.0)
    torch.testing.assert_close(bits_per_dim(torch.tensor([2 * math.log(2.0) * 3]), 3), torch.tensor([2.0]))


def test_default_chunk_size_respects_budget():
    # The largest chunk whose (chunk, B, D) float32 tensor fits the budget, and not one sample less.
    chunk = default_chunk_size(5000, 100, 784, 4)
    assert chunk * 100 * 784 * 4 <= MEMORY_BUDGET_BYTES < (chunk + 1) * 100 * 784 * 4
    assert default_chunk_size(5000, 10_000, 784, 4) == 1  # one sample is over budget: still 1
    assert default_chunk_size(10, 2, 3) == 10
    assert default_chunk_size(10, 10**9, 10**6) == 1


def test_invalid_k(wrong_model, x):
    with pytest.raises(ValueError, match="k must be >= 1, got 0"):
        iwae_bound(wrong_model, x, 0)
    with pytest.raises(ValueError, match="k must be >= 1, got 0"):
        elbo(wrong_model, x, 0)
