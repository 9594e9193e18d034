"""Posterior families: exact log q(z|x), checked in float64 against direct density computations."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import MultivariateNormal, Normal

from vaelab.config import ModelConfig, RunConfig
from vaelab.distributions import draw
from vaelab.errors import UserError
from vaelab.models import build_model
from vaelab.posteriors import MADE, FullCovarianceFamily, IAFFamily


def _iaf(latent_dim=3, steps=2, hidden=8, batch=4):
    torch.manual_seed(0)
    family = IAFFamily(latent_dim, steps, hidden).double()
    for p in family.parameters():  # away from the near-identity start, so the test has teeth
        p.data.normal_(0, 0.7)
    family.requires_grad_(False)
    params = torch.randn(batch, family.num_params, dtype=torch.float64)
    return family, params


def test_made_is_autoregressive():
    torch.manual_seed(0)
    made = MADE(5, 3, 16).double()
    z, h = torch.randn(1, 5, dtype=torch.float64), torch.randn(1, 3, dtype=torch.float64)
    jac_m = torch.autograd.functional.jacobian(lambda z: made(z, h)[0], z)[0, :, 0, :]  # (5, 5)
    jac_s = torch.autograd.functional.jacobian(lambda z: made(z, h)[1], z)[0, :, 0, :]
    assert torch.all(jac_m.triu() == 0) and torch.all(jac_s.triu() == 0)  # output i sees only z_<i
    assert jac_m.tril(-1).abs().sum() > 0


def test_iaf_log_q_is_the_change_of_variables_density():
    """log q(z) = log N(eps) - log |det dz/deps|, the Jacobian computed by autograd in float64."""
    family, params = _iaf()
    q = family(params)
    eps = torch.randn(4, 3, dtype=torch.float64)
    z, log_q = q.from_noise(eps)
    jacobian = torch.autograd.functional.jacobian(lambda e: q.from_noise(e)[0], eps)  # (4, 3, 4, 3)
    for b in range(4):
        jac = jacobian[b, :, b, :]  # dz_b / deps_b: (3, 3); rows do not depend on each other
        expected = Normal(0.0, 1.0).log_prob(eps[b]).sum() - torch.linalg.slogdet(jac)[1]
        assert float(log_q[b]) == pytest.approx(float(expected), abs=1e-10)


def test_iaf_log_prob_of_any_point_inverts_the_flow_exactly():
    family, params = _iaf()
    q = family(params)
    eps = torch.randn(6, 4, 3, dtype=torch.float64)  # (S, B, Z)
    z, log_q = q.from_noise(eps)
    fresh = z.clone()  # not the tensor rsample returned: log_prob must invert
    assert torch.allclose(q.log_prob(fresh), log_q, atol=1e-10, rtol=0)


def test_iaf_density_integrates_to_one_in_one_dimension():
    family, params = _iaf(latent_dim=1, steps=3, batch=1)
    q = family(params)
    z = torch.linspace(-30, 30, 200_001, dtype=torch.float64)[:, None, None]  # (N, 1, 1)
    density = q.log_prob(z).exp()[:, 0]
    assert float(torch.trapezoid(density, z[:, 0, 0])) == pytest.approx(1.0, abs=1e-6)


def test_full_covariance_is_the_gaussian_with_that_cholesky_factor():
    family = FullCovarianceFamily(3)
    params = torch.tensor([[0.1, -0.2, 0.3, 0.2, -0.1, 0.4, 0.5, -0.6, 0.7]], dtype=torch.float64)
    q = family(params)
    scale_tril = torch.tensor(
        [[math.exp(0.2), 0, 0], [0.5, math.exp(-0.1), 0], [-0.6, 0.7, math.exp(0.4)]], dtype=torch.float64
    )
    reference = MultivariateNormal(params[0, :3], scale_tril @ scale_tril.T)
    z = torch.randn(5, 1, 3, dtype=torch.float64)
    assert torch.allclose(q.log_prob(z), reference.log_prob(z), atol=1e-12)


@pytest.mark.parametrize("posterior", ["full", "iaf"])
def test_every_family_trains_and_evaluates_through_the_model_protocol(posterior):
    from vaelab.estimators import elbo_terms, log_px_importance

    config = ModelConfig(latent_dim=3, hidden=(16,), posterior=posterior, flow_steps=2, flow_hidden=8)
    model = build_model(config, (1, 4, 4))
    x = torch.bernoulli(torch.full((5, 1, 4, 4), 0.4), generator=torch.Generator().manual_seed(0))
    generator = torch.Generator().manual_seed(1)
    z = draw(model.posterior(x), (7,), generator)
    assert z.shape == (7, 5, 3)
    terms = elbo_terms(model, x, 3, generator=generator)
    log_px = log_px_importance(model, x, 50, generator=generator)
    assert torch.isfinite(terms.elbo).all() and torch.isfinite(log_px.value).all()
    terms.elbo.sum().backward()
    assert all(p.grad is not None for p in model.posterior_family.parameters())


def test_settings_a_family_would_ignore_and_impossible_pairs_are_refused():
    config = RunConfig().replace(model={"posterior": "diagonal"})
    assert config.ignored_settings({"model.flow_steps"}) == [
        "model.flow_steps: ignored (it applies to the iaf posterior)"
    ]
    with pytest.raises(UserError, match="model.prior vamp: its components are diagonal"):
        build_model(ModelConfig(posterior="full", prior="vamp", prior_components=3), (4,))


# ------------------------------------------------------------------ the gap against the truth


def _correlated_linear_gaussian():
    from vaelab.theory.exact import build_exact_model

    return build_exact_model("linear-gaussian-correlated")


def test_mean_field_gap_is_the_kl_of_the_precision_diagonal_fit():
    """KL(prod_i N(m_i, 1/Lambda_ii) || N(m, Lambda^-1)) computed directly equals the closed form,
    and no other diagonal variance does better (a grid around the optimum)."""
    from vaelab.distributions import kl_gaussian
    from vaelab.theory.gaps import mean_field_gap, posterior_precision

    model = _correlated_linear_gaussian()
    precision = posterior_precision(model)
    mean = torch.zeros(3, dtype=torch.float64)
    covariance = torch.linalg.inv(precision)

    def kl(variances):
        return float(kl_gaussian(mean, torch.diag(variances), mean, covariance))

    best = 1 / precision.diagonal()
    assert kl(best) == pytest.approx(float(mean_field_gap(precision)), abs=1e-12)
    for factor in (0.8, 0.95, 1.05, 1.25):
        for i in range(3):
            other = best.clone()
            other[i] *= factor
            assert kl(other) > kl(best)
    assert float(mean_field_gap(torch.diag(torch.tensor([2.0, 3.0])))) == pytest.approx(0.0, abs=1e-15)


@pytest.mark.slow
def test_trained_encoders_reach_the_gap_their_family_allows():
    """Decoder held at the truth, encoders trained on the ELBO: diagonal ends at the mean-field
    gap, full covariance at 0, the flow far below the mean field."""
    from vaelab.theory.gaps import posterior_gap_table

    model = _correlated_linear_gaussian()
    x = model.sample(32, torch.Generator().manual_seed(0))
    rows = {row.family: row for row in posterior_gap_table(model, x, steps=1000)}
    theory = rows["diagonal"].best
    assert theory == pytest.approx(0.7887, abs=1e-4)
    assert rows["diagonal"].gap == pytest.approx(theory, abs=0.02)
    assert rows["full"].gap < 0.02
    assert rows["iaf"].gap < 0.5 * theory


class _LinearGaussianWithUselessEncoder(torch.nn.Module):
    """The correlated linear-Gaussian model as a vaelab model whose encoder outputs q = N(0, I)
    (the prior) for every x: the amortization gap is then everything the optimizer can recover."""

    def __init__(self, family: str) -> None:
        from vaelab.posteriors import build_posterior

        super().__init__()
        self.truth = _correlated_linear_gaussian()
        self.posterior_family = build_posterior(family, 3, 1, 4).double()
        self.latent_dim, self.x_shape, self.deterministic = 3, (5,), False

    def posterior_params(self, x):
        return torch.zeros(len(x), self.posterior_family.num_params, dtype=torch.float64)

    def posterior(self, x):
        return self.posterior_family(self.posterior_params(x))

    def prior(self):
        return self.truth.prior()

    def likelihood(self, z):
        return self.truth.likelihood(z)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["diagonal", "full"])
def test_gap_split_recovers_the_closed_form_gaps(family):
    """q_enc = the prior, so ELBO(q_enc) and each family's best gap are known exactly: the
    approximation gap is the family's (mean field: 1/2 (sum log Lambda_ii - log det Lambda); full:
    0) and the amortization gap the rest, within Monte Carlo and optimization error."""
    from vaelab.inference_gaps import inference_gaps
    from vaelab.theory.gaps import mean_field_gap, posterior_precision

    model = _LinearGaussianWithUselessEncoder(family)
    x = model.truth.sample(16, torch.Generator().manual_seed(0))
    gaps = inference_gaps(model, x, steps=600, samples=16, lr=0.05, eval_samples=4000, k=4000)
    exact = float(model.truth.log_marginal(x).mean())
    prior_elbo = float(model.truth.elbo_closed_form(model.posterior(x), x).mean())
    best = float(mean_field_gap(posterior_precision(model.truth))) if family == "diagonal" else 0.0
    assert gaps.log_px == pytest.approx(exact, abs=0.01)
    assert gaps.elbo_encoder == pytest.approx(prior_elbo, abs=0.05)
    assert gaps.approximation_gap == pytest.approx(best, abs=0.05)
    assert gaps.amortization_gap == pytest.approx(exact - best - prior_elbo, abs=0.08)
    assert "Adam, 600 steps" in gaps.method
