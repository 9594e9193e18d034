"""Models: encoder + decoder + prior + likelihood, and no loss inside.

Every model speaks the protocol `LatentVariableModel` that objectives and estimators use:

    posterior(x)  -> q(z|x)  x: (B, *x_shape)  batch (B,), event (Z,)
    prior()       -> p(z)    batch (), event (Z,)
    likelihood(z) -> p(x|z)  z: (*S, Z)        batch (*S,), event x_shape

and tells its `latent_dim` (Z), `x_shape` and whether it is `deterministic` (an autoencoder).

A model that uses labels says so (`uses_labels`); it is the protocol model once its labels are fixed,
`model.given(y)` for y: (B,) int64 class codes (-1: unlabelled, for the models that allow it),
whose distributions are q(z|x, y) and p(x|z, y) with y broadcast over the sample dims (see
`GivenLabels`), so every objective and estimator runs on it unchanged. `given_labels(model, y)`
is what the objectives, the trainer and the evaluation call: `model.given(y)` for a model that
uses labels, the model itself for one that does not.

`VAE` has a Gaussian q(z|x) = N(mu(x), diag(sigma^2(x))) (or another family of
`vaelab.posteriors`: full covariance, an inverse autoregressive flow) and a N(0, I) prior (Kingma &
Welling 2014). `AE` is the same networks with a deterministic code (a point mass at the
encoder's output); it keeps the N(0, I) prior only so that decoding prior samples shows what an
unregularized code space does. `build_model` makes a Ladder VAE of `vaelab.hierarchical` for
`layers` >= 2 stochastic layers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Protocol, TypeAlias, runtime_checkable

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, Normal

from vaelab import distributions as D
from vaelab.columns import MixedColumns
from vaelab.config import AUTO_SIGMA, ModelConfig
from vaelab.errors import UserError
from vaelab.hierarchical import HierarchicalVAE
from vaelab.likelihoods import family
from vaelab.nets import LabelConditioned, build_nets, forward_flat
from vaelab.posteriors import build_posterior
from vaelab.semisupervised import M2


@runtime_checkable
class LatentVariableModel(Protocol):
    """What objectives, estimators and the evaluation need of a model: its three distributions
    and three facts about its shapes and its code.

    latent_dim: Z, the number of latent variables (a single categorical z counts as one);
    x_shape: the shape of one example; deterministic: whether q(z|x) is a point mass (an
    autoencoder), which has no finite KL to a density and so no ELBO.
    """

    def posterior(self, x: Tensor) -> Distribution:
        """q(z|x); x: (B, *x_shape) -> batch (B,), event (Z,)."""
        ...

    def prior(self) -> Distribution:
        """p(z): batch (), event (Z,)."""
        ...

    def likelihood(self, z: Tensor) -> Distribution:
        """p(x|z); z: (*S, Z) -> batch (*S,), event x_shape."""
        ...

    @property
    def latent_dim(self) -> int: ...

    @property
    def x_shape(self) -> tuple[int, ...]: ...

    @property
    def deterministic(self) -> bool: ...


def decoder_params(config: ModelConfig) -> int:
    """The decoder's outputs per dimension of x: the likelihood family's parameters (`auto`, not yet
    resolved from the data, as its default bernoulli; `mixed` one per column)."""
    kind = "bernoulli" if config.likelihood == "auto" else config.likelihood
    return 1 if kind == "mixed" else family(kind).params(config.mixtures)


class Likelihood(nn.Module):
    """Turns decoder outputs into p(x|z), a family of `vaelab.likelihoods.LIKELIHOODS` made
    independent over the example's dims; holds a learned sigma where there is one.

    out: (*S, *x_shape), or (*S, P, *x_shape) for P = `params` > 1 parameters per subpixel
    -> batch (*S,), event x_shape. Log-probabilities are computed in float32 even when the
    networks ran in bf16 (the discretized families' CDF differences included)."""

    bernoulli_columns: Tensor  # (D,) bool, a buffer of the mixed likelihood

    def __init__(self, config: ModelConfig, x_shape: tuple[int, ...]) -> None:
        super().__init__()
        # (`auto` is resolved from the data when training starts; a model built without data
        # gets the defaults for data that are not tabular)
        self.kind = "bernoulli" if config.likelihood == "auto" else config.likelihood
        sigma = AUTO_SIGMA if config.sigma == "auto" else config.sigma
        self.event_dims = len(x_shape)
        self.log_scale: Tensor | None
        self.family = None if self.kind == "mixed" else family(self.kind)
        self.params = decoder_params(config)
        if self.family is not None and not self.family.has_sigma:
            self.register_buffer("log_scale", None)
        elif sigma is None:  # learned per-dimension sigma, parameterized by its log
            self.log_scale = nn.Parameter(torch.zeros(x_shape))
        else:
            self.register_buffer("log_scale", torch.full(x_shape, math.log(sigma)))
        if self.kind == "mixed":  # which columns are Bernoulli: set from the data, saved with the weights
            self.register_buffer("bernoulli_columns", torch.zeros(x_shape, dtype=torch.bool))

    def forward(self, out: Tensor) -> Distribution:
        with torch.autocast(out.device.type, enabled=False):  # log-probabilities in float32
            if self.family is None:
                assert self.log_scale is not None
                return MixedColumns(out.float(), self.log_scale.exp(), self.bernoulli_columns)
            p_x_given_z = self.family.make(out.float(), self.log_scale, self.event_dims)
        return Independent(p_x_given_z, self.event_dims, validate_args=False)


class VAE(nn.Module):
    """Variational autoencoder: q(z|x) diagonal Gaussian, p(z) = N(0, I), p(x|z) by config."""

    uses_labels = False  # a model conditioned on labels says so (`given_labels`)
    prior_loc: Tensor  # buffers, (Z,) each
    prior_scale: Tensor

    def __init__(self, config: ModelConfig, x_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.config = config
        self.x_shape = tuple(x_shape)
        self.latent_dim = config.latent_dim
        self.posterior_family = build_posterior(
            config.posterior, config.latent_dim, config.flow_steps, config.flow_hidden
        )
        if config.prior == "vamp" and config.posterior != "diagonal":
            raise UserError(
                f"model.prior vamp: its components are diagonal posteriors; model.posterior "
                f"{config.posterior} is not (use model.posterior diagonal or another prior)"
            )
        self.encoder, self.decoder = build_nets(
            config.net,
            self.x_shape,
            config.latent_dim,
            self.encoder_outputs,
            config.hidden,
            config.activation,
            config.dropout,
            params=decoder_params(config),
            channels=config.width,
        )
        self.likelihood_head = Likelihood(config, self.x_shape)
        self.register_buffer("prior_loc", torch.zeros(config.latent_dim))
        self.register_buffer("prior_scale", torch.ones(config.latent_dim))
        components = config.prior_components
        if config.prior == "mog":  # K learned diagonal Gaussians with learned weights
            self.prior_means = nn.Parameter(torch.randn(components, config.latent_dim))
            self.prior_log_scales = nn.Parameter(torch.zeros(components, config.latent_dim))
            self.prior_logits = nn.Parameter(torch.zeros(components))
        elif config.prior == "vamp":  # pseudo-inputs u_k, kept in [0, 1] by a hard tanh
            self.pseudo_inputs = nn.Parameter(0.05 + 0.01 * torch.randn(components, *self.x_shape))

    @property
    def encoder_outputs(self) -> int:
        return self.posterior_family.num_params

    @property
    def bf16_safe(self) -> bool:
        """Whether bf16 matrix products leave this family's bound intact, so `precision auto` may
        pick them: yes with a Bernoulli decoder (logits tolerate bf16's 8-bit mantissa, and every
        log-probability is float32); no with a Gaussian one, whose mean is rounded by up to 2^-9
        relative, as much as a small or learned sigma resolves."""
        return self.likelihood_head.kind == "bernoulli"  # (auto, unresolved, builds as bernoulli)

    def posterior(self, x: Tensor) -> Distribution:
        """q(z|x) of the configured family (`vaelab.posteriors`); x: (B, *x_shape) -> batch (B,),
        event (Z,). The diagonal family: N(mu(x), diag(exp(log_var(x))))."""
        return self.posterior_family(self.posterior_params(x))

    def posterior_params(self, x: Tensor) -> Tensor:
        """The encoder's output, the parameters of q(z|x): (B, *x_shape) -> (B, P), float32 even
        under bf16 autocast."""
        return self.encoder(x).float()

    def prior(self) -> Distribution:
        """p(z): N(0, I_Z), or a mixture of K diagonal Gaussians; batch (), event (Z,).

        vamp: p(z) = (1/K) sum_k q(z | u_k), the VampPrior (Tomczak & Welling 2018, eq. 9), whose
        components are the encoder's posteriors at K learned pseudo-inputs u_k.
        mog: p(z) = sum_k pi_k N(z; m_k, diag(s_k^2)) with all of pi, m, s learned.
        """
        kind = self.config.prior
        if kind == "normal":
            normal = Normal(self.prior_loc, self.prior_scale, validate_args=False)
            return Independent(normal, 1, validate_args=False)
        if kind == "vamp":
            q = self.pseudo_posterior()  # batch (K,)
            if not D.is_diagonal_normal(q):
                raise UserError("model.prior vamp: needs a Gaussian q(z|x), not an autoencoder's point mass")
            logits = torch.zeros(self.config.prior_components, device=self.pseudo_inputs.device)
            return D.DiagonalGaussianMixture(logits, q.base_dist.loc, q.base_dist.scale)
        scale = torch.exp(self.prior_log_scales.clamp(-15.0, 10.0))
        return D.DiagonalGaussianMixture(self.prior_logits, self.prior_means, scale)

    def pseudo_posterior(self) -> Distribution:
        """The VampPrior's components q(z | u_k) at the pseudo-inputs u_k, kept in [0, 1]: batch (K,)."""
        return self.posterior(nn.functional.hardtanh(self.pseudo_inputs, 0.0, 1.0))

    def likelihood(self, z: Tensor) -> Distribution:
        """p(x|z); z: (*S, Z) -> batch (*S,), event x_shape."""
        return self.likelihood_head(forward_flat(self.decoder, z))

    @property
    def deterministic(self) -> bool:
        return False


class AE(VAE):
    """Autoencoder: the VAE's networks with a deterministic code z = f(x)."""

    @property
    def encoder_outputs(self) -> int:
        return self.config.latent_dim

    def posterior(self, x: Tensor) -> Distribution:
        """A point mass at the code f(x): batch (B,), event (Z,)."""
        return D.PointMass(self.encoder(x).float())

    @property
    def deterministic(self) -> bool:
        return True


class ConditionalVAE(VAE):
    """Conditional VAE (Sohn et al. 2015; the M2 model of Kingma et al. 2014 with y observed):

        q(z|x, y),  p(z),  p(x|z, y),  log p(x|y) >= E_q(z|x,y)[log p(x|z, y)] - KL(q(z|x, y) || p(z))

    for C classes y (`config.classes`), the one-hot y joining the encoder's and the decoder's first
    fully connected layer (`vaelab.nets.LabelConditioned`). The prior is the VAE's, unconditional:
    normal, mog, or vamp, whose pseudo-inputs u_k carry the labels k mod C, p(z) = (1/K) sum_k
    q(z | u_k, k mod C). It is the protocol model once its labels are fixed: `given(y)`.
    """

    uses_labels = True
    encoder: LabelConditioned
    decoder: LabelConditioned

    def __init__(self, config: ModelConfig, x_shape: tuple[int, ...]) -> None:
        if config.classes is None:
            raise UserError("model.classes: a conditional model needs its classes (resolved from the data)")
        super().__init__(config, x_shape)
        self.num_classes = len(config.classes)
        self.encoder = LabelConditioned(self.encoder, self.num_classes)
        self.decoder = LabelConditioned(self.decoder, self.num_classes)

    def given(self, labels: Tensor) -> GivenLabels:
        """The protocol model for labels y: (B,) int64 codes in 0..C-1."""
        return GivenLabels(self, labels)

    def posterior_given(self, x: Tensor, labels: Tensor) -> Distribution:
        """q(z|x, y); x: (B, *x_shape), y: (B,) -> batch (B,), event (Z,)."""
        return self.posterior_family(self.posterior_params_given(x, labels))

    def posterior_params_given(self, x: Tensor, labels: Tensor) -> Tensor:
        """The parameters of q(z|x, y): (B, *x_shape), (B,) -> (B, P), float32 under autocast too."""
        return self.encoder(x, labels).float()

    def likelihood_given(self, z: Tensor, labels: Tensor) -> Distribution:
        """p(x|z, y); z: (*S, B, Z) (or (B, Z)), y: (B,) broadcast over the sample dims S -> batch
        (*S, B), event x_shape."""
        lead = z.shape[:-1]
        y = labels.expand(lead)  # (*S, B)
        out = self.decoder(z.reshape(-1, z.shape[-1]), y.reshape(-1))  # (S B, *out)
        return self.likelihood_head(out.reshape(*lead, *out.shape[1:]))

    def posterior(self, x: Tensor) -> Distribution:
        raise UserError("a conditional model's q(z|x, y) needs the labels y: use model.given(y)")

    def posterior_params(self, x: Tensor) -> Tensor:
        raise UserError("a conditional model's q(z|x, y) needs the labels y: use model.given(y)")

    def likelihood(self, z: Tensor) -> Distribution:
        raise UserError("a conditional model's p(x|z, y) needs the labels y: use model.given(y)")

    def pseudo_posterior(self) -> Distribution:
        """q(z | u_k, k mod C) at the K pseudo-inputs: batch (K,)."""
        u = nn.functional.hardtanh(self.pseudo_inputs, 0.0, 1.0)
        labels = torch.arange(len(u), device=u.device) % self.num_classes
        return self.posterior_given(u, labels)


class GivenLabels:
    """A model that uses labels, its labels fixed: the protocol model (`LatentVariableModel`) of
    q(z|x, y), p(z) and p(x|z, y) for y: (B,) int64, so that every objective and estimator scores
    log p(x|y) unchanged. z: (*S, B, Z) -> p(x|z, y) of batch (*S, B): y is broadcast over the
    sample dims, as the estimators draw z ~ q(z|x, y) with shape (K, B, Z).

    `model` gives `posterior_given(x, y)`, `prior()` and `likelihood_given(z, y)`; a network
    model's encoder output, posterior family and parameters are passed through too
    (`posterior_params`, `posterior_family`, `parameters`, `eval`), so that the inference gaps
    (`vaelab.inference_gaps`), which optimize q's parameters, run on it too.
    """

    def __init__(self, model, labels: Tensor) -> None:
        self.model, self.labels = model, labels

    def posterior(self, x: Tensor) -> Distribution:
        return self.model.posterior_given(x, self.labels)

    def prior(self) -> Distribution:
        return self.model.prior()

    def likelihood(self, z: Tensor) -> Distribution:
        return self.model.likelihood_given(z, self.labels)

    def posterior_params(self, x: Tensor) -> Tensor:
        return self.model.posterior_params_given(x, self.labels)

    @property
    def posterior_family(self) -> nn.Module:
        return self.model.posterior_family

    def parameters(self) -> Iterator[nn.Parameter]:
        return self.model.parameters()

    def eval(self) -> GivenLabels:
        self.model.eval()
        return self

    @property
    def latent_dim(self) -> int:
        return self.model.latent_dim

    @property
    def x_shape(self) -> tuple[int, ...]:
        return self.model.x_shape

    @property
    def deterministic(self) -> bool:
        return self.model.deterministic


def semi_supervised(config: ModelConfig, x_shape: tuple[int, ...]) -> M2:
    """The M2 model of `vaelab.semisupervised`, with this module's likelihood head."""
    return M2(config, x_shape, Likelihood(config, x_shape))


MODELS: dict[str, Callable[[ModelConfig, tuple[int, ...]], VAE | M2]] = {
    "vae": VAE,
    "ae": AE,
    "m2": semi_supervised,
}


def given_labels(model, labels: Tensor | None) -> LatentVariableModel:
    """The protocol model that scores a batch with labels y: (B,) int64: `model.given(y)` for a model
    that uses labels, `model` itself for one that does not (its labels, if any, are not used).
    A model that uses labels without any is a UserError."""
    if not getattr(model, "uses_labels", False):
        return model
    if labels is None:
        raise UserError("the model uses labels (model.condition label): it needs each example's label")
    return model.given(labels)


Model: TypeAlias = VAE | HierarchicalVAE | M2
"""What `build_model` builds: every model class trains, evaluates and is saved the same way."""


def build_model(config: ModelConfig, x_shape: tuple[int, ...]) -> Model:
    """The model of `config`: a Ladder VAE for `layers` >= 2 (`vaelab.hierarchical`, which gets its
    likelihood head from here), a `ConditionalVAE` for model.condition label, else MODELS[kind]."""
    if config.layers > 1:
        return HierarchicalVAE(config, x_shape, Likelihood(config, x_shape))
    if config.condition == "label":
        return ConditionalVAE(config, x_shape)
    return MODELS[config.kind](config, x_shape)
