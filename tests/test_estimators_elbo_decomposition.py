"""The ELBO decomposition over a dataset, on models whose log p(x) and p(z|x) are known exactly:
its identities to float rounding, its gap against the closed-form KL to the exact posterior, and
active units on a constructed case."""

from __future__ import annotations

import json
import math

import pytest
import torch

from vaelab.distributions import diagonal_normal, draw, kl_standard_normal
from vaelab.estimators import ElboDecomposition, elbo_decomposition
from vaelab.theory.exact import BernoulliMixture, LinearGaussian, SigmoidBeliefNetwork

DTYPE = torch.float64


def gen(seed):
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- ELBO decomposition


def linear_gaussian(seed=0, z_dim=3, x_dim=6):
    g = gen(seed)
    W = torch.randn(x_dim, z_dim, generator=g, dtype=DTYPE)
    return LinearGaussian(W, torch.randn(x_dim, generator=g, dtype=DTYPE), 0.5)


def test_elbo_decomposition_identities_on_linear_gaussian():
    model = linear_gaussian().with_diagonal_posterior(shift=0.2, scale=1.3)
    x = model.sample(40, gen(1))
    result = elbo_decomposition(model, x, batch_size=16, k=50, generator=gen(2))
    assert isinstance(result, ElboDecomposition) and result.closed_form and result.num_examples == 40
    assert result.log_p_x_given_z - result.kl == pytest.approx(result.log_p_xz + result.entropy, abs=1e-10)
    assert result.elbo == pytest.approx(result.log_p_x_given_z - result.kl, abs=1e-12)
    assert sum(result.kl_per_dim) == pytest.approx(result.kl, abs=1e-10)
    q = model.posterior(x)
    expected_per_dim = kl_standard_normal(q.mean.unsqueeze(-1), q.variance.log().unsqueeze(-1)).mean(0)
    torch.testing.assert_close(
        torch.tensor(result.kl_per_dim, dtype=DTYPE), expected_per_dim, rtol=0, atol=1e-12
    )
    assert result.entropy == pytest.approx(float(q.entropy().mean()), abs=1e-12)
    assert result.log_px is None and result.gap is None


def test_elbo_decomposition_gap_is_kl_to_exact_posterior():
    base = linear_gaussian()
    model = base.with_diagonal_posterior(shift=0.2, scale=1.3)
    x = model.sample(40, gen(1))
    k = 400
    result = elbo_decomposition(model, x, batch_size=40, k=k, k_importance=2000, generator=gen(3))
    q = model.posterior(x)
    true_gap = float(base.kl_to_exact_posterior(q, x).mean())
    # Noise: the reconstruction term (k samples per example) and the importance-sampled log p(x).
    z = draw(q, (k,), gen(4))  # (k, B, Z)
    recon_se = float(base.likelihood(z).log_prob(x).std(0).square().sum().sqrt()) / (math.sqrt(k) * 40)
    se = math.hypot(recon_se, result.log_px_stderr)
    assert abs(result.gap - true_gap) < 4 * se, (result.gap - true_gap) / se
    assert result.log_px == pytest.approx(float(base.log_marginal(x).mean()), abs=4 * result.log_px_stderr)
    assert result.log_px_k == 2000


def test_active_units_on_a_constructed_case():
    # q(z|x) means: dim 0 = x_0 (variance ~1 across data), dim 1 = 0.05 x_0 (~0.0025), dim 2 = 0.
    model = linear_gaussian(z_dim=3)
    x = torch.randn(500, 6, generator=gen(4), dtype=DTYPE)

    def q(x):
        loc = torch.stack([x[:, 0], 0.05 * x[:, 0], torch.zeros_like(x[:, 0])], -1)
        return diagonal_normal(loc, torch.zeros_like(loc))

    result = elbo_decomposition(model.with_posterior(q), x, batch_size=128, generator=gen(5))
    expected = torch.stack([x[:, 0], 0.05 * x[:, 0], torch.zeros(500, dtype=DTYPE)], -1).var(0)
    torch.testing.assert_close(torch.tensor(result.posterior_mean_variance, dtype=DTYPE), expected)
    assert result.active_units == 1
    looser = elbo_decomposition(
        model.with_posterior(q), x, batch_size=128, generator=gen(5), active_threshold=1e-3
    )
    assert looser.active_units == 2


def test_elbo_decomposition_monte_carlo_branch_and_json():
    model = SigmoidBeliefNetwork(
        torch.full((4,), 0.3, dtype=DTYPE),
        torch.randn(10, 4, generator=gen(6), dtype=DTYPE),
        torch.zeros(10, dtype=DTYPE),
    )
    x = model.sample(30, gen(7))
    result = elbo_decomposition(model, [x[:10], (x[10:], None)], k=20, k_importance=100, generator=gen(8))
    assert not result.closed_form and result.kl_per_dim is None
    assert result.log_p_x_given_z - result.kl == pytest.approx(result.log_p_xz + result.entropy, abs=1e-10)
    assert result.active_units is not None and len(result.posterior_mean_variance) == 4
    assert result.num_examples == 30
    data = json.loads(json.dumps(result.to_dict()))
    assert data["elbo"] == result.elbo and isinstance(data["posterior_mean_variance"], list)
    # A discrete latent (Categorical q) has no vector mean: no active units, but the identities hold.
    mixture = BernoulliMixture(
        torch.tensor([0.5, 0.5], dtype=DTYPE), torch.randn(2, 10, generator=gen(9), dtype=DTYPE)
    )
    discrete = elbo_decomposition(mixture, mixture.sample(20, gen(10)), batch_size=8, k=5, generator=gen(11))
    assert discrete.active_units is None and discrete.posterior_mean_variance is None
    assert discrete.elbo == pytest.approx(discrete.log_p_xz + discrete.entropy, abs=1e-10)
    json.dumps(discrete.to_dict())
