"""Latent statistics: KL per dim against exact answers, active units by their definition, one threshold."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.distributions import Independent, Normal

from vaelab import diagnostics
from vaelab.distributions import PointMass, standard_normal

SRC = Path(__file__).resolve().parents[1] / "src" / "vaelab"


class GivenPosterior:
    """A stand-in model whose q(z|x) has loc = x[:, :Z] and scale = x[:, Z:]: exact answers by hand."""

    def __init__(self, latent_dim: int, prior=None, deterministic: bool = False) -> None:
        self.latent_dim = latent_dim
        self.deterministic = deterministic
        self._prior = prior or standard_normal(latent_dim, dtype=torch.float64)

    def prior(self):
        return self._prior

    def posterior(self, x):
        loc, scale = x[:, : self.latent_dim], x[:, self.latent_dim :]
        if self.deterministic:
            return PointMass(loc)
        return Independent(Normal(loc, scale), 1)


def test_kl_per_dim_and_active_units_match_hand_computed_values():
    # two rows, two dims: loc (1, 0) and (3, 0.05), scale 1 and 0.5
    x = torch.tensor([[1.0, 0.0, 1.0, 0.5], [3.0, 0.05, 1.0, 0.5]], dtype=torch.float64)
    stats = diagnostics.latent_statistics(GivenPosterior(2), x)
    # KL(N(m, s^2) || N(0, 1)) = (m^2 + s^2 - 1)/2 - log s
    kl_dim1 = np.mean([(1 + 1 - 1) / 2, (9 + 1 - 1) / 2])
    kl_dim2 = np.mean([(0 + 0.25 - 1) / 2 - np.log(0.5), (0.0025 + 0.25 - 1) / 2 - np.log(0.5)])
    np.testing.assert_allclose(stats.kl_per_dim, [kl_dim1, kl_dim2], rtol=1e-12)
    # A_u = Cov_x(E_q[z_u]) with the unbiased (N - 1) variance: dim 1 (1, 3) -> 2; dim 2 (0, 0.05) -> 0.00125
    np.testing.assert_allclose(stats.posterior_mean_variance, [2.0, 0.00125], rtol=1e-12)
    assert stats.active_units == 1 and stats.threshold == diagnostics.ACTIVE_THRESHOLD == 0.01
    assert stats.num_examples == 2
    assert diagnostics.latent_statistics(GivenPosterior(2), x, threshold=0.001).active_units == 2


def test_kl_per_dim_sums_to_torch_kl_against_a_shifted_prior_in_float64():
    prior = Independent(Normal(torch.tensor([0.5, -1.0]), torch.tensor([2.0, 0.5])), 1)
    x = torch.rand(30, 4, dtype=torch.float64) + 0.1
    stats = diagnostics.latent_statistics(GivenPosterior(2, prior), x, batch_size=7)
    expected = torch.distributions.kl_divergence(GivenPosterior(2).posterior(x), prior).mean()
    assert stats.kl_per_dim.sum() == pytest.approx(float(expected), rel=1e-12)


def test_an_autoencoder_and_a_mixture_prior_have_no_kl_per_dim(tiny_model):
    x = torch.rand(20, 1, 8, 8)
    ae = diagnostics.latent_statistics(tiny_model("ae", 3), x)
    assert ae.kl_per_dim is None and ae.posterior_mean_variance.shape == (3,)
    mixture = diagnostics.latent_statistics(tiny_model(prior="mog", prior_components=3), x)
    assert mixture.kl_per_dim is None  # a mixture's KL does not split into dimensions
    vae = diagnostics.latent_statistics(tiny_model(latent_dim=3).double(), x.double())
    with torch.no_grad():
        model = tiny_model(latent_dim=3).double()
        total = torch.distributions.kl_divergence(model.posterior(x.double()), model.prior()).mean()
    assert vae.kl_per_dim.sum() == pytest.approx(float(total), rel=1e-10)


def test_posterior_means_are_the_codes_in_batches(tiny_model):
    model = tiny_model("ae", 3)
    x = torch.rand(25, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(
            diagnostics.posterior_means(model, x, batch_size=4), model.posterior(x).mean
        )


def test_latent_dims_are_named_from_one_and_the_rule_is_written_once():
    assert [diagnostics.latent_name(d) for d in range(3)] == ["z1", "z2", "z3"]
    assert diagnostics.active_units_rule() == "A_u = Cov_x(E_q[z_u]) > 0.01"
    # the threshold is one constant: the figures and experiments neither write 0.01 nor print the rule
    for path in [*(SRC / "viz").rglob("*.py"), *(SRC / "experiments").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            text = node.value if isinstance(node, ast.Constant) else None
            if text == 0.01 or (isinstance(text, str) and "> 0.01" in text):
                pytest.fail(f"{path.relative_to(SRC)}:{node.lineno}: {text!r}; use vaelab.diagnostics")
