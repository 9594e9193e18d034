"""Networks that output distribution parameters, nothing else: `mlp`, `gated` (gated MLP), `conv`
(two stride-2 convolutions) and `resnet` (a residual conv net that scales with the resolution).

An encoder maps x: (B, *x_shape) to (B, out_dim) (for a VAE out_dim = 2Z: loc and log_var);
a decoder maps z: (B, Z) to the likelihood's parameters, `decoder_shape(x_shape, params)`:
(B, *x_shape) for a family with one parameter per subpixel (Bernoulli logits, a Gaussian mean),
(B, P, *x_shape) for P > 1 (a discretized logistic's loc and log-scale, a mixture's 3K, a
categorical's 256 logits; see `vaelab.likelihoods`). Networks are built by name from `NETS`, a
registry filled by the `@net` decorator.

`dropout` > 0 puts an `nn.Dropout` after every hidden layer (Srivastava et al. 2014), a regularizer
against overfitting small or statically binarized data; it is off in eval mode, so bounds and
estimates are computed with the whole network. With dropout 0 no module is added.

A conditional model's networks also read a class label y (`LabelConditioned`, one mechanism for
every net): its one-hot code joins the input of the network's first fully connected layer, that
is the flattened x (mlp, gated encoders), the flattened convolutional features (conv, resnet
encoders) or z (every decoder).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
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
    *,
    params: int = 1,
    channels: int = 32,
) -> tuple[nn.Module, nn.Module]:
    """(encoder, decoder) of architecture `name`; the encoder outputs `out_dim` numbers per example,
    the decoder `params` per subpixel (see `decoder_shape`); `channels`: a resnet's first width."""
    act = ACTIVATIONS[activation]
    return NETS[name](x_shape, latent_dim, out_dim, hidden, act, dropout, params, channels)


def decoder_shape(x_shape: tuple[int, ...], params: int) -> tuple[int, ...]:
    """A decoder's output per example: x_shape for one parameter per subpixel, else (params, *x_shape)."""
    return tuple(x_shape) if params == 1 else (params, *x_shape)


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
    params: int = 1,
    channels: int = 32,
) -> tuple[nn.Module, nn.Module]:
    """Encoder D -> hidden[0] -> ... -> out_dim; decoder Z -> hidden[-1] -> ... -> hidden[0] -> P D."""
    d = math.prod(x_shape)
    encoder = nn.Sequential(nn.Flatten(), *_mlp([d, *hidden, out_dim], act, dropout))
    decoder = nn.Sequential(
        *_mlp([latent_dim, *reversed(hidden), params * d], act, dropout),
        nn.Unflatten(1, decoder_shape(x_shape, params)),
    )
    return encoder, decoder


@net("conv")
def conv(
    x_shape: tuple[int, ...],
    latent_dim: int,
    out_dim: int,
    hidden: tuple[int, ...],
    act: type[nn.Module],
    dropout: float = 0.0,
    params: int = 1,
    channels: int = 32,
) -> tuple[nn.Module, nn.Module]:
    """A small conv net for (C, H, W) images with H and W divisible by 4.

    Encoder: two stride-2 4x4 convolutions (32, 64 channels), then fully connected layers of
    sizes `hidden` to out_dim. Decoder mirrors it with transposed convolutions, to `params`
    maps per channel. (`resnet` takes any size; this net's weights are those of earlier runs.)
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
        nn.ConvTranspose2d(32, params * c, 4, 2, 1),
        *_parameter_axis(params, c),
    )
    return encoder, decoder


def _parameter_axis(params: int, c: int) -> list[nn.Module]:
    """(B, P C, H, W) -> (B, P, C, H, W) for P > 1: map p * C + c holds parameter p of channel c."""
    return [nn.Unflatten(1, (params, c))] if params > 1 else []


class ResidualBlock(nn.Module):
    """h = x + conv3x3(act(conv3x3(act(x)))), channels and size kept (He et al. 2016's pre-activation
    block, without normalization: batch statistics would make log p(x) depend on the batch). The
    second convolution starts at zero, so every block starts as the identity and a deep stack
    trains like a shallow one at first (as Fixup, Zhang et al. 2019, and VDVAE's output scaling)."""

    def __init__(self, channels: int, act: type[nn.Module]) -> None:
        super().__init__()
        last = nn.Conv2d(channels, channels, 3, padding=1)
        with torch.no_grad():
            last.weight.zero_()
            last.bias.zero_()  # type: ignore[union-attr]  # (built with bias=True: a tensor)
        self.residual = nn.Sequential(act(), nn.Conv2d(channels, channels, 3, padding=1), act(), last)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.residual(x)


MIN_FEATURE_SIZE = 4
"""resnet halves the feature maps while both sides are even and the smaller above this."""


def resolution_widths(height: int, width: int, channels: int) -> list[tuple[int, int, int]]:
    """(channels, height, width) of a resnet's feature maps from the input's size down: halve both
    sides while they are even and larger than `MIN_FEATURE_SIZE` (28: 28, 14, 7; 32: 32 .. 4;
    64: 64 .. 4), doubling the channels at each halving up to 4x `channels`."""
    sizes = [(channels, height, width)]
    while height % 2 == 0 and width % 2 == 0 and min(height, width) > MIN_FEATURE_SIZE:
        height, width = height // 2, width // 2
        sizes.append((channels * 2 ** min(len(sizes), 2), height, width))
    return sizes


@net("resnet")
def resnet(
    x_shape: tuple[int, ...],
    latent_dim: int,
    out_dim: int,
    hidden: tuple[int, ...],
    act: type[nn.Module],
    dropout: float = 0.0,
    params: int = 1,
    channels: int = 32,
) -> tuple[nn.Module, nn.Module]:
    """A residual conv net for (C, H, W) images of any size, deeper for larger ones.

    Encoder: a 3x3 convolution to `channels` maps, then at each resolution of
    `resolution_widths` a `ResidualBlock` and a stride-2 4x4 convolution to the next (one
    halving for 8x8, two for 28x28, three for 32x32, four for 64x64), a last block, and fully
    connected layers of sizes `hidden` to out_dim. Decoder: the mirror image, with stride-2 4x4
    transposed convolutions, ending in a 3x3 convolution to `params` maps per channel.
    """
    if len(x_shape) != 3:
        raise UserError(f"model.net resnet: needs images of shape (C, H, W), got {x_shape}")
    c, h, w = x_shape
    sizes = resolution_widths(h, w, channels)
    top, top_h, top_w = sizes[-1]
    flat = top * top_h * top_w
    down: list[nn.Module] = [nn.Conv2d(c, channels, 3, padding=1)]
    for (a, _, _), (b, _, _) in zip(sizes[:-1], sizes[1:], strict=True):
        down += [ResidualBlock(a, act), act(), nn.Conv2d(a, b, 4, 2, 1)]
    encoder = nn.Sequential(
        *down, ResidualBlock(top, act), act(), nn.Flatten(), *_mlp([flat, *hidden, out_dim], act, dropout)
    )
    up: list[nn.Module] = [ResidualBlock(top, act)]
    for (a, _, _), (b, _, _) in zip(reversed(sizes[:-1]), reversed(sizes[1:]), strict=True):
        up += [act(), nn.ConvTranspose2d(b, a, 4, 2, 1), ResidualBlock(a, act)]
    decoder = nn.Sequential(
        *_mlp([latent_dim, *reversed(hidden), flat], act, dropout),
        nn.Unflatten(1, (top, top_h, top_w)),
        *up,
        act(),
        nn.Conv2d(channels, params * c, 3, padding=1),
        *_parameter_axis(params, c),
    )
    return encoder, decoder


def resnet_size(
    x_shape: tuple[int, ...],
    latent_dim: int,
    out_dim: int,
    hidden: tuple[int, ...],
    channels: int,
    params: int,
) -> tuple[int, int, int]:
    """(parameters, encoder widths, decoder widths) of a `resnet`, for the memory estimate of
    `vaelab.limits` (a UserError for a shape that is not an image, as `resnet`): parameters
    counted exactly on the meta device (nothing is allocated); widths
    are the numbers per example a forward pass stores, four maps per residual block and two per
    resampling convolution at each resolution, plus the fully connected layers'."""
    with torch.device("meta"):
        encoder, decoder = resnet(x_shape, latent_dim, out_dim, hidden, nn.ReLU, 0.0, params, channels)
    count = count_parameters(encoder) + count_parameters(decoder)
    maps = sum(6 * c * h * w for c, h, w in resolution_widths(x_shape[1], x_shape[2], channels))
    d = math.prod(x_shape)
    return count, d + maps + 2 * sum(hidden) + out_dim, latent_dim + 2 * sum(hidden) + maps + params * d


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
    params: int = 1,
    channels: int = 32,
) -> tuple[nn.Module, nn.Module]:
    """Gated MLP: every hidden layer a `GatedLinear`; the output layers are plain linear maps."""
    d = math.prod(x_shape)

    def stack(sizes: list[int]) -> list[nn.Module]:
        pairs = zip(sizes[:-1], sizes[1:], strict=True)
        return [layer for a, b in pairs for layer in (GatedLinear(a, b), *_dropped(dropout))]

    encoder = nn.Sequential(nn.Flatten(), *stack([d, *hidden]), nn.Linear(hidden[-1], out_dim))
    decoder = nn.Sequential(
        *stack([latent_dim, *reversed(hidden)]),
        nn.Linear(hidden[0], params * d),
        nn.Unflatten(1, decoder_shape(x_shape, params)),
    )
    return encoder, decoder


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def forward_flat(module: nn.Module, z: Tensor) -> Tensor:
    """Apply a network that takes (B, Z) to z of any leading shape (*S, Z) -> (*S, *out)."""
    lead = z.shape[:-1]
    out = module(z.reshape(-1, z.shape[-1]))
    return out.reshape(*lead, *out.shape[1:])


class LabelConditioned(nn.Sequential):
    """A network of `NETS` whose first fully connected layer also reads a one-hot class label:

        h = layers[:at](input);  out = layers[at:](concat(h, onehot(y)))

    with `at` the index of that layer (an `nn.Linear` or `GatedLinear`), widened by `num_classes`
    inputs. Its parameters keep the names of the network it conditions (the same layers, one of them
    wider). forward(input, labels): input (B, ...), labels (B,) int64 codes in 0..num_classes-1.
    """

    def __init__(self, net: nn.Sequential, num_classes: int) -> None:
        layers = list(net)
        at = next(i for i, layer in enumerate(layers) if isinstance(layer, (nn.Linear, GatedLinear)))
        layers[at] = _widened(layers[at], num_classes)
        super().__init__(*layers)
        self.at, self.num_classes = at, num_classes

    def forward(self, h: Tensor, labels: Tensor) -> Tensor:  # type: ignore[override]
        for i, layer in enumerate(self):
            if i == self.at:
                h = torch.cat([h, F.one_hot(labels, self.num_classes).to(h.dtype)], dim=-1)  # (B, F + C)
            h = layer(h)
        return h


def _widened(layer: nn.Module, extra: int) -> nn.Module:
    """A freshly initialized layer like `layer` (nn.Linear or GatedLinear) with `extra` more inputs."""
    if isinstance(layer, GatedLinear):
        return GatedLinear(layer.linear.in_features + extra, layer.linear.out_features // 2)
    assert isinstance(layer, nn.Linear)
    return nn.Linear(layer.in_features + extra, layer.out_features)
