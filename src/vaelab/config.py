"""Frozen configuration dataclasses: one per pipeline stage, strict about unknown keys.

A run is fully described by a `RunConfig` (data, model, objective, training). The CLI maps its
flags one-to-one onto these fields; `RunConfig.from_dict` rejects unknown keys with the key's
path, so a typo in a JSON config is an error, never silently ignored. `validate()` checks values
without side effects and raises `UserError` naming the offending field.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from typing import Any

from vaelab.errors import UserError

BINARIZATIONS = ("none", "static", "dynamic")
PRECISIONS = ("fp32", "bf16")
LR_SCHEDULES = ("constant", "cosine", "plateau")
PRIORS = ("normal", "mog", "vamp")


@dataclass(frozen=True)
class DataConfig:
    """Where the data come from and how they are binarized.

    source: a spec string such as `mnist5k`, `digits`, `binarized-mnist:DIR`, `npz:FILE`.
    binarize: `none`; `static` (one fixed Bernoulli draw x' ~ Bernoulli(x) of every split);
    `dynamic` (a fresh draw of each training batch every epoch; validation and test are drawn
    once, statically, so evaluation numbers are on a fixed set).
    """

    source: str = "mnist5k"
    binarize: str = "none"

    def validate(self) -> None:
        if self.binarize not in BINARIZATIONS:
            raise UserError(f"data.binarize: {self.binarize!r} is not one of {', '.join(BINARIZATIONS)}")


@dataclass(frozen=True)
class ModelConfig:
    """Encoder, decoder, prior and likelihood.

    kind: `vae` (Gaussian q(z|x)) or `ae` (deterministic code, reconstruction term only).
    net: `mlp` (hidden sizes `hidden`, mirrored in the decoder) or `conv` (a small conv net for
    images; `hidden` sizes the fully connected layer). likelihood: `bernoulli` (from logits) or
    `gaussian` with a fixed `sigma`, or a learned per-dimension sigma when `sigma` is None.
    prior: `normal` (N(0, I)), `mog` (a learned mixture of `prior_components` diagonal Gaussians)
    or `vamp` (the VampPrior, Tomczak & Welling 2018: p(z) = (1/K) sum_k q(z | u_k) with K =
    `prior_components` learned pseudo-inputs u_k). dropout: the drop probability after every hidden
    layer of both networks during training (0: none; off at evaluation).
    """

    kind: str = "vae"
    latent_dim: int = 2
    net: str = "mlp"
    hidden: tuple[int, ...] = (512, 256)
    activation: str = "relu"
    likelihood: str = "bernoulli"
    sigma: float | None = 0.1
    prior: str = "normal"
    prior_components: int = 500
    dropout: float = 0.0

    def validate(self) -> None:
        from vaelab.models import MODELS
        from vaelab.nets import ACTIVATIONS, NETS

        _one_of("model.kind", self.kind, MODELS)
        _one_of("model.net", self.net, NETS)
        _one_of("model.activation", self.activation, ACTIVATIONS)
        _one_of("model.likelihood", self.likelihood, ("bernoulli", "gaussian"))
        if not isinstance(self.latent_dim, int) or self.latent_dim < 1:
            raise UserError(f"model.latent_dim: must be an integer >= 1, got {self.latent_dim!r}")
        if not self.hidden or any(not isinstance(h, int) or h < 1 for h in self.hidden):
            raise UserError(f"model.hidden: must be one or more positive integers, got {self.hidden!r}")
        _one_of("model.prior", self.prior, PRIORS)
        if not isinstance(self.prior_components, int) or self.prior_components < 1:
            raise UserError(f"model.prior_components: must be an integer >= 1, got {self.prior_components!r}")
        if not (0.0 <= self.dropout < 1.0):
            raise UserError(f"model.dropout: must be a probability in [0, 1), got {self.dropout!r}")
        if self.sigma is not None and not (self.sigma > 0 and math.isfinite(self.sigma)):
            raise UserError(
                f"model.sigma: must be a positive number (or null for learned), got {self.sigma!r}"
            )


@dataclass(frozen=True)
class ObjectiveConfig:
    """What training maximizes, per example (the trainer averages over the batch).

    `elbo`: E_q[log p(x|z)] - beta * KL(q(z|x) || p(z)) with one reparameterized sample
    (beta = 1 is the ELBO; beta != 1 is the beta-VAE objective of Higgins et al. 2017).
    `iwae`: the importance-weighted bound with `k` samples (Burda et al. 2015, eq. 8).
    kl_warmup_epochs: the KL weight ramps linearly from 0 to beta over that many epochs
    (Sønderby et al. 2016; Bowman et al. 2016), then stays at beta. Logged ELBOs are always the
    true bound (weight 1).
    An `ae` model trains on the reconstruction term log p(x|z = encoder(x)) whatever is set here.
    """

    name: str = "elbo"
    beta: float = 1.0
    k: int = 1
    kl_warmup_epochs: int = 0

    def validate(self) -> None:
        from vaelab.objectives import OBJECTIVES

        _one_of("objective.name", self.name, OBJECTIVES)
        if not (self.beta >= 0 and math.isfinite(self.beta)):
            raise UserError(f"objective.beta: must be a finite number >= 0, got {self.beta!r}")
        if not isinstance(self.k, int) or self.k < 1:
            raise UserError(f"objective.k: must be an integer >= 1, got {self.k!r}")
        if not isinstance(self.kl_warmup_epochs, int) or self.kl_warmup_epochs < 0:
            raise UserError(f"objective.kl_warmup_epochs: must be >= 0, got {self.kl_warmup_epochs!r}")


@dataclass(frozen=True)
class TrainConfig:
    """Optimization with Adam.

    Model selection is on the validation value of the bound the objective trains (the ELBO, or
    the IWAE bound L_k at the objective's k, always at beta = 1): `valid_bound_nats` in the
    metrics. patience: stop when it has not improved for that many epochs (None: run all
    epochs); the run keeps the best-validation weights either way. precision: `fp32`, or `bf16`
    (the networks' matrix products in bfloat16 under autocast; every log-probability, the KL and
    all reductions stay float32). weight_decay: decoupled weight decay (AdamW, Loshchilov &
    Hutter 2019), against the overfitting of small or statically binarized data. lr_schedule:
    `constant`; `cosine` decay from lr to lr/100 over the epochs; or `plateau`, which halves the
    rate whenever validation has not improved for `lr_patience` epochs, down to lr/100 (this one
    suits early stopping and a wall-clock budget, where the number of epochs is unknown).
    ema: Polyak averaging of the weights (Polyak & Juditsky 1992) with this decay per step, 0 to
    turn it off; validation, model selection and the saved weights then use the averaged weights
    (the optimizer still steps the raw ones). The average spans about 1/(1 - ema) steps: 0.999 is
    two epochs of 50,000 images in batches of 100, but 25 epochs of a 4,000-image set, whose first
    epochs it would then hold back; choose a smaller decay for small data. minutes: a wall-clock
    budget for training; no epoch starts after it is spent (a budgeted run is reproducible only
    up to where the budget cut it, since that depends on the machine's speed).
    compile: run the training step's forward and backward pass as one graph compiled by
    `torch.compile` (fused element-wise kernels, no per-operation Python). Compiling costs
    seconds to tens of seconds once per process, before the first epoch (it needs a C++
    compiler); worth it for runs of more than a few epochs. Same numbers as eager up to
    floating-point rounding; the noise of a compiled step (and dropout's masks) is drawn from
    the run's generator.
    """

    epochs: int = 30
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    patience: int | None = None
    threads: int | None = None
    precision: str = "fp32"
    weight_decay: float = 0.0
    lr_schedule: str = "constant"
    lr_patience: int = 10
    ema: float = 0.0
    minutes: float | None = None
    compile: bool = False

    def validate(self) -> None:
        if not isinstance(self.compile, bool):
            raise UserError(f"train.compile: must be true or false, got {self.compile!r}")
        if self.minutes is not None and not (self.minutes > 0 and math.isfinite(self.minutes)):
            raise UserError(f"train.minutes: must be a positive number, got {self.minutes!r}")
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise UserError(f"train.{name}: must be an integer >= 1, got {value!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise UserError(f"train.lr: must be a positive number, got {self.lr!r}")
        if self.patience is not None and self.patience < 1:
            raise UserError(f"train.patience: must be >= 1, got {self.patience!r}")
        if self.threads is not None and self.threads < 1:
            raise UserError(f"train.threads: must be >= 1, got {self.threads!r}")
        _one_of("train.precision", self.precision, PRECISIONS)
        _one_of("train.lr_schedule", self.lr_schedule, LR_SCHEDULES)
        if not isinstance(self.lr_patience, int) or self.lr_patience < 1:
            raise UserError(f"train.lr_patience: must be an integer >= 1, got {self.lr_patience!r}")
        if not (0.0 <= self.ema < 1.0):
            raise UserError(f"train.ema: must be a decay in [0, 1) (0 turns averaging off), got {self.ema!r}")
        if not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            raise UserError(f"train.weight_decay: must be a finite number >= 0, got {self.weight_decay!r}")


@dataclass(frozen=True)
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> RunConfig:
        for part in (self.data, self.model, self.objective, self.train):
            part.validate()
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], where: str = "config") -> RunConfig:
        """Build from nested dicts; unknown sections or keys raise UserError naming them."""
        if not isinstance(raw, dict):
            raise UserError(f"{where}: expected a JSON object, got {type(raw).__name__}")
        sections = {f.name: f.default_factory for f in fields(cls)}  # type: ignore[misc]
        unknown = sorted(set(raw) - set(sections))
        if unknown:
            raise UserError(f"{where}: unknown section(s) {', '.join(unknown)}; known: {', '.join(sections)}")
        parts = {}
        for name, factory in sections.items():
            parts[name] = _section_from_dict(type(factory()), raw.get(name, {}), f"{where}: {name}")
        return cls(**parts)

    def replace(self, **sections: dict[str, Any]) -> RunConfig:
        """A copy with fields of the named sections replaced, e.g. replace(train={"epochs": 5})."""
        parts = {}
        for name, changes in sections.items():
            current = getattr(self, name)
            unknown = sorted(set(changes) - {f.name for f in fields(current)})
            if unknown:
                raise UserError(f"{name}: unknown key(s) {', '.join(unknown)}")
            parts[name] = dataclasses.replace(current, **changes)
        return dataclasses.replace(self, **parts)


def _section_from_dict(kind: type, raw: Any, where: str):
    if not isinstance(raw, dict):
        raise UserError(f"{where}: expected a JSON object")
    names = {f.name for f in fields(kind)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise UserError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    values = dict(raw)
    if "hidden" in values and isinstance(values["hidden"], list):
        values["hidden"] = tuple(values["hidden"])
    return kind(**values)


def _one_of(name: str, value: str, choices) -> None:
    if value not in choices:
        raise UserError(f"{name}: {value!r} is not one of {', '.join(choices)}")


PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # The classic MLP VAE of pytorch/examples, Kingma & Welling (2014) and the peers' benchmarks.
    "classic": {
        "model": {"net": "mlp", "hidden": (400,), "latent_dim": 20},
        "train": {"batch_size": 128, "lr": 1e-3},
    },
    # vaelab's recipe for test log-likelihood on statically binarized MNIST; every ingredient is an
    # ordinary option (benchmarks/likelihood_recipe.py measures what each one buys): a gated MLP
    # 2x300 and a 40-d latent (Tomczak & Welling 2018), a VampPrior with 100 pseudo-inputs, the
    # IWAE bound with k = 10 (Burda et al. 2015), KL warm-up over 20 epochs, Polyak averaging of
    # the weights, a learning rate halved on validation plateaus, bf16 matrix products, and early
    # stopping on the validation IWAE bound under a 60-minute budget. (Dropout 0.1 was measured
    # and left out: it slowed learning by more than it delayed overfitting at this budget.)
    "recipe": {
        "data": {"binarize": "none"},
        "model": {
            "net": "gated",
            "hidden": (300, 300),
            "latent_dim": 40,
            "prior": "vamp",
            "prior_components": 100,
        },
        "objective": {"name": "iwae", "k": 10, "kl_warmup_epochs": 20},
        "train": {
            "epochs": 2000,
            "batch_size": 100,
            "lr": 5e-4,
            "lr_schedule": "plateau",
            "lr_patience": 10,
            "ema": 0.999,
            "patience": 30,
            "precision": "bf16",
            "minutes": 60.0,
        },
    },
}


def preset(name: str) -> RunConfig:
    """The RunConfig of a named preset (defaults for every field it does not set)."""
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    return RunConfig().replace(**PRESETS[name])
