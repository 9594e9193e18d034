"""Networks: output shapes for every net, image size and likelihood width; the resnet's depth
follows the resolution and its residual blocks start as the identity."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vaelab.errors import UserError
from vaelab.nets import NETS, ResidualBlock, build_nets, count_parameters, resnet_size, resolution_widths


@pytest.mark.parametrize(
    "size, expected",
    [
        ((28, 28), [(8, 28, 28), (16, 14, 14), (32, 7, 7)]),
        ((32, 32), [(8, 32, 32), (16, 16, 16), (32, 8, 8), (32, 4, 4)]),
        ((64, 64), [(8, 64, 64), (16, 32, 32), (32, 16, 16), (32, 8, 8), (32, 4, 4)]),
        ((8, 8), [(8, 8, 8), (16, 4, 4)]),
        ((7, 9), [(8, 7, 9)]),
        ((64, 48), [(8, 64, 48), (16, 32, 24), (32, 16, 12), (32, 8, 6), (32, 4, 3)]),
    ],
)
def test_resnet_halves_while_it_can_and_widens_up_to_four_times(size, expected):
    assert resolution_widths(*size, channels=8) == expected


@pytest.mark.parametrize("x_shape", [(1, 28, 28), (3, 32, 32), (3, 64, 64), (1, 8, 8), (3, 7, 9)])
@pytest.mark.parametrize("params", [1, 2])
def test_resnet_maps_images_of_any_size_to_the_likelihoods_parameters(x_shape, params):
    encoder, decoder = build_nets("resnet", x_shape, 3, 6, (16,), "relu", params=params, channels=4)
    assert encoder(torch.rand(2, *x_shape)).shape == (2, 6)
    expected = (2, *x_shape) if params == 1 else (2, params, *x_shape)
    assert decoder(torch.randn(2, 3)).shape == expected


@pytest.mark.parametrize("net", sorted(NETS))
@pytest.mark.parametrize("params", [1, 4])
def test_every_net_outputs_params_per_subpixel(net, params):
    x_shape = (3, 8, 12)
    encoder, decoder = build_nets(net, x_shape, 2, 4, (8,), "elu", params=params, channels=4)
    assert encoder(torch.rand(5, *x_shape)).shape == (5, 4)
    out = decoder(torch.randn(5, 2))
    assert out.shape == ((5, *x_shape) if params == 1 else (5, params, *x_shape))


@pytest.mark.parametrize("x_shape", [(10,), (3, 5, 7), (2, 2, 2, 2)])
def test_the_mlp_takes_any_shape(x_shape):
    encoder, decoder = build_nets("mlp", x_shape, 2, 4, (8,), "relu", params=3)
    assert encoder(torch.rand(4, *x_shape)).shape == (4, 4)
    assert decoder(torch.randn(4, 2)).shape == (4, 3, *x_shape)


def test_conv_decoder_parameter_p_of_channel_c_is_map_p_times_c_plus_c():
    _, decoder = build_nets("conv", (3, 8, 8), 2, 4, (8,), "relu", params=2)
    last = decoder[-2]
    assert isinstance(last, nn.ConvTranspose2d) and last.out_channels == 6
    flat = nn.Sequential(*list(decoder)[:-1])  # without the final reshape
    z = torch.randn(3, 2)
    torch.testing.assert_close(decoder(z)[:, 1, 2], flat(z)[:, 1 * 3 + 2])


def test_residual_blocks_start_as_the_identity_and_learn():
    block = ResidualBlock(4, nn.ReLU)
    x = torch.randn(2, 4, 5, 5)
    torch.testing.assert_close(block(x), x)
    block(x).square().sum().backward()
    assert block.residual[-1].weight.grad.abs().sum() > 0  # the zero convolution still gets a gradient


def test_resnet_refuses_what_is_not_an_image_with_the_config_field():
    with pytest.raises(UserError, match=r"model.net resnet: needs images of shape \(C, H, W\)"):
        build_nets("resnet", (784,), 2, 4, (8,), "relu")


def test_resnet_size_counts_the_parameters_exactly():
    encoder, decoder = build_nets("resnet", (3, 32, 32), 5, 10, (32,), "relu", params=30, channels=8)
    assert resnet_size((3, 32, 32), 5, 10, (32,), 8, 30)[0] == count_parameters(encoder) + count_parameters(
        decoder
    )
