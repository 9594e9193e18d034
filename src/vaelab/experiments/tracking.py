"""Experiment tracking: a training run fed, as it trains, to TensorBoard and MLflow.

    result = train_tracked(config, "runs/vae")   # `vaelab.train.train` with config.train.track's trackers

What every tracker receives (`train.track`: `tensorboard`, `mlflow`, both, or `none`):

- once, when the first epoch ends: the resolved config (the run's config.json, flattened to
  `section.field`) as hyperparameters, and the run directory's absolute path (`run_dir`);
- every epoch, at step = epoch: every number of the epoch's metrics.jsonl record under its own
  name (the `*_nats` terms in nats per example, `lr`, `images_per_second`, `seconds`, ...) and
  each `*_nats` term again in bits per dimension, `*_bits_per_dim` = nats / (D ln 2);
- at the end: the pictures of prior samples and of reconstructions (the figure registry's
  `samples` and `reconstructions`, drawn as vaelab draws them: ink dark on white), and for MLflow
  the run directory's files as artifacts under `run/` (weights as safetensors, JSON, as on disk).

TensorBoard writes RUN/tensorboard/, so `tensorboard --logdir runs` shows every run. MLflow logs
to `train.mlflow_uri`, else MLFLOW_TRACKING_URI, else MLflow's own local default, into the
experiment MLFLOW_EXPERIMENT_NAME (default `vaelab`), one MLflow run per run directory: a resumed
run continues its MLflow run (RUN/tracking.json keeps its id and the last epoch each tracker got,
so that the epochs between that and the resume are sent once).

The run directory stays the source of truth: a tracker that cannot be reached or refuses a call
logs one warning line and is dropped for the rest of the run; training goes on.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from vaelab import runs
from vaelab.config import RunConfig
from vaelab.train import TrainResult, train
from vaelab.viz.figures import DEFAULT_OPTIONS, FIGURE_KINDS
from vaelab.viz.run import Run

log = logging.getLogger(__name__)

TENSORBOARD_DIR = "tensorboard"
STATE_FILE = "tracking.json"
EXPERIMENT = "vaelab"  # MLflow's experiment when MLFLOW_EXPERIMENT_NAME is not set
RUN_ARTIFACTS = "run"  # the run directory's files go under this artifact path
PICTURES = ("samples", "reconstructions")  # figure kinds sent at the end
# A tracker that is down is found at its first call instead of after minutes of retries; a
# user's own setting of these wins.
MLFLOW_REQUESTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}

Hyperparameters = dict[str, str | int | float | bool]


def train_tracked(
    config: RunConfig,
    out: str | Path,
    *,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    train_fn: Callable[..., TrainResult | None] = train,
    tracked: bool = True,
    **train_args: Any,
) -> TrainResult | None:
    """`train_fn(config, out, ...)` (`vaelab.train.train`, or `vaelab.distributed.train`) with the
    trackers that the run's config names; `tracked` False trains without them (a data-parallel
    rank other than 0, which writes nothing of the run either).

    The trackers are opened when the first epoch ends, from the run's own config.json (so a
    resumed run tracks as it was started), and closed with the run's outcome: finished, failed,
    or killed (Ctrl-C). `on_epoch(record)` is called after the trackers got the epoch.
    """
    if not tracked:
        return train_fn(config, out, on_epoch=on_epoch, **train_args)
    tracking = Tracking(Path(out))

    def epoch_done(record: dict[str, Any]) -> None:
        tracking.log_epoch(record)
        if on_epoch is not None:
            on_epoch(record)

    try:
        result = train_fn(config, out, on_epoch=epoch_done, **train_args)
    except KeyboardInterrupt:
        tracking.close("KILLED")
        raise
    except BaseException:
        tracking.close("FAILED")
        raise
    tracking.finish()
    return result


class Tracker(Protocol):
    """One tracking backend. Any exception from a method drops the tracker with one warning."""

    name: str

    def start(self, run_dir: Path, params: Hyperparameters, resumed_after: int) -> None: ...

    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...

    def log_pictures(self, pictures: dict[str, np.ndarray], step: int) -> None: ...

    def log_run_dir(self, run_dir: Path) -> None: ...

    def close(self, status: str) -> None: ...

    def state(self) -> dict[str, Any]:
        """What a resumed run needs to continue this tracker (kept in RUN/tracking.json)."""
        ...


class Tracking:
    """The trackers of one run directory, fed by the trainer's epoch callback (see module doc).

    Nothing happens before the first `log_epoch`: the run directory and its config exist only
    once the first epoch is checkpointed, and a run that fails earlier leaves nothing behind.
    """

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.trackers: list[Tracker] | None = None  # opened at the first epoch
        self.logged_epoch = 0
        self.x_dims = 1

    def log_epoch(self, record: dict[str, Any]) -> None:
        """Send an epoch's record (and any epochs of a resumed run that no tracker got)."""
        try:
            self._log_epoch(record)
        except Exception as error:  # tracking's own reads and writes must not stop training either
            log.warning(
                "%s: tracking stopped (%s); training goes on, the run directory has everything",
                self.run_dir,
                one_line(error),
            )
            self.close("FAILED")

    def _log_epoch(self, record: dict[str, Any]) -> None:
        if self.trackers is None:
            self._open(record["epoch"])
        if not self.trackers:
            return
        missed = []  # epochs a resumed run trained before it was killed, that no tracker got
        if record["epoch"] > self.logged_epoch + 1:
            history = runs.read_metrics(self.run_dir)
            missed = [r for r in history if self.logged_epoch < r["epoch"] < record["epoch"]]
        for each in [*missed, record]:
            self._each("log_metrics", epoch_metrics(each, self.x_dims), each["epoch"])
        self.logged_epoch = record["epoch"]
        self._save_state()

    def finish(self) -> None:
        """Pictures and (MLflow) the run directory, then close every tracker as finished."""
        if self.trackers:
            pictures = self._pictures()
            if pictures:
                self._each("log_pictures", pictures, self.logged_epoch)
            self._each("log_run_dir", self.run_dir)
        self.close("FINISHED")

    def close(self, status: str) -> None:
        """Close every tracker with the run's outcome: FINISHED, FAILED or KILLED."""
        for tracker in self.trackers or ():
            with contextlib.suppress(Exception):  # (a tracker that fails to close has lost nothing)
                tracker.close(status)
        self.trackers = []

    def _open(self, epoch: int) -> None:
        config = runs.read_config(self.run_dir)
        self.x_dims = math.prod(runs.read_run_info(self.run_dir).x_shape)
        saved = self._read_state()
        logged = saved.get("logged_epoch", 0)
        self.logged_epoch = min(logged, epoch - 1) if type(logged) is int and logged >= 0 else 0
        params = hyperparameters(config, self.run_dir)
        self.trackers = []
        for name in config.train.track:
            if name == "none":
                continue
            own = saved.get(name)
            tracker = TRACKERS[name](config, own if isinstance(own, dict) else {})
            self.trackers.append(tracker)
            self._call(tracker, "start", self.run_dir, params, self.logged_epoch)

    def _each(self, method: str, *args: Any) -> None:
        for tracker in list(self.trackers or ()):
            self._call(tracker, method, *args)

    def _call(self, tracker: Tracker, method: str, *args: Any) -> None:
        try:
            getattr(tracker, method)(*args)
        except Exception as error:  # a tracker down or refusing must never fail the run
            log.warning(
                "%s: %s tracking stopped (%s); training goes on, the run directory has everything",
                self.run_dir,
                tracker.name,
                one_line(error),
            )
            assert self.trackers is not None
            self.trackers.remove(tracker)
            with contextlib.suppress(Exception):
                tracker.close("FAILED")

    def _pictures(self) -> dict[str, np.ndarray]:
        """The pictures of the best weights as uint8 arrays (H, W) or (H, W, 3), ink dark."""
        try:
            run = Run(self.run_dir)
            return {
                kind: as_picture(FIGURE_KINDS[kind].make(run, DEFAULT_OPTIONS).canvas) for kind in PICTURES
            }
        except Exception as error:
            log.warning("%s: no pictures for the trackers (%s)", self.run_dir, one_line(error))
            return {}

    def _read_state(self) -> dict[str, Any]:
        path = self.run_dir / STATE_FILE
        try:
            saved = json.loads(path.read_text()) if path.is_file() else {}
        except (OSError, ValueError):
            return {}  # a damaged state only costs the continuation of the tracker's run
        return saved if isinstance(saved, dict) else {}

    def _save_state(self) -> None:
        state: dict[str, Any] = {"logged_epoch": self.logged_epoch}
        state.update({tracker.name: tracker.state() for tracker in self.trackers or ()})
        runs.write_json(self.run_dir / STATE_FILE, state)


# ------------------------------------------------------------------------------------ contents


def epoch_metrics(record: dict[str, Any], x_dims: int) -> dict[str, float]:
    """A metrics.jsonl record's numbers by name (not its `epoch`, the step), and each `*_nats`
    term in bits per dimension: `*_bits_per_dim` = nats / (D ln 2), D = `x_dims`."""
    metrics = {
        name: float(value)
        for name, value in record.items()
        if name != "epoch" and isinstance(value, int | float) and not isinstance(value, bool)
    }
    for name, value in list(metrics.items()):
        if name.endswith("_nats"):
            metrics[name.removesuffix("_nats") + "_bits_per_dim"] = value / (x_dims * math.log(2))
    return metrics


def hyperparameters(config: RunConfig, run_dir: Path) -> Hyperparameters:
    """The resolved config flattened to `section.field` (lists and None as text), and `run_dir`."""
    params: Hyperparameters = {"run_dir": str(run_dir.resolve())}
    for section, fields in config.to_dict().items():
        for name, value in fields.items():
            plain = isinstance(value, str | int | float | bool)
            params[f"{section}.{name}"] = value if plain else json.dumps(value)
    return params


def as_picture(canvas: np.ndarray) -> np.ndarray:
    """A figure canvas of intensities in [0, 1] -> uint8, grey pictures inverted as vaelab draws
    them (`gray_r`: ink dark on white)."""
    x = np.clip(canvas, 0.0, 1.0)
    if x.ndim == 2:
        x = 1.0 - x
    return np.round(255 * x).astype(np.uint8)


def one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(error).__name__}: {first[:200]}"


# ------------------------------------------------------------------------------------ backends


class TensorBoardTracker:
    """Event files in RUN/tensorboard/, written with PyTorch's SummaryWriter."""

    name = "tensorboard"

    def __init__(self, config: RunConfig, saved: dict[str, Any]) -> None:
        self.writer: Any = None

    def start(self, run_dir: Path, params: Hyperparameters, resumed_after: int) -> None:
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        # purge_step hides what an earlier process logged past the epoch this one resumes after
        purge = resumed_after + 1 if resumed_after else None
        self.writer = SummaryWriter(str(run_dir / TENSORBOARD_DIR), purge_step=purge)
        for summary in hparams(params, {}):
            self.writer.file_writer.add_summary(summary)
        self.writer.flush()

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        for name, value in metrics.items():
            self.writer.add_scalar(name, value, step)
        self.writer.flush()  # a live TensorBoard shows each epoch, and a kill loses none

    def log_pictures(self, pictures: dict[str, np.ndarray], step: int) -> None:
        for name, picture in pictures.items():
            self.writer.add_image(name, picture, step, dataformats="HW" if picture.ndim == 2 else "HWC")
        self.writer.flush()

    def log_run_dir(self, run_dir: Path) -> None:
        """Nothing: the events are in the run directory already."""

    def close(self, status: str) -> None:
        if self.writer is not None:
            self.writer.close()

    def state(self) -> dict[str, Any]:
        return {}


@contextlib.contextmanager
def _mlflow_requests() -> Iterator[None]:
    """MLFLOW_REQUESTS in the environment for the block, where the user has not set them."""
    added = {name: value for name, value in MLFLOW_REQUESTS.items() if name not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


class MlflowTracker:
    """One MLflow run per run directory, through `MlflowClient` (no global active run)."""

    name = "mlflow"

    def __init__(self, config: RunConfig, saved: dict[str, Any]) -> None:
        self.uri = config.train.mlflow_uri  # None: MLFLOW_TRACKING_URI, else MLflow's default
        self.client: Any = None
        self.run_id: str | None = saved.get("run_id") if isinstance(saved.get("run_id"), str) else None

    def start(self, run_dir: Path, params: Hyperparameters, resumed_after: int) -> None:
        from mlflow import MlflowClient
        from mlflow.entities import Param

        self.client = MlflowClient(tracking_uri=self.uri)
        with _mlflow_requests():
            if self.run_id is not None and resumed_after:
                self.client.update_run(self.run_id, status="RUNNING")
                return
            name = os.environ.get("MLFLOW_EXPERIMENT_NAME", EXPERIMENT)
            experiment = self.client.get_experiment_by_name(name)
            experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(name)
            tags = {"vaelab.run_dir": str(params["run_dir"])}
            run = self.client.create_run(experiment_id, run_name=run_dir.name, tags=tags)
            self.run_id = run.info.run_id
            items = [Param(key, str(value)) for key, value in params.items()]
            for start in range(0, len(items), 100):  # (MLflow takes at most 100 params a batch)
                self.client.log_batch(self.run_id, params=items[start : start + 100])
            self.client.set_tag(self.run_id, "vaelab.units", "*_nats: nats per example")

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        with _mlflow_requests():
            assert self.run_id is not None
            items = [Metric(name, value, stamp, step) for name, value in metrics.items()]
            self.client.log_batch(self.run_id, metrics=items)

    def log_pictures(self, pictures: dict[str, np.ndarray], step: int) -> None:
        with _mlflow_requests():
            assert self.run_id is not None
            for name, picture in pictures.items():
                self.client.log_image(self.run_id, picture, f"figures/{name}.png")

    def log_run_dir(self, run_dir: Path) -> None:
        """Every file of the run directory as it is on disk, under `run/` (not the lock, nor a
        temporary of an interrupted write)."""
        with _mlflow_requests():
            assert self.run_id is not None
            for path in sorted(run_dir.rglob("*")):
                relative = path.relative_to(run_dir)
                if path.is_file() and not path.is_symlink() and not path.name.startswith("."):
                    folder = (Path(RUN_ARTIFACTS) / relative.parent).as_posix()
                    self.client.log_artifact(self.run_id, str(path), folder)

    def close(self, status: str) -> None:
        if self.client is not None and self.run_id is not None:
            with _mlflow_requests():
                self.client.set_terminated(self.run_id, status)

    def state(self) -> dict[str, Any]:
        return {"run_id": self.run_id}


TRACKERS: dict[str, Callable[[RunConfig, dict[str, Any]], Tracker]] = {
    "tensorboard": TensorBoardTracker,
    "mlflow": MlflowTracker,
}
