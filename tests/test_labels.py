"""Labels end to end: a model that uses labels is scored given each example's label by every
objective and estimator (through `model.given(y)`), the trainer gathers each batch's labels with
x's indices, and data without labels are refused in one line.

The exact answer is a conditional linear-Gaussian model, z ~ N(0, I_Z), x | z, y ~ N(W z + m_y,
sigma^2 I_D), whose log p(x|y) = log N(x; m_y, W W^T + sigma^2 I_D) and posterior p(z|x, y) are
known in closed form (`vaelab.theory.exact.LinearGaussian` of x - m_y), in float64.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vaelab.config import RunConfig
from vaelab.data import Splits
from vaelab.distributions import gaussian
from vaelab.errors import UserError
from vaelab.estimators import dataset_log_px, elbo, elbo_decomposition, iwae_bound, log_px_importance
from vaelab.evaluate import GIVEN_LABEL, evaluate_model
from vaelab.models import GivenLabels, given_labels
from vaelab.objectives import dataset_terms, iwae
from vaelab.theory.exact import LinearGaussian
from vaelab.train import Trainer, train

DTYPE = torch.float64


class ConditionalLinearGaussian:
    """z ~ N(0, I_Z), x | z, y ~ N(W z + m_y, sigma^2 I_D) for C classes y; q(z|x, y) is the exact
    posterior, or its diagonal marginals widened by `scale` (a q that leaves a gap)."""

    uses_labels = True
    deterministic = False

    def __init__(self, classes=3, z_dim=2, x_dim=4, sigma=0.5, seed=0, scale=None):
        g = torch.Generator().manual_seed(seed)
        W = torch.randn(x_dim, z_dim, generator=g, dtype=DTYPE)
        self.means = 3 * torch.randn(classes, x_dim, generator=g, dtype=DTYPE)  # (C, D), m_y
        self.centred = LinearGaussian(W, torch.zeros(x_dim, dtype=DTYPE), sigma)  # the model of x - m_y
        self.scale = scale

    latent_dim = property(lambda self: self.centred.latent_dim)
    x_shape = property(lambda self: self.centred.x_shape)

    def given(self, labels):
        return GivenLabels(self, labels)

    def prior(self):
        return self.centred.prior()

    def posterior_given(self, x, labels):
        r = x - self.means[labels]
        if self.scale is None:
            return self.centred.exact_posterior(r)
        return self.centred.diagonal_posterior(r, scale=self.scale)

    def likelihood_given(self, z, labels):
        """z: (*S, B, Z), labels (B,) -> batch (*S, B)."""
        return gaussian(z @ self.centred.W.T + self.means[labels], self.centred.noise_std, 1)

    def log_px_given_y(self, x, labels):
        return self.centred.log_marginal(x - self.means[labels])

    def sample(self, n, seed=1):
        g = torch.Generator().manual_seed(seed)
        y = torch.randint(0, len(self.means), (n,), generator=g)
        return self.centred.sample(n, g) + self.means[y], y


@pytest.fixture
def model():
    return ConditionalLinearGaussian()


def test_the_bounds_of_given_y_are_log_p_x_given_y_with_the_exact_posterior(model):
    x, y = model.sample(7)
    exact = model.log_px_given_y(x, y)
    given = model.given(y)
    # with q = p(z|x, y) every importance weight is p(x|y): the bound is exact, sample by sample
    torch.testing.assert_close(iwae_bound(given, x, 5), exact, rtol=0, atol=1e-10)
    torch.testing.assert_close(log_px_importance(given, x, 4).value, exact, rtol=0, atol=1e-10)
    torch.testing.assert_close(iwae(model, x, k=3, labels=y).surrogate, exact, rtol=0, atol=1e-10)
    # the wrong labels score another density: the labels are used
    assert (model.log_px_given_y(x, (y + 1) % 3) - exact).abs().min() > 1e-3


def test_importance_sampling_converges_to_log_p_x_given_y_and_the_elbo_stays_below(model):
    wide = ConditionalLinearGaussian(scale=1.5)
    x, y = wide.sample(5)
    exact = wide.log_px_given_y(x, y)
    g = torch.Generator().manual_seed(0)
    bound = elbo(wide.given(y), x, 2000, generator=g)
    assert (bound < exact).all()  # KL(q || p(z|x,y)) > 0 for this widened q
    errors = []
    for k in (10, 1000, 20_000):
        estimate = log_px_importance(wide.given(y), x, k, generator=g)
        assert ((estimate.value - exact).abs() <= 3 * estimate.stderr + 1e-12).all()
        errors.append(float((estimate.value - exact).abs().max()))
    assert errors[-1] < errors[0] / 10


def test_dataset_estimators_score_each_batch_given_its_own_labels(model):
    wide = ConditionalLinearGaussian(scale=1.3)
    x, y = wide.sample(23)
    exact = wide.log_px_given_y(x, y)
    g = torch.Generator().manual_seed(0)
    # 23 rows in batches of 5: the labels must be split exactly as x is
    estimate = dataset_log_px(wide, x, 3000, batch_size=5, generator=g, labels=y)
    assert ((estimate.value - exact).abs() <= 3 * estimate.stderr + 1e-12).all()
    # the same, from (x, y) batches
    pairs = list(zip(x.split(4), y.split(4), strict=True))
    again = dataset_log_px(wide, pairs, 3000, generator=torch.Generator().manual_seed(0))
    assert ((again.value - exact).abs() <= 3 * again.stderr + 1e-12).all()
    # the exact posterior: the decomposition's bound and dataset_terms' IWAE bound are log p(x|y)
    d = elbo_decomposition(model, x, batch_size=6, k=50, labels=y, k_importance=10)
    assert d.log_px == pytest.approx(float(model.log_px_given_y(x, y).mean()), abs=1e-9)
    assert abs(d.gap) < 0.2  # the Monte Carlo ELBO of the exact q (its KL to p(z) by sampling)
    terms = dataset_terms(model, x, objective="iwae", k=4, batch_size=6, labels=y)
    assert terms.bound == pytest.approx(float(model.log_px_given_y(x, y).mean()), abs=1e-10)


def test_evaluate_model_reports_log_p_x_given_y_and_says_so(model):
    wide = ConditionalLinearGaussian(scale=1.3)
    x, y = wide.sample(40)
    result = evaluate_model(wide, x, k=500, batch_size=7, progress=False, labels=y)
    exact = float(wide.log_px_given_y(x, y).mean())
    assert abs(result.log_px - exact) <= 3 * result.log_px_stderr
    assert result.elbo < exact and result.given == GIVEN_LABEL
    assert result.to_dict()["given"].startswith("the true label y of each example")


def test_given_y_broadcasts_over_sample_dims(model):
    x, y = model.sample(6)
    z = torch.randn(3, 4, 6, 2, dtype=DTYPE)  # (S1, S2, B, Z)
    log_p = model.given(y).likelihood(z).log_prob(x)  # (S1, S2, B)
    assert log_p.shape == (3, 4, 6)
    one_by_one = torch.stack(
        [model.likelihood_given(z[i, j], y).log_prob(x) for i in range(3) for j in range(4)]
    )
    torch.testing.assert_close(log_p.reshape(12, 6), one_by_one, rtol=0, atol=1e-12)


def test_a_model_that_uses_labels_refuses_to_score_without_them(model):
    x, _ = model.sample(3)
    with pytest.raises(UserError, match=r"the model uses labels \(model.condition label\): it needs each"):
        given_labels(model, None)
    with pytest.raises(UserError, match="it needs each example's label"):
        iwae(model, x, k=2)
    assert (
        given_labels(LinearGaussian(torch.eye(2, dtype=DTYPE), torch.zeros(2, dtype=DTYPE), 1.0), None)
        is not None
    )


# ------------------------------------------------------------------------------ the trainer


def _indexed_splits(n: int, classes: int) -> Splits:
    """Images whose pixels encode the row's index i (as i / (n + 16)) and labels i mod C, so every
    batch's labels can be checked against its x."""

    def split(offset: int, rows: int):
        index = torch.arange(offset, offset + rows)
        x = (index.float() / (n + 16)).reshape(-1, 1, 1, 1).expand(-1, 1, 2, 2).contiguous()
        return x, index % classes

    (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = split(0, n), split(n, 8), split(n + 8, 8)
    return Splits("indexed", train_x, valid_x, test_x, train_y, valid_y, test_y)


def _row_labels(x: torch.Tensor, n: int, classes: int) -> torch.Tensor:
    return torch.round(x[:, 0, 0, 0].double() * (n + 16)).long() % classes


@settings(max_examples=12, deadline=None)
@given(
    n=st.integers(3, 40), batch_size=st.integers(1, 17), seed=st.integers(0, 2**31), classes=st.integers(2, 5)
)
def test_the_trainer_gathers_each_batch_labels_with_the_indices_of_x(n, batch_size, seed, classes):
    config = RunConfig().replace(
        model={"condition": "label", "hidden": (4,), "latent_dim": 2},
        train={"epochs": 1, "batch_size": batch_size, "seed": seed, "compile": "off", "precision": "fp32"},
    )
    splits = _indexed_splits(n, classes)
    seen = []
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(config, Path(tmp) / "run", progress=False, splits=splits)
        objective = trainer.objective

        def recording(model, x, generator=None, *, beta=1.0, k=1, labels=None):
            seen.append((x.clone(), labels.clone()))
            return objective(model, x, generator, beta=beta, k=k, labels=labels)

        trainer.objective = recording
        trainer.run_epoch()
        trainer.close()
    assert trainer.config.model.classes == tuple(str(c) for c in range(classes))
    assert sum(len(x) for x, _ in seen) == n  # every row once
    for x, labels in seen:
        assert labels.dtype == torch.int64 and labels.shape == (len(x),)
        assert torch.equal(labels, _row_labels(x, n, classes))


def test_a_conditional_run_on_data_without_labels_is_refused_before_anything_is_written(tmp_path):
    splits = _indexed_splits(20, 2)
    unlabelled = Splits("plain", splits.train, splits.valid, splits.test)
    config = RunConfig().replace(model={"condition": "label", "hidden": (4,)}, train={"epochs": 1})
    refused = (
        r"^plain: model.condition label needs every example's label; the train, valid, test splits have none"
    )
    with pytest.raises(UserError, match=refused):
        train(config.replace(data={"source": "plain"}), tmp_path / "run", progress=False, splits=unlabelled)
    assert not (tmp_path / "run").exists()
    only_test = Splits("test-only", splits.train, splits.valid, splits.test, test_labels=splits.test_labels)
    with pytest.raises(UserError, match=r"the train, valid splits have none"):
        train(config, tmp_path / "run", progress=False, splits=only_test)
    assert not (tmp_path / "run").exists()
