"""Transforms: the data as stored -> the model's float32 input, one batch at a time.

Data are kept as stored (8-bit data as uint8, four times smaller than float32 and exact; the
rest as float32) and turned into model input per batch, so that a split is resident once (in
memory or on a device) and every random draw of the input (dynamic binarization, dequantization
noise) comes from the run's seeded generator:

    x_input = transform(x_stored, generator)        # (B, *x_shape) float32

A `Transform` is a pipeline of steps applied in order. Each step says how it changes the density
of the data (`log_det_nats`), so that a model's log-density of its input converts to the
log-density, or the log-probability, of the data as given:

    log p_data(x) = log p_model(transform(x)) + transform.log_det_nats(x_shape)

(for dequantization this is the bound E_u[log p(y)] - D log 256 <= log P(x), Jensen's).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

UINT8_LEVELS = 256
DEQUANTIZE_EVAL_SEED = 20170101
"""Seed of the one fixed dequantization draw with which validation and test inputs are scored."""


@dataclass(frozen=True)
class Scale:
    """x -> x / divisor (8-bit data: divisor 255 maps the levels 0..255 onto the grid k/255 of
    [0, 1]). A discrete likelihood scores the levels themselves, so the step changes no
    probability: log_det 0."""

    divisor: float

    def __call__(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        return x.to(torch.float32) / self.divisor

    def log_det_nats(self, x_shape: tuple[int, ...]) -> float:
        return 0.0


@dataclass(frozen=True)
class Dequantize:
    """8-bit levels x in {0..255} -> y = (x + u) / 256, u ~ U[0, 1)^D: a continuous density on
    [0, 1)^D scores y, and E_u[log p(y)] - D log 256 is a lower bound on log P(x) (Jensen), the
    number that compares with the literature's discrete likelihoods."""

    def __call__(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        if generator is None:  # a fixed draw: every evaluation scores the same y
            generator = torch.Generator(device=x.device).manual_seed(DEQUANTIZE_EVAL_SEED)
        u = torch.rand(x.shape, generator=generator, device=x.device, dtype=torch.float32)
        return (x.to(torch.float32) + u) / UINT8_LEVELS

    def log_det_nats(self, x_shape: tuple[int, ...]) -> float:
        return -math.prod(x_shape) * math.log(UINT8_LEVELS)


@dataclass(frozen=True)
class Binarize:
    """Dynamic binarization: a fresh x' ~ Bernoulli(x) per training batch (x in [0, 1]).

    Applies only in training (a generator is given); validation and test inputs are one fixed
    draw made when the data are loaded (`vaelab.data.load_data`), so every epoch and every
    evaluation scores the same bits."""

    def __call__(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        return x if generator is None else torch.bernoulli(x, generator=generator)

    def log_det_nats(self, x_shape: tuple[int, ...]) -> float:
        return 0.0


Step = Scale | Dequantize | Binarize


@dataclass(frozen=True)
class Transform:
    """The steps from stored data to model input, applied in order; none: float32 as stored."""

    steps: tuple[Step, ...] = field(default_factory=tuple)

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """(B, *x_shape) stored -> (B, *x_shape) float32 model input."""
        for step in self.steps:
            x = step(x, generator)
        return x.to(torch.float32)

    def log_det_nats(self, x_shape: Sequence[int]) -> float:
        """Per example: add to the model's log-density of its input to get that of the data."""
        return sum(step.log_det_nats(tuple(x_shape)) for step in self.steps)

    def then(self, step: Step) -> Transform:
        return Transform((*self.steps, step))

    @property
    def random(self) -> bool:
        """Whether training draws noise for the input (then it must use the run's generator)."""
        return any(isinstance(step, Dequantize | Binarize) for step in self.steps)
