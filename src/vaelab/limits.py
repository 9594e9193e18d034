"""Resource limits: how much a data file or a model may ask for before vaelab refuses it.

Every loader reads sizes from headers (an .npy header, an IDX header, a zip directory, an image
header, a file's length) and compares them with these limits *before* it allocates, so a 38 KB
file that declares 10^10 floats is one line of error, not a 37 GiB allocation. The defaults suit
a machine with about 24 GiB of memory; a user with a larger data set raises the one limit that the
error names (the message says which field, e.g. `limits.max_array_elements`, and its flag).

Model size is checked the same way: `estimate_training_bytes` estimates from the config alone,
without building the model, the memory a training step needs (weights, their gradients, Adam's
two moments, and the activations of one batch), and `check_training_memory` compares it with the
memory the machine has available.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from pydantic import BaseModel, ConfigDict, Field

from vaelab.errors import UserError
from vaelab.likelihoods import family
from vaelab.nets import resnet_size

if TYPE_CHECKING:
    from vaelab.config import ModelConfig

GIB = 1 << 30


class Limits(BaseModel):
    """Resource limits, each checked before the memory it guards is allocated."""

    model_config = ConfigDict(strict=True, frozen=True, extra="forbid", allow_inf_nan=False)

    max_array_elements: Annotated[
        int,
        Field(
            ge=1,
            description="most numbers in one array (an .npy, one array of an .npz, an IDX file, a CSV "
            "table, a folder of images), read from its header; each becomes a 4-byte float32",
        ),
    ] = 1_000_000_000
    max_decompressed_bytes: Annotated[
        int,
        Field(ge=1, description="most bytes an .npz archive or a gzipped IDX file may unpack to, in total"),
    ] = 4 * GIB
    max_image_pixels: Annotated[
        int,
        Field(
            ge=1,
            description="most pixels (width x height) of one image file; Pillow refuses a larger one "
            "as a possible decompression bomb",
        ),
    ] = 1 << 24  # 4096 x 4096
    max_images: Annotated[int, Field(ge=1, description="most image files in one folder data set")] = 1_000_000
    max_text_file_bytes: Annotated[
        int,
        Field(
            ge=1,
            description="largest text file vaelab parses: a CSV or amat table (and JSON a reader checks)",
        ),
    ] = GIB
    max_training_bytes: Annotated[
        int | None,
        Field(
            ge=1,
            description="bytes of memory a training step may take, as estimated from the model "
            "config; unset: 0.9 of the memory available when training starts",
        ),
    ] = None


DEFAULT_LIMITS = Limits()
"""The defaults, for function signatures (a Limits is frozen, so one instance serves all)."""


class LimitError(UserError):
    """A size above a limit; `field` is the limit's name (e.g. `max_array_elements`) for the CLI."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


def limit_error(where: str, what: str, field: str, limits: Limits) -> LimitError:
    """One line: `where: what, above limits.FIELD = VALUE (raise it with --FIELD)`."""
    value = getattr(limits, field)
    flag = "--" + field.replace("_", "-")
    return LimitError(f"{where}: {what}, above limits.{field} = {value:,} (raise it with {flag})", field)


def check_elements(where: str, shape: tuple[int, ...], limits: Limits, declared_by: str = "header") -> int:
    """The number of elements of `shape` (exact, in Python integers), refused above the limit."""
    elements = math.prod(shape)
    if elements > limits.max_array_elements:
        raise limit_error(
            where,
            f"{declared_by} declares {elements:,} elements (shape {shape})",
            "max_array_elements",
            limits,
        )
    return elements


# ----------------------------------------------------------------------------------- model size

FLOAT_BYTES = 4
"""Parameters, gradients, optimizer moments and activations are float32."""


@dataclass(frozen=True)
class TrainingMemory:
    """An estimate of one training step's memory, in bytes.

    parameters: the number of learned parameters P. state_bytes: 16 P, the weights, their
    gradients and Adam's two moments. activation_bytes: what a forward pass keeps for the backward
    pass, twice over (the activations and their gradients), for one batch with k samples.
    """

    parameters: int
    state_bytes: int
    activation_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.state_bytes + self.activation_bytes


def _linear_chain(sizes: list[int]) -> int:
    """Parameters of Linear(a, b) layers along `sizes`: sum of a*b + b."""
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:], strict=False))


def _vector_net(gated: bool, size_in: int, size_out: int, hidden: list[int]) -> tuple[int, int]:
    """(parameters, widths per example) of an mlp (or gated mlp) from vectors (size_in,) to
    (size_out,) through `hidden`: Linear layers along [size_in, *hidden, size_out], a GatedLinear(a, b)
    being one Linear(a, 2b); widths count the input, each hidden layer before and after its
    activation (four maps for a gated one: value, gate, its sigmoid, product) and the output."""
    if gated:
        params = 2 * _linear_chain([size_in, *hidden]) + _linear_chain([hidden[-1], size_out])
        return params, size_in + 4 * sum(hidden) + size_out
    return _linear_chain([size_in, *hidden, size_out]), size_in + 2 * sum(hidden) + size_out


def _ladder(model_config: ModelConfig, features: int) -> tuple[int, int, int]:
    """(parameters, widths per example, widths per example and sample) that a Ladder VAE of L =
    `layers` stochastic layers of Z' units (`vaelab.hierarchical`) adds to its encoder and decoder:
    L - 1 bottom-up steps H -> H and L heads H -> 2Z' once per example; per sample, L - 1 top-down
    nets Z' -> 2Z' and the precision-weighted merge of each layer (about eight Z'-wide tensors:
    log-variances, the weight, mean, noise, sample and its log-density terms)."""
    layers, z = model_config.layers, model_config.latent_dim
    hidden = list(model_config.hidden)
    gated = model_config.net == "gated" and bool(hidden)  # (without hidden layers: linear maps)
    up_params, up_widths = _vector_net(gated, features, features, [features] if hidden else [])
    down_params, down_widths = _vector_net(gated, z, 2 * z, hidden[::-1])
    heads = layers * _linear_chain([features, 2 * z])
    params = (layers - 1) * (up_params + down_params) + heads
    return params, (layers - 1) * up_widths + layers * 2 * z, (layers - 1) * down_widths + 8 * layers * z


def estimate_training_bytes(
    model_config: ModelConfig, x_shape: tuple[int, ...], batch_size: int, k: int = 1
) -> TrainingMemory:
    """Estimate a training step's memory from the config alone, without building the model.

    Parameters are counted exactly for the networks of `vaelab.nets` (mlp, gated, conv, resnet), the
    priors and likelihoods of `vaelab.models` and a hierarchical model's ladder (`vaelab.hierarchical`:
    its encoder ends in H features, its decoder takes all L layers' L Z' units, and `_ladder` adds the
    nets between layers). Activations are counted per example as the widths
    the forward pass stores: the encoder's layers once per example, the decoder's layers and the
    likelihood's per-pixel terms once per example and sample (k of them for the IWAE bound), and a
    (k B, K, Z) table of component log-densities for a mixture prior of K components. This is an
    estimate within a small factor, meant to refuse configs that cannot fit, not to budget tightly.
    x_shape: one example's shape, e.g. (1, 28, 28); batch_size: B; k: samples per example.
    """
    d = math.prod(x_shape)
    z = model_config.latent_dim  # one stochastic layer's units (the prior is on the top one's)
    hidden = list(model_config.hidden)
    layers = model_config.layers
    features = hidden[-1] if hidden else d  # a ladder's encoder output, H
    z_in = layers * z  # the decoder's input: every layer
    if layers > 1:
        out = features
    else:
        out = z if model_config.kind == "ae" else 2 * z
    # `auto` and `mixed` (resolved from the data; one output per dimension, a learned sigma or not)
    # count as the gaussian does
    kind = model_config.likelihood
    likelihood = family("gaussian" if kind in ("auto", "mixed") else kind)
    p = likelihood.params(model_config.mixtures)  # decoder outputs per subpixel
    if model_config.net == "conv":
        c = x_shape[0] if len(x_shape) == 3 else 1
        h, w = (x_shape[-2], x_shape[-1]) if len(x_shape) >= 2 else (d, 1)
        flat = 64 * (h // 4) * (w // 4)
        convs = (c * 32 * 16 + 32) + (32 * 64 * 16 + 64) + (64 * 32 * 16 + 32) + (32 * p * c * 16 + p * c)
        params = convs + _linear_chain([flat, *hidden, out]) + _linear_chain([z_in, *reversed(hidden), flat])
        maps = 2 * (32 * (h // 2) * (w // 2) + 64 * (h // 4) * (w // 4))  # before and after each activation
        encoder_widths = d + maps + 2 * sum(hidden) + out
        decoder_widths = z_in + 2 * sum(hidden) + 2 * flat + maps + p * d
    elif model_config.net == "resnet":
        params, encoder_widths, decoder_widths = resnet_size(
            x_shape, z_in, out, tuple(hidden), model_config.width, p
        )
    else:  # mlp or gated
        gated = model_config.net == "gated"
        encoder_params, encoder_widths = _vector_net(gated, d, out, hidden)
        decoder_params, decoder_widths = _vector_net(gated, z_in, p * d, hidden[::-1])
        params = encoder_params + decoder_params
    per_sample = 0
    if layers > 1:
        ladder_params, ladder_widths, per_sample = _ladder(model_config, features)
        params += ladder_params
        encoder_widths += ladder_widths
    if likelihood.has_sigma and model_config.sigma is None:
        params += d  # a learned log-scale per dimension
    components = model_config.prior_components
    mixture = 0
    if model_config.prior == "mog":
        params += 2 * components * z + components
        mixture = components * z
    elif model_config.prior == "vamp":
        params += components * d
        mixture = components * z
    # the likelihood's per-subpixel terms: three per decoder output (a categorical's log-softmax
    # over 256 logits, a mixture's K components, ...)
    per_batch = batch_size * encoder_widths + k * batch_size * (
        decoder_widths + per_sample + 3 * p * d + 3 * mixture
    )
    if model_config.prior == "vamp":
        per_batch += components * encoder_widths  # the pseudo-inputs pass through the encoder
    return TrainingMemory(
        parameters=params,
        state_bytes=4 * FLOAT_BYTES * params,
        activation_bytes=2 * FLOAT_BYTES * per_batch,
    )


AVAILABLE_FRACTION = 0.9
"""Share of the available memory a training step may take when limits.max_training_bytes is unset."""


def available_memory_bytes() -> int | None:
    """Memory available to this process now: MemAvailable of /proc/meminfo, capped by a cgroup
    v2 memory limit where one is set; free physical pages elsewhere; None when unknown."""
    available = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError, IndexError):
        pass
    if available is None:
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    try:
        cgroup = Path("/sys/fs/cgroup")
        cap = (cgroup / "memory.max").read_text().strip()
        if cap != "max":
            used = int((cgroup / "memory.current").read_text())
            available = min(available, int(cap) - used)
    except (OSError, ValueError):
        pass
    return max(available, 0)


def check_training_memory(
    model_config: ModelConfig,
    x_shape: tuple[int, ...],
    batch_size: int,
    k: int = 1,
    limits: Limits = DEFAULT_LIMITS,
) -> TrainingMemory:
    """Refuse a model whose training step would not fit, with the estimate in the message.

    The budget is limits.max_training_bytes when set, else 90% of `available_memory_bytes()`
    (no check when the platform does not say). Returns the estimate.
    """
    estimate = estimate_training_bytes(model_config, x_shape, batch_size, k)
    if limits.max_training_bytes is not None:
        budget, source = (
            limits.max_training_bytes,
            f"limits.max_training_bytes = {limits.max_training_bytes:,}",
        )
    else:
        available = available_memory_bytes()
        if available is None:
            return estimate
        budget = int(AVAILABLE_FRACTION * available)
        source = (
            f"{AVAILABLE_FRACTION:.0%} of the {available / GIB:.1f} GiB available "
            "(limits.max_training_bytes unset)"
        )
    if estimate.total_bytes > budget:
        raise LimitError(
            f"model: training needs an estimated {estimate.total_bytes / GIB:,.1f} GiB "
            f"({estimate.parameters:,} parameters: {estimate.state_bytes / GIB:,.1f} GiB for the weights, "
            f"gradients and Adam's moments; {estimate.activation_bytes / GIB:,.1f} GiB of activations for "
            f"a batch of {batch_size} with k = {k}), above {source}; shrink model.hidden, "
            "model.latent_dim, model.prior_components, objective.k or train.batch_size, or raise it with "
            "--max-training-bytes",
            "max_training_bytes",
        )
    return estimate
