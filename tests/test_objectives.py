"""Objectives: reparameterized ELBO gradients against hand-derived ones, in float64."""

from __future__ import annotations

import math

import pytest
import torch

from vaelab import distributions as D
from vaelab.config import ModelConfig
from vaelab.models import build_model
from vaelab.objectives import ReconstructionTerms, beta_elbo, dataset_terms, iwae, reconstruction


class LinearModel:
    """q(z|x) = N(mu, diag(exp(log_var))) with free parameters; p(x|z) = N(Wz + b, sigma^2 I)."""

    def __init__(self, mu, log_var, W, b, sigma):
        self.mu, self.log_var, self.W, self.b, self.sigma = mu, log_var, W, b, sigma

    def posterior(self, x):
        return D.diagonal_normal(self.mu.expand(len(x), -1), self.log_var.expand(len(x), -1))

    def prior(self):
        return D.standard_normal(self.mu.shape[-1], dtype=self.mu.dtype)

    def likelihood(self, z):
        return D.gaussian(z @ self.W.T + self.b, torch.tensor(self.sigma, dtype=z.dtype), 1)


def test_elbo_gradients_match_hand_derived_ones():
    g = torch.Generator().manual_seed(0)
    Z, Dx, sigma = 3, 5, 0.7
    params = {
        "mu": torch.randn(1, Z, generator=g, dtype=torch.float64),
        "log_var": 0.3 * torch.randn(1, Z, generator=g, dtype=torch.float64),
        "W": torch.randn(Dx, Z, generator=g, dtype=torch.float64),
        "b": torch.randn(Dx, generator=g, dtype=torch.float64),
    }
    for p in params.values():
        p.requires_grad_(True)
    model = LinearModel(**params, sigma=sigma)
    x = torch.randn(1, Dx, generator=g, dtype=torch.float64)

    out = beta_elbo(model, x, torch.Generator().manual_seed(42))
    out.surrogate.sum().backward()

    # the same eps the objective drew: (k=1, B=1, Z) from the same seed
    eps = torch.randn(1, 1, Z, generator=torch.Generator().manual_seed(42), dtype=torch.float64)[0, 0]
    mu, lv, W, b = (params[k].detach() for k in ("mu", "log_var", "W", "b"))
    mu, lv = mu[0], lv[0]
    s = torch.exp(lv / 2)
    z = mu + s * eps
    r = x[0] - W @ z - b  # residual
    dz = W.T @ r / sigma**2  # d log p(x|z) / dz
    expected = {
        "mu": dz - mu,
        "log_var": dz * eps * s / 2 - 0.5 * (s**2 - 1),
        "W": torch.outer(r, z) / sigma**2,
        "b": r / sigma**2,
    }
    for name, grad in expected.items():
        torch.testing.assert_close(params[name].grad.reshape(grad.shape), grad, rtol=1e-10, atol=1e-12)

    # and the value: log N(x; Wz+b, sigma^2) - KL(q || N(0, I))
    log_lik = (-0.5 * (r / sigma) ** 2 - math.log(sigma) - 0.5 * math.log(2 * math.pi)).sum()
    kl = 0.5 * (mu**2 + s**2 - lv - 1).sum()
    torch.testing.assert_close(out.terms.elbo[0], log_lik - kl, rtol=1e-12, atol=1e-12)


def test_beta_weights_only_the_kl_and_the_logged_elbo_stays_the_bound():
    g = torch.Generator().manual_seed(1)
    model = LinearModel(
        torch.randn(1, 2, generator=g, dtype=torch.float64),
        torch.zeros(1, 2, dtype=torch.float64),
        torch.randn(4, 2, generator=g, dtype=torch.float64),
        torch.zeros(4, dtype=torch.float64),
        1.0,
    )
    x = torch.randn(3, 4, generator=g, dtype=torch.float64)
    one = beta_elbo(model, x, torch.Generator().manual_seed(7), beta=1.0)
    four = beta_elbo(model, x, torch.Generator().manual_seed(7), beta=4.0)
    torch.testing.assert_close(one.terms.elbo, four.terms.elbo)
    torch.testing.assert_close(four.surrogate, four.terms.log_p_x_given_z - 4.0 * four.terms.kl)


def test_iwae_with_one_sample_is_the_monte_carlo_elbo():
    g = torch.Generator().manual_seed(2)
    model = LinearModel(
        torch.randn(1, 2, generator=g, dtype=torch.float64),
        torch.zeros(1, 2, dtype=torch.float64),
        torch.randn(4, 2, generator=g, dtype=torch.float64),
        torch.zeros(4, dtype=torch.float64),
        0.5,
    )
    x = torch.randn(3, 4, generator=g, dtype=torch.float64)
    out = iwae(model, x, torch.Generator().manual_seed(3), k=1)
    z = D.draw(model.posterior(x), (1,), torch.Generator().manual_seed(3))[0]
    q, p = model.posterior(x), model.prior()
    mc_elbo = model.likelihood(z).log_prob(x) + p.log_prob(z) - q.log_prob(z)
    torch.testing.assert_close(out.surrogate, mc_elbo)
    tight = iwae(model, x, torch.Generator().manual_seed(3), k=500).surrogate
    assert torch.all(tight >= out.terms.elbo - 1e-9)  # L_k >= analytic-KL ELBO on average; here per example


def test_reconstruction_objective_uses_the_deterministic_code():
    g = torch.Generator().manual_seed(4)
    W = torch.randn(4, 2, generator=g, dtype=torch.float64)
    code = torch.randn(1, 2, generator=g, dtype=torch.float64)

    class AE(LinearModel):
        deterministic = True

        def posterior(self, x):
            return D.PointMass(code.expand(len(x), -1))

    model = AE(code, torch.zeros(1, 2, dtype=torch.float64), W, torch.zeros(4, dtype=torch.float64), 1.0)
    x = torch.randn(3, 4, generator=g, dtype=torch.float64)
    out = reconstruction(model, x)
    torch.testing.assert_close(out.surrogate, model.likelihood(code.expand(3, -1)).log_prob(x))
    # an AE has no ELBO and no KL: its one logged term is the reconstruction term
    assert isinstance(out.terms, ReconstructionTerms)
    torch.testing.assert_close(out.terms.log_p_x_given_z, out.surrogate)
    means = dataset_terms(model, x, batch_size=2)
    assert means.elbo is None and means.kl is None
    assert means.bound == means.log_p_x_given_z == pytest.approx(float(out.surrogate.mean()), rel=1e-12)
    assert means.logged() == {"log_p_x_given_z": means.log_p_x_given_z}


def test_dataset_terms_run_in_eval_mode_and_restore_the_mode():
    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden=(16,), latent_dim=2, dropout=0.5), (1, 8, 8))
    x = torch.rand(25, 1, 8, 8).round()
    model.train()
    during_training = dataset_terms(model, x, seed=1, batch_size=10)
    assert model.training  # put back as it was
    model.eval()
    assert during_training == dataset_terms(model, x, seed=1, batch_size=10)  # dropout was off
    assert not model.training
    means = dataset_terms(model, x, seed=1)
    assert means.elbo == pytest.approx(means.log_p_x_given_z - means.kl, abs=1e-4)  # float32 terms
    assert means.bound == means.elbo  # the ELBO objective's bound at beta = 1 is the ELBO


def test_dataset_terms_take_any_protocol_model():
    g = torch.Generator().manual_seed(5)
    model = LinearModel(
        torch.randn(1, 2, generator=g, dtype=torch.float64),
        torch.zeros(1, 2, dtype=torch.float64),
        torch.randn(4, 2, generator=g, dtype=torch.float64),
        torch.zeros(4, dtype=torch.float64),
        0.5,
    )
    model.deterministic = False
    x = torch.randn(7, 4, generator=g, dtype=torch.float64)
    means = dataset_terms(model, x, seed=2, batch_size=3)
    # The same batches and one generator through them: the dataset mean of the per-example ELBO.
    g = torch.Generator().manual_seed(2)
    elbos = torch.cat([beta_elbo(model, batch, g).terms.elbo for batch in x.split(3)])
    assert means.elbo == pytest.approx(float(elbos.mean()), rel=1e-12)
    assert means.kl == pytest.approx(float(D.kl_standard_normal(model.mu, model.log_var).sum()), rel=1e-12)
