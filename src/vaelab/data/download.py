"""The dataset cache: named datasets downloaded once with pooch, verified, and read from disk after.

`fetch(name)` returns the directory CACHE/NAME holding every file `registry.DATASETS[name]` lists,
downloading the ones that are missing:

- cache: `$VAELAB_DATA` if set, else the platform's user cache directory for vaelab
  (platformdirs: ~/.cache/vaelab on Linux); a dataset's files lie in CACHE/NAME/.
- source: each file's upstream URL, or `$VAELAB_DATA_MIRROR/NAME/FILE` when that variable names a
  mirror (a local copy of the files; the tests point it at a server on 127.0.0.1).
- verified and atomic: pooch streams a file into a temporary file beside its final name, with a
  progress bar (tqdm), checks its SHA-256 against the registry's and only then renames it into
  place; a file that fails the check is deleted, so a file under its final name has the pinned
  hash, and nothing corrupt stays in the cache. A mismatch is one line with the file, the
  expected and the actual hash.
- retries: a dropped connection or a mismatch is tried again `retries` times (pooch waits 1 s,
  2 s, ... between tries). pooch cannot resume a partial download: an interrupted file is
  deleted, and the next run downloads it again from the start.
- offline: `fetch(name, offline=True)` never touches the network; it checks the cache and names
  every missing file, where to put it and where to get it.
- one downloader: a download holds an OS lock (`flock`) on CACHE/NAME/.lock, so two processes
  fetching the same dataset take turns and the second finds the files in place; a temporary file
  left by a killed download is removed under that lock.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from vaelab.data.registry import DATASETS, RemoteDataset, RemoteFile
from vaelab.errors import UserError

log = logging.getLogger(__name__)

CACHE_ENV = "VAELAB_DATA"
MIRROR_ENV = "VAELAB_DATA_MIRROR"
RETRIES = 3
"""Tries after the first for one file: a dropped connection or a checksum mismatch is retried."""
TIMEOUT_S = 60
"""Seconds the server may be silent (connecting or between two chunks) before a try fails."""
LOCK_NAME = ".lock"
TEMPORARY_PREFIX = "tmp"
"""pooch streams each download into tempfile.NamedTemporaryFile(dir=CACHE/NAME): 'tmp...'."""


def cache_dir() -> Path:
    """Where named datasets are cached: $VAELAB_DATA, else the platform's user cache dir."""
    import platformdirs

    return Path(os.environ.get(CACHE_ENV) or platformdirs.user_cache_dir("vaelab")).expanduser()


def file_url(dataset: RemoteDataset, file: RemoteFile) -> str:
    """The file's upstream URL, or MIRROR/NAME/FILE when $VAELAB_DATA_MIRROR names a mirror."""
    mirror = os.environ.get(MIRROR_ENV)
    return f"{mirror.rstrip('/')}/{dataset.name}/{file.name}" if mirror else file.url


def sha256(path: Path) -> str:
    """The SHA-256 of a file, in hex."""
    import pooch

    return pooch.file_hash(str(path), alg="sha256")


def fetch(name: str, offline: bool = False, retries: int = RETRIES) -> Path:
    """CACHE/NAME with every file of the dataset `name` in place and verified; the missing ones
    are downloaded (never with `offline`, which refuses with the list of what is missing)."""
    dataset = DATASETS[name]
    root = cache_dir() / name
    if offline:
        check_cached(dataset, root)
        return root
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(
            f"{root}: cannot create the data cache ({err.strerror}); set {CACHE_ENV} to a writable directory"
        ) from None
    with _locked(root):
        _remove_temporaries(root)
        for file in dataset.files:
            _download(dataset, file, root, retries)
    return root


def check_cached(dataset: RemoteDataset, root: Path) -> None:
    """Refuse, in one line, unless every file of `dataset` is in `root` with its pinned hash."""
    missing = [file for file in dataset.files if not (root / file.name).is_file()]
    if missing:
        files = ", ".join(f"{file.name} (from {file_url(dataset, file)})" for file in missing)
        raise UserError(
            f"{dataset.name}: offline, and the cache lacks {files}: put "
            f"{'it' if len(missing) == 1 else 'them'} in {root} (the cache is ${CACHE_ENV}, else the "
            "user cache dir), or drop data.offline to download"
        )
    for file in dataset.files:
        if file.sha256 is not None and (actual := sha256(root / file.name)) != file.sha256:
            raise UserError(
                f"{root / file.name}: checksum mismatch: expected sha256 {file.sha256}, got {actual}; "
                "delete it, or drop data.offline to download it again"
            )


class _HashingDownloader:
    """pooch's HTTP downloader (progress bar, timeout), keeping the SHA-256 of what it fetched so
    that a mismatch can be reported with the actual hash after pooch has deleted the file."""

    def __init__(self) -> None:
        import pooch

        self.http = pooch.HTTPDownloader(progressbar=True, timeout=TIMEOUT_S)
        self.sha256: str | None = None

    def __call__(self, url: str, output_file: str, store: object) -> None:
        self.sha256 = None
        self.http(url, output_file, store)
        self.sha256 = sha256(Path(output_file))


def _download(dataset: RemoteDataset, file: RemoteFile, root: Path, retries: int) -> None:
    """Fetch one file into root unless it is there with its pinned hash (pooch checks)."""
    import pooch
    import requests

    url = file_url(dataset, file)
    known_hash = None if file.sha256 is None else f"sha256:{file.sha256}"
    store = pooch.create(
        path=root,
        base_url="",
        registry={file.name: known_hash},
        urls={file.name: url},
        retry_if_failed=retries,
    )
    downloader = _HashingDownloader()
    tries = f"{1 + retries} tr{'y' if retries == 0 else 'ies'}"
    try:
        store.fetch(file.name, downloader=downloader)
    except ValueError:
        if downloader.sha256 is None or downloader.sha256 == file.sha256:
            raise
        raise UserError(
            f"{file.name}: checksum mismatch: expected sha256 {file.sha256}, got {downloader.sha256} "
            f"(from {url}, {tries}; nothing was kept in {root})"
        ) from None
    except requests.exceptions.RequestException as err:
        raise UserError(
            f"{file.name}: download from {url} failed after {tries} ({_first_line(err)}); nothing was "
            f"kept in {root}; run again to retry, or put the file there yourself"
        ) from None
    except OSError as err:
        raise UserError(
            f"{root / file.name}: cannot write to the data cache ({err.strerror}); set {CACHE_ENV} "
            "to a writable directory"
        ) from None
    if file.sha256 is None and downloader.sha256 is not None:
        log.warning(
            "%s: downloaded from %s without a pinned checksum (none could be verified for vaelab's "
            "registry); its sha256 is %s",
            file.name,
            url,
            downloader.sha256,
        )


@contextmanager
def _locked(root: Path) -> Iterator[None]:
    """An exclusive flock on root/.lock for the duration (another downloader waits its turn)."""
    try:
        fd = os.open(root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise UserError(f"{root}: cannot lock the data cache ({err.strerror})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _remove_temporaries(root: Path) -> None:
    """Delete partial downloads a killed process left (we hold the lock, so none is in progress)."""
    names = {file.name for dataset in DATASETS.values() for file in dataset.files}
    for path in root.iterdir():
        if path.name.startswith(TEMPORARY_PREFIX) and path.name not in names and path.is_file():
            path.unlink()


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text if len(text) <= 200 else text[:197] + "..."
