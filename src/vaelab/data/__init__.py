"""Data: one spec string names a source; every source yields train/valid/test splits in memory.

    load_data(DataConfig(source="binarized-mnist:../shared/data/binarized_mnist"))

`SOURCES` maps each source's name to the function that reads it (the one list of sources; a new
source is a function in `embedded` or `files` and a line here). A source returns a `Splits` of the
data as stored: 8-bit data (uint8 arrays, image files) as uint8 tensors, images as (N, C, H, W),
everything else float32 (tabular data (N, D)), labels where the source has them. Here the splits
are made contiguous and checked once (non-empty, finite) so the training loop need not check
again, and given the `Transform` that turns a stored batch into model input: 8-bit levels are
scaled onto [0, 1] (never floats or integer tables: their values are the user's), and
binarization is one fixed Bernoulli draw (static) or a fresh draw per training batch (dynamic).
Every reader checks its files against the `Limits` before it allocates (see `vaelab.limits`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from vaelab.config import DataConfig
from vaelab.data import embedded, files
from vaelab.data.splits import SPLITS, Splits, split_arrays
from vaelab.data.transforms import Binarize, Scale, Transform
from vaelab.errors import UserError
from vaelab.limits import DEFAULT_LIMITS, Limits

__all__ = [
    "SOURCES",
    "Source",
    "Splits",
    "load_data",
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
    (and are passed the empty string)."""

    read: Callable[[str, Limits], Splits]
    needs_arg: bool


SOURCES: dict[str, Source] = {
    "mnist5k": Source(embedded.mnist5k, needs_arg=False),
    "digits": Source(embedded.digits, needs_arg=False),
    "binarized-mnist": Source(files.binarized_mnist, needs_arg=True),
    "mnist": Source(files.mnist, needs_arg=True),
    "fashion-mnist": Source(files.fashion_mnist, needs_arg=True),
    "npz": Source(files.npz, needs_arg=True),
    "npy": Source(files.npy, needs_arg=True),
    "csv": Source(files.csv, needs_arg=True),
    "folder": Source(files.folder, needs_arg=True),
}


def load_data(config: DataConfig, limits: Limits = DEFAULT_LIMITS) -> Splits:
    """Load, check and (statically) binarize the splits that `config` names, within `limits`."""
    name, _, arg = config.source.partition(":")
    if name not in SOURCES:
        raise UserError(f"unknown data source {name!r}; known: {', '.join(sorted(SOURCES))}")
    source = SOURCES[name]
    if source.needs_arg and not arg:
        raise UserError(f"data source {name!r} needs a path: --data {name}:PATH")
    if not source.needs_arg and arg:
        raise UserError(f"data source {name!r} takes no argument, got {name}:{arg}")
    splits = source.read(arg, limits)
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
    # 8-bit levels 0..255 are scored on the grid k/255 of [0, 1]; other data as they are.
    splits = replace(splits, transform=Transform((Scale(255),)) if eight_bit else Transform())
    if config.binarize == "none":
        return splits
    _check_unit_interval(splits, config.source, "binarization")
    generator = torch.Generator().manual_seed(BINARIZE_SEED)
    # One generator, drawn in SPLITS order: every split's bits are fixed by the seed.
    probabilities = {s: splits.inputs(s) for s in SPLITS}
    x_train, x_valid, x_test = (torch.bernoulli(probabilities[s], generator=generator) for s in SPLITS)
    transform = Transform()
    if config.binarize == "dynamic":  # the trainer draws a fresh x' ~ Bernoulli(x) per batch
        x_train, transform = probabilities["train"], Transform((Binarize(),))
    return replace(splits, train=x_train, valid=x_valid, test=x_test, transform=transform)


def check_fits_likelihood(splits: Splits, likelihood: str, where: str) -> None:
    """Bernoulli p(x|z) is defined for x in [0, 1]; say which likelihood fits otherwise."""
    if likelihood == "bernoulli":
        _check_unit_interval(splits, where, "the bernoulli likelihood (use --likelihood gaussian)")


def _check_unit_interval(splits: Splits, where: str, needed_by: str) -> None:
    if splits.train.dtype == torch.uint8:  # scaled onto [0, 1] by the transform
        return
    for split in SPLITS:
        x = splits.split(split)
        lo, hi = float(x.min()), float(x.max())
        if lo < 0.0 or hi > 1.0:
            raise UserError(
                f"{where}: {split} values span [{lo:g}, {hi:g}], outside [0, 1] required by {needed_by}"
            )
