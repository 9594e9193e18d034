"""The inference gap split as Cremer et al. (2018) do: approximation and amortization gaps.

For a model with an encoder, on each example x,

    log p(x) - ELBO(q_enc)  =  [log p(x) - ELBO(q*)]  +  [ELBO(q*) - ELBO(q_enc)]
         inference gap          approximation gap         amortization gap

where q_enc = q(z|x) is the encoder's posterior and q* the best member of the same family for this
one x, found by optimizing the family's parameters for x alone (the encoder's output is the start:
"local" variational parameters; a flow's shared weights stay fixed). The approximation gap is what
the family cannot do; the amortization gap is what sharing one encoder across the data costs.

Method (named in every report): Adam on the per-example parameters, `steps` steps with `samples`
reparameterized samples per step and a cosine-decayed learning rate; ELBO(q_enc) and ELBO(q*) with
`eval_samples` samples each; log p(x) by importance sampling with k samples from q*, a tighter
proposal than q_enc (Cremer et al. 2018 use AIS or IWAE; IS from q* is the same kind of estimate).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor
from torch.distributions import Distribution

from vaelab.distributions import draw
from vaelab.errors import UserError
from vaelab.estimators import log_px_importance


@dataclass(frozen=True)
class InferenceGaps:
    """Batch means over `num_examples` rows, nats per example; *_stderr: Monte Carlo standard
    errors of the means (over rows, which also carry the sampling noise)."""

    num_examples: int
    log_px: float
    elbo_encoder: float
    elbo_optimized: float
    approximation_gap: float
    approximation_gap_stderr: float
    amortization_gap: float
    amortization_gap_stderr: float
    method: str

    @property
    def inference_gap(self) -> float:
        return self.approximation_gap + self.amortization_gap

    def to_dict(self) -> dict:
        return asdict(self)


class _FixedPosterior:
    """The model with q(z|x) replaced by given per-example parameters (rows of `x` only)."""

    def __init__(self, model, params: Tensor) -> None:
        self.model, self.params = model, params

    def posterior(self, x: Tensor) -> Distribution:
        return self.model.posterior_family(self.params)

    def prior(self) -> Distribution:
        return self.model.prior()

    def likelihood(self, z: Tensor) -> Distribution:
        return self.model.likelihood(z)

    latent_dim = property(lambda self: self.model.latent_dim)
    x_shape = property(lambda self: self.model.x_shape)
    deterministic = False


def _elbo(model, q: Distribution, x: Tensor, samples: int, generator) -> Tensor:
    """Monte Carlo ELBO of each row: mean over `samples` of log p(x|z) + log p(z) - log q(z|x), (B,)."""
    z = draw(q, (samples,), generator)
    return (model.likelihood(z).log_prob(x) + model.prior().log_prob(z) - q.log_prob(z)).mean(0)


def inference_gaps(
    model,
    x: Tensor,
    *,
    steps: int = 300,
    samples: int = 8,
    lr: float = 0.01,
    eval_samples: int = 500,
    k: int = 1000,
    seed: int = 0,
) -> InferenceGaps:
    """The approximation and amortization gaps on the rows of x: (B, *x_shape)."""
    if getattr(model, "deterministic", False) or not hasattr(model, "posterior_params"):
        raise UserError("the inference gaps need a model with an encoder's posterior (model.kind vae)")
    generator = torch.Generator(device=x.device).manual_seed(seed)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        with torch.no_grad():
            start = model.posterior_params(x)
            elbo_encoder = _elbo(model, model.posterior_family(start), x, eval_samples, generator)
        params = start.clone().requires_grad_(True)
        optimizer = torch.optim.Adam([params], lr=lr)
        for step in range(steps):
            for group in optimizer.param_groups:
                group["lr"] = 0.5 * lr * (1 + math.cos(math.pi * step / steps))
            # the rows' ELBOs are independent, so the sum's gradient optimizes each row's own q
            loss = -_elbo(model, model.posterior_family(params), x, samples, generator).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        params = params.detach()
        with torch.no_grad():
            elbo_optimized = _elbo(model, model.posterior_family(params), x, eval_samples, generator)
            log_px = log_px_importance(_FixedPosterior(model, params), x, k, generator=generator).value
    finally:
        for p in model.parameters():
            p.requires_grad_(True)
    approximation, amortization = log_px - elbo_optimized, elbo_optimized - elbo_encoder
    n = len(x)

    def stderr(values: Tensor) -> float:
        return float(values.std() / math.sqrt(n)) if n > 1 else math.nan

    method = (
        f"q* per example from the encoder's output: Adam, {steps} steps of {samples} samples, "
        f"lr {lr:g} (cosine); ELBOs with {eval_samples} samples; log p(x) by IS, k={k}, from q*"
    )
    return InferenceGaps(
        num_examples=n,
        log_px=float(log_px.mean()),
        elbo_encoder=float(elbo_encoder.mean()),
        elbo_optimized=float(elbo_optimized.mean()),
        approximation_gap=float(approximation.mean()),
        approximation_gap_stderr=stderr(approximation),
        amortization_gap=float(amortization.mean()),
        amortization_gap_stderr=stderr(amortization),
        method=method,
    )
