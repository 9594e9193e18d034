"""Data read from the user's files: benchmark directories, arrays, tables and image folders.

Every reader validates before it allocates (see `arrays`, `idx`, `tables`, `images`) and turns a
missing, truncated, malformed or oversized file into a UserError naming the file; no reader
unpickles. Every source takes the `Limits` it must respect.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from vaelab.config import DataConfig
from vaelab.data.arrays import checked_labels, read_npy, read_npz, real_array, stored_arrays
from vaelab.data.checks import existing_dir, regular_file
from vaelab.data.images import IMAGE_SUFFIXES, channels_first, image_paths, read_images
from vaelab.data.splits import SPLITS, Splits, label_codes, split_arrays
from vaelab.data.tables import read_amat
from vaelab.errors import UserError
from vaelab.limits import Limits

BINARIZED_MNIST_PIXELS = 784


def binarized_mnist(arg: str, limits: Limits) -> Splits:
    """Statically binarized MNIST (Larochelle & Murray 2011): 50k/10k/10k rows of 784 bits.

    Reads `train.npz`, `valid.npz`, `test.npz` (array `x`) and `test_labels.npz` (array `y`),
    or Larochelle's original `binarized_mnist_{train,valid,test}.amat` text files.
    """
    root = existing_dir(arg)
    parts = {}
    for split in SPLITS:
        npz, amat = root / f"{split}.npz", root / f"binarized_mnist_{split}.amat"
        if npz.exists():
            arrays = read_npz(npz, limits)
            if "x" not in arrays:
                raise UserError(f"{npz}: no array named 'x' (found {', '.join(arrays)})")
            x, where = arrays["x"], f"{npz}: array 'x'"
        elif amat.exists():
            x, where = read_amat(amat, limits), str(amat)
        else:
            raise UserError(f"{root}: neither {npz.name} nor {amat.name} found")
        if x.ndim != 2 or x.shape[1] != BINARIZED_MNIST_PIXELS:
            raise UserError(f"{where}: expected shape (N, {BINARIZED_MNIST_PIXELS}), got {x.shape}")
        if not np.isin(x, (0, 1)).all():
            raise UserError(f"{where}: values are not all 0 or 1, so this is not binarized MNIST")
        parts[split] = torch.as_tensor(x.astype(np.float32).reshape(-1, 1, 28, 28))
    labels = None
    if (root / "test_labels.npz").exists():
        path = root / "test_labels.npz"
        y = read_npz(path, limits).get("y")
        if y is None:
            raise UserError(f"{path}: no array named 'y' (one label per test row)")
        labels = torch.as_tensor(_codes_or_ints(checked_labels(y, len(parts["test"]), f"{path}: array 'y'")))
    return Splits("binarized-mnist", parts["train"], parts["valid"], parts["test"], test_labels=labels)


def npz(arg: str, limits: Limits) -> Splits:
    """An .npz with arrays `train`, `valid`, `test` (labels optional as `train_labels` ...),
    or one array `x` (labels optional as `y`) split 80/10/10. Labels may be class names (strings),
    which become the splits' `label_names`. Layouts and 8-bit recognition: `channels_first`,
    `stored_arrays`."""
    path = regular_file(arg)
    arrays = read_npz(path, limits)
    if set(SPLITS) <= arrays.keys():
        wheres = {s: f"{path}: array {s!r}" for s in SPLITS}
        stored = stored_arrays({wheres[s]: channels_first(arrays[s], wheres[s]) for s in SPLITS})
        xs = {s: stored[wheres[s]] for s in SPLITS}
        shapes = {x.shape[1:] for x in xs.values()}
        if len(shapes) != 1:
            raise UserError(f"{path}: train, valid and test have different example shapes {sorted(shapes)}")
        ys, names = _split_labels(arrays, {s: len(xs[s]) for s in SPLITS}, path)
        train, valid, test = (torch.as_tensor(xs[s]) for s in SPLITS)
        return Splits(path.name, train, valid, test, ys["train"], ys["valid"], ys["test"], label_names=names)
    key = "x" if "x" in arrays else (next(iter(arrays)) if len(arrays) == 1 else None)
    if key is None:
        raise UserError(f"{path}: expected arrays train/valid/test or x (found {', '.join(arrays)})")
    x = real_array(channels_first(arrays[key], f"{path}: array {key!r}"), f"{path}: array {key!r}")
    y = arrays.get("y")
    if y is not None:
        y = checked_labels(y, len(x), f"{path}: array 'y'")
    return split_arrays(path.name, x, y)


def _split_labels(
    arrays: dict[str, np.ndarray], n: dict[str, int], path: Path
) -> tuple[dict[str, Tensor | None], tuple[str, ...] | None]:
    """The optional `{split}_labels` arrays as int64 tensors: non-negative integer codes, or class
    names coded 0..K-1 in sorted order over all splits together (so a name has one code); and the
    names (name of code c at c) where the labels are names, else None."""
    ys = {
        s: checked_labels(arrays[f"{s}_labels"], n[s], f"{path}: array '{s}_labels'")
        for s in SPLITS
        if f"{s}_labels" in arrays
    }
    named = {s for s, y in ys.items() if y.dtype.kind in "US"}
    if named and named != ys.keys():
        raise UserError(f"{path}: labels of {', '.join(sorted(named))} are names, the others integers")
    names = None
    if named:
        every = np.concatenate(list(ys.values()))
        names = tuple(str(v) for v in np.unique(every))
        codes = np.split(label_codes(every), np.cumsum([len(y) for y in ys.values()])[:-1])
        ys = dict(zip(ys, codes, strict=True))
    for s, y in ys.items():
        if (y < 0).any():
            raise UserError(f"{path}: array '{s}_labels' holds a negative label {int(y.min())}")
    return {s: torch.as_tensor(ys[s].astype(np.int64)) if s in ys else None for s in SPLITS}, names


def _codes_or_ints(y: np.ndarray) -> np.ndarray:
    """Integer labels as they are; class names as codes 0..K-1 in sorted order."""
    return label_codes(y) if y.dtype.kind in "US" else y.astype(np.int64)


def npy(arg: str, limits: Limits) -> Splits:
    """One .npy array of examples, split 80/10/10 (layouts: `channels_first`; 8-bit recognition:
    `stored_arrays`)."""
    path = regular_file(arg)
    x = read_npy(path, limits, ndims=(2, 3, 4))
    return split_arrays(path.name, real_array(channels_first(x, str(path)), str(path)), None)


def folder(arg: str, limits: Limits, config: DataConfig) -> Splits:
    """Images under a directory, 8-bit levels uint8 (N, C, H, W) with the channels and size of
    `config` (`vaelab.data.images.read_images`), split 80/10/10; images in sub-folders are labelled
    by the sub-folder's name (its path below the directory), which becomes the class name."""
    root = existing_dir(arg)
    paths = image_paths(root, limits)
    if not paths:
        raise UserError(f"{root}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    x = read_images(paths, limits, config.channels, config.image_size, config.crop)
    labels = [p.parent.relative_to(root).as_posix() for p in paths]
    y = np.asarray(labels) if len(set(labels)) > 1 else None
    return split_arrays(root.name, x, y)
