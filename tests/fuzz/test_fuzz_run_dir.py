"""Fuzzing a run directory (issue 16): a finished tiny run whose config.json, run.json,
metrics.jsonl, checkpoint/state.pt or weights are mutated is either accepted or refused with one
line and exit status 2 by `evaluate`, `sample` and `train --resume`; nothing raises and nothing
is written outside the run.

Hypothesis draws the mutations, seeded (`derandomize=True`) so that every run of the suite tries
the same inputs; VAELAB_FUZZ_EXAMPLES sets the examples per target (default 5: the file takes
seconds; a release check runs e.g. 200). Each defect the issue found is a named case below.
Self-contained: its fixtures live here, not in a conftest.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from vaelab import runs
from vaelab.cli import main
from vaelab.config import RunConfig
from vaelab.errors import UserError
from vaelab.train import Trainer, train

EXAMPLES = int(os.environ.get("VAELAB_FUZZ_EXAMPLES", "5"))
FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TINY = RunConfig().replace(
    data={"source": "digits"}, model={"hidden": (16,), "latent_dim": 2}, train={"epochs": 2, "threads": 1}
)
COMMANDS = ("evaluate", "sample", "resume")
EPOCHS_PER_RESUME = 2  # a mutation that makes resume train (more epochs, a restart) is cut after this


class EnoughTraining(Exception):
    """Raised by the harness when an accepted resume has trained long enough to show it runs."""


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fuzz") / "run"
    train(TINY, out, progress=False)
    return out


@contextlib.contextmanager
def copy_of(finished: Path, *, running: bool = False, prepare=None) -> Iterator[Path]:
    """A fresh copy of the finished run (marked running when `running`, then changed by
    `prepare(run)`) in its own directory beside a decoy directory; on leaving, asserts that
    nothing outside the run changed."""
    root = Path(tempfile.mkdtemp(prefix="vaelab-fuzz-"))
    run = root / "run"
    shutil.copytree(finished, run)
    (root / "outside").mkdir()
    (root / "outside" / "epoch-00001.safetensors").write_bytes(b"not yours")
    if running:
        info = json.loads((run / runs.RUN).read_text())
        (run / runs.RUN).write_text(json.dumps({**info, "status": "running"}))
    if prepare is not None:
        prepare(run)
    before = _outside(root)
    try:
        yield run
        assert _outside(root) == before, "a file outside the run was written or deleted"
    finally:
        shutil.rmtree(root)


def _outside(root: Path) -> dict[str, tuple[int, int]]:
    return {
        p.relative_to(root).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if not p.is_relative_to(root / "run") and not p.is_symlink()
    }


def check_command(run: Path, command: str) -> tuple[int, str]:
    """Run `command` on `run` through the CLI: exit 0, or exit 2 with one line; never raises.
    Returns the exit status and stderr."""
    argv = {
        "evaluate": ["evaluate", str(run), "--k", "2"],
        "sample": ["sample", str(run), "--n", "4"],
        "resume": ["train", "--resume", str(run), "--quiet"],
    }[command]
    threads = torch.get_num_threads()
    epochs = 0
    inner = Trainer._run_epoch

    def bounded(trainer):
        nonlocal epochs
        epochs += 1
        if epochs > EPOCHS_PER_RESUME:
            raise EnoughTraining
        return inner(trainer)

    out, err = io.StringIO(), io.StringIO()
    try:
        Trainer._run_epoch = bounded
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            with warnings.catch_warnings(record=True) as caught:  # a warning would be a second line
                warnings.simplefilter("always")
                code = main(argv)
    except EnoughTraining:
        code = 0
    finally:
        Trainer._run_epoch = inner
        torch.set_num_threads(threads)
    assert not caught, [str(w.message) for w in caught]
    if code != 0:
        lines = err.getvalue().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("vaelab: error: "), err.getvalue()
    return code, err.getvalue()


# --- mutations -------------------------------------------------------------------------------

# Integers stay small here: huge values in config.json (train.threads 10**9 makes torch crash,
# model sizes of 10**9 exhaust memory) are the config layer's limits, fuzzed with the config.
json_leaves = (
    st.none()
    | st.booleans()
    | st.integers(-3, 70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=6)
    | st.sampled_from(["../../etc/passwd", "running", "finished", "digits", "abc"])
)
# Keys without control characters: config.py's messages quote unknown keys as they are, so a
# key holding a newline breaks the one-line error (reported to its owner; run.json's own
# messages escape them, see tests/test_runs.py).
keys = st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=6)
json_values = st.recursive(
    json_leaves,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3),
    max_leaves=5,
)


def paths_in(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path (keys and indices) to a node of nested dicts, lists and tuples."""
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, item in value.items():
            found += paths_in(item, (*prefix, key))
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            found += paths_in(item, (*prefix, i))
    return found


def replaced(value: Any, path: tuple, new: Any, *, delete: bool = False) -> Any:
    """A copy of `value` with the node at `path` set to `new` (or deleted)."""
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        copy = dict(value)
        if delete and not rest:
            del copy[head]
        else:
            copy[head] = replaced(value[head], rest, new, delete=delete)
        return copy
    items = list(value)
    if delete and not rest:
        del items[head]
    else:
        items[head] = replaced(items[head], rest, new, delete=delete)
    return type(value)(items)


@st.composite
def mutated_tree(draw, tree: Any, values) -> Any:
    """`tree` with one node replaced by a drawn value, deleted, or given an extra key."""
    path = draw(st.sampled_from(paths_in(tree)))
    kind = draw(st.sampled_from(["replace", "delete", "add"]))
    if kind == "delete":
        return replaced(tree, path, None, delete=True)
    if kind == "add":
        return replaced(tree, (), {**tree, draw(keys): draw(values)})
    return replaced(tree, path, draw(values))


@st.composite
def mutated_bytes(draw, data: bytes) -> bytes:
    """`data` cut at a drawn length, or with a drawn byte changed."""
    at = draw(st.integers(0, len(data) - 1))
    if draw(st.booleans()):
        return data[:at]
    return data[:at] + bytes([draw(st.integers(0, 255))]) + data[at + 1 :]


def tensors() -> st.SearchStrategy[torch.Tensor]:
    dtypes = st.sampled_from([torch.uint8, torch.float32, torch.float64, torch.int64, torch.bool])
    shapes = st.lists(st.integers(0, 4), max_size=3)
    fills = st.sampled_from([0.0, 1.0, float("nan"), -1.0])
    return st.builds(lambda s, d, f: torch.full(s, f).to(d), shapes, dtypes, fills)


# --- the targets -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", [runs.CONFIG, runs.RUN])
@FUZZ
@given(data=st.data())
def test_mutated_json_files_are_accepted_or_refused_in_one_line(finished, name, data):
    original = (finished / name).read_bytes()
    command = data.draw(st.sampled_from(COMMANDS))
    if data.draw(st.booleans()):
        content = json.dumps(data.draw(mutated_tree(json.loads(original), json_values))).encode()
    else:
        content = data.draw(mutated_bytes(original))
    with copy_of(finished, running=command == "resume") as run:
        if name == runs.RUN and command == "resume":  # keep the mutation, not the "running" marker
            content = content.replace(b'"finished"', b'"running"')
        (run / name).write_bytes(content)
        check_command(run, command)


@FUZZ
@given(data=st.data())
def test_mutated_metrics_are_records_or_one_error(finished, data):
    original = (finished / runs.METRICS).read_bytes()
    lines = original.decode().splitlines()
    if data.draw(st.booleans()):
        i = data.draw(st.integers(0, len(lines) - 1))
        lines[i] = json.dumps(data.draw(mutated_tree(json.loads(lines[i]), json_values)))
        content = ("\n".join(lines) + "\n").encode()
    else:
        content = data.draw(mutated_bytes(original))
    with copy_of(finished) as run:
        (run / runs.METRICS).write_bytes(content)
        try:
            records = runs.read_metrics(run)
        except UserError as error:
            assert "\n" not in str(error) and str(run / runs.METRICS) in str(error)
        else:
            assert [r["epoch"] for r in records] == list(range(1, len(records) + 1))


def _state_values():
    return (
        json_leaves
        | tensors()
        | st.sampled_from(
            [
                "checkpoint/epoch-00002.safetensors",
                "checkpoint/../../outside/epoch-00001.safetensors",
                "/etc/passwd",
                (0.9, 0.999),
                [],
                {},
                10**6,
                -5,
            ]
        )
    )


@FUZZ
@given(data=st.data())
def test_mutated_checkpoint_state_is_resumed_or_refused_in_one_line(finished, data):
    state = torch.load(finished / runs.STATE, weights_only=True)
    with copy_of(finished, running=True) as run:
        if data.draw(st.booleans()):
            torch.save(data.draw(mutated_tree(state, _state_values())), run / runs.STATE)
        else:
            (run / runs.STATE).write_bytes(data.draw(mutated_bytes((finished / runs.STATE).read_bytes())))
        check_command(run, "resume")


@FUZZ
@given(data=st.data())
def test_mutated_weights_are_loaded_or_refused_in_one_line(finished, data):
    name = data.draw(st.sampled_from([runs.WEIGHTS, runs.checkpoint_weights(2)]))
    command = data.draw(st.sampled_from(COMMANDS))
    tensors_in_file = load_file(finished / name)
    with copy_of(finished, running=command == "resume") as run:
        if data.draw(st.booleans()):
            key = data.draw(st.sampled_from(sorted(tensors_in_file)))
            kind = data.draw(st.sampled_from(["drop", "add", "reshape", "retype", "nan"]))
            value = tensors_in_file[key]
            changed = dict(tensors_in_file)
            if kind == "drop":
                del changed[key]
            elif kind == "add":
                changed["extra.weight"] = torch.zeros(2)
            elif kind == "reshape":
                changed[key] = torch.zeros(value.numel() + 1)
            elif kind == "retype":
                changed[key] = value.to(torch.float64)
            else:
                changed[key] = torch.full_like(value, float("nan"))
            save_file(changed, run / name)
        else:
            (run / name).write_bytes(data.draw(mutated_bytes((finished / name).read_bytes())))
        check_command(run, command)


# --- named regression cases (issue 16) -------------------------------------------------------


def _set_state(run: Path, change) -> None:
    state = torch.load(run / runs.STATE, weights_only=True)
    torch.save(change(state), run / runs.STATE)


def _with(**values):
    return lambda state: {**state, **values}


def _without(key):
    return lambda state: {k: v for k, v in state.items() if k != key}


def _optimizer(change):
    return lambda state: {**state, "optimizer": change(state["optimizer"])}


def _first_param_state(key, value):
    def change(optimizer):
        state = {i: dict(entry) for i, entry in optimizer["state"].items()}
        state[0][key] = value
        return {**optimizer, "state": state}

    return change


STATE_CASES = {
    "not-a-dict": (lambda state: [state], "not a vaelab checkpoint state"),
    "no-epoch": (_without("epoch"), r"`epoch`: field required"),
    "epoch-negative": (_with(epoch=-5), r"`epoch` -5: input should be greater than or equal to 0"),
    "epoch-huge": (_with(epoch=10**6), r"`epoch` 1000000: beyond the run's 2 epochs"),
    "epoch-string": (_with(epoch="2"), r"`epoch` '2': input should be a valid integer"),
    "epoch-tensor": (_with(epoch=torch.tensor(2)), r"`epoch` tensor of shape \(\)"),
    "weights-escape": (_with(weights="../../etc/passwd"), r"`weights` '../../etc/passwd': expected"),
    "weights-absolute": (_with(weights="/etc/passwd"), r"`weights` '/etc/passwd': expected"),
    "weights-other-epoch": (
        _with(weights="checkpoint/epoch-00001.safetensors"),
        r"`weights` 'checkpoint/epoch-00001.safetensors': expected 'checkpoint/epoch-00002",
    ),
    "weights-none": (_with(weights=None), r"`weights` None: expected a value"),
    "optimizer-empty": (_with(optimizer={}), r"`optimizer`: expected keys 'state' and 'param_groups'"),
    "optimizer-moment-shape": (
        _optimizer(_first_param_state("exp_avg", torch.zeros(3))),
        r"`optimizer`: `state.0.exp_avg` tensor of shape \(3,\)",
    ),
    "optimizer-step-nan": (
        _optimizer(_first_param_state("step", torch.tensor(float("nan")))),
        r"`state.0.step` .*: expected finite",
    ),
    "optimizer-lr-string": (
        _optimizer(lambda o: {**o, "param_groups": [{**o["param_groups"][0], "lr": "abc"}]}),
        r"`param_groups.0.lr` 'abc': unexpected",
    ),
    "optimizer-betas-short": (
        _optimizer(lambda o: {**o, "param_groups": [{**o["param_groups"][0], "betas": (0.9,)}]}),
        r"`param_groups.0.betas` \(0.9,\): unexpected",
    ),
    "optimizer-foreign-param": (
        _optimizer(lambda o: {**o, "state": {**o["state"], 99: o["state"][0]}}),
        r"`state.99`: not a parameter of this model",
    ),
    "generator-float": (_with(generator=torch.zeros(5056)), r"`generator` .*: expected uint8 of shape"),
    "generator-short": (
        _with(generator=torch.zeros(10, dtype=torch.uint8)),
        r"`generator` tensor of shape \(10,\)",
    ),
    "generator-invalid": (
        _with(generator=torch.full((5056,), 255, dtype=torch.uint8)),
        r"`generator`: not a valid random-number generator state",
    ),
    "global-rng-invalid": (
        _with(global_rng=torch.full((5056,), 255, dtype=torch.uint8)),
        r"`global_rng`: not a valid random-number generator state",
    ),
    "history-not-list": (_with(history="abc"), r"`history` 'abc': input should be a valid list"),
    "history-short": (lambda s: {**s, "history": s["history"][:1]}, r"`history` has 1 records for `epoch` 2"),
    "history-record": (
        lambda s: {**s, "history": [s["history"][0], {"epoch": 2}]},
        r"`history.1`: `lr`: field required",
    ),
    "best-epoch-beyond": (_with(best_epoch=3), r"`best_epoch` 3: beyond `epoch` 2"),
    "lr-infinite": (_with(lr=float("inf")), r"`lr` inf: input should be a finite number"),
    "key-not-string": (lambda s: {**s, 1: 2}, r"keys must be strings"),
    "unknown-key": (_with(payload="x"), r"`payload` 'x': extra inputs are not permitted"),
}


@pytest.mark.parametrize("case", STATE_CASES)
def test_named_malformed_states_are_one_clean_error(finished, case):
    change, message = STATE_CASES[case]
    with copy_of(finished, running=True) as run:
        _set_state(run, change)
        state_before = (run / runs.STATE).read_bytes()
        code, err = check_command(run, "resume")
        assert code == 2 and re.search(message, err) and str(run / runs.STATE) in err, err
        assert (run / runs.STATE).read_bytes() == state_before


def test_a_truncated_state_is_one_clean_error(finished):
    with copy_of(finished, running=True) as run:
        (run / runs.STATE).write_bytes((finished / runs.STATE).read_bytes()[:300])
        assert check_command(run, "resume")[0] == 2


def test_a_checkpoint_link_to_another_directory_is_not_followed(finished):
    def link_checkpoint_outside(run):
        outside = run.parent / "outside"
        for path in (run / runs.CHECKPOINT).iterdir():
            shutil.copy(path, outside)
        shutil.rmtree(run / runs.CHECKPOINT)
        (run / runs.CHECKPOINT).symlink_to(outside, target_is_directory=True)

    with copy_of(finished, running=True, prepare=link_checkpoint_outside) as run:
        assert check_command(run, "resume")[0] == 2  # copy_of checks that `outside` is unchanged


def test_x_shape_of_the_wrong_type_and_nan_weights(finished):
    with copy_of(finished) as run:
        info = json.loads((run / runs.RUN).read_text())
        (run / runs.RUN).write_text(json.dumps({**info, "x_shape": "abc"}))
        assert "`x_shape` 'abc'" in check_command(run, "evaluate")[1]
    with copy_of(finished) as run:
        weights = load_file(run / runs.WEIGHTS)
        save_file({k: torch.full_like(v, float("nan")) for k, v in weights.items()}, run / runs.WEIGHTS)
        assert "NaN or infinite" in check_command(run, "evaluate")[1]
        assert check_command(run, "sample")[0] == 2
        assert not (run / "eval.json").exists()
