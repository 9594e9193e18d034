"""Networks that output distribution parameters, nothing else: `mlp`, `gated` (gated MLP), `conv`.

An encoder maps x: (B, *x_shape) to (B, out_dim) (for a VAE out_dim = 2Z: loc and log_var);
a decoder maps z: (B, Z) to (B, *x_shape) (Bernoulli logits or a Gaussian mean). Networks are
built by name from `NETS`, a registry filled by the `@net` decorator.

`dropout` > 0 puts an `nn.Dropout` after every hidden layer (Srivastava et al. 2014), a regularizer
against overfitting small or statically binarized data; it is off in eval mode, so bounds and
estimates are computed with the whole network. With dropout 0 no module is added.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from vaelab.errors import UserError

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "elu": nn.ELU, "tanh": nn.Tanh, "gelu": nn.GELU}

NetBuilder = Callable[..., tuple[nn.Module, nn.Module]]
NETS: dict[str, NetBuilder] = {}


def net(name: str) -> Callable[[NetBuilder], NetBuilder]:
    """A decorator that registers a network builder under `name` in `NETS`."""

    def register(fn: NetBuilder) -> NetBuilder:
        NETS[name] = fn
        return fn

    return register


def build_nets(
    name: str,
    x_shape: tuple[int, ...],
    latent_dim: int,
    out_dim: int,
    hidden: tuple[int, ...],
    activation: str,
    dropout: float = 0.0,
) -> tuple[nn.Module, nn.Module]:
    """(encoder, decoder) of architecture `name`; encoder outputs `out_dim` numbers per example."""
    return NETS[name](x_shape, latent_dim, out_dim, hidden, ACTIVATIONS[activation], dropout)


def _dropped(dropout: float) -> list[nn.Module]:
    """What follows a hidden layer besides its nonlinearity: dropout, if any."""
    return [nn.Dropout(dropout)] if dropout > 0 else []


def _mlp(sizes: list[int], act: type[nn.Module], dropout: float = 0.0) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers += [act(), *_dropped(dropout)]
    return layers


@net("mlp")
def mlp(
    x_shape: tuple[int, ...],
    latent_dim: int,
    out_dim: int,
    hidden: tuple[int, ...],
    act: type[nn.Module],
    dropout: float = 0.0,
) -> tuple[nn.Module, nn.Module]:
    """Encoder D -> hidden[0] -> ... -> out_dim; decoder Z -> hidden[-1] -> ... -> hidden[0] -> D."""
    d = math.prod(x_shape)
    encoder = nn.Sequential(nn.Flatten(), *_mlp([d, *hidden, out_dim], act, dropout))
    decoder = nn.Sequential(*_mlp([latent_dim, *reversed(hidden), d], act, dropout), nn.Unflatten(1, x_shape))
    return encoder, decoder


@net("conv")
def conv(
    x_shape: tuple[int, ...],
    latent_dim: int,
    out_dim: int,
    hidden: tuple[int, ...],
    act: type[nn.Module],
    dropout: float = 0.0,
) -> tuple[nn.Module, nn.Module]:
    """A small conv net for (C, H, W) images with H and W divisible by 4.

    Encoder: two stride-2 4x4 convolutions (32, 64 channels), then fully connected layers of
    sizes `hidden` to out_dim. Decoder mirrors it with transposed convolutions.
    """
    if len(x_shape) != 3 or x_shape[1] % 4 or x_shape[2] % 4:
        raise UserError(
            f"model.net conv: needs images of shape (C, H, W) with H, W divisible by 4, got {x_shape}"
        )
    c, h, w = x_shape
    flat = 64 * (h // 4) * (w // 4)
    encoder = nn.Sequential(
        nn.Conv2d(c, 32, 4, 2, 1),
        act(),
        nn.Conv2d(32, 64, 4, 2, 1),
        act(),
        nn.Flatten(),
        *_mlp([flat, *hidden, out_dim], act, dropout),
    )
    decoder = nn.Sequential(
        *_mlp([latent_dim, *reversed(hidden), flat], act, dropout),
        act(),
        nn.Unflatten(1, (64, h // 4, w // 4)),
        nn.ConvTranspose2d(64, 32, 4, 2, 1),
        act(),
        nn.ConvTranspose2d(32, c, 4, 2, 1),
    )
    return encoder, decoder


class GatedLinear(nn.Module):
    """h = (W x + b) * sigmoid(V x + c): a gated linear unit (Dauphin et al. 2017), the hidden layer
    of the gated MLPs that Tomczak & Welling (2018) use for their VampPrior results."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, 2 * out_features)

    def forward(self, x: Tensor) -> Tensor:
        h, gate = self.linear(x).chunk(2, dim=-1)
        return h * torch.sigmoid(gate)


@net("gated")
def gated(
    x_shape: tuple[int, ...],
    latent_dim: int,
    out_dim: int,
    hidden: tuple[int, ...],
    act: type[nn.Module],
    dropout: float = 0.0,
) -> tuple[nn.Module, nn.Module]:
    """Gated MLP: every hidden layer a `GatedLinear`; the output layers are plain linear maps."""
    d = math.prod(x_shape)

    def stack(sizes: list[int]) -> list[nn.Module]:
        pairs = zip(sizes[:-1], sizes[1:], strict=True)
        return [layer for a, b in pairs for layer in (GatedLinear(a, b), *_dropped(dropout))]

    encoder = nn.Sequential(nn.Flatten(), *stack([d, *hidden]), nn.Linear(hidden[-1], out_dim))
    decoder = nn.Sequential(
        *stack([latent_dim, *reversed(hidden)]), nn.Linear(hidden[0], d), nn.Unflatten(1, x_shape)
    )
    return encoder, decoder


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def forward_flat(module: nn.Module, z: Tensor) -> Tensor:
    """Apply a network that takes (B, Z) to z of any leading shape (*S, Z) -> (*S, *out)."""
    lead = z.shape[:-1]
    out = module(z.reshape(-1, z.shape[-1]))
    return out.reshape(*lead, *out.shape[1:])
