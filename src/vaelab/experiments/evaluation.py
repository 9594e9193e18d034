"""`current_evaluation`: a run's test-split evaluation, reused when it is current, else made.

Compare, sweep and report all need a run's evaluation (ELBO terms, importance-sampled log p(x));
evaluating costs minutes at k = 1000, so RUN/eval.json is reused when it answers the same question.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from vaelab import runs
from vaelab.errors import UserError
from vaelab.evaluate import evaluate_run

log = logging.getLogger(__name__)

EVALUATION = "eval.json"


def is_current(evaluation: dict[str, Any], eval_path: Path, weights_path: Path, k: int) -> bool:
    """Whether eval.json answers "the test split, k importance samples, fp32, these weights".

    Current when it is at least as new as the weights, covers the test split, ran in fp32 and used
    k samples (an AE's evaluation has no k: it has no log p(x) to estimate). The evaluation seed is
    not recorded in eval.json, so it cannot be checked.
    """
    return (
        eval_path.stat().st_mtime >= weights_path.stat().st_mtime
        and evaluation.get("split") == "test"
        and evaluation.get("precision", "fp32") == "fp32"
        and (evaluation.get("k") == k or evaluation.get("elbo") is None)
    )


def current_evaluation(
    run_dir: str | Path, k: int = 1000, seed: int = 0, device: str = "cpu"
) -> dict[str, Any]:
    """RUN/eval.json as a dict if it is current (`is_current`) for k, else a fresh evaluation of
    the test split with k importance samples and `seed` on `device`, written to RUN/eval.json and
    returned."""
    if k < 2:
        raise UserError(f"k must be >= 2 importance samples for a standard error, got {k}")
    run_dir = runs.check_run_dir(run_dir)
    path = run_dir / EVALUATION
    if path.is_file():
        evaluation = runs.read_evaluation(path)
        if is_current(evaluation, path, run_dir / runs.WEIGHTS, k):
            return evaluation
    log.info("%s: no current %s; evaluating the test split (k = %d)", run_dir, EVALUATION, k)
    return evaluate_run(run_dir, k=k, split="test", seed=seed, device=device).to_dict()
