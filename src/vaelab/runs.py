"""A run is a directory that describes itself, written atomically, loaded without unpickling.

    RUN/
      config.json          the resolved RunConfig
      run.json             vaelab version, data shape, status ("running" | "finished"), epochs done
      model.safetensors    the best-validation weights (what `vaelab.load` returns)
      metrics.jsonl        one JSON object per finished epoch
      checkpoint/
        last.safetensors   weights at the end of the last finished epoch
        state.pt           optimizer, RNG streams, epoch, early-stopping state, metric history
      eval.json, *.png     written by `vaelab evaluate`, `sample`, `reconstruct`, ...

Every file is written to a temporary name in the same directory and renamed into place, so a
kill at any moment leaves either the old or the new file, never half of one. `state.pt` is
written last and names the epoch of `last.safetensors`; resume trusts only what it names.
`state.pt` holds tensors, numbers and strings only and is read with
`torch.load(weights_only=True)`: no general unpickler runs on a user's file.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

import vaelab
from vaelab.config import RunConfig
from vaelab.errors import UserError

CONFIG, RUN, WEIGHTS, METRICS = "config.json", "run.json", "model.safetensors", "metrics.jsonl"
LAST, STATE = "checkpoint/last.safetensors", "checkpoint/state.pt"


def atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Call write(tmp_path), then rename tmp onto `path` (atomic on POSIX file systems)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2) + "\n")


def read_json(path: Path) -> Any:
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not valid JSON ({err})") from None


def save_weights(path: Path, module: nn.Module) -> None:
    tensors = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={"vaelab_version": vaelab.__version__}))


def load_weights(path: Path, module: nn.Module) -> None:
    """Load safetensors weights with strict key and shape matching, or say what differs."""
    if not path.is_file():
        raise UserError(f"{path}: weights file not found")
    try:
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise UserError(f"{path}: corrupt or truncated safetensors file ({err})") from None
    expected = module.state_dict()
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise UserError(
            f"{path}: weights are of another architecture "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    for key, value in tensors.items():
        if value.shape != expected[key].shape:
            raise UserError(
                f"{path}: weights are of another architecture ({key} has shape {tuple(value.shape)}, "
                f"the model expects {tuple(expected[key].shape)})"
            )
    module.load_state_dict(tensors, strict=True)


def save_state(path: Path, state: dict[str, Any]) -> None:
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_state(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"{path}: checkpoint state not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for truncated or foreign files
        raise UserError(f"{path}: corrupt or unreadable checkpoint state ({type(err).__name__})") from None


def run_info(run_dir: Path) -> dict[str, Any]:
    info = read_json(run_dir / RUN)
    if not isinstance(info, dict) or "x_shape" not in info:
        raise UserError(f"{run_dir / RUN}: not a vaelab run description")
    return info


def read_config(run_dir: Path) -> RunConfig:
    return RunConfig.from_dict(read_json(run_dir / CONFIG), where=str(run_dir / CONFIG))


def check_run_dir(run_dir: str | Path) -> Path:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: run directory not found")
    if not (run_dir / CONFIG).is_file() or not (run_dir / RUN).is_file():
        raise UserError(f"{run_dir}: not a vaelab run (no {CONFIG} / {RUN})")
    return run_dir


def load_model(run_dir: str | Path, weights: str = WEIGHTS):
    """The run's model on CPU in eval mode, weights checked against its config."""
    from vaelab.models import build_model

    run_dir = check_run_dir(run_dir)
    config = read_config(run_dir)
    model = build_model(config.model, tuple(run_info(run_dir)["x_shape"]))
    load_weights(run_dir / weights, model)
    return model.eval()


def best_record(history: list[dict[str, Any]]) -> dict[str, Any]:
    """The epoch model selection kept: the best validation bound (the ELBO in runs that predate it)."""
    return max(history, key=lambda r: r.get("valid_bound_nats", r["valid_elbo_nats"]))


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / METRICS
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
