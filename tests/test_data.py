"""Data sources and every bad input of issue 16 (reliability): each a UserError naming the file."""

from __future__ import annotations

import gzip
import io
import os
import shutil
import struct
import warnings
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, PngImagePlugin

from vaelab.config import DataConfig, ModelConfig
from vaelab.data import SOURCES, check_fits_likelihood, load_data
from vaelab.data.arrays import read_npy, read_npz
from vaelab.data.idx import OFFICIAL_MD5, read_idx
from vaelab.errors import UserError
from vaelab.limits import LimitError, Limits, check_training_memory, estimate_training_bytes
from vaelab.models import build_model
from vaelab.nets import count_parameters


def load(spec, binarize="none"):
    return load_data(DataConfig(source=spec, binarize=binarize))


def test_mnist5k_is_split_stratified_and_scaled():
    s = load("mnist5k")
    assert (len(s.train), len(s.valid), len(s.test)) == (4000, 500, 500)
    assert s.x_shape == (1, 28, 28)
    assert s.train.dtype == torch.uint8 and int(s.train.max()) == 255  # stored as 8-bit levels
    x = s.inputs("train")  # scaled per batch onto the grid k/255 of [0, 1]
    assert x.dtype == torch.float32 and float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert torch.equal(x * 255, s.train.float())
    assert torch.bincount(s.test_labels).tolist() == [50] * 10  # not a class-sorted prefix
    assert not set(map(tuple, s.test[:50].flatten(1).tolist())) & set(
        map(tuple, s.train[:200].flatten(1).tolist())
    )


def test_digits_and_static_binarization():
    s = load("digits", "static")
    assert s.x_shape == (1, 8, 8)
    assert set(torch.unique(s.train).tolist()) <= {0.0, 1.0}
    again = load("digits", "static")
    assert torch.equal(s.train, again.train)  # one fixed draw


def test_dynamic_binarization_keeps_grey_training_data_and_binary_evaluation_data():
    s = load("digits", "dynamic")
    assert len(torch.unique(s.train)) > 2
    assert set(torch.unique(s.test).tolist()) <= {0.0, 1.0}


def test_binarized_mnist_from_shared_data(shared_data):
    s = load(f"binarized-mnist:{shared_data / 'binarized_mnist'}")
    assert (len(s.train), len(s.valid), len(s.test)) == (50000, 10000, 10000)
    assert abs(float(s.test.mean()) - 0.1325) < 5e-4  # the README's mean pixel
    assert s.test_labels[0] == 0 and s.test_labels[-1] == 9


def test_column_major_files_load_row_major(tmp_path):
    """The shared npz stores x column-major; minibatch gathers need rows contiguous in memory."""
    rng = np.random.default_rng(0)
    for split in ("train", "valid", "test"):
        x = np.asfortranarray((rng.random((6, 784)) < 0.2).astype(np.uint8))
        np.savez(tmp_path / f"{split}.npz", x=x)
    s = load(f"binarized-mnist:{tmp_path}")
    assert all(s.split(split).is_contiguous() for split in ("train", "valid", "test"))
    again = np.load(tmp_path / "train.npz")["x"]
    assert np.array_equal(s.train.reshape(6, 784).numpy(), again)  # the same pixels, row-major


def test_binarized_mnist_amat_files(tmp_path):
    rng = np.random.default_rng(0)
    for split in ("train", "valid", "test"):
        np.savetxt(
            tmp_path / f"binarized_mnist_{split}.amat", (rng.random((6, 784)) < 0.2).astype(int), fmt="%d"
        )
    s = load(f"binarized-mnist:{tmp_path}")
    assert s.train.shape == (6, 1, 28, 28)


def test_idx_reader_reads_the_official_test_set(shared_data):
    path = shared_data / "mnist_test" / "t10k-images-idx3-ubyte.gz"
    images = read_idx(path, OFFICIAL_MD5["mnist"][path.name])
    labels = read_idx(shared_data / "mnist_test" / "t10k-labels-idx1-ubyte.gz")
    assert images.shape == (10000, 28, 28) and labels.shape == (10000,)
    assert labels[:5].tolist() == [7, 2, 1, 0, 4]  # the famous first digits


def _write_idx(path, array, compress=True):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def test_mnist_idx_source_with_uncompressed_files(tmp_path):
    rng = np.random.default_rng(0)
    _write_idx(tmp_path / "train-images-idx3-ubyte", rng.integers(0, 256, (60, 28, 28)), compress=False)
    _write_idx(tmp_path / "train-labels-idx1-ubyte", rng.integers(0, 10, 60), compress=False)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", rng.integers(0, 256, (20, 28, 28)), compress=False)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", rng.integers(0, 10, 20), compress=False)
    s = load(f"mnist:{tmp_path}")
    assert (len(s.train), len(s.valid), len(s.test)) == (50, 10, 20)
    assert s.train.dtype == torch.uint8 and float(s.inputs("train").max()) <= 1.0


def test_gzipped_idx_with_the_wrong_checksum_is_refused(tmp_path):
    rng = np.random.default_rng(0)
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (6, 28, 28)))
    with pytest.raises(UserError, match="checksum mismatch.*train-images|train-images.*checksum mismatch"):
        load(f"fashion-mnist:{tmp_path}")


def test_truncated_gzip_and_bad_idx_are_named(tmp_path, shared_data):
    src = shared_data / "mnist_test" / "t10k-labels-idx1-ubyte.gz"
    cut = tmp_path / "t10k-labels-idx1-ubyte.gz"
    cut.write_bytes(src.read_bytes()[:2000])
    with pytest.raises(UserError, match="corrupt or truncated gzip") as err:
        read_idx(cut)
    assert str(cut) in str(err.value)
    raw = tmp_path / "labels"
    with gzip.open(src) as f:
        raw.write_bytes(f.read()[:-5])
    with pytest.raises(UserError, match="header promises 10000"):
        read_idx(raw)
    (tmp_path / "junk").write_bytes(b"\x12\x34\x56\x78")
    with pytest.raises(UserError, match="bad magic"):
        read_idx(tmp_path / "junk")


def test_npz_npy_csv_folder_sources(tmp_path, tiny_npz):
    s = load(f"npz:{tiny_npz}")
    assert s.x_shape == (1, 8, 8) and len(s.train) + len(s.valid) + len(s.test) == 120
    assert s.train_labels is not None
    np.save(tmp_path / "a.npy", np.random.default_rng(0).random((50, 3)))
    assert load(f"npy:{tmp_path / 'a.npy'}").x_shape == (3,)
    (tmp_path / "t.csv").write_text("a,b\n" + "\n".join(f"{i},{i * 0.5}" for i in range(30)))
    assert load(f"csv:{tmp_path / 't.csv'}").x_shape == (2,)
    from PIL import Image

    for label in ("cats", "dogs"):
        (tmp_path / "img" / label).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(np.full((8, 8), 40 * i, dtype=np.uint8)).save(
                tmp_path / "img" / label / f"{i}.png"
            )
    s = load(f"folder:{tmp_path / 'img'}")
    assert s.x_shape == (1, 8, 8) and set(
        torch.cat([s.train_labels, s.valid_labels, s.test_labels]).tolist()
    ) == {0, 1}


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda p: None, "not found"),
        (lambda p: p.write_bytes(b"PK\x03\x04 not really a zip"), "corrupt or truncated .npz"),
        (lambda p: np.savez(p, x=np.array([[0.5, np.nan, 0.1]] * 10)), "NaN"),
        (lambda p: np.savez(p, x=np.zeros((0, 4))), "empty"),
    ],
    ids=["missing", "corrupt", "nan", "empty"],
)
def test_bad_npz_inputs(tmp_path, make, match):
    path = tmp_path / "bad.npz"
    make(path)
    with pytest.raises(UserError, match=match) as err:
        load(f"npz:{path}")
    assert str(path) in str(err.value) or path.name in str(err.value)


def test_truncated_npz(tmp_path, tiny_npz):
    cut = tmp_path / "cut.npz"
    cut.write_bytes(tiny_npz.read_bytes()[:300])
    with pytest.raises(UserError, match="corrupt or truncated"):
        load(f"npz:{cut}")


def test_values_outside_unit_interval_are_refused_for_bernoulli_and_gaussian_is_named(tmp_path):
    np.save(tmp_path / "wide.npy", np.linspace(-2, 3, 40).reshape(20, 2))
    s = load_data(DataConfig(source=f"npy:{tmp_path / 'wide.npy'}", standardize="off"))  # in their units
    with pytest.raises(
        UserError, match=r"span \[-2, 3\], but the bernoulli likelihood needs \[0, 1\]; rescale .*gaussian"
    ):
        check_fits_likelihood(s, "bernoulli", "wide.npy")
    check_fits_likelihood(s, "gaussian", "wide.npy")  # fine


def test_unknown_source_and_missing_argument():
    with pytest.raises(UserError, match="unknown data source 'nope'"):
        load("nope")
    with pytest.raises(UserError, match="needs a path"):
        load("npz")


def test_missing_directory_for_benchmark_sources(tmp_path):
    with pytest.raises(UserError, match="directory not found"):
        load(f"binarized-mnist:{tmp_path / 'absent'}")
    with pytest.raises(UserError, match="needs train-images"):
        load(f"mnist:{tmp_path}")


def test_copy_of_shared_gzip_keeps_checksum(tmp_path, shared_data):
    src = shared_data / "mnist_test" / "t10k-images-idx3-ubyte.gz"
    shutil.copy(src, tmp_path / src.name)
    assert read_idx(tmp_path / src.name, OFFICIAL_MD5["mnist"][src.name]).shape == (10000, 28, 28)


# --------------------------------------------------------------------------------------------
# Issue 16: every loader validates before it allocates, within Limits; each defect found by the
# fuzzing campaign is a named case here (the fuzz suite in tests/fuzz/ mutates further).


# --------------------------------------------------------------------------------------------
# Issue 16: every loader validates before it allocates, within Limits. Each defect the fuzzing
# campaign found in a loader is a named case here; tests/fuzz/ mutates inputs further.


def load_within(spec, limits, binarize="none"):
    return load_data(DataConfig(source=spec, binarize=binarize), limits)


def _npy_bytes(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _with_declared_shape(npy: bytes, shape: str) -> bytes:
    """The .npy bytes with the header's shape replaced (header length kept, padded with spaces)."""
    header_len = struct.unpack("<H", npy[8:10])[0]
    header = npy[10 : 10 + header_len].decode("latin1")
    start, end = header.index("'shape': (") + len("'shape': "), header.index("), ") + 1
    edited = (header[:start] + shape + header[end:]).rstrip()
    return npy[:10] + (edited.ljust(header_len - 1) + "\n").encode("latin1") + npy[10 + header_len :]


def test_npy_header_declaring_ten_billion_elements_is_refused_before_allocating(tmp_path):
    path = tmp_path / "x.npy"
    path.write_bytes(_with_declared_shape(_npy_bytes(np.zeros((100, 10), np.float32)), "(100000, 100000)"))
    with pytest.raises(
        LimitError,
        match=r"x\.npy: header declares 10,000,000,000 elements.*"
        r"limits\.max_array_elements = 1,000,000,000 \(raise it with --max-array-elements\)",
    ):
        load(f"npy:{path}")


def test_npy_whose_header_promises_more_than_the_file_holds_is_truncated(tmp_path):
    path = tmp_path / "x.npy"
    path.write_bytes(_with_declared_shape(_npy_bytes(np.zeros((10, 4), np.float32)), "(20, 4)"))
    with pytest.raises(
        UserError, match=r"truncated: the header declares shape \(20, 4\).*320 bytes.*but 160 bytes follow it"
    ):
        load(f"npy:{path}")


@pytest.mark.parametrize(
    "array, match",
    [
        (np.ones((10, 3), np.complex64), "complex numbers \\(the imaginary part would be dropped"),
        (np.array([[1, "a"]] * 5, dtype=object), "Python objects \\(reading them would need pickle"),
        (np.zeros((10, 0)), "shape \\(10, 0\\) is empty"),
        (np.zeros((0, 784)), "shape \\(0, 784\\) is empty"),
        (np.zeros(10), "expected an array of 2, 3 or 4 dimensions, got shape \\(10,\\)"),
        (np.zeros((3, 2, 2, 2, 2)), "expected an array of 2, 3 or 4 dimensions"),
        (np.array([["a", "b"]] * 5), "dtype <U1 is not numeric"),
        (np.full((5, 2), 1e300), "value 1e\\+300 is beyond the float32 range"),
    ],
    ids=["complex", "object", "zero-width", "zero-rows", "1-d", "5-d", "strings", "float32-overflow"],
)
def test_npy_arrays_vaelab_cannot_hold_are_refused_from_the_header(tmp_path, array, match):
    path = tmp_path / "x.npy"
    path.write_bytes(_npy_bytes(array))
    with pytest.raises(UserError, match=match):
        load(f"npy:{path}")


def _zip_fields(data: bytes, local: tuple[int, str], central: tuple[int, str], value: int) -> bytes:
    """Set one field of every local header (PK\\3\\4) and central directory entry (PK\\1\\2)."""
    out = bytearray(data)
    for signature, (offset, fmt) in ((b"PK\x03\x04", local), (b"PK\x01\x02", central)):
        at = out.find(signature)
        while at >= 0:
            struct.pack_into(fmt, out, at + offset, value)
            at = out.find(signature, at + 4)
    return bytes(out)


def _tiny_npz_bytes(tmp_path, compressed=False) -> bytes:
    path = tmp_path / "seed.npz"
    (np.savez_compressed if compressed else np.savez)(path, x=np.arange(120.0).reshape(30, 4))
    return path.read_bytes()


@pytest.mark.parametrize(
    "mutate, match",
    [
        (
            lambda b: _zip_fields(b, (8, "<H"), (10, "<H"), 99),
            "compression method 99; only stored or deflated",
        ),
        (lambda b: _zip_fields(b, (6, "<H"), (8, "<H"), 1), "member 'x.npy' is encrypted"),
        (lambda b: b.replace(b"x.npy", b"x.txt"), "member 'x.txt' is not an .npy array"),
        (
            lambda b: _zip_fields(b, (22, "<I"), (24, "<I"), 2**31),
            r"array 'x': trailing bytes: the header declares shape \(30, 4\) of float64 \(960 bytes\), "
            r"but 2,147,483,520 bytes follow it",
        ),
    ],
    ids=["unknown-compression", "encrypted", "non-npy-member", "giant-declared-size"],
)
def test_npz_members_are_checked_before_they_are_read(tmp_path, mutate, match):
    path = tmp_path / "bad.npz"
    path.write_bytes(mutate(_tiny_npz_bytes(tmp_path)))
    with pytest.raises(UserError, match=match):
        load(f"npz:{path}")


def test_npz_with_a_corrupt_deflate_stream_is_named(tmp_path):
    data = bytearray(_tiny_npz_bytes(tmp_path, compressed=True))
    start = data.find(b"x.npy") + len(b"x.npy")  # the member's data follow its local header
    data[start + 20 : start + 40] = bytes(20)
    path = tmp_path / "bad.npz"
    path.write_bytes(bytes(data))
    with pytest.raises(UserError, match=r"bad\.npz.*(corrupt|truncated)"):
        load(f"npz:{path}")


def test_npz_that_unpacks_above_the_limit_is_refused(tmp_path, tiny_npz):
    with pytest.raises(
        LimitError, match="unpacks to .* bytes, above limits.max_decompressed_bytes = 1,000"
    ) as err:
        load_within(f"npz:{tiny_npz}", Limits(max_decompressed_bytes=1000))
    assert err.value.field == "max_decompressed_bytes"


@pytest.mark.parametrize(
    "labels, match",
    [
        (np.zeros((100, 2), np.int64), "labels must be one per example, a 1-D array; got shape \\(100, 2\\)"),
        (np.zeros(99, np.int64), "99 labels for 100 examples"),
        (np.r_[np.zeros(99), np.nan], "label 99 is nan, not an integer class code"),
        (np.r_[np.zeros(99), 0.5], "label 99 is 0.5, not an integer class code"),
        (np.r_[np.zeros(99), 1e300], "label 99 is 1e\\+300, not an integer class code"),
    ],
    ids=["2-d", "wrong-length", "nan", "fraction", "huge"],
)
def test_npz_labels_that_do_not_label_the_examples_are_refused(tmp_path, labels, match):
    path = tmp_path / "labelled.npz"
    np.savez(path, x=np.random.default_rng(0).random((100, 4)), y=labels)
    with pytest.raises(UserError, match=match):
        load(f"npz:{path}")


def test_npz_split_labels_may_be_class_names_coded_over_all_splits(tmp_path):
    rng = np.random.default_rng(0)
    names = {s: np.array(["cat", "dog"] * n) for s, n in (("train", 10), ("valid", 3), ("test", 2))}
    np.savez(
        tmp_path / "named.npz",
        **{s: rng.random((len(y), 3)) for s, y in names.items()},
        **{f"{s}_labels": y for s, y in names.items()},
    )
    s = load(f"npz:{tmp_path / 'named.npz'}")
    assert s.train_labels.tolist() == [0, 1] * 10 and s.test_labels.tolist() == [0, 1] * 2


def test_npz_split_labels_must_not_be_negative(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "neg.npz",
        train=rng.random((5, 2)),
        valid=rng.random((2, 2)),
        test=rng.random((2, 2)),
        test_labels=np.array([0, -1]),
    )
    with pytest.raises(UserError, match="array 'test_labels' holds a negative label -1"):
        load(f"npz:{tmp_path / 'neg.npz'}")


def test_empty_test_npz_is_blamed_on_test_npz_not_on_its_labels(tmp_path, shared_data):
    for name in ("train.npz", "valid.npz", "test_labels.npz"):
        shutil.copy(shared_data / "binarized_mnist" / name, tmp_path / name)
    np.savez(tmp_path / "test.npz", x=np.zeros((0, 784), np.uint8))
    with pytest.raises(UserError, match=r"test\.npz: array 'x': the array of shape \(0, 784\) is empty"):
        load(f"binarized-mnist:{tmp_path}")


def _idx_bytes(ndim_and_dims: bytes, body: bytes = b"") -> bytes:
    return bytes([0, 0, 8]) + ndim_and_dims + body


@pytest.mark.parametrize(
    "data, match",
    [
        (_idx_bytes(bytes([0])), "IDX header declares 0 dimensions"),
        (
            _idx_bytes(bytes([3]) + b"\xff\xff\xff\xff" * 3),
            "IDX header declares 79,228,162,458,924,105,.*limits.max_array_elements",
        ),
        (_idx_bytes(bytes([2, 0, 0, 0, 0, 0, 0, 0, 5])), "shape \\(0, 5\\), an empty array"),
        (
            _idx_bytes(bytes([1, 0, 0, 0, 9]), b"\x01" * 12),
            "promises 9 values of shape \\(9,\\), file holds more",
        ),
    ],
    ids=["ndim-0", "overflowing-dimensions", "zero-dimension", "trailing-data"],
)
def test_idx_headers_are_checked_before_the_body_is_read(tmp_path, data, match):
    path = tmp_path / "t10k-labels-idx1-ubyte"
    path.write_bytes(data)
    with pytest.raises(UserError, match=match):
        read_idx(path)


def test_gzipped_idx_bomb_is_refused_from_its_header(tmp_path):
    path = tmp_path / "bomb-idx3-ubyte.gz"
    with gzip.open(path, "wb") as f:
        f.write(_idx_bytes(bytes([3]) + (2000).to_bytes(4, "big") * 3))
        f.write(bytes(1 << 20))  # a megabyte of the promised 8 GB: the header alone is refused
    with pytest.raises(LimitError, match="declares 8,000,000,000 elements"):
        read_idx(path)
    smaller = tmp_path / "smaller-idx3-ubyte.gz"
    with gzip.open(smaller, "wb") as f:
        f.write(_idx_bytes(bytes([3]) + (100).to_bytes(4, "big") * 3))
    with pytest.raises(LimitError, match="declares 1,000,016 unpacked bytes.*limits.max_decompressed_bytes"):
        read_idx(smaller, limits=Limits(max_decompressed_bytes=1000))


def _idx_dir(tmp_path, train=(60, 28, 28), train_labels=(60,), test=(20, 28, 28), test_labels=(20,)):
    rng = np.random.default_rng(0)
    for stem, shape in (
        ("train-images-idx3-ubyte", train),
        ("train-labels-idx1-ubyte", train_labels),
        ("t10k-images-idx3-ubyte", test),
        ("t10k-labels-idx1-ubyte", test_labels),
    ):
        _write_idx(tmp_path / stem, rng.integers(0, 10, shape), compress=False)
    return f"mnist:{tmp_path}"


@pytest.mark.parametrize(
    "shapes, match",
    [
        (
            dict(test=(20, 32, 32)),
            "t10k-images-idx3-ubyte: images of size \\(32, 32\\) differ from the training",
        ),
        (dict(train_labels=(59,)), "train-labels-idx1-ubyte: 59 labels for the 60 images"),
        (
            dict(test_labels=(20, 2)),
            "t10k-labels-idx1-ubyte: expected labels of shape \\(N,\\), got \\(20, 2\\)",
        ),
        (dict(train=(60, 784)), "train-images-idx3-ubyte: expected images of shape \\(N, H, W\\)"),
        (
            dict(train=(5, 28, 28), train_labels=(5,)),
            "5 training images, too few to hold out a validation split",
        ),
    ],
    ids=["test-size-differs", "labels-wrong-length", "2-d-labels", "2-d-images", "too-few"],
)
def test_idx_files_that_disagree_with_each_other_are_refused(tmp_path, shapes, match):
    with pytest.raises(UserError, match=match):
        load(_idx_dir(tmp_path, **shapes))


def _png_folder(tmp_path, n=6, size=(8, 8)):
    folder = tmp_path / "img"
    folder.mkdir(exist_ok=True)
    for i in range(n):
        Image.fromarray(np.full(size[::-1], 30 * i, dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def _png_with_size(width: int, height: int) -> bytes:
    """A 1x1 PNG whose IHDR chunk (CRC fixed) declares width x height."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    struct.pack_into(">II", data, 16, width, height)
    struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def test_png_decompression_bomb_is_a_clean_error_naming_the_pixel_limit(tmp_path):
    folder = _png_folder(tmp_path)
    (folder / "bomb.png").write_bytes(_png_with_size(100_000, 100_000))
    with pytest.raises(
        LimitError,
        match=r"bomb\.png: image of 10,000,000,000 pixels, above "
        r"limits\.max_image_pixels = 16,777,216 \(raise it with --max-image-pixels\)",
    ):
        load(f"folder:{folder}")


def test_image_just_above_the_pixel_limit_is_an_error_not_a_warning(tmp_path):
    folder = _png_folder(tmp_path, size=(10, 10))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow only warns between the limit and twice it
        with pytest.raises(LimitError, match="image of 100 pixels, above limits.max_image_pixels = 99"):
            load_within(f"folder:{folder}", Limits(max_image_pixels=99))
    assert Image.MAX_IMAGE_PIXELS == 89_478_485  # Pillow's own default, restored


@pytest.mark.parametrize("damage", ["broken-chunk", "huge-text-chunk", "bad-bmp-palette", "truncated"])
def test_damaged_image_files_are_named(tmp_path, damage):
    folder = _png_folder(tmp_path)
    good = (folder / "0.png").read_bytes()
    if damage == "broken-chunk":
        bad, name = good[:-20] + bytes(8) + good[-12:], "bad.png"  # IDAT's CRC overwritten
    elif damage == "huge-text-chunk":
        info = PngImagePlugin.PngInfo()
        info.add_text("comment", "x" * (2 << 20), zip=True)  # 2 MB unpacked, above Pillow's 1 MB
        buffer = io.BytesIO()
        Image.new("L", (8, 8)).save(buffer, "PNG", pnginfo=info)
        bad, name = buffer.getvalue(), "bad.png"
    elif damage == "bad-bmp-palette":
        buffer, palette = io.BytesIO(), Image.new("P", (8, 8))
        palette.putpalette(list(range(256)) * 3)
        palette.save(buffer, "BMP")
        bad, name = bytearray(buffer.getvalue()), "bad.bmp"
        struct.pack_into("<I", bad, 46, 257)  # 257 palette colours in an 8-bit BMP
    else:
        bad, name = good[: len(good) // 2], "bad.png"
    (folder / name).write_bytes(bytes(bad))
    with pytest.raises(UserError, match=f"{name}: (cannot read image|size)"):
        load(f"folder:{folder}")


def test_image_folder_limits_on_count_and_total_size(tmp_path):
    folder = _png_folder(tmp_path)
    with pytest.raises(LimitError, match="more than 3 image files, above limits.max_images = 3"):
        load_within(f"folder:{folder}", Limits(max_images=3))
    with pytest.raises(LimitError, match=r"the image folder declares 384 elements \(shape \(6, 1, 8, 8\)\)"):
        load_within(f"folder:{folder}", Limits(max_array_elements=300))


def test_link_to_dev_zero_is_not_a_regular_file(tmp_path):
    link = tmp_path / "x.npy"
    link.symlink_to("/dev/zero")
    with pytest.raises(UserError, match=r"x\.npy: not a regular file"):
        load(f"npy:{link}")
    os.mkfifo(tmp_path / "t.csv")
    with pytest.raises(UserError, match=r"t\.csv: not a regular file"):
        load(f"csv:{tmp_path / 't.csv'}")
    folder = _png_folder(tmp_path)
    (folder / "zero.png").symlink_to("/dev/zero")
    with pytest.raises(UserError, match=r"zero\.png: not a regular file"):
        load(f"folder:{folder}")


@pytest.mark.parametrize(
    "text, match",
    [
        ("1.0,2.O,3\n4,5,6\n7,8,9\n", "line 1 \\(data row 1\\), column 2: non-numeric cell '2.O'"),
        (
            "a,b,c\n1,,3\n4,5,6\n",
            "line 2 \\(data row 1\\), column 2 \\('b'\\): missing value \\(empty cell\\)",
        ),
        ("a,b,c\n1,2,3\n4,NaN,6\n", "line 3 \\(data row 2\\), column 2 \\('b'\\): missing value \\(NaN\\)"),
        ("1,2\n3,4,5\n", "line 2 has 3 columns, the first row has 2"),
        ("1,2\n3,1e39\n", "line 2 \\(data row 2\\), column 2: 1e39 is outside the float32 range"),
        ("a,b\n", "no data rows"),
    ],
    ids=["typo-in-first-row", "empty-cell", "nan", "ragged", "overflow", "header-only"],
)
def test_csv_problems_are_named_by_line_and_column(tmp_path, text, match):
    path = tmp_path / "t.csv"
    path.write_text(text)
    with pytest.raises(UserError, match=match):
        load(f"csv:{path}")


def test_csv_first_row_with_a_bom_is_data_not_a_header(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes("\ufeff".encode() + b"1,2\n3,4\n5,6\n7,8\n")
    s = load(f"csv:{path}")
    assert sorted(torch.cat([s.train, s.valid, s.test])[:, 0].tolist()) == [1.0, 3.0, 5.0, 7.0]


def test_csv_header_with_an_empty_name_is_still_a_header(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text(",a,b\n" + "\n".join(f"{i},{i},{2 * i}" for i in range(10)))
    assert load(f"csv:{path}").x_shape == (3,)


def test_csv_larger_than_the_text_limit_is_refused_before_reading(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("1,2\n" * 100)
    with pytest.raises(LimitError, match="400 bytes of text, above limits.max_text_file_bytes = 100"):
        load_within(f"csv:{path}", Limits(max_text_file_bytes=100))


def test_empty_amat_is_an_error_without_a_numpy_warning(tmp_path):
    for split in ("train", "valid", "test"):
        (tmp_path / f"binarized_mnist_{split}.amat").write_text("")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(UserError, match="binarized_mnist_train.amat: not a whitespace-separated table"):
            load(f"binarized-mnist:{tmp_path}")


def test_limits_are_strict_frozen_and_refuse_unknown_fields():
    with pytest.raises(ValueError, match="max_array_elements"):
        Limits(max_array_elements="10")
    with pytest.raises(ValueError, match="Extra inputs are not permitted"):
        Limits(max_pixels=10)
    with pytest.raises(ValueError, match="frozen"):
        Limits().max_images = 5  # type: ignore[misc]


def test_read_npy_and_npz_round_trip_within_limits(tmp_path):
    x = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    np.save(tmp_path / "a.npy", np.asfortranarray(x))
    np.savez_compressed(tmp_path / "a.npz", x=x, y=np.array(["a", "b"]))
    assert np.array_equal(read_npy(tmp_path / "a.npy", Limits()), x)
    arrays = read_npz(tmp_path / "a.npz", Limits())
    assert np.array_equal(arrays["x"], x) and arrays["y"].tolist() == ["a", "b"]
    with pytest.raises(LimitError, match="header declares 24 elements"):
        read_npy(tmp_path / "a.npy", Limits(max_array_elements=23))


def test_registry_names_every_source_without_loading_anything():
    assert set(SOURCES) == {
        "mnist5k",
        "digits",
        "binarized-mnist",
        "mnist",
        "fashion-mnist",
        "kmnist",
        "omniglot",
        "caltech101-silhouettes",
        "frey-faces",
        "cifar10",
        "svhn",
        "celeba",
        "npz",
        "npy",
        "csv",
        "folder",
        "codes",
    }
    assert [name for name, source in SOURCES.items() if not source.needs_arg] == ["mnist5k", "digits"]


@pytest.mark.parametrize(
    "changes",
    [
        dict(),
        dict(kind="ae", net="gated", hidden=(30, 20)),
        dict(net="conv", hidden=(40,), likelihood="gaussian", sigma=None),
        dict(prior="mog", prior_components=7),
        dict(prior="vamp", prior_components=5, net="gated", hidden=(16,)),
    ],
    ids=["mlp", "gated-ae", "conv-learned-sigma", "mog", "vamp"],
)
def test_training_memory_estimate_counts_parameters_exactly(changes):
    config = ModelConfig(latent_dim=4, **{"hidden": (32, 16), **changes})
    model = build_model(config, (1, 12, 8))
    assert estimate_training_bytes(config, (1, 12, 8), batch_size=16).parameters == count_parameters(model)


def test_training_memory_estimate_grows_with_batch_and_samples():
    config = ModelConfig(hidden=(64,), latent_dim=8)
    one = estimate_training_bytes(config, (1, 28, 28), batch_size=10, k=1)
    assert one.state_bytes == 16 * one.parameters  # weights, gradients, Adam's two moments; float32
    assert (
        estimate_training_bytes(config, (1, 28, 28), batch_size=20, k=1).activation_bytes
        == 2 * one.activation_bytes
    )
    assert (
        estimate_training_bytes(config, (1, 28, 28), batch_size=10, k=5).activation_bytes
        > 4 * one.activation_bytes
    )


def test_training_memory_check_refuses_a_model_that_cannot_fit_with_the_estimate():
    huge = ModelConfig(latent_dim=10**9)
    with pytest.raises(
        LimitError,
        match=r"model: training needs an estimated [\d,.]+ GiB \([\d,]+ parameters.*"
        r"above 90% of the .* GiB available .*--max-training-bytes",
    ):
        check_training_memory(huge, (1, 28, 28), batch_size=128)
    small = ModelConfig(hidden=(16,))
    assert check_training_memory(small, (1, 8, 8), 32).total_bytes < 10**7
    with pytest.raises(LimitError, match="above limits.max_training_bytes = 1,000"):
        check_training_memory(small, (1, 8, 8), 32, limits=Limits(max_training_bytes=1000))
