"""The model's distributions against torch.distributions and closed forms, in float64."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Bernoulli, Categorical, Independent, Normal, kl_divergence

from vaelab import distributions as D


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
