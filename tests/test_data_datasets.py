"""The standard datasets by name: their readers on small files in each dataset's real format, and
the verified download into the cache, against a real HTTP server on 127.0.0.1 (never the internet).

The server serves the files this module makes; `VAELAB_DATA_MIRROR` points every download at it
and the registry's entries are replaced by ones pinning the hashes of those files.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import socket
import tarfile
import threading
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from vaelab.config import DataConfig
from vaelab.data import datasets, download, load_data, registry
from vaelab.data.idx import OFFICIAL_MD5
from vaelab.data.registry import RemoteDataset, RemoteFile
from vaelab.errors import UserError
from vaelab.limits import LimitError, Limits

rng = np.random.default_rng(0)
MARK = (2, 5)
"""(row, column) of a marked pixel, to check each reader puts rows and columns where they belong."""

# ---------------------------------------------------------------------- files in the real formats


def _gz_idx(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes())


def _mat(**variables) -> bytes:
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, variables)
    return buffer.getvalue()


IDX_TRAIN = rng.integers(0, 256, (60, 28, 28), dtype=np.uint8)
IDX_TRAIN_LABELS = np.arange(60) % 10
IDX_TEST = rng.integers(0, 256, (12, 28, 28), dtype=np.uint8)
IDX_FILES = {
    "train-images-idx3-ubyte.gz": _gz_idx(IDX_TRAIN),
    "train-labels-idx1-ubyte.gz": _gz_idx(IDX_TRAIN_LABELS),
    "t10k-images-idx3-ubyte.gz": _gz_idx(IDX_TEST),
    "t10k-labels-idx1-ubyte.gz": _gz_idx(np.arange(12) % 10),
}


def _cifar_batch(n: int, first: int) -> bytes:
    """n records: label (first + i) % 10, planes R = 200, G = 100, B = 50, G's MARK pixel = the
    record's number (so the order of records and the layout of planes can be checked)."""
    records = np.zeros((n, 1 + 3 * 1024), dtype=np.uint8)
    records[:, 0] = (first + np.arange(n)) % 10
    planes = records[:, 1:].reshape(n, 3, 32, 32)
    planes[:, 0], planes[:, 1], planes[:, 2] = 200, 100, 50
    planes[:, 1, MARK[0], MARK[1]] = first + np.arange(n)
    return records.tobytes()


def _tar_gz(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


CIFAR_MEMBERS = {
    **{f"cifar-10-batches-bin/data_batch_{i}.bin": _cifar_batch(20, 20 * (i - 1)) for i in range(1, 6)},
    "cifar-10-batches-bin/test_batch.bin": _cifar_batch(10, 200),
    "cifar-10-batches-bin/batches.meta.txt": b"airplane\nautomobile\n",
}


def _svhn(n: int) -> bytes:
    """X (32, 32, 3, N) uint8 with channel 1's MARK pixel = 7 + the image's number; y in 1..10."""
    x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
    x[MARK[0], MARK[1], 1, :] = 7 + np.arange(n)
    return _mat(X=x, y=(np.arange(n) % 10 + 1).reshape(-1, 1).astype(np.uint8))


def _column_major(images: np.ndarray) -> np.ndarray:
    """(N, 28, 28) -> (N, 784) with each image stored column by column, as MATLAB stores it."""
    return images.transpose(0, 2, 1).reshape(len(images), -1)


def _marked(n: int, binary: bool) -> np.ndarray:
    x = (rng.random((n, 28, 28)) < 0.3).astype(np.float64) if binary else rng.random((n, 28, 28))
    x[:, MARK[0], MARK[1]] = 1.0
    x[:, MARK[1], MARK[0]] = 0.0  # the transposed position differs
    return x


def _onehot(labels: np.ndarray, k: int) -> np.ndarray:
    return np.eye(k)[:, labels]


OMNIGLOT = _mat(
    data=_column_major(_marked(40, binary=False)).T,
    target=_onehot(np.arange(40) % 5, 50),
    testdata=_column_major(_marked(10, binary=False)).T,
    testtarget=_onehot(np.arange(10) % 5, 50),
)
CALTECH_NAMES = ["Faces", "Leopards", "airplanes"]
CALTECH = _mat(
    **{
        f"{s}_data": _column_major(_marked(n, binary=True))
        for s, n in (("train", 12), ("val", 6), ("test", 6))
    },
    **{
        f"{s}_labels": (np.arange(n) % 3 + 1).reshape(-1, 1)
        for s, n in (("train", 12), ("val", 6), ("test", 6))
    },
    classnames=np.array([CALTECH_NAMES], dtype=object),
)
FREY = np.zeros((560, 30), dtype=np.uint8)
FREY[MARK[0] * 20 + MARK[1], :] = 99  # row-major 28x20 images
AMAT = {
    f"binarized_mnist_{s}.amat": "\n".join(
        " ".join(str(b) for b in row) for row in rng.integers(0, 2, (n, 784))
    ).encode()
    for s, n in (("train", 8), ("valid", 3), ("test", 3))
}

DATASET_FILES: dict[str, dict[str, bytes]] = {
    "mnist": IDX_FILES,
    "fashion-mnist": IDX_FILES,
    "kmnist": IDX_FILES,
    "binarized-mnist": AMAT,
    "cifar10": {"cifar-10-binary.tar.gz": _tar_gz(CIFAR_MEMBERS)},
    "svhn": {"train_32x32.mat": _svhn(40), "test_32x32.mat": _svhn(10)},
    "omniglot": {"chardata.mat": OMNIGLOT},
    "caltech101-silhouettes": {"caltech101_silhouettes_28_split1.mat": CALTECH},
    "frey-faces": {"frey_rawface.mat": _mat(ff=FREY)},
}


def _write(root: Path, files: dict[str, bytes]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------------------------ a server


@dataclass
class Server:
    """Files served at URL/NAME/FILE; `plan[path]` lists how the next requests of a path are
    answered ("drop": the connection closes after half the body; "corrupt": one byte changed)."""

    url: str
    files: dict[str, bytes] = field(default_factory=dict)
    plan: dict[str, list[str]] = field(default_factory=dict)
    hits: list[str] = field(default_factory=list)


@pytest.fixture
def server():
    state = Server("")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            state.hits.append(self.path)
            body = state.files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            how = state.plan[self.path].pop(0) if state.plan.get(self.path) else "ok"
            if how == "corrupt":
                middle = len(body) // 2
                body = body[:middle] + bytes([body[middle] ^ 0xFF]) + body[middle + 1 :]
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if how == "drop":
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
                return
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    class Quiet(ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request, client_address):
            pass  # the dropped connections are deliberate

    httpd = Quiet(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@pytest.fixture
def cache(tmp_path, monkeypatch, server) -> Path:
    """$VAELAB_DATA in tmp_path and every download pointed at the test server."""
    monkeypatch.setenv(download.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setenv(download.MIRROR_ENV, server.url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    return tmp_path / "cache"


@pytest.fixture
def publish(server, monkeypatch):
    """publish(name, files, pinned=True): serve the files as dataset `name` and pin their
    SHA-256 in the registry (none with pinned=False)."""

    def publish(name: str, files: dict[str, bytes], pinned: bool = True) -> None:
        if name in OFFICIAL_MD5:  # the IDX readers' own pins, of the official .gz files
            monkeypatch.setitem(
                OFFICIAL_MD5, name, {file: hashlib.md5(data).hexdigest() for file, data in files.items()}
            )
        entries = []
        for file, data in files.items():
            server.files[f"/{name}/{file}"] = data
            sha = _sha256(data) if pinned else None
            entries.append(RemoteFile(file, f"https://upstream.invalid/{file}", len(data), sha, "test"))
        monkeypatch.setitem(registry.DATASETS, name, RemoteDataset(name, tuple(entries)))

    return publish


# ------------------------------------------------------------------------------ the readers


def test_idx_datasets_keep_the_last_10k_rule_as_stored_with_class_names(tmp_path):
    root = _write(tmp_path / "idx", IDX_FILES)
    readers = {datasets.mnist: "0", datasets.fashion_mnist: "T-shirt/top", datasets.kmnist: "o"}
    for reader in readers:
        with pytest.raises(UserError, match="checksum mismatch"):  # the official MD5 of the .gz
            reader(str(root), Limits())
    for gz in IDX_FILES:  # uncompressed files are read without the official checksum
        (root / gz.removesuffix(".gz")).write_bytes(gzip.decompress(IDX_FILES[gz]))
        (root / gz).unlink()
    for reader, first in readers.items():
        names = reader(str(root), Limits()).label_names
        assert len(names) == 10 and names[0] == first
    splits = datasets.kmnist(str(root), Limits())
    assert splits.train.dtype == torch.uint8 and splits.train.shape == (50, 1, 28, 28)
    assert torch.equal(splits.train[:, 0], torch.from_numpy(IDX_TRAIN[:50]))
    assert torch.equal(splits.valid[:, 0], torch.from_numpy(IDX_TRAIN[50:]))
    assert torch.equal(splits.test[:, 0], torch.from_numpy(IDX_TEST))
    assert splits.train_labels.tolist() == (np.arange(50) % 10).tolist()
    assert splits.label_names == ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")


@pytest.mark.parametrize("layout", ["archive", "unpacked"])
def test_cifar10_binary_records_planes_splits_and_names(tmp_path, layout):
    if layout == "archive":
        root = _write(tmp_path, DATASET_FILES["cifar10"])
    else:
        root = _write(tmp_path, CIFAR_MEMBERS)
    splits = datasets.cifar10(str(root), Limits())
    assert splits.train.dtype == torch.uint8 and splits.x_shape == (3, 32, 32)
    assert (len(splits.train), len(splits.valid), len(splits.test)) == (90, 10, 10)
    assert splits.label_names[:3] == ("airplane", "automobile", "bird") and len(splits.label_names) == 10
    for split in ("train", "valid", "test"):
        x, y = splits.split(split), splits.labels(split)
        numbers = x[:, 1, MARK[0], MARK[1]].long()  # each record's number, from its green plane
        assert torch.equal(y, numbers % 10)
        assert (x[:, 0] == 200).all() and (x[:, 2] == 50).all()
        assert int((x[:, 1] == 100).sum()) == len(x) * (1024 - 1)
    train_numbers = splits.train[:, 1, MARK[0], MARK[1]].long()
    valid_numbers = splits.valid[:, 1, MARK[0], MARK[1]].long()
    assert sorted(train_numbers.tolist() + valid_numbers.tolist()) == list(range(100))
    assert splits.test[:, 1, MARK[0], MARK[1]].tolist() == list(range(200, 210))
    assert torch.bincount(splits.valid_labels).tolist() == [1] * 10  # stratified by class
    again = datasets.cifar10(str(root), Limits())
    assert torch.equal(again.valid, splits.valid)  # seeded


def test_svhn_transposes_to_nchw_and_maps_label_10_to_digit_0(tmp_path):
    root = _write(tmp_path, DATASET_FILES["svhn"])
    splits = datasets.svhn(str(root), Limits())
    assert splits.train.dtype == torch.uint8 and splits.x_shape == (3, 32, 32)
    assert (len(splits.train), len(splits.valid), len(splits.test)) == (36, 4, 10)
    assert splits.test[:, 1, MARK[0], MARK[1]].tolist() == list(range(7, 17))
    assert splits.test_labels.tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0]
    numbers = splits.train[:, 1, MARK[0], MARK[1]].long() - 7
    assert torch.equal(splits.train_labels, (numbers % 10 + 1) % 10)
    assert splits.label_names == tuple("0123456789")


def test_omniglot_and_caltech_images_are_stored_column_by_column(tmp_path):
    splits = datasets.omniglot(str(_write(tmp_path / "o", DATASET_FILES["omniglot"])), Limits())
    assert splits.train.dtype == torch.float32 and splits.x_shape == (1, 28, 28)
    assert (len(splits.train), len(splits.valid), len(splits.test)) == (36, 4, 10)
    for x in (splits.train, splits.valid, splits.test):
        assert (x[:, 0, MARK[0], MARK[1]] == 1).all() and (x[:, 0, MARK[1], MARK[0]] == 0).all()
    assert splits.test_labels.tolist() == (np.arange(10) % 5).tolist() and splits.label_names is None

    files = DATASET_FILES["caltech101-silhouettes"]
    splits = datasets.caltech101_silhouettes(str(_write(tmp_path / "c", files)), Limits())
    assert splits.train.dtype == torch.float32 and set(splits.train.unique().tolist()) == {0.0, 1.0}
    assert (len(splits.train), len(splits.valid), len(splits.test)) == (12, 6, 6)
    assert (splits.train[:, 0, MARK[0], MARK[1]] == 1).all() and (
        splits.train[:, 0, MARK[1], MARK[0]] == 0
    ).all()
    assert splits.train_labels.tolist() == (np.arange(12) % 3).tolist()
    assert splits.label_names == tuple(CALTECH_NAMES)


def test_frey_faces_rows_and_seeded_split(tmp_path):
    splits = datasets.frey_faces(str(_write(tmp_path, DATASET_FILES["frey-faces"])), Limits())
    assert splits.train.dtype == torch.uint8 and splits.x_shape == (1, 28, 20)
    assert (len(splits.train), len(splits.valid), len(splits.test)) == (24, 3, 3)
    for x in (splits.train, splits.valid, splits.test):
        assert (x[:, 0, MARK[0], MARK[1]] == 99).all() and int(x.sum()) == 99 * len(x)


def test_celeba_from_a_folder_with_the_official_partition(tmp_path):
    images = tmp_path / "img_align_celeba"
    images.mkdir()
    lines = []
    for i, split in enumerate((0, 0, 0, 1, 2, 2), start=1):
        colour = (10 * i, 100, 200)
        Image.new("RGB", (178, 218), colour).save(images / f"{i:06d}.jpg", quality=95)
        lines.append(f"{i:06d}.jpg {split}")
    (tmp_path / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")
    splits = datasets.celeba(str(tmp_path), Limits())
    assert splits.train.dtype == torch.uint8 and splits.x_shape == (3, 64, 64)
    assert (len(splits.train), len(splits.valid), len(splits.test)) == (3, 1, 2)
    red = splits.test[:, 0].float().mean(dim=(1, 2))
    assert torch.allclose(red, torch.tensor([50.0, 60.0]), atol=2)  # images 5 and 6, in order
    assert splits.train_labels is None
    with pytest.raises(LimitError, match="limits.max_array_elements"):
        datasets.celeba(str(tmp_path), Limits(max_array_elements=6 * 3 * 64 * 64 - 1))
    (tmp_path / "list_eval_partition.txt").write_text("000001.jpg 3\n")
    with pytest.raises(UserError, match="line 1: expected 'IMAGE.jpg 0|1|2'"):
        datasets.celeba(str(tmp_path), Limits())


def test_readers_refuse_before_allocating_and_name_the_file(tmp_path):
    root = _write(tmp_path, DATASET_FILES["svhn"])
    with pytest.raises(
        LimitError, match=r"train_32x32.mat: variable 'X': its header declares 122,880 elements"
    ):
        datasets.svhn(str(root), Limits(max_array_elements=100_000))
    _write(tmp_path, {"test_32x32.mat": _mat(X=np.zeros((32, 32, 3, 2)), y=np.ones((2, 1)))})
    with pytest.raises(UserError, match="variable 'X' is of class double, expected uint8"):
        datasets.svhn(str(root), Limits())
    (root / "train_32x32.mat").write_bytes(b"MATLAB 7.3 MAT-file" + bytes(200))
    with pytest.raises(UserError, match="train_32x32.mat: not a readable .mat file"):
        datasets.svhn(str(root), Limits())
    cifar = _write(
        tmp_path / "c", {"cifar-10-binary.tar.gz": DATASET_FILES["cifar10"]["cifar-10-binary.tar.gz"][:-300]}
    )
    with pytest.raises(UserError, match="cifar-10-binary.tar.gz: corrupt or truncated .tar.gz"):
        datasets.cifar10(str(cifar), Limits())
    cifar = _write(
        tmp_path / "d", {"cifar-10-binary.tar.gz": _tar_gz({"cifar-10-batches-bin/test_batch.bin": b"x"})}
    )
    with pytest.raises(UserError, match="not a whole number of 3073-byte records"):
        datasets.cifar10(str(cifar), Limits())
    cifar = _write(tmp_path / "e", DATASET_FILES["cifar10"])
    with pytest.raises(
        LimitError, match="unpacks to more than 61,460 bytes, above limits.max_decompressed_bytes"
    ):
        datasets.cifar10(str(cifar), Limits(max_decompressed_bytes=61_459))
    with pytest.raises(UserError, match="chardata.mat: file not found"):
        datasets.omniglot(str(tmp_path), Limits())


def test_a_compressed_mat_variable_whose_tag_lies_is_refused_before_scipy_allocates(tmp_path):
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, {"ff": FREY}, do_compression=True)
    raw = buffer.getvalue()
    size = int.from_bytes(raw[132:136], "little")  # the one element: miCOMPRESSED, then zlib data
    inner = bytearray(zlib.decompress(raw[136 : 136 + size]))
    data_tag = inner.index((FREY.size).to_bytes(4, "little")) - 4  # the miUINT8 tag of the pixels
    inner[data_tag + 4 : data_tag + 8] = (2**31 - 1).to_bytes(4, "little")
    packed = zlib.compress(bytes(inner))
    path = tmp_path / "frey_rawface.mat"
    path.write_bytes(raw[:132] + len(packed).to_bytes(4, "little") + packed)
    with pytest.raises(UserError, match="an element declares 2,147,483,647 bytes, its variable holds 16,800"):
        datasets.frey_faces(str(tmp_path), Limits())
    with pytest.raises(LimitError, match="a compressed variable unpacks to more than"):
        datasets.frey_faces(str(tmp_path), Limits(max_decompressed_bytes=16_800))


def test_a_mat_element_of_undefined_type_is_refused_before_scipy_reads_it(tmp_path):
    raw = bytearray(_mat(ff=FREY))  # uncompressed: the pixels' tag is miUINT8 (2) and their size
    data_tag = raw.index((2).to_bytes(4, "little") + FREY.size.to_bytes(4, "little"))
    raw[data_tag : data_tag + 4] = (0x8002).to_bytes(4, "little")  # scipy crashed on this (SIGSEGV)
    (tmp_path / "frey_rawface.mat").write_bytes(bytes(raw))
    with pytest.raises(
        UserError, match=r"frey_rawface.mat: not a readable .mat file \(an element of data type 32770\)"
    ):
        datasets.frey_faces(str(tmp_path), Limits())


def test_binary_amat_fast_path_reads_what_loadtxt_reads(tmp_path):
    from vaelab.data.tables import read_amat

    cases = {
        "binarized MNIST rows": AMAT["binarized_mnist_test.amat"],
        "a space before each newline": b"0 1 1 \n1 0 0 \n",
        "tabs, CRLF and blank lines": b"0\t1 1\r\n\n1 0  0\r\n",
        "a two-digit cell": b"0 1\n10 1\n",
        "a real number": b"0 0.5\n1 1\n",
    }
    for case, raw in cases.items():
        path = tmp_path / "t.amat"
        path.write_bytes(raw)
        expected = np.loadtxt(path, dtype=np.float32, ndmin=2)
        got = read_amat(path, Limits())
        assert got.dtype == np.float32 and np.array_equal(got, expected), case
    path.write_bytes(b"0 1\n1\n")
    with pytest.raises(UserError, match="not a whitespace-separated table of numbers"):
        read_amat(path, Limits())


# ---------------------------------------------------------------------- downloads and the cache


@pytest.mark.parametrize("name", sorted(DATASET_FILES))
def test_a_bare_name_downloads_into_the_cache_and_loads(name, cache, publish, server):
    publish(name, DATASET_FILES[name])
    splits = load_data(DataConfig(source=name))
    local = load_data(DataConfig(source=f"{name}:{_write(cache.parent / 'local', DATASET_FILES[name])}"))
    assert splits.x_shape == local.x_shape and torch.equal(splits.test, local.test)
    for file, data in DATASET_FILES[name].items():
        assert (cache / name / file).read_bytes() == data
    requests = len(server.hits)
    load_data(DataConfig(source=name, offline=True))
    load_data(DataConfig(source=name))
    assert len(server.hits) == requests  # cached files are verified, not downloaded again


def _only_the_lock(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name != download.LOCK_NAME)


def test_a_corrupt_download_is_one_line_and_leaves_nothing(cache, publish, server):
    data = DATASET_FILES["frey-faces"]["frey_rawface.mat"]
    publish("frey-faces", {"frey_rawface.mat": data})
    server.plan["/frey-faces/frey_rawface.mat"] = ["corrupt"]
    middle = len(data) // 2
    corrupt = data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]
    message = (
        f"frey_rawface.mat: checksum mismatch: expected sha256 {_sha256(data)}, got {_sha256(corrupt)} "
        rf"\(from {server.url}/frey-faces/frey_rawface.mat, 1 try; "
        rf"nothing was kept in {cache / 'frey-faces'}\)"
    )
    with pytest.raises(UserError, match=message) as caught:
        download.fetch("frey-faces", retries=0)
    assert "\n" not in str(caught.value)
    assert _only_the_lock(cache / "frey-faces") == []


def test_an_interrupted_download_leaves_nothing_and_a_retry_succeeds(cache, publish, server):
    data = DATASET_FILES["cifar10"]["cifar-10-binary.tar.gz"]
    publish("cifar10", {"cifar-10-binary.tar.gz": data})
    path = "/cifar10/cifar-10-binary.tar.gz"
    server.plan[path] = ["drop"]
    with pytest.raises(
        UserError, match=r"cifar-10-binary.tar.gz: download from .* failed after 1 try \(.*\); "
    ):
        download.fetch("cifar10", retries=0)
    assert _only_the_lock(cache / "cifar10") == []
    assert download.fetch("cifar10", retries=0) == cache / "cifar10"  # the next run starts over
    assert (cache / "cifar10" / "cifar-10-binary.tar.gz").read_bytes() == data
    # within one run: a dropped connection is retried (pooch waits 1 s)
    (cache / "cifar10" / "cifar-10-binary.tar.gz").unlink()
    server.plan[path] = ["drop"]
    server.hits.clear()
    download.fetch("cifar10", retries=1)
    assert server.hits == [path, path] and (cache / "cifar10" / "cifar-10-binary.tar.gz").read_bytes() == data


def test_offline_never_touches_the_network_and_says_what_to_put_where(cache, publish, server):
    publish("svhn", DATASET_FILES["svhn"])
    root = cache / "svhn"
    message = (
        rf"svhn: offline, and the cache lacks train_32x32.mat \(from {server.url}/svhn/train_32x32.mat\), "
        rf"test_32x32.mat \(from {server.url}/svhn/test_32x32.mat\): put them in {root} "
    )
    with pytest.raises(UserError, match=message):
        load_data(DataConfig(source="svhn", offline=True))
    assert server.hits == []
    _write(root, DATASET_FILES["svhn"])
    assert load_data(DataConfig(source="svhn", offline=True)).x_shape == (3, 32, 32)
    (root / "test_32x32.mat").write_bytes(b"not it")
    expected = _sha256(DATASET_FILES["svhn"]["test_32x32.mat"])
    message = f"test_32x32.mat: checksum mismatch: expected sha256 {expected}, got {_sha256(b'not it')}"
    with pytest.raises(UserError, match=message):
        load_data(DataConfig(source="svhn", offline=True))
    assert server.hits == []
    load_data(DataConfig(source="svhn"))  # online, the bad file is replaced by a verified one
    assert server.hits == ["/svhn/test_32x32.mat"]


def test_an_unpinned_file_downloads_with_its_hash_logged_and_stale_temporaries_go(
    cache, publish, server, caplog
):
    data = DATASET_FILES["omniglot"]["chardata.mat"]
    publish("omniglot", {"chardata.mat": data}, pinned=False)
    _write(cache / "omniglot", {"tmpab12cd": b"half a file from a killed download"})
    with caplog.at_level(logging.WARNING, logger="vaelab.data.download"):
        download.fetch("omniglot")
    logged = f"none could be verified for vaelab's registry); its sha256 is {_sha256(data)}"
    assert logged in caplog.text
    assert _only_the_lock(cache / "omniglot") == ["chardata.mat"]


def test_the_registry_pins_a_cited_sha256_or_says_it_could_not(shared_data):
    for dataset in registry.DATASETS.values():
        for file in dataset.files:
            assert file.url.endswith("/" + file.name)
            if file.sha256 is None:
                assert file.hash_source.startswith("UNVERIFIED") and file.size is None
            else:
                assert (
                    len(file.sha256) == 64
                    and int(file.sha256, 16) >= 0
                    and file.hash_source.startswith("TFDS")
                )
    assert set(registry.DATASETS) | {"celeba"} == {
        "mnist", "fashion-mnist", "kmnist", "binarized-mnist", "omniglot", "caltech101-silhouettes",
        "frey-faces", "cifar10", "svhn", "celeba",
    }  # fmt: skip
    mnist = {file.name: file for file in registry.DATASETS["mnist"].files}
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):  # the real files, here
        path = shared_data / "mnist_test" / name
        assert download.sha256(path) == mnist[name].sha256 and path.stat().st_size == mnist[name].size


def test_cli_offline_is_one_line_exit_2(cache, capsys):
    from vaelab import cli

    assert cli.main(["train", "--data", "kmnist", "--offline", "--out", str(cache.parent / "run")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vaelab: error: kmnist: offline, and the cache lacks")
    assert not (cache.parent / "run").exists()
