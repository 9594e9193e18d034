"""Training objectives, separate from the model: any protocol model trains under any of them.

Each objective maps (model, x, generator) to an `ObjectiveOutput`:

- `surrogate` (B,): what the optimizer maximizes, per example (the trainer takes -mean as loss);
- `terms`: the ELBO and its two terms per example, the numbers that are logged. The surrogate
  is never logged as the bound (for beta != 1 it is not one).

All terms are summed over pixels and latent dimensions and returned per example, shape (B,),
in nats; the trainer reduces over the batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from vaelab.distributions import analytic_kl, draw
from vaelab.estimators import ELBOTerms, elbo_terms


@dataclass(frozen=True)
class ObjectiveOutput:
    surrogate: Tensor
    terms: ELBOTerms


def beta_elbo(model, x, generator=None, *, beta: float = 1.0, k: int = 1) -> ObjectiveOutput:
    """E_q[log p(x|z)] - beta KL(q || p) (Higgins et al. 2017); beta = 1 is the ELBO."""
    terms = elbo_terms(model, x, 1, generator=generator)  # one reparameterized sample, analytic KL
    # (beta may be a tensor in a compiled step; at beta = 1 this is terms.elbo exactly)
    surrogate = terms.log_p_x_given_z - beta * terms.kl
    return ObjectiveOutput(surrogate, terms)


def iwae(model, x, generator=None, *, beta: float = 1.0, k: int = 1) -> ObjectiveOutput:
    """The importance-weighted bound (Burda et al. 2015, eq. 8), maximized directly:

        L_k(x) = log (1/k) sum_i p(x, z_i) / q(z_i|x),  z_i ~ q(z|x) reparameterized.

    L_1 is the ELBO and L_k rises towards log p(x) with k. The logged terms are the ELBO of
    the same k samples (mean of log p(x|z_i), analytic KL), so curves stay comparable.
    """
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


def reconstruction(model, x, generator=None, *, beta: float = 1.0, k: int = 1) -> ObjectiveOutput:
    """Autoencoder objective: log p(x | z = f(x)) with the deterministic code (BCE or scaled MSE).

    There is no KL term: a point-mass code has no finite KL to a density. `elbo` is reported as
    the reconstruction term only and must not be read as a bound on log p(x).
    """
    z = model.posterior(x).mean  # (B, Z)
    log_p_x_given_z = model.likelihood(z).log_prob(x)
    zero = torch.zeros_like(log_p_x_given_z)
    return ObjectiveOutput(log_p_x_given_z, ELBOTerms(log_p_x_given_z, log_p_x_given_z, zero))


Objective = Callable[..., ObjectiveOutput]
OBJECTIVES: dict[str, Objective] = {"elbo": beta_elbo, "iwae": iwae}


def objective_for(model, name: str) -> Objective:
    """The objective a run trains with: the reconstruction term for a deterministic model."""
    return reconstruction if getattr(model, "deterministic", False) else OBJECTIVES[name]
