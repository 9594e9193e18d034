"""Exact models against independent dense computations, and the estimators against the exact models.

Tolerances: 1e-8/1e-10 where both sides are closed forms in float64; otherwise 4 standard errors of
the Monte Carlo estimate under test (a 4-sigma event has probability ~6e-5 per comparison).
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch.distributions import Bernoulli, MultivariateNormal, Normal

from vaelab.distributions import draw
from vaelab.estimators import elbo, iwae_bound, log_px_importance, log_px_naive
from vaelab.models import LatentVariableModel
from vaelab.theory.bayes import posterior_over_hypotheses
from vaelab.theory.exact import (
    EXACT_MODELS,
    MAX_LATENT_BITS,
    BernoulliMixture,
    EstimatorRow,
    LinearGaussian,
    SigmoidBeliefNetwork,
    build_exact_model,
    estimator_table,
    format_table,
)

DTYPE = torch.float64


def gen(seed):
    return torch.Generator().manual_seed(seed)


def linear_gaussian(z_dim=3, x_dim=5, sigma=0.4, seed=0):
    g = gen(seed)
    W = torch.randn(x_dim, z_dim, generator=g, dtype=DTYPE)
    b = torch.randn(x_dim, generator=g, dtype=DTYPE)
    return LinearGaussian(W, b, sigma)


def dense_log_px(model, x):
    cov = model.W @ model.W.T + model.noise_std**2 * torch.eye(model.x_dim, dtype=DTYPE)
    return MultivariateNormal(model.b, covariance_matrix=cov).log_prob(x)


@pytest.fixture
def lg():
    return linear_gaussian()


@pytest.fixture
def lg_x(lg):
    return lg.sample(8, gen(1))


# ------------------------------------------------------------------------------ LinearGaussian


def test_linear_gaussian_log_marginal_matches_dense_mvn(lg, lg_x):
    out = lg.log_marginal(lg_x)
    assert out.shape == (8,) and out.dtype == DTYPE
    torch.testing.assert_close(out, dense_log_px(lg, lg_x), rtol=0, atol=1e-10)


def test_linear_gaussian_log_marginal_matches_quadrature_in_1d():
    model = LinearGaussian(torch.tensor([[1.7]], dtype=DTYPE), torch.tensor([0.3], dtype=DTYPE), 0.6)
    x = torch.tensor([[-2.0], [0.1], [1.5], [4.0]], dtype=DTYPE)
    z = torch.linspace(-12, 12, 48_001, dtype=DTYPE)
    integrand = Normal(1.7 * z + 0.3, 0.6).log_prob(x).exp() * Normal(0.0, 1.0).log_prob(z).exp()  # (4, N)
    quadrature = torch.trapezoid(integrand, z).log()
    torch.testing.assert_close(model.log_marginal(x), quadrature, rtol=0, atol=1e-9)


def test_exact_posterior_is_bayes_rule(lg, lg_x):
    post = lg.exact_posterior(lg_x)
    assert post.batch_shape == (8,) and post.event_shape == (3,)
    # log p(z|x) = log p(x|z) + log p(z) - log p(x) at arbitrary z, and against the dense formulas.
    z = torch.randn(4, 8, 3, generator=gen(2), dtype=DTYPE)
    bayes = lg.likelihood(z).log_prob(lg_x) + lg.prior().log_prob(z) - dense_log_px(lg, lg_x)
    torch.testing.assert_close(post.log_prob(z), bayes, rtol=0, atol=1e-10)
    precision = torch.eye(3, dtype=DTYPE) + lg.W.T @ lg.W / lg.noise_std**2
    cov = torch.linalg.inv(precision)
    torch.testing.assert_close(
        post.covariance_matrix.expand(8, 3, 3), cov.expand(8, 3, 3), rtol=0, atol=1e-12
    )
    torch.testing.assert_close(post.mean, (lg_x - lg.b) @ lg.W @ cov / lg.noise_std**2, rtol=0, atol=1e-12)


def test_posterior_defaults_to_exact_and_with_posterior_replaces_it(lg, lg_x):
    assert isinstance(lg.posterior(lg_x), MultivariateNormal)
    wrong = lg.with_diagonal_posterior(shift=0.5)
    assert wrong.W is lg.W
    q = wrong.posterior(lg_x)
    torch.testing.assert_close(q.mean, lg.exact_posterior(lg_x).mean + 0.5)
    assert isinstance(lg.posterior(lg_x), MultivariateNormal)  # the original is untouched
    assert lg.with_posterior(lambda x: "q").posterior(lg_x) == "q"


def test_likelihood_shapes_and_dtypes(lg, lg_x):
    z = torch.zeros(7, 8, 3, dtype=DTYPE)
    assert lg.likelihood(z).log_prob(lg_x).shape == (7, 8)
    assert lg.sample(5, gen(0)).shape == (5, 5)
    lg32 = LinearGaussian(lg.W.float(), lg.b.float(), 0.4)
    assert lg32.log_marginal(lg_x.float()).dtype == torch.float32
    assert lg.prior().sample().dtype == DTYPE
    with pytest.raises(ValueError, match="noise_std must be positive"):
        LinearGaussian(lg.W, lg.b, 0.0)
    with pytest.raises(ValueError, match="W must be \\(D, Z\\) and b \\(D,\\)"):
        LinearGaussian(lg.W, lg.b[:2], 1.0)


def test_exact_posterior_makes_elbo_exact_and_importance_weights_constant(lg, lg_x):
    exact = lg.log_marginal(lg_x)
    torch.testing.assert_close(
        elbo(lg, lg_x, 10, generator=gen(0), analytic_kl=False), exact, rtol=0, atol=1e-8
    )
    torch.testing.assert_close(lg.elbo_closed_form(lg.exact_posterior(lg_x), lg_x), exact, rtol=0, atol=1e-8)
    torch.testing.assert_close(
        lg.kl_to_exact_posterior(lg.exact_posterior(lg_x), lg_x), torch.zeros(8, dtype=DTYPE)
    )
    estimate = log_px_importance(lg, lg_x, 1000, generator=gen(0))
    torch.testing.assert_close(estimate.value, exact, rtol=0, atol=1e-8)
    assert torch.all(estimate.stderr < 1e-8)
    # Analytic KL (full-covariance q vs diagonal prior, registered by vaelab.theory): unbiased, noisy.
    k = 4000
    z = draw(lg.exact_posterior(lg_x), (k,), gen(1))
    se = lg.likelihood(z).log_prob(lg_x).std(0) / math.sqrt(k)
    analytic = elbo(lg, lg_x, k, generator=gen(1))
    assert torch.all((analytic - exact).abs() < 4 * se)


def test_gap_is_kl_to_exact_posterior_in_closed_form(lg, lg_x):
    exact = lg.log_marginal(lg_x)
    for shift, scale in ((0.3, 1.0), (0.0, 0.5), (-0.7, 2.0)):
        q = lg.diagonal_posterior(lg_x, shift, scale)
        gap = exact - lg.elbo_closed_form(q, lg_x)
        kl = lg.kl_to_exact_posterior(q, lg_x)
        torch.testing.assert_close(gap, kl, rtol=0, atol=1e-8)
        assert torch.all(kl > 0)


def test_gap_is_kl_to_exact_posterior_in_monte_carlo(lg, lg_x):
    model = lg.with_diagonal_posterior(shift=0.3, scale=1.5)
    k = 4000
    # elbo(analytic_kl=False) averages log p(x,z_i) - log q(z_i|x) over these same z_i (same seed).
    q = model.posterior(lg_x)
    z = draw(q, (k,), gen(3))
    terms = lg.likelihood(z).log_prob(lg_x) + lg.prior().log_prob(z) - q.log_prob(z)  # (k, B)
    estimate = elbo(model, lg_x, k, generator=gen(3), analytic_kl=False)
    torch.testing.assert_close(estimate, terms.mean(0), rtol=0, atol=1e-10)
    gap = lg.log_marginal(lg_x) - estimate
    se = terms.std(0) / math.sqrt(k)
    kl = lg.kl_to_exact_posterior(q, lg_x)
    assert torch.all((gap - kl).abs() < 4 * se), (gap - kl) / se


def test_importance_k10000_within_four_standard_errors_of_exact(lg, lg_x):
    model = lg.with_diagonal_posterior(shift=0.3, scale=1.5)
    estimate = log_px_importance(model, lg_x, 10_000, generator=gen(4))
    z = (estimate.value - lg.log_marginal(lg_x)) / estimate.stderr
    assert torch.all(estimate.stderr > 1e-4)  # a real, noisy estimate
    assert torch.all(z.abs() < 4), z


def test_iwae_rises_with_k_and_stays_below_exact(lg, lg_x):
    model = lg.with_diagonal_posterior(shift=0.3, scale=1.5)
    replicates = 100
    x_rep = lg_x.repeat(replicates, 1)
    exact = lg.log_marginal(lg_x).mean()
    means, ses = [], []
    for k in (1, 10, 100):
        runs = iwae_bound(model, x_rep, k, generator=gen(k)).reshape(replicates, -1).mean(1)
        means.append(runs.mean())
        ses.append(runs.std() / math.sqrt(replicates))
    for i in range(2):
        assert means[i + 1] - means[i] > 4 * math.hypot(ses[i], ses[i + 1])
    assert means[2] < exact + 4 * ses[2]


# ---------------------------------------------------------------------------- BernoulliMixture


def bernoulli_mixture(num_components=20, x_dim=20, seed=0):
    g = gen(seed)
    weights = torch.softmax(torch.randn(num_components, generator=g, dtype=DTYPE), 0)
    logits = 2.0 * torch.randn(num_components, x_dim, generator=g, dtype=DTYPE)
    return BernoulliMixture(weights, logits)


def test_bernoulli_mixture_log_marginal_by_brute_force():
    model = bernoulli_mixture(5, 7)
    x = model.sample(6, gen(1))
    brute = torch.zeros(6, dtype=DTYPE)
    for k in range(5):
        lik = Bernoulli(logits=model.logits[k]).log_prob(x).sum(-1).exp()  # (B,)
        brute += model.weights[k] * lik
    torch.testing.assert_close(model.log_marginal(x), brute.log(), rtol=0, atol=1e-12)


def test_bernoulli_mixture_posterior_is_bayes_rule():
    model = bernoulli_mixture(5, 7)
    x = model.sample(6, gen(1))
    lik = torch.stack([Bernoulli(logits=model.logits[k]).log_prob(x).sum(-1).exp() for k in range(5)], -1)
    bayes = posterior_over_hypotheses(model.weights, lik)
    post = model.exact_posterior(x)
    assert post.batch_shape == (6,) and post.event_shape == ()
    torch.testing.assert_close(post.probs, bayes.posterior, rtol=0, atol=1e-12)
    torch.testing.assert_close(model.log_marginal(x), bayes.evidence.log(), rtol=0, atol=1e-12)


def test_bernoulli_mixture_estimators_with_integer_latents():
    model = bernoulli_mixture()
    x = model.sample(8, gen(1))
    exact = model.log_marginal(x)
    # The exact responsibilities as proposal: every weight equals p(x).
    perfect = log_px_importance(model, x, 500, generator=gen(0))
    torch.testing.assert_close(perfect.value, exact, rtol=0, atol=1e-10)
    assert torch.all(perfect.stderr < 1e-8)
    torch.testing.assert_close(
        elbo(model, x, 3, generator=gen(0), analytic_kl=False), exact, rtol=0, atol=1e-10
    )
    # A tempered (flatter) proposal: a real estimate, within 4 se; naive MC too, but much noisier.
    tempered = model.with_posterior(lambda x: model.tempered_posterior(x, 1.5))
    k = 2000
    importance = log_px_importance(tempered, x, k, generator=gen(1))
    naive = log_px_naive(tempered, x, k, generator=gen(2))
    assert torch.all(importance.stderr > 0)
    assert torch.all(((importance.value - exact) / importance.stderr).abs() < 4)
    assert torch.all(((naive.value - exact) / naive.stderr).abs() < 4)
    ratio = naive.stderr.square().sum() / importance.stderr.square().sum()
    assert ratio > 10, ratio


def test_bernoulli_mixture_analytic_kl_elbo_is_a_bound():
    model = bernoulli_mixture()
    tempered = model.with_posterior(lambda x: model.tempered_posterior(x, 1.5))
    x = model.sample(8, gen(1))
    k = 2000
    analytic = elbo(tempered, x, k, generator=gen(5))  # Categorical-Categorical KL in closed form
    mc = elbo(tempered, x, k, generator=gen(6), analytic_kl=False)
    q = tempered.posterior(x)
    z = draw(q, (k,), gen(7))
    log_p_x_given_z = model.likelihood(z).log_prob(x)  # (k, B)
    terms = log_p_x_given_z + model.prior().log_prob(z) - q.log_prob(z)
    # The two forms average different per-sample terms; the difference of two independent means:
    se_analytic, se_mc = log_p_x_given_z.std(0) / math.sqrt(k), terms.std(0) / math.sqrt(k)
    assert torch.all((analytic - mc).abs() < 4 * torch.hypot(se_analytic, se_mc))
    assert torch.all(mc < model.log_marginal(x) + 4 * se_mc)


# ------------------------------------------------------------------------ SigmoidBeliefNetwork


def sigmoid_belief_network(d=8, x_dim=40, weight_scale=1.0, seed=0):
    g = gen(seed)
    prior_probs = torch.sigmoid(torch.randn(d, generator=g, dtype=DTYPE))
    W = weight_scale * torch.randn(x_dim, d, generator=g, dtype=DTYPE)
    b = torch.randn(x_dim, generator=g, dtype=DTYPE)
    return SigmoidBeliefNetwork(prior_probs, W, b)


def test_sigmoid_belief_network_log_marginal_by_explicit_sum():
    model = sigmoid_belief_network(d=4, x_dim=6, weight_scale=2.0)
    x = model.sample(5, gen(1))
    total = torch.zeros(5, dtype=DTYPE)
    marginal_1 = torch.zeros(5, 4, dtype=DTYPE)
    for bits in itertools.product((0.0, 1.0), repeat=4):
        z = torch.tensor(bits, dtype=DTYPE)
        prior = (z * model.prior_probs.log() + (1 - z) * (1 - model.prior_probs).log()).sum()
        logits = model.W @ z + model.b
        lik = Bernoulli(logits=logits).log_prob(x).sum(-1)
        joint = (prior + lik).exp()
        total += joint
        marginal_1 += joint.unsqueeze(-1) * z
    torch.testing.assert_close(model.log_marginal(x), total.log(), rtol=0, atol=1e-12)
    torch.testing.assert_close(
        model.posterior_marginals(x), marginal_1 / total.unsqueeze(-1), rtol=0, atol=1e-12
    )


def test_sigmoid_belief_network_codes_and_limits():
    model = sigmoid_belief_network(d=5, x_dim=3)
    assert model.codes.shape == (32, 5)
    assert torch.unique(model.codes, dim=0).shape[0] == 32
    assert model.to_mixture().num_components == 32
    torch.testing.assert_close(model.to_mixture().weights.sum(), torch.tensor(1.0, dtype=DTYPE))
    with pytest.raises(ValueError, match=f"at most {MAX_LATENT_BITS}"):
        sigmoid_belief_network(d=MAX_LATENT_BITS + 1, x_dim=2)
    q = model.posterior(model.sample(4, gen(0)))
    assert q.batch_shape == (4,) and q.event_shape == (5,)


def test_sigmoid_belief_network_importance_vs_naive():
    model = sigmoid_belief_network()
    x = model.sample(8, gen(100))
    exact = model.log_marginal(x)
    k = 5000
    importance = log_px_importance(model, x, k, generator=gen(1))  # mean-field q: not exact
    naive = log_px_naive(model, x, k, generator=gen(2))
    assert torch.all(importance.stderr > 0)
    assert torch.all(((importance.value - exact) / importance.stderr).abs() < 4)
    assert torch.all(((naive.value - exact) / naive.stderr).abs() < 4)
    ratio = naive.stderr.square().sum() / importance.stderr.square().sum()
    assert ratio > 10, ratio
    # Through the enumerated (mixture) view the exact posterior is available: zero variance.
    perfect = log_px_importance(model.to_mixture(), x, 200, generator=gen(3))
    torch.testing.assert_close(perfect.value, exact, rtol=0, atol=1e-10)


# ---------------------------------------------------------------------------------------- table


@pytest.mark.parametrize("name", sorted(EXACT_MODELS))
def test_estimator_table(name):
    model = build_exact_model(name, seed=0)
    x = model.sample(4, gen(1))
    rows = estimator_table(model, x, (1, 10, 100), generator=gen(2), replicates=4)
    assert all(isinstance(row, EstimatorRow) for row in rows)
    assert [row.estimator for row in rows[:5]] == ["exact", "ELBO", "IWAE", "IS", "naive MC"]
    assert len(rows) == 1 + 3 * 4
    exact = float(model.log_marginal(x).mean())
    assert rows[0].value == pytest.approx(exact) and rows[0].k is None
    assert all(row.exact == pytest.approx(exact) and row.seconds >= 0 for row in rows)
    iwae = {row.k: row for row in rows if row.estimator == "IWAE"}
    assert iwae[100].value < exact + 4 * iwae[100].stderr
    text = format_table(rows)
    assert "naive MC" in text and "IWAE" in text and "nats" in text
    assert len(text.splitlines()) == len(rows) + 3
    with pytest.raises(KeyError, match="unknown exact model 'nope'"):
        build_exact_model("nope")


@pytest.mark.parametrize("name", sorted(EXACT_MODELS))
def test_exact_models_speak_the_model_protocol(name):
    model = build_exact_model(name, seed=0)
    assert isinstance(model, LatentVariableModel) and not model.deterministic
    x = model.sample(3, gen(0))
    assert x.shape == (3, *model.x_shape)
    z = draw(model.prior(), (2,), gen(1))
    assert z.shape == (2,) + ((model.latent_dim,) if name != "bernoulli-mixture" else ())
