"""Which latent the explorer maps: the whole z of a one-layer model, the top layer z_L of a
hierarchical one (`vaelab.hierarchical`, a Ladder VAE of L stochastic layers).

The map needs a prior whose density it can draw on a plane. A ladder's joint p(z) = p(z_L)
prod_{i<L} p(z_i | z_{i+1}) has none below the top (the marginal p(z_i) of a lower layer is an
integral through networks), but its top prior p(z_L) (N(0, I), a mixture or the VampPrior) is
closed form. So a hierarchical run is explored on its top layer, through `TopLayer`, which speaks
the part of the model protocol the explorer reads, over z_L alone:

    prior()          p(z_L);
    posterior(x)     q(z_L | x) = N(mu_hat_L(x), diag sigma_hat_L^2(x)): under top-down inference the
                     top layer's posterior is its bottom-up term alone (Sønderby et al. 2016, eq. 17),
                     so this is the exact marginal of the ladder's q(z|x) on z_L, and its mean is
                     E_q[z_L | x];
    likelihood(z_L)  p(x | z) at z = descend(z_L): the generative path followed down with each lower
                     layer at its conditional prior mean, z_i = E p(z_i | z_{i+1}) = mu_p,i(z_{i+1})
                     for i = L-1, ..., 1, so that E[x | z] is the decoder's mean there.

A lower layer is not offered on the map: its marginal prior has no closed form to contour, and a
plane of z_i would hold the layers above it at some arbitrary value. Everything that needs the
whole model (log p(x) by importance sampling, prior samples drawn through every layer, the
reconstruction of an input from all its layers) keeps using it.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from vaelab import distributions as D
from vaelab.diagnostics import latent_name
from vaelab.hierarchical import HierarchicalVAE


class TopLayer:
    """The top layer z_L of `model` as a model over z_L (see the module docstring).

    latent_dim: Z', the units of one layer; x_shape: the model's; layers: L; deterministic: False.
    Holds no weights of its own: `parameters()` are the model's (for `vaelab.devices.model_device`).
    """

    deterministic = False

    def __init__(self, model: HierarchicalVAE) -> None:
        self.model = model
        self.config = model.config
        self.layers, self.latent_dim = model.layers, model.layer_dim
        self.x_shape = model.x_shape

    def parameters(self) -> Iterator[nn.Parameter]:
        return self.model.parameters()

    def prior(self) -> Distribution:
        """p(z_L): batch (), event (Z',)."""
        return self.model.top_prior()

    def posterior(self, x: Tensor) -> Distribution:
        """q(z_L | x) = N(mu_hat_L, sigma_hat_L^2): x (B, *x_shape) -> batch (B,), event (Z',)."""
        loc_hat, log_var_hat = self.model.bottom_up(x)  # (B, L, Z') each
        return D.diagonal_normal(loc_hat[:, -1], log_var_hat[:, -1])

    def descend(self, z_top: Tensor) -> Tensor:
        """z = (z_1, ..., z_L) with z_L = z_top and z_i = mu_p,i(z_{i+1}), the mean of p(z_i | z_{i+1}),
        from the top down: (..., Z') -> (..., L Z'), layer 1 first as the model's z is laid out."""
        parts = [z_top]
        for i in reversed(range(self.layers - 1)):
            loc_p, _ = self.model.top_down(i, parts[0])  # (..., Z')
            parts.insert(0, loc_p.to(z_top.dtype))
        return torch.cat(parts, -1)

    def likelihood(self, z_top: Tensor) -> Distribution:
        """p(x | z = descend(z_top)): z_top (*S, Z') -> batch (*S,), event x_shape."""
        return self.model.likelihood(self.descend(z_top))


def map_latent(model):
    """The model whose latent the map shows: `TopLayer(model)` for a hierarchical model, else the
    model itself."""
    return TopLayer(model) if isinstance(model, HierarchicalVAE) else model


def dim_names(latent_model) -> tuple[str, ...]:
    """Each mapped dimension's name: z1, z2, ... for a one-layer model's z; zL.1, zL.2, ... for the
    units of a hierarchical model's top layer z_L (z2.1 is unit 1 of layer 2)."""
    if isinstance(latent_model, TopLayer):
        return tuple(f"z{latent_model.layers}.{d + 1}" for d in range(latent_model.latent_dim))
    return tuple(latent_name(d) for d in range(latent_model.latent_dim))


def layer_note(model) -> str | None:
    """What the page says about the layer it shows (None for a one-layer model)."""
    if not isinstance(model, HierarchicalVAE):
        return None
    top = model.layers
    below = ", ".join(f"z{i} = E[z{i} | z{i + 1}]" for i in reversed(range(1, top)))
    return (
        f"a hierarchical model of {top} stochastic layers (z1 next to x, z{top} at the top, "
        f"{model.layer_dim} units each): the map shows the top layer z{top}, whose prior p(z{top}) is "
        f"closed form, and its test codes E_q[z{top}|x]; a point of z{top} is decoded down the "
        f"generative path with each lower layer at its conditional prior mean ({below}), then E[x | z]. "
        "Lower layers have no closed-form prior to map. log p(x), prior samples and reconstructions "
        "use every layer"
    )
