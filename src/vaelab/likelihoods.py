"""Likelihoods p(x|z): the families for 8-bit data, and the registry that builds the decoder's head.

A likelihood is a `torch.distributions.Distribution` per subpixel (batch shape = the parameters'
shape, event shape ()), made independent over an example by `Independent` in the model's head
(`vaelab.models.Likelihood`). Families are registered in `LIKELIHOODS` by name (the names of
`ModelConfig.likelihood`); each entry says how many numbers the decoder outputs per subpixel,
what data it scores (`Family.scores`), whether it has a sigma (`model.sigma`, fixed or learned per
dimension) and how to turn the decoder's output into the distribution.

What each family scores, and so which input transform its data get (`vaelab.data.load_run_data`):

- "unit": values in [0, 1] (bernoulli; 8-bit data scaled by 1/255);
- "levels": the 256 levels of 8-bit data, represented as the grid k/255 of [0, 1] that
  `Scale(255)` makes of them (k = 0..255), so a sample or mean lies where the data do;
  P(x) is a probability, log_det 0 (discretized logistic, its mixture, the 256-way categorical);
- "density": a continuous density; on 8-bit data it scores dequantized y = (x + u)/256 and the
  log-density of the data as given carries -D log 256 (`Dequantize.log_det_nats`).

Numbers: every family computes its log-probabilities in float32 at least (float64 stays float64)
with autocast off, so the CDF differences of the discretized families stay float32 under bf16.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import Bernoulli, Distribution, Normal, constraints

from vaelab.distributions import GeneratorSampled, SampleShape
from vaelab.errors import UserError

__all__ = [
    "LEVELS",
    "LIKELIHOODS",
    "Categorical256",
    "DiscretizedLogistic",
    "DiscretizedLogisticMixture",
    "Family",
    "Logistic",
    "family",
    "levels_of",
]

LEVELS = 256
"""Values of an 8-bit subpixel: k = 0..255, represented as k / 255 in [0, 1]."""
TOP = LEVELS - 1
HALF_BIN = 0.5 / TOP
"""Half the width of a level's bin on [0, 1]: level k owns [k/255 - 1/510, k/255 + 1/510)."""
MIN_LOG_SCALE = -7.0 - math.log(2.0)
"""Floor of the logistic log-scales: PixelCNN++'s floor e^-7 on its [-1, 1] scale, halved for [0, 1],
so the same in units of a level: s >= 0.23 bins, where one level can hold at most
1 - 2 sigmoid(-4.3) = 97.3% of a component's mass (-0.027 nats). Lower scales only sharpen the
gradients of a subpixel the model already predicts to a level."""


def levels_of(value: Tensor) -> Tensor:
    """The level k in {0..255} of a value on the grid k/255 (int64, same shape)."""
    return torch.round(value * TOP).clamp(0, TOP).long()


def _working(t: Tensor) -> Tensor:
    """float32 at least: bf16/fp16 decoder outputs are promoted before any CDF is taken."""
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


def _log1mexp(t: Tensor) -> Tensor:
    """log(1 - e^t) for t < 0, accurate at both ends (Mächler 2012, "Accurately computing
    log(1 - exp(-|a|))"): log(-expm1(t)) for t > -log 2, log1p(-exp(t)) below."""
    return torch.where(t > -math.log(2.0), torch.log(-torch.expm1(t)), torch.log1p(-torch.exp(t)))


def _logistic_noise(shape: torch.Size, like: Tensor, generator: torch.Generator | None) -> Tensor:
    """log u - log(1 - u), u ~ U(0, 1): standard logistic noise, u kept off 0 and 1."""
    u = torch.rand(shape, generator=generator, dtype=like.dtype, device=like.device)
    eps = torch.finfo(like.dtype).eps
    u = u.clamp(eps, 1.0 - eps)
    return torch.log(u) - torch.log1p(-u)


def _gumbel_argmax(logits: Tensor, shape: torch.Size, generator: torch.Generator | None) -> Tensor:
    """argmax_k (logits_k + g_k), g ~ Gumbel(0, 1): a draw of Categorical(logits) over the last dim.

    logits: (*batch, K); shape: (*sample, *batch) -> int64 (*sample, *batch)."""
    u = torch.rand((*shape, logits.shape[-1]), generator=generator, dtype=logits.dtype, device=logits.device)
    eps = torch.finfo(logits.dtype).eps
    gumbel = -torch.log(-torch.log(u.clamp(eps, 1.0 - eps)))
    return (logits + gumbel).argmax(-1)


def discretized_logistic_log_prob(k: Tensor, loc: Tensor, log_scale: Tensor) -> Tensor:
    """log P(k) of the logistic(loc, s = e^log_scale) discretized onto the levels k/255 of [0, 1].

    Salimans et al. (2017, PixelCNN++, eq. 2) on [0, 1] instead of [-1, 1]; Kingma et al. (2016,
    IAF, Appendix C): with a = (k/255 + h - loc)/s, b = (k/255 - h - loc)/s, h = 1/510,

        P(k) = sigmoid(a) - sigmoid(b)          0 < k < 255,
        P(0) = sigmoid(a),  P(255) = 1 - sigmoid(b)   (the edge bins take the tails).

    The difference is taken in log space without cancellation, exactly:
    sigmoid(a) - sigmoid(b) = sigmoid(a) sigmoid(-b) (1 - e^(b - a)), so

        log P(k) = log sigmoid(a) [k < 255] + log sigmoid(-b) [k > 0] + log(1 - e^(-1/(255 s))) [0 < k < 255]

    (PixelCNN++'s code instead switches to the density at the bin's centre when the difference
    underflows; this form needs no switch). k: int levels, loc, log_scale: broadcastable -> float.
    """
    x = k.to(loc.dtype) / TOP
    inv_scale = torch.exp(-log_scale)
    a = (x + HALF_BIN - loc) * inv_scale
    b = (x - HALF_BIN - loc) * inv_scale
    log_width = _log1mexp(-2.0 * HALF_BIN * inv_scale)
    zero = torch.zeros((), dtype=loc.dtype, device=loc.device)
    return (
        torch.where(k < TOP, F.logsigmoid(a), zero)
        + torch.where(k > 0, F.logsigmoid(-b), zero)
        + torch.where((k > 0) & (k < TOP), log_width, zero)
    )


def _discretized_logistic_mean(loc: Tensor, log_scale: Tensor) -> Tensor:
    """E[x] = sum_{k=1}^{255} P(level >= k) / 255 = sum_k (1 - sigmoid((k/255 - h - loc)/s)) / 255.

    Exact; one pass per level over the parameters, so memory stays that of the parameters."""
    inv_scale = torch.exp(-log_scale)
    mean = torch.zeros_like(loc)
    for k in range(1, LEVELS):
        mean = mean + torch.sigmoid(-(k / TOP - HALF_BIN - loc) * inv_scale)
    return mean / TOP


class DiscretizedLogistic(GeneratorSampled):
    """A logistic(loc, e^log_scale) on [0, 1] discretized onto the 256 levels k/255 of 8-bit data,
    per subpixel (see `discretized_logistic_log_prob`). loc, log_scale: the same shape = batch
    shape; event (). log_scale is floored at `MIN_LOG_SCALE`."""

    arg_constraints = {"loc": constraints.real, "log_scale": constraints.real}
    support = constraints.unit_interval

    def __init__(self, loc: Tensor, log_scale: Tensor) -> None:
        self.loc = _working(loc)
        self.log_scale = _working(log_scale).clamp(min=MIN_LOG_SCALE)
        super().__init__(self.loc.shape, torch.Size(), validate_args=False)

    def log_prob(self, value: Tensor) -> Tensor:
        with torch.autocast(self.loc.device.type, enabled=False):
            return discretized_logistic_log_prob(levels_of(value), self.loc, self.log_scale)

    def sample(self, sample_shape: SampleShape = (), generator: torch.Generator | None = None) -> Tensor:
        """Round a logistic draw to the nearest level (the edge bins take the tails): exactly P(k)."""
        shape = self._extended_shape(torch.Size(sample_shape))
        with torch.no_grad():
            x = self.loc + self.log_scale.exp() * _logistic_noise(shape, self.loc, generator)
            return levels_of(x).to(self.loc.dtype) / TOP

    @property
    def mean(self) -> Tensor:
        return _discretized_logistic_mean(self.loc, self.log_scale)


class DiscretizedLogisticMixture(GeneratorSampled):
    """P(k) = sum_j pi_j P_j(k), a mixture of K discretized logistics per subpixel (Salimans et
    al. 2017), each as in `DiscretizedLogistic`. logits, loc, log_scale: (*batch, K); event ().

    The mixture is per subpixel: PixelCNN++ shares the weights across a pixel's R, G, B and makes
    G and B depend linearly on R (and G), which an autoregressive decoder exploits; a VAE's
    factorized decoder has no such order, so each subpixel here has its own K components."""

    arg_constraints = {"logits": constraints.real, "loc": constraints.real, "log_scale": constraints.real}
    support = constraints.unit_interval

    def __init__(self, logits: Tensor, loc: Tensor, log_scale: Tensor) -> None:
        self.logits = _working(logits)
        self.loc = _working(loc)
        self.log_scale = _working(log_scale).clamp(min=MIN_LOG_SCALE)
        super().__init__(self.loc.shape[:-1], torch.Size(), validate_args=False)

    def log_prob(self, value: Tensor) -> Tensor:
        """log sum_j pi_j P_j(k) by logsumexp over the K components: value (*S, *batch) -> same."""
        with torch.autocast(self.loc.device.type, enabled=False):
            k = levels_of(value).unsqueeze(-1)  # (..., 1) against (..., K)
            log_components = discretized_logistic_log_prob(k, self.loc, self.log_scale)
            return torch.logsumexp(torch.log_softmax(self.logits, -1) + log_components, -1)

    def sample(self, sample_shape: SampleShape = (), generator: torch.Generator | None = None) -> Tensor:
        shape = self._extended_shape(torch.Size(sample_shape))
        with torch.no_grad():
            j = _gumbel_argmax(self.logits, shape, generator).unsqueeze(-1)  # (*shape, 1)
            loc = self.loc.expand((*shape, self.loc.shape[-1])).gather(-1, j).squeeze(-1)
            scale = self.log_scale.expand((*shape, self.loc.shape[-1])).gather(-1, j).squeeze(-1).exp()
            x = loc + scale * _logistic_noise(shape, self.loc, generator)
            return levels_of(x).to(self.loc.dtype) / TOP

    @property
    def mean(self) -> Tensor:
        weights = torch.softmax(self.logits, -1)
        return (weights * _discretized_logistic_mean(self.loc, self.log_scale)).sum(-1)


class Categorical256(GeneratorSampled):
    """A free 256-way categorical over the levels k/255 of each subpixel (van den Oord et al.
    2016, PixelRNN's softmax). logits: (*batch, 256); event ()."""

    arg_constraints = {"logits": constraints.real}
    support = constraints.unit_interval

    def __init__(self, logits: Tensor) -> None:
        if logits.shape[-1] != LEVELS:
            raise ValueError(f"Categorical256: expected {LEVELS} logits in the last dim, got {logits.shape}")
        self.logits = _working(logits)
        super().__init__(self.logits.shape[:-1], torch.Size(), validate_args=False)

    def log_prob(self, value: Tensor) -> Tensor:
        with torch.autocast(self.logits.device.type, enabled=False):
            k = levels_of(value)
            shape = torch.broadcast_shapes(k.shape, self.batch_shape)
            log_p = torch.log_softmax(self.logits, -1).expand(*shape, LEVELS)  # (*shape, 256)
            return log_p.gather(-1, k.expand(shape).unsqueeze(-1)).squeeze(-1)

    def sample(self, sample_shape: SampleShape = (), generator: torch.Generator | None = None) -> Tensor:
        shape = self._extended_shape(torch.Size(sample_shape))
        with torch.no_grad():
            return _gumbel_argmax(self.logits, shape, generator).to(self.logits.dtype) / TOP

    @property
    def mean(self) -> Tensor:
        grid = torch.arange(LEVELS, dtype=self.logits.dtype, device=self.logits.device) / TOP
        return (torch.softmax(self.logits, -1) * grid).sum(-1)


class Logistic(GeneratorSampled):
    """The continuous logistic density, per subpixel, for dequantized data:

        log p(y) = -t - log s - 2 softplus(-t),   t = (y - loc) / s.

    loc, scale broadcastable; event (). Reparameterized (`rsample`) by the inverse CDF."""

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    support = constraints.real
    has_rsample = True

    def __init__(self, loc: Tensor, scale: Tensor) -> None:
        self.loc, self.scale = torch.broadcast_tensors(_working(loc), _working(scale))
        super().__init__(self.loc.shape, torch.Size(), validate_args=False)

    def log_prob(self, value: Tensor) -> Tensor:
        with torch.autocast(self.loc.device.type, enabled=False):
            t = (value - self.loc) / self.scale
            return -t - torch.log(self.scale) - 2.0 * F.softplus(-t)

    def rsample(self, sample_shape: SampleShape = (), generator: torch.Generator | None = None) -> Tensor:
        shape = self._extended_shape(torch.Size(sample_shape))
        return self.loc + self.scale * _logistic_noise(shape, self.loc, generator)

    def sample(self, sample_shape: SampleShape = (), generator: torch.Generator | None = None) -> Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape, generator)

    @property
    def mean(self) -> Tensor:
        return self.loc

    @property
    def variance(self) -> Tensor:
        return self.scale.square() * math.pi**2 / 3.0


# ----------------------------------------------------------------------------------- registry

Scores = Literal["unit", "levels", "density"]
Maker = Callable[[Tensor, "Tensor | None", int], Distribution]
"""(decoder output, log_scale or None, event_dims) -> the per-subpixel distribution. The output
is (*S, *x_shape) for a family of one parameter per subpixel, else (*S, P, *x_shape), with
event_dims = len(x_shape)."""


@dataclass(frozen=True)
class Family:
    """A likelihood family: `params(mixtures)` decoder outputs per subpixel; what it `scores`;
    `has_sigma`: it takes `model.sigma` (fixed, or learned per dimension when None); `make`."""

    params: Callable[[int], int]
    scores: Scores
    has_sigma: bool
    make: Maker


LIKELIHOODS: dict[str, Family] = {}


def likelihood(
    name: str, params: Callable[[int], int], scores: Scores, *, has_sigma: bool = False
) -> Callable[[Maker], Maker]:
    """A decorator that registers a `make` function under `name` in `LIKELIHOODS`."""

    def register(make: Maker) -> Maker:
        LIKELIHOODS[name] = Family(params, scores, has_sigma, make)
        return make

    return register


def family(name: str) -> Family:
    """The registered family `name`; a UserError naming model.likelihood otherwise."""
    if name not in LIKELIHOODS:
        raise UserError(f"model.likelihood: unknown likelihood {name!r}; known: {', '.join(LIKELIHOODS)}")
    return LIKELIHOODS[name]


def _one(mixtures: int) -> int:
    return 1


def _scale(log_scale: Tensor | None) -> Tensor:
    if log_scale is None:
        raise TypeError("a family with a sigma was made without its log_scale")
    return _working(log_scale).exp()


@likelihood("bernoulli", _one, "unit")
def _bernoulli(out: Tensor, log_scale: Tensor | None, event_dims: int) -> Distribution:
    """prod_d Bernoulli(x_d; sigmoid(out_d)), from logits (see `vaelab.distributions.bernoulli`)."""
    return Bernoulli(logits=out, validate_args=False)


@likelihood("gaussian", _one, "density", has_sigma=True)
def _gaussian(out: Tensor, log_scale: Tensor | None, event_dims: int) -> Distribution:
    """N(x_d; out_d, sigma_d^2) (see `vaelab.distributions.gaussian`)."""
    return Normal(out, _scale(log_scale).expand_as(out), validate_args=False)


@likelihood("logistic", _one, "density", has_sigma=True)
def _logistic(out: Tensor, log_scale: Tensor | None, event_dims: int) -> Distribution:
    """Logistic(x_d; out_d, sigma_d)."""
    return Logistic(out, _scale(log_scale))


@likelihood("discretized-logistic", lambda mixtures: 2, "levels")
def _discretized_logistic(out: Tensor, log_scale: Tensor | None, event_dims: int) -> Distribution:
    """Parameters (loc, log_scale) per subpixel: out (*S, 2, *x_shape)."""
    loc, log_s = out.unbind(-1 - event_dims)  # (*S, *x_shape) each
    return DiscretizedLogistic(loc, log_s)


@likelihood("logistic-mixture", lambda mixtures: 3 * mixtures, "levels")
def _logistic_mixture(out: Tensor, log_scale: Tensor | None, event_dims: int) -> Distribution:
    """Parameters (logits, locs, log_scales) of K components per subpixel: out (*S, 3K, *x_shape)."""
    params = out.movedim(-1 - event_dims, -1)  # (*S, *x_shape, 3K)
    logits, loc, log_s = params.chunk(3, dim=-1)  # (*S, *x_shape, K) each
    return DiscretizedLogisticMixture(logits, loc, log_s)


@likelihood("categorical", lambda mixtures: LEVELS, "levels")
def _categorical(out: Tensor, log_scale: Tensor | None, event_dims: int) -> Distribution:
    """256 logits per subpixel: out (*S, 256, *x_shape)."""
    return Categorical256(out.movedim(-1 - event_dims, -1))  # (*S, *x_shape, 256)
