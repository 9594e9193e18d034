"""Numbers over training and evaluation as arrays: training curves and the ELBO decomposition.

No plotting here (`vaelab.viz.draw` draws these). All values are dataset means in nats per example.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vaelab.diagnostics import ACTIVE_THRESHOLD, LatentStatistics
from vaelab.errors import UserError
from vaelab.runs import best_record

Panel = tuple[str, np.ndarray, np.ndarray]  # title, train values (E,), validation values (E,)


@dataclass(frozen=True)
class TrainingCurves:
    """Per-epoch dataset means from metrics.jsonl, nats per example.

    epoch: (E,); panels: (title, train values (E,), validation values (E,)) of each panel to
    draw: ELBO, reconstruction term and KL for a VAE; the reconstruction term alone for an AE,
    whose records carry no ELBO and no KL (it has neither).
    """

    epoch: np.ndarray
    panels: tuple[Panel, ...]
    best_epoch: int
    title: str = "training curves"


def training_curves(metrics: list[dict], *, title: str = "training curves") -> TrainingCurves:
    """Arrays of the per-epoch records that `vaelab.runs.read_metrics` returns (keys *_nats); the
    records say which panels there are (an AE's have no `valid_elbo_nats`)."""
    if not metrics:
        raise UserError("no training metrics: metrics.jsonl is missing or empty")

    def panel(name: str, term: str) -> Panel:
        train, valid = (
            np.array([float(r[f"{split}_{term}_nats"]) for r in metrics]) for split in ("train", "valid")
        )
        return name, train, valid

    panels: tuple[Panel, ...]
    if all("valid_elbo_nats" in r for r in metrics):
        panels = (
            panel("ELBO (higher is better)", "elbo"),
            panel("reconstruction term E_q[log p(x|z)]", "log_p_x_given_z"),
            panel("KL(q(z|x) || p(z))", "kl"),
        )
    else:
        panels = (
            panel(
                "reconstruction term log p(x | z = f(x)): an AE has no KL term and no ELBO", "log_p_x_given_z"
            ),
        )
    return TrainingCurves(
        np.array([int(r["epoch"]) for r in metrics]),
        panels,
        int(best_record(metrics)["epoch"]),  # the epoch selection kept (on its bound, maybe not the ELBO)
        title,
    )


# ------------------------------------------------------------------------- ELBO decomposition


DECOMPOSITION_KEYS = ("decomposition", "elbo_decomposition")


def _evaluation_value(evaluation: dict, key: str):
    """A key of eval.json, at the top level or inside a nested decomposition section."""
    if evaluation.get(key) is not None:
        return evaluation[key]
    for section in DECOMPOSITION_KEYS:
        nested = evaluation.get(section)
        if isinstance(nested, dict) and nested.get(key) is not None:
            return nested[key]
    return None


@dataclass(frozen=True)
class ElboChart:
    """The bars of the ELBO-decomposition figure, nats per example (dataset means).

    terms: (name, value) pairs; the identities they illustrate are
    ELBO = E_q[log p(x|z)] - KL(q || p(z)) = E_q[log p(x, z)] + H(q) and log p(x) = ELBO + gap.
    kl_per_dim: (Z,) mean KL per latent dim in nats, or None; kl_per_dim_source says where it came from.
    conditional: whether the terms are of log p(x|y), each example given its label.
    """

    terms: tuple[tuple[str, float], ...]
    kl_per_dim: np.ndarray | None
    kl_per_dim_source: str
    active_units: int | None
    active_threshold: float | None
    split: str
    num_examples: int
    conditional: bool = False


def elbo_chart(evaluation: dict, stats: LatentStatistics | None = None) -> ElboChart | None:
    """Bars from an eval.json dict; None for an AE (no ELBO). Per-dim KL from the evaluation when it
    has one (`kl_per_dim`), else from `stats` (the closed form over the same split), else absent.

    An evaluation given each example's label (eval.json's `given`: a model conditional on it) names
    its terms as what they are: the ELBO of log p(x|y) = E_q(z|x,y)[log p(x|z, y)] - KL(q(z|x, y) ||
    p(z)) and the gap log p(x|y) - ELBO."""
    elbo = evaluation.get("elbo")
    if elbo is None:
        return None
    y = ", y" if evaluation.get("given") else ""
    terms = [
        (f"E_q[log p(x|z{y})]", evaluation["log_p_x_given_z"]),
        (f"-KL(q(z|x{y}) || p(z))", -evaluation["kl"]),
        ("ELBO of log p(x|y)" if y else "ELBO", elbo),
    ]
    log_p_xz, entropy = _evaluation_value(evaluation, "log_p_xz"), _evaluation_value(evaluation, "entropy")
    if log_p_xz is not None and entropy is not None:
        terms += [(f"E_q[log p(x, z{' | y' if y else ''})]", log_p_xz), (f"H(q(z|x{y}))", entropy)]
    if evaluation.get("log_px") is not None:
        log_px = "log p(x|y)" if y else "log p(x)"
        terms += [
            (f"{log_px}, IS k={evaluation.get('k')}", evaluation["log_px"]),
            (f"gap {log_px} - ELBO\n(≈ KL(q(z|x{y}) || p(z|x{y})))", evaluation["log_px"] - elbo),
        ]
    kl_dims = _evaluation_value(evaluation, "kl_per_dim")
    active = _evaluation_value(evaluation, "active_units")
    threshold = _evaluation_value(evaluation, "active_threshold") or ACTIVE_THRESHOLD
    source = "the evaluation (eval.json)"
    if kl_dims is None and stats is not None and stats.kl_per_dim is not None:
        kl_dims, source = (
            stats.kl_per_dim,
            f"the closed form over the {evaluation.get('split', 'test')} split",
        )
        active, threshold = stats.active_units, stats.threshold
    return ElboChart(
        tuple((name, float(v)) for name, v in terms),
        None if kl_dims is None else np.asarray(kl_dims, dtype=float),
        source if kl_dims is not None else "",
        active,
        threshold,
        evaluation.get("split", "test"),
        int(evaluation.get("num_examples", 0)),
        bool(y),
    )
