"""Data: one spec string names a source; every source yields train/valid/test splits in memory.

    load_data(DataConfig(source="binarized-mnist:../shared/data/binarized_mnist"))

`SOURCES` maps each source's name to the function that reads it (the one list of sources; a new
source is a function in `embedded`, `files` or `datasets` and a line here; a bare NAME of a
standard dataset is first fetched into the cache by `download.fetch`). A source returns a `Splits`
of the data as stored: 8-bit data (uint8 arrays, image files) as uint8 tensors, images as (N, C,
H, W), everything else float32 (tabular data (N, D)), labels where the source has them. Here the
splits are made contiguous and checked once (non-empty, finite) so the training loop need not
check again, and given the `Transform` that turns a stored batch into model input: 8-bit levels
are scaled onto [0, 1] (never floats or integer tables: their values are the user's), and
binarization is one fixed Bernoulli draw (static) or a fresh draw per training batch (dynamic).
Every reader checks its files against the `Limits` before it allocates (see `vaelab.limits`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from vaelab.config import DataConfig, RunConfig
from vaelab.data import datasets, embedded, files, images, tables
from vaelab.data.codes import read_codes
from vaelab.data.download import fetch
from vaelab.data.labels import keep_labels_per_class
from vaelab.data.registry import DATASETS
from vaelab.data.splits import SPLITS, Splits, split_arrays
from vaelab.data.transforms import Binarize, Dequantize, Scale, Standardize, Transform
from vaelab.errors import UserError
from vaelab.likelihoods import family
from vaelab.limits import DEFAULT_LIMITS, Limits

__all__ = [
    "SOURCES",
    "Source",
    "Splits",
    "load_data",
    "load_run_data",
    "for_likelihood",
    "check_fits_likelihood",
    "split_arrays",
    "BINARIZE_SEED",
]

STORED_DTYPES = (torch.uint8, torch.float32)
BINARIZE_SEED = 20140501
"""Seed of the one static Bernoulli draw, fixed so every run of a data spec sees the same bits."""


@dataclass(frozen=True)
class Source:
    """A data source: `read(arg, limits)`; `needs_arg` sources take `name:ARG` specs, the others none
    (and are passed the empty string). `takes_config`: read(arg, limits, config) also takes the
    DataConfig, for options a reader must apply while reading (a folder of mixed sizes is resized
    as it is decoded); every other source's images are conformed to them after reading."""

    read: Callable[..., Splits]
    needs_arg: bool
    takes_config: bool = False


SOURCES: dict[str, Source] = {
    "mnist5k": Source(embedded.mnist5k, needs_arg=False),
    "digits": Source(embedded.digits, needs_arg=False),
    # The standard datasets: NAME:DIR reads the files in DIR; a bare NAME (those in
    # registry.DATASETS) reads them from the cache, downloaded if allowed (download.fetch).
    "binarized-mnist": Source(files.binarized_mnist, needs_arg=True),
    "mnist": Source(datasets.mnist, needs_arg=True),
    "fashion-mnist": Source(datasets.fashion_mnist, needs_arg=True),
    "kmnist": Source(datasets.kmnist, needs_arg=True),
    "omniglot": Source(datasets.omniglot, needs_arg=True),
    "caltech101-silhouettes": Source(datasets.caltech101_silhouettes, needs_arg=True),
    "frey-faces": Source(datasets.frey_faces, needs_arg=True),
    "cifar10": Source(datasets.cifar10, needs_arg=True),
    "svhn": Source(datasets.svhn, needs_arg=True),
    "celeba": Source(datasets.celeba, needs_arg=True),
    "npz": Source(files.npz, needs_arg=True),
    "npy": Source(files.npy, needs_arg=True),
    "csv": Source(tables.csv, needs_arg=True, takes_config=True),
    "folder": Source(files.folder, needs_arg=True, takes_config=True),
    "codes": Source(read_codes, needs_arg=True),  # a trained run's posterior means (M1 of M1+M2)
}


def load_data(config: DataConfig, limits: Limits = DEFAULT_LIMITS) -> Splits:
    """Load, check and (statically) binarize the splits that `config` names, within `limits`."""
    name, _, arg = config.source.partition(":")
    if name not in SOURCES:
        raise UserError(f"unknown data source {name!r}; known: {', '.join(sorted(SOURCES))}")
    source = SOURCES[name]
    if not arg and name in DATASETS:
        arg = str(fetch(name, offline=config.offline))
    if source.needs_arg and not arg:
        raise UserError(f"data source {name!r} needs a path: --data {name}:PATH")
    if not source.needs_arg and arg:
        raise UserError(f"data source {name!r} takes no argument, got {name}:{arg}")
    splits = source.read(arg, limits, config) if source.takes_config else source.read(arg, limits)
    splits = _conformed(splits, config, limits)
    splits = keep_labels_per_class(splits, config.labels_per_class, config.labels_seed, config.source)
    # Row-major in memory: a minibatch is a gather of rows, and a file stored column-major (the
    # shared binarized-MNIST npz is) would make every gather a strided copy, ~6x slower.
    splits = replace(
        splits,
        train=splits.train.contiguous(),
        valid=splits.valid.contiguous(),
        test=splits.test.contiguous(),
    )
    for split in SPLITS:
        x = splits.split(split)
        if x.shape[0] == 0:
            raise UserError(f"{config.source}: the {split} split is empty")
        if x.dtype not in STORED_DTYPES:
            raise TypeError(f"source {name!r} returned {split} data of dtype {x.dtype}")
        if x.is_floating_point() and not torch.isfinite(x).all():
            raise UserError(f"{config.source}: the {split} split contains NaN or infinite values")
    eight_bit = splits.train.dtype == torch.uint8
    if splits.column_names is None and splits.train.dim() == 2 and not eight_bit:  # rows of numbers
        splits = replace(splits, column_names=tables.default_names(splits.x_shape[0]))
    # 8-bit levels 0..255 are scored on the grid k/255 of [0, 1]; other data as they are.
    splits = replace(splits, transform=Transform((Scale(255),)) if eight_bit else Transform())
    if config.binarize == "none":
        return tables.standardized(
            splits, config.standardize, given_standardization(config), "none", config.source
        )
    if config.standardize == "on":
        tables.standardized(splits, "on", None, config.binarize, config.source)  # (refuses it)
    _check_unit_interval(splits, config.source, "binarization")
    generator = torch.Generator().manual_seed(BINARIZE_SEED)
    # One generator, drawn in SPLITS order: every split's bits are fixed by the seed.
    probabilities = {s: splits.inputs(s) for s in SPLITS}
    x_train, x_valid, x_test = (torch.bernoulli(probabilities[s], generator=generator) for s in SPLITS)
    transform = Transform()
    if config.binarize == "dynamic":  # the trainer draws a fresh x' ~ Bernoulli(x) per batch
        x_train, transform = probabilities["train"], Transform((Binarize(),))
    return replace(splits, train=x_train, valid=x_valid, test=x_test, transform=transform)


def _conformed(splits: Splits, config: DataConfig, limits: Limits) -> Splits:
    """Images with the channels and size `config` asks for (`vaelab.data.images.conform`); image
    options given for data that are not images are refused rather than ignored."""
    if splits.train.ndim != 4:
        for field, given in (("channels", config.channels != "auto"), ("image_size", config.image_size)):
            if given:
                raise UserError(
                    f"{config.source}: data.{field} applies to images; these examples have shape "
                    f"{tuple(splits.x_shape)}"
                )
        return splits
    train, valid, test = (
        torch.as_tensor(
            images.conform(
                splits.split(s).numpy(),
                config.channels,
                config.image_size,
                config.crop,
                f"{config.source}: {s}",
                limits,
            )
        )
        for s in SPLITS
    )
    return replace(splits, train=train, valid=valid, test=test)


def given_standardization(config: DataConfig) -> Standardize | None:
    """The means and scales `config` fixes (a trained run's), or None for the train split's."""
    if config.standardize_mean is None or config.standardize_scale is None:
        return None
    return Standardize(config.standardize_mean, config.standardize_scale)


SIGMA_RATIO = 100.0
"""A fixed Gaussian sigma below 1/SIGMA_RATIO of the data's standard deviation, on data beyond
[-1, 1], is a unit mismatch (sigma 0.1 meant for [0, 1] data against values 0..255)."""


def check_fits_likelihood(splits: Splits, likelihood: str, where: str, *, sigma: float | None = None) -> None:
    """Refuse a likelihood p(x|z) that cannot fit the model's inputs, with the advice that leads
    to a sensible run.

    bernoulli: inputs in [0, 1] (8-bit levels are, once scaled). gaussian with a fixed `sigma`
    (None: learned, which adapts to any scale): on inputs beyond [-1, 1], sigma at least 1/100 of
    their standard deviation over the training split; a smaller one is a unit mismatch whose ELBO
    is dominated by (x - mean)^2 / (2 sigma^2), e.g. -6.6e8 nats for 0..255 values with sigma 0.1.
    (Within [-1, 1] a small sigma is a modelling choice, sharp reconstructions, and is left alone.)
    """
    if likelihood == "bernoulli":
        for split in SPLITS:
            lo, hi = _input_range(splits, split)
            if lo < 0.0 or hi > 1.0:
                raise UserError(
                    f"{where}: {split} values span [{lo:g}, {hi:g}], but the bernoulli likelihood needs "
                    f"[0, 1]; {_advice(splits, split)}"
                )
    elif likelihood == "gaussian" and sigma is not None:
        lo, hi = _input_range(splits, "train")
        if lo >= -1.0 and hi <= 1.0:
            return
        sd = _input_sd(splits)
        if sigma * SIGMA_RATIO < sd:
            levels = _levels_advice(splits, "train")
            raise UserError(
                f"{where}: model.sigma {sigma:g} is a fixed noise level in the data's units, below 1/"
                f"{SIGMA_RATIO:g} of the training values' standard deviation {sd:.3g} (they span "
                f"[{lo:g}, {hi:g}]): a unit mismatch whose ELBO is dominated by (x - mean)^2 / (2 sigma^2) "
                f"(sigma 0.1 suits data on a [0, 1] scale); {levels + '; otherwise ' if levels else ''}"
                "learn sigma (model.sigma learned) or give one in the data's units"
            )


def _advice(splits: Splits, split: str) -> str:
    """What to do about values outside [0, 1], most sensible first: 8-bit levels stored as floats
    are said to be levels; other values are rescaled, or modelled in their units."""
    in_units = (
        "model them in their units with likelihood gaussian and a learned sigma (model.sigma learned; "
        "the log-densities reported are then of the values as given, nats per example in their units)"
    )
    levels = _levels_advice(splits, split)
    return (
        f"{levels}; otherwise rescale them into [0, 1], or {in_units}"
        if levels
        else (f"rescale them into [0, 1], or {in_units}")
    )


def _levels_advice(splits: Splits, split: str) -> str:
    """For float data that look like 8-bit levels, how to say they are; else ''."""
    if splits.transform.steps != () or not _look_like_levels(splits.split(split)):
        return ""
    return (
        "they are whole numbers in 0..255: if they are 8-bit levels, store them as integers "
        "(x.astype(np.uint8)), which vaelab scales by 1/255 like image files (floats are never scaled)"
    )


def _look_like_levels(x: torch.Tensor) -> bool:
    """Float data that are whole numbers in [0, 255] (8-bit levels stored as floats)."""
    if not x.is_floating_point() or float(x.min()) < 0 or float(x.max()) > 255:
        return False
    return bool((x == x.round()).all())


CHUNK = 4096
"""Rows per chunk when summarizing a transformed split: a float32 copy of a chunk, not of the split."""


def _input_range(splits: Splits, split: str) -> tuple[float, float]:
    """(min, max) of the model's inputs of `split` (the evaluation transform, chunk by chunk)."""
    x = splits.split(split)
    if x.dtype == torch.uint8 and splits.transform.steps == (Scale(255),):
        return float(x.min()) / 255, float(x.max()) / 255
    chunks = [splits.transform(x[i : i + CHUNK]) for i in range(0, len(x), CHUNK)]
    return min(float(c.min()) for c in chunks), max(float(c.max()) for c in chunks)


def _input_sd(splits: Splits) -> float:
    """Standard deviation of all the training inputs' values, in float64 (chunk by chunk)."""
    x = splits.train
    total = count = 0.0
    square = 0.0
    for i in range(0, len(x), CHUNK):
        chunk = splits.transform(x[i : i + CHUNK]).double()
        total, square, count = (
            total + float(chunk.sum()),
            square + float((chunk**2).sum()),
            count + chunk.numel(),
        )
    mean = total / count
    return max(square / count - mean**2, 0.0) ** 0.5


def load_run_data(config: RunConfig) -> Splits:
    """A run's data as its model scores them: `load_data`, then `for_likelihood`. Every command
    that scores a run's data (train, evaluate, the figures, compare, sweep) loads them here, so
    the input transform is chosen from the likelihood in one place."""
    model = config.model
    return for_likelihood(
        load_data(config.data, config.limits),
        model.likelihood,
        config.data.source,
        sigma=fixed_sigma(model.sigma),
    )


def fixed_sigma(sigma: float | str | None) -> float | None:
    """model.sigma as a fixed scale, or None where it is learned (None) or not yet resolved (auto)."""
    return sigma if isinstance(sigma, float) else None


def for_likelihood(splits: Splits, likelihood: str, where: str, *, sigma: float | None = None) -> Splits:
    """`splits` with the input transform `likelihood` needs, after checking that it fits the data.

    What the family scores (`vaelab.likelihoods.Family.scores`) decides: "levels" (discretized
    logistic, its mixture, the categorical) score the 8-bit levels themselves on the grid k/255
    (`Scale(255)`, log_det 0); "density" (gaussian, logistic) on 8-bit data score dequantized
    y = (x + u)/256 (`Dequantize`, log_det -D log 256: the reported log-density is then a lower
    bound on log P(x) of the levels); "unit" (bernoulli) scores values in [0, 1], 8-bit data
    scaled. Data that are not 8-bit keep the transform `load_data` chose (binarization,
    standardization). Raises a UserError with advice where the likelihood does not fit
    (`check_fits_likelihood`; `sigma`: the gaussian's fixed sigma, None when learned)."""
    # `auto` before it is resolved scores as its default for data that are not tabular, bernoulli;
    # `mixed` (tabular columns, `vaelab.columns`) as a density
    scores = {"auto": "unit", "mixed": "density"}.get(likelihood) or family(likelihood).scores
    eight_bit = splits.train.dtype == torch.uint8
    if scores == "levels" and not eight_bit:
        bits = bool(((splits.train == 0) | (splits.train == 1)).all())
        advice = "binary: use the bernoulli likelihood" if bits else "use the gaussian or logistic likelihood"
        raise UserError(
            f"{where}: model.likelihood {likelihood} scores the 256 levels of 8-bit data (uint8 arrays, "
            f"image files); these data are stored as {str(splits.train.dtype).removeprefix('torch.')} "
            f"({advice})"
        )
    check_fits_likelihood(splits, likelihood, where, sigma=sigma)
    if not eight_bit:
        return splits
    # 8-bit levels: a density scores y = (x + u)/256; the others the grid k/255 of [0, 1]
    return replace(splits, transform=Transform((Dequantize(),) if scores == "density" else (Scale(255),)))


def _check_unit_interval(splits: Splits, where: str, needed_by: str) -> None:
    for split in SPLITS:
        lo, hi = _input_range(splits, split)
        if lo < 0.0 or hi > 1.0:
            raise UserError(
                f"{where}: {split} values span [{lo:g}, {hi:g}], outside [0, 1] required by {needed_by}"
            )
