"""Bayes' rule: the diagnostic-test calculator and the posterior over hypotheses, against hand sums."""

from __future__ import annotations

import pytest
import torch

from vaelab.theory.bayes import medical_test, posterior_over_hypotheses

DTYPE = torch.float64


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
    "args, message",
    [
        ((1.5, 0.9, 0.1), "prior must be a probability"),
        ((0.1, -0.1, 0.1), "sensitivity must be a probability"),
        ((0.1, 0.9, float("nan")), "false_positive_rate must be a probability"),
        ((0.0, 0.9, 0.0), "a positive result is impossible"),
    ],
)
def test_medical_test_rejects_bad_input(args, message):
    with pytest.raises(ValueError, match=message):
        medical_test(*args)


def test_posterior_over_hypotheses_rejects_bad_input():
    with pytest.raises(ValueError, match="prior must be non-negative and sum to 1"):
        posterior_over_hypotheses([0.5, 0.6], [1.0, 1.0])
    with pytest.raises(ValueError, match="the evidence P\\(d\\) is zero"):
        posterior_over_hypotheses([0.5, 0.5], [0.0, 0.0])
    with pytest.raises(ValueError, match="likelihoods must be non-negative"):
        posterior_over_hypotheses([0.5, 0.5], [-1.0, 1.0])
