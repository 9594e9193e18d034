"""Fuzzing a run directory (issue 16): a finished tiny run whose config.json, run.json,
metrics.jsonl, eval.json, checkpoint/state.pt or weights are mutated goes through every command
that reads a run (`evaluate`, `sample`, `reconstruct`, `plot`, `report`, `compare` with a good or a
second damaged run, `train --resume`, `export`), and each command either succeeds or exits 2 with one line;
nothing raises, a command that fails leaves the file list as it was (no eval.json, figure or
report.html behind), and nothing outside the runs is written.

Every case goes through the shared `fuzz` fixture (tests/fuzz/conftest.py), so it is classified
and counted in the suite's table under its input kind ("run config.json", ...). Hypothesis draws
the mutations under the profile `vaelab-fuzz-run` (a tenth of VAELAB_FUZZ_EXAMPLES, at least 5:
each case runs a command on a run). Each defect the issue found is a named case below.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from vaelab import runs
from vaelab.config import RunConfig
from vaelab.evaluate import eval_path, evaluate_run
from vaelab.experiments.evaluation import EVALUATION
from vaelab.experiments.report import REPORT
from vaelab.train import Trainer, train

FUZZ = settings.get_profile("vaelab-fuzz-run")
TINY = RunConfig().replace(
    data={"source": "digits"}, model={"hidden": (16,), "latent_dim": 2}, train={"epochs": 2, "threads": 1}
)
EPOCHS_PER_RESUME = 2  # a mutation that makes resume train (more epochs, a restart) is cut after this
K = "2"  # importance samples: eval.json of the finished run is current for this k, so nothing re-evaluates

# Each command on the damaged run RUN; TWIN is a second copy with the same damage, GOOD an intact
# copy, OUT a comparison directory that does not exist yet.
COMMANDS: dict[str, list[str]] = {
    "evaluate": ["evaluate", "RUN", "--k", K],
    "sample": ["sample", "RUN", "--n", "4"],
    "reconstruct": ["reconstruct", "RUN", "--n", "4"],
    "plot curves": ["plot", "RUN", "--kind", "curves"],
    "plot decomposition": ["plot", "RUN", "--kind", "decomposition"],
    "plot grid": ["plot", "RUN", "--kind", "grid", "--n", "3"],
    "report": ["report", "RUN", "--k", K],
    "compare with a good run": ["compare", "GOOD", "RUN", "--k", K, "--n", "3", "--out", "OUT"],
    "compare two damaged runs": ["compare", "RUN", "TWIN", "--k", K, "--n", "3", "--out", "OUT"],
    "resume": ["train", "--resume", "RUN", "--quiet"],
    "export": ["export", "RUN", "--check-rows", "5"],
}
ALL_COMMANDS = tuple(COMMANDS)
READS_METRICS = ("plot curves", "report", "resume")
READS_EVALUATION = ("plot decomposition", "report", "compare with a good run", "compare two damaged runs")


class EnoughTraining(Exception):
    """Raised by the harness when an accepted resume has trained long enough to show it runs."""


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished tiny run, evaluated with k = K (so eval.json is current for every command)."""
    out = tmp_path_factory.mktemp("fuzz") / "run"
    threads = torch.get_num_threads()
    try:
        train(TINY, out, progress=False)
        evaluate_run(out, k=int(K), progress=False)
    finally:
        torch.set_num_threads(threads)
    return out


@dataclass(frozen=True)
class Runs:
    """A damaged run, its damaged twin and an intact copy, side by side in `root`."""

    root: Path
    run: Path
    twin: Path
    good: Path

    def argv(self, command: str) -> list[str]:
        places = {"RUN": self.run, "TWIN": self.twin, "GOOD": self.good, "OUT": self.root / "compare"}
        return [str(places[word]) if word in places else word for word in COMMANDS[command]]


@contextlib.contextmanager
def copies_of(finished: Path, damage: Callable[[Path], None], *, running: bool = False) -> Iterator[Runs]:
    """Copies of the finished run: `run` and `twin` marked running when `running`, then changed by
    `damage(run)`, and `good` as it is, beside a decoy directory `outside`; on leaving, asserts
    that nothing in `outside` changed."""
    root = Path(tempfile.mkdtemp(prefix="vaelab-fuzz-"))
    copies = Runs(root, root / "run", root / "twin", root / "good")
    for run in (copies.run, copies.twin, copies.good):
        shutil.copytree(finished, run)
    (root / "outside").mkdir()
    (root / "outside" / "epoch-00001.safetensors").write_bytes(b"not yours")
    for run in (copies.run, copies.twin):
        if running:
            info = json.loads((run / runs.RUN).read_text())
            (run / runs.RUN).write_text(json.dumps({**info, "status": "running"}))
        damage(run)
    before = _outside(root)
    try:
        yield copies
        assert _outside(root) == before, "a file outside the runs was written or deleted"
    finally:
        shutil.rmtree(root)


def _outside(root: Path) -> dict[str, tuple[int, int]]:
    return {
        p.relative_to(root).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in (root / "outside").rglob("*")
        if not p.is_symlink()
    }


def run_command(fuzz, kind: str, copies: Runs, command: str):
    """`command` on the damaged copies through the shared harness (`fuzz.cli`): exit 0, or exit 2
    with one line and no file added or removed under the copies' root. An accepted resume is cut
    after EPOCHS_PER_RESUME epochs. Returns the harness's `Command`."""
    epochs = 0
    inner = Trainer._run_epoch

    def bounded(trainer):
        nonlocal epochs
        epochs += 1
        if epochs > EPOCHS_PER_RESUME:
            raise EnoughTraining
        return inner(trainer)

    Trainer._run_epoch = bounded
    try:
        return fuzz.cli(
            kind,
            copies.argv(command),
            must_refuse=False,
            enough=EnoughTraining,
            unchanged_on_failure=copies.root,
        )
    finally:
        Trainer._run_epoch = inner


def _write(name: str, content: bytes) -> Callable[[Path], None]:
    return lambda run: (run / name).write_bytes(content)


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
def test_fuzz_run_json_files(fuzz, finished, name, data):
    original = (finished / name).read_bytes()
    command = data.draw(st.sampled_from(ALL_COMMANDS), label="command")
    if data.draw(st.booleans()):
        content = json.dumps(data.draw(mutated_tree(json.loads(original), json_values))).encode()
    else:
        content = data.draw(mutated_bytes(original))
    if name == runs.RUN and command == "resume":  # keep the mutation, not the "running" marker
        content = content.replace(b'"finished"', b'"running"')
    with copies_of(finished, _write(name, content), running=command == "resume") as copies:
        run_command(fuzz, f"run {name}", copies, command)


def epochs_in_order(records: list[dict[str, Any]]) -> str | None:
    numbers = [r["epoch"] for r in records]
    return None if numbers == list(range(1, len(numbers) + 1)) else f"epochs {numbers}"


def mutated_metrics(data, original: bytes) -> bytes:
    """metrics.jsonl with one record's JSON mutated, or its bytes cut or changed."""
    lines = original.decode().splitlines()
    if data.draw(st.booleans()):
        i = data.draw(st.integers(0, len(lines) - 1))
        lines[i] = json.dumps(data.draw(mutated_tree(json.loads(lines[i]), json_values)))
        return ("\n".join(lines) + "\n").encode()
    return data.draw(mutated_bytes(original))


@FUZZ
@given(data=st.data())
def test_fuzz_run_metrics(fuzz, finished, data):
    content = mutated_metrics(data, (finished / runs.METRICS).read_bytes())
    command = data.draw(st.sampled_from(("read_metrics", *READS_METRICS)), label="command")
    with copies_of(finished, _write(runs.METRICS, content), running=command == "resume") as copies:
        if command == "read_metrics":
            fuzz.check("run metrics.jsonl", lambda: runs.read_metrics(copies.run), accepted=epochs_in_order)
        else:
            run_command(fuzz, "run metrics.jsonl", copies, command)


@FUZZ
@given(data=st.data())
def test_fuzz_run_evaluation(fuzz, finished, data):
    original = (finished / EVALUATION).read_bytes()
    command = data.draw(st.sampled_from(READS_EVALUATION), label="command")
    if data.draw(st.booleans()):
        content = json.dumps(data.draw(mutated_tree(json.loads(original), json_values))).encode()
    else:
        content = data.draw(mutated_bytes(original))
    with copies_of(finished, _write(EVALUATION, content)) as copies:
        run_command(fuzz, "run eval.json", copies, command)


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
def test_fuzz_run_checkpoint_state(fuzz, finished, data):
    if data.draw(st.booleans()):
        state = torch.load(finished / runs.STATE, weights_only=True)
        mutated = data.draw(mutated_tree(state, _state_values()))

        def damage(run):
            torch.save(mutated, run / runs.STATE)
    else:
        damage = _write(runs.STATE, data.draw(mutated_bytes((finished / runs.STATE).read_bytes())))
    with copies_of(finished, damage, running=True) as copies:
        run_command(fuzz, "run state.pt", copies, "resume")


@FUZZ
@given(data=st.data())
def test_fuzz_run_weights(fuzz, finished, data):
    name = data.draw(st.sampled_from([runs.WEIGHTS, runs.checkpoint_weights(2)]))
    # the checkpoint's weights are read by resume only; the best weights by every other command
    commands = ("resume",) if name != runs.WEIGHTS else tuple(c for c in ALL_COMMANDS if c != "resume")
    command = data.draw(st.sampled_from(commands), label="command")
    tensors_in_file = load_file(finished / name)
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

        def damage(run):
            save_file(changed, run / name)
    else:
        damage = _write(name, data.draw(mutated_bytes((finished / name).read_bytes())))
    with copies_of(finished, damage, running=command == "resume") as copies:
        run_command(fuzz, "run weights", copies, command)


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
def test_named_malformed_states_are_one_clean_error(fuzz, finished, case):
    change, message = STATE_CASES[case]
    with copies_of(finished, lambda run: _set_state(run, change), running=True) as copies:
        state_before = (copies.run / runs.STATE).read_bytes()
        command = run_command(fuzz, "run state.pt", copies, "resume")
        assert command.outcome == "clean error", command
        assert re.search(message, command.stderr) and str(copies.run / runs.STATE) in command.stderr
        assert (copies.run / runs.STATE).read_bytes() == state_before


def test_a_truncated_state_is_one_clean_error(fuzz, finished):
    cut = _write(runs.STATE, (finished / runs.STATE).read_bytes()[:300])
    with copies_of(finished, cut, running=True) as copies:
        assert run_command(fuzz, "run state.pt", copies, "resume").outcome == "clean error"


def test_a_checkpoint_link_to_another_directory_is_not_followed(fuzz, finished):
    def link_checkpoint_outside(run):
        outside = run.parent / "outside"
        for path in (run / runs.CHECKPOINT).iterdir():
            shutil.copy(path, outside)
        shutil.rmtree(run / runs.CHECKPOINT)
        (run / runs.CHECKPOINT).symlink_to(outside, target_is_directory=True)

    with copies_of(finished, link_checkpoint_outside, running=True) as copies:
        # copies_of checks that `outside` is unchanged
        assert run_command(fuzz, "run state.pt", copies, "resume").outcome == "clean error"


def test_x_shape_of_the_wrong_type(fuzz, finished):
    def x_shape_abc(run):
        info = json.loads((run / runs.RUN).read_text())
        (run / runs.RUN).write_text(json.dumps({**info, "x_shape": "abc"}))

    with copies_of(finished, x_shape_abc) as copies:
        command = run_command(fuzz, "run run.json", copies, "evaluate")
        assert command.outcome == "clean error" and "`x_shape` 'abc'" in command.stderr, command


@pytest.mark.parametrize("command", ["evaluate", "sample", "report"])
def test_nan_weights_are_refused_and_nothing_is_written(fuzz, finished, command):
    def nan_weights(run):
        weights = load_file(run / runs.WEIGHTS)
        save_file({k: torch.full_like(v, float("nan")) for k, v in weights.items()}, run / runs.WEIGHTS)
        eval_path(run).unlink()  # so that evaluate and report would write a new one

    with copies_of(finished, nan_weights) as copies:
        result = run_command(fuzz, "run weights", copies, command)
        assert result.outcome == "clean error" and "NaN or infinite" in result.stderr, result


# eval.json with other fields, types or values than `vaelab evaluate` writes: (change, message)
EVALUATION_CASES: dict[str, tuple[Callable[[dict], Any], str]] = {
    "other-fields": (lambda e: {"foo": 1}, r"`split`: field required \(and 4 more problems\)"),
    "an-extra-field": (lambda e: {**e, "foo": 1}, r"`foo` 1: extra inputs are not permitted"),
    "elbo-string": (lambda e: {**e, "elbo": "abc"}, r"`elbo` 'abc': input should be a valid number"),
    "elbo-nan": (lambda e: {**e, "elbo": float("nan")}, r"`elbo` nan: input should be a finite number"),
    "no-kl": (lambda e: {k: v for k, v in e.items() if k != "kl"}, r"`elbo` and `kl` come together"),
    "log-px-without-elbo": (lambda e: {**e, "elbo": None, "kl": None}, r"`log_px` without `elbo`"),
    "k-string": (lambda e: {**e, "k": "2"}, r"`k` '2': input should be a valid integer"),
    "split-unknown": (lambda e: {**e, "split": "abc"}, r"`split` 'abc': input should be 'train'"),
    "kl-per-dim-infinite": (
        lambda e: {**e, "kl_per_dim": [1.0, float("inf")]},
        r"`kl_per_dim.1` inf: input should be a finite number",
    ),
    "nested-entropy-string": (
        lambda e: {**e, "decomposition": {"entropy": "x"}},
        r"`decomposition.entropy` 'x': input should be a valid number",
    ),
    "not-an-object": (lambda e: [e], r"not a vaelab evaluation \(expected a JSON object\)"),
}


@pytest.mark.parametrize("command", ["report", "plot decomposition"])
@pytest.mark.parametrize("case", EVALUATION_CASES)
def test_an_eval_json_with_other_fields_is_one_clean_error(fuzz, finished, case, command):
    change, message = EVALUATION_CASES[case]

    def damage(run):
        evaluation = json.loads((run / EVALUATION).read_text())
        (run / EVALUATION).write_text(json.dumps(change(evaluation)))

    with copies_of(finished, damage) as copies:
        result = run_command(fuzz, "run eval.json", copies, command)
        assert result.outcome == "clean error", result
        assert re.search(message, result.stderr) and str(copies.run / EVALUATION) in result.stderr, result


def _metrics_lines(finished: Path) -> list[bytes]:
    return (finished / runs.METRICS).read_bytes().splitlines(keepends=True)


# metrics.jsonl damaged: (damage from the finished run's lines, expected outcome, message)
METRICS_CASES: dict[str, tuple[Callable[[list[bytes]], bytes], str, str]] = {
    "garbage": (lambda lines: b"garbage\n", "clean error", r"metrics.jsonl: line 1: not valid JSON"),
    "garbage-second-line": (
        lambda lines: lines[0] + b"{garbage\n",
        "clean error",
        r"metrics.jsonl: line 2: not valid JSON",
    ),
    "record-of-other-fields": (
        lambda lines: lines[0] + b'{"epoch": 2}\n',
        "clean error",
        r"metrics.jsonl: line 2: `lr`: field required",
    ),
    "epochs-out-of-order": (
        lambda lines: lines[1] + lines[0],
        "clean error",
        r"metrics.jsonl: line 1: `epoch` 2: expected 1",
    ),
    # a last line cut short is what a kill during an append leaves: dropped, the rest is read
    "truncated-in-the-last-line": (lambda lines: lines[0] + lines[1][:40], "ok", ""),
}


@pytest.mark.parametrize("command", ["plot curves", "report"])
@pytest.mark.parametrize("case", METRICS_CASES)
def test_a_garbage_or_truncated_metrics_file_in_plot_and_report(fuzz, finished, case, command):
    damage_lines, outcome, message = METRICS_CASES[case]
    content = damage_lines(_metrics_lines(finished))
    with copies_of(finished, _write(runs.METRICS, content)) as copies:
        result = run_command(fuzz, "run metrics.jsonl", copies, command)
        assert result.outcome == outcome and re.search(message, result.stderr), result


def test_report_writes_no_file_before_failing(fuzz, finished):
    """The report of a run without eval.json or figures evaluates and draws before it writes the
    page; a damaged metrics.jsonl must stop it before the first of those files is written."""

    def damage(run):
        eval_path(run).unlink()
        shutil.rmtree(run / "figures", ignore_errors=True)
        (run / runs.METRICS).write_bytes(_metrics_lines(finished)[0] + b"{garbage\n")

    with copies_of(finished, damage) as copies:
        result = run_command(fuzz, "run metrics.jsonl", copies, "report")
        assert result.outcome == "clean error" and "line 2: not valid JSON" in result.stderr, result
        assert not eval_path(copies.run).exists() and not (copies.run / REPORT).exists()


def test_the_report_of_a_comparison_with_a_damaged_run_writes_nothing(fuzz, finished):
    """A comparison's report draws both runs' figures: the second run's damage must be found before
    the first run's figures are written."""
    from vaelab.experiments.compare import compare_runs

    with copies_of(finished, lambda run: None) as copies:
        out = copies.root / "compare"
        compare_runs(copies.good, copies.run, out, k=int(K), n_grid=3)
        weights = load_file(copies.run / runs.WEIGHTS)
        save_file(
            {k: torch.full_like(v, float("nan")) for k, v in weights.items()}, copies.run / runs.WEIGHTS
        )
        argv = ["report", str(out), "--k", K]
        result = fuzz.cli("run weights", argv, must_refuse=False, unchanged_on_failure=copies.root)
        assert result.outcome == "clean error" and "NaN or infinite" in result.stderr, result
        assert not (out / REPORT).exists() and not (copies.good / "figures").exists()


@pytest.mark.parametrize(
    "command", ["evaluate", "reconstruct", "plot grid", "report", "compare two damaged runs"]
)
def test_a_config_naming_other_data_than_the_model_was_built_for(fuzz, finished, command):
    """config.json without `data.source` (so the default, 28x28 MNIST) beside a model of 8x8
    digits: found by `make fuzz` as a traceback in the first matrix product."""

    def drop_source(run):
        config = json.loads((run / runs.CONFIG).read_text())
        del config["data"]["source"]
        (run / runs.CONFIG).write_text(json.dumps(config))

    with copies_of(finished, drop_source) as copies:
        result = run_command(fuzz, "run config.json", copies, command)
        assert result.outcome == "clean error", result
        assert re.search(r"the model expects examples of shape \(1, 8, 8\), mnist5k gives", result.stderr)
