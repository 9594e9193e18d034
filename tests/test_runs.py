"""Run directories: save/load round trip, refusal of foreign or damaged checkpoints."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time

import pytest
import torch

import vaelab
from vaelab import runs
from vaelab.config import ModelConfig, RunConfig
from vaelab.errors import UserError
from vaelab.models import build_model
from vaelab.train import Trainer, train


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "digits"
    config = RunConfig().replace(
        data={"source": "digits"}, train={"epochs": 2}, model={"hidden": (32,), "latent_dim": 3}
    )
    train(config, out, progress=False)
    return out


def test_load_round_trips_weights_and_config(finished_run, tmp_path):
    model = vaelab.load(finished_run)
    assert model.x_shape == (1, 8, 8) and model.latent_dim == 3 and not model.training
    copy = tmp_path / "again.safetensors"
    runs.save_weights(copy, model)
    other = build_model(model.config, model.x_shape)
    runs.load_weights(copy, other)
    for (k, a), (_, b) in zip(model.state_dict().items(), other.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    assert runs.read_config(finished_run).model.latent_dim == 3
    assert runs.run_info(finished_run)["status"] == "finished"
    assert [r["epoch"] for r in runs.read_metrics(finished_run)] == [1, 2]


def test_posterior_prior_likelihood_shapes(finished_run):
    model = vaelab.load(finished_run)
    x = torch.rand(5, 1, 8, 8)
    q = model.posterior(x)
    assert q.batch_shape == (5,) and q.event_shape == (3,)
    assert model.prior().batch_shape == () and model.prior().event_shape == (3,)
    p = model.likelihood(torch.zeros(7, 5, 3))
    assert p.batch_shape == (7, 5) and p.event_shape == (1, 8, 8)
    assert p.log_prob(x).shape == (7, 5)


def test_weights_of_another_architecture_are_refused(finished_run):
    other = build_model(ModelConfig(hidden=(16,), latent_dim=3), (1, 8, 8))
    with pytest.raises(UserError, match="another architecture"):
        runs.load_weights(finished_run / runs.WEIGHTS, other)


def test_truncated_weights_and_state_are_refused(finished_run, tmp_path):
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes((finished_run / runs.WEIGHTS).read_bytes()[:500])
    with pytest.raises(UserError, match="corrupt or truncated safetensors"):
        runs.load_weights(cut, vaelab.load(finished_run))
    state = tmp_path / "state.pt"
    state.write_bytes((finished_run / runs.STATE).read_bytes()[:200])
    with pytest.raises(UserError, match="corrupt or unreadable"):
        runs.load_state(state)


def test_state_holds_no_pickled_objects(finished_run):
    state = torch.load(finished_run / runs.STATE, weights_only=True)  # raises on arbitrary objects
    assert state["epoch"] == 2 and "optimizer" in state and "generator" in state


def test_a_pickle_with_code_is_not_executed(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    path = tmp_path / "evil.pt"
    torch.save({"x": Evil()}, path)
    with pytest.raises(UserError, match="corrupt or unreadable"):
        runs.load_state(path)


def test_finished_run_is_not_overwritten_unless_asked(finished_run):
    before = (finished_run / runs.WEIGHTS).read_bytes()
    config = runs.read_config(finished_run)
    with pytest.raises(UserError, match="finished run is there"):
        train(config, finished_run, progress=False)
    assert (finished_run / runs.WEIGHTS).read_bytes() == before


def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "f.json"
    runs.write_json(path, {"a": 1})

    def boom(tmp):
        with open(tmp, "w") as f:
            f.write("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        runs.atomic_write(path, boom)
    assert runs.read_json(path) == {"a": 1}
    assert list(tmp_path.iterdir()) == [path]


# --- one writer, complete or nothing, failure semantics, validation, file safety (issue 16) ---

TINY = RunConfig().replace(
    data={"source": "digits"},
    model={"hidden": (16,), "latent_dim": 2},
    train={"epochs": 2, "batch_size": 128},
)


def _cli(capsys, *argv):
    from vaelab.cli import main

    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _cli_train(out, *extra):
    return [
        sys.executable,
        "-m",
        "vaelab.cli",
        "train",
        "--data",
        "digits",
        "--hidden",
        "16",
        "--threads",
        "1",
        "--quiet",
        "--out",
        str(out),
        *extra,
    ]


def _unfinished(out, epochs=1):
    """A run killed after `epochs` checkpoints (its Trainer closed as the process's death would)."""
    trainer = Trainer(TINY.replace(train={"epochs": 3}), out, progress=False)
    for _ in range(epochs):
        trainer.run_epoch()
    trainer.close()
    return out


@pytest.mark.slow
def test_two_writers_one_run_the_second_is_refused_with_the_holders_pid(tmp_path, capsys):
    out = tmp_path / "R"
    first = subprocess.Popen(_cli_train(out, "--epochs", "100000", "--seed", "1"))
    try:
        deadline = time.time() + 120
        while not (out / runs.RUN).is_file() and time.time() < deadline and first.poll() is None:
            time.sleep(0.05)
        assert (out / runs.RUN).is_file()
        config_before = (out / runs.CONFIG).read_bytes()
        for argv in (
            ("train", "--data", "digits", "--hidden", "12", "--epochs", "2", "--seed", "2", "--out", out),
            ("train", "--data", "digits", "--hidden", "12", "--epochs", "2", "--out", out, "--overwrite"),
            ("train", "--resume", out),
        ):
            code, _, err = _cli(capsys, *argv)
            assert code == 2 and err.count("\n") == 1, err
            assert f"another process (PID {first.pid}) is training this run" in err
        assert (out / runs.CONFIG).read_bytes() == config_before and first.poll() is None
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # the OS released the lock with the process: the run can be resumed (it restarts or continues)
    assert not runs.is_locked(out) and runs.holder_pid(out) == first.pid


def test_the_lock_holds_the_pid_and_is_released_by_close(tmp_path):
    trainer = Trainer(TINY, tmp_path / "run", progress=False)
    assert runs.is_locked(tmp_path / "run") and runs.holder_pid(tmp_path / "run") == os.getpid()
    with pytest.raises(UserError, match=rf"another Trainer of this process \(PID {os.getpid()}\)"):
        Trainer(TINY, tmp_path / "run", resume=True, progress=False)
    trainer.close()
    assert not runs.is_locked(tmp_path / "run")
    result = train(TINY, tmp_path / "run", resume=True, progress=False)  # killed before epoch 1: restarts
    assert result.epochs == 2 and not runs.is_locked(tmp_path / "run")


@pytest.mark.slow
@pytest.mark.parametrize("file", [runs.CONFIG, runs.RUN])
def test_a_kill_while_the_run_is_created_leaves_nothing_a_new_train_refuses(tmp_path, file, capsys):
    out = tmp_path / "R"
    # the process kills itself half-way through writing `file` in the staging directory
    script = f"""
import os, signal
from pathlib import Path
from vaelab import runs
from vaelab.cli import main
write_text = runs.write_text
def dying(path, text):
    if Path(path).name == {file!r}:
        Path(path).with_name("." + {file!r} + ".cut.tmp").write_text(text[:20])
        os.kill(os.getpid(), signal.SIGKILL)
    write_text(path, text)
runs.write_text = dying
main({_cli_train(out, "--epochs", "1")[3:]!r})
"""
    killed = subprocess.run([sys.executable, "-c", script])
    assert killed.returncode == -signal.SIGKILL
    assert not out.exists() and len(list(tmp_path.glob(".R.staging-*"))) == 1
    code, _, err = _cli(capsys, "train", "--resume", out)
    assert code == 2 and "run directory not found" in err
    code, _, err = _cli(capsys, "train", "--data", "digits", "--hidden", "16", "--epochs", "1", "--out", out)
    assert code == 0, err
    assert runs.run_info(out)["status"] == "finished" and list(tmp_path.iterdir()) == [out]


def test_a_live_staging_directory_is_left_alone(tmp_path):
    staging = tmp_path / ".R.staging-0000live"
    staging.mkdir()
    held = runs.RunLock.acquire(staging)
    train(TINY, tmp_path / "R", progress=False)
    assert staging.is_dir()
    held.release()
    train(TINY, tmp_path / "R", overwrite=True, progress=False)
    assert not staging.exists()


def test_overwrite_replaces_a_finished_run_only_once_the_new_one_is_staged(tmp_path, monkeypatch):
    out = tmp_path / "R"
    train(TINY, out, progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    write_json = runs.write_json

    def fail_on_run_json(path, obj):
        if path.name == runs.RUN and obj["status"] == "running":
            raise OSError(28, "No space left on device")
        write_json(path, obj)

    monkeypatch.setattr(runs, "write_json", fail_on_run_json)
    with pytest.raises(UserError, match=r"R: cannot create a run there \(No space left on device\)"):
        train(TINY.replace(model={"hidden": (12,)}), out, overwrite=True, progress=False)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert list(tmp_path.iterdir()) == [out] and not runs.is_locked(out)
    monkeypatch.undo()
    train(TINY.replace(model={"hidden": (12,)}), out, overwrite=True, progress=False)
    assert runs.read_config(out).model.hidden == (12,) and list(tmp_path.iterdir()) == [out]


def test_overwrite_replaces_only_a_run(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "thesis.tex").write_text("years of work")
    with pytest.raises(UserError, match="not a vaelab run and not empty"):
        train(TINY, tmp_path / "notes", overwrite=True, progress=False)
    assert (tmp_path / "notes" / "thesis.tex").read_text() == "years of work"


def test_a_second_run_published_first_wins_the_race(tmp_path):
    out = tmp_path / "R"
    out.mkdir()
    (out / runs.CONFIG).write_text("{}")
    (out / runs.LOCK).write_text("4242\n")
    info = runs.RunInfo(
        vaelab_version="0", torch_version="0", status="running", epochs_done=0, data="d",
        x_shape=[1], num_train=1, num_valid=1, num_test=1, parameters=1, units="",
    )  # fmt: skip
    with pytest.raises(UserError, match=r"another process \(PID 4242\) created a run here first"):
        runs.create_run(out, {}, info, None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["R"]


def test_divergence_before_the_first_checkpoint_leaves_nothing_behind(tmp_path, capsys):
    argv = ("train", "--data", "digits", "--hidden", "16", "--epochs", "2", "--lr", "1e10", "--out")
    for _ in range(2):  # the same command fails the same way: no half-made run refuses it
        code, _, err = _cli(capsys, *argv, tmp_path / "R")
        assert code == 2 and "training diverged at epoch 1" in err and err.count("\n") == 1
        assert list(tmp_path.iterdir()) == []


def test_a_failure_after_a_checkpoint_leaves_a_resumable_run_and_says_so(tmp_path, monkeypatch):
    import vaelab.train as training

    real = training._train_epoch

    def diverge_in_epoch_2(*args):
        if args[1] == 2:  # epoch (_train_epoch(trainer, epoch, lr))
            raise UserError("training diverged at epoch 2, step 0 (loss nan); try a smaller --lr")
        return real(*args)

    monkeypatch.setattr(training, "_train_epoch", diverge_in_epoch_2)
    out = tmp_path / "R"
    with pytest.raises(UserError, match=rf"the run stays resumable: vaelab train --resume {out}$"):
        train(TINY, out, progress=False)
    assert runs.run_info(out)["status"] == "running" and not runs.is_locked(out)
    monkeypatch.undo()
    result = train(TINY, out, resume=True, progress=False)
    assert result.epochs == 2 and runs.run_info(out)["status"] == "finished"


def test_a_full_disk_after_a_checkpoint_is_one_line_and_the_run_stays_resumable(tmp_path, monkeypatch):
    out = _unfinished(tmp_path / "R")

    def full(path, module):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(runs, "save_weights", full)
    with pytest.raises(UserError, match=r"No space left on device; the run stays resumable"):
        train(TINY, out, resume=True, progress=False)
    monkeypatch.undo()
    assert train(TINY, out, resume=True, progress=False).epochs == 3  # (the run's own config)


def test_stray_temporaries_are_removed_on_resume_and_on_finish(tmp_path):
    out = _unfinished(tmp_path / "R")
    strays = [out / ".metrics.jsonl.1a2b3c4d.tmp", out / "checkpoint" / ".state.pt.5e6f7a8b.tmp"]
    for path in strays:
        path.write_bytes(b"half")
    trainer = Trainer(TINY.replace(train={"epochs": 3}), out, resume=True, progress=False)
    assert not any(path.exists() for path in strays)
    late = out / ".run.json.0badf00d.tmp"
    late.write_text("{")  # as if a kill had cut a write of this process
    trainer.run_epoch()
    trainer.finish()
    assert not late.exists() and not [p for p in out.rglob("*.tmp")]


def test_run_json_gets_a_format_version_and_todays_runs_migrate(finished_run, tmp_path):
    assert runs.run_info(finished_run)["format_version"] == runs.FORMAT_VERSION == 1
    legacy = tmp_path / "legacy"
    shutil.copytree(finished_run, legacy)
    raw = json.loads((legacy / runs.RUN).read_text())
    del raw["format_version"]
    (legacy / runs.RUN).write_text(json.dumps(raw))
    assert runs.read_run_info(legacy).format_version == 1 and vaelab.load(legacy).latent_dim == 3


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"x_shape": "abc"}, r"run.json: `x_shape` 'abc': input should be a valid list"),
        ({"x_shape": []}, r"`x_shape` \[\]: list should have at least 1 item"),
        ({"x_shape": [1, 0, 8]}, r"`x_shape.1` 0: input should be greater than 0"),
        ({"x_shape": [1, 8.0, 8]}, r"`x_shape.1` 8.0: input should be a valid integer"),
        ({"epochs_done": -1}, r"`epochs_done` -1: input should be greater than or equal to 0"),
        ({"num_train": True}, r"`num_train` True: input should be a valid integer"),
        ({"status": "done"}, r"`status` 'done': input should be 'running' or 'finished'"),
        ({"format_version": 7}, r"`format_version` 7: written by a newer vaelab"),
        ({"format_version": "1"}, r"`format_version` '1': input should be 1"),
        ({"colour": "blue"}, r"`colour` 'blue': extra inputs are not permitted"),
        ({"a\nb": 1}, r"`'a\\nb'` 1: extra inputs are not permitted"),
        ({"status": None, "x_shape": "abc"}, r"`status` None: .* \(and 1 more problems\)"),
    ],
)
def test_a_bad_run_json_is_one_error_naming_the_file_and_field(finished_run, tmp_path, change, message):
    raw = {**json.loads((finished_run / runs.RUN).read_text()), **change}
    (tmp_path / runs.RUN).write_text(json.dumps(raw))
    with pytest.raises(UserError, match=message) as caught:
        runs.read_run_info(tmp_path)
    assert str(tmp_path / runs.RUN) in str(caught.value) and "\n" not in str(caught.value)


def test_a_missing_run_json_field_is_named(finished_run, tmp_path):
    raw = json.loads((finished_run / runs.RUN).read_text())
    del raw["x_shape"]
    (tmp_path / runs.RUN).write_text(json.dumps(raw))
    with pytest.raises(UserError, match=r"run.json: `x_shape`: field required"):
        runs.read_run_info(tmp_path)


def test_a_huge_x_shape_is_refused_before_anything_is_allocated(finished_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    raw = json.loads((run / runs.RUN).read_text())
    for shape, message in (([1, 10**9, 10**9], "too large to build"), ([1, 8, 9], "another architecture")):
        (run / runs.RUN).write_text(json.dumps({**raw, "x_shape": shape}))
        with pytest.raises(UserError, match=message):
            vaelab.load(run)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("garbage\n", r"metrics.jsonl: line 1: not valid JSON"),
        ('{"epoch": 1}\n', r"metrics.jsonl: line 1: `lr`: field required"),
        ("[1, 2]\n", r"metrics.jsonl: line 1: `` \[1, 2\]: input should be a valid dictionary"),
        ("\ufffe\n", r"metrics.jsonl: line 1: not valid JSON"),
    ],
)
def test_garbage_metrics_are_one_error_naming_file_and_line(finished_run, tmp_path, text, message):
    (tmp_path / runs.METRICS).write_text(text)
    with pytest.raises(UserError, match=message):
        runs.read_metrics(tmp_path)


def test_metrics_in_the_wrong_order_or_cut_short(finished_run, tmp_path, caplog):
    lines = (finished_run / runs.METRICS).read_text().splitlines()
    (tmp_path / runs.METRICS).write_text(lines[1] + "\n" + lines[0] + "\n")
    with pytest.raises(UserError, match=r"metrics.jsonl: line 1: `epoch` 2: expected 1"):
        runs.read_metrics(tmp_path)
    (tmp_path / runs.METRICS).write_text(lines[0] + "\n" + lines[1][:40])  # an append cut by a kill
    with caplog.at_level("WARNING"):
        assert [r["epoch"] for r in runs.read_metrics(tmp_path)] == [1]
    assert "line 2 is cut short" in caplog.text
    (tmp_path / runs.METRICS).write_text(lines[0][:40] + "\n" + lines[1] + "\n")  # not the last line
    with pytest.raises(UserError, match=r"metrics.jsonl: line 1: not valid JSON"):
        runs.read_metrics(tmp_path)


def _as_written_before(record):
    """An epoch record as vaelab wrote it before autoencoder records lost the ELBO's keys: an AE's
    reconstruction term under the ELBO's name too and a KL of 0."""
    if record["bound"] != "reconstruction":
        return record
    return {
        **record,
        **{f"{split}_elbo_nats": record[f"{split}_log_p_x_given_z_nats"] for split in ("train", "valid")},
        "train_kl_nats": 0.0,
        "valid_kl_nats": 0.0,
    }


OLD_VAE = {
    "epoch": 1,
    "lr": 1e-3,
    "train_elbo_nats": -120.5,
    "train_log_p_x_given_z_nats": -110.25,
    "train_kl_nats": 10.25,
    "seconds": 1.0,
    "images_per_second": 100.0,
    "valid_elbo_nats": -118.0,
    "valid_log_p_x_given_z_nats": -109.5,
    "valid_kl_nats": 8.5,
}
NEW_AE = {
    "epoch": 1,
    "lr": 1e-3,
    "train_log_p_x_given_z_nats": -110.25,
    "seconds": 1.0,
    "images_per_second": 100.0,
    "valid_log_p_x_given_z_nats": -109.5,
    "valid_bound_nats": -109.5,
    "bound": "reconstruction",
}


@pytest.mark.parametrize(
    ("written", "read"),
    [
        # an AE's record: the ELBO's keys and the zero KL go
        (_as_written_before(NEW_AE), NEW_AE),
        # ... also in runs older than `bound`, known by a KL of exactly 0 and ELBO = reconstruction term
        (
            {k: v for k, v in _as_written_before(NEW_AE).items() if k not in ("bound", "valid_bound_nats")},
            NEW_AE,
        ),
        # a VAE's record older than `bound` was selected on the ELBO
        (OLD_VAE, {**OLD_VAE, "valid_bound_nats": -118.0, "bound": "ELBO"}),
        # today's records stay as they are
        (NEW_AE, NEW_AE),
        (
            {**OLD_VAE, "valid_bound_nats": -117.0, "bound": "IWAE k=5"},
            {**OLD_VAE, "valid_bound_nats": -117.0, "bound": "IWAE k=5"},
        ),
    ],
)
def test_older_records_are_migrated_on_read(tmp_path, written, read):
    (tmp_path / runs.METRICS).write_text(json.dumps(written) + "\n")
    assert runs.read_metrics(tmp_path) == [read]
    assert runs.best_record([read]) == read


def test_an_autoencoder_record_with_a_kl_or_a_vae_record_without_one_is_refused(tmp_path):
    (tmp_path / runs.METRICS).write_text(json.dumps({**NEW_AE, "train_kl_nats": 1.0}) + "\n")
    with pytest.raises(UserError, match=r"line 1: `train_kl_nats` 1.0: extra inputs are not permitted"):
        runs.read_metrics(tmp_path)
    vae = {k: v for k, v in OLD_VAE.items() if k != "valid_kl_nats"}
    (tmp_path / runs.METRICS).write_text(
        json.dumps({**vae, "valid_bound_nats": -1.0, "bound": "ELBO"}) + "\n"
    )
    with pytest.raises(UserError, match=r"line 1: `valid_kl_nats`: field required"):
        runs.read_metrics(tmp_path)


def test_an_autoencoder_run_written_before_resumes_into_records_without_an_elbo(tmp_path):
    out = tmp_path / "ae"
    trainer = Trainer(TINY.replace(model={"kind": "ae"}, train={"epochs": 3}), out, progress=False)
    trainer.run_epoch()
    trainer.close()
    state = runs.load_state(out / runs.STATE)  # the run as vaelab wrote it before: state.pt and metrics.jsonl
    state["history"] = [_as_written_before(r) for r in state["history"]]
    runs.save_state(out / runs.STATE, state)
    runs.write_text(out / runs.METRICS, "".join(json.dumps(r) + "\n" for r in state["history"]))
    train(TINY, out, resume=True, progress=False)
    records = [json.loads(line) for line in (out / runs.METRICS).read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert all(set(r) == set(NEW_AE) for r in records), records


def test_files_and_directories_get_the_users_umask(tmp_path):
    old = os.umask(0o022)
    try:
        _unfinished(tmp_path / "R")
        runs.write_json(tmp_path / "derived.json", {})
    finally:
        os.umask(old)
    modes = {p.relative_to(tmp_path).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in tmp_path.rglob("*")}
    assert modes["derived.json"] == 0o644 and modes["R"] == 0o755 and modes["R/checkpoint"] == 0o755
    assert all(mode == 0o644 for name, mode in modes.items() if (tmp_path / name).is_file()), modes


def test_a_checkpoint_directory_that_is_a_link_is_refused_not_written_through(tmp_path, capsys):
    out = _unfinished(tmp_path / "R")
    elsewhere = tmp_path / "elsewhere"
    shutil.move(out / runs.CHECKPOINT, elsewhere)
    (elsewhere / "epoch-00007.safetensors").write_bytes(b"someone else's weights")
    (out / runs.CHECKPOINT).symlink_to(elsewhere, target_is_directory=True)
    before = {p.name: p.read_bytes() for p in elsewhere.iterdir()}
    code, _, err = _cli(capsys, "train", "--resume", out)
    assert code == 2 and "checkpoint: is a symbolic link" in err and err.count("\n") == 1
    assert {p.name: p.read_bytes() for p in elsewhere.iterdir()} == before


def test_the_lock_file_is_never_followed(tmp_path):
    out = _unfinished(tmp_path / "R")
    (out / runs.LOCK).unlink()
    (out / runs.LOCK).symlink_to(tmp_path / "victim")
    with pytest.raises(UserError, match=r"\.lock: cannot open the run's lock file \(a symbolic link\)"):
        Trainer(TINY, out, resume=True, progress=False)
    assert not (tmp_path / "victim").exists()


def test_the_progress_postfix_keeps_updating_and_ends_on_the_epochs_means(tmp_path, monkeypatch):
    import vaelab.train as training

    postfixes = []

    class Bar:
        def __init__(self, **kwargs):
            pass

        def update(self, n):
            pass

        def set_postfix_str(self, text):
            postfixes.append(text)

        def close(self):
            pass

    monkeypatch.setattr(training, "tqdm", Bar)
    monkeypatch.setattr(training, "POSTFIX_SECONDS", 0.0)
    config = TINY.replace(train={"epochs": 1, "batch_size": 32})  # 45 steps of digits' 1437 images
    trainer = Trainer(config, tmp_path / "every", progress=True)
    record = trainer.run_epoch()
    assert len(postfixes) == 45  # (today's `step % 20 == 0` gave 3, the last at step 40)
    monkeypatch.setattr(training, "POSTFIX_SECONDS", 1e9)
    postfixes.clear()
    Trainer(config, tmp_path / "rarely", progress=True).run_epoch()
    assert len(postfixes) == 2  # the first step and the last
    assert postfixes[-1] == (
        f"ELBO {record['train_elbo_nats']:.2f} | recon {record['train_log_p_x_given_z_nats']:.2f} "
        f"| KL {record['train_kl_nats']:.2f} nats"
    )


@pytest.mark.parametrize(
    "model, expected",
    [
        ({"kind": "m2"}, 0),  # written before the field: its batches were shuffled, so 0 keeps them
        ({"kind": "m2", "labelled_per_batch": 7}, 7),
        ({"kind": "vae"}, None),
    ],
)
def test_an_older_m2_config_resumes_with_its_own_batching(model, expected):
    migrated = runs.migrate_config({"data": {"source": "mnist5k"}, "model": model})
    assert migrated["model"].get("labelled_per_batch") == expected
