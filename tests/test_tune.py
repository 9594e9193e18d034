"""vaelab tune: search spaces, workers sharing one study, a killed worker, pruning."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest

from vaelab import runs
from vaelab.cli import main
from vaelab.config import RunConfig
from vaelab.errors import UserError
from vaelab.experiments.tune import (
    ChoiceParam,
    Engine,
    FloatParam,
    IntParam,
    load_search_space,
    parse_param,
    read_search_space,
    search_space_from,
    tune,
)

TINY = RunConfig().replace(
    data={"source": "digits"},
    model={"hidden": (16,), "latent_dim": 2},
    train={"epochs": 2, "batch_size": 128, "threads": 1},
)
LR = {"train.lr": FloatParam(type="float", low=1e-3, high=1e-2, log=True)}


def trials_of(out, study="vaelab") -> list[optuna.trial.FrozenTrial]:
    return Engine(str(out), f"journal:{out / 'study.journal'}", study, 0).open().get_trials()


def test_search_space_from_a_file_or_flags(tmp_path):
    yaml_file = tmp_path / "space.yaml"
    yaml_file.write_text(
        "train.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}\n"
        "model.latent_dim: {type: int, low: 2, high: 8}\n"
        "model.hidden: {type: categorical, choices: [[16], [32, 16]]}\n"
    )
    space = read_search_space(yaml_file, TINY)
    assert space == {
        "train.lr": FloatParam(type="float", low=1e-4, high=1e-2, log=True),
        "model.latent_dim": IntParam(type="int", low=2, high=8),
        "model.hidden": ChoiceParam(type="categorical", choices=([16], [32, 16])),
    }
    json_file = tmp_path / "space.json"
    json_file.write_text(json.dumps({name: p.model_dump(mode="json") for name, p in space.items()}))
    assert read_search_space(json_file, TINY) == space
    assert parse_param("train.lr=float:1e-4:1e-2:log") == (
        "train.lr",
        {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
    )
    assert parse_param("model.hidden=choice:16|32,16") == (
        "model.hidden",
        {"type": "categorical", "choices": [16, [32, 16]]},
    )
    assert parse_param("model.activation=choice:relu|tanh")[1]["choices"] == ["relu", "tanh"]
    both = load_search_space(yaml_file, ("model.latent_dim=int:2:4",), TINY)
    assert both["model.latent_dim"] == IntParam(type="int", low=2, high=4) and len(both) == 3


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"train.speed": {"type": "float", "low": 1, "high": 2}}, "train.speed: not a config field"),
        ({"lr": {"type": "float", "low": 1, "high": 2}}, "lr: not a config field"),
        ({"train.lr": {"type": "float", "low": 0.1, "high": 0.01}}, "low 0.1 is above high 0.01"),
        ({"train.lr": {"type": "float", "low": 0, "high": 0.01, "log": True}}, "log scale needs low > 0"),
        (
            {"model.latent_dim": {"type": "int", "low": 0, "high": 4}},
            "model.latent_dim: 0: Input should be greater",
        ),
        (
            {"model.latent_dim": {"type": "int", "low": 1.5, "high": 4}},
            "low: Input should be a valid integer",
        ),
        (
            {"model.flow_steps": {"type": "int", "low": 1, "high": 4}},
            "model.flow_steps: ignored .it applies to the iaf posterior",
        ),
        ({"model.net": {"type": "categorical", "choices": ["mlp", "mlp"]}}, "a choice is repeated"),
        (
            {"model.net": {"type": "categorical", "choices": ["mlp", "transformer"]}},
            'model.net: "transformer": Input should be',
        ),
        ({"train.lr": {"type": "normal", "low": 1, "high": 2}}, "does not match any of the expected tags"),
        ({"train.lr": {"type": "float", "low": 1, "high": 2, "step": 1}}, "unknown key"),
        ({}, "the search space is empty"),
        ([1, 2], "expected a mapping"),
    ],
)
def test_a_bad_search_space_is_one_line_naming_the_parameter(raw, message):
    with pytest.raises(UserError, match=message) as err:
        search_space_from(raw, TINY, "space.json")
    assert str(err.value).startswith("space.json") and "\n" not in str(err.value)


def test_bad_space_files_and_flags(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train.lr: {type: float, low: [\n")
    with pytest.raises(UserError, match="bad.yaml: not valid YAML"):
        read_search_space(bad, TINY)
    with pytest.raises(UserError, match="nothing.json: file not found"):
        read_search_space(tmp_path / "nothing.json", TINY)
    for text, message in [
        ("train.lr", "expected NAME=float:LOW:HIGH"),
        ("train.lr=float:1e-4", "expected float:LOW:HIGH or float:LOW:HIGH:log"),
        ("train.lr=float:a:b", "LOW and HIGH must be numbers"),
        ("model.latent_dim=int:2:4:linear", "expected int:LOW:HIGH or int:LOW:HIGH:log"),
    ]:
        with pytest.raises(UserError, match=message):
            parse_param(text)
    out = tmp_path / "study"
    assert main(["tune", "--out", str(out), "--param", "train.lr=float:1:0"]) == 2
    assert "vaelab: error: argument --param: train.lr: low 1.0 is above high 0.0" in capsys.readouterr().err
    assert main(["tune", "--out", str(out)]) == 2
    assert "give a search space" in capsys.readouterr().err
    argv = ["tune", "--out", str(out), "--param", "train.lr=float:1e-3:1e-2", "--jobs", "2"]
    assert main([*argv, "--storage", f"sqlite:///{out}/s.db"]) == 2
    assert "SQLite is for one process" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.slow
def test_two_workers_share_one_study_no_trial_lost_or_run_twice(tmp_path):
    out = tmp_path / "study"
    result = tune(TINY, LR, out, trials=4, jobs=2, pruner="none")
    trials = trials_of(out)
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4  # the journal file both workers shared
    assert os.getpid() not in {t.user_attrs["worker"]["pid"] for t in trials}  # all ran in the workers
    assert sorted(t.user_attrs["run"] for t in trials) == [f"trial-000{i}" for i in range(4)]
    assert sorted(p.name for p in out.glob("trial-*")) == [f"trial-000{i}" for i in range(4)]
    for t in trials:  # each run trained once, with its trial's parameters, to the end
        run = out / t.user_attrs["run"]
        assert runs.run_info(run)["status"] == "finished" and len(runs.read_metrics(run)) == 2
        assert runs.read_config(run).train.lr == t.params["train.lr"]
        assert t.value == runs.best_record(runs.read_metrics(run))["valid_bound_nats"]
    best = max(trials, key=lambda t: t.value)
    assert result.best_run == out / best.user_attrs["run"] and (out / "best").resolve() == result.best_run
    again = tune(TINY, LR, out, trials=4, jobs=2, pruner="none")  # a finished study: nothing more runs
    assert again.best_run == result.best_run and len(trials_of(out)) == 4


def test_each_trial_is_tracked_as_a_run_of_its_own(tmp_path):
    """`--track` reaches every trial: TensorBoard's own reader finds each trial's epochs."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "study"
    tune(TINY.replace(train={"track": ("tensorboard",)}), LR, out, trials=2, pruner="none")
    for run in sorted(out.glob("trial-*")):
        events = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0})
        events.Reload()
        logged = [(e.step, e.value) for e in events.Scalars("valid_bound_nats")]
        history = runs.read_metrics(run)
        assert logged == [(r["epoch"], pytest.approx(r["valid_bound_nats"])) for r in history]


@pytest.mark.slow
def test_a_worker_killed_mid_trial_is_resumed_and_the_study_goes_on(tmp_path):
    out = tmp_path / "study"
    argv = [
        *("tune", "--data", "digits", "--hidden", "16", "--epochs", "12", "--batch-size", "32"),
        *("--threads", "1"),
        *("--param", "train.lr=float:1e-3:1e-2", "--trials", "2", "--jobs", "2", "--pruner", "none"),
        *("--out", str(out)),
    ]
    proc = subprocess.Popen([sys.executable, "-m", "vaelab", *argv], start_new_session=True)
    try:  # kill every worker once a trial has checkpointed an epoch, mid-trial
        deadline = time.monotonic() + 120
        while not any(
            len(runs.read_metrics(r)) >= 1 for r in out.glob("trial-*") if (r / runs.RUN).is_file()
        ):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    killed = [t for t in trials_of(out) if t.state.name == "RUNNING"]
    assert killed
    assert main(argv) == 0  # the same command again
    trials = trials_of(out)
    lost = [t for t in trials if t.user_attrs.get("lost")]
    assert sorted(t.number for t in lost) == sorted(t.number for t in killed)
    assert all(t.state.name == "FAIL" for t in lost)
    done = [t for t in trials if not t.user_attrs.get("lost")]
    assert [t.state.name for t in done] == ["COMPLETE"] * 2  # the study goes on, to its 2 trials
    resumed = {t.user_attrs["run"] for t in done} & {t.user_attrs["run"] for t in lost}
    assert resumed  # a killed trial's run was resumed by the trial that took its parameters again
    for run in resumed:
        assert runs.run_info(out / run)["status"] == "finished" and len(runs.read_metrics(out / run)) == 12
    assert sorted(p.name for p in out.glob("trial-*")) == sorted(t.user_attrs["run"] for t in done)


@pytest.mark.slow
def test_pruning_stops_a_bad_trial_early(tmp_path):
    out = tmp_path / "study"
    config = TINY.replace(train={"epochs": 4})
    journal = f"journal:{out}/study.journal"
    fixed_lr = {"train.lr": FloatParam(type="float", low=3e-3, high=3e-3)}
    tune(config, fixed_lr, out, trials=1, prune_startup=1, storage=journal)
    tiny_lr = {"train.lr": FloatParam(type="float", low=1e-7, high=1e-7)}  # learns nothing: below at epoch 1
    tune(config, tiny_lr, out, trials=2, prune_startup=1, storage=journal)
    other_choices = {"train.lr": ChoiceParam(type="categorical", choices=(1e-3,))}
    with pytest.raises(UserError, match="study vaelab: train.lr: .*name another study"):
        tune(config, other_choices, out, trials=3, storage=journal)
    good, pruned = trials_of(out)
    assert (good.state.name, pruned.state.name) == ("COMPLETE", "PRUNED")
    assert pruned.last_step == 1 and len(runs.read_metrics(out / pruned.user_attrs["run"])) == 1
    assert runs.run_info(out / pruned.user_attrs["run"])["status"] == "finished"  # an ordinary, shorter run
    assert len(runs.read_metrics(out / good.user_attrs["run"])) == 4
