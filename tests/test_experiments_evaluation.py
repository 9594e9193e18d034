"""current_evaluation: eval.json is reused only when it answers the same question for the same weights."""

from __future__ import annotations

import os

import pytest

from vaelab import runs
from vaelab.config import RunConfig
from vaelab.errors import UserError
from vaelab.experiments.evaluation import current_evaluation
from vaelab.train import train

TINY = RunConfig().replace(
    data={"source": "digits"}, model={"hidden": (16,), "latent_dim": 2}, train={"epochs": 1, "threads": 1}
)


def test_eval_json_is_reused_when_current_and_redone_otherwise(tmp_path):
    run = tmp_path / "run"
    train(TINY, run, progress=False)
    path = run / "eval.json"
    first = current_evaluation(run, k=5)
    assert path.is_file() and first["k"] == 5 and first["split"] == "test"
    stamp = path.stat().st_mtime_ns
    assert current_evaluation(run, k=5) == first and path.stat().st_mtime_ns == stamp  # reused

    again = current_evaluation(run, k=7)  # another k: evaluated again, and eval.json now says k = 7
    assert again["k"] == 7 and runs.read_json(path)["k"] == 7

    weights = run / runs.WEIGHTS
    later = path.stat().st_mtime + 10
    os.utime(weights, (later, later))  # weights newer than the evaluation: stale
    stamp = path.stat().st_mtime_ns
    assert current_evaluation(run, k=7)["k"] == 7 and path.stat().st_mtime_ns != stamp

    earlier = path.stat().st_mtime - 100
    os.utime(weights, (earlier, earlier))  # the weights are older again: eval.json is current ...
    stamp = path.stat().st_mtime_ns
    assert current_evaluation(run, k=7)["k"] == 7 and path.stat().st_mtime_ns == stamp
    runs.write_json(path, {**runs.read_json(path), "split": "valid"})  # ... unless not of the test split
    assert current_evaluation(run, k=7)["split"] == "test" and runs.read_json(path)["split"] == "test"
    with pytest.raises(UserError, match="k must be >= 2"):
        current_evaluation(run, k=1)
