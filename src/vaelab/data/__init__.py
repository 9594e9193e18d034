"""Data: one spec string names a source; every source yields train/valid/test splits in memory.

    load_data(DataConfig(source="binarized-mnist:../shared/data/binarized_mnist"))

Sources register themselves in `SOURCES` with the `@source` decorator (see `embedded.py` and
`files.py`). A source returns a `Splits`: float32 tensors of shape (N, *x_shape), images as
(N, C, H, W) with values in [0, 1], tabular data as (N, D), labels where the source has them.
Every split is made contiguous and checked once here (non-empty, finite) so the training loop
need not check again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor

from vaelab.config import DataConfig
from vaelab.errors import UserError

__all__ = ["SOURCES", "Splits", "load_data", "source", "split_arrays", "BINARIZE_SEED"]

BINARIZE_SEED = 20140501
"""Seed of the one static Bernoulli draw, fixed so every run of a data spec sees the same bits."""


@dataclass(frozen=True)
class Splits:
    """train/valid/test: float32 (N, *x_shape); *_labels: int64 (N,) or None."""

    name: str
    train: Tensor
    valid: Tensor
    test: Tensor
    train_labels: Tensor | None = None
    valid_labels: Tensor | None = None
    test_labels: Tensor | None = None

    @property
    def x_shape(self) -> tuple[int, ...]:
        return tuple(self.train.shape[1:])

    @property
    def is_image(self) -> bool:
        return len(self.x_shape) == 3

    def labels(self, split: str) -> Tensor | None:
        return getattr(self, f"{split}_labels")

    def split(self, name: str) -> Tensor:
        if name not in ("train", "valid", "test"):
            raise UserError(f"split {name!r} is not one of train, valid, test")
        return getattr(self, name)


SourceFn = Callable[[str | None], Splits]
SOURCES: dict[str, SourceFn] = {}


def source(name: str, *, needs_arg: bool):
    """Register a data source under `name`; `needs_arg` sources take `name:ARG` specs."""

    def register(fn):
        def checked(arg: str | None) -> Splits:
            if needs_arg and not arg:
                raise UserError(f"data source {name!r} needs a path: --data {name}:PATH")
            if not needs_arg and arg:
                raise UserError(f"data source {name!r} takes no argument, got {name}:{arg}")
            return fn(arg)

        checked.__doc__ = fn.__doc__
        SOURCES[name] = checked
        return fn

    return register


def load_data(config: DataConfig) -> Splits:
    """Load, check and (statically) binarize the splits that `config` names."""
    from vaelab.data import embedded, files  # noqa: F401  (fill the registry)

    name, _, arg = config.source.partition(":")
    if name not in SOURCES:
        raise UserError(f"unknown data source {name!r}; known: {', '.join(sorted(SOURCES))}")
    splits = SOURCES[name](arg or None)
    # Row-major in memory: a minibatch is a gather of rows, and a file stored column-major (the
    # shared binarized-MNIST npz is) would make every gather a strided copy, ~6x slower.
    splits = replace(splits, **{s: splits.split(s).contiguous() for s in ("train", "valid", "test")})
    for split in ("train", "valid", "test"):
        x = splits.split(split)
        if x.shape[0] == 0:
            raise UserError(f"{config.source}: the {split} split is empty")
        if not torch.isfinite(x).all():
            raise UserError(f"{config.source}: the {split} split contains NaN or infinite values")
    if config.binarize == "none":
        return splits
    _check_unit_interval(splits, config.source, "binarization")
    generator = torch.Generator().manual_seed(BINARIZE_SEED)
    drawn = {s: torch.bernoulli(splits.split(s), generator=generator) for s in ("train", "valid", "test")}
    if config.binarize == "dynamic":
        drawn["train"] = splits.train  # the trainer draws a fresh x' ~ Bernoulli(x) per batch
    return replace(splits, **drawn)


def check_fits_likelihood(splits: Splits, likelihood: str, where: str) -> None:
    """Bernoulli p(x|z) is defined for x in [0, 1]; say which likelihood fits otherwise."""
    if likelihood == "bernoulli":
        _check_unit_interval(splits, where, "the bernoulli likelihood (use --likelihood gaussian)")


def _check_unit_interval(splits: Splits, where: str, needed_by: str) -> None:
    for split in ("train", "valid", "test"):
        x = splits.split(split)
        lo, hi = float(x.min()), float(x.max())
        if lo < 0.0 or hi > 1.0:
            raise UserError(
                f"{where}: {split} values span [{lo:g}, {hi:g}], outside [0, 1] required by {needed_by}"
            )


def split_arrays(
    name: str, x: np.ndarray, y: np.ndarray | None, fractions=(0.8, 0.1, 0.1), seed: int = 0
) -> Splits:
    """Deterministic train/valid/test split (stratified by label when labels exist).

    Many files are sorted by class (MNIST subsets are), so a prefix split would be badly biased.
    """
    from sklearn.model_selection import train_test_split

    n = len(x)
    if n < 3:
        raise UserError(f"{name}: {n} example(s) cannot be split into train, valid and test")
    idx = np.arange(n)
    n_test, n_valid = max(1, round(n * fractions[2])), max(1, round(n * fractions[1]))
    counts = np.bincount(_codes(y)) if y is not None else None
    stratifiable = counts is not None and counts.min() >= 3 and min(n_test, n_valid) >= len(counts)
    stratify = _codes(y) if stratifiable else None
    rest, test = train_test_split(idx, test_size=n_test, random_state=seed, stratify=stratify)
    strat_rest = stratify[rest] if stratify is not None else None
    train, valid = train_test_split(rest, test_size=n_valid, random_state=seed, stratify=strat_rest)
    tensor = torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32))
    labels = None if y is None else torch.as_tensor(_codes(y), dtype=torch.int64)

    def pick(ix):
        ix = torch.as_tensor(np.sort(ix))
        return tensor[ix], (None if labels is None else labels[ix])

    (xtr, ytr), (xva, yva), (xte, yte) = pick(train), pick(valid), pick(test)
    return Splits(name, xtr, xva, xte, ytr, yva, yte)


def _codes(y: np.ndarray) -> np.ndarray:
    """Labels as 0..K-1 integer codes (strings or arbitrary integers map in sorted order)."""
    return np.unique(y, return_inverse=True)[1].reshape(-1)
