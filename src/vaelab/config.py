"""Configuration: one frozen, strict pydantic model per pipeline stage, the single source of options.

A run is fully described by a `RunConfig` (data, model, objective, training). Each field's type,
range, default and description are declared once, here, and drive everything else:

- validation of config files and of a run directory's config.json (`RunConfig.from_dict`): strict
  types (no "0.1" for a number, no `true` for an integer), no NaN or infinity, ranges, and unknown
  keys refused, each error one line naming the field (`model.dropout: ...`);
- the command line (`vaelab.cli.options` turns every field into a flag with its help, choices,
  metavar and parser; `Flag` metadata renames a flag where the field's name is not the flag's);
- library errors, which name config fields; only the CLI speaks of flags.

Options that several commands share (a seed, a precision, a sample count) are declared once as
annotated types below (`Seed`, `Samples`, ...) and used by the command option models too.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    model_validator,
)

from vaelab.errors import UserError
from vaelab.limits import Limits

# --------------------------------------------------------------------------- shared metadata


@dataclass(frozen=True)
class Flag:
    """How a field appears on the command line, where the default (`--field-name`) does not fit.

    name: the flag (e.g. "--data" for `data.source`), or a positional's metavar with positional.
    metavar: the placeholder in --help. none: the word that stands for None (e.g. "learned" for a
    learned sigma). repeat: the flag may be given several times, each adding one item.
    choices: the names of a registry, read when the parser is built (for a `str` field whose
    values are a registry's keys; the registry's own lookup validates them in the library).
    """

    name: str | None = None
    metavar: str | None = None
    none: str | None = None
    positional: bool = False
    repeat: bool = False
    choices: Callable[[], Iterable[str]] | None = None
    bare: str | None = None  # the value of the flag given without one (`--compile` is `--compile on`)
    negative: str | None = None  # the value of `--no-NAME` (`--no-compile` is `--compile off`)


class Options(BaseModel):
    """Base of every options model: strict types, frozen, finite numbers, unknown keys refused."""

    model_config = ConfigDict(
        strict=True, frozen=True, extra="forbid", allow_inf_nan=False, validate_default=True
    )


SEED_LIMIT = 2**32
"""Seeds are below 2^32: NumPy and scikit-learn's seeds are 32-bit, and every stream derives from one."""

Seed = Annotated[
    int,
    Field(ge=0, lt=SEED_LIMIT, description="seed of the weights, the order and every random draw"),
    Flag(metavar="N"),
]
Split = Annotated[Literal["train", "valid", "test"], Field(description="data split")]
Precision = Annotated[
    Literal["auto", "fp32", "bf16", "fp16"],
    Field(
        description="auto, fp32, bf16 or fp16: the networks' matrix products in that type, "
        "log-probabilities and sums in float32"
    ),
]
Device = Annotated[
    str,
    Field(
        pattern=r"^(auto|cpu|mps|cuda(:[0-9]{1,3})?)$",
        description="auto (CUDA when there is one, else the CPU), cpu, cuda, cuda:N or mps",
    ),
    Flag(metavar="{auto,cpu,cuda,cuda:N,mps}"),
]
"""Where a command runs its model; resolved (and refused when absent) by `vaelab.devices`."""


def _switch(value: Any) -> Any:
    """true/false, the older spelling of a switch with an `auto` (config files, runs' config.json)."""
    return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value


Switch = Annotated[Literal["auto", "on", "off"], BeforeValidator(_switch)]
Samples = Annotated[
    int, Field(ge=1, le=10**6, description="importance samples per example"), Flag(metavar="K")
]
Count = Annotated[int, Field(ge=1, le=10**6), Flag(metavar="N")]
Positive = Annotated[float, Field(gt=0)]
Hidden = Annotated[
    tuple[Annotated[int, Strict(), Field(ge=1)], ...],
    # a JSON list is the natural spelling of a tuple, so the outer container alone is lax; an
    # empty one (`--hidden ''`) is an mlp without hidden layers: a linear encoder and decoder
    Field(strict=False),
    Flag(metavar="H[,H...]"),
]


def _one_way_of_tracking(trackers: tuple[str, ...]) -> tuple[str, ...]:
    if "none" in trackers and len(trackers) > 1:
        raise ValueError("none cannot be combined with a tracker")
    if len(set(trackers)) < len(trackers):
        raise ValueError("a tracker is named twice")
    return trackers


def _distinct_classes(classes: tuple[str, ...]) -> tuple[str, ...]:
    if len(set(classes)) < len(classes):
        raise ValueError("a class is named twice")
    return classes


TRACKERS = ("none", "tensorboard", "mlflow")
Trackers = Annotated[
    tuple[Literal["none", "tensorboard", "mlflow"], ...],
    Field(min_length=1, strict=False),  # a JSON list spells the tuple
    AfterValidator(_one_way_of_tracking),
    Flag(repeat=True),
]

# ---------------------------------------------------------------------------- the run config

BINARIZATIONS = ("none", "static", "dynamic")
MAX_IMAGE_SIDE = 8192
"""The largest --image-size: above any image a VAE is trained on (Limits bound the total anyway)."""
Likelihoods = Literal[
    "bernoulli", "gaussian", "logistic", "discretized-logistic", "logistic-mixture", "categorical"
]
"""The names of `vaelab.likelihoods.LIKELIHOODS` (a test checks that the two agree)."""
LikelihoodName = Literal[
    "auto",
    "bernoulli",
    "gaussian",
    "logistic",
    "discretized-logistic",
    "logistic-mixture",
    "categorical",
    "mixed",
]
"""model.likelihood: a family of `Likelihoods`, `mixed` (tabular: `vaelab.columns`) or `auto`."""
AUTO_SIGMA = 0.1
"""What model.sigma `auto` is for data that are not tabular (for tabular data: learned)."""
PRIORS = ("normal", "mog", "vamp")
MAX_CLASSES = 10_000
"""The most classes a conditional model takes (its one-hot code widens two layers by as many inputs)."""


class DataConfig(Options):
    """Where the data come from and how they are binarized.

    binarize: `none`; `static` (one fixed Bernoulli draw x' ~ Bernoulli(x) of every split);
    `dynamic` (a fresh draw of each training batch every epoch; validation and test are drawn
    once, statically, so evaluation numbers are on a fixed set).
    channels, image_size, crop: how images are read (`vaelab.data.images`): `channels` auto keeps
    them as stored (grey, or RGB), grey or rgb converts; `image_size` N resizes every image to
    N x N (a folder of mixed sizes needs it), `crop` center keeping the aspect ratio, none
    stretching. offline: a named dataset (`source` "cifar10", ...) is read from the cache only,
    never downloaded (`vaelab.data.download`).
    standardize: tabular data (rows of numbers, x: (N, D)) as (x - mean) / scale per column
    (`vaelab.data.transforms.Standardize`), columns that are all 0/1 left alone; `auto` is on for
    tabular data and off otherwise. standardize_mean, standardize_scale: the means and scales,
    None for the train split's (a trained run stores the ones it used, so it scores and samples
    in the units it was trained in). drop_missing: drop the rows of a csv with a missing value
    (empty cell, NaN, NA) instead of refusing the file.
    """

    source: Annotated[
        str,
        Field(
            min_length=1,
            max_length=4096,
            description="data spec: mnist5k, digits; a standard dataset NAME (downloaded into the cache) "
            "or NAME:DIR (its files in DIR): mnist, fashion-mnist, kmnist, binarized-mnist, omniglot, "
            "caltech101-silhouettes, frey-faces, cifar10, svhn, celeba:DIR; npz:FILE, npy:FILE, csv:FILE, "
            "folder:DIR",
        ),
        Flag(name="--data", metavar="SPEC"),
    ] = "mnist5k"
    binarize: Annotated[
        Literal["none", "static", "dynamic"],
        Field(description="binarize [0, 1] data: once (static) or per training batch (dynamic)"),
    ] = "none"
    channels: Annotated[
        Literal["auto", "grey", "rgb"],
        Field(description="image channels: auto (as stored), grey (1; colour by ITU-R 601 luma) or rgb (3)"),
    ] = "auto"
    image_size: Annotated[
        Annotated[int, Field(ge=1, le=MAX_IMAGE_SIDE)] | None,
        Field(description="resize every image to N x N pixels (Pillow, bilinear); none keeps their size"),
        Flag(metavar="N"),
    ] = None
    crop: Annotated[
        Literal["center", "none"],
        Field(
            description="with image-size: center (keep the aspect ratio, cut the longer side's centre) "
            "or none (stretch to N x N)"
        ),
    ] = "center"
    offline: Annotated[
        bool,
        Field(
            description="never touch the network: a named dataset must already be in the cache "
            "($VAELAB_DATA), else the error says which files to put where"
        ),
    ] = False
    standardize: Annotated[
        Literal["auto", "on", "off"],
        Field(
            description="standardize the columns of tabular data with the train split's means and scales "
            "(0/1 columns are left alone); auto: on for tabular data"
        ),
    ] = "auto"
    standardize_mean: Annotated[
        tuple[float, ...] | None,
        Field(strict=False, description="the columns' means for standardize (default: the train split's)"),
        Flag(metavar="M[,M...]"),
    ] = None
    standardize_scale: Annotated[
        tuple[Annotated[float, Field(gt=0)], ...] | None,
        Field(strict=False, description="the columns' scales for standardize (default: the train split's)"),
        Flag(metavar="S[,S...]"),
    ] = None
    drop_missing: Annotated[
        bool,
        Field(description="csv: drop rows with a missing value (empty cell, NaN, NA) instead of refusing"),
    ] = False
    labels_per_class: Annotated[
        Annotated[int, Field(ge=1, le=10**6)] | None,
        Field(
            description="keep N train labels per class (a seeded stratified choice), mark the other train "
            "rows unlabelled (-1); none keeps every label"
        ),
        Flag(metavar="N"),
    ] = None
    labels_seed: Annotated[Seed, Field(description="seed of the labels-per-class choice")] = 0

    @model_validator(mode="after")
    def _means_with_scales(self) -> DataConfig:
        mean, scale = self.standardize_mean, self.standardize_scale
        if (mean is None) != (scale is None) or (mean is not None and len(mean) != len(scale or ())):
            raise ValueError("standardize_mean and standardize_scale come together, one number per column")
        return self


class ModelConfig(Options):
    """Encoder, decoder, prior and likelihood.

    kind: `vae` (Gaussian q(z|x)) or `ae` (deterministic code, reconstruction term only).
    net: `mlp` (hidden sizes `hidden`, mirrored in the decoder), `gated` (gated MLP, Dauphin et al.
    2017; its gates replace the activation) or `conv` (a small conv net for images; `hidden` sizes
    the fully connected layer) or `resnet` (residual conv net for images of any size, deeper for
    larger ones, `width` feature maps at first); `hidden` empty makes the mlp's encoder and decoder
    linear maps. likelihood: `bernoulli` (from logits); `gaussian` or `logistic` with a fixed scale
    `sigma`, or a learned one per dimension when `sigma` is None (continuous densities: 8-bit data
    are dequantized for them); `discretized-logistic`, `logistic-mixture` (`mixtures` components
    per subpixel) or `categorical` (256-way), which score the levels of 8-bit data (see
    `vaelab.likelihoods`); `mixed` (tabular data): Bernoulli for the columns that are all 0/1,
    Gaussian for the others (`vaelab.columns`); `auto` is resolved from the data when training
    starts (`vaelab.tabular.resolve`): for tabular data gaussian, bernoulli or mixed by its columns
    with a learned sigma (`sigma` auto), for other data bernoulli with sigma 0.1. prior: `normal` (N(0, I)),
    `mog` (a learned mixture of `prior_components` diagonal Gaussians) or `vamp` (the VampPrior,
    Tomczak & Welling 2018: p(z) = (1/K) sum_k q(z | u_k) with K = `prior_components` learned
    pseudo-inputs u_k). dropout: the drop probability after every hidden layer of both networks
    during training (0: none; off at evaluation). posterior: the family of q(z|x) (see
    `vaelab.posteriors`): `diagonal`, `full` (full-covariance Gaussian) or `iaf` (an inverse
    autoregressive flow of `flow_steps` steps with `flow_hidden` units each). layers: stochastic
    layers L; with L >= 2 the model is a Ladder VAE (`vaelab.hierarchical`): z = (z_1, ..., z_L) of
    `latent_dim` units per layer (L x latent_dim in all), top-down inference, `prior` at the top layer.
    condition: `none`, or `label`: a conditional VAE (`vaelab.models.ConditionalVAE`), q(z|x, y)
    and p(x|z, y) given each example's class y, on labelled data; `classes`: its class names,
    code c named by the c-th, resolved from the data when training starts and stored in the run
    (`vaelab.labels.resolve_classes`), so that it loads and samples without the data.
    """

    kind: Annotated[
        Literal["vae", "ae", "m2"],
        Field(
            description="vae; ae: a deterministic code trained on the reconstruction term only; m2: the "
            "semi-supervised VAE of Kingma et al. 2014 (a classifier q(y|x) trained on labelled and "
            "unlabelled rows)"
        ),
        Flag(name="--model"),
    ] = "vae"
    latent_dim: Annotated[int, Field(ge=1, description="latent size Z"), Flag(metavar="N")] = 2
    net: Annotated[
        Literal["mlp", "gated", "conv", "resnet"],
        Field(description="mlp, gated (gated MLP), conv (two stride-2 convolutions) or resnet (any size)"),
    ] = "mlp"
    hidden: Annotated[
        Hidden, Field(description="hidden layer sizes, e.g. 400 or 512,256; '' for none (mlp: linear maps)")
    ] = (512, 256)
    activation: Annotated[
        Literal["relu", "elu", "tanh", "gelu"],
        Field(description="activation of the mlp and conv nets (a gated net has gates instead)"),
    ] = "relu"
    likelihood: Annotated[
        LikelihoodName,
        Field(
            description="p(x|z): bernoulli (from logits); gaussian or logistic (continuous densities; "
            "8-bit data are dequantized); discretized-logistic, logistic-mixture or categorical (over "
            "the 256 levels of 8-bit data); mixed (tabular: bernoulli for 0/1 columns, gaussian for "
            "the others); auto: by the data"
        ),
    ] = "auto"
    sigma: Annotated[
        Positive | Literal["auto"] | None,
        Field(
            description="the gaussian or logistic likelihood's scale: a number, or 'learned' (per "
            "dimension); auto: learned for tabular data, else 0.1"
        ),
        Flag(metavar="S", none="learned"),
    ] = "auto"
    mixtures: Annotated[
        int,
        Field(ge=1, le=100, description="components of the logistic-mixture likelihood per subpixel"),
        Flag(metavar="K"),
    ] = 10
    width: Annotated[
        int,
        Field(ge=1, le=1024, description="the resnet's first feature maps (doubled per halving, up to 4x)"),
        Flag(metavar="N"),
    ] = 32
    prior: Annotated[
        Literal["normal", "mog", "vamp"],
        Field(description="p(z): normal (N(0, I)), mog (learned mixture) or vamp (VampPrior)"),
    ] = "normal"
    prior_components: Annotated[
        int, Field(ge=1, description="components or pseudo-inputs of a mog or vamp prior"), Flag(metavar="K")
    ] = 500
    dropout: Annotated[
        float,
        Field(ge=0.0, lt=1.0, description="dropout probability after every hidden layer while training"),
        Flag(metavar="P"),
    ] = 0.0
    posterior: Annotated[
        Literal["diagonal", "full", "iaf"],
        Field(description="q(z|x): diagonal Gaussian, full-covariance Gaussian, or iaf (a normalizing flow)"),
    ] = "diagonal"
    flow_steps: Annotated[
        int, Field(ge=1, le=64, description="steps T of the iaf posterior"), Flag(metavar="T")
    ] = 2
    flow_hidden: Annotated[
        int,
        Field(ge=1, le=4096, description="hidden units of each iaf step and size of its context h"),
        Flag(metavar="H"),
    ] = 64
    condition: Annotated[
        Literal["none", "label"],
        Field(
            description="none, or label: a conditional VAE, q(z|x, y) and p(x|z, y) given each example's "
            "class y (labelled data); sample it with --label"
        ),
    ] = "none"
    classes: Annotated[
        Annotated[
            tuple[Annotated[str, Strict(), Field(min_length=1, max_length=200)], ...],
            AfterValidator(_distinct_classes),
        ]
        | None,
        Field(
            strict=False,
            min_length=2,
            max_length=MAX_CLASSES,
            description="the class names of a conditional or m2 model, code c named by the c-th "
            "(default: the data's names, else 0..C-1)",
        ),
        Flag(metavar="NAME[,NAME...]"),
    ] = None
    alpha: Annotated[
        float,
        Field(
            ge=0.0,
            description="m2: weight of the classifier's mean log q(y|x) over a batch's labelled rows "
            "beside the batch's mean bound (Kingma et al. 2014 eq. 9's alpha / N; their 0.1 N is 0.1 "
            "in these units, see vaelab.semisupervised)",
        ),
        Flag(metavar="A"),
    ] = 5.0
    labelled_per_batch: Annotated[
        int,
        Field(
            ge=0,
            le=10**6,
            description="m2: labelled rows drawn into every training batch beside batch_size - N unlabelled "
            "ones (the labelled rows cycle, reshuffled each pass); 0 shuffles all train rows together",
        ),
        Flag(metavar="N"),
    ] = 10
    layers: Annotated[
        int,
        Field(
            ge=1,
            le=16,
            description="stochastic layers L: 2 or more make a ladder VAE (top-down inference) with "
            "latent-dim units in each layer",
        ),
        Flag(metavar="N"),
    ] = 1

    @model_validator(mode="after")
    def _hidden_layers(self) -> ModelConfig:
        if not self.hidden and self.net == "gated":
            raise ValueError("hidden: a gated net needs at least one hidden layer (empty: mlp or conv)")
        return self

    @model_validator(mode="after")
    def _conditional(self) -> ModelConfig:
        if self.condition == "label" and self.kind != "vae":
            raise ValueError(f"condition: label applies to model.kind vae, not {self.kind}")
        if self.layers > 1 and (self.condition != "none" or self.kind == "m2"):
            raise ValueError(
                "layers: a ladder VAE is unconditional; condition label and the m2 model have one "
                "stochastic layer (use layers 1)"
            )
        return self

    @model_validator(mode="after")
    def _stochastic_layers(self) -> ModelConfig:
        if self.layers > 1 and self.kind == "ae":
            raise ValueError("layers: an ae has one deterministic code, not stochastic layers (use kind vae)")
        if self.layers > 1 and self.posterior != "diagonal":
            raise ValueError(
                f"layers: a ladder VAE's q(z|x) is its own top-down family; posterior {self.posterior} "
                "applies to one stochastic layer (use posterior diagonal)"
            )
        return self


class ObjectiveConfig(Options):
    """What training maximizes, per example (the trainer averages over the batch).

    `elbo`: E_q[log p(x|z)] - beta * KL(q(z|x) || p(z)) with one reparameterized sample
    (beta = 1 is the ELBO; beta != 1 is the beta-VAE objective of Higgins et al. 2017).
    `iwae`: the importance-weighted bound with `k` samples (Burda et al. 2015, eq. 8).
    kl_warmup_epochs: the KL weight ramps linearly from 0 to beta over that many epochs
    (Sønderby et al. 2016; Bowman et al. 2016), then stays at beta, the same for every layer of a
    hierarchical model. free_bits: lambda > 0 trains the elbo objective on
    E_q[log p(x|z)] - beta sum_i max(lambda, KL_i), KL_i the batch mean of layer i's KL (the whole
    z for one layer; Kingma et al. 2016, "free bits"). Logged ELBOs are always the
    true bound (weight 1, no free bits). An `ae` model trains on the reconstruction term log p(x|z = f(x)).
    """

    name: Annotated[
        Literal["elbo", "iwae"],
        Field(description="elbo, or iwae: the importance-weighted bound"),
        Flag(name="--objective"),
    ] = "elbo"
    beta: Annotated[
        float, Field(ge=0.0, description="weight of the KL term (1: the ELBO)"), Flag(metavar="B")
    ] = 1.0
    k: Annotated[int, Field(ge=1, description="samples of the iwae bound"), Flag(metavar="K")] = 1
    kl_warmup_epochs: Annotated[
        int, Field(ge=0, description="ramp the KL weight from 0 to beta over N epochs"), Flag(metavar="N")
    ] = 0
    free_bits: Annotated[
        float,
        Field(
            ge=0.0,
            description="free bits (elbo): each stochastic layer's KL, as a batch mean, costs at least "
            "this many nats, so below it the layer is not pushed to the prior (0: off)",
        ),
        Flag(metavar="NATS"),
    ] = 0.0


class TrainConfig(Options):
    """Optimization with Adam.

    Model selection is on the validation value of the bound the objective trains (the ELBO, or
    the IWAE bound L_k at the objective's k, always at beta = 1): `valid_bound_nats` in the
    metrics. patience: stop when it has not improved for that many epochs (None: run all
    epochs); the run keeps the best-validation weights either way. precision: `fp32`, `bf16` or
    `fp16` (the networks' matrix products in that type under autocast, fp16 with loss scaling;
    every log-probability, the KL and all reductions stay float32), or `auto`, which
    `vaelab.devices.choose_settings` resolves per device, model family and run length (recorded
    in the run's run.json). device: where the run trains (`vaelab.devices`). weight_decay:
    decoupled weight decay (AdamW, Loshchilov & Hutter 2019), against the overfitting of small
    or statically binarized data. lr_schedule: `constant`; `cosine` decay from lr to lr/100
    over the epochs; or `plateau`, which halves the rate whenever validation has not improved
    for `lr_patience` epochs, down to lr/100 (this one suits early stopping and a wall-clock
    budget, where the number of epochs is unknown).
    ema: Polyak averaging of the weights (Polyak & Juditsky 1992) with this decay per step, 0 to
    turn it off; validation, model selection and the saved weights then use the averaged weights
    (the optimizer still steps the raw ones). The average spans about 1/(1 - ema) steps: 0.999 is
    two epochs of 50,000 images in batches of 100, but 25 epochs of a 4,000-image set, whose first
    epochs it would then hold back; choose a smaller decay for small data. minutes: a wall-clock
    budget for training; no epoch starts after it is spent (a budgeted run is reproducible only
    up to where the budget cut it, since that depends on the machine's speed).
    compile: `on` runs the whole training step, forward and backward pass and the Adam update,
    as one graph compiled by `torch.compile` (fused element-wise kernels, no per-operation
    Python; on CUDA replayed as one CUDA graph; fp16 keeps its optimizer step eager).
    Compiling costs seconds to tens of seconds once per process, before the first epoch (it
    needs a C++ compiler); `auto` compiles when the run is long enough to repay it. Config
    files and older runs may say true/false (on/off). Same numbers as eager up to
    floating-point rounding; the noise of a compiled step (and dropout's masks) is drawn from
    the run's generator.
    track: experiment trackers fed as the run trains (`vaelab.experiments.tracking`): every
    epoch's metrics, the config once, images and (MLflow) the run directory at the end; a tracker
    that fails is a warning, never a failed run. mlflow_uri: where MLflow logs (None: the
    MLFLOW_TRACKING_URI environment variable, else MLflow's own local default).
    """

    epochs: Annotated[Count, Field(description="epochs")] = 30
    batch_size: Annotated[Count, Field(description="minibatch size")] = 128
    lr: Annotated[Positive, Field(description="Adam learning rate"), Flag(metavar="F")] = 1e-3
    seed: Seed = 0
    patience: Annotated[
        Count | None, Field(description="early stopping: stop after N epochs without validation improvement")
    ] = None
    # (a million threads crashes PyTorch outright; no machine vaelab runs on has 1024 cores)
    threads: Annotated[
        Annotated[int, Field(ge=1, le=1024)] | None, Field(description="CPU threads (default: PyTorch's)")
    ] = None
    precision: Annotated[
        Precision,
        Field(
            description="auto: the fastest the device and the model family allow without hurting the "
            "bound (the run records what it chose and why); fp32; bf16; or fp16 (with loss scaling)"
        ),
    ] = "auto"
    device: Device = "auto"
    weight_decay: Annotated[
        float, Field(ge=0.0, description="decoupled weight decay, AdamW"), Flag(metavar="F")
    ] = 0.0
    lr_schedule: Annotated[
        Literal["constant", "cosine", "plateau"],
        Field(
            description="constant; cosine decay to lr/100; or plateau: halve after lr-patience epochs "
            "without validation improvement"
        ),
    ] = "constant"
    lr_patience: Annotated[
        Count, Field(description="epochs without improvement before the plateau schedule halves lr")
    ] = 10
    ema: Annotated[
        float,
        Field(
            ge=0.0, lt=1.0, description="Polyak averaging of the weights with this decay per step (0: off)"
        ),
        Flag(metavar="D"),
    ] = 0.0
    minutes: Annotated[
        Positive | None, Field(description="wall-clock budget for training"), Flag(metavar="M")
    ] = None
    compile: Annotated[
        Switch,
        Field(
            description="compile the training step (torch.compile; CUDA graphs on a GPU): faster epochs "
            "after a one-time compile of seconds to tens of seconds; auto: on when the run is long "
            "enough to repay it (--compile alone is on, --no-compile off)"
        ),
        Flag(bare="on", negative="off"),
    ] = "auto"
    track: Annotated[
        Trackers,
        Field(
            description="experiment tracker fed every epoch: tensorboard (events in RUN/tensorboard), "
            "mlflow, or none; repeat the flag for both"
        ),
    ] = ("none",)
    mlflow_uri: Annotated[
        str | None,
        Field(
            min_length=1,
            max_length=4096,
            description="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else MLflow's local default)",
        ),
        Flag(metavar="URI"),
    ] = None


SECTIONS = ("data", "model", "objective", "train", "limits")


class RunConfig(Options):
    """Everything that defines a run; `config.json` of a run directory is its `to_dict()`.

    limits: the resource limits its data and model are checked against before anything is
    allocated (`vaelab.limits`); a run written before they existed gets the defaults."""

    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    objective: ObjectiveConfig = ObjectiveConfig()
    train: TrainConfig = TrainConfig()
    limits: Limits = Limits()

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types (tuples become lists), for config.json."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, raw: Any, where: str = "config") -> RunConfig:
        """Validate nested dicts (a config file, a run's config.json); every problem is a
        UserError naming `where` and the field, e.g. "run/config.json: model.dropout: ..."."""
        if not isinstance(raw, dict):
            raise UserError(f"{where}: expected a JSON object with sections {', '.join(SECTIONS)}")
        return validated(cls, raw, where)

    def replace(self, **sections: dict[str, Any]) -> RunConfig:
        """A validated copy with fields of the named sections replaced, e.g.
        replace(train={"epochs": 5})."""
        return merged(self, sections)

    def ignored_settings(self, given: set[str]) -> list[str]:
        """The fields in `given` (dotted names a user set) that this config would ignore, each with
        why; a user's setting that would have no effect is refused rather than dropped silently."""
        return [
            f"{name}: ignored ({reason})" for name, reason in self.inapplicable().items() if name in given
        ]

    def inapplicable(self) -> dict[str, str]:
        """The fields (dotted names) that have no effect in this config, each with why."""
        why = {
            "model.sigma": self.model.likelihood not in ("auto", "gaussian", "logistic", "mixed")
            and "it applies to the gaussian, logistic and mixed likelihoods",
            "model.mixtures": self.model.likelihood != "logistic-mixture"
            and "it applies to the logistic-mixture likelihood",
            "model.width": self.model.net != "resnet" and "it applies to the resnet net",
            "data.standardize_mean": self.data.standardize == "off" and "standardize is off",
            "data.standardize_scale": self.data.standardize == "off" and "standardize is off",
            "data.drop_missing": not self.data.source.startswith("csv:") and "it applies to csv data",
            "model.activation": self.model.net == "gated" and "a gated net has gates instead",
            "model.prior_components": self.model.prior == "normal" and "the normal prior has no components",
            "model.flow_steps": self.model.posterior != "iaf" and "it applies to the iaf posterior",
            "model.flow_hidden": self.model.posterior != "iaf" and "it applies to the iaf posterior",
            "objective.k": self.objective.name != "iwae" and "the elbo objective draws one sample",
            "objective.free_bits": self.objective.name != "elbo"
            and "free bits apply to the elbo objective (the iwae bound has no per-layer KL term)",
            "train.lr_patience": self.train.lr_schedule != "plateau" and "it applies to lr_schedule plateau",
            "data.crop": self.data.image_size is None and "it applies with image_size",
            "train.mlflow_uri": "mlflow" not in self.train.track and "it applies to track mlflow",
            "data.labels_seed": self.data.labels_per_class is None and "it applies with labels_per_class",
            "model.alpha": self.model.kind != "m2" and "it applies to the m2 model",
            "model.labelled_per_batch": self.model.kind != "m2" and "it applies to the m2 model",
            "model.classes": self.model.condition == "none"
            and self.model.kind != "m2"
            and "it applies to model.condition label and the m2 model",
        }
        if self.model.kind == "m2":  # its bound is its own (`vaelab.semisupervised`)
            for name in ("objective.name", "objective.k"):
                why[name] = "the m2 model trains on its own bound, one z per class"
        if self.model.kind == "ae":
            for name in (
                "objective.name",
                "objective.beta",
                "objective.k",
                "objective.kl_warmup_epochs",
                "objective.free_bits",
            ):
                why[name] = "an ae trains on the reconstruction term only"
            why["model.prior"] = why["model.prior_components"] = "an ae has no prior"
            why["model.posterior"] = "an ae's code is a point, not a distribution"
        return {name: reason for name, reason in why.items() if reason}


Model = TypeVar("Model", bound=BaseModel)


def validated(kind: type[Model], raw: Any, where: str) -> Model:
    """`kind.model_validate(raw)`, with the first problem as one UserError line."""
    try:
        return kind.model_validate(raw)
    except ValidationError as err:
        raise config_error(err, where, kind) from None


def merged(config: RunConfig, *layers: dict[str, dict[str, Any]]) -> RunConfig:
    """`config` with each layer's section fields laid over it in turn, validated once."""
    base = config.model_dump()
    for layer in layers:
        for section, values in layer.items():
            if section not in SECTIONS:
                raise UserError(f"{section}: unknown section; known: {', '.join(SECTIONS)}")
            if not isinstance(values, dict):
                raise UserError(f"{section}: expected an object of fields")
            base[section] = {**base[section], **values}
    return validated(RunConfig, base, "config")


class ConfigError(UserError):
    """A value that fails validation; `field` is its dotted name, so the CLI can name the flag."""

    def __init__(self, where: str, field: str, problem: str) -> None:
        self.where, self.field, self.problem = where, field, problem
        super().__init__(f"{where}: {field}: {problem}" if where else f"{field}: {problem}")


class DeviceError(ConfigError):
    """A device that is not there (`--device cuda` on a machine without CUDA): one line that
    names the field (`train.device`) and the value; the CLI names its `--device` flag instead."""

    def __init__(self, spec: str, problem: str, field: str = "device") -> None:
        self.spec = spec
        super().__init__("", field, f"{spec}: {problem}")


def config_error(err: ValidationError, where: str, kind: type[BaseModel]) -> ConfigError:
    """One line for the first of pydantic's errors, with the value that failed (or, for an
    unknown key, the keys that are known there). Keys that are not printable are shown quoted,
    so the message stays one line whatever a file holds."""
    errors = err.errors(include_url=False)
    first = errors[0]
    # a union's errors carry the member in their location (`sigma.constrained-float`): not a field
    loc = [p for p in first["loc"] if not isinstance(p, str) or p.isidentifier() or not p.isprintable()]
    field = ".".join(p if isinstance(p, str) and p.isprintable() else repr(p) for p in loc)
    problem = first["msg"]
    if first["type"] == "extra_forbidden":
        for part in first["loc"][:-1]:
            if isinstance(part, str) and part in kind.model_fields:
                section = kind.model_fields[part].annotation
                if isinstance(section, type) and issubclass(section, BaseModel):
                    kind = section
        problem = f"unknown key; known: {', '.join(kind.model_fields)}"
    elif first["type"] != "missing" and not isinstance(first.get("input"), dict):
        # (a whole section's validator names the fields it checks: its input is not the culprit)
        problem += f", got {short_repr(first.get('input'))}"
    # (the other members of a union failing for the same value are not more problems)
    more = (
        sum(1 for e in errors[1:] if e["loc"][: len(first["loc"]) - 1] != first["loc"][:-1])
        if len(loc) < len(first["loc"])
        else err.error_count() - 1
    )
    if more:
        problem += f" (and {more} more problem{'s' if more > 1 else ''})"
    return ConfigError(where, field or "(top level)", problem)


def short_repr(value: Any) -> str:
    """A value for an error message: at most 60 characters, an array by its shape and dtype."""
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return f"an array of shape {tuple(value.shape)} and dtype {value.dtype}"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# ------------------------------------------------------------------------------ config files

MAX_CONFIG_BYTES = 1 << 20
"""A config file is a few hundred bytes; anything above a megabyte is not one."""


def read_config_file(path: Path) -> dict[str, Any]:
    """A JSON config file as a dict, refusing what is not one (size, nesting, syntax) in one line."""
    if not path.is_file():
        raise UserError(f"{path}: {'not a regular file' if path.exists() else 'file not found'}")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise UserError(f"{path}: {path.stat().st_size:,} bytes is too large for a config file")
    try:
        raw = json.loads(path.read_bytes())
    except (ValueError, RecursionError) as err:
        reason = "nested too deeply" if isinstance(err, RecursionError) else str(err)
        raise UserError(f"{path}: not valid JSON ({reason})") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a JSON object with sections {', '.join(SECTIONS)}")
    return raw


# ----------------------------------------------------------------------------------- presets

PresetName = Literal["classic", "recipe", "hvae"]
"""The names of `PRESETS` (a test checks that the two agree)."""

PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # The classic MLP VAE of pytorch/examples and Kingma & Welling (2014), the figure other VAE
    # libraries (pythae, Pyro) report.
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
# The recipe with two stochastic layers (a Ladder VAE, `vaelab.hierarchical`) of 40 units each,
# the VampPrior at the top (Tomczak & Welling 2018's HVAE (L = 2) + VampPrior reaches 83.19 nats):
# every other ingredient is the recipe's (benchmarks/hvae_ablation.py measures what each one buys).
PRESETS["hvae"] = {**PRESETS["recipe"], "model": {**PRESETS["recipe"]["model"], "layers": 2}}


def preset(name: str) -> RunConfig:
    """The RunConfig of a named preset (defaults for every field it does not set)."""
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    return merged(RunConfig(), PRESETS[name])
