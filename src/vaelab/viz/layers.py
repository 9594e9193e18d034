"""A hierarchical model's stochastic layers as arrays: each layer's KL over training and on the
test split, and its active units (`vaelab.hierarchical`). No plotting here (`vaelab.viz.draw_layers`
draws it)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from vaelab.diagnostics import ACTIVE_THRESHOLD
from vaelab.errors import UserError
from vaelab.runs import best_record

LAYER_KEY = re.compile(r"train_kl_layer([0-9]+)_nats")


@dataclass(frozen=True)
class LayerKL:
    """Per-layer KL, nats per example, layer 1 (next to x) first.

    epoch: (E,); train, valid: (E, L) each epoch's means (train: running mean over the epoch; the
    Monte Carlo KL of each layer, `vaelab.estimators.LayeredELBOTerms`); best_epoch: the epoch whose
    weights the run kept. test: (L,) from eval.json, with active_units (L,) counted with
    `active_threshold` (Burda et al. 2015), or None before `vaelab evaluate`; units: Z' per layer.
    """

    epoch: np.ndarray
    train: np.ndarray
    valid: np.ndarray
    best_epoch: int
    units: int
    test: np.ndarray | None = None
    active_units: tuple[int, ...] | None = None
    active_threshold: float = ACTIVE_THRESHOLD
    title: str = "KL per stochastic layer"


def layer_kls(
    metrics: list[dict[str, Any]], evaluation: dict[str, Any] | None, units: int, *, title: str = ""
) -> LayerKL:
    """The per-layer KLs of a run's records (metrics.jsonl, validated by `vaelab.runs.read_metrics`)
    and of its eval.json (None if not evaluated); a UserError if the records carry none."""
    if not metrics:
        raise UserError("no training metrics: metrics.jsonl is missing or empty")
    layers = sorted(int(m[1]) for key in metrics[0] if (m := LAYER_KEY.fullmatch(key)))
    if len(layers) < 2:
        raise UserError("metrics.jsonl has no per-layer KLs: the model has one stochastic layer")

    def values(split: str) -> np.ndarray:
        return np.array([[float(r[f"{split}_kl_layer{i}_nats"]) for i in layers] for r in metrics])

    test = active = None
    if evaluation is not None and evaluation.get("kl_layers") is not None:
        test = np.array(evaluation["kl_layers"], dtype=float)
        active = evaluation.get("active_units_layers")
    return LayerKL(
        epoch=np.array([int(r["epoch"]) for r in metrics]),
        train=values("train"),
        valid=values("valid"),
        best_epoch=int(best_record(metrics)["epoch"]),
        units=units,
        test=test,
        active_units=None if active is None else tuple(int(a) for a in active),
        title=title or "KL per stochastic layer",
    )
