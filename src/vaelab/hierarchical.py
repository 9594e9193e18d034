"""Hierarchical VAEs: L stochastic layers with top-down inference, the Ladder VAE of Sønderby et
al. (2016).

The latent z is the concatenation (z_1, ..., z_L) of L layers of `latent_dim` = Z' units each
(z_1 next to x, z_L at the top), so the model's z has Z = L Z' dimensions and speaks the model
protocol unchanged: `posterior(x)` and `prior()` are joint distributions over the whole of z
(reparameterized samples, exact log-densities), `likelihood(z)` decodes all of it.

Generative model (top-down):

    p(z) = p(z_L) prod_{i<L} p(z_i | z_{i+1}),   p(z_i | z_{i+1}) = N(mu_p,i(z_{i+1}), diag(sigma_p,i^2)),
    p(x | z) the configured likelihood of the decoder's output at z = (z_1, ..., z_L),

with p(z_L) = N(0, I), a learned mixture (`mog`) or the VampPrior (`vamp`, Tomczak & Welling 2018:
(1/K) sum_k q(z_L | u_k) at K learned pseudo-inputs). The decoder sees every layer (Tomczak &
Welling's HVAE decodes from z_1 and z_2 too), so an upper layer that carries information is not
forced through the layers below.

Inference (Sønderby et al. 2016, eqs. 17-21): a deterministic bottom-up pass d_1 = f_1(x),
d_{i+1} = f_{i+1}(d_i) gives each layer a Gaussian "likelihood" term N(mu_hat_i(d_i),
sigma_hat_i^2(d_i)); the posterior is then sampled top-down, sharing the generative model's
conditionals:

    q(z_L | x)           = N(mu_hat_L, sigma_hat_L^2),
    q(z_i | z_{i+1}, x)  = N(mu_q,i, sigma_q,i^2),  sigma_q^-2 = sigma_hat^-2 + sigma_p^-2,
                           mu_q = (mu_hat sigma_hat^-2 + mu_p sigma_p^-2) sigma_q^2,

the precision-weighted merge of the bottom-up term with the prior p(z_i | z_{i+1}) at the sample
z_{i+1} drawn above. So

    log q(z|x) = sum_i log q(z_i | z_{i+1}, x),   log p(z) = log p(z_L) + sum_{i<L} log p(z_i | z_{i+1}),

both exact, and their per-layer terms (`log_prob_layers`, (..., L)) give the per-layer KL
KL_i = E_q[log q(z_i | z_{>i}, x) - log p(z_i | z_{>i})] whose sum over i is the KL of the whole
z (`layer_log_ratios`).

Networks: f_1 is the configured net's encoder (`vaelab.nets`, x -> H features, H the last hidden
size); f_{i+1} (H -> H) and the top-down nets z_{i+1} -> (mu_p, log sigma_p^2) are `gated` MLPs
for a gated net, else `mlp`s, with the configured hidden sizes (none: linear maps, which makes
the whole model linear-Gaussian with a Gaussian likelihood; the tests use that); the decoder is
the configured net's decoder on all L Z' dimensions.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, constraints

from vaelab import distributions as D
from vaelab.config import ModelConfig
from vaelab.diagnostics import active_units
from vaelab.nets import build_nets, forward_flat

if TYPE_CHECKING:  # (models builds this module's model: an import at run time would be a cycle)
    from vaelab.models import Likelihood

__all__ = [
    "HierarchicalVAE",
    "LadderPosterior",
    "LadderPrior",
    "active_units_per_layer",
    "layer_log_ratios",
    "layer_slices",
]

Conditional = tuple[Tensor, Tensor]
"""(mu, log sigma^2) of a diagonal Gaussian conditional, each (..., Z')."""
TopDown = Callable[[int, Tensor], Conditional]
"""(i, z_{i+1}: (..., Z')) -> (mu_p, log sigma_p^2) of p(z_i | z_{i+1}), each (..., Z'); i 0-based."""

LOG_2PI = math.log(2 * math.pi)
MOMENT_SAMPLES = 10_000
"""Ancestral draws behind the prior's estimated marginal mean and variance (`LadderPrior.mean`):
a standard error of at most 1% of a standard deviation per dimension."""


def _normal_log_pdf(z: Tensor, loc: Tensor, log_var: Tensor) -> Tensor:
    """log N(z; loc, diag(exp(log_var))) summed over the last dim: (..., Z') -> (...)."""
    return -0.5 * ((z - loc).square() * torch.exp(-log_var) + log_var + LOG_2PI).sum(-1)


def _working(t: Tensor) -> Tensor:
    """Network outputs in float32 at least (bf16 under autocast is promoted; float64 stays)."""
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


def _clamped(log_var: Tensor) -> Tensor:
    return log_var.clamp(*D.LOG_VAR_CLAMP)


def precision_weighted(
    loc_hat: Tensor, log_var_hat: Tensor, loc_p: Tensor, log_var_p: Tensor
) -> tuple[Tensor, Tensor]:
    """The product of N(loc_hat, var_hat) and N(loc_p, var_p), normalized (Sønderby et al. 2016,
    eqs. 19-20): var_q = 1 / (1/var_hat + 1/var_p), loc_q = (loc_hat/var_hat + loc_p/var_p) var_q.
    In log space: log var_q = -logaddexp(-log var_hat, -log var_p), and the weight of loc_hat is
    var_p / (var_hat + var_p) = sigmoid(log var_p - log var_hat). Shapes broadcast."""
    log_var_q = -torch.logaddexp(-log_var_hat, -log_var_p)
    weight = torch.sigmoid(log_var_p - log_var_hat)
    return weight * loc_hat + (1 - weight) * loc_p, log_var_q


def layer_slices(layers: int, size: int) -> list[slice]:
    """Where layer i (0-based, 0 next to x) lies in z = (z_1, ..., z_L): [i Z', (i+1) Z')."""
    return [slice(i * size, (i + 1) * size) for i in range(layers)]


class LadderPosterior(D.FromNoise):
    """q(z|x) = q(z_L|x) prod_{i<L} q(z_i | z_{i+1}, x) over z = (z_1, ..., z_L); batch (B,), event (L Z',).

    loc_hat, log_var_hat: (B, L, Z') the bottom-up terms; `top_down` the generative model's
    conditionals. Sampled top-down from noise eps ~ N(0, I) of z's shape (`draw` passes it),
    z_i = mu_q,i + sigma_q,i eps_i; `log_prob` of the tensor it last returned is remembered,
    of any other z it is computed directly (the same walk with z given instead of drawn).
    """

    arg_constraints: dict[str, constraints.Constraint] = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, loc_hat: Tensor, log_var_hat: Tensor, top_down: TopDown) -> None:
        self.loc_hat, self.log_var_hat, self.top_down = loc_hat, _clamped(log_var_hat), top_down
        self.layers, self.size = loc_hat.shape[-2], loc_hat.shape[-1]
        self._last: tuple[Tensor, Tensor, list[Conditional]] | None = None  # a sample and its terms
        super().__init__(loc_hat.shape[:-2], torch.Size([self.layers * self.size]), validate_args=False)

    def _walk(self, values: Tensor, *, noise: bool) -> tuple[Tensor, Tensor, list[Conditional]]:
        """From the top down: z, log q(z_i | z_{i+1}, x) per layer (..., L), and the prior's
        conditionals p(z_i | z_{i+1}) at that z (i < L - 1, bottom first). values: (*S, B, L Z'),
        the noise eps (noise=True; z is drawn) or z itself (noise=False)."""
        values = values.to(self.loc_hat.dtype)
        parts: list[Tensor] = [values] * self.layers  # (each replaced below, top first)
        log_q: list[Tensor] = [values] * self.layers
        conditionals: list[Conditional] = []
        slices = layer_slices(self.layers, self.size)
        for i in reversed(range(self.layers)):
            loc, log_var = self.loc_hat[..., i, :], self.log_var_hat[..., i, :]  # (B, Z')
            if i < self.layers - 1:
                loc_p, log_var_p = self.top_down(i, parts[i + 1])  # (*S, B, Z')
                conditionals.insert(0, (loc_p, _clamped(log_var_p)))
                loc, log_var = precision_weighted(loc, log_var, *conditionals[0])
            given = values[..., slices[i]]
            parts[i] = loc + torch.exp(0.5 * log_var) * given if noise else given
            log_q[i] = _normal_log_pdf(parts[i], loc, log_var)
        return torch.cat(parts, -1), torch.stack(log_q, -1), conditionals

    def rsample(self, sample_shape: torch.Size | list[int] | tuple[int, ...] = ()) -> Tensor:
        eps = torch.randn(self._extended_shape(torch.Size(sample_shape)), device=self.loc_hat.device)
        return self.transformed(eps.to(self.loc_hat.dtype))

    def transformed(self, eps: Tensor) -> Tensor:
        """z for the noise eps: (*S, B, L Z') -> (*S, B, L Z'), remembering its log q per layer."""
        z, log_q, conditionals = self._walk(eps, noise=True)
        self._last = (z, log_q, conditionals)
        return z

    def log_prob_layers(self, value: Tensor) -> Tensor:
        """log q(z_i | z_{i+1}, x) per layer: z (*S, B, L Z') -> (*S, B, L)."""
        if self._last is not None and value is self._last[0]:
            return self._last[1]
        return self._walk(value, noise=False)[1]

    def prior_conditionals(self, value: Tensor) -> list[Conditional] | None:
        """The prior's conditionals p(z_i | z_{i+1}) that drawing `value` computed (None for any
        other z), so that `LadderPrior.log_prob_layers` of the same z need not run them again."""
        return self._last[2] if self._last is not None and value is self._last[0] else None

    def log_prob(self, value: Tensor) -> Tensor:
        """log q(z|x) = sum_i log q(z_i | z_{i+1}, x): (*S, B, L Z') -> (*S, B)."""
        return self.log_prob_layers(value).sum(-1)

    @property
    def mean(self) -> Tensor:
        """Not E_q[z] (no closed form beyond the top layer): the top-down walk at eps = 0, each
        layer at its conditional mean given the layers above; figures use it as the code of x."""
        shape = (*self.batch_shape, self.layers * self.size)
        zeros = torch.zeros(shape, dtype=self.loc_hat.dtype, device=self.loc_hat.device)
        return self._walk(zeros, noise=True)[0]


class LadderPrior(D.GeneratorSampled):
    """p(z) = p(z_L) prod_{i<L} p(z_i | z_{i+1}) over z = (z_1, ..., z_L); batch (), event (L Z',).

    top: p(z_L), batch (), event (Z',) (a diagonal Gaussian or a `DiagonalGaussianMixture`).
    Sampled ancestrally (`sample` with a caller's generator, as `draw` calls it; `rsample` with the
    global one, differentiable below the top, whose mixture draw is not)."""

    arg_constraints: dict[str, constraints.Constraint] = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, top: Distribution, top_down: TopDown, layers: int) -> None:
        self.top, self.top_down, self.layers = top, top_down, layers
        self.size = top.event_shape[-1]
        super().__init__(torch.Size(), torch.Size([layers * self.size]), validate_args=False)

    def log_prob_layers(self, value: Tensor, conditionals: list[Conditional] | None = None) -> Tensor:
        """log p(z_i | z_{i+1}) and log p(z_L) per layer, in layer order: (..., L Z') -> (..., L).
        conditionals: p(z_i | z_{i+1}) at this z where already computed
        (`LadderPosterior.prior_conditionals`)."""
        slices = layer_slices(self.layers, self.size)
        terms = []
        for i in range(self.layers - 1):
            if conditionals is None:
                loc_p, log_var_p = self.top_down(i, value[..., slices[i + 1]])
                loc_p, log_var_p = loc_p, _clamped(log_var_p)
            else:
                loc_p, log_var_p = conditionals[i]
            terms.append(_normal_log_pdf(value[..., slices[i]], loc_p, log_var_p))
        terms.append(self.top.log_prob(value[..., slices[-1]]))
        return torch.stack(terms, -1)

    def log_prob(self, value: Tensor) -> Tensor:
        """log p(z): (..., L Z') -> (...)."""
        return self.log_prob_layers(value).sum(-1)

    def _ancestral(self, shape: torch.Size, generator: torch.Generator | None) -> Tensor:
        """z from the top down: (*shape, L Z'), each layer drawn given the one above."""
        parts = [D.draw(self.top, shape, generator)]  # z_L: (*shape, Z')
        for i in reversed(range(self.layers - 1)):
            loc_p, log_var_p = self.top_down(i, parts[0])
            eps = torch.randn(loc_p.shape, generator=generator, dtype=loc_p.dtype, device=loc_p.device)
            parts.insert(0, loc_p + torch.exp(0.5 * _clamped(log_var_p)) * eps)
        return torch.cat(parts, -1)

    def sample(self, sample_shape: D.SampleShape = (), generator: torch.Generator | None = None) -> Tensor:
        """z ~ p(z) ancestrally, without gradient: (*sample_shape, L Z')."""
        with torch.no_grad():
            return self._ancestral(torch.Size(sample_shape), generator)

    def rsample(self, sample_shape: D.SampleShape = ()) -> Tensor:
        return self._ancestral(torch.Size(sample_shape), None)

    @property
    def mean(self) -> Tensor:
        """E_p[z], (L Z',), estimated from `MOMENT_SAMPLES` ancestral draws of a fixed seed (below the
        top layer the marginal moments have no closed form)."""
        return self._moments()[0]

    @property
    def variance(self) -> Tensor:
        """Var_p(z) per dimension, (L Z',), estimated as `mean` is."""
        return self._moments()[1]

    def _moments(self) -> tuple[Tensor, Tensor]:
        device = self.top.mean.device
        z = self.sample((MOMENT_SAMPLES,), torch.Generator(device=device).manual_seed(0))
        return z.mean(0), z.var(0)


def layer_log_ratios(q_z_given_x: Distribution, p_z: Distribution, z: Tensor) -> Tensor | None:
    """log q(z_i | z_{>i}, x) - log p(z_i | z_{>i}) per layer for samples z: (*S, B, Z) -> (*S, B, L),
    or None when q and p are not layered. Their sum over layers is log q(z|x) - log p(z), so the
    Monte Carlo per-layer KLs of a set of samples sum to its Monte Carlo KL."""
    if not (isinstance(q_z_given_x, LadderPosterior) and isinstance(p_z, LadderPrior)):
        return None
    conditionals = q_z_given_x.prior_conditionals(z)  # (the posterior's own samples: computed already)
    return q_z_given_x.log_prob_layers(z) - p_z.log_prob_layers(z, conditionals)


def active_units_per_layer(posterior_means: Tensor, layers: int, threshold: float) -> tuple[int, ...]:
    """The active units (`vaelab.diagnostics.active_units`, Burda et al. 2015) of each layer:
    posterior_means (N, L Z') -> L counts, layer 1 (next to x) first."""
    size = posterior_means.shape[-1] // layers
    return tuple(active_units(posterior_means[:, part], threshold)[1] for part in layer_slices(layers, size))


def _vector_net(config: ModelConfig, size_in: int, size_out: int, hidden: tuple[int, ...]) -> nn.Module:
    """A net from vectors (size_in,) to (size_out,): gated for a gated net, else an mlp, with
    hidden sizes `hidden` (none: a linear map). (`build_nets` makes a pair; the encoder is kept.)"""
    kind = "gated" if config.net == "gated" and hidden else "mlp"
    encoder, _ = build_nets(kind, (size_in,), 1, size_out, hidden, config.activation, config.dropout)
    return encoder


class HierarchicalVAE(nn.Module):
    """A Ladder VAE (Sønderby et al. 2016) of `config.layers` stochastic layers of
    `config.latent_dim` units each; see the module's docstring. `likelihood_head` turns the
    decoder's output into p(x|z) (`vaelab.models.Likelihood`, built by `build_model`)."""

    prior_loc: Tensor  # buffers, (Z',) each: the top layer's N(0, I)
    prior_scale: Tensor

    def __init__(self, config: ModelConfig, x_shape: tuple[int, ...], likelihood_head: Likelihood) -> None:
        super().__init__()
        self.config = config
        self.x_shape = tuple(x_shape)
        self.layers, self.layer_dim = config.layers, config.latent_dim
        self.latent_dim = self.layers * self.layer_dim
        features = config.hidden[-1] if config.hidden else math.prod(self.x_shape)  # H
        self.encoder, self.decoder = build_nets(
            config.net,
            self.x_shape,
            self.latent_dim,
            features,
            config.hidden,
            config.activation,
            config.dropout,
            params=likelihood_head.params,
            channels=config.width,
        )
        up_hidden = (features,) if config.hidden else ()
        self.up = nn.ModuleList(
            _vector_net(config, features, features, up_hidden) for _ in range(self.layers - 1)
        )
        self.q_heads = nn.ModuleList(nn.Linear(features, 2 * self.layer_dim) for _ in range(self.layers))
        self.down = nn.ModuleList(
            _vector_net(config, self.layer_dim, 2 * self.layer_dim, tuple(reversed(config.hidden)))
            for _ in range(self.layers - 1)
        )
        self.likelihood_head = likelihood_head
        self.register_buffer("prior_loc", torch.zeros(self.layer_dim))
        self.register_buffer("prior_scale", torch.ones(self.layer_dim))
        components = config.prior_components
        if config.prior == "mog":
            self.prior_means = nn.Parameter(torch.randn(components, self.layer_dim))
            self.prior_log_scales = nn.Parameter(torch.zeros(components, self.layer_dim))
            self.prior_logits = nn.Parameter(torch.zeros(components))
        elif config.prior == "vamp":
            self.pseudo_inputs = nn.Parameter(0.05 + 0.01 * torch.randn(components, *self.x_shape))

    @property
    def bf16_safe(self) -> bool:
        """As a one-layer VAE's: with a Bernoulli decoder (every log-density here is float32)."""
        return self.likelihood_head.kind == "bernoulli"

    @property
    def deterministic(self) -> bool:
        return False

    def bottom_up(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(mu_hat, log sigma_hat^2), each (B, L, Z'), float32 at least: the deterministic pass d_1 = f_1(x),
        d_{i+1} = f_{i+1}(d_i) and each layer's Gaussian term from d_i."""
        d = self.encoder(x)  # (B, H)
        params = [self.q_heads[0](d)]
        for up, head in zip(self.up, self.q_heads[1:], strict=True):
            d = up(d)
            params.append(head(d))
        loc, log_var = _working(torch.stack(params, 1)).chunk(2, dim=-1)  # (B, L, Z') each
        return loc, log_var

    def top_down(self, i: int, z_above: Tensor) -> tuple[Tensor, Tensor]:
        """(mu_p, log sigma_p^2) of p(z_i | z_{i+1}): z_above (..., Z') -> two (..., Z'), float32 at least."""
        loc, log_var = _working(forward_flat(self.down[i], z_above)).chunk(2, dim=-1)
        return loc, log_var

    def posterior(self, x: Tensor) -> Distribution:
        """q(z|x) of the ladder: x (B, *x_shape) -> batch (B,), event (L Z',)."""
        return self.posterior_family(self.posterior_params(x))

    def posterior_params(self, x: Tensor) -> Tensor:
        """What q(z|x) depends on x through: the bottom-up terms (mu_hat_i, log sigma_hat_i^2) of
        every layer, (B, *x_shape) -> (B, L 2Z'), float32 at least. (The amortization gap optimizes them per
        example, `vaelab.inference_gaps`; the top-down conditionals stay the model's.)"""
        loc_hat, log_var_hat = self.bottom_up(x)
        return torch.cat([loc_hat, log_var_hat], -1).flatten(-2)

    def posterior_family(self, params: Tensor) -> LadderPosterior:
        """q(z|x) from `posterior_params`: (B, L 2Z') -> batch (B,), event (L Z',)."""
        loc_hat, log_var_hat = params.unflatten(-1, (self.layers, 2 * self.layer_dim)).chunk(2, dim=-1)
        return LadderPosterior(loc_hat, log_var_hat, self.top_down)

    def top_prior(self) -> Distribution:
        """p(z_L): N(0, I), a learned mixture (mog) or the VampPrior (1/K) sum_k q(z_L | u_k), whose
        components are the top layer's posteriors q(z_L|x) = N(mu_hat_L, sigma_hat_L^2) at the
        pseudo-inputs u_k; batch (), event (Z',)."""
        kind = self.config.prior
        if kind == "normal":
            normal = torch.distributions.Normal(self.prior_loc, self.prior_scale, validate_args=False)
            return torch.distributions.Independent(normal, 1, validate_args=False)
        if kind == "vamp":
            u = nn.functional.hardtanh(self.pseudo_inputs, 0.0, 1.0)
            loc_hat, log_var_hat = self.bottom_up(u)  # (K, L, Z')
            top = D.diagonal_normal(loc_hat[:, -1], log_var_hat[:, -1]).base_dist
            logits = torch.zeros(self.config.prior_components, device=u.device)
            return D.DiagonalGaussianMixture(logits, top.loc, top.scale)
        scale = torch.exp(self.prior_log_scales.clamp(-15.0, 10.0))
        return D.DiagonalGaussianMixture(self.prior_logits, self.prior_means, scale)

    def prior(self) -> Distribution:
        """p(z) = p(z_L) prod_{i<L} p(z_i | z_{i+1}): batch (), event (L Z',)."""
        return LadderPrior(self.top_prior(), self.top_down, self.layers)

    def likelihood(self, z: Tensor) -> Distribution:
        """p(x|z) from all layers: z (*S, L Z') -> batch (*S,), event x_shape."""
        return self.likelihood_head(forward_flat(self.decoder, z))
