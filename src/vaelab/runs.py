"""A run is a directory that describes itself, written by one process, loaded only after validation.

    RUN/
      .lock                the training process's lock (fcntl.flock), holding that process's PID
      config.json          the resolved RunConfig
      run.json             format version, vaelab version, data shape, status ("running" | "finished")
      model.safetensors    the best-validation weights (what `vaelab.load` returns)
      metrics.jsonl        one JSON object per finished epoch
      checkpoint/
        epoch-NNNNN.safetensors            weights at the end of the last finished epoch
        epoch-NNNNN-averaged.safetensors   their Polyak average (train.ema > 0)
        state.pt           optimizer, RNG streams, epoch, early-stopping state, metric history
      eval.json, *.png     written by `vaelab evaluate`, `sample`, `reconstruct`, ...

One writer: the training process holds an exclusive `flock` on RUN/.lock for as long as it
trains; the OS releases it when the process dies, so a killed run is never "locked forever"
(POSIX `flock`: local file systems and NFSv4; vaelab does not run on Windows).
Complete or nothing: a new run is assembled in a staging directory beside it
(`.NAME.staging-XXXXXXXX`, with its own lock) and renamed into place once config.json and
run.json are complete; a staging directory whose lock is free was left by a killed start and is
removed by the next `create_run` into the same place.

Every file is written to a temporary name in the same directory and renamed into place, so a
kill at any moment leaves either the old or the new file, never half of one; the training
process removes the temporaries of its own interrupted writes when it resumes or finishes.
Files and directories are created with the user's umask (0644 and 0755 for the usual 022).
No symbolic link inside a run is followed to write or delete (`run_subdir`), and every path a
run's own files name must resolve inside the run. `state.pt` is written last and names the
epoch's weights; resume trusts only what it names. It holds tensors, numbers and strings only
and is read with `torch.load(weights_only=True)`: no general unpickler runs on a user's file.
Every file read back is validated (pydantic models in strict mode for the JSON, explicit
checks for the checkpoint) and a violation is one `UserError` naming the file and the field.
"""

from __future__ import annotations

import errno
import fcntl
import glob
import json
import logging
import math
import os
import re
import secrets
import shutil
import stat
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Final, Literal, TypeVar

import torch
from annotated_types import Ge, Gt, Le, Len
from pydantic import BaseModel, ConfigDict, FiniteFloat, ValidationError, model_validator
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

import vaelab
from vaelab.config import RunConfig
from vaelab.errors import UserError

log = logging.getLogger(__name__)

CONFIG, RUN, WEIGHTS, METRICS = "config.json", "run.json", "model.safetensors", "metrics.jsonl"
CHECKPOINT, STATE, LOCK = "checkpoint", "checkpoint/state.pt", ".lock"
FORMAT_VERSION: Final = 1  # of run.json and the directory it describes; runs without the field are 1
STALE_UNCLAIMED_SECONDS = 3600  # a staging directory with no PID in its lock after this was killed
CHECKPOINT_WEIGHTS = re.compile(r"checkpoint/epoch-(\d{5})(-averaged)?\.safetensors")


def checkpoint_weights(epoch: int, *, averaged: bool = False) -> str:
    """The run-relative name of an epoch's checkpoint weights (`CHECKPOINT_WEIGHTS` reads it back)."""
    return f"{CHECKPOINT}/epoch-{epoch:05d}{'-averaged' if averaged else ''}.safetensors"


# ---------------------------------------------------------------------------------------------
# Writing files: atomic, with the user's umask, never through a link inside the run


def atomic_write(path: Path, write: Callable[[str], object]) -> None:
    """Call write(tmp_path) (what it returns is ignored), then rename tmp onto `path` (atomic on
    POSIX file systems).

    The temporary `.NAME.XXXXXXXX.tmp` is created by the kernel with mode 0666 & ~umask
    (tempfile.mkstemp would make it 0600), and keeps that mode, without following a link of
    that name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
    mode = stat.S_IMODE(os.fstat(fd).st_mode)  # what the umask left of 0666
    os.close(fd)
    try:
        write(str(tmp))
        os.chmod(tmp, mode)  # (a writer may replace the file: safetensors makes its own 0600)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    """Write `text` to `path` as UTF-8, atomically."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2) + "\n")


def run_subdir(run_dir: Path, name: str) -> Path:
    """RUN/name as a real directory (created if missing), refusing a symbolic link: writing or
    deleting through a link would touch files outside the run."""
    path = Path(run_dir) / name
    if path.is_symlink():
        raise UserError(f"{path}: is a symbolic link; vaelab does not write through links inside a run")
    path.mkdir(exist_ok=True)
    if not path.is_dir():
        raise UserError(f"{path}: is not a directory")
    return path


def remove_stray_temporaries(run_dir: Path) -> list[Path]:
    """Delete the temporaries that interrupted writes of the training process left behind (the
    caller holds the run's lock, so no write of its own is in flight). Returns what was removed."""
    run_dir = Path(run_dir)
    names = [f".{glob.escape(name)}.*.tmp" for name in (CONFIG, RUN, WEIGHTS, METRICS)]
    candidates = [p for pattern in names for p in run_dir.glob(pattern)]
    checkpoint = run_dir / CHECKPOINT
    if checkpoint.is_dir() and not checkpoint.is_symlink():
        candidates += checkpoint.glob(".*.tmp")
    removed = [p for p in candidates if p.is_file() or p.is_symlink()]
    for path in removed:
        path.unlink(missing_ok=True)
        log.info("removed %s, the temporary file of an interrupted write", path)
    return removed


# ---------------------------------------------------------------------------------------------
# One writer: the run's lock


class RunLock:
    """An exclusive `flock` on DIR/.lock, held until `release()` or the holder's death; the file
    holds the holder's PID so that a refused process can say who holds it."""

    def __init__(self, fd: int, path: Path) -> None:
        self.fd: int | None = fd
        self.path = path

    @classmethod
    def acquire(cls, directory: Path) -> RunLock:
        """Take the lock of `directory` or raise UserError naming the process that holds it."""
        lock = cls.try_acquire(directory, create=True)
        if lock is None:
            raise UserError(f"{directory}: {holder_phrase(directory)} is training this run")
        return lock

    @classmethod
    def try_acquire(cls, directory: Path, *, create: bool, claim: bool = True) -> RunLock | None:
        """The lock, or None while another process holds it. FileNotFoundError when there is no
        lock file and `create` is false. With `claim`, the file then holds this process's PID;
        without, it keeps the PID of whoever held it last."""
        path = Path(directory) / LOCK
        flags = os.O_RDWR | os.O_NOFOLLOW | (os.O_CREAT if create else 0)
        try:
            fd = os.open(path, flags, 0o666)
        except FileNotFoundError:
            raise
        except OSError as err:
            why = "a symbolic link" if err.errno == errno.ELOOP else err.strerror
            raise UserError(f"{path}: cannot open the run's lock file ({why})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        if claim:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(fd, path)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the last descriptor of the open file releases the flock
            self.fd = None

    def __del__(self) -> None:
        self.release()


def holder_pid(directory: Path) -> int | None:
    """The PID written in DIR/.lock (by whoever holds or last held it), or None."""
    try:
        text = (Path(directory) / LOCK).read_text(errors="replace").strip()
    except OSError:
        return None
    return int(text) if text.isdecimal() and len(text) < 12 else None


def holder_phrase(directory: Path) -> str:
    pid = holder_pid(directory)
    if pid == os.getpid():
        return f"another Trainer of this process (PID {pid})"
    return "another process" if pid is None else f"another process (PID {pid})"


def is_locked(directory: Path) -> bool:
    """Whether a process holds DIR/.lock now (without creating the file)."""
    try:
        lock = RunLock.try_acquire(directory, create=False, claim=False)
    except FileNotFoundError:
        return False
    if lock is None:
        return True
    lock.release()
    return False


# ---------------------------------------------------------------------------------------------
# Complete or nothing: staging, publishing, discarding


def _staging_name(out: Path) -> Path:
    return out.parent / f".{out.name}.staging-{secrets.token_hex(4)}"


def remove_stale_staging(out: Path) -> None:
    """Delete the staging directories of `out` that no live process holds (killed starts, or a
    replaced run whose deletion was cut short)."""
    for staging in out.parent.glob(f".{glob.escape(out.name)}.staging-*"):
        if staging.is_symlink() or not staging.is_dir():
            continue
        try:
            lock = RunLock.try_acquire(staging, create=False, claim=False)
        except FileNotFoundError:  # its creator is between mkdir and locking, or was killed there
            if time.time() - staging.stat().st_mtime > STALE_UNCLAIMED_SECONDS:
                shutil.rmtree(staging, ignore_errors=True)
            continue
        if lock is None:
            continue  # a live start
        try:  # (no PID yet: its creator may be between creating the lock file and locking it)
            age = time.time() - staging.stat().st_mtime
            if holder_pid(staging) is not None or age > STALE_UNCLAIMED_SECONDS:
                log.info("removing %s, left by a start that was killed", staging)
                shutil.rmtree(staging, ignore_errors=True)
        finally:
            lock.release()


def prepare_new_run(out: Path, *, overwrite: bool) -> RunLock | None:
    """Check that a new run may be created at `out`, before anything is loaded or written.

    Refuses a run another process holds, and without `overwrite` any non-empty directory. With
    `overwrite`, the run at `out` (or an empty directory) is to be replaced: returns its lock,
    held until `create_run` has put the new run in its place.
    """
    if out.is_symlink():
        raise UserError(f"{out}: is a symbolic link; give the run directory's real path")
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a directory")
    if not out.exists() or not any(out.iterdir()):
        return None
    if is_locked(out):
        raise UserError(f"{out}: {holder_phrase(out)} is training this run")
    if not overwrite:
        _refuse_existing(out)
    if not ((out / CONFIG).exists() or (out / RUN).exists()):
        raise UserError(f"{out}: is not a vaelab run and not empty; --overwrite replaces only a run")
    return RunLock.acquire(out)


def _refuse_existing(out: Path) -> None:
    try:
        status = read_run_info(out).status if (out / RUN).is_file() else None
    except UserError as damaged:
        raise UserError(f"{damaged}; pass --overwrite to replace this run") from None
    if status == "finished":
        raise UserError(f"{out}: a finished run is there; pass --overwrite to replace it")
    if status is not None:
        raise UserError(f"{out}: an unfinished run is there; continue it with --resume or pass --overwrite")
    raise UserError(f"{out}: directory exists and is not empty; choose another --out or pass --overwrite")


def create_run(out: Path, config: dict[str, Any], info: RunInfo, replacing: RunLock | None) -> RunLock:
    """Assemble a run (config.json, run.json) in a staging directory beside `out` and rename it
    into place; returns the new run's lock. `replacing` is the lock of the run that `out` holds
    now (from `prepare_new_run`), which is deleted only after the new run is complete."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_staging(out)
        staging = _staging_name(out)
        staging.mkdir()
    except OSError as err:
        raise UserError(f"{out}: cannot create a run there ({err.strerror})") from None
    lock = RunLock.acquire(staging)
    try:
        write_json(staging / CONFIG, config)
        write_json(staging / RUN, info.model_dump())
        if replacing is not None:
            # The old run steps aside under a staging name (deleted by the next start if a kill
            # comes first); only between these two renames is there no run at `out`.
            old = _staging_name(out)
            os.rename(out, old)
            os.rename(staging, out)
            shutil.rmtree(old, ignore_errors=True)
            replacing.release()
        else:
            try:
                os.rename(staging, out)  # (onto a missing or empty directory only)
            except OSError as err:
                if err.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
                    raise
                raise UserError(f"{out}: {holder_phrase(out)} created a run here first") from None
    except BaseException as error:
        shutil.rmtree(staging, ignore_errors=True)
        lock.release()
        if isinstance(error, OSError):  # a full disk, a read-only file system, ...
            raise UserError(f"{out}: cannot create a run there ({error.strerror})") from None
        raise
    lock.path = out / LOCK
    return lock


def discard_run(out: Path, lock: RunLock) -> None:
    """Remove a run that never reached its first checkpoint: renamed aside first, so that `out`
    goes at once, then deleted; the lock is released last."""
    aside = _staging_name(out)
    try:
        os.rename(out, aside)
        shutil.rmtree(aside, ignore_errors=True)
    finally:
        lock.release()


# ---------------------------------------------------------------------------------------------
# Reading and validating


M = TypeVar("M", bound=BaseModel)


def _validated(model: type[M], raw: Any, where: str) -> M:
    """`model` validated from `raw`, or one UserError naming the file and the first bad field."""
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        if not first["loc"] and first["type"] == "value_error":  # a rule across fields names them itself
            raise UserError(f"{where}: {first['ctx']['error']}") from None
        field = ".".join(p if isinstance(p, str) and p.isprintable() else repr(p) for p in first["loc"])
        more = f" (and {err.error_count() - 1} more problems)" if err.error_count() > 1 else ""
        value = "" if first["type"] == "missing" else f" {_short_repr(first['input'])}"
        raise UserError(f"{where}: `{field}`{value}: {first['msg'].lower()}{more}") from None


def _short_repr(value: Any) -> str:
    if isinstance(value, Tensor):
        return f"tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def read_json(path: Path) -> Any:
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: file not found")
    if not path.is_file():
        raise UserError(f"{path}: not a regular file")
    try:
        return json.loads(path.read_text())
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not valid JSON (not UTF-8 text: {err.reason})") from None
    except RecursionError:
        raise UserError(f"{path}: not valid JSON (nested too deeply)") from None
    except ValueError as err:  # JSONDecodeError, or an integer of more digits than Python converts
        raise UserError(f"{path}: not valid JSON ({err})") from None


class RunInfo(BaseModel):
    """run.json: what a run is and how far it got. Unknown fields are an error."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    format_version: Literal[1] = FORMAT_VERSION
    vaelab_version: str
    torch_version: str
    status: Literal["running", "finished"]
    epochs_done: Annotated[int, Ge(0)]
    data: str
    x_shape: Annotated[list[Annotated[int, Gt(0)]], Len(min_length=1, max_length=8)]
    num_train: Annotated[int, Ge(0)]
    num_valid: Annotated[int, Ge(0)]
    num_test: Annotated[int, Ge(0)]
    parameters: Annotated[int, Ge(0)]
    units: str
    columns: Annotated[list[str], Len(min_length=1)] | None = None  # tabular data: the column names
    # where it last trained and how (vaelab.devices.environment; the chosen precision and
    # compilation and why); absent in runs written before devices
    environment: dict[str, str | int | bool | None] | None = None
    settings: dict[str, str] | None = None


def read_run_info(run_dir: Path) -> RunInfo:
    """run.json, migrated to the current format and validated."""
    path = Path(run_dir) / RUN
    raw = read_json(path)
    if isinstance(raw, dict):
        version = raw.setdefault("format_version", 1)  # runs before format_version are version 1
        if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
            raise UserError(
                f"{path}: `format_version` {version}: written by a newer vaelab; this one reads "
                f"{FORMAT_VERSION} (vaelab {vaelab.__version__})"
            )
    else:
        raise UserError(f"{path}: not a vaelab run description (expected a JSON object)")
    return _validated(RunInfo, raw, str(path))


def run_info(run_dir: Path) -> dict[str, Any]:
    """run.json as a validated dict (see `RunInfo`)."""
    return read_run_info(run_dir).model_dump()


def read_config(run_dir: Path) -> RunConfig:
    """config.json, migrated (`migrate_config`) and validated."""
    path = Path(run_dir) / CONFIG
    return RunConfig.from_dict(migrate_config(read_json(path)), where=str(path))


def migrate_config(raw: Any) -> Any:
    """A config.json of an older vaelab in today's shape (anything else as it is, for validation
    to refuse): before `data.channels` existed, a folder's images were read as grey, so such a
    run's folder is read with channels "grey" (auto would now keep its colour); before
    `data.standardize` existed a run trained on its data as stored, so it reads as standardize off
    (not `auto`, which would now standardize a table); before `model.labelled_per_batch` existed
    an M2 run shuffled its labelled rows in with the rest, so such a run resumes with 0 (the same
    batches), not today's default."""
    if not isinstance(raw, dict) or not isinstance(raw.get("data"), dict):
        return raw
    data = dict(raw["data"])
    if "channels" not in data and str(data.get("source", "")).startswith("folder:"):
        data["channels"] = "grey"
    data.setdefault("standardize", "off")
    migrated = {**raw, "data": data}
    model = raw.get("model")
    if isinstance(model, dict) and model.get("kind") == "m2" and "labelled_per_batch" not in model:
        migrated["model"] = {**model, "labelled_per_batch": 0}
    return migrated


def check_run_dir(run_dir: str | Path) -> Path:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: run directory not found")
    if not (run_dir / CONFIG).is_file() or not (run_dir / RUN).is_file():
        raise UserError(f"{run_dir}: not a vaelab run (no {CONFIG} / {RUN})")
    return run_dir


def inside_run(run_dir: Path, relative: str, *, where: str) -> Path:
    """RUN/relative, which must resolve (links followed) to a path inside the run."""
    path = Path(run_dir) / relative
    root = Path(run_dir).resolve()
    if not path.resolve().is_relative_to(root):
        raise UserError(f"{where}: {relative!r} resolves outside the run directory")
    return path


# ---------------------------------------------------------------------------------------------
# Weights


def save_weights(path: Path, module: nn.Module) -> None:
    tensors = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={"vaelab_version": vaelab.__version__}))


def check_weights_file(path: Path, expected: dict[str, Tensor]) -> None:
    """Compare a safetensors file's header (names, shapes) with `expected` (a state_dict, which may
    live on the meta device) without reading the tensors."""
    if not path.is_file():
        raise UserError(f"{path}: weights file not found")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            shapes = {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise UserError(f"{path}: corrupt or truncated safetensors file ({err})") from None
    missing, unexpected = sorted(set(expected) - set(shapes)), sorted(set(shapes) - set(expected))
    if missing or unexpected:
        raise UserError(
            f"{path}: weights are of another architecture "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    for key, shape in shapes.items():
        if shape != tuple(expected[key].shape):
            raise UserError(
                f"{path}: weights are of another architecture ({key} has shape {shape}, "
                f"the model expects {tuple(expected[key].shape)})"
            )


def load_weights(path: Path, module: nn.Module) -> None:
    """Load safetensors weights with strict name, shape and dtype matching and finite values, or
    say what differs."""
    expected = module.state_dict()
    check_weights_file(path, expected)
    try:
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise UserError(f"{path}: corrupt or truncated safetensors file ({err})") from None
    for key, value in tensors.items():
        if value.dtype != expected[key].dtype:
            raise UserError(f"{path}: {key} is {value.dtype}, the model expects {expected[key].dtype}")
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise UserError(f"{path}: {key} holds NaN or infinite values")
    module.load_state_dict(tensors, strict=True)


def load_model(run_dir: str | Path, weights: str = WEIGHTS, device: torch.device | None = None):
    """The run's model in eval mode on `device` (default the CPU), weights checked against its
    config. Weights are stored device-free, so a run trained on any device loads on any other.

    The model is first built on the meta device (no memory) and compared with the weights
    file's header, so that a damaged run.json or config.json cannot make it allocate a model
    of another size.
    """
    from vaelab.models import build_model

    run_dir = check_run_dir(run_dir)
    config = read_config(run_dir)
    x_shape = tuple(read_run_info(run_dir).x_shape)
    path = inside_run(run_dir, weights, where=str(run_dir))
    check_weights_file(path, meta_state_dict(config, x_shape, where=f"{run_dir / RUN}: `x_shape`"))
    model = build_model(config.model, x_shape)
    load_weights(path, model)
    return model.to(device or "cpu").eval()


def check_example_shape(run_dir: Path, x_shape: tuple[int, ...], x: Tensor, source: str) -> None:
    """Data x: (N, *shape) from `source` must hold examples of the shape `x_shape` that the run's
    model was built for (a damaged config.json can name other data than run.json's x_shape)."""
    if tuple(x.shape[1:]) != tuple(x_shape):
        raise UserError(
            f"{run_dir}: the model expects examples of shape {tuple(x_shape)}, {source} gives "
            f"{tuple(x.shape[1:])}"
        )


def meta_state_dict(config: RunConfig, x_shape: tuple[int, ...], *, where: str) -> dict[str, Tensor]:
    """The state_dict of the model of `config` for examples of `x_shape`, on the meta device."""
    from vaelab.models import build_model

    try:
        with torch.device("meta"):
            return build_model(config.model, x_shape).state_dict()
    except RuntimeError as err:  # sizes whose product overflows
        raise UserError(f"{where}: {list(x_shape)} gives a model too large to build ({err})") from None


# ---------------------------------------------------------------------------------------------
# Metrics


RECONSTRUCTION = "reconstruction"
"""The `bound` of an autoencoder's records: it is selected on its reconstruction term (no ELBO)."""


class AutoencoderRecord(BaseModel):
    """One line of an autoencoder's metrics.jsonl: one finished epoch (nats per example). It
    carries the reconstruction term log p(x | z = f(x)) alone, which is also the value it is
    selected on (`valid_bound_nats`): an autoencoder has no ELBO and no KL."""

    model_config = ConfigDict(strict=True, extra="forbid")

    epoch: Annotated[int, Ge(1)]
    lr: Annotated[float, Gt(0)]
    compile_seconds: Annotated[float, Ge(0)] | None = None
    device_memory_bytes: Annotated[int, Ge(0)] | None = None  # peak on an accelerator, first epoch
    train_log_p_x_given_z_nats: float
    seconds: Annotated[float, Ge(0)]
    images_per_second: Annotated[float, Ge(0)]
    valid_log_p_x_given_z_nats: float
    valid_bound_nats: float  # the bound model selection used (see `bound`)
    bound: str


class MetricsRecord(AutoencoderRecord):
    """One line of a VAE's metrics.jsonl: the autoencoder's keys and the ELBO and its KL term;
    a hierarchical model's (`vaelab.hierarchical`) also each layer's KL, `{split}_kl_layer{i}_nats`
    for i = 1..L, as many in training as in validation."""

    model_config = ConfigDict(strict=True, extra="allow")  # only the per-layer KLs (checked below)

    train_elbo_nats: float
    train_kl_nats: float
    valid_elbo_nats: float
    valid_kl_nats: float
    # a model with a classifier (M2): on the labelled train rows and the validation rows
    train_classification_loss_nats: Annotated[float, Ge(0)] | None = None
    train_error_percent: Annotated[float, Ge(0), Le(100)] | None = None
    valid_error_percent: Annotated[float, Ge(0), Le(100)] | None = None

    @model_validator(mode="after")
    def _layer_kls(self) -> MetricsRecord:
        layers: dict[str, list[int]] = {"train": [], "valid": []}
        for key, value in (self.model_extra or {}).items():
            match = LAYER_KL.fullmatch(key)
            if match is None:
                known = ", ".join((*type(self).model_fields, "{train,valid}_kl_layer{i}_nats"))
                raise ValueError(f"{_short_repr(key)}: unknown key; known: {known}")
            if type(value) is not float or not math.isfinite(value):
                raise ValueError(f"`{key}` {_short_repr(value)}: expected a finite number")
            layers[match[1]].append(int(match[2]))
        expected = list(range(1, len(layers["train"]) + 1))
        if sorted(layers["train"]) != expected or sorted(layers["valid"]) != expected:
            raise ValueError("per-layer KLs: expected train_ and valid_kl_layer{i}_nats for each i = 1..L")
        return self


LAYER_KL = re.compile(r"(train|valid)_kl_layer([1-9][0-9]{0,2})_nats")
"""A hierarchical model's per-layer KL in metrics.jsonl."""


def migrate_record(record: Any) -> Any:
    """An epoch record of an older vaelab in today's shape (anything else is returned as it is,
    for validation to refuse):

    - an autoencoder's record carried its reconstruction term under the ELBO's keys too and a KL
      of 0, in training and validation: those four keys go. Such a record is an AE's if its
      `bound` is "reconstruction" or, in a run older than `bound`, absent (a VAE's KL, a float64
      mean over examples and latent dims, is not exactly 0); the bound is then its validation
      reconstruction term;
    - a VAE's record older than selection on the objective's bound (no `bound`, no
      `valid_bound_nats`) was selected on the ELBO: "ELBO" and the validation ELBO.
    """
    if not isinstance(record, dict):
        return record
    record = dict(record)
    old_autoencoder = record.get("bound", RECONSTRUCTION) == RECONSTRUCTION and all(
        record.get(f"{split}_kl_nats") == 0
        and record.get(f"{split}_elbo_nats") == record.get(f"{split}_log_p_x_given_z_nats")
        for split in ("train", "valid")
    )
    if old_autoencoder:
        for split in ("train", "valid"):
            record.pop(f"{split}_elbo_nats", None)
            record.pop(f"{split}_kl_nats")
        record.setdefault("valid_bound_nats", record.get("valid_log_p_x_given_z_nats"))
        record.setdefault("bound", RECONSTRUCTION)
    elif "bound" not in record and "valid_bound_nats" not in record and "valid_elbo_nats" in record:
        record.update(valid_bound_nats=record["valid_elbo_nats"], bound="ELBO")
    return record


def check_history(records: list[Any], where: Callable[[int], str]) -> list[dict[str, Any]]:
    """Epoch records, migrated (`migrate_record`) and validated as an `AutoencoderRecord` (bound
    "reconstruction") or a VAE's `MetricsRecord`, numbered 1, 2, ...; `where(i)` names record i."""
    migrated = [migrate_record(record) for record in records]
    for i, record in enumerate(migrated):
        autoencoder = isinstance(record, dict) and record.get("bound") == RECONSTRUCTION
        _validated(AutoencoderRecord if autoencoder else MetricsRecord, record, where(i))
        if record["epoch"] != i + 1:
            raise UserError(f"{where(i)}: `epoch` {record['epoch']}: expected {i + 1} (epochs in order)")
    return migrated


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """metrics.jsonl as validated records (empty if the file is missing).

    A last line without its newline that does not parse was cut by a kill during an append: it
    is dropped with a log message. Any other bad line is a UserError naming the file and line.
    """
    path = Path(run_dir) / METRICS
    if not path.is_file():
        return []
    try:
        text = path.read_text()
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not UTF-8 text ({err.reason})") from None
    lines = text.split("\n")
    records, numbers = [], []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
            numbers.append(number)
        except (ValueError, RecursionError) as err:
            if number == len(lines) and not text.endswith("\n"):
                log.warning("%s: line %d is cut short (an interrupted write); ignored", path, number)
                break
            raise UserError(f"{path}: line {number}: not valid JSON ({err})") from None
    return check_history(records, lambda i: f"{path}: line {numbers[i]}")


def best_record(history: list[dict[str, Any]]) -> dict[str, Any]:
    """The epoch model selection kept: the best validation bound, of records as `check_history`
    returns them (older runs' records migrated)."""
    return max(history, key=lambda r: r["valid_bound_nats"])


# ---------------------------------------------------------------------------------------------
# Evaluation


Nats = FiniteFloat | None


class DecompositionSection(BaseModel):
    """A nested ELBO-decomposition section of eval.json (`decomposition` or `elbo_decomposition`),
    whose values figures and reports read when the top level lacks them."""

    model_config = ConfigDict(strict=True, extra="allow")

    log_p_xz: Nats = None
    entropy: Nats = None
    kl_per_dim: list[FiniteFloat] | None = None
    active_units: Annotated[int, Ge(0)] | None = None
    active_threshold: Annotated[FiniteFloat, Ge(0)] | None = None


class InferenceGapsSection(BaseModel):
    """eval.json's `inference_gaps` (`vaelab.inference_gaps.InferenceGaps`)."""

    model_config = ConfigDict(strict=True, extra="forbid")

    num_examples: Annotated[int, Ge(1)]
    log_px: FiniteFloat
    elbo_encoder: FiniteFloat
    elbo_optimized: FiniteFloat
    approximation_gap: FiniteFloat
    approximation_gap_stderr: FiniteFloat | None
    amortization_gap: FiniteFloat
    amortization_gap_stderr: FiniteFloat | None
    method: str


class ClassificationSection(BaseModel):
    """eval.json's `classification` (`vaelab.semisupervised.ClassificationError`)."""

    model_config = ConfigDict(strict=True, extra="forbid")

    percent: Annotated[FiniteFloat, Ge(0), Le(100)]
    stderr_percent: Annotated[FiniteFloat, Ge(0)]
    num_examples: Annotated[int, Ge(1)]


class EvaluationFile(BaseModel):
    """eval.json (`vaelab.evaluate.Evaluation.to_dict`): dataset means in nats per example, every
    number finite. Unknown fields are an error; the ELBO comes with its KL, log p(x) with the ELBO."""

    model_config = ConfigDict(strict=True, extra="forbid")

    run: str | None = None
    split: Literal["train", "valid", "test"]
    num_examples: Annotated[int, Ge(0)]
    num_dims: Annotated[int, Ge(1)]
    log_p_x_given_z: FiniteFloat
    seconds_elbo: Annotated[FiniteFloat, Ge(0)] | None = None
    elbo: Nats = None
    kl: Nats = None
    log_p_xz: Nats = None
    entropy: Nats = None
    kl_per_dim: list[FiniteFloat] | None = None
    posterior_mean_variance: list[FiniteFloat] | None = None
    active_units: Annotated[int, Ge(0)] | None = None
    active_threshold: Annotated[FiniteFloat, Ge(0)] | None = None
    log_px: Nats = None
    log_px_stderr: Annotated[FiniteFloat, Ge(0)] | None = None
    k: Annotated[int, Ge(1)] | None = None
    seconds_log_px: Annotated[FiniteFloat, Ge(0)] | None = None
    precision: str = "fp32"
    log_det_nats: FiniteFloat = 0.0  # included in every log-density of x above (older files: 0)
    note: str | None = None
    given: str | None = None  # a model that uses labels: what the numbers are conditional on
    units: str | None = None
    nll: Nats = None
    gap: Nats = None
    nll_bpd: Nats = None
    nll_bpd_stderr: Annotated[FiniteFloat, Ge(0)] | None = None
    negative_elbo_bpd: Nats = None
    decomposition: DecompositionSection | None = None
    elbo_decomposition: DecompositionSection | None = None
    inference_gaps: InferenceGapsSection | None = None
    classification: ClassificationSection | None = None
    kl_layers: list[FiniteFloat] | None = None  # a hierarchical model's, per stochastic layer
    active_units_layers: list[Annotated[int, Ge(0)]] | None = None

    @model_validator(mode="after")
    def _terms_together(self) -> EvaluationFile:
        if (self.elbo is None) != (self.kl is None):
            raise ValueError("`elbo` and `kl` come together (elbo = log_p_x_given_z - kl)")
        if self.log_px is not None and self.elbo is None:
            raise ValueError("`log_px` without `elbo`")
        return self


def read_evaluation(path: Path) -> dict[str, Any]:
    """An eval.json, validated as an `EvaluationFile`, as the dict it holds."""
    path = Path(path)
    raw = read_json(path)
    if not isinstance(raw, dict):
        raise UserError(f"{path}: not a vaelab evaluation (expected a JSON object)")
    _validated(EvaluationFile, raw, str(path))
    return raw


# ---------------------------------------------------------------------------------------------
# Checkpoint state


def save_state(path: Path, state: dict[str, Any]) -> None:
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_state(path: Path) -> dict[str, Any]:
    """state.pt as stored (unvalidated beyond being a dict); see `load_checkpoint_state`."""
    if not path.is_file():
        raise UserError(f"{path}: checkpoint state not found")
    try:
        with warnings.catch_warnings(record=True) as caught:  # (a damaged file's pickle protocol, ...)
            warnings.simplefilter("always")
            state = torch.load(path, map_location="cpu", weights_only=True)
        for warning in caught:
            log.debug("%s: torch.load: %s", path, warning.message)
    except Exception as err:  # torch raises several types for truncated or foreign files
        raise UserError(f"{path}: corrupt or unreadable checkpoint state ({type(err).__name__})") from None
    if not isinstance(state, dict):
        raise UserError(f"{path}: not a vaelab checkpoint state (a {type(state).__name__})")
    return state


class CheckpointScalars(BaseModel):
    """The numbers and names of state.pt; tensors and the optimizer's state are checked apart.
    Keys added after the first runs are optional (their defaults are the Trainer's)."""

    model_config = ConfigDict(strict=True, extra="forbid", arbitrary_types_allowed=True, allow_inf_nan=False)

    epoch: Annotated[int, Ge(0)]
    best_valid_bound: float | None = None
    best_valid_elbo: float | None = None  # its name before runs selected on the objective's bound
    best_epoch: Annotated[int, Ge(0)]
    bad_epochs: Annotated[int, Ge(0)]
    lr: Annotated[float, Gt(0)] | None = None
    lr_bad_epochs: Annotated[int, Ge(0)] | None = None
    elapsed_seconds: Annotated[float, Ge(0)] | None = None
    history: list[dict[str, Any]]
    weights: str
    averaged_weights: str | None = None
    optimizer: dict[str, Any]
    generator: Tensor
    global_rng: Tensor | None = None
    device: Literal["cpu", "cuda", "mps"] | None = None  # the device type the RNG states belong to
    grad_scaler: dict[str, float | int] | None = None  # fp16's loss scaling


RNG_STATE_BYTES = torch.Generator().get_state().numel()  # the CPU generator's (mt19937) state


def load_checkpoint_state(run_dir: Path, config: RunConfig) -> dict[str, Any]:
    """RUN/checkpoint/state.pt, validated against the run's config: epoch in [0, train.epochs],
    history of that many records, weights names of that epoch inside the run, RNG states of the
    generator's size. (The optimizer's state is checked against the optimizer by
    `load_optimizer_state`.) Returns the state with legacy keys migrated."""
    path = Path(run_dir) / STATE
    state = load_state(path)
    if not all(isinstance(key, str) for key in state):
        raise UserError(f"{path}: keys must be strings")
    for key, value in state.items():  # (vaelab never stores None; an absent key takes the default)
        if value is None:
            raise UserError(f"{path}: `{key}` None: expected a value")
    scalars = _validated(CheckpointScalars, state, str(path))
    epoch, epochs = scalars.epoch, config.train.epochs
    if epoch > epochs:
        raise UserError(f"{path}: `epoch` {epoch}: beyond the run's {epochs} epochs (config train.epochs)")
    for name in ("best_epoch", "bad_epochs"):
        if getattr(scalars, name) > epoch:
            raise UserError(f"{path}: `{name}` {getattr(scalars, name)}: beyond `epoch` {epoch}")
    if len(scalars.history) != epoch:
        raise UserError(f"{path}: `history` has {len(scalars.history)} records for `epoch` {epoch}")
    state["history"] = check_history(scalars.history, lambda i: f"{path}: `history.{i}`")
    for name in ("generator", "global_rng"):
        rng = getattr(scalars, name)
        if scalars.device in (None, "cpu"):
            wrong = rng is not None and (rng.dtype != torch.uint8 or rng.shape != (RNG_STATE_BYTES,))
            expected = f"uint8 of shape ({RNG_STATE_BYTES},)"
        else:  # (an accelerator's generator state is a few bytes: seed and offset)
            wrong = rng is not None and (rng.dtype != torch.uint8 or rng.ndim != 1 or len(rng) > 64)
            expected = f"a {scalars.device} generator state (uint8, at most 64 bytes)"
        if wrong:
            raise UserError(f"{path}: `{name}` {_short_repr(rng)}: expected {expected}")
    averaged = config.train.ema > 0
    for name, want in (("weights", True), ("averaged_weights", averaged)):
        value = getattr(scalars, name)
        if value is None and want:
            raise UserError(f"{path}: `{name}` is missing (config train.ema is {config.train.ema})")
        if value is None:
            continue
        if value != checkpoint_weights(epoch, averaged=name == "averaged_weights"):
            raise UserError(
                f"{path}: `{name}` {_short_repr(value)}: expected "
                f"{checkpoint_weights(epoch, averaged=name == 'averaged_weights')!r}"
            )
        inside_run(run_dir, value, where=f"{path}: `{name}`")
    if scalars.best_valid_bound is None:
        state["best_valid_bound"] = -math.inf if scalars.best_valid_elbo is None else scalars.best_valid_elbo
    state.pop("best_valid_elbo", None)
    return state


def load_optimizer_state(optimizer: torch.optim.Optimizer, saved: Any, where: str) -> None:
    """Load `saved` into `optimizer` after checking it is the state of an optimizer of this kind
    over these parameters: the same groups and parameter indices, hyperparameters of the same
    types, and per-parameter tensors of the parameters' shapes and dtypes."""
    fresh = optimizer.state_dict()
    if not isinstance(saved, dict) or set(saved) != {"state", "param_groups"}:
        raise UserError(f"{where}: expected keys 'state' and 'param_groups'")
    groups = saved["param_groups"]
    if not isinstance(groups, list) or len(groups) != len(fresh["param_groups"]):
        raise UserError(f"{where}: `param_groups`: expected {len(fresh['param_groups'])} group(s)")
    params: dict[int, torch.Tensor] = {}  # index in the saved state -> this model's parameter
    for i, (group, expected) in enumerate(zip(groups, fresh["param_groups"], strict=True)):
        if not isinstance(group, dict) or group.get("params") != expected["params"]:
            raise UserError(f"{where}: `param_groups.{i}.params`: not this model's parameters")
        for key, value in group.items():
            if key != "params" and (key not in expected or not _same_kind(value, expected[key])):
                raise UserError(f"{where}: `param_groups.{i}.{key}` {_short_repr(value)}: unexpected")
        params.update(zip(expected["params"], optimizer.param_groups[i]["params"], strict=True))
    state = saved["state"]
    if not isinstance(state, dict):
        raise UserError(f"{where}: `state`: expected a dict")
    for index, entry in state.items():
        if index not in params or not isinstance(entry, dict):
            raise UserError(f"{where}: `state.{index}`: not a parameter of this model")
        param = params[index]
        expected_keys = {"step", "exp_avg", "exp_avg_sq"}
        if set(entry) - {"max_exp_avg_sq"} != expected_keys:
            raise UserError(
                f"{where}: `state.{index}`: keys {sorted(entry)}, expected {sorted(expected_keys)}"
            )
        for key, tensor in entry.items():
            shape, dtype = ((), torch.float32) if key == "step" else (param.shape, param.dtype)
            if (
                not isinstance(tensor, Tensor)
                or tensor.shape != shape
                or tensor.dtype != dtype
                or not torch.isfinite(tensor).all()
                or (key != "exp_avg" and (tensor < 0).any())
            ):
                raise UserError(
                    f"{where}: `state.{index}.{key}` {_short_repr(tensor)}: expected finite "
                    f"{'non-negative ' if key != 'exp_avg' else ''}{dtype} of shape {tuple(shape)}"
                )
    try:
        optimizer.load_state_dict(saved)
    except (ValueError, RuntimeError, KeyError, TypeError) as err:
        raise UserError(f"{where}: does not fit the optimizer ({err})") from None


def _same_kind(value: Any, expected: Any) -> bool:
    """Whether an optimizer hyperparameter read back has the type of a fresh one's."""
    if expected is None or isinstance(expected, bool):
        return value is None or isinstance(value, bool)
    if isinstance(expected, int | float):
        return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if isinstance(expected, tuple):
        return (
            isinstance(value, tuple)
            and len(value) == len(expected)
            and all(_same_kind(v, e) for v, e in zip(value, expected, strict=True))
        )
    return type(value) is type(expected)
