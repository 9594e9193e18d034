"""KL closed forms vs torch and Monte Carlo, forward vs reverse KL fits, Bayes' rule, ELBO decomposition."""

from __future__ import annotations

import json
import math

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

from vaelab.distributions import diagonal_normal, draw, kl_standard_normal
from vaelab.exact import BernoulliMixture, LinearGaussian, SigmoidBeliefNetwork
from vaelab.theory import (
    ElboDecomposition,
    KLDirectionsResult,
    elbo_decomposition,
    kl_diagonal_normal,
    kl_directions_experiment,
    kl_discrete,
    kl_gaussian,
    kl_monte_carlo,
    medical_test,
    plot_kl_directions,
    posterior_over_hypotheses,
)

DTYPE = torch.float64


def gen(seed):
    return torch.Generator().manual_seed(seed)


def random_spd(n, dim, seed):
    a = torch.randn(n, dim, dim, generator=gen(seed), dtype=DTYPE)
    return a @ a.mT + 0.5 * torch.eye(dim, dtype=DTYPE)


# ------------------------------------------------------------------------------------------ KL


def test_kl_discrete_against_torch_and_properties():
    p = torch.softmax(torch.randn(5, 6, generator=gen(0), dtype=DTYPE), -1)
    q = torch.softmax(torch.randn(5, 6, generator=gen(1), dtype=DTYPE), -1)
    expected = kl_divergence(Categorical(probs=p), Categorical(probs=q))
    torch.testing.assert_close(kl_discrete(p, q), expected, rtol=0, atol=1e-12)
    assert torch.all(kl_discrete(p, q) > 0)
    torch.testing.assert_close(kl_discrete(p, p), torch.zeros(5, dtype=DTYPE), rtol=0, atol=1e-15)
    # 0 log 0 = 0; mass where q has none makes the KL infinite.
    assert kl_discrete([0.0, 1.0], [0.5, 0.5]) == pytest.approx(math.log(2))
    assert kl_discrete([0.5, 0.5], [0.0, 1.0]) == math.inf


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
    with pytest.raises(NotImplementedError):
        kl_divergence(Independent(Bernoulli(probs=torch.full((3,), 0.5, dtype=DTYPE)), 1), full)


def test_kl_monte_carlo_against_closed_form_and_validation():
    q, p = Normal(torch.tensor(0.3, dtype=DTYPE), 0.8), Normal(torch.tensor(-0.5, dtype=DTYPE), 1.3)
    mc = kl_monte_carlo(q, p, 50_000, gen(13))
    assert abs(float(mc.value - kl_divergence(q, p))) < 4 * float(mc.stderr)
    with pytest.raises(ValueError):
        kl_monte_carlo(q, p, 1)


# ------------------------------------------------------------------------ forward vs reverse KL


@pytest.fixture(scope="module")
def kl_result():
    return kl_directions_experiment()


def test_reverse_kl_is_mode_seeking(kl_result):
    assert isinstance(kl_result, KLDirectionsResult)
    best = kl_result.reverse
    assert abs(abs(best.mean) - 3.0) < 0.05 and abs(best.std - 1.0) < 0.05
    assert 0 < best.kl < math.log(2)  # ~ ln 2: q sits on one of two equal modes
    # Every start away from the middle locks onto the mode on its own side.
    for fit in kl_result.reverse_fits:
        if abs(fit.start[0]) >= 0.7:
            assert abs(fit.mean - 3.0 * math.copysign(1.0, fit.start[0])) < 0.05 and abs(fit.std - 1.0) < 0.05
        assert fit.kl >= best.kl - 1e-12


def test_forward_kl_is_mass_covering_and_matches_moment_matching(kl_result):
    assert kl_result.p_mean == pytest.approx(0.0) and kl_result.p_variance == pytest.approx(10.0)
    fwd, closed = kl_result.forward, kl_result.forward_closed_form
    assert abs(fwd.mean) < 1e-5 and abs(fwd.variance - 10.0) < 1e-5
    assert closed.mean == 0.0 and closed.variance == pytest.approx(10.0)
    assert fwd.kl == pytest.approx(closed.kl, abs=1e-9)


def test_kl_direction_values_agree_with_monte_carlo(kl_result):
    # The quadrature KLs, checked by sampling: KL(q_rev || p) with q samples, KL(p || q_fwd) with p samples.
    p = MixtureSameFamily(
        Categorical(probs=torch.tensor([0.5, 0.5], dtype=DTYPE)),
        Normal(torch.tensor([-3.0, 3.0], dtype=DTYPE), torch.tensor([1.0, 1.0], dtype=DTYPE)),
    )
    rev, fwd = kl_result.reverse, kl_result.forward
    q_rev = Normal(torch.tensor(rev.mean, dtype=DTYPE), torch.tensor(rev.std, dtype=DTYPE))
    q_fwd = Normal(torch.tensor(fwd.mean, dtype=DTYPE), torch.tensor(fwd.std, dtype=DTYPE))
    mc_rev = kl_monte_carlo(q_rev, p, 50_000, gen(14))
    mc_fwd = kl_monte_carlo(p, q_fwd, 50_000, gen(15))
    assert abs(float(mc_rev.value) - rev.kl) < 4 * float(mc_rev.stderr)
    assert abs(float(mc_fwd.value) - fwd.kl) < 4 * float(mc_fwd.stderr)
    # Each fit is poor under the other direction's criterion.
    assert float(kl_monte_carlo(q_fwd, p, 50_000, gen(16)).value) > rev.kl + 0.1
    assert float(kl_monte_carlo(p, q_rev, 50_000, gen(17)).value) > fwd.kl + 1.0


def test_kl_directions_rejects_bad_mixtures():
    with pytest.raises(ValueError):
        kl_directions_experiment(weights=(0.5, 0.6))
    with pytest.raises(ValueError):
        kl_directions_experiment(stds=(1.0, -1.0))


def test_plot_kl_directions_writes_png(kl_result, tmp_path):
    path = plot_kl_directions(kl_result, tmp_path / "kl.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 10_000


# ---------------------------------------------------------------------------------------- Bayes


def test_medical_test_numbers():
    result = medical_test(0.01, 0.95, 0.05)
    assert result.evidence == pytest.approx(0.059, abs=1e-15)
    assert result.posterior == pytest.approx(0.0095 / 0.059, abs=1e-15)
    assert round(result.evidence, 3) == 0.059 and round(result.posterior, 3) == 0.161
    joint = (result.true_positive, result.false_negative, result.false_positive, result.true_negative)
    assert sum(joint) == pytest.approx(1.0, abs=1e-15)
    assert result.true_positive == pytest.approx(0.0095) and result.false_positive == pytest.approx(0.0495)
    assert result.posterior_negative == pytest.approx(0.0005 / (0.0005 + 0.9405))


def test_posterior_over_hypotheses_matches_medical_test():
    bayes = posterior_over_hypotheses([0.01, 0.99], [0.95, 0.05])
    assert float(bayes.evidence) == pytest.approx(0.059, abs=1e-15)
    assert float(bayes.posterior[0]) == pytest.approx(medical_test(0.01, 0.95, 0.05).posterior, abs=1e-15)
    torch.testing.assert_close(bayes.posterior.sum(), torch.tensor(1.0, dtype=DTYPE))
    # Batched likelihoods: one row per observation.
    batched = posterior_over_hypotheses([0.2, 0.3, 0.5], [[1.0, 1.0, 1.0], [0.0, 0.0, 2.0]])
    torch.testing.assert_close(
        batched.posterior, torch.tensor([[0.2, 0.3, 0.5], [0.0, 0.0, 1.0]], dtype=DTYPE)
    )


@pytest.mark.parametrize(
    "args", [(1.5, 0.9, 0.1), (0.1, -0.1, 0.1), (0.1, 0.9, float("nan")), (0.0, 0.9, 0.0)]
)
def test_medical_test_rejects_bad_input(args):
    with pytest.raises(ValueError):
        medical_test(*args)


def test_posterior_over_hypotheses_rejects_bad_input():
    with pytest.raises(ValueError):
        posterior_over_hypotheses([0.5, 0.6], [1.0, 1.0])
    with pytest.raises(ValueError):
        posterior_over_hypotheses([0.5, 0.5], [0.0, 0.0])
    with pytest.raises(ValueError):
        posterior_over_hypotheses([0.5, 0.5], [-1.0, 1.0])


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
