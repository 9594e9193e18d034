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
from typing import TypeAlias

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

    def inverse(self, y: Tensor) -> Tensor:
        return y * self.divisor

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

    def inverse(self, y: Tensor) -> Tensor:
        """E_u[x] for y = (x + u) / 256: 256 y - 1/2 (the levels' units, not rounded)."""
        return y * UINT8_LEVELS - 0.5

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

    def inverse(self, y: Tensor) -> Tensor:
        return y  # a probability in [0, 1] is already in the data's units

    def log_det_nats(self, x_shape: tuple[int, ...]) -> float:
        return 0.0


Step: TypeAlias = "Scale | Dequantize | Binarize | Standardize"


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

    def inverse(self, y: Tensor) -> Tensor:
        """Model space -> the data's units (samples, reconstructions): each step undone, last first."""
        for step in reversed(self.steps):
            y = step.inverse(y)
        return y

    def then(self, step: Step) -> Transform:
        return Transform((*self.steps, step))

    @property
    def random(self) -> bool:
        """Whether training draws noise for the input (then it must use the run's generator)."""
        return any(isinstance(step, Dequantize | Binarize) for step in self.steps)


@dataclass(frozen=True)
class Standardize:
    """Tabular data, x: (B, D) -> y = (x - mean) / scale per column, mean and scale (D,) from the
    train split (`vaelab.data.tables.standardization`; a column left alone has mean 0, scale 1).

    A density of y is one of x through the Jacobian of the map, |dy/dx| = prod_d 1/scale_d:

        log p_x(x) = log p_y(y) - sum_d log scale_d,

    so log_det = -sum_d log scale_d, and a column measured in other units (x_d * c) moves the
    log-density of the data by exactly -log c, the model's input being the same.
    """

    mean: tuple[float, ...]
    scale: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.mean) != len(self.scale) or not all(s > 0 for s in self.scale):
            raise ValueError(
                f"Standardize: {len(self.mean)} means, {len(self.scale)} positive scales expected"
            )

    def _parameters(self, like: Tensor) -> tuple[Tensor, Tensor]:
        # float64: x - mean of two values near the float32 limit would overflow in float32
        mean = torch.tensor(self.mean, dtype=torch.float64, device=like.device)
        return mean, torch.tensor(self.scale, dtype=torch.float64, device=like.device)

    def __call__(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        mean, scale = self._parameters(x)
        return ((x.double() - mean) / scale).to(torch.float32)

    def inverse(self, y: Tensor) -> Tensor:
        mean, scale = self._parameters(y)
        return (y.double() * scale + mean).to(y.dtype)

    def log_det_nats(self, x_shape: tuple[int, ...]) -> float:
        if x_shape != (len(self.scale),):
            raise ValueError(
                f"Standardize of {len(self.scale)} columns applied to examples of shape {x_shape}"
            )
        return -math.fsum(math.log(s) for s in self.scale)
