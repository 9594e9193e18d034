"""Data sources and every bad input the issue names: each a UserError naming the file."""

from __future__ import annotations

import gzip
import shutil

import numpy as np
import pytest
import torch

from vaelab.config import DataConfig
from vaelab.data import check_fits_likelihood, load_data
from vaelab.data.idx import OFFICIAL_MD5, read_idx
from vaelab.errors import UserError


def load(spec, binarize="none"):
    return load_data(DataConfig(source=spec, binarize=binarize))


def test_mnist5k_is_split_stratified_and_scaled():
    s = load("mnist5k")
    assert (len(s.train), len(s.valid), len(s.test)) == (4000, 500, 500)
    assert s.x_shape == (1, 28, 28)
    assert 0.0 <= float(s.train.min()) and float(s.train.max()) <= 1.0
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
    assert float(s.train.max()) <= 1.0


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
    s = load(f"npy:{tmp_path / 'wide.npy'}")
    with pytest.raises(UserError, match="outside \\[0, 1\\].*--likelihood gaussian"):
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
