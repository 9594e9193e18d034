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
import functools
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import Protocol, TypeAlias

import torch
from torch import Tensor, nn

from vaelab.distributions import analytic_kl, draw
from vaelab.estimators import ELBOTerms, LayeredELBOTerms, elbo_terms
from vaelab.hierarchical import layer_log_ratios
from vaelab.models import LatentVariableModel, given_labels
from vaelab.semisupervised import M2, m2_terms

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
    "free_bits_kl",
    "iwae",
    "logged_term_names",
    "objective_for",
    "reconstruction",
    "semi_supervised",
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
    """surrogate: (B,) what the optimizer maximizes; terms: the logged terms, each (B,); bound:
    (B,) the bound at beta = 1 where the surrogate is not one even then (the M2 objective's
    classifier term), None where it is the surrogate."""

    surrogate: Tensor
    terms: LoggedTerms
    bound: Tensor | None = None


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
    free_bits: float = 0.0,
) -> ObjectiveOutput:
    """E_q[log p(x|z)] - beta KL(q || p) (Higgins et al. 2017); beta = 1 is the ELBO. With
    free_bits > 0 the KL is `free_bits_kl` (per stochastic layer; the logged terms stay the ELBO's)."""
    model = given_labels(model, labels)
    terms = elbo_terms(model, x, 1, generator=generator)  # one reparameterized sample, analytic KL
    kl = terms.kl
    if free_bits > 0:
        groups = terms.kl_layers if isinstance(terms, LayeredELBOTerms) else terms.kl[:, None]
        kl = free_bits_kl(groups, free_bits)
    # (beta may be a tensor in a compiled step; at beta = 1 this is terms.elbo exactly)
    surrogate = terms.log_p_x_given_z - beta * kl
    return ObjectiveOutput(surrogate, terms)


def free_bits_kl(kl_groups: Tensor, free_bits: float) -> Tensor:
    """The KL penalty of free bits (Kingma et al. 2016, eq. 15), per example: kl_groups (B, G), the
    KL of G groups (stochastic layers) per example -> (B,) whose batch mean is

        sum_g max(lambda, (1/B) sum_b KL_{b,g}),

    i.e. row b gets KL_{b,g} for a group whose batch mean exceeds lambda, and the constant lambda
    (no gradient) for one below it: a layer with less than lambda nats is not pushed to the prior."""
    above = kl_groups.mean(0) > free_bits  # (G,)
    return torch.where(above, kl_groups, torch.full_like(kl_groups, free_bits)).sum(-1)


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
    layered = layer_log_ratios(q_z_given_x, p_z, z)  # (k, B, L) for a hierarchical model
    # log q/p of each sample, (k, B)
    log_ratio = q_z_given_x.log_prob(z) - p_z.log_prob(z) if layered is None else layered.sum(-1)
    # beta < 1 (KL warm-up) tempers the prior-to-posterior ratio; beta = 1 is the bound itself
    log_w = log_p_x_given_z - beta * log_ratio  # (k, B)
    bound = torch.logsumexp(log_w, dim=0) - math.log(k)  # (B,)
    kl_q_p = analytic_kl(q_z_given_x, p_z)
    if kl_q_p is None:  # a mixture prior: the Monte Carlo KL of the same k samples
        kl_q_p = log_ratio.mean(0)
    recon = log_p_x_given_z.mean(0)
    if layered is not None:  # the per-layer KLs of the same k samples, summing to kl_q_p
        return ObjectiveOutput(bound, LayeredELBOTerms(recon - kl_q_p, recon, kl_q_p, layered.mean(0)))
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


def semi_supervised(
    model: M2,
    x: Tensor,
    generator: torch.Generator | None = None,
    *,
    beta: float | Tensor = 1.0,
    k: int = 1,
    labels: Tensor | None = None,
) -> ObjectiveOutput:
    """The M2 objective (Kingma et al. 2014, eq. 9), per example: the bound L(x, y) on labelled
    rows and U(x) on unlabelled ones (labels -1; None: all), by exact enumeration over classes
    (`vaelab.semisupervised.m2_terms`), plus alpha_row log q(y|x) on the labelled rows, with
    alpha_row = model.alpha * B / B_labelled, so that the batch mean of B rows, B_l labelled, is
    (B_u / B) E_u[U(x)] + (B_l / B) E_l[L(x, y)] + model.alpha * E_l[log q(y|x)] (their eq. 9;
    `vaelab.semisupervised` relates model.alpha to their alpha = 0.1 N). beta < 1 (KL warm-up)
    weights the joint KL. The logged terms are the bound's (`ELBOTerms`)."""
    terms = m2_terms(model, x, labels, generator)
    weight = model.alpha * len(x) / terms.labelled.sum().clamp(min=1).to(terms.elbo.dtype)
    surrogate = terms.log_p_x_given_z - beta * terms.kl + weight * terms.log_q_y
    return ObjectiveOutput(surrogate, ELBOTerms(terms.elbo, terms.log_p_x_given_z, terms.kl), terms.elbo)


OBJECTIVES: dict[str, Objective] = {"elbo": beta_elbo, "iwae": iwae}


def objective_for(model: LatentVariableModel, name: str, *, free_bits: float = 0.0) -> Objective:
    """The objective a run trains with: the M2 bound for the semi-supervised model; the
    reconstruction term for a deterministic model; the elbo with `free_bits` > 0 trains on
    `free_bits_kl` (`RunConfig` refuses them elsewhere)."""
    if isinstance(model, M2):
        return semi_supervised  # type: ignore[return-value]  # (it also takes the batch's labels)
    if model.deterministic:
        return reconstruction
    if free_bits > 0 and name == "elbo":
        return functools.partial(beta_elbo, free_bits=free_bits)
    return OBJECTIVES[name]


def layer_names(model: LatentVariableModel) -> tuple[str, ...]:
    """The per-layer KL terms of a hierarchical model, kl_layer1 (next to x) .. kl_layerL; ()
    for a model of one stochastic layer."""
    layers = getattr(model, "layers", 1)
    return tuple(f"kl_layer{i}" for i in range(1, layers + 1)) if layers > 1 else ()


def logged_term_names(model: LatentVariableModel) -> tuple[str, ...]:
    """The names of the terms `model`'s objective logs, in `term_sums`' order: elbo,
    log_p_x_given_z, kl (`ELBOTerms`), then kl_layer1..kl_layerL for a hierarchical model
    (`LayeredELBOTerms`); log_p_x_given_z alone for a deterministic model."""
    if model.deterministic:
        return tuple(field.name for field in fields(ReconstructionTerms))
    return (*(field.name for field in fields(ELBOTerms)), *layer_names(model))


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
    kl_layers: tuple[float, ...] = ()

    @classmethod
    def from_sums(cls, names: tuple[str, ...], sums: Tensor, n: int) -> MeanTerms:
        """From the float64 sums (T + 1,) of `term_sums(terms, bound)` over n examples, whose
        terms are `names` (`logged_term_names`; a hierarchical model's kl_layer* as kl_layers)."""
        *means, bound = (sums / n).tolist()
        terms = dict(zip(names, means, strict=True))
        layers = tuple(terms.pop(name) for name in names if name.startswith("kl_layer"))
        return cls(bound=bound, kl_layers=layers, **terms)

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
        layers = {f"kl_layer{i}": value for i, value in enumerate(self.kl_layers, 1)}
        return {name: value for name, value in (terms | layers).items() if value is not None}


def term_sums(terms: LoggedTerms, *extra: Tensor) -> Tensor:
    """Batch sums of each logged term (in field order: elbo, log_p_x_given_z, kl, then a
    hierarchical model's L per-layer KLs, or log_p_x_given_z alone) and then of each of `extra`
    (each (B,)): (T + E,), float64 and detached, so that epoch and dataset means do not lose
    digits to float32."""
    parts = (*(getattr(terms, field.name) for field in fields(terms)), *extra)  # (B,) or (B, L)
    return torch.cat([t.detach().sum(0, dtype=torch.float64).reshape(-1) for t in parts])


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
            bound_values = result.surrogate if result.bound is None else result.bound
            sums += term_sums(result.terms, bound_values)
    return MeanTerms.from_sums(names, sums, len(x))
