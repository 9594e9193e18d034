"""Readers of the standard datasets in their published formats, from a directory (`NAME:DIR`).

A bare `--data NAME` reads the same files from the cache (`vaelab.data.download`). Each reader
returns the data as stored (see `vaelab.data.splits`): 8-bit images as uint8 (N, C, H, W), binary
and real-valued images as float32, labels as int64 with their class names where the dataset has
them. Every file is checked from its headers against the `Limits` before anything is allocated.

| dataset | files in DIR | stored | splits |
|---|---|---|---|
| mnist, fashion-mnist, kmnist | the four IDX files (.gz or not) | uint8 (N, 1, 28, 28) | 50k / 10k / 10k |
| cifar10 | cifar-10-binary.tar.gz, or its cifar-10-batches-bin/ | uint8 (N, 3, 32, 32) | 45k / 5k / 10k |
| svhn | train_32x32.mat, test_32x32.mat | uint8 (N, 3, 32, 32) | 65,931 / 7,326 / 26,032 |
| omniglot | chardata.mat (Burda et al.'s IWAE) | float32 in [0, 1] | 21,911 / 2,434 / 8,070 |
| caltech101-silhouettes | caltech101_silhouettes_28_split1.mat | float32 {0, 1} | 4,100 / 2,264 / 2,307 |
| frey-faces | frey_rawface.mat | uint8 (N, 1, 28, 20) | 1,573 / 196 / 196 |
| celeba | img_align_celeba/, list_eval_partition.txt | uint8 (N, 3, 64, 64) | 162,770 / 19,867 / 19,962 |

Where a dataset has no validation split, one tenth of its training set is held out, stratified
by label, with a fixed seed (`carve_valid`); Frey Faces, which has no split at all, is split
80/10/10 like any unlabelled array (`split_arrays`).
"""

from __future__ import annotations

import tarfile
import zlib
from pathlib import Path

import numpy as np
import torch

from vaelab.data.checks import existing_dir, regular_file, text_file
from vaelab.data.idx import OFFICIAL_MD5, read_idx
from vaelab.data.images import PILLOW_ERRORS, pillow_limits
from vaelab.data.matfile import NUMERIC, Variable, read_mat
from vaelab.data.splits import Splits, split_arrays
from vaelab.errors import UserError
from vaelab.limits import Limits, check_elements, limit_error

VALID_FRACTION = 0.1
"""Share of the training set held out for validation where a dataset has no validation split."""
VALID_SEED = 0

MNIST_CLASSES = tuple(str(d) for d in range(10))
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
KMNIST_CLASSES = ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")  # Clanuwat et al. 2018
IDX_CLASSES = {"mnist": MNIST_CLASSES, "fashion-mnist": FASHION_MNIST_CLASSES, "kmnist": KMNIST_CLASSES}
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip


def carve_valid(
    name: str,
    x_train: np.ndarray,
    y_train: np.ndarray | None,
    x_test: np.ndarray,
    y_test: np.ndarray | None,
    label_names: tuple[str, ...] | None = None,
) -> Splits:
    """Splits with validation = VALID_FRACTION of train, stratified by label, seeded (VALID_SEED).

    x_*: (N, C, H, W) as stored; y_*: (N,) integer codes or None."""
    from sklearn.model_selection import train_test_split

    n_valid = max(1, round(VALID_FRACTION * len(x_train)))
    if len(x_train) - n_valid < 1:
        raise UserError(f"{name}: {len(x_train)} training examples, too few to hold out a validation split")
    # Stratified where every class can appear in both parts (as `split_arrays` decides).
    counts = None if y_train is None else np.bincount(y_train)[np.bincount(y_train) > 0]
    stratifiable = (
        counts is not None and counts.min() >= 2 and min(n_valid, len(x_train) - n_valid) >= len(counts)
    )
    stratify = y_train if stratifiable else None
    train, valid = train_test_split(
        np.arange(len(x_train)), test_size=n_valid, random_state=VALID_SEED, stratify=stratify
    )
    train, valid = np.sort(train), np.sort(valid)
    return _splits(
        name,
        (x_train[train], None if y_train is None else y_train[train]),
        (x_train[valid], None if y_train is None else y_train[valid]),
        (x_test, y_test),
        label_names,
    )


def _splits(name: str, train, valid, test, label_names: tuple[str, ...] | None) -> Splits:
    """Splits from (x, y) pairs of numpy arrays, kept in their stored dtype."""

    def x(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a))

    def y(a: np.ndarray | None) -> torch.Tensor | None:
        return None if a is None else torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64))

    return Splits(
        name,
        x(train[0]),
        x(valid[0]),
        x(test[0]),
        y(train[1]),
        y(valid[1]),
        y(test[1]),
        label_names=label_names,
    )


def _labels(y: np.ndarray, n_classes: int, where: str, offset: int = 0) -> np.ndarray:
    """Integer class codes 0..n_classes-1 from stored codes offset..offset+n_classes-1."""
    codes = np.asarray(y).reshape(-1)
    if codes.dtype.kind not in "biuf":
        raise UserError(f"{where}: labels of dtype {codes.dtype} are not integers")
    if codes.dtype.kind == "f" and not (np.isfinite(codes) & (codes == np.round(codes))).all():
        raise UserError(f"{where}: labels are not all integers")
    if len(codes) and (codes.min() < offset or codes.max() >= offset + n_classes):
        lo, hi = codes.min(), codes.max()
        raise UserError(f"{where}: labels span [{lo:g}, {hi:g}], expected {offset}..{offset + n_classes - 1}")
    return codes.astype(np.int64) - offset


# ------------------------------------------------------------------------------ IDX (MNIST)

IDX_STEMS = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def _idx_dataset(kind: str, arg: str, limits: Limits) -> Splits:
    """Official MNIST-style IDX files: train (60k) split into 50k train + the last 10k as valid;
    8-bit grey levels as stored, uint8 (N, 1, 28, 28), labels with the dataset's class names."""
    root = existing_dir(arg)
    arrays, paths = {}, {}
    for stem in IDX_STEMS:
        gz, raw = root / f"{stem}.gz", root / stem
        if gz.exists():
            paths[stem], arrays[stem] = gz, read_idx(gz, OFFICIAL_MD5[kind][gz.name], limits)
        elif raw.exists():  # official checksums are of the .gz files; shape is checked
            paths[stem], arrays[stem] = raw, read_idx(raw, limits=limits)
        else:
            raise UserError(f"{root}: {kind} needs {stem}.gz (or {stem}); not found")
    images, labels, test_images, test_labels = (arrays[stem] for stem in IDX_STEMS)
    image_path, label_path, test_image_path, test_label_path = (paths[stem] for stem in IDX_STEMS)
    for path, x in ((image_path, images), (test_image_path, test_images)):
        if x.ndim != 3:
            raise UserError(f"{path}: expected images of shape (N, H, W), got {x.shape}")
    for path, y in ((label_path, labels), (test_label_path, test_labels)):
        if y.ndim != 1:
            raise UserError(f"{path}: expected labels of shape (N,), got {y.shape}")
    for path, y, x, x_path in (
        (label_path, labels, images, image_path),
        (test_label_path, test_labels, test_images, test_image_path),
    ):
        if len(y) != len(x):
            raise UserError(f"{path}: {len(y)} labels for the {len(x)} images of {x_path.name}")
    if test_images.shape[1:] != images.shape[1:]:
        raise UserError(
            f"{test_image_path}: images of size {test_images.shape[1:]} differ from the training "
            f"images' {images.shape[1:]} ({image_path.name})"
        )
    n_valid = min(10_000, len(images) // 6)
    if n_valid < 1:
        raise UserError(
            f"{image_path}: {len(images)} training images, too few to hold out a validation split"
        )

    def levels(a):  # 8-bit grey levels as stored, (N, 1, H, W)
        return torch.as_tensor(a.astype(np.uint8)[:, None])

    def ints(a):
        return torch.as_tensor(a.astype(np.int64))

    return Splits(
        kind,
        levels(images[:-n_valid]),
        levels(images[-n_valid:]),
        levels(test_images),
        ints(labels[:-n_valid]),
        ints(labels[-n_valid:]),
        ints(test_labels),
        label_names=IDX_CLASSES[kind],
    )


def mnist(arg: str, limits: Limits) -> Splits:
    """Official MNIST IDX files (gzipped files checked against the official MD5)."""
    return _idx_dataset("mnist", arg, limits)


def fashion_mnist(arg: str, limits: Limits) -> Splits:
    """Fashion-MNIST IDX files (gzipped files checked against the official MD5)."""
    return _idx_dataset("fashion-mnist", arg, limits)


def kmnist(arg: str, limits: Limits) -> Splits:
    """Kuzushiji-MNIST IDX files (Clanuwat et al. 2018; gzipped files checked against the MD5)."""
    return _idx_dataset("kmnist", arg, limits)


# ------------------------------------------------------------------------------------ CIFAR-10

CIFAR_SHAPE = (3, 32, 32)
CIFAR_RECORD = 1 + 3 * 32 * 32
"""One record of the binary version: a label byte, then 1024 red, 1024 green, 1024 blue bytes, each
plane row-major (Krizhevsky 2009, the dataset page's "binary version")."""
CIFAR_DIR = "cifar-10-batches-bin"
CIFAR_TRAIN = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR_TEST = "test_batch.bin"
CIFAR_ARCHIVE = "cifar-10-binary.tar.gz"
# TypeError: tarfile's gzip reader on a header cut short (ord() of an empty read, Python 3.11).
TAR_ERRORS = (tarfile.TarError, EOFError, OSError, zlib.error, ValueError, TypeError)


def cifar10(arg: str, limits: Limits) -> Splits:
    """CIFAR-10, binary version: the .tar.gz as downloaded (read without unpacking it) or its
    unpacked cifar-10-batches-bin/ directory. Train 50k (45k + 5k validation), test 10k."""
    root = existing_dir(arg)
    archive, unpacked = root / CIFAR_ARCHIVE, root / CIFAR_DIR
    if archive.exists():
        batches = _cifar_tar(regular_file(archive), limits)
    elif unpacked.is_dir():
        batches = _cifar_dir(unpacked, limits)
    else:
        raise UserError(f"{root}: neither {CIFAR_ARCHIVE} nor {CIFAR_DIR}/ found")
    train = [batches[name] for name in CIFAR_TRAIN]
    x_train, y_train = np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train])
    x_test, y_test = batches[CIFAR_TEST]
    return carve_valid("cifar10", x_train, y_train, x_test, y_test, CIFAR10_CLASSES)


def _cifar_records(data: bytes | np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, CIFAR_RECORD)
    labels = _labels(records[:, 0], len(CIFAR10_CLASSES), where)
    return records[:, 1:].reshape(-1, *CIFAR_SHAPE), labels


def _cifar_size(size: int, where: str, total: int, limits: Limits) -> int:
    """Check one batch's byte count (whole records, within the limits with those before it)."""
    if size == 0 or size % CIFAR_RECORD:
        raise UserError(f"{where}: {size:,} bytes is not a whole number of {CIFAR_RECORD}-byte records")
    check_elements(where, (total + size,), limits, declared_by="CIFAR-10 batches so far hold")
    return total + size


def _cifar_tar(path: Path, limits: Limits) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The six batches from the .tar.gz, streamed in one pass; each member's size (from its tar
    header) is checked against the limits before its bytes are read."""
    wanted = {f"{CIFAR_DIR}/{name}": name for name in (*CIFAR_TRAIN, CIFAR_TEST)}
    batches: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    total = unpacked = 0
    try:
        with tarfile.open(path, "r|gz") as tar:
            for member in tar:
                unpacked += member.size
                if unpacked > limits.max_decompressed_bytes:
                    what = f"unpacks to more than {unpacked:,} bytes"
                    raise limit_error(str(path), what, "max_decompressed_bytes", limits)
                name = wanted.get(member.name)
                if name is None:
                    continue
                where = f"{path}: {member.name}"
                if not member.isfile():
                    raise UserError(f"{where}: not a regular file in the archive")
                if name in batches:
                    raise UserError(f"{where}: appears more than once")
                total = _cifar_size(member.size, where, total, limits)
                f = tar.extractfile(member)
                data = f.read(member.size) if f is not None else b""
                if len(data) != member.size:
                    raise UserError(f"{where}: truncated ({len(data):,} of {member.size:,} bytes)")
                batches[name] = _cifar_records(data, where)
    except TAR_ERRORS as err:
        raise UserError(f"{path}: corrupt or truncated .tar.gz ({_first_line(err)})") from None
    missing = [name for name in wanted.values() if name not in batches]
    if missing:
        raise UserError(f"{path}: the archive lacks {CIFAR_DIR}/{', '.join(missing)}")
    return batches


def _cifar_dir(root: Path, limits: Limits) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    batches, total = {}, 0
    for name in (*CIFAR_TRAIN, CIFAR_TEST):
        path = regular_file(root / name)
        total = _cifar_size(path.stat().st_size, str(path), total, limits)
        batches[name] = _cifar_records(np.fromfile(path, dtype=np.uint8), str(path))
    return batches


# -------------------------------------------------------------------------------- .mat datasets

REAL = Variable(NUMERIC, 2)


def svhn(arg: str, limits: Limits) -> Splits:
    """SVHN, cropped digits (Netzer et al. 2011): train_32x32.mat and test_32x32.mat, X of shape
    (32, 32, 3, N) uint8 and y (N, 1) with 10 standing for the digit 0. The "extra" set is not
    used. Train 73,257 (a tenth held out for validation), test 26,032."""
    root = existing_dir(arg)
    wanted = {"X": Variable(frozenset({"uint8"}), 4), "y": REAL}
    parts = []
    for name in ("train_32x32.mat", "test_32x32.mat"):
        path = root / name
        arrays = read_mat(path, wanted, limits)
        x, y = arrays["X"], arrays["y"]
        if x.shape[:3] != (32, 32, 3):
            raise UserError(f"{path}: variable 'X' has shape {x.shape}, expected (32, 32, 3, N)")
        if y.size != x.shape[3]:
            raise UserError(f"{path}: {y.size} labels in 'y' for {x.shape[3]} images in 'X'")
        stored = _labels(y, 10, f"{path}: variable 'y'", offset=1) + 1  # 1..10
        parts.append((x.transpose(3, 2, 0, 1), stored % 10))  # (N, C, H, W); label 10 is the digit 0
    (x_train, y_train), (x_test, y_test) = parts
    return carve_valid("svhn", x_train, y_train, x_test, y_test, MNIST_CLASSES)


def _column_images(data: np.ndarray, height: int, width: int, where: str) -> np.ndarray:
    """(N, H*W) rows that hold each image column by column (MATLAB's order) -> (N, 1, H, W)."""
    if data.ndim != 2 or data.shape[1] != height * width:
        raise UserError(f"{where}: expected rows of {height * width} pixels, got shape {data.shape}")
    return data.reshape(-1, width, height).transpose(0, 2, 1)[:, None]


def _unit_interval(x: np.ndarray, where: str, binary: bool = False) -> np.ndarray:
    """x as float32, refused unless its values are in [0, 1] (or all 0 or 1 with binary)."""
    if x.dtype.kind not in "biuf":
        raise UserError(f"{where}: values of dtype {x.dtype} are not numbers")
    ok = np.isin(x, (0, 1)) if binary else (np.isfinite(x) & (x >= 0) & (x <= 1))
    if not ok.all():
        raise UserError(f"{where}: values are not all {'0 or 1' if binary else 'in [0, 1]'}")
    return x.astype(np.float32)


def omniglot(arg: str, limits: Limits) -> Splits:
    """Omniglot at 28x28 as Burda et al. (2016) prepared it for the IWAE (chardata.mat): grey
    levels in [0, 1] (24,345 train, 8,070 test images), labelled by alphabet (one-hot `target`
    of shape (50, N)). A tenth of train is held out for validation, stratified by alphabet."""
    path = existing_dir(arg) / "chardata.mat"
    arrays = read_mat(path, {name: REAL for name in ("data", "target", "testdata", "testtarget")}, limits)
    parts = []
    for data, target in (("data", "target"), ("testdata", "testtarget")):
        x = _column_images(arrays[data].T, 28, 28, f"{path}: variable {data!r}")
        onehot = arrays[target]
        if onehot.shape[1] != len(x):
            raise UserError(f"{path}: variable {target!r} has {onehot.shape[1]} columns for {len(x)} images")
        if not np.isfinite(onehot).all():
            raise UserError(f"{path}: variable {target!r} holds NaN or infinite values")
        # the alphabet of each image: its column's largest entry (the column is one-hot)
        parts.append((_unit_interval(x, f"{path}: variable {data!r}"), onehot.argmax(axis=0)))
    (x_train, y_train), (x_test, y_test) = parts
    return carve_valid("omniglot", x_train, y_train, x_test, y_test)


CALTECH_FILE = "caltech101_silhouettes_28_split1.mat"


def caltech101_silhouettes(arg: str, limits: Limits) -> Splits:
    """Caltech 101 Silhouettes at 28x28, split 1 (Marlin et al. 2010): its own train (4,100),
    validation (2,264) and test (2,307) sets of binary images, labels 1..101 with `classnames`."""
    path = existing_dir(arg) / CALTECH_FILE
    wanted = {f"{s}_{kind}": REAL for s in ("train", "val", "test") for kind in ("data", "labels")}
    arrays = read_mat(path, {**wanted, "classnames": Variable(frozenset({"cell"}), 2)}, limits)
    names = tuple(_text(name, f"{path}: variable 'classnames'") for name in arrays["classnames"].reshape(-1))
    parts = []
    for split in ("train", "val", "test"):
        where = f"{path}: variable '{split}_data'"
        x = _unit_interval(_column_images(arrays[f"{split}_data"], 28, 28, where), where, binary=True)
        y = arrays[f"{split}_labels"]
        if y.size != len(x):
            raise UserError(f"{path}: {y.size} labels in '{split}_labels' for {len(x)} images")
        parts.append((x, _labels(y, len(names), f"{path}: variable '{split}_labels'", offset=1)))
    train, valid, test = parts
    return _splits("caltech101-silhouettes", train, valid, test, names)


def _text(value: object, where: str) -> str:
    """A MATLAB char array read by scipy (a str in a 1-element array) as a str."""
    text = np.asarray(value).reshape(-1)
    if text.size != 1 or not isinstance(text[0], str):
        raise UserError(f"{where}: expected a cell of strings")
    return str(text[0])


FREY_HEIGHT, FREY_WIDTH = 28, 20


def frey_faces(arg: str, limits: Limits) -> Splits:
    """Frey Faces (frey_rawface.mat): 1,965 grey 28x20 images of Brendan Frey's face, variable
    `ff` of shape (560, N) uint8 with each image row by row; no labels or splits, so split 80/10/10
    with the seeded split of any array."""
    path = existing_dir(arg) / "frey_rawface.mat"
    ff = read_mat(path, {"ff": Variable(frozenset({"uint8"}), 2)}, limits)["ff"]
    if ff.shape[0] != FREY_HEIGHT * FREY_WIDTH:
        raise UserError(
            f"{path}: variable 'ff' has shape {ff.shape}, expected ({FREY_HEIGHT * FREY_WIDTH}, N)"
        )
    return split_arrays("frey-faces", ff.T.reshape(-1, 1, FREY_HEIGHT, FREY_WIDTH), None)


# ----------------------------------------------------------------------------------- CelebA

CELEBA_CROP, CELEBA_SIZE = 140, 64
"""The aligned 178x218 photographs are cropped to their central 140x140 pixels and resized to
64x64 (Lanczos), the preprocessing of Tolstikhin et al. (2018, WAE) and many VAE papers since."""
CELEBA_PARTITION = "list_eval_partition.txt"
CELEBA_SPLITS = {"0": 0, "1": 1, "2": 2}  # train, valid, test (the dataset's own split)


def celeba(arg: str, limits: Limits) -> Splits:
    """CelebA from a directory the user downloaded (its host serves the files through a page no
    script can fetch): the aligned JPEGs in DIR/img_align_celeba/ (or DIR itself) and the official
    split in DIR/list_eval_partition.txt ("000001.jpg 0" per line; 0 train, 1 valid, 2 test).
    Every image is center-cropped and resized to 64x64 RGB, uint8 (N, 3, 64, 64); no labels."""
    root = existing_dir(arg)
    images = root / "img_align_celeba" if (root / "img_align_celeba").is_dir() else root
    partition = text_file(root / CELEBA_PARTITION, limits)
    entries = []
    for number, line in enumerate(partition.read_text(errors="replace").splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        # a plain file name inside the image folder: no path, no hidden file, nothing unprintable
        plain = len(fields) == 2 and fields[0].isprintable() and "/" not in fields[0]
        if not plain or fields[0].startswith(".") or fields[1] not in CELEBA_SPLITS:
            raise UserError(f"{partition}: line {number}: expected 'IMAGE.jpg 0|1|2', got {line[:60]!r}")
        entries.append((fields[0], CELEBA_SPLITS[fields[1]]))
    if len(entries) > limits.max_images:
        raise limit_error(str(partition), f"lists {len(entries):,} images", "max_images", limits)
    check_elements(str(partition), (len(entries), 3, CELEBA_SIZE, CELEBA_SIZE), limits, declared_by="it")
    x = np.empty((len(entries), 3, CELEBA_SIZE, CELEBA_SIZE), dtype=np.uint8)
    split = np.array([s for _, s in entries], dtype=np.int64)
    with pillow_limits(limits):
        for i, (name, _) in enumerate(entries):
            x[i] = _celeba_image(regular_file(images / name), limits)
    parts = [(x[split == s], None) for s in (0, 1, 2)]
    for s, (part, _) in zip(("train", "valid", "test"), parts, strict=True):
        if len(part) == 0:
            raise UserError(f"{partition}: no image is in the {s} split")
    train, valid, test = parts
    return _splits("celeba", train, valid, test, None)


def _celeba_image(path: Path, limits: Limits) -> np.ndarray:
    """One photograph, center-cropped to CELEBA_CROP and resized to CELEBA_SIZE: (3, 64, 64) uint8."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            width, height = image.size
            if min(width, height) < CELEBA_CROP:
                raise UserError(f"{path}: {width}x{height} is smaller than the {CELEBA_CROP}-pixel crop")
            left, top = (width - CELEBA_CROP) // 2, (height - CELEBA_CROP) // 2
            box = (left, top, left + CELEBA_CROP, top + CELEBA_CROP)
            rgb = image.convert("RGB").resize((CELEBA_SIZE, CELEBA_SIZE), Image.Resampling.LANCZOS, box=box)
            return np.asarray(rgb).transpose(2, 0, 1)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise limit_error(str(path), "image too large", "max_image_pixels", limits) from None
    except PILLOW_ERRORS as err:
        raise UserError(f"{path}: not a readable image ({_first_line(err)})") from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text if len(text) <= 160 else text[:157] + "..."
