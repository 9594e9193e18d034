"""The in-memory form of a data set, and the seeded split of one array into train/valid/test."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from vaelab.data.transforms import Transform
from vaelab.errors import UserError

SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class Splits:
    """A data set as stored, and how it becomes model input.

    train/valid/test: (N, *x_shape) as stored: uint8 for 8-bit data (levels 0..255; images
    (N, C, H, W)), float32 otherwise. `transform` turns a batch of them into the model's float32
    input (`vaelab.data.transforms`); `inputs(split)` is a whole split transformed, as evaluation
    and figures score it. *_labels: int64 (N,) or None; label_names: the class of each code
    (label_names[c] names code c) where the source has names, else None.
    """

    name: str
    train: Tensor
    valid: Tensor
    test: Tensor
    train_labels: Tensor | None = None
    valid_labels: Tensor | None = None
    test_labels: Tensor | None = None
    label_names: tuple[str, ...] | None = None
    transform: Transform = field(default_factory=Transform)

    @property
    def x_shape(self) -> tuple[int, ...]:
        return tuple(self.train.shape[1:])

    def labels(self, split: str) -> Tensor | None:
        return getattr(self, f"{split}_labels")

    def split(self, name: str) -> Tensor:
        """The split `name` as stored."""
        if name not in SPLITS:
            raise UserError(f"split {name!r} is not one of {', '.join(SPLITS)}")
        return getattr(self, name)

    def inputs(self, name: str) -> Tensor:
        """The split `name` as the model scores it in evaluation: the transform with its fixed
        evaluation draw (no generator), float32 (N, *x_shape)."""
        return self.transform(self.split(name))

    def log_det_nats(self) -> float:
        """Per example: converts the model's log-density of its input into that of the data as
        stored (see `Transform.log_det_nats`)."""
        return self.transform.log_det_nats(self.x_shape)


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
    # 8-bit data stay 8-bit (the transform scales each batch); everything else is float32.
    tensor = torch.as_tensor(np.ascontiguousarray(x, dtype=np.uint8 if x.dtype == np.uint8 else np.float32))
    labels = None if codes is None else torch.as_tensor(codes, dtype=torch.int64)

    def pick(ix):
        ix = torch.as_tensor(np.sort(ix))
        return tensor[ix], (None if labels is None else labels[ix])

    (xtr, ytr), (xva, yva), (xte, yte) = pick(train), pick(valid), pick(test)
    names = None if y is None or y.dtype.kind not in "US" else tuple(str(v) for v in np.unique(y))
    return Splits(name, xtr, xva, xte, ytr, yva, yte, label_names=names)


def label_codes(y: np.ndarray) -> np.ndarray:
    """Labels as 0..K-1 integer codes (strings or arbitrary integers map in sorted order)."""
    return np.unique(y, return_inverse=True)[1].reshape(-1)
