"""Fuzz the readers of the standard datasets (`vaelab.data.datasets`) with mutated files in their
published formats: MATLAB .mat files (SVHN, Omniglot, Caltech 101 Silhouettes, Frey Faces; plain
and compressed), the CIFAR-10 binary .tar.gz (mutated as bytes, and as a tar before gzip), and
CelebA's partition list. Each mutated file loads into splits that keep every promise of a source
(`accepted`) or is refused with one clean line. See conftest.py for the outcome classes.
"""

from __future__ import annotations

import gzip
import io
import tarfile

import numpy as np
import scipy.io
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from test_fuzz_loaders import mutated  # the one byte-mutation strategy of the fuzz suite

from vaelab.data import datasets
from vaelab.limits import Limits

FUZZ = settings.get_profile("vaelab-fuzz")
SPLITS = ("train", "valid", "test")
rng = np.random.default_rng(0)


# ------------------------------------------------------------------------------------ seeds


def _mat(compress: bool, **variables) -> bytes:
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, variables, do_compression=compress)
    return buffer.getvalue()


def _tar(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _cifar_batch(n: int) -> bytes:
    records = rng.integers(0, 256, (n, 3073), dtype=np.uint8)
    records[:, 0] %= 10
    return records.tobytes()


CIFAR_TAR = _tar(
    {
        **{f"cifar-10-batches-bin/data_batch_{i}.bin": _cifar_batch(2) for i in range(1, 6)},
        "cifar-10-batches-bin/test_batch.bin": _cifar_batch(2),
    }
)


def _mats(compress: bool) -> dict[str, tuple[str, dict[str, bytes]]]:
    """Seeds by kind: (reader name, {file name: bytes})."""
    images = rng.random((784, 12))
    svhn = _mat(
        compress,
        X=rng.integers(0, 256, (32, 32, 3, 12), dtype=np.uint8),
        y=np.arange(1, 13).reshape(-1, 1) % 10 + 1,
    )
    caltech = {f"{s}_data": (rng.random((4, 784)) < 0.5).astype(float) for s in ("train", "val", "test")}
    caltech |= {f"{s}_labels": np.array([[1], [2], [1], [2]]) for s in ("train", "val", "test")}
    return {
        "svhn": ("svhn", {"train_32x32.mat": svhn, "test_32x32.mat": svhn}),
        "omniglot": (
            "omniglot",
            {
                "chardata.mat": _mat(
                    compress,
                    data=images,
                    target=np.eye(50)[:, np.arange(12) % 3],
                    testdata=images[:, :4],
                    testtarget=np.eye(50)[:, np.arange(4) % 3],
                )
            },
        ),
        "caltech": (
            "caltech101_silhouettes",
            {
                datasets.CALTECH_FILE: _mat(
                    compress, **caltech, classnames=np.array([["a", "b"]], dtype=object)
                )
            },
        ),
        "frey": (
            "frey_faces",
            {"frey_rawface.mat": _mat(compress, ff=rng.integers(0, 256, (560, 10), dtype=np.uint8))},
        ),
    }


MAT_SEEDS = {
    f"{kind} mat{' compressed' if compress else ''}": seed
    for compress in (False, True)
    for kind, seed in _mats(compress).items()
}


# -------------------------------------------------------------------------------- mutations


# -------------------------------------------------------------------------------- oracle


def accepted(splits) -> str | None:
    """What every source promises of its splits (and names for every label); a problem, or None."""
    shapes = set()
    for split in SPLITS:
        x, y = splits.split(split), splits.labels(split)
        if str(x.dtype) not in ("torch.float32", "torch.uint8") or x.dtype != splits.train.dtype:
            return f"{split} has dtype {x.dtype}"
        if x.shape[0] == 0 or (x.is_floating_point() and not x.isfinite().all()):
            return f"{split} is empty or not finite"
        shapes.add(tuple(x.shape[1:]))
        if y is not None:
            if str(y.dtype) != "torch.int64" or y.shape != (x.shape[0],) or (y < 0).any():
                return f"{split} labels {tuple(y.shape)} {y.dtype} do not label {x.shape[0]} examples"
            if splits.label_names is not None and (y >= len(splits.label_names)).any():
                return f"{split} has a label beyond its {len(splits.label_names)} names"
    if len(shapes) != 1 or 0 in next(iter(shapes)):
        return f"example shapes {shapes}"
    return None


def _write(root, files: dict[str, bytes]):
    root.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (root / name).write_bytes(data)
    return root


# -------------------------------------------------------------------------------- tests


@settings(FUZZ)
@given(kind=st.sampled_from(sorted(MAT_SEEDS)), data=st.data())
def test_fuzz_mat_datasets(fuzz, tmp_path_factory, kind, data):
    reader, files = MAT_SEEDS[kind]
    target = data.draw(st.sampled_from(sorted(files)))
    files = {**files, target: data.draw(mutated(files[target], header=256))}
    root = _write(tmp_path_factory.mktemp("mat"), files)
    fuzz.check(kind, lambda: getattr(datasets, reader)(str(root), Limits()), accepted=accepted)


@settings(FUZZ)
@given(as_tar=st.booleans(), data=st.data())
def test_fuzz_cifar10_archive(fuzz, tmp_path_factory, as_tar, data):
    """Mutations of the gzipped bytes mostly test gzip's checks; those of the tar before gzip
    reach the tar headers and the record sizes."""
    if as_tar:
        archive = gzip.compress(data.draw(mutated(CIFAR_TAR, header=1024)), mtime=0)
    else:
        archive = data.draw(mutated(gzip.compress(CIFAR_TAR, mtime=0), header=64))
    root = _write(tmp_path_factory.mktemp("cifar"), {datasets.CIFAR_ARCHIVE: archive})
    kind = "cifar10 tar" if as_tar else "cifar10 tar.gz"
    fuzz.check(kind, lambda: datasets.cifar10(str(root), Limits()), accepted=accepted)


def _celeba_folder(root) -> bytes:
    images = root / "img_align_celeba"
    images.mkdir(parents=True)
    for i in range(1, 4):
        Image.new("RGB", (150, 150), (60 * i, 0, 0)).save(images / f"{i:06d}.jpg")
    return b"000001.jpg 0\n000002.jpg 1\n000003.jpg 2\n"


@settings(FUZZ)
@given(data=st.data())
def test_fuzz_celeba_partition(fuzz, tmp_path_factory, data):
    root = tmp_path_factory.mktemp("celeba")
    text = data.draw(mutated(_celeba_folder(root), header=48))
    (root / datasets.CELEBA_PARTITION).write_bytes(text)
    fuzz.check("celeba partition", lambda: datasets.celeba(str(root), Limits()), accepted=accepted)
