"""Training objectives, separate from the model: any protocol model trains under any of them.

Each objective maps (model, x, generator) to an `ObjectiveOutput`:

- `surrogate` (B,): what the optimizer maximizes, per example (the trainer takes -mean as loss);
- `terms`: the numbers that are logged, per example: the ELBO and its two terms (`ELBOTerms`),
  or an autoencoder's reconstruction term alone (`ReconstructionTerms`: it has no ELBO and no
  KL). The surrogate is never logged as the bound (for beta != 1 it is not one).

All terms are summed over pixels and latent dimensions and returned per example, shape (B,),
in nats; the trainer reduces over the batch. `labels` (B,) int64 (-1: unlabelled) are each
example's class, passed for a model that uses labels (`vaelab.models.given_labels`: the bound is
then that of `model.given(labels)`, log p(x|y)); None for the others. `dataset_terms` evaluates
an objective's bound and terms over a whole dataset (the trainer's validation pass, the
autoencoder's evaluation).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import Protocol, TypeAlias

import torch
from torch import Tensor, nn

from vaelab.distributions import analytic_kl, draw
from vaelab.estimators import ELBOTerms, elbo_terms
from vaelab.models import LatentVariableModel, given_labels

__all__ = [
    "DENSITY_TERMS",
    "EVAL_BATCH",
    "OBJECTIVES",
    "LoggedTerms",
    "MeanTerms",
    "Objective",
    "ObjectiveOutput",
    "ReconstructionTerms",
    "beta_elbo",
    "dataset_terms",
    "iwae",
    "logged_term_names",
    "objective_for",
    "reconstruction",
    "term_sums",
]

DENSITY_TERMS = ("elbo", "log_p_x_given_z")
"""The logged terms that are log-densities of x (bounds on, or terms of, log p(x)): a change of
variables of the input adds its log-determinant to them; the KL is of z and does not change."""

EVAL_BATCH = 1000
"""Examples per batch of `dataset_terms`: no gradients are kept, so large batches are cheap."""


@dataclass(frozen=True)
class ReconstructionTerms:
    """An autoencoder's one logged term, (B,) in nats: log p(x | z = f(x)). It has no ELBO and no
    KL (see `reconstruction`), so none is logged."""

    log_p_x_given_z: Tensor


LoggedTerms: TypeAlias = ELBOTerms | ReconstructionTerms


@dataclass(frozen=True)
class ObjectiveOutput:
    """surrogate: (B,) what the optimizer maximizes; terms: the logged terms, each (B,)."""

    surrogate: Tensor
    terms: LoggedTerms


class Objective(Protocol):
    def __call__(
        self,
        model: LatentVariableModel,
        x: Tensor,
        generator: torch.Generator | None = None,
        *,
        beta: float | Tensor = 1.0,
        k: int = 1,
        labels: Tensor | None = None,
    ) -> ObjectiveOutput: ...


def beta_elbo(
    model: LatentVariableModel,
    x: Tensor,
    generator: torch.Generator | None = None,
    *,
    beta: float | Tensor = 1.0,
    k: int = 1,
    labels: Tensor | None = None,
) -> ObjectiveOutput:
    """E_q[log p(x|z)] - beta KL(q || p) (Higgins et al. 2017); beta = 1 is the ELBO."""
    model = given_labels(model, labels)
    terms = elbo_terms(model, x, 1, generator=generator)  # one reparameterized sample, analytic KL
    # (beta may be a tensor in a compiled step; at beta = 1 this is terms.elbo exactly)
    surrogate = terms.log_p_x_given_z - beta * terms.kl
    return ObjectiveOutput(surrogate, terms)


def iwae(
    model: LatentVariableModel,
    x: Tensor,
    generator: torch.Generator | None = None,
    *,
    beta: float | Tensor = 1.0,
    k: int = 1,
    labels: Tensor | None = None,
) -> ObjectiveOutput:
    """The importance-weighted bound (Burda et al. 2015, eq. 8), maximized directly:

        L_k(x) = log (1/k) sum_i p(x, z_i) / q(z_i|x),  z_i ~ q(z|x) reparameterized.

    L_1 is the ELBO and L_k rises towards log p(x) with k. The logged terms are the ELBO of
    the same k samples (mean of log p(x|z_i), analytic KL), so curves stay comparable.
    """
    model = given_labels(model, labels)
    q_z_given_x = model.posterior(x)
    p_z = model.prior()
    z = draw(q_z_given_x, (k,), generator)  # (k, B, Z)
    log_p_x_given_z = model.likelihood(z).log_prob(x)  # (k, B)
    log_ratio = q_z_given_x.log_prob(z) - p_z.log_prob(z)  # (k, B), log q/p of each sample
    # beta < 1 (KL warm-up) tempers the prior-to-posterior ratio; beta = 1 is the bound itself
    log_w = log_p_x_given_z - beta * log_ratio  # (k, B)
    bound = torch.logsumexp(log_w, dim=0) - math.log(k)  # (B,)
    kl_q_p = analytic_kl(q_z_given_x, p_z)
    if kl_q_p is None:  # a mixture prior: the Monte Carlo KL of the same k samples
        kl_q_p = log_ratio.mean(0)
    recon = log_p_x_given_z.mean(0)
    return ObjectiveOutput(bound, ELBOTerms(recon - kl_q_p, recon, kl_q_p))


def reconstruction(
    model: LatentVariableModel,
    x: Tensor,
    generator: torch.Generator | None = None,
    *,
    beta: float | Tensor = 1.0,
    k: int = 1,
    labels: Tensor | None = None,
) -> ObjectiveOutput:
    """Autoencoder objective: log p(x | z = f(x)) with the deterministic code (BCE or scaled MSE).

    An autoencoder has no ELBO: a point-mass code has no finite KL to a density, so nothing here
    bounds log p(x). The one logged term is the reconstruction term (`ReconstructionTerms`).
    """
    model = given_labels(model, labels)
    z = model.posterior(x).mean  # (B, Z)
    log_p_x_given_z = model.likelihood(z).log_prob(x)
    return ObjectiveOutput(log_p_x_given_z, ReconstructionTerms(log_p_x_given_z))


OBJECTIVES: dict[str, Objective] = {"elbo": beta_elbo, "iwae": iwae}


def objective_for(model: LatentVariableModel, name: str) -> Objective:
    """The objective a run trains with: the reconstruction term for a deterministic model."""
    return reconstruction if model.deterministic else OBJECTIVES[name]


def logged_term_names(model: LatentVariableModel) -> tuple[str, ...]:
    """The names of the terms `model`'s objective logs, in `term_sums`' order: elbo,
    log_p_x_given_z, kl (`ELBOTerms`); log_p_x_given_z alone for a deterministic model."""
    terms = ReconstructionTerms if model.deterministic else ELBOTerms
    return tuple(field.name for field in fields(terms))


# ------------------------------------------------------------------------- over a whole dataset


@dataclass(frozen=True)
class MeanTerms:
    """Dataset means, nats per example: the logged terms and the objective's bound at beta = 1.
    A deterministic model logs log_p_x_given_z alone: its elbo and kl are None (it has neither;
    see `reconstruction`), and its bound is the reconstruction term."""

    log_p_x_given_z: float
    bound: float
    elbo: float | None = None
    kl: float | None = None

    @classmethod
    def from_sums(cls, names: tuple[str, ...], sums: Tensor, n: int) -> MeanTerms:
        """From the float64 sums (T + 1,) of `term_sums(terms, bound)` over n examples, whose
        terms are `names` (`logged_term_names`)."""
        *means, bound = (sums / n).tolist()
        return cls(bound=bound, **dict(zip(names, means, strict=True)))

    def shifted(self, log_det_nats: float) -> MeanTerms:
        """The terms as log-densities of the data as given: `log_det_nats` (the input transform's
        change of variables, `vaelab.data.transforms`) added to each log-density of x
        (`DENSITY_TERMS` and the bound), the KL unchanged."""
        if log_det_nats == 0:
            return self
        values = {name: getattr(self, name) for name in (*DENSITY_TERMS, "bound")}
        # (an autoencoder has no elbo: its None stays None)
        return dataclasses.replace(self, **{k: v + log_det_nats for k, v in values.items() if v is not None})

    def logged(self) -> dict[str, float]:
        """The logged terms by name, in `ELBOTerms`' order, leaving out those the model lacks."""
        terms = {"elbo": self.elbo, "log_p_x_given_z": self.log_p_x_given_z, "kl": self.kl}
        return {name: value for name, value in terms.items() if value is not None}


def term_sums(terms: LoggedTerms, *extra: Tensor) -> Tensor:
    """Batch sums of each logged term (in field order: elbo, log_p_x_given_z, kl, or
    log_p_x_given_z alone) and then of each of `extra` (each (B,)): (T + E,), float64 and
    detached, so that epoch and dataset means do not lose digits to float32."""
    parts = (*(getattr(terms, field.name) for field in fields(terms)), *extra)
    return torch.stack([t.detach().sum(dtype=torch.float64) for t in parts])


@contextmanager
def _eval_mode(model: LatentVariableModel) -> Iterator[None]:
    """Dropout off inside the block for a network model; its train/eval mode is restored after."""
    if not isinstance(model, nn.Module):
        yield
        return
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@torch.no_grad()
def dataset_terms(
    model: LatentVariableModel,
    x: Tensor,
    *,
    seed: int = 0,
    objective: str = "elbo",
    k: int = 1,
    batch_size: int = EVAL_BATCH,
    labels: Tensor | None = None,
) -> MeanTerms:
    """Means over a data set x: (N, *x_shape) (fixed seed) of the ELBO, E_q[log p(x|z)], KL and
    the bound of `objective` at beta = 1 with `k` samples per example (the ELBO terms are then
    k-sample means), in eval mode. A deterministic model has the reconstruction term alone.
    Runs on the model's device (x's for a model without parameters); x may live elsewhere, its
    batches are copied there. labels: (N,) the rows' labels, for a model that uses them."""
    device = next(iter(model.parameters()), x).device if isinstance(model, nn.Module) else x.device
    generator = torch.Generator(device=device).manual_seed(seed)
    bound = objective_for(model, objective)
    names = logged_term_names(model)
    sums = torch.zeros(len(names) + 1, dtype=torch.float64, device=device)
    with _eval_mode(model):
        for begin in range(0, len(x), batch_size):
            rows = slice(begin, begin + batch_size)
            y = None if labels is None else labels[rows].to(device)
            result = bound(model, x[rows].to(device), generator, k=k, labels=y)
            sums += term_sums(result.terms, result.surrogate)
    return MeanTerms.from_sums(names, sums, len(x))
