"""Likelihoods for 8-bit data, checked exactly in float64: every family's 256 probabilities sum to
1, log_prob matches a direct computation, samples follow the probabilities; the registry agrees
with the config; the input transform follows the likelihood; bits/dim carry the correction."""

from __future__ import annotations

import math
import typing

import numpy as np
import pytest
import torch
from torch.distributions import Independent

from vaelab.config import Likelihoods, ModelConfig
from vaelab.data import for_likelihood, split_arrays
from vaelab.data.transforms import Dequantize, Scale
from vaelab.distributions import draw
from vaelab.errors import UserError
from vaelab.evaluate import evaluate_model
from vaelab.likelihoods import (
    LEVELS,
    LIKELIHOODS,
    Categorical256,
    DiscretizedLogistic,
    DiscretizedLogisticMixture,
    Logistic,
    levels_of,
)
from vaelab.models import Likelihood, build_model

F64 = torch.float64
GRID = torch.arange(LEVELS, dtype=F64) / 255  # the 256 values of a subpixel, k/255


def all_levels(shape: tuple[int, ...]) -> torch.Tensor:
    """(256, *shape): every level at every position, to score each subpixel's whole support."""
    return GRID.reshape(-1, *([1] * len(shape))).expand(LEVELS, *shape)


def logistic_params(shape: tuple[int, ...], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    loc = torch.rand(shape, generator=g, dtype=F64) * 1.6 - 0.3  # some outside [0, 1]
    log_scale = torch.rand(shape, generator=g, dtype=F64) * 8.0 - 6.5  # s from e^-6.5 to e^1.5
    return loc, log_scale


def direct_discretized_logistic(k: torch.Tensor, loc: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """P(k) = F(k/255 + 1/510) - F(k/255 - 1/510), with F(+-inf) at the edge bins: the definition."""
    s = log_scale.exp()
    x = k.to(F64) / 255
    upper = torch.where(k == 255, 1.0, torch.sigmoid((x + 0.5 / 255 - loc) / s))
    lower = torch.where(k == 0, 0.0, torch.sigmoid((x - 0.5 / 255 - loc) / s))
    return upper - lower


def test_discretized_logistic_sums_to_one_and_matches_the_cdf_difference():
    loc, log_scale = logistic_params((4, 5))
    p = DiscretizedLogistic(loc, log_scale)
    log_p = p.log_prob(all_levels((4, 5)))  # (256, 4, 5)
    assert log_p.dtype == F64
    torch.testing.assert_close(log_p.exp().sum(0), torch.ones(4, 5, dtype=F64), rtol=0, atol=1e-13)
    k = torch.arange(LEVELS).reshape(-1, 1, 1)
    direct = direct_discretized_logistic(k, loc, log_scale)
    torch.testing.assert_close(log_p.exp(), direct, rtol=1e-9, atol=1e-15)


def test_discretized_logistic_edge_bins_take_the_tails():
    # loc far below 0: nearly all mass in level 0; far above 1: in level 255
    p = DiscretizedLogistic(torch.tensor([-3.0, 4.0], dtype=F64), torch.full((2,), -2.0, dtype=F64))
    probs = p.log_prob(all_levels((2,))).exp()
    assert probs[0, 0] == pytest.approx(torch.sigmoid(torch.tensor((0.5 / 255 + 3.0) / math.exp(-2.0))))
    assert probs[255, 1] == pytest.approx(
        1 - torch.sigmoid(torch.tensor((1 - 0.5 / 255 - 4.0) / math.exp(-2.0)))
    )


def test_discretized_logistic_is_finite_far_in_the_tails_where_the_difference_underflows():
    # s = e^-7 at loc 0.5: level 0 is 0.5 / 1e-3 = 550 scales away; sigmoid(a) - sigmoid(b) is 0
    # in float64, the log form stays exact: log P(0) = log sigmoid(a) ~ a
    loc = torch.tensor([0.5, 0.5], dtype=F64, requires_grad=True)
    log_scale = torch.full((2,), -7.0, dtype=F64)
    log_p = DiscretizedLogistic(loc, log_scale).log_prob(torch.tensor([0.0, 100 / 255], dtype=F64))
    a = (0.5 / 255 - 0.5) / math.exp(-7.0)
    assert log_p[0].item() == pytest.approx(a - math.log1p(math.exp(a)), rel=1e-12)
    # an interior bin in the far tail, where the plain difference of sigmoids is 1e-51 / 1e-50
    b = (100 / 255 - 0.5 / 255 - 0.5) * math.exp(7.0)
    a = (100 / 255 + 0.5 / 255 - 0.5) * math.exp(7.0)
    # sigmoid(a) - sigmoid(b) = sigmoid(a) sigmoid(-b) (1 - e^(b - a)), each factor's log in closed form
    by_hand = (a - math.log1p(math.exp(a))) - math.log1p(math.exp(b)) + math.log(-math.expm1(b - a))
    assert log_p[1].item() == pytest.approx(by_hand, rel=1e-12)
    log_p.sum().backward()
    assert torch.isfinite(loc.grad).all()


def test_mixture_sums_to_one_and_is_the_weighted_sum_of_its_components():
    loc, log_scale = logistic_params((3, 4))  # 3 subpixels, K = 4
    logits = torch.randn(3, 4, dtype=F64, generator=torch.Generator().manual_seed(1))
    p = DiscretizedLogisticMixture(logits, loc, log_scale)
    log_p = p.log_prob(all_levels((3,)))  # (256, 3)
    torch.testing.assert_close(log_p.exp().sum(0), torch.ones(3, dtype=F64), rtol=0, atol=1e-13)
    k = torch.arange(LEVELS).reshape(-1, 1, 1)
    direct = (torch.softmax(logits, -1) * direct_discretized_logistic(k, loc, log_scale)).sum(-1)
    torch.testing.assert_close(log_p.exp(), direct, rtol=1e-9, atol=1e-15)
    one = DiscretizedLogisticMixture(torch.zeros(3, 1, dtype=F64), loc[:, :1], log_scale[:, :1])
    torch.testing.assert_close(
        one.log_prob(all_levels((3,))),
        DiscretizedLogistic(loc[:, 0], log_scale[:, 0]).log_prob(all_levels((3,))),
    )


def test_categorical_sums_to_one_and_is_the_softmax():
    logits = torch.randn(2, 3, LEVELS, dtype=F64, generator=torch.Generator().manual_seed(2))
    p = Categorical256(logits)
    log_p = p.log_prob(all_levels((2, 3)))  # (256, 2, 3)
    torch.testing.assert_close(log_p.exp().sum(0), torch.ones(2, 3, dtype=F64), rtol=0, atol=1e-13)
    torch.testing.assert_close(log_p, torch.log_softmax(logits, -1).movedim(-1, 0))


@pytest.mark.parametrize("kind", ["logistic", "mixture", "categorical"])
def test_samples_follow_the_probabilities_and_the_mean_is_exact(kind):
    g = torch.Generator().manual_seed(3)
    if kind == "logistic":
        p = DiscretizedLogistic(torch.tensor([0.02, 0.5], dtype=F64), torch.tensor([-4.0, -3.0], dtype=F64))
    elif kind == "mixture":
        loc = torch.tensor([[0.1, 0.9], [0.4, 0.45]], dtype=F64)
        p = DiscretizedLogisticMixture(
            torch.tensor([[0.0, 1.0], [2.0, 0.0]], dtype=F64), loc, torch.full((2, 2), -3.5, dtype=F64)
        )
    else:
        p = Categorical256(torch.randn(2, LEVELS, dtype=F64, generator=g))
    n = 20_000
    x = draw(Independent(p, 1), (n,), g)  # through the estimators' sampler, with a generator
    assert x.shape == (n, 2)
    torch.testing.assert_close(x * 255, torch.round(x * 255))  # on the grid k/255
    probs = p.log_prob(all_levels((2,))).exp()  # (256, 2)
    counts = torch.stack([torch.bincount(levels_of(x[:, j]), minlength=LEVELS) for j in range(2)], -1)
    se = (probs * (1 - probs) / n).sqrt()
    assert ((counts / n - probs).abs() <= 5 * se + 1e-4).all()
    torch.testing.assert_close(p.mean, (probs * GRID.unsqueeze(-1)).sum(0), rtol=1e-9, atol=1e-12)


def test_continuous_logistic_integrates_to_one_and_matches_the_derivative_of_its_cdf():
    p = Logistic(torch.tensor(0.3, dtype=F64), torch.tensor(0.05, dtype=F64))
    y = torch.linspace(-2, 3, 50_001, dtype=F64)
    assert torch.trapezoid(p.log_prob(y).exp(), y).item() == pytest.approx(1.0, abs=1e-9)
    t = (y - 0.3) / 0.05
    torch.testing.assert_close(p.log_prob(y), torch.log(torch.sigmoid(t) * torch.sigmoid(-t) / 0.05))


def test_dequantized_density_is_a_lower_bound_on_the_probability_of_the_level():
    """E_u[log p((x + u)/256)] - log 256 <= log P(x) = log of p's mass on the bin [x/256, (x+1)/256)."""
    p = Logistic(torch.tensor(0.4, dtype=F64), torch.tensor(0.03, dtype=F64))
    x = torch.arange(LEVELS, dtype=F64)
    u = (torch.arange(4000, dtype=F64) + 0.5) / 4000  # midpoint rule for E_u
    bound = p.log_prob((x.unsqueeze(-1) + u) / 256).mean(-1) + Dequantize().log_det_nats((1,))
    cdf = lambda y: torch.sigmoid((y - 0.4) / 0.03)  # noqa: E731
    log_mass = torch.log(cdf((x + 1) / 256) - cdf(x / 256))
    assert (bound <= log_mass + 1e-9).all()
    assert (log_mass - bound)[100:110].max() < 0.01  # tight where p is smooth across a bin


def test_the_registry_is_the_configs_list_of_likelihoods():
    assert set(LIKELIHOODS) == set(typing.get_args(Likelihoods))


@pytest.mark.parametrize("name", sorted(LIKELIHOODS))
def test_every_head_is_a_distribution_over_the_example_for_any_sample_shape(name):
    config = ModelConfig(likelihood=name, mixtures=3, latent_dim=2, hidden=(8,), net="mlp")
    model = build_model(config, (3, 4, 4))
    z = torch.randn(5, 2, 2)  # (S, B, Z)
    p = model.likelihood(z)
    assert p.batch_shape == (5, 2) and p.event_shape == (3, 4, 4)
    x = draw(p, (), torch.Generator().manual_seed(0))
    assert x.shape == (5, 2, 3, 4, 4) and p.log_prob(x).shape == (5, 2)
    assert p.mean.shape == (5, 2, 3, 4, 4)


@pytest.mark.parametrize("name", ["discretized-logistic", "logistic-mixture", "categorical"])
def test_discrete_heads_stay_float32_under_bf16_autocast(name):
    head = Likelihood(ModelConfig(likelihood=name, mixtures=2), (3, 2, 2))
    out = torch.randn(4, head.params, 3, 2, 2).bfloat16()
    x = torch.randint(0, 256, (4, 3, 2, 2)) / 255
    with torch.autocast("cpu", dtype=torch.bfloat16):
        log_p = head(out).log_prob(x)
    assert log_p.dtype == torch.float32
    torch.testing.assert_close(log_p, head(out.float()).log_prob(x))


def eight_bit_splits(n: int = 30, shape=(3, 4, 4), float_data=False):
    x = np.random.default_rng(0).integers(0, 256, (n, *shape)).astype(np.uint8)
    return split_arrays("toy", x.astype(np.float32) if float_data else x, None)


@pytest.mark.parametrize(
    "name, step, log_det",
    [
        ("discretized-logistic", Scale(255), 0.0),
        ("categorical", Scale(255), 0.0),
        ("gaussian", Dequantize(), -48 * math.log(256)),
        ("logistic", Dequantize(), -48 * math.log(256)),
    ],
)
def test_the_input_transform_follows_the_likelihood(name, step, log_det):
    splits = for_likelihood(load_scaled(eight_bit_splits()), name, "toy")
    assert splits.transform.steps == (step,)
    assert splits.log_det_nats() == pytest.approx(log_det)


def load_scaled(splits):
    """As `load_data` leaves 8-bit data: Scale(255)."""
    from dataclasses import replace

    from vaelab.data.transforms import Transform

    return replace(splits, transform=Transform((Scale(255),)))


def test_a_discrete_likelihood_on_data_that_are_not_8_bit_is_refused_with_advice():
    with pytest.raises(UserError, match="categorical scores the 256 levels.*float32.*gaussian or logistic"):
        for_likelihood(eight_bit_splits(float_data=True), "categorical", "toy.npy")
    bits = split_arrays("bits", (np.arange(60).reshape(20, 3) % 2).astype(np.float32), None)
    with pytest.raises(UserError, match="binary: use the bernoulli likelihood"):
        for_likelihood(bits, "discretized-logistic", "bits")


def test_evaluation_reports_the_data_as_given_and_bits_per_dim_of_them():
    torch.manual_seed(0)
    model = build_model(ModelConfig(likelihood="gaussian", latent_dim=2, hidden=(8,)), (3, 4, 4))
    splits = for_likelihood(load_scaled(eight_bit_splits()), "gaussian", "toy")
    x = splits.inputs("test")
    plain = evaluate_model(model, x, k=20, progress=False)
    corrected = evaluate_model(model, x, k=20, progress=False, log_det_nats=splits.log_det_nats())
    shift = -48 * math.log(256)
    for field in ("log_px", "elbo", "log_p_x_given_z", "log_p_xz"):
        assert getattr(corrected, field) == pytest.approx(getattr(plain, field) + shift, rel=1e-12)
    assert corrected.kl == plain.kl and corrected.log_px_stderr == plain.log_px_stderr
    out = corrected.to_dict()
    assert out["nll_bpd"] == pytest.approx(-corrected.log_px / (48 * math.log(2)))
    assert out["nll_bpd"] == pytest.approx(plain.to_dict()["nll_bpd"] + 8.0)  # log2(256) bits per dim
    assert out["nll_bpd_stderr"] == pytest.approx(corrected.log_px_stderr / (48 * math.log(2)))
    assert out["log_det_nats"] == pytest.approx(shift)
