"""Bayes' rule as small, checked tools: a posterior over finitely many hypotheses, and the
diagnostic-test calculator behind `vaelab bayes`.

    P(h | d) = P(d | h) P(h) / P(d),   P(d) = sum_h P(d | h) P(h).

The same rule, with z for h and x for d, is the posterior p(z|x) = p(x|z) p(z) / p(x) that a VAE's
q(z|x) approximates; its evidence p(x) is the quantity `vaelab.estimators` bounds and estimates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["HypothesisPosterior", "MedicalTestResult", "medical_test", "posterior_over_hypotheses"]


@dataclass(frozen=True)
class HypothesisPosterior:
    """Bayes' rule over a finite set of hypotheses: posterior (..., K) and evidence (...)."""

    posterior: Tensor
    evidence: Tensor


def posterior_over_hypotheses(
    prior: Tensor | Sequence[float], likelihood: Tensor | Sequence[float]
) -> HypothesisPosterior:
    """P(h | d) = P(d | h) P(h) / P(d), with evidence P(d) = sum_h P(d | h) P(h).

    prior: (K,) probabilities summing to 1; likelihood: (..., K), P(d | h) for each hypothesis
    (a probability or a density, so non-negative). Returns posterior (..., K), evidence (...). float64.
    """
    prior = torch.as_tensor(prior, dtype=torch.float64)
    likelihood = torch.as_tensor(likelihood, dtype=torch.float64)
    if (prior < 0).any() or abs(float(prior.sum()) - 1.0) > 1e-9:
        raise ValueError("prior must be non-negative and sum to 1")
    if (likelihood < 0).any():
        raise ValueError("likelihoods must be non-negative")
    joint = prior * likelihood  # (..., K)
    evidence = joint.sum(-1)
    if (evidence <= 0).any():
        raise ValueError("the evidence P(d) is zero: the data are impossible under every hypothesis")
    return HypothesisPosterior(posterior=joint / evidence.unsqueeze(-1), evidence=evidence)


@dataclass(frozen=True)
class MedicalTestResult:
    """A diagnostic test read through Bayes' rule. All fields are probabilities.

    The 2x2 joint: true_positive = P(D, +), false_negative = P(D, -), false_positive = P(¬D, +),
    true_negative = P(¬D, -). evidence = P(+); posterior = P(D | +); posterior_negative = P(D | -).
    """

    prior: float
    sensitivity: float
    false_positive_rate: float
    true_positive: float
    false_negative: float
    false_positive: float
    true_negative: float
    evidence: float
    posterior: float
    posterior_negative: float


def medical_test(prior: float, sensitivity: float, false_positive_rate: float) -> MedicalTestResult:
    """P(D | +) = P(+ | D) P(D) / [P(+ | D) P(D) + P(+ | ¬D) P(¬D)].

    prior = P(D), sensitivity = P(+ | D), false_positive_rate = P(+ | ¬D). For prior 0.01,
    sensitivity 0.95, FPR 0.05: P(+) = 0.0095 + 0.0495 = 0.059 and P(D | +) = 0.0095 / 0.059 ≈ 0.161
    — a positive result from a 95%-sensitive test still leaves the disease unlikely when it is rare.
    """
    for name, value in (
        ("prior", prior),
        ("sensitivity", sensitivity),
        ("false_positive_rate", false_positive_rate),
    ):
        if not 0.0 <= value <= 1.0 or math.isnan(value):
            raise ValueError(f"{name} must be a probability in [0, 1], got {value}")
    tp, fn = prior * sensitivity, prior * (1 - sensitivity)
    fp, tn = (1 - prior) * false_positive_rate, (1 - prior) * (1 - false_positive_rate)
    evidence = tp + fp
    if evidence == 0:
        raise ValueError("P(+) = 0: a positive result is impossible with these numbers")
    negative = fn + tn
    return MedicalTestResult(
        prior=prior,
        sensitivity=sensitivity,
        false_positive_rate=false_positive_rate,
        true_positive=tp,
        false_negative=fn,
        false_positive=fp,
        true_negative=tn,
        evidence=evidence,
        posterior=tp / evidence,
        posterior_negative=fn / negative if negative > 0 else math.nan,
    )
