"""p(x|z) for tables whose columns differ in kind: Bernoulli columns beside Gaussian ones.

A row x: (D,) of a table with some columns that hold only 0 and 1 (yes/no answers, one-hot
codes) and others that are measurements is scored column by column:

    log p(x|z) = sum_{d in B} [x_d l_d - softplus(l_d)] + sum_{d not in B} log N(x_d; mu_d, sigma_d^2)

where the decoder's output is the logit l_d for a Bernoulli column (d in B) and the mean mu_d
for a Gaussian one, and sigma_d is fixed or learned per column (`model.sigma`). The model's
head (`vaelab.models.Likelihood`) holds the mask of Bernoulli columns as a buffer, saved with the
weights, so a loaded run scores the columns as it was trained to.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import constraints

from vaelab.distributions import GeneratorSampled

__all__ = ["MixedColumns"]


class MixedColumns(GeneratorSampled):
    """Independent columns, Bernoulli where `bernoulli` is True and Gaussian elsewhere.

    out: (*S, D) decoder outputs (logits, or means); scale: (D,) or (*S, D) the Gaussian columns'
    sigma; bernoulli: (D,) bool. batch shape (*S,), event shape (D,).
    """

    arg_constraints = {"out": constraints.real, "scale": constraints.positive}
    support = constraints.real_vector

    def __init__(self, out: Tensor, scale: Tensor, bernoulli: Tensor) -> None:
        self.out, self.bernoulli = out, bernoulli
        self.scale = scale.expand_as(out)
        super().__init__(out.shape[:-1], out.shape[-1:], validate_args=False)

    @property
    def mean(self) -> Tensor:
        """E[x_d|z]: sigmoid(l_d) for a Bernoulli column, mu_d for a Gaussian one. (*S, D)"""
        return torch.where(self.bernoulli, torch.sigmoid(self.out), self.out)

    def log_prob(self, value: Tensor) -> Tensor:
        """value: (..., D) broadcasting against (*S, D) -> (...) summed over the columns, nats."""
        log_bernoulli = value * self.out - F.softplus(self.out)
        z = (value - self.out) / self.scale
        log_normal = -0.5 * z.square() - self.scale.log() - 0.5 * math.log(2 * math.pi)
        return torch.where(self.bernoulli, log_bernoulli, log_normal).sum(-1)

    def sample(
        self,
        sample_shape: torch.Size | list[int] | tuple[int, ...] = (),
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """x ~ p(x|z) with `generator`: sample_shape + (*S, D), without gradient."""
        shape = self._extended_shape(torch.Size(sample_shape))
        with torch.no_grad():
            u = torch.rand(shape, generator=generator, dtype=self.out.dtype, device=self.out.device)
            eps = torch.randn(shape, generator=generator, dtype=self.out.dtype, device=self.out.device)
            bits = (u < torch.sigmoid(self.out)).to(self.out.dtype)
            return torch.where(self.bernoulli, bits, self.out + self.scale * eps)
