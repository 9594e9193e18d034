"""The semi-supervised VAE M2 of Kingma, Rezende, Mohamed & Welling (2014), and its bound.

Generative model (their eq. 2): p(y) = Cat(1/K), p(z) = N(0, I), p(x | y, z) a likelihood of
`vaelab.likelihoods` whose parameters an MLP computes from the concatenation (onehot(y), z).
Inference: a classifier q(y|x) = Cat(pi(x)) and q(z | x, y) = N(mu(x, y), diag(sigma^2(x, y))).

Through the model protocol, M2 is a VAE over the joint latent v = (onehot(y), z) in R^(K+Z):
`posterior(x)` is q(y, z | x) = q(y|x) q(z|x, y), `prior()` is p(y) p(z) and `likelihood(v)` is
p(x | y, z); so every estimator and `vaelab evaluate` run on it unchanged, and evaluate's
importance-sampled log p(x) = log sum_y p(y) ∫ p(x|y,z) p(z) dz uses the proposal
q(y|x) q(z|x,y) (y sampled, not enumerated: one code path for every model). `given(y)` is the
protocol model of z for fixed labels (q(z|x,y), p(z), p(x|y,z)), and `q_y_given_x` / `classify`
the classifier.

The training bound (their eqs. 6, 7 and 9), per example in nats, `m2_terms`:

    labelled (x, y):  L(x, y) = E_q(z|x,y)[log p(x|y,z)] + log p(y) - KL(q(z|x,y) || p(z))
    unlabelled x:     U(x) = sum_y q(y|x) L(x, y) + H(q(y|x))   (exact enumeration over y)

and the classifier's term log q(y|x) on labelled rows (their eq. 9). U(x) <= log p(x) and
L(x, y) <= log p(x, y). A batch of B rows, B_l of them labelled, trains on the surrogate whose
batch mean is (`vaelab.objectives.semi_supervised`)

    (B_u / B) E_u[U(x)] + (B_l / B) E_l[L(x, y)] + alpha E_l[log q(y|x)],   alpha = `model.alpha`

With `model.labelled_per_batch` b > 0 every batch carries b labelled rows (`balanced_order`):
B_l / B = b / B, the labelled rows cycling beside one pass over the unlabelled ones. Their eq. 9
is J + alpha' E_l[log q(y|x)] with J summed over the N rows and alpha' = 0.1 N: per row,
J / N + 0.1 E_l[log q(y|x)], so alpha = 0.1 on batches that hold labelled rows in their share
N_l / N of the data; their per-labelled-row ratio of log q(y|x) to L(x, y), 0.1 N / N_l, is
alpha = 0.1 (N / N_l)(b / B) with balanced batches (0.4 on mnist5k with 10 labels per class,
b = 10, B = 100). The default alpha is larger (README: what it buys on mnist5k).

`M2` builds its own networks (MLPs: q(z|x,y) and p(x|y,z) take a one-hot label beside their
input), so `model.net` must be mlp; the likelihood head is `vaelab.models.Likelihood`, passed in
by `vaelab.models.build_model` (this module sits below `models`, which registers it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, Normal, constraints

from vaelab.config import ModelConfig, RunConfig
from vaelab.distributions import LOG_VAR_CLAMP, GeneratorSampled, SampleShape, draw, kl_standard_normal
from vaelab.errors import UserError
from vaelab.nets import ACTIVATIONS, forward_flat, mlp

if TYPE_CHECKING:
    from vaelab.data import Splits

__all__ = [
    "M2",
    "M2Terms",
    "balanced_order",
    "check_labelled_per_batch",
    "ClassificationError",
    "GivenLabels",
    "JointPosterior",
    "JointPrior",
    "classification_error",
    "classification_record",
    "m2_terms",
]


def one_hot(y: Tensor, num_classes: int, like: Tensor) -> Tensor:
    """y: (*S,) int64 -> (*S, K) in `like`'s dtype and device."""
    return F.one_hot(y, num_classes).to(like.dtype)


def full_precision(t: Tensor) -> Tensor:
    """A network's output in float32 when it ran in bf16 or fp16 (log-probabilities are float32),
    else as it is (a float64 model stays float64)."""
    return t.float() if t.dtype in (torch.bfloat16, torch.float16) else t


def _gaussian(params: Tensor) -> Independent:
    """N(loc, diag(exp(log_var))) from the encoder's (..., 2Z) output: batch (...), event (Z,)."""
    loc, log_var = params.chunk(2, dim=-1)
    scale = torch.exp(0.5 * log_var.clamp(*LOG_VAR_CLAMP))
    return Independent(Normal(loc, scale, validate_args=False), 1, validate_args=False)


class JointPosterior(GeneratorSampled):
    """q(y, z | x) = q(y|x) q(z|x, y) over v = (onehot(y), z): batch (B,), event (K + Z,).

    `q_z_given_y(onehot)` maps one-hot labels (*S, B, K) to q(z|x, y) of batch (*S, B).
    log_prob(v) = log q(y|x) + log q(z|x, y) for one-hot y; sampling draws y ~ q(y|x) (no
    gradient) and then z ~ q(z|x, y) reparameterized. mean: (pi(x), sum_y pi_y(x) mu(x, y)).
    """

    arg_constraints: dict[str, constraints.Constraint] = {}
    has_rsample = False

    def __init__(self, logits: Tensor, q_z_given_y, num_classes: int, latent_dim: int) -> None:
        self.log_q_y = torch.log_softmax(logits, dim=-1)  # (B, K)
        self.q_z_given_y = q_z_given_y
        self.num_classes, self.z_dim = num_classes, latent_dim
        super().__init__(logits.shape[:-1], torch.Size([num_classes + latent_dim]), validate_args=False)

    def sample(self, sample_shape: SampleShape = (), generator: torch.Generator | None = None) -> Tensor:
        shape = torch.Size(sample_shape)
        probs = self.log_q_y.exp().reshape(-1, self.num_classes)  # (B, K)
        n = math.prod(shape)
        y = torch.multinomial(probs, n, replacement=True, generator=generator)  # (B, n)
        y = y.T.reshape(*shape, *self.batch_shape)  # (*S, B)
        onehot = one_hot(y, self.num_classes, self.log_q_y)
        z = draw(self.q_z_given_y(onehot), (), generator)  # (*S, B, Z)
        return torch.cat([onehot, z], dim=-1)

    def log_prob(self, value: Tensor) -> Tensor:
        onehot, z = value[..., : self.num_classes], value[..., self.num_classes :]
        log_q_y = (onehot * self.log_q_y).sum(-1)  # (*S, B)
        return log_q_y + self.q_z_given_y(onehot).log_prob(z)

    @property
    def mean(self) -> Tensor:
        probs = self.log_q_y.exp()  # (B, K)
        eye = torch.eye(self.num_classes, dtype=probs.dtype, device=probs.device)
        onehot = eye[:, None, :].expand(self.num_classes, *probs.shape)  # (K, B, K)
        loc = self.q_z_given_y(onehot).mean  # (K, B, Z)
        return torch.cat([probs, (probs.T[..., None] * loc).sum(0)], dim=-1)


class JointPrior(GeneratorSampled):
    """p(y, z) = (1/K) N(z; 0, I) over v = (onehot(y), z): batch (), event (K + Z,)."""

    arg_constraints: dict[str, constraints.Constraint] = {}
    has_rsample = False

    def __init__(self, num_classes: int, latent_dim: int, like: Tensor) -> None:
        self.num_classes, self.z_dim, self.like = num_classes, latent_dim, like
        zeros = torch.zeros(latent_dim, dtype=like.dtype, device=like.device)
        self.p_z = Independent(Normal(zeros, torch.ones_like(zeros), validate_args=False), 1)
        super().__init__(torch.Size(), torch.Size([num_classes + latent_dim]), validate_args=False)

    def sample(self, sample_shape: SampleShape = (), generator: torch.Generator | None = None) -> Tensor:
        shape = torch.Size(sample_shape)
        device = self.like.device
        y = torch.randint(self.num_classes, shape, generator=generator, device=device)
        z = torch.randn((*shape, self.z_dim), generator=generator, device=device, dtype=self.like.dtype)
        return torch.cat([one_hot(y, self.num_classes, self.like), z], dim=-1)

    def log_prob(self, value: Tensor) -> Tensor:
        return self.p_z.log_prob(value[..., self.num_classes :]) - math.log(self.num_classes)

    @property
    def mean(self) -> Tensor:
        uniform = torch.full((self.num_classes,), 1.0 / self.num_classes, dtype=self.like.dtype)
        return torch.cat([uniform.to(self.like.device), self.p_z.mean])


class M2(nn.Module):
    """M2: classifier q(y|x), q(z|x,y), p(x|y,z), p(y) = Cat(1/K), p(z) = N(0, I); see the module.

    latent_dim is K + Z (the joint latent (onehot(y), z)); `z_dim` is Z. `likelihood_head` turns
    decoder outputs into p(x|y,z) (`vaelab.models.Likelihood`). alpha: the weight of a batch's
    mean log q(y|x) over its labelled rows beside its mean bound (`model.alpha`, see the module).
    """

    # learns from labels (the trainer passes each batch's, -1 unlabelled) but is not conditioned
    # on them: validation and evaluation score log p(x) (`vaelab.labels.split_labels`)
    uses_labels = False
    learns_from_labels = True

    def __init__(self, config: ModelConfig, x_shape: tuple[int, ...], likelihood_head: nn.Module) -> None:
        super().__init__()
        for field, value, allowed in (
            ("net", config.net, "mlp"),
            ("posterior", config.posterior, "diagonal"),
            ("prior", config.prior, "normal"),
        ):
            if value != allowed:
                raise UserError(f"model.{field} {value}: the m2 model has a {allowed} {field} only")
        if config.classes is None:
            raise UserError("model.classes: the m2 model needs its classes (resolved from the data)")
        self.config = config
        self.x_shape = tuple(x_shape)
        self.num_classes = k = len(config.classes)
        self.z_dim = config.latent_dim
        self.latent_dim = k + self.z_dim
        self.alpha = config.alpha
        act, d = ACTIVATIONS[config.activation], math.prod(x_shape)
        hidden, dropout = config.hidden, config.dropout
        params = likelihood_head.params
        # mlp(...) gives an (encoder, decoder) pair: the classifier is an encoder to K logits and
        # p(x|y,z) a decoder of the K + Z joint latent; q(z|x,y) is an encoder of (x, onehot(y))
        self.classifier, self.decoder = mlp(x_shape, k + self.z_dim, k, hidden, act, dropout, params)
        self.encoder = mlp((d + k,), 1, 2 * self.z_dim, hidden, act, dropout)[0]
        self.likelihood_head = likelihood_head

    @property
    def deterministic(self) -> bool:
        return False

    @property
    def bf16_safe(self) -> bool:
        return bool(self.likelihood_head.kind == "bernoulli")

    # ------------------------------------------------------------------ the two inference nets

    def q_y_given_x(self, x: Tensor) -> torch.distributions.Categorical:
        """The classifier q(y|x) = Cat(pi(x)); x: (B, *x_shape) -> batch (B,)."""
        return torch.distributions.Categorical(logits=full_precision(self.classifier(x)), validate_args=False)

    @torch.no_grad()
    def classify(self, x: Tensor) -> Tensor:
        """argmax_y q(y|x), x: (B, *x_shape) -> (B,) int64 class codes (eval mode: no dropout)."""
        was_training = self.training
        self.eval()
        try:
            return self.classifier(x).argmax(-1)
        finally:
            self.train(was_training)

    def q_z_given_xy(self, x: Tensor, onehot: Tensor) -> Independent:
        """q(z|x,y); x: (B, *x_shape), onehot: (*S, B, K) -> batch (*S, B), event (Z,)."""
        x_flat = x.reshape(x.shape[0], -1).to(onehot.dtype)
        inputs = torch.cat([x_flat.expand(*onehot.shape[:-1], -1), onehot], dim=-1)  # (*S, B, D + K)
        return _gaussian(full_precision(forward_flat(self.encoder, inputs)))

    # ------------------------------------------------------------------------ the protocol

    def posterior(self, x: Tensor) -> Distribution:
        """q(y, z | x) = q(y|x) q(z|x,y) (`JointPosterior`): batch (B,), event (K + Z,)."""
        logits = full_precision(self.classifier(x))
        return JointPosterior(
            logits, lambda onehot: self.q_z_given_xy(x, onehot), self.num_classes, self.z_dim
        )

    def prior(self) -> Distribution:
        """p(y, z) = (1/K) N(z; 0, I) (`JointPrior`): batch (), event (K + Z,)."""
        return JointPrior(self.num_classes, self.z_dim, full_precision(next(self.decoder.parameters())))

    def likelihood(self, v: Tensor) -> Distribution:
        """p(x | y, z); v = (onehot(y), z): (*S, K + Z) -> batch (*S,), event x_shape."""
        return self.likelihood_head(forward_flat(self.decoder, v))

    def given(self, y: Tensor) -> GivenLabels:
        """The protocol model of z for fixed labels y: (B,) int64 (see `GivenLabels`)."""
        return GivenLabels(self, y)


class GivenLabels:
    """M2 with y fixed: q(z|x,y), p(z) = N(0, I), p(x|y,z); y: (B,) broadcast over sample dims
    (x: (B, *x_shape), z: (*S, B, Z)). Every estimator runs on it: its ELBO is L(x, y) - log p(y)
    and its log p(x) estimate is log p(x|y)."""

    def __init__(self, model: M2, y: Tensor) -> None:
        self.model, self.y = model, y
        self.latent_dim, self.x_shape = model.z_dim, model.x_shape

    @property
    def deterministic(self) -> bool:
        return False

    def _onehot(self, like: Tensor, lead: torch.Size) -> Tensor:
        return one_hot(self.y, self.model.num_classes, like).expand(*lead, -1)

    def posterior(self, x: Tensor) -> Distribution:
        return self.model.q_z_given_xy(x, self._onehot(x, torch.Size([len(x)])))

    def prior(self) -> Distribution:
        return self.model.prior().p_z  # type: ignore[attr-defined]

    def likelihood(self, z: Tensor) -> Distribution:
        return self.model.likelihood(torch.cat([self._onehot(z, z.shape[:-1]), z], dim=-1))


# ----------------------------------------------------------------------------- the bound


@dataclass(frozen=True)
class M2Terms:
    """The M2 bound per example, each (B,) in nats, in `ELBOTerms`' form elbo = log_p_x_given_z - kl.

    Unlabelled rows (labels -1): elbo = U(x); log_p_x_given_z = sum_y q(y|x) E_q(z|x,y)[log p(x|y,z)];
    kl = KL(q(y, z | x) || p(y) p(z)) = sum_y q(y|x) KL(q(z|x,y) || p(z)) + KL(q(y|x) || p(y)).
    Labelled rows: q(y|x) replaced by the point mass at the label: elbo = L(x, y),
    log_p_x_given_z = E_q(z|x,y)[log p(x|y,z)], kl = KL(q(z|x,y) || p(z)) - log p(y).
    log_q_y: log q(y|x) at the label (0 on unlabelled rows); labelled: (B,) bool.
    """

    elbo: Tensor
    log_p_x_given_z: Tensor
    kl: Tensor
    log_q_y: Tensor
    labelled: Tensor


def m2_terms(
    model: M2, x: Tensor, labels: Tensor | None = None, generator: torch.Generator | None = None
) -> M2Terms:
    """The M2 bound of each row of x: (B, *x_shape), by exact enumeration over the K classes with
    one reparameterized z ~ q(z|x,y) per class; labels: (B,) int64, -1 unlabelled (None: all are).
    Kingma et al. (2014), eqs. 6 and 7; see `M2Terms`."""
    k = model.num_classes
    log_q_y = torch.log_softmax(full_precision(model.classifier(x)), dim=-1)  # (B, K)
    eye = torch.eye(k, dtype=log_q_y.dtype, device=x.device)
    onehot = eye[:, None, :].expand(k, len(x), k)  # (K, B, K): every class for every row
    q_z = model.q_z_given_xy(x, onehot)  # batch (K, B)
    z = draw(q_z, (), generator)  # (K, B, Z)
    recon = model.likelihood(torch.cat([onehot, z], dim=-1)).log_prob(x)  # (K, B)
    base = q_z.base_dist
    kl_z = kl_standard_normal(base.loc, 2 * base.scale.log())  # (K, B)
    log_k = math.log(k)
    q_y = log_q_y.exp().T  # (K, B)
    # unlabelled: expectations under q(y|x); KL(q(y|x) || 1/K) = sum_y q log q + log K
    recon_u = (q_y * recon).sum(0)
    kl_u = (q_y * kl_z).sum(0) + (q_y * log_q_y.T).sum(0) + log_k
    if labels is None:
        labels = torch.full((len(x),), -1, dtype=torch.int64, device=x.device)
    labelled = labels >= 0
    y = labels.clamp(min=0)[None]  # (1, B)
    recon_l, kl_l = recon.gather(0, y)[0], kl_z.gather(0, y)[0] + log_k
    recon_all = torch.where(labelled, recon_l, recon_u)
    kl_all = torch.where(labelled, kl_l, kl_u)
    log_q_label = torch.where(labelled, log_q_y.gather(1, y.T)[:, 0], torch.zeros_like(recon_u))
    return M2Terms(recon_all - kl_all, recon_all, kl_all, log_q_label, labelled)


# ------------------------------------------------------------------- labelled batches


def check_labelled_per_batch(config: RunConfig) -> None:
    """Refuse (UserError, one line) an m2 config whose `model.labelled_per_batch` leaves no
    unlabelled row in a batch of `train.batch_size`; anything else passes."""
    per_batch, batch_size = config.model.labelled_per_batch, config.train.batch_size
    if config.model.kind == "m2" and per_batch >= batch_size:
        raise UserError(
            f"model.labelled_per_batch {per_batch}: leaves no unlabelled row in a batch of "
            f"train.batch_size {batch_size} (use fewer)"
        )


def balanced_order(
    labels: Tensor, batch_size: int, labelled_per_batch: int, generator: torch.Generator
) -> Tensor:
    """An epoch's row order in which every batch carries `labelled_per_batch` labelled rows.

    labels: (N,) int64, -1 unlabelled. The N_u unlabelled rows are shuffled and cut into
    S = ceil(N_u / b_u) batches of b_u = batch_size - labelled_per_batch rows (the last may be
    shorter); each batch gets the next `labelled_per_batch` rows of the labelled rows cycled,
    reshuffled at each pass, and is shuffled within itself (a data-parallel shard gets its share).
    Returns (N_u + S * labelled_per_batch,) int64 row indices on `generator`'s device, to be cut
    into consecutive batches of `batch_size`: each unlabelled row appears once, each labelled row
    about S * labelled_per_batch / N_l times. With labelled_per_batch 0, or without labelled or
    without unlabelled rows, it is a plain permutation of the N rows.
    """
    device = generator.device
    labels = labels.to(device)
    unlabelled = torch.nonzero(labels < 0).flatten()
    labelled = torch.nonzero(labels >= 0).flatten()
    if labelled_per_batch == 0 or len(labelled) == 0 or len(unlabelled) == 0:
        return torch.randperm(len(labels), generator=generator, device=device)
    per_batch_u = batch_size - labelled_per_batch
    steps = math.ceil(len(unlabelled) / per_batch_u)
    unlabelled = unlabelled[torch.randperm(len(unlabelled), generator=generator, device=device)]
    passes = math.ceil(steps * labelled_per_batch / len(labelled))
    cycled = torch.cat(
        [labelled[torch.randperm(len(labelled), generator=generator, device=device)] for _ in range(passes)]
    )
    batches = []
    for step in range(steps):
        rows = torch.cat(
            [
                cycled[step * labelled_per_batch : (step + 1) * labelled_per_batch],
                unlabelled[step * per_batch_u : (step + 1) * per_batch_u],
            ]
        )
        batches.append(rows[torch.randperm(len(rows), generator=generator, device=device)])
    return torch.cat(batches)


# ----------------------------------------------------------------------- classification


@dataclass(frozen=True)
class ClassificationError:
    """Test error of argmax q(y|x): percent, its binomial standard error sqrt(p(1-p)/n), and n."""

    percent: float
    stderr_percent: float
    num_examples: int


def classification_error(model: M2, x: Tensor, y: Tensor, batch_size: int = 1000) -> ClassificationError:
    """The error rate of `model.classify` on x: (N, *x_shape) against labels y: (N,), in percent,
    with the binomial standard error; rows labelled -1 are left out. Runs on the model's device."""
    keep = y >= 0
    x, y = x[keep], y[keep]
    if len(y) == 0:
        raise UserError("no labelled rows to measure a classification error on")
    device = next(model.parameters()).device
    wrong = sum(
        int((model.classify(x[i : i + batch_size].to(device)).cpu() != y[i : i + batch_size]).sum())
        for i in range(0, len(x), batch_size)
    )
    p = wrong / len(y)
    return ClassificationError(100 * p, 100 * math.sqrt(p * (1 - p) / len(y)), len(y))


@torch.no_grad()
def classification_record(model: M2, splits: Splits) -> dict[str, float]:
    """An epoch's classification metrics: the classifier's mean -log q(y|x) and error (%) on the
    labelled train rows, and its error on the validation rows that have labels."""
    x, y = splits.inputs("train"), splits.train_labels
    record: dict[str, float] = {}
    if y is not None and bool((y >= 0).any()):
        rows = y >= 0
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        try:
            log_q = model.q_y_given_x(x[rows].to(device)).log_prob(y[rows].to(device))
        finally:
            model.train(was_training)
        record["train_classification_loss_nats"] = float(-log_q.mean())
        record["train_error_percent"] = classification_error(model, x, y).percent
    if splits.valid_labels is not None:
        record["valid_error_percent"] = classification_error(
            model, splits.inputs("valid"), splits.valid_labels
        ).percent
    return record
