"""The model's distributions against torch.distributions and closed forms, in float64."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
from torch.distributions import (
    Bernoulli,
    Categorical,
    Independent,
    MixtureSameFamily,
    MultivariateNormal,
    Normal,
    kl_divergence,
)

from vaelab import distributions as D
from vaelab.distributions import kl_diagonal_normal, kl_gaussian, kl_standard_normal
from vaelab.theory.kl import kl_monte_carlo

DTYPE = torch.float64


@pytest.fixture(autouse=True)
def _float64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def test_analytic_kl_matches_torch_and_monte_carlo():
    g = torch.Generator().manual_seed(0)
    loc = torch.randn(5, 3, generator=g)
    log_var = torch.randn(5, 3, generator=g)
    q = D.diagonal_normal(loc, log_var)
    p = D.standard_normal(3, dtype=torch.float64)
    closed = D.kl_standard_normal(loc, log_var)
    torch.testing.assert_close(closed, kl_divergence(q, p), rtol=1e-12, atol=1e-12)
    n = 200_000
    z = D.draw(q, (n,), g)  # (n, 5, 3)
    log_ratio = q.log_prob(z) - p.log_prob(z)  # (n, 5)
    mc, se = log_ratio.mean(0), log_ratio.std(0) / math.sqrt(n)
    assert torch.all((mc - closed).abs() < 4 * se), (mc, closed, se)


def test_analytic_kl_closed_forms_and_the_pairs_without_one():
    g = torch.Generator().manual_seed(3)
    q = D.diagonal_normal(torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g))
    p = Independent(Normal(torch.randn(3, generator=g), torch.rand(3, generator=g) + 0.5), 1)  # batch ()
    # the diagonal pair, computed directly and broadcast over q's batch, is torch's registered formula
    torch.testing.assert_close(D.analytic_kl(q, p), kl_divergence(q, p.expand((5,))), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        D.analytic_kl(q, D.standard_normal(3, dtype=torch.float64)),
        D.kl_standard_normal(q.base_dist.loc, 2 * q.base_dist.scale.log()),
        rtol=1e-12,
        atol=1e-12,
    )
    # other pairs go to torch's registry, with the prior expanded to q's batch shape
    probs = torch.rand(5, 4, generator=g)
    q_bits, p_bits = (
        Independent(Bernoulli(probs=probs), 1),
        Independent(Bernoulli(probs=torch.full((4,), 0.3)), 1),
    )
    by_hand = (probs * (probs / 0.3).log() + (1 - probs) * ((1 - probs) / 0.7).log()).sum(-1)
    torch.testing.assert_close(D.analytic_kl(q_bits, p_bits), by_hand)
    mixture = D.DiagonalGaussianMixture(torch.zeros(2), torch.randn(2, 3, generator=g), torch.ones(2, 3))
    assert D.analytic_kl(q, mixture) is None  # no closed form against a mixture
    assert D.analytic_kl(Categorical(probs=torch.full((5, 3), 1 / 3)), q) is None  # nor for a mismatched pair


def test_kl_is_zero_for_the_prior_itself_and_positive_otherwise():
    zeros = torch.zeros(4, 2)
    assert torch.all(D.kl_standard_normal(zeros, zeros) == 0)
    assert torch.all(D.kl_standard_normal(zeros + 0.1, zeros) > 0)


def test_bernoulli_log_likelihood_is_minus_bce_and_matches_torch():
    g = torch.Generator().manual_seed(1)
    logits = 3 * torch.randn(4, 1, 2, 2, generator=g)
    x = torch.bernoulli(torch.full((4, 1, 2, 2), 0.4), generator=g)
    p = D.bernoulli(logits, 3)
    reference = Independent(Bernoulli(logits=logits), 3).log_prob(x)
    by_hand = (x * logits - torch.nn.functional.softplus(logits)).sum((1, 2, 3))
    torch.testing.assert_close(p.log_prob(x), reference)
    torch.testing.assert_close(p.log_prob(x), by_hand)
    torch.testing.assert_close(p.mean, torch.sigmoid(logits))


def test_gaussian_log_likelihood_matches_the_closed_form():
    g = torch.Generator().manual_seed(2)
    mean, x = torch.randn(3, 5, generator=g), torch.randn(3, 5, generator=g)
    sigma = 0.3
    p = D.gaussian(mean, torch.tensor(sigma), 1)
    by_hand = (-0.5 * ((x - mean) / sigma) ** 2 - math.log(sigma) - 0.5 * math.log(2 * math.pi)).sum(-1)
    torch.testing.assert_close(p.log_prob(x), by_hand)
    torch.testing.assert_close(p.log_prob(x), Independent(Normal(mean, sigma), 1).log_prob(x))


def test_likelihood_broadcasts_k_samples_against_a_batch():
    logits = torch.randn(7, 4, 6)  # (K, B, D)
    x = torch.bernoulli(torch.full((4, 6), 0.5))
    assert D.bernoulli(logits, 1).log_prob(x).shape == (7, 4)


def test_draw_is_reparameterized_and_reproducible():
    loc = torch.zeros(3, 2, requires_grad=True)
    q = D.diagonal_normal(loc, torch.zeros(3, 2))
    a = D.draw(q, (4,), torch.Generator().manual_seed(5))
    b = D.draw(q, (4,), torch.Generator().manual_seed(5))
    assert a.shape == (4, 3, 2)
    torch.testing.assert_close(a, b)
    a.sum().backward()
    torch.testing.assert_close(loc.grad, torch.full((3, 2), 4.0))


def test_draw_discrete_families_follow_their_probabilities():
    g = torch.Generator().manual_seed(3)
    probs = torch.tensor([0.1, 0.6, 0.3])
    z = D.draw(Categorical(probs=probs), (60_000,), g)
    freq = torch.bincount(z, minlength=3) / 60_000
    assert torch.all((freq - probs).abs() < 4 * torch.sqrt(probs * (1 - probs) / 60_000))


def test_point_mass_samples_its_location():
    loc = torch.randn(2, 3)
    p = D.PointMass(loc)
    assert p.batch_shape == (2,) and p.event_shape == (3,)
    torch.testing.assert_close(D.draw(p, (5,), torch.Generator()), loc.expand(5, 2, 3))
    assert torch.all(p.log_prob(loc) == 0) and torch.all(p.log_prob(loc + 1) == -math.inf)


# ------------------------------------------------------------------ DiagonalGaussianMixture


def _mixture_parameters(num_components=7, latent_dim=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(num_components, generator=g, dtype=torch.float64)
    loc = 3 * torch.randn(num_components, latent_dim, generator=g, dtype=torch.float64)
    # scales from 0.005 to 20: the float32 expansion would lose whole hundredths of a nat here
    log_scale = torch.empty(num_components, latent_dim, dtype=torch.float64).uniform_(-5.3, 3.0, generator=g)
    scale = torch.exp(log_scale)
    return logits, loc, scale


def _elementwise(logits, loc, scale):
    components = Independent(Normal(loc, scale), 1)
    return MixtureSameFamily(Categorical(logits=logits), components)


def test_mixture_log_prob_matches_the_elementwise_mixture_in_float64():
    logits, loc, scale = _mixture_parameters()
    fast, slow = D.DiagonalGaussianMixture(logits, loc, scale), _elementwise(logits, loc, scale)
    z = torch.cat([loc + 0.5 * scale, 4 * torch.randn(3, 4, 5, dtype=torch.float64).reshape(-1, 5)])
    z = z.reshape(-1, 1, 5).expand(-1, 2, 5)  # extra sample dims: (N, 2, Z) -> (N, 2)
    torch.testing.assert_close(fast.log_prob(z), slow.log_prob(z), rtol=0, atol=1e-9)
    assert fast.log_prob(z).shape == z.shape[:-1]


def test_mixture_log_prob_in_float32_is_accurate_near_narrow_components():
    logits, loc, scale = _mixture_parameters(seed=1)
    z = loc + 0.3 * scale  # each point sits in a component; these are the cancelling terms
    exact = _elementwise(logits, loc, scale).log_prob(z)
    fast32 = D.DiagonalGaussianMixture(logits.float(), loc.float(), scale.float()).log_prob(z.float())
    assert fast32.dtype == torch.float32
    # float32 rounding of the parameters alone moves the density by ~1e-5 relative
    torch.testing.assert_close(fast32.double(), exact, rtol=1e-5, atol=1e-4)


def test_mixture_log_prob_gradients_match_the_elementwise_mixture():
    logits, loc, scale = _mixture_parameters(seed=2)
    z = torch.randn(6, 5, dtype=torch.float64)
    grads = []
    for make in (D.DiagonalGaussianMixture, _elementwise):
        params = [t.clone().requires_grad_() for t in (logits, loc, scale)]
        make(*params).log_prob(z).sum().backward()
        grads.append([p.grad for p in params])
    for fast, slow in zip(*grads, strict=True):
        torch.testing.assert_close(fast, slow, rtol=1e-8, atol=1e-10)


def test_mixture_samples_follow_the_weights_and_ignore_autocast():
    logits = torch.log(torch.tensor([0.25, 0.75]))
    loc = torch.tensor([[-10.0], [10.0]])
    mixture = D.DiagonalGaussianMixture(logits, loc, torch.ones(2, 1))
    z = D.draw(mixture, (40_000,), torch.Generator().manual_seed(0))
    share = (z > 0).double().mean().item()
    assert abs(share - 0.75) < 4 * math.sqrt(0.75 * 0.25 / 40_000)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = mixture.log_prob(z[:100])
    torch.testing.assert_close(inside, mixture.log_prob(z[:100]), rtol=0, atol=0)


def test_mixture_rejects_batched_parameters():
    with pytest.raises(ValueError, match="logits \\(K,\\), loc and scale \\(K, Z\\)"):
        D.DiagonalGaussianMixture(torch.zeros(2), torch.zeros(3, 2, 4), torch.ones(3, 2, 4))


# ------------------------------------------------------------------ Gaussian KL closed forms


def gen(seed):
    return torch.Generator().manual_seed(seed)


def random_spd(n, dim, seed):
    a = torch.randn(n, dim, dim, generator=gen(seed), dtype=DTYPE)
    return a @ a.mT + 0.5 * torch.eye(dim, dtype=DTYPE)


def test_kl_diagonal_normal_against_torch_and_standard_normal():
    g = gen(2)
    loc0, loc1 = torch.randn(2, 4, 3, generator=g, dtype=DTYPE)
    scale0, scale1 = torch.rand(2, 4, 3, generator=g, dtype=DTYPE) + 0.2
    per_dim = kl_diagonal_normal(loc0, scale0, loc1, scale1)
    assert per_dim.shape == (4, 3)
    torch.testing.assert_close(
        per_dim, kl_divergence(Normal(loc0, scale0), Normal(loc1, scale1)), rtol=0, atol=1e-12
    )
    standard = kl_diagonal_normal(loc0, scale0, torch.zeros(3, dtype=DTYPE), torch.ones(3, dtype=DTYPE)).sum(
        -1
    )
    torch.testing.assert_close(standard, kl_standard_normal(loc0, 2 * scale0.log()), rtol=0, atol=1e-12)
    torch.testing.assert_close(kl_diagonal_normal(loc0, scale0, loc0, scale0), torch.zeros(4, 3, dtype=DTYPE))


def test_kl_gaussian_against_torch_monte_carlo_and_properties():
    dim = 3
    mu0, mu1 = torch.randn(2, 4, dim, generator=gen(3), dtype=DTYPE)
    cov0, cov1 = random_spd(4, dim, 4), random_spd(4, dim, 5)
    kl = kl_gaussian(mu0, cov0, mu1, cov1)
    assert kl.shape == (4,)
    p0 = MultivariateNormal(mu0, covariance_matrix=cov0)
    p1 = MultivariateNormal(mu1, covariance_matrix=cov1)
    torch.testing.assert_close(kl, kl_divergence(p0, p1), rtol=1e-10, atol=1e-10)
    mc = kl_monte_carlo(p0, p1, 20_000, gen(6))
    assert mc.value.shape == mc.stderr.shape == (4,) and mc.n == 20_000
    assert torch.all((mc.value - kl).abs() < 4 * mc.stderr), (mc.value - kl) / mc.stderr
    assert torch.all(kl > 0)
    torch.testing.assert_close(
        kl_gaussian(mu0, cov0, mu0, cov0), torch.zeros(4, dtype=DTYPE), rtol=0, atol=1e-12
    )
    # Broadcasting: one target covariance for a batch of sources.
    torch.testing.assert_close(
        kl_gaussian(mu0, cov0, mu1[0], cov1[0]),
        kl_divergence(p0, MultivariateNormal(mu1[0], covariance_matrix=cov1[0])),
    )


def test_kl_gaussian_non_negative_on_random_pairs():
    mu = torch.randn(2, 200, 4, generator=gen(7), dtype=DTYPE)
    kl = kl_gaussian(mu[0], random_spd(200, 4, 8), mu[1], random_spd(200, 4, 9))
    assert torch.all(kl >= 0)


def test_registered_diagonal_vs_full_covariance_pairs():
    g = gen(10)
    loc = torch.randn(5, 3, generator=g, dtype=DTYPE)
    scale = torch.rand(5, 3, generator=g, dtype=DTYPE) + 0.3
    diag = Independent(Normal(loc, scale), 1)
    diag_as_mvn = MultivariateNormal(loc, covariance_matrix=torch.diag_embed(scale.square()))
    full = MultivariateNormal(
        torch.randn(3, generator=g, dtype=DTYPE), covariance_matrix=random_spd(1, 3, 11)[0]
    )
    torch.testing.assert_close(
        kl_divergence(diag, full), kl_divergence(diag_as_mvn, full), rtol=1e-10, atol=1e-12
    )
    torch.testing.assert_close(
        kl_divergence(full, diag), kl_divergence(full, diag_as_mvn), rtol=1e-10, atol=1e-12
    )
    mc = kl_monte_carlo(diag, full, 20_000, gen(12))
    assert torch.all((mc.value - kl_divergence(diag, full)).abs() < 4 * mc.stderr)
    # Only diagonal *Gaussians* are covered: anything else still has no closed form.
    with pytest.raises(NotImplementedError, match="no closed form for KL\\(Independent\\(Bernoulli\\)"):
        kl_divergence(Independent(Bernoulli(probs=torch.full((3,), 0.5, dtype=DTYPE)), 1), full)


def test_the_registered_pairs_need_nothing_but_the_distributions_module():
    # Registered where defined: importing vaelab.distributions alone makes torch know the pairs.
    code = (
        "import sys, torch, vaelab.distributions; "
        "from torch.distributions import Independent, MultivariateNormal, Normal, kl_divergence; "
        "q = Independent(Normal(torch.zeros(2), torch.ones(2)), 1); "
        "p = MultivariateNormal(torch.zeros(2), torch.eye(2)); "
        "assert float(kl_divergence(q, p)) == 0.0 and float(kl_divergence(p, q)) == 0.0; "
        "assert not [m for m in sys.modules if m.startswith('vaelab.theory')]"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
