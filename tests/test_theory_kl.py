"""KL divergences of the theory toolkit: the discrete closed form, Monte Carlo KL, and one Gaussian
fitted to a bimodal mixture under each direction of the KL. (The Gaussian closed forms and the
registered KL pairs live in `vaelab.distributions` and are tested in test_distributions.py.)"""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Categorical, MixtureSameFamily, Normal, kl_divergence

from vaelab.theory.kl import (
    KLDirectionsResult,
    kl_directions_curves,
    kl_directions_experiment,
    kl_discrete,
    kl_monte_carlo,
)

DTYPE = torch.float64


def gen(seed):
    return torch.Generator().manual_seed(seed)


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


def test_kl_monte_carlo_against_closed_form_and_validation():
    q, p = Normal(torch.tensor(0.3, dtype=DTYPE), 0.8), Normal(torch.tensor(-0.5, dtype=DTYPE), 1.3)
    mc = kl_monte_carlo(q, p, 50_000, gen(13))
    assert abs(float(mc.value - kl_divergence(q, p))) < 4 * float(mc.stderr)
    with pytest.raises(ValueError, match="n must be >= 2"):
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
    with pytest.raises(ValueError, match="mixture weights must sum to 1"):
        kl_directions_experiment(weights=(0.5, 0.6))
    with pytest.raises(ValueError, match="positive weights and stds"):
        kl_directions_experiment(stds=(1.0, -1.0))
    with pytest.raises(ValueError, match="equal lengths"):
        kl_directions_experiment(means=(0.0,))
    with pytest.raises(ValueError, match="at least one start"):
        kl_directions_experiment(reverse_starts=())


def test_kl_directions_curves_are_the_densities_of_p_and_of_the_fits(kl_result):
    curves = kl_directions_curves(kl_result, points=4001)
    x = curves.x
    assert x.shape == curves.p.shape == curves.reverse.shape == curves.forward.shape == (4001,)
    assert x.dtype == DTYPE
    # The grid spans the forward fit's 3 standard deviations (sqrt(10) ~ 3.16 > 4/3 of the modes).
    spread = 3 * kl_result.forward.std
    assert float(x[0]) == pytest.approx(-3.0 - spread) and float(x[-1]) == pytest.approx(3.0 + spread)
    # Each fit is a density: its mass on the grid is its CDF difference over the grid's ends, and it
    # peaks at its mean with height 1 / (sqrt(2 pi) s).
    for density, fit in ((curves.reverse, kl_result.reverse), (curves.forward, kl_result.forward)):
        q = Normal(torch.tensor(fit.mean, dtype=DTYPE), torch.tensor(fit.std, dtype=DTYPE))
        mass = float(q.cdf(x[-1]) - q.cdf(x[0]))
        assert float(torch.trapezoid(density, x)) == pytest.approx(mass, abs=1e-6)
        peak = int(density.argmax())
        assert float(x[peak]) == pytest.approx(fit.mean, abs=float(x[1] - x[0]))
        assert float(density.max()) == pytest.approx(1 / (math.sqrt(2 * math.pi) * fit.std), rel=1e-4)
    p = 0.5 * Normal(-3.0, 1.0).log_prob(x).exp() + 0.5 * Normal(3.0, 1.0).log_prob(x).exp()
    torch.testing.assert_close(curves.p, p, rtol=1e-12, atol=1e-15)
