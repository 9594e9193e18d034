"""`vaelab.limits.estimate_training_bytes` for hierarchical models (a Ladder VAE of L stochastic
layers, `vaelab.hierarchical`): parameters counted exactly, as the built model has them, and the
activations within a small factor of the tensors a real training step saves for its backward pass,
as they are for a one-layer model (the estimate once counted one layer's latent only)."""

from __future__ import annotations

import pytest
import torch

from vaelab.config import ModelConfig
from vaelab.limits import FLOAT_BYTES, estimate_training_bytes
from vaelab.models import build_model
from vaelab.nets import count_parameters
from vaelab.objectives import beta_elbo

X_SHAPE = (1, 8, 8)


@pytest.mark.parametrize(
    "changes",
    [
        dict(),
        dict(layers=3, latent_dim=16),
        dict(layers=2, hidden=()),  # linear maps between layers
        dict(layers=3, net="gated", hidden=(32, 16)),
        dict(layers=2, net="conv", hidden=(40,), likelihood="gaussian", sigma=None),
        dict(layers=2, net="resnet", hidden=(24,), width=8),
        dict(layers=2, prior="mog", prior_components=7),
        dict(layers=3, prior="vamp", prior_components=5, net="gated", hidden=(16,)),
    ],
    ids=["mlp", "three-layers", "linear", "gated", "conv-learned-sigma", "resnet", "mog", "vamp"],
)
def test_a_ladders_parameters_are_counted_exactly(changes):
    config = ModelConfig(**{"layers": 2, "latent_dim": 4, "hidden": (32,), **changes})
    model = build_model(config, X_SHAPE)
    assert estimate_training_bytes(config, X_SHAPE, batch_size=16).parameters == count_parameters(model)


def saved_activation_numbers(model, x: torch.Tensor) -> int:
    """Numbers in the tensors autograd saves for the backward pass of one ELBO step (weights aside)."""
    weights = {p.data_ptr() for p in model.parameters()}
    saved: dict[tuple[int, int], int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.data_ptr() not in weights:
            saved[(t.data_ptr(), t.numel())] = t.numel()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        beta_elbo(model, x, torch.Generator().manual_seed(0))
    return sum(saved.values())


@pytest.mark.parametrize(
    "fields",
    [
        dict(latent_dim=4),
        dict(latent_dim=64),
        dict(layers=2, latent_dim=4),
        dict(layers=4, latent_dim=64),  # every layer's latent dominates: the old estimate was 1/7 of it
        dict(layers=3, latent_dim=16, hidden=(32, 16), net="gated"),
        dict(layers=2, latent_dim=8, prior="vamp", prior_components=5),
    ],
    ids=["one-layer", "one-layer-wide", "two-layers", "four-wide-layers", "gated", "vamp"],
)
def test_activations_are_within_a_small_factor_of_what_a_training_step_saves(fields):
    torch.manual_seed(0)
    config = ModelConfig(**{"hidden": (32,), **fields})
    model = build_model(config, X_SHAPE)
    x = torch.rand(16, *X_SHAPE).bernoulli()
    estimate = estimate_training_bytes(config, X_SHAPE, batch_size=16)
    numbers = estimate.activation_bytes // (2 * FLOAT_BYTES)  # (activations and their gradients)
    ratio = numbers / saved_activation_numbers(model, x)
    assert 0.8 <= ratio <= 2.5, ratio  # one-layer models measure 1.1 and 2.1
