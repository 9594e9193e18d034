"""Sweeps: one run per value, finished points not re-run, interrupted points resumed, parallel workers."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import pytest
import torch

from vaelab import runs
from vaelab.cli import main
from vaelab.config import RunConfig
from vaelab.errors import UserError
from vaelab.experiments import sweep
from vaelab.train import train

TINY = RunConfig().replace(
    data={"source": "digits"},
    model={"hidden": (16,), "latent_dim": 2},
    train={"epochs": 2, "batch_size": 128, "threads": 1},
)


def _training_record(run_dir):
    """Per-epoch metrics without wall-clock fields, which differ between any two runs."""
    return [
        {k: v for k, v in r.items() if k not in ("seconds", "images_per_second")}
        for r in runs.read_metrics(run_dir)
    ]


def test_values_and_point_configs():
    assert sweep.parse_values("latent", "2, 4,8") == [2, 4, 8]
    assert sweep.parse_values("beta", "0.5,1,4") == [0.5, 1.0, 4.0]
    for kind, text, message in [
        ("latent", "2,x", "values: expected integers"),
        ("lr", "1e-3,1e-3", "repeated"),
        ("sigma", "", "at least one"),
        ("beta", "nan", "finite"),
        ("width", "1", "not one"),
    ]:
        with pytest.raises(UserError, match=message) as err:
            sweep.parse_values(kind, text)
        assert "--" not in str(err.value)  # the library names the field; the CLI names the flag
    config = sweep.point_config(TINY, "sigma", 0.3)
    assert config.model.likelihood == "gaussian" and config.model.sigma == 0.3
    assert sweep.point_config(TINY, "beta", 4.0).objective.beta == 4.0
    assert sweep.point_config(TINY, "lr", 3e-4).train.lr == 3e-4
    with pytest.raises(UserError, match="latent_dim"):
        sweep.point_config(TINY, "latent", 0)
    assert sweep.point_dir(Path("s"), "lr", 0.0003).name == "lr-0.0003"
    assert sweep.point_dir(Path("s"), "latent", 16).name == "latent-16"


@pytest.mark.slow
def test_latent_sweep_writes_csv_table_plot_and_does_not_rerun_finished_points(tmp_path, caplog, capsys):
    out = tmp_path / "latent"
    with caplog.at_level(logging.INFO, logger="vaelab.experiments.sweep"):
        result = sweep.run_sweep("latent", [1, 3], TINY, out, k=10)
    # regression: a sweep showed no progress. Each point is logged; the bar stays off a non-terminal
    done = [r.getMessage() for r in caplog.records if "done" in r.getMessage()]
    assert [m.split(" done")[0] for m in done] == ["latent sweep: point 1 of 2", "latent sweep: point 2 of 2"]
    assert sorted(m.split("(")[1].split(")")[0] for m in done) == ["latent_dim = 1", "latent_dim = 3"]
    assert capsys.readouterr().err == ""
    assert [p.value for p in result.points] == [1, 3] and result.missing == ()
    assert [p.latent_dim for p in result.points] == [1, 3]
    for p in result.points:
        assert p.epochs == 2 and p.elbo == pytest.approx(p.log_p_x_given_z - p.kl, abs=1e-6)
        assert p.kl >= 0 and 0 <= p.active_units <= p.latent_dim and p.log_px_k == 10
    with (out / "sweep.csv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["value"] for r in rows] == ["1", "3"] and "elbo_nats" in rows[0] and "kl_nats" in rows[0]
    table = (out / "sweep.md").read_text(encoding="utf-8")
    assert "| latent size Z | ELBO (nats) |" in table and table.count("\n| ") == 3
    assert (out / "sweep.png").stat().st_size > 10_000
    assert sweep.load_sweep(out) == result
    arrays = sweep.sweep_arrays(result)
    assert arrays["value"].tolist() == [1, 3] and arrays["kl"].shape == (2,)

    weights = {p.value: (out / p.run / runs.WEIGHTS).stat().st_mtime_ns for p in result.points}
    again = sweep.run_sweep("latent", [1, 3], TINY, out, k=10)
    assert again.points == result.points
    assert weights == {p.value: (out / p.run / runs.WEIGHTS).stat().st_mtime_ns for p in again.points}


@pytest.mark.slow
def test_an_interrupted_point_resumes_and_matches_an_uninterrupted_one(tmp_path):
    config = sweep.point_config(TINY, "beta", 0.5)

    class Interrupt(Exception):
        pass

    def stop_after_first_epoch(record):
        raise Interrupt("stopped after the first epoch")

    interrupted = sweep.point_dir(tmp_path / "a", "beta", 0.5)
    with pytest.raises(Interrupt, match="stopped after the first epoch"):
        train(config, interrupted, progress=False, on_epoch=stop_after_first_epoch)
    assert runs.run_info(interrupted)["status"] == "running" and len(runs.read_metrics(interrupted)) == 1
    result = sweep.run_sweep("beta", [0.5], TINY, tmp_path / "a", k=10)
    assert runs.run_info(interrupted)["status"] == "finished" and result.points[0].epochs == 2

    reference = sweep.run_sweep("beta", [0.5], TINY, tmp_path / "b", k=10)
    assert _training_record(interrupted) == _training_record(tmp_path / "b" / reference.points[0].run)


@pytest.mark.slow
def test_a_point_directory_of_another_config_is_refused(tmp_path):
    train(
        sweep.point_config(TINY, "lr", 1e-3).replace(train={"epochs": 1}),
        tmp_path / "lr-0.001",
        progress=False,
    )
    with pytest.raises(UserError, match="another configuration"):
        sweep.run_sweep("lr", [1e-3], TINY, tmp_path, k=10)
    with pytest.raises(UserError, match="is a run directory"):
        sweep.run_sweep("lr", [1e-3], TINY, tmp_path / "lr-0.001", k=10)


@pytest.mark.slow
def test_parallel_points_run_in_spawned_single_thread_workers(tmp_path):
    threads = torch.get_num_threads()
    result = sweep.run_sweep(
        "beta", [0.5, 2.0], TINY.replace(train={"threads": None}), tmp_path, jobs=2, k=10
    )
    assert torch.get_num_threads() == threads  # the parent's setting is untouched
    assert [p.value for p in result.points] == [0.5, 2.0]
    assert all(runs.run_info(tmp_path / p.run)["status"] == "finished" for p in result.points)
    # beta weighs the KL: the heavier weight buys a smaller rate
    assert result.points[1].kl < result.points[0].kl
    assert json.loads((tmp_path / "sweep.json").read_text())["kind"] == "beta"


@pytest.mark.slow
def test_cli_sweep(tmp_path, capsys):
    out = tmp_path / "s"
    argv = [
        "sweep",
        "sigma",
        "--values",
        "0.1,0.3",
        "--data",
        "digits",
        "--hidden",
        "16",
        "--epochs",
        "1",
        "--out",
        str(out),
        "--k",
        "5",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "# sigma sweep" in printed and "written:" in printed
    assert runs.read_config(out / "sigma-0.3").model.likelihood == "gaussian"
    assert main(["sweep", "latent", "--values", "2,two", "--out", str(out)]) == 2
    assert "--values" in capsys.readouterr().err
    assert main(["sweep", "latent", "--values", "2", "--out", str(out), "--jobs", "0"]) == 2
    assert "argument --jobs: Input should be greater than or equal to 1" in capsys.readouterr().err


@pytest.mark.slow
def test_a_point_another_process_trains_is_skipped_not_trained_twice(tmp_path):
    out = tmp_path / "s"
    taken = sweep.point_dir(out, "beta", 2.0)

    def stop(record):
        raise KeyboardInterrupt("stopped")  # a run of this point, interrupted after its first epoch

    with pytest.raises(KeyboardInterrupt, match="stopped"):
        train(sweep.point_config(TINY, "beta", 2.0), taken, progress=False, on_epoch=stop)
    lock = runs.RunLock.acquire(taken)  # as another worker resuming this point holds it
    try:
        result = sweep.run_sweep("beta", [0.5, 2.0], TINY, out, k=10)
        assert len(runs.read_metrics(taken)) == 1  # not touched
    finally:
        lock.release()
    assert [p.value for p in result.points] == [0.5] and result.missing == (2.0,)
    assert "Not finished: 2." in (out / "sweep.md").read_text()
    again = sweep.run_sweep("beta", [0.5, 2.0], TINY, out, k=10)  # the lock is gone: the point resumes
    assert [p.value for p in again.points] == [0.5, 2.0] and again.points[0] == result.points[0]
    assert runs.run_info(taken)["status"] == "finished" and len(runs.read_metrics(taken)) == 2
