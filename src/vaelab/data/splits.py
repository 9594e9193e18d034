"""The in-memory form of a data set, and the seeded split of one array into train/valid/test."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from vaelab.errors import UserError

SPLITS = ("train", "valid", "test")


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

    def labels(self, split: str) -> Tensor | None:
        return getattr(self, f"{split}_labels")

    def split(self, name: str) -> Tensor:
        if name not in SPLITS:
            raise UserError(f"split {name!r} is not one of {', '.join(SPLITS)}")
        return getattr(self, name)


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
    codes = None if y is None else label_codes(y)
    counts = None if codes is None else np.bincount(codes)
    stratifiable = counts is not None and counts.min() >= 3 and min(n_test, n_valid) >= len(counts)
    stratify = codes if stratifiable else None
    rest, test = train_test_split(idx, test_size=n_test, random_state=seed, stratify=stratify)
    strat_rest = stratify[rest] if stratify is not None else None
    train, valid = train_test_split(rest, test_size=n_valid, random_state=seed, stratify=strat_rest)
    tensor = torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32))
    labels = None if codes is None else torch.as_tensor(codes, dtype=torch.int64)

    def pick(ix):
        ix = torch.as_tensor(np.sort(ix))
        return tensor[ix], (None if labels is None else labels[ix])

    (xtr, ytr), (xva, yva), (xte, yte) = pick(train), pick(valid), pick(test)
    return Splits(name, xtr, xva, xte, ytr, yva, yte)


def label_codes(y: np.ndarray) -> np.ndarray:
    """Labels as 0..K-1 integer codes (strings or arbitrary integers map in sorted order)."""
    return np.unique(y, return_inverse=True)[1].reshape(-1)
