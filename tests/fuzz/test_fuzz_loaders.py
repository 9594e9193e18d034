"""Fuzz every data loader with mutations of valid files: byte flips, truncations, insertions,
giant declared sizes written over header fields, and rewritten headers (npy, IDX).

A mutated file either loads into splits that pass the invariants every source promises (and,
for npy and IDX, hold exactly what an independent reading of the same bytes gives) or is refused
with one clean line. See conftest.py for the outcome classes.
"""

from __future__ import annotations

import gzip
import io
import math
import shutil
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from vaelab.config import DataConfig
from vaelab.data import load_data
from vaelab.data.idx import read_idx

FUZZ = settings.get_profile("vaelab-fuzz")
IDX_STEMS = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
SPLITS = ("train", "valid", "test")


# ------------------------------------------------------------------------------------ seeds


def _npy(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _npz(compressed: bool, **arrays) -> bytes:
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, **arrays)
    return buffer.getvalue()


def _idx(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def _image(array: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, fmt)
    return buffer.getvalue()


rng = np.random.default_rng(0)
SEEDS = {
    "npy": _npy(rng.random((40, 4, 4)).astype(np.float32)),
    "npz": _npz(False, x=(rng.random((40, 6)) < 0.5).astype(np.uint8), y=np.repeat(np.arange(4), 10)),
    "npz-compressed": _npz(
        True,
        train=rng.random((20, 3)),
        valid=rng.random((5, 3)),
        test=rng.random((5, 3)),
        train_labels=rng.integers(0, 3, 20),
        test_labels=rng.integers(0, 3, 5),
    ),
    "idx": _idx(rng.integers(0, 256, (12, 4, 4))),
    "csv": ("a,b,c\n" + "\n".join(f"{i},{i / 7:.4f},{-i}" for i in range(30)) + "\n").encode(),
    "png": _image(rng.integers(0, 256, (6, 6), dtype=np.uint8), "PNG"),
    "bmp": _image(rng.integers(0, 256, (6, 6), dtype=np.uint8), "BMP"),
    "gif": _image(rng.integers(0, 256, (6, 6), dtype=np.uint8), "GIF"),
    "amat": "\n".join(" ".join(str(int(b)) for b in row) for row in rng.random((6, 784)) < 0.2).encode(),
    "binarized-npz": _npz(True, x=(rng.random((6, 784)) < 0.2).astype(np.uint8)),
}


# -------------------------------------------------------------------------------- mutations


@st.composite
def mutated(draw, data: bytes, header: int = 128) -> bytes:
    """`data` after one to four edits, half of them within its first `header` bytes."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        if not out:
            break
        near_header = draw(st.booleans())
        at = draw(st.integers(0, min(len(out), header) - 1 if near_header else len(out) - 1))
        edit = draw(st.sampled_from(["flip", "byte", "truncate", "insert", "giant", "delete"]))
        if edit == "flip":
            out[at] ^= 1 << draw(st.integers(0, 7))
        elif edit == "byte":
            out[at] = draw(st.integers(0, 255))
        elif edit == "truncate":
            del out[at:]
        elif edit == "insert":
            out[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif edit == "delete":
            del out[at : at + draw(st.integers(1, 16))]
        else:  # a size field overwritten with a huge value, in either byte order
            value = draw(st.sampled_from([2**31 - 1, 2**32 - 1, 10**9, 2**16, 0]))
            out[at : at + 4] = struct.pack(draw(st.sampled_from(["<I", ">I"])), value)
    return bytes(out)


SHAPES = st.lists(
    st.one_of(st.integers(0, 50), st.sampled_from([-1, 10**5, 2**31, 2**63, 10**30])), min_size=0, max_size=6
).map(tuple)
DESCRS = st.sampled_from(
    [
        "<f4",
        "<f8",
        ">i2",
        "|u1",
        "|b1",
        "<c8",
        "<c16",
        "|O",
        "<U3",
        "|S2",
        "|V8",
        "<M8[D]",
        "<m8",
        "<f2",
        "[('a', '<f4')]",
        "'bogus'",
        "<f4'",
    ]
)


def _npy_with_header(shape: tuple, descr: str, fortran: bool, body: bytes, version: int) -> bytes:
    literal = descr if descr.startswith(("[", "'")) else repr(descr)  # a list of fields, or broken quotes
    text = f"{{'descr': {literal}, 'fortran_order': {fortran}, 'shape': {shape!r}, }}"
    text = text.ljust(64 * math.ceil((len(text) + 12) / 64) - 11) + "\n"
    if version == 1:
        return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode("latin1") + body
    return b"\x93NUMPY\x02\x00" + struct.pack("<I", len(text)) + text.encode("latin1") + body


# -------------------------------------------------------------------------------- oracles


def splits_invariants(splits) -> str | None:
    """What every source promises of the splits it returns; a problem, or None."""
    shapes = set()
    for split in SPLITS:
        x, y = splits.split(split), splits.labels(split)
        if str(x.dtype) not in ("torch.float32", "torch.uint8"):
            return f"{split} has dtype {x.dtype}"
        if x.dtype != splits.train.dtype:
            return f"{split} is {x.dtype}, train {splits.train.dtype}"
        if x.shape[0] == 0 or not splits.inputs(split).isfinite().all():
            return f"{split} is empty or not finite"
        shapes.add(tuple(x.shape[1:]))
        if y is not None and (str(y.dtype) != "torch.int64" or y.shape != (x.shape[0],) or (y < 0).any()):
            return f"{split} labels {tuple(y.shape)} {y.dtype} do not label {x.shape[0]} examples"
    if len(shapes) != 1 or 0 in next(iter(shapes)):
        return f"example shapes {shapes}"
    return None


def _loads(spec: str):
    return lambda: load_data(DataConfig(source=spec))


def _same_as_numpy(data: bytes):
    """An accepted .npy must hold what numpy itself reads from the same bytes."""

    def check(splits) -> str | None:
        if problem := splits_invariants(splits):
            return problem
        try:
            reference = np.load(io.BytesIO(data), allow_pickle=False)
        except Exception as err:  # numpy refuses what vaelab accepted
            return f"numpy refuses it ({type(err).__name__}: {err})"
        total = sum(len(splits.split(s)) for s in SPLITS)
        if total != len(reference) or reference.dtype.kind not in "biuf":
            return f"{total} examples of numpy's {reference.shape} {reference.dtype}"
        return None

    return check


def _idx_reference(data: bytes) -> np.ndarray | None:
    """An independent reading of IDX bytes: the array, or None when the bytes are not valid IDX."""
    if len(data) < 4 or data[:3] != b"\x00\x00\x08" or data[3] == 0 or len(data) < 4 + 4 * data[3]:
        return None
    shape = struct.unpack(f">{data[3]}I", data[4 : 4 + 4 * data[3]])
    if len(data) != 4 + 4 * data[3] + math.prod(shape) or math.prod(shape) == 0:
        return None
    return np.frombuffer(data, np.uint8, offset=4 + 4 * data[3]).reshape(shape)


# ----------------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz-loaders")


@FUZZ
@given(data=mutated(SEEDS["npy"]))
def test_fuzz_npy(fuzz, work, data):
    (work / "x.npy").write_bytes(data)
    fuzz.check("npy", _loads(f"npy:{work / 'x.npy'}"), accepted=_same_as_numpy(data))


@FUZZ
@given(
    shape=SHAPES,
    descr=DESCRS,
    fortran=st.booleans(),
    version=st.sampled_from([1, 2]),
    body=st.sampled_from([b"", bytes(64), bytes(6400), bytes(1 << 16)]),
)
def test_fuzz_npy_headers(fuzz, work, shape, descr, fortran, version, body):
    """Rewritten headers: declared shapes up to 10^30 elements, every dtype kind, short bodies."""
    data = _npy_with_header(shape, descr, fortran, body, version)
    (work / "h.npy").write_bytes(data)
    fuzz.check("npy header", _loads(f"npy:{work / 'h.npy'}"), accepted=_same_as_numpy(data))


@FUZZ
@given(which=st.sampled_from(["npz", "npz-compressed"]), data=st.data())
def test_fuzz_npz(fuzz, work, which, data):
    mutant = data.draw(mutated(SEEDS[which], header=len(SEEDS[which])))
    (work / "x.npz").write_bytes(mutant)
    fuzz.check(which, _loads(f"npz:{work / 'x.npz'}"), accepted=splits_invariants)


@FUZZ
@given(data=mutated(SEEDS["idx"], header=32), compress=st.booleans())
def test_fuzz_idx(fuzz, work, data, compress):
    """One IDX file, raw or gzipped (the gzip stream intact, its content mutated)."""
    path = work / ("x-idx3-ubyte.gz" if compress else "x-idx3-ubyte")
    if compress:
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
    reference = _idx_reference(data)

    def same(array) -> str | None:
        if reference is None or not np.array_equal(array, reference):
            return f"read {array.shape}, an independent reading gives {getattr(reference, 'shape', None)}"
        return None

    fuzz.check("idx" + (" gz" if compress else ""), lambda: read_idx(path), accepted=same)


@FUZZ
@given(gz=mutated(gzip.compress(SEEDS["idx"], mtime=0), header=32))
def test_fuzz_gzip_stream(fuzz, work, gz):
    """The gzip stream itself damaged."""
    path = work / "y-idx3-ubyte.gz"
    path.write_bytes(gz)
    fuzz.check("idx gz stream", lambda: read_idx(path), accepted=lambda a: None if a.size else "empty array")


@pytest.fixture(scope="module")
def idx_dir(work):
    folder = work / "idx"
    folder.mkdir()
    arrays = {
        IDX_STEMS[0]: rng.integers(0, 256, (12, 4, 4)),
        IDX_STEMS[1]: rng.integers(0, 10, 12),
        IDX_STEMS[2]: rng.integers(0, 256, (6, 4, 4)),
        IDX_STEMS[3]: rng.integers(0, 10, 6),
    }
    seeds = {stem: _idx(a) for stem, a in arrays.items()}
    return folder, seeds


@FUZZ
@given(stem=st.sampled_from(IDX_STEMS), data=st.data())
def test_fuzz_mnist_source(fuzz, idx_dir, stem, data):
    """The four IDX files of an `mnist:DIR` source, one of them mutated."""
    folder, seeds = idx_dir
    for name, seed in seeds.items():
        (folder / name).write_bytes(seed)
    (folder / stem).write_bytes(data.draw(mutated(seeds[stem], header=32)))

    def in_unit_interval(splits) -> str | None:
        problem = splits_invariants(splits)
        if problem is None and not all(
            0 <= float(splits.inputs(s).min()) <= float(splits.inputs(s).max()) <= 1 for s in SPLITS
        ):
            problem = "values outside [0, 1]"
        return problem

    fuzz.check("mnist idx dir", _loads(f"mnist:{folder}"), accepted=in_unit_interval)


CSV_ALPHABET = st.sampled_from(
    list("0123456789.,-+eE \t\n\r\"'abcnNaAiIfF") + ["\ufeff", "nan", "inf", ",,", "1e39"]
)


@FUZZ
@given(
    data=st.one_of(
        mutated(SEEDS["csv"], header=40),
        st.lists(CSV_ALPHABET, max_size=200).map(lambda cells: "".join(cells).encode()),
    )
)
def test_fuzz_csv(fuzz, work, data):
    (work / "t.csv").write_bytes(data)
    fuzz.check("csv", _loads(f"csv:{work / 't.csv'}"), accepted=splits_invariants)


@pytest.fixture(scope="module")
def image_dir(work):
    folder = work / "img"
    for label in ("a", "b"):
        (folder / label).mkdir(parents=True)
    return folder


@FUZZ
@given(fmt=st.sampled_from(["png", "bmp", "gif"]), data=st.data())
def test_fuzz_image_folder(fuzz, image_dir, fmt, data):
    """A folder of six images in two labelled sub-folders, one of them mutated."""
    for old in image_dir.rglob("*.*"):
        old.unlink()
    for i in range(6):
        (image_dir / "ab"[i % 2] / f"{i}.{fmt}").write_bytes(SEEDS[fmt])
    (image_dir / "a" / f"0.{fmt}").write_bytes(data.draw(mutated(SEEDS[fmt], header=64)))
    fuzz.check(f"folder {fmt}", _loads(f"folder:{image_dir}"), accepted=splits_invariants)


@pytest.fixture(scope="module")
def binarized_dir(work):
    return work / "binarized"


@FUZZ
@given(form=st.sampled_from(["amat", "binarized-npz"]), split=st.sampled_from(SPLITS), data=st.data())
def test_fuzz_binarized_mnist(fuzz, binarized_dir, form, split, data):
    """The three split files of `binarized-mnist:DIR` (amat or npz), one of them mutated."""
    shutil.rmtree(binarized_dir, ignore_errors=True)
    binarized_dir.mkdir()
    name = "binarized_mnist_{}.amat" if form == "amat" else "{}.npz"
    for s in SPLITS:
        (binarized_dir / name.format(s)).write_bytes(SEEDS[form])
    seed = SEEDS[form]
    (binarized_dir / name.format(split)).write_bytes(
        data.draw(mutated(seed, header=len(seed) if form != "amat" else 64))
    )

    def binary(splits) -> str | None:
        problem = splits_invariants(splits)
        if problem is None and not all(set(splits.split(s).unique().tolist()) <= {0.0, 1.0} for s in SPLITS):
            problem = "values other than 0 and 1"
        return problem

    fuzz.check(f"binarized-mnist {form}", _loads(f"binarized-mnist:{binarized_dir}"), accepted=binary)
