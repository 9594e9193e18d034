"""Evaluate a run on a split: the ELBO and its two terms, and an importance-sampled log p(x).

All numbers are dataset means in nats per example, with bits per dimension alongside; the
importance-sampling estimate carries its Monte Carlo standard error. The result is written
atomically to RUN/eval.json (RUN/eval-<split>.json for other splits).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from vaelab import runs
from vaelab.data import load_data
from vaelab.errors import UserError
from vaelab.estimators import bits_per_dim, dataset_log_px
from vaelab.train import dataset_terms

AE_NOTE = (
    "an autoencoder has no ELBO or log p(x): its code is a point mass, whose KL to any density is "
    "infinite; only the reconstruction term log p(x | z = f(x)) is reported"
)


@dataclass(frozen=True)
class Evaluation:
    """Dataset means over `num_examples` rows of `split`, nats per example unless named *_bpd."""

    run: str
    split: str
    num_examples: int
    num_dims: int
    log_p_x_given_z: float
    elbo: float | None
    kl: float | None
    log_px: float | None
    log_px_stderr: float | None
    k: int | None
    seconds_elbo: float
    seconds_log_px: float | None
    note: str | None = None

    @property
    def nll(self) -> float | None:
        return None if self.log_px is None else -self.log_px

    def bpd(self, nats: float | None) -> float | None:
        return None if nats is None else float(bits_per_dim(-nats, self.num_dims))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(
            units="nats per example (dataset mean); *_bpd in bits per dimension; elbo and log_px are "
            "higher-is-better, nll = -log_px",
            nll=self.nll,
            nll_bpd=self.bpd(self.log_px),
            negative_elbo_bpd=self.bpd(self.elbo),
        )
        return out


def evaluate_model(
    model,
    x: torch.Tensor,
    *,
    k: int = 1000,
    batch_size: int = 100,
    seed: int = 0,
    run: str = "",
    split: str = "test",
) -> Evaluation:
    """ELBO terms (one sample per example, analytic KL) and IS log p(x) with `k` samples."""
    if k < 2:
        raise UserError(f"--k must be >= 2 for a standard error, got {k}")
    num_dims = math.prod(x.shape[1:])
    start = time.perf_counter()
    terms = dataset_terms(model, x, seed=seed)
    seconds_elbo = time.perf_counter() - start
    if getattr(model, "deterministic", False):
        return Evaluation(
            run,
            split,
            len(x),
            num_dims,
            terms.log_p_x_given_z,
            None,
            None,
            None,
            None,
            None,
            seconds_elbo,
            None,
            AE_NOTE,
        )
    estimate = dataset_log_px(model, x, k, batch_size, torch.Generator().manual_seed(seed))
    return Evaluation(
        run,
        split,
        len(x),
        num_dims,
        terms.log_p_x_given_z,
        terms.elbo,
        terms.kl,
        estimate.mean,
        estimate.mean_stderr,
        k,
        seconds_elbo,
        estimate.seconds,
    )


def evaluate_run(
    run_dir: str | Path, *, k: int = 1000, split: str = "test", batch_size: int = 100, seed: int = 0
) -> Evaluation:
    run_dir = runs.check_run_dir(run_dir)
    model = runs.load_model(run_dir)
    config = runs.read_config(run_dir)
    x = load_data(config.data).split(split)
    if tuple(x.shape[1:]) != model.x_shape:
        raise UserError(
            f"{run_dir}: the model expects examples of shape {model.x_shape}, "
            f"{config.data.source} gives {tuple(x.shape[1:])}"
        )
    result = evaluate_model(model, x, k=k, batch_size=batch_size, seed=seed, run=str(run_dir), split=split)
    name = "eval.json" if split == "test" else f"eval-{split}.json"
    runs.write_json(run_dir / name, result.to_dict())
    return result


def format_evaluation(e: Evaluation) -> str:
    """A small table for the terminal."""

    def row(name: str, nats: float | None, extra: str = "") -> str:
        if nats is None:
            return f"  {name:<28} {'—':>12}"
        bpd = bits_per_dim(-nats, e.num_dims)
        return f"  {name:<28} {nats:12.3f} nats  {bpd:8.4f} bits/dim (of -value){extra}"

    lines = [f"{e.split} split, {e.num_examples} examples of {e.num_dims} dims:"]
    lines.append(row("E_q[log p(x|z)]", e.log_p_x_given_z))
    if e.note:
        lines.append(f"  note: {e.note}")
        return "\n".join(lines)
    lines.append(f"  {'KL(q(z|x) || p(z))':<28} {e.kl:12.3f} nats")
    lines.append(row("ELBO", e.elbo, f"   [{e.seconds_elbo:.1f} s]"))
    lines.append(
        row(
            f"log p(x), IS k={e.k}",
            e.log_px,
            f"   ± {e.log_px_stderr:.3f} (s.e.)  [{e.seconds_log_px:.1f} s]",
        )
    )
    lines.append(
        f"  {'gap log p(x) - ELBO':<28} {e.log_px - e.elbo:12.3f} nats  (estimate of KL(q(z|x) || p(z|x)))"
    )
    return "\n".join(lines)
