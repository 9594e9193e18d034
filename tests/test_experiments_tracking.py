"""Experiment tracking against the real tools: a `mlflow server` (SQLite backend store, on a free
loopback port, started once for this module) read back with `MlflowClient`, and TensorBoard's
event files read back with TensorBoard's own `EventAccumulator`; a tracking server that is down
or refuses is one warning line and a finished run."""

from __future__ import annotations

import contextlib
import http.server
import json
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from vaelab import runs
from vaelab.cli import main
from vaelab.config import RunConfig

TINY = ["--data", "digits", "--hidden", "16", "--threads", "1", "--quiet"]
X_DIMS = 64  # digits are 8x8
SERVER_START_SECONDS = 120


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory) -> str:
    """A real `mlflow server` with a SQLite backend store and local artifacts, on 127.0.0.1."""
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    argv = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}"]
    argv += ["--artifacts-destination", str(root / "artifacts"), "--workers", "1"]
    log = (root / "server.log").open("wb")
    server = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_SECONDS
        while True:
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not start: {(root / 'server.log').read_text()[-2000:]}")
            time.sleep(0.25)
        yield uri
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and its uvicorn worker, ours alone
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


def mlflow_run_of(uri: str, run_dir: Path):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("vaelab")
    found = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`vaelab.run_dir` = '{run_dir.resolve()}'"
    )
    assert len(found) == 1, found
    return client, found[0]


@pytest.mark.slow  # (a real MLflow server takes 5-25 s to start on 2 cores; training)
def test_both_trackers_get_metrics_config_pictures_and_the_run(mlflow_uri, tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    run_dir = tmp_path / "tracked"
    argv = ["train", *TINY, "--epochs", "2", "--latent-dim", "3", "--out", str(run_dir)]
    assert main([*argv, "--track", "tensorboard", "--track", "mlflow", "--mlflow-uri", mlflow_uri]) == 0
    assert "warning" not in capsys.readouterr().err.lower()
    history = runs.read_metrics(run_dir)

    # MLflow, read back from the server
    client, run = mlflow_run_of(mlflow_uri, run_dir)
    assert run.info.status == "FINISHED" and run.info.run_name == "tracked"
    for name in ("train_elbo_nats", "valid_kl_nats", "lr", "images_per_second"):
        points = client.get_metric_history(run.info.run_id, name)
        assert [(p.step, p.value) for p in points] == [(r["epoch"], pytest.approx(r[name])) for r in history]
    bits = client.get_metric_history(run.info.run_id, "valid_elbo_bits_per_dim")
    assert [p.value for p in bits] == [
        pytest.approx(r["valid_elbo_nats"] / (X_DIMS * math.log(2))) for r in history
    ]
    params = run.data.params
    assert params["model.latent_dim"] == "3" and params["data.source"] == "digits"
    assert params["model.hidden"] == "[16]" and params["run_dir"] == str(run_dir.resolve())
    assert json.loads(params["train.track"]) == ["tensorboard", "mlflow"]
    figures = {f.path for f in client.list_artifacts(run.info.run_id, "figures")}
    assert figures == {"figures/samples.png", "figures/reconstructions.png"}
    shipped = Path(client.download_artifacts(run.info.run_id, "run", str(tmp_path / "download")))
    for name in (runs.CONFIG, runs.RUN, runs.WEIGHTS, runs.METRICS):
        assert (shipped / name).read_bytes() == (run_dir / name).read_bytes(), name
    assert not (shipped / ".lock").exists()

    # TensorBoard, read back with its own reader
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    tb = [(e.step, e.value) for e in events.Scalars("valid_bound_nats")]
    assert tb == [(r["epoch"], pytest.approx(r["valid_bound_nats"])) for r in history]
    assert {"train_kl_bits_per_dim", "lr", "images_per_second"} <= set(events.Tags()["scalars"])
    assert set(events.Tags()["images"]) == {"samples", "reconstructions"}
    start = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(start).session_start_info.hparams
    assert hparams["run_dir"].string_value == str(run_dir.resolve())
    assert hparams["model.latent_dim"].number_value == 3


@pytest.mark.slow
def test_a_resumed_run_continues_its_mlflow_run_found_by_the_environment(mlflow_uri, tmp_path, monkeypatch):
    """MLFLOW_TRACKING_URI names the server; a run killed (Ctrl-C) after epoch 1 is KILLED there,
    and its resume continues the same MLflow run: each epoch once."""
    from vaelab.experiments.tracking import train_tracked

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    config = RunConfig().replace(
        data={"source": "digits"},
        model={"hidden": (16,)},
        train={"epochs": 3, "threads": 1, "track": ("mlflow",)},
    )
    run_dir = tmp_path / "resumed"

    def interrupt(record):
        if record["epoch"] == 1:
            raise KeyboardInterrupt("Ctrl-C after epoch 1")

    with pytest.raises(KeyboardInterrupt, match="after epoch 1"):
        train_tracked(config, run_dir, progress=False, on_epoch=interrupt)
    client, run = mlflow_run_of(mlflow_uri, run_dir)
    assert run.info.status == "KILLED"
    train_tracked(config, run_dir, resume=True, progress=False)
    client, resumed = mlflow_run_of(mlflow_uri, run_dir)
    assert resumed.info.run_id == run.info.run_id and resumed.info.status == "FINISHED"
    steps = [p.step for p in client.get_metric_history(run.info.run_id, "train_elbo_nats")]
    assert sorted(steps) == [1, 2, 3]


def warnings_logged(caplog, capsys) -> list[str]:
    """The warning lines of the command (pytest's log capture holds what the CLI would print on
    stderr); nothing else reached stderr."""
    assert capsys.readouterr().err == ""
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


class Refusing(http.server.BaseHTTPRequestHandler):
    """A tracking server that answers every request with 403 Forbidden."""

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.send_error(403, "tracking refused")

    do_POST = do_GET  # noqa: N815

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def refusing_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow
@pytest.mark.parametrize("server", ["down", "refusing"])
def test_a_tracking_server_down_or_refusing_is_one_warning_and_the_run_finishes(
    server, tmp_path, capsys, caplog
):
    run_dir = tmp_path / "untracked"
    with contextlib.ExitStack() as stack:
        uri = (
            f"http://127.0.0.1:{free_port()}" if server == "down" else stack.enter_context(refusing_server())
        )
        argv = [
            "train",
            *TINY,
            "--epochs",
            "2",
            "--out",
            str(run_dir),
            "--track",
            "mlflow",
            "--mlflow-uri",
            uri,
        ]
        assert main([*argv, "--track", "tensorboard"]) == 0
    warned = warnings_logged(caplog, capsys)
    assert len(warned) == 1 and "mlflow tracking stopped" in warned[0] and "training goes on" in warned[0]
    assert runs.read_run_info(run_dir).status == "finished" and len(runs.read_metrics(run_dir)) == 2
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"))  # the other tracker went on
    events.Reload()
    assert [e.step for e in events.Scalars("train_elbo_nats")] == [1, 2]


@pytest.mark.slow
def test_tensorboard_that_cannot_write_is_one_warning(tmp_path, capsys, caplog, monkeypatch):
    from vaelab.experiments import tracking

    def broken(self, run_dir, params, resumed_after):
        raise PermissionError(13, "Permission denied", str(run_dir / tracking.TENSORBOARD_DIR))

    monkeypatch.setattr(tracking.TensorBoardTracker, "start", broken)
    run_dir = tmp_path / "run"
    assert main(["train", *TINY, "--epochs", "1", "--out", str(run_dir), "--track", "tensorboard"]) == 0
    warned = warnings_logged(caplog, capsys)
    assert len(warned) == 1 and "tensorboard tracking stopped (PermissionError" in warned[0]
    assert runs.read_run_info(run_dir).status == "finished"


def test_the_untracked_default_writes_no_tracking_files(tmp_path):
    run_dir = tmp_path / "plain"
    assert main(["train", *TINY, "--epochs", "1", "--out", str(run_dir)]) == 0
    assert not (run_dir / "tensorboard").exists() and not (run_dir / "tracking.json").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--track", "none", "--track", "mlflow"], "argument --track: Value error, none cannot be combined"),
        (
            ["--track", "mlflow", "--track", "mlflow"],
            "argument --track: Value error, a tracker is named twice",
        ),
        (["--track", "wandb"], "argument --track: invalid choice: 'wandb'"),
        (["--mlflow-uri", "http://127.0.0.1:1"], "--mlflow-uri: ignored (it applies to track mlflow)"),
    ],
)
def test_bad_tracking_flags_are_one_line(argv, message, capsys, tmp_path):
    assert main(["train", *TINY, "--out", str(tmp_path / "r"), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "r").exists()


def test_epoch_metrics_convert_nats_to_bits_per_dim_exactly():
    from vaelab.experiments.tracking import epoch_metrics

    record = {"epoch": 3, "lr": 1e-3, "train_elbo_nats": -100.0, "bound": "ELBO", "images_per_second": 5}
    metrics = epoch_metrics(record, 784)
    assert metrics == {
        "lr": 1e-3,
        "train_elbo_nats": -100.0,
        "images_per_second": 5.0,
        "train_elbo_bits_per_dim": -100.0 / (784 * math.log(2)),
    }


@pytest.mark.slow
def test_tracking_that_cannot_keep_its_state_is_one_warning(tmp_path, capsys, caplog, monkeypatch):
    from vaelab.experiments import tracking

    def full_disk(self):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tracking.Tracking, "_save_state", full_disk)  # (not runs.write_json: the trainer's)
    run_dir = tmp_path / "run"
    assert main(["train", *TINY, "--epochs", "2", "--out", str(run_dir), "--track", "tensorboard"]) == 0
    warned = warnings_logged(caplog, capsys)
    assert len(warned) == 1 and "tracking stopped (OSError" in warned[0], warned
    assert runs.read_run_info(run_dir).status == "finished"


@pytest.mark.slow
def test_a_damaged_tracking_state_starts_the_trackers_afresh(tmp_path, capsys, caplog):
    from vaelab.experiments.tracking import train_tracked

    config = RunConfig().replace(
        data={"source": "digits"},
        model={"hidden": (16,)},
        train={"epochs": 2, "threads": 1, "track": ("tensorboard",)},
    )
    run_dir = tmp_path / "run"

    def stop(record):
        (run_dir / "tracking.json").write_text('{"logged_epoch": "x", "tensorboard": 3}')
        raise KeyboardInterrupt("after epoch 1")

    with pytest.raises(KeyboardInterrupt, match="after epoch 1"):
        train_tracked(config, run_dir, progress=False, on_epoch=stop)
    train_tracked(config, run_dir, resume=True, progress=False)
    assert warnings_logged(caplog, capsys) == []
    assert json.loads((run_dir / "tracking.json").read_text()) == {"logged_epoch": 2, "tensorboard": {}}
