"""Data: one spec string names a source; every source yields train/valid/test splits in memory.

    load_data(DataConfig(source="binarized-mnist:../shared/data/binarized_mnist"))

`SOURCES` maps each source's name to the function that reads it (the one list of sources; a new
source is a function in `embedded` or `files` and a line here). A source returns a `Splits`:
float32 tensors of shape (N, *x_shape), images as (N, C, H, W) with values in [0, 1], tabular
data as (N, D), labels where the source has them. Every reader checks its files against the
`Limits` before it allocates (see `vaelab.limits`); every split is made contiguous and checked
once here (non-empty, finite) so the training loop need not check again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from vaelab.config import DataConfig
from vaelab.data import embedded, files
from vaelab.data.splits import SPLITS, Splits, split_arrays
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
        if not torch.isfinite(x).all():
            raise UserError(f"{config.source}: the {split} split contains NaN or infinite values")
    if config.binarize == "none":
        return splits
    _check_unit_interval(splits, config.source, "binarization")
    generator = torch.Generator().manual_seed(BINARIZE_SEED)
    # One generator, drawn in SPLITS order: every split's bits are fixed by the seed.
    x_train, x_valid, x_test = (torch.bernoulli(splits.split(s), generator=generator) for s in SPLITS)
    if config.binarize == "dynamic":
        x_train = splits.train  # the trainer draws a fresh x' ~ Bernoulli(x) per batch
    return replace(splits, train=x_train, valid=x_valid, test=x_test)


def check_fits_likelihood(splits: Splits, likelihood: str, where: str) -> None:
    """Bernoulli p(x|z) is defined for x in [0, 1]; say which likelihood fits otherwise."""
    if likelihood == "bernoulli":
        _check_unit_interval(splits, where, "the bernoulli likelihood (use --likelihood gaussian)")


def _check_unit_interval(splits: Splits, where: str, needed_by: str) -> None:
    for split in SPLITS:
        x = splits.split(split)
        lo, hi = float(x.min()), float(x.max())
        if lo < 0.0 or hi > 1.0:
            raise UserError(
                f"{where}: {split} values span [{lo:g}, {hi:g}], outside [0, 1] required by {needed_by}"
            )
