"""Sweeps: how a VAE responds to one knob, answered with numbers, one training run per value.

    run_sweep("latent", [2, 4, 8, 16], RunConfig(...), "runs/sweep-latent", jobs=2)

Kinds (registered in `SWEEPS`):

- `latent`: the latent size Z. Test ELBO, log p(x), reconstruction term, KL and active units
  (Burda et al. 2015) against Z: how much of a bigger latent the model uses.
- `sigma`: the Gaussian decoder's fixed s.d. sigma (the likelihood is set to gaussian). With
  log p(x|z) = -|x - mu(z)|^2 / (2 sigma^2) + const, sigma weighs reconstruction against the KL:
  a regularization knob (small sigma: sharp reconstructions, large KL; large sigma: blur, small KL).
- `beta`: the KL weight of the beta-ELBO (Higgins et al. 2017). The rate-distortion curve
  (Alemi et al. 2018): rate = KL(q(z|x) || p(z)), distortion = -E_q[log p(x|z)], both in nats.
- `lr`: the Adam learning rate, tuned by repeated training.

Layout: every point is a run directory `OUT/<kind>-<value>` (the usual run format). A sweep is an
Optuna study on a grid sampler, on the engine of `vaelab tune` (`vaelab.experiments.tune`): each
value is a trial, claimed by one worker. A finished point is never re-run; an interrupted one
continues from its last checkpoint (`train(resume=True)`), so a sweep resumes by being started
again with the same arguments; a point whose run another process holds locked is skipped. Points
run in parallel processes with `jobs > 1` (spawned, one PyTorch thread each), or in several
`vaelab sweep` commands sharing the study's storage; a progress bar counts finished points on a
terminal and each point is logged. Results go to `OUT/sweep.csv`, `OUT/sweep.md`,
`OUT/sweep.png` and `OUT/sweep.json`. Every evaluation is on the test split; nats per example.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from tqdm import tqdm

from vaelab import runs
from vaelab.config import RunConfig
from vaelab.data import fixed_sigma, for_likelihood, load_data
from vaelab.diagnostics import active_units_rule, latent_statistics
from vaelab.errors import UserError
from vaelab.experiments.compare import squared_error_per_pixel
from vaelab.experiments.evaluation import current_evaluation
from vaelab.experiments.tracking import train_tracked
from vaelab.tabular import resolve
from vaelab.viz.draw import save_figure

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepKind:
    """What a sweep varies: `section.field` of the RunConfig, parsed from text by `parse`.

    fixed: config changes every point of this sweep needs (the sigma sweep needs a Gaussian decoder).
    """

    name: str
    section: str
    field: str
    parse: Callable[[str], Any]
    axis_label: str
    log_axis: bool
    fixed: dict[str, dict[str, Any]]
    draw: Callable[..., None]


SWEEPS: dict[str, SweepKind] = {}


def register_sweep(
    name: str,
    section: str,
    field: str,
    parse: Callable[[str], Any],
    axis_label: str,
    *,
    log_axis: bool = True,
    fixed: dict[str, dict[str, Any]] | None = None,
):
    """Register a sweep kind; the decorated function draws its figure: draw(fig, points, kind, runs_dir)."""

    def register(draw):
        SWEEPS[name] = SweepKind(name, section, field, parse, axis_label, log_axis, fixed or {}, draw)
        return draw

    return register


@dataclass(frozen=True)
class SweepPoint:
    """One trained and evaluated point of a sweep: test-split means in nats per example.

    elbo, log_p_x_given_z, kl: the ELBO (beta = 1, whatever the training objective) and its terms;
    log_px: importance-sampled with `log_px_k` samples, standard error `log_px_stderr`;
    squared_error_per_pixel: of the decoder mean at the posterior mean (intensity^2);
    active_units: the active dims of `vaelab.diagnostics.latent_statistics`; best_valid_elbo: the
    validation ELBO of the kept weights; train_seconds: summed epoch times.
    """

    value: float
    run: str
    latent_dim: int
    epochs: int
    best_epoch: int
    best_valid_elbo: float
    train_seconds: float
    elbo: float
    log_p_x_given_z: float
    kl: float
    log_px: float
    log_px_stderr: float
    log_px_k: int
    squared_error_per_pixel: float
    active_units: int


# CSV / markdown column names carry the unit
COLUMNS: dict[str, str] = {
    "value": "value",
    "elbo": "elbo_nats",
    "log_px": "log_px_nats",
    "log_px_stderr": "log_px_stderr_nats",
    "log_p_x_given_z": "log_p_x_given_z_nats",
    "kl": "kl_nats",
    "squared_error_per_pixel": "squared_error_per_pixel",
    "active_units": "active_units",
    "latent_dim": "latent_dim",
    "epochs": "epochs",
    "best_epoch": "best_epoch",
    "best_valid_elbo": "best_valid_elbo_nats",
    "train_seconds": "train_seconds",
    "log_px_k": "log_px_k",
    "run": "run",
}


@dataclass(frozen=True)
class SweepResult:
    """A sweep's points in the order of `values`; `missing` lists values not (yet) finished."""

    kind: str
    out_dir: str
    values: tuple[float, ...]
    base_config: dict[str, Any]
    points: tuple[SweepPoint, ...]
    k: int

    @property
    def missing(self) -> tuple[float, ...]:
        done = {p.value for p in self.points}
        return tuple(v for v in self.values if v not in done)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "out_dir": self.out_dir,
            "values": list(self.values),
            "base_config": self.base_config,
            "k": self.k,
            "points": [asdict(p) for p in self.points],
            "units": "nats per example (test-split means) for elbo, log_px, log_p_x_given_z, kl",
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> SweepResult:
        return cls(
            raw["kind"],
            raw["out_dir"],
            tuple(raw["values"]),
            raw["base_config"],
            tuple(SweepPoint(**p) for p in raw["points"]),
            raw["k"],
        )


# ------------------------------------------------------------------------------------ points


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"values: expected numbers separated by commas, got {text!r}") from None
    if not math.isfinite(value):
        raise UserError(f"values: {text!r} is not a finite number")
    return value


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise UserError(f"values: expected integers separated by commas, got {text!r}") from None


def parse_values(kind: str, text: str) -> list[float]:
    """'2,4,8' -> [2, 4, 8] with the kind's parser; duplicates are an error."""
    sweep = _kind(kind)
    values = [sweep.parse(part.strip()) for part in text.split(",") if part.strip()]
    if not values:
        raise UserError("values: give at least one value, e.g. 2,4,8")
    if len(set(values)) != len(values):
        raise UserError(f"values {text}: a value is repeated")
    return values


def _kind(kind: str) -> SweepKind:
    if kind not in SWEEPS:
        raise UserError(f"sweep {kind!r} is not one of {', '.join(SWEEPS)}")
    return SWEEPS[kind]


def point_config(base: RunConfig, kind: str, value: float) -> RunConfig:
    """The base config with the sweep's fixed changes and `section.field = value`, validated."""
    sweep = _kind(kind)
    changes = {section: dict(fields_) for section, fields_ in sweep.fixed.items()}
    changes.setdefault(sweep.section, {})[sweep.field] = value
    return base.replace(**changes)


def point_dir(out_dir: Path, kind: str, value: float) -> Path:
    """OUT/<kind>-<value>, the value written as short as it reads (2, 0.1, 0.0003)."""
    text = str(value) if isinstance(value, int) else f"{value:g}"
    return Path(out_dir) / f"{kind}-{text}"


def run_point(config_dict: dict[str, Any], run_dir: str, value: float, k: int, seed: int = 0) -> SweepPoint:
    """Train (or resume, or skip if finished) one point, evaluate it and measure its latent use.

    A module-level function of plain arguments, so that spawned worker processes can run it.
    """
    config = RunConfig.from_dict(config_dict)
    out = Path(run_dir)
    status = runs.run_info(out).get("status") if (out / runs.RUN).is_file() else None
    # a run stores its config with the data's `auto` settings resolved: compare it so
    config, splits = resolve(config, load_data(config.data, config.limits))
    model = config.model
    splits = for_likelihood(splits, model.likelihood, config.data.source, sigma=fixed_sigma(model.sigma))
    if status is not None and runs.read_config(out) != config:
        raise UserError(f"{out}: holds a run of another configuration; use another directory for this sweep")
    if status == "finished":
        log.info("%s: finished earlier, not re-run", out)
    elif status == "running":
        log.info("%s: interrupted earlier, resuming", out)
        train_tracked(config, out, resume=True, progress=False, splits=splits)
    else:  # new, or killed before its first file was written
        log.info("%s: training", out)
        train_tracked(config, out, overwrite=True, progress=False, splits=splits)
    evaluation = current_evaluation(out, k, seed, device=config.train.device)
    if evaluation.get("elbo") is None:
        raise UserError(f"{out}: a sweep point needs a model with an ELBO (model.kind vae)")
    model = runs.load_model(out)
    metrics = runs.read_metrics(out)
    best = runs.best_record(metrics)
    return SweepPoint(
        value=value,
        run=out.name,
        latent_dim=model.latent_dim,
        epochs=len(metrics),
        best_epoch=int(best["epoch"]),
        best_valid_elbo=float(best["valid_elbo_nats"]),
        train_seconds=float(sum(r["seconds"] for r in metrics)),
        elbo=float(evaluation["elbo"]),
        log_p_x_given_z=float(evaluation["log_p_x_given_z"]),
        kl=float(evaluation["kl"]),
        log_px=float(evaluation["log_px"]),
        log_px_stderr=float(evaluation["log_px_stderr"]),
        log_px_k=int(evaluation["k"]),
        squared_error_per_pixel=squared_error_per_pixel(model, splits.inputs("test")),
        active_units=latent_statistics(model, splits.inputs("test")).active_units,
    )


def sweep_trial(
    trial, kind: str, values: list[float], base: dict[str, Any], out: str, k: int, seed: int
) -> float:
    """One grid point of a sweep as a trial of its study (`vaelab.experiments.tune`): its run is
    trained (or resumed, or read if finished) and evaluated, unless another process holds its
    lock (then the trial is pruned and the point skipped: two workers never train one point).
    The point's numbers are kept with the trial; its value is the best validation ELBO."""
    from vaelab.experiments.tune import TrialSkipped

    sweep = _kind(kind)
    name = f"{sweep.section}.{sweep.field}"
    value = sweep.parse(trial.suggest_categorical(name, [json.dumps(v) for v in values]))
    run_dir = point_dir(Path(out), kind, value)
    trial.set_user_attr("run", run_dir.name)
    if runs.is_locked(run_dir):
        raise TrialSkipped(f"{run_dir}: {runs.holder_phrase(run_dir)} is training it; skipped")
    config = point_config(RunConfig.from_dict(base), kind, value)
    point = run_point(config.to_dict(), str(run_dir), value, k, seed)
    trial.set_user_attr("point", asdict(point))
    return point.best_valid_elbo


def study_points(engine, values: Sequence[float]) -> list[SweepPoint]:
    """The evaluated points of a sweep's study, in the order of `values` (missing ones left out)."""
    completed = {}
    for trial in engine.open().get_trials(deepcopy=False):
        if trial.state.name == "COMPLETE" and "point" in trial.user_attrs:
            point = SweepPoint(**trial.user_attrs["point"])
            completed[point.value] = point
    return [completed[v] for v in values if v in completed]


def run_sweep(
    kind: str,
    values: Sequence[float],
    base: RunConfig,
    out_dir: str | Path,
    *,
    jobs: int = 1,
    k: int = 100,
    seed: int = 0,
    progress: bool = True,
    storage: str | None = None,
) -> SweepResult:
    """Train and evaluate one run per value under out_dir, then write sweep.csv/.md/.png/.json.

    The sweep is a study on Optuna's grid sampler (`vaelab.experiments.tune`, the engine of
    `vaelab tune`), kept in out_dir (`storage`: its default there, or an RDB URL that workers on
    other machines share): every value is one trial. Points already finished are read, not
    re-run; interrupted ones resume; a point whose run another process trains is skipped. With
    jobs > 1 the points run in `jobs` spawned processes with one PyTorch thread each. progress:
    a bar of finished points on a terminal (none when stderr is not one); each point is logged.
    """
    from vaelab.experiments.tune import Engine, check_storage, default_storage, run_workers

    sweep = _kind(kind)
    if jobs < 1:
        raise UserError(f"jobs must be >= 1, got {jobs}")
    if k < 2:
        raise UserError(f"k must be >= 2, got {k}")
    out_dir = Path(out_dir)
    values = [sweep.parse(str(v)) for v in values]
    for v in values:
        point_config(base, kind, v)  # (every point's config is valid before anything runs)
    if out_dir.exists() and (out_dir / runs.CONFIG).is_file():
        raise UserError(f"{out_dir}: is a run directory; a sweep needs a directory of its own")
    storage = storage or default_storage(out_dir, jobs)
    check_storage(storage, jobs)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = f"{sweep.section}.{sweep.field}"
    engine = Engine(
        str(out_dir),
        storage,
        # one study per base config and values: a changed sweep in the same directory starts afresh
        # (its finished points are still read, not re-run, from their runs)
        study=f"sweep-{kind}-{_digest([base.to_dict(), [json.dumps(v) for v in values], k, seed])}",
        trials=len(values),
        sampler="grid",
        seed=seed,
        grid={name: [json.dumps(v) for v in values]},
        pruner="none",
        stop_on_error=True,
        invocation=uuid.uuid4().hex,
    )
    trial = partial(
        sweep_trial, kind=kind, values=values, base=base.to_dict(), out=str(out_dir), k=k, seed=seed
    )
    # disable=None: a bar on a terminal only, nothing in logs or pipes (the log lines stay)
    with tqdm(
        total=len(values), desc=f"{kind} sweep", unit="point", disable=None if progress else True
    ) as bar:
        done: list[SweepPoint] = []  # a disabled bar counts nothing, so count here

        def finished(frozen) -> None:
            if "point" not in frozen.user_attrs:
                return
            point = SweepPoint(**frozen.user_attrs["point"])
            done.append(point)
            bar.update()
            log.info(
                "%s sweep: point %d of %d done (%s = %g): ELBO %.2f nats",
                kind, len(done), len(values), sweep.field, point.value, point.elbo,
            )  # fmt: skip

        run_workers(engine, trial, jobs, finished)
    points = study_points(engine, values)
    base_dict = json.loads(json.dumps(base.to_dict()))  # as sweep.json will hold it (lists, not tuples)
    result = SweepResult(kind, str(out_dir), tuple(values), base_dict, tuple(points), k)
    write_sweep(result)
    return result


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:12]


# ----------------------------------------------------------------------------------- outputs


def sweep_csv(result: SweepResult) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS.values())
    for p in result.points:
        writer.writerow([getattr(p, name) for name in COLUMNS])
    return buffer.getvalue()


def sweep_rows(result: SweepResult) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the sweep table, units in the header."""
    sweep = _kind(result.kind)
    header = [
        sweep.axis_label,
        "ELBO (nats)",
        "log p(x) ± s.e. (nats)",
        "E_q[log p(x|z)] (nats)",
        "KL (nats)",
        "squared error per pixel",
        "active units",
        "epochs (best)",
        "train time (s)",
    ]
    rows = []
    for p in result.points:
        rows.append(
            [
                f"{p.value:g}",
                f"{p.elbo:.2f}",
                f"{p.log_px:.2f} ± {p.log_px_stderr:.2f}",
                f"{p.log_p_x_given_z:.2f}",
                f"{p.kl:.2f}",
                f"{p.squared_error_per_pixel:.4f}",
                f"{p.active_units} of {p.latent_dim}",
                f"{p.epochs} ({p.best_epoch})",
                f"{p.train_seconds:.1f}",
            ]
        )
    return header, rows


def sweep_markdown(result: SweepResult) -> str:
    header, rows = sweep_rows(result)

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    base = result.base_config
    text = [
        f"# {result.kind} sweep",
        "",
        f"Data {base['data']['source']} (binarize {base['data']['binarize']}), "
        f"{base['model']['kind'].upper()}, "
        f"{base['train']['epochs']} epochs max; test-split means in nats per example, log p(x) importance "
        f"sampled with k = {result.k}.",
        "",
        line(header),
        "|" + "---|" * len(header),
    ]
    text += [line(r) for r in rows]
    if result.missing:
        text += ["", f"Not finished: {', '.join(f'{v:g}' for v in result.missing)}."]
    return "\n".join(text) + "\n"


def write_sweep(result: SweepResult) -> dict[str, Path]:
    out = Path(result.out_dir)
    for name, text in (("sweep.csv", sweep_csv(result)), ("sweep.md", sweep_markdown(result))):
        runs.write_text(out / name, text)
    runs.write_json(out / "sweep.json", result.to_dict())
    plot_sweep(result, out / "sweep.png")
    return {name: out / name for name in ("sweep.csv", "sweep.md", "sweep.json", "sweep.png")}


def load_sweep(out_dir: str | Path) -> SweepResult:
    path = Path(out_dir) / "sweep.json"
    raw = runs.read_json(path)
    try:
        return SweepResult.from_dict(raw)
    except (KeyError, TypeError) as err:
        raise UserError(f"{path}: not a vaelab sweep description ({err})") from None


# ------------------------------------------------------------------------------------- plots


def sweep_arrays(result: SweepResult) -> dict[str, np.ndarray]:
    """The columns behind a sweep's figure, sorted by value: name -> (P,) array."""
    points = sorted(result.points, key=lambda p: p.value)
    return {f.name: np.array([getattr(p, f.name) for p in points]) for f in fields(SweepPoint)}


def plot_sweep(result: SweepResult, path: str | Path) -> Path:
    sweep = _kind(result.kind)
    fig = Figure(figsize=(12.5, 4.2))
    if result.points:
        sweep.draw(fig, sweep_arrays(result), sweep, Path(result.out_dir))
    base = result.base_config
    fig.suptitle(
        f"{result.kind} sweep: {base['data']['source']}, test split, {len(result.points)} of "
        f"{len(result.values)} points finished",
        fontsize=11,
    )
    fig.tight_layout()
    return save_figure(fig, path)


def _axis(ax, sweep: SweepKind, values: np.ndarray, ylabel: str) -> None:
    ax.set_xlabel(sweep.axis_label, fontsize=9)
    ax.set_ylabel(ylabel, fontsize=9)
    if sweep.log_axis and (values > 0).all():
        ax.set_xscale("log", base=2 if sweep.name == "latent" else 10)
        ax.set_xticks(values)
        ax.set_xticklabels([f"{v:g}" for v in values], fontsize=8)
        ax.minorticks_off()
    ax.grid(alpha=0.25, linewidth=0.5)
    ax.tick_params(labelsize=8)


def _bound_panel(ax, a: dict[str, np.ndarray], sweep: SweepKind, recon: bool = True) -> None:
    v = a["value"]
    ax.errorbar(v, a["log_px"], yerr=a["log_px_stderr"], marker="o", label="log p(x), importance sampled")
    ax.plot(v, a["elbo"], marker="s", label="ELBO")
    if recon:
        ax.plot(v, a["log_p_x_given_z"], marker="^", label="E_q[log p(x|z)]")
    ax.legend(fontsize=8)
    ax.set_title("bound and estimate (higher is better)", fontsize=10)
    _axis(ax, sweep, v, "nats per example")


@register_sweep("latent", "model", "latent_dim", _integer, "latent size Z")
def _draw_latent(fig, a: dict[str, np.ndarray], sweep: SweepKind, out_dir: Path) -> None:
    left, right = fig.subplots(1, 2)
    _bound_panel(left, a, sweep)
    v = a["value"]
    right.plot(v, a["kl"], marker="o", color="C3", label="KL(q(z|x) || p(z)) (nats, left axis)")
    _axis(right, sweep, v, "KL, nats per example")
    twin = right.twinx()
    twin.plot(v, a["active_units"], marker="s", color="C4", linestyle="--", label="active units (right axis)")
    twin.plot(v, v, color="0.6", linestyle=":", linewidth=1, label="all dims active (= Z)")
    twin.set_ylabel(f"active units ({active_units_rule()}), count", fontsize=9)
    twin.yaxis.set_major_locator(MaxNLocator(integer=True))
    twin.tick_params(labelsize=8)
    handles = right.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    right.legend(handles=handles, fontsize=8, loc="upper left")
    right.set_title("how much of the latent is used", fontsize=10)


@register_sweep(
    "sigma",
    "model",
    "sigma",
    _number,
    "Gaussian decoder s.d. sigma (intensity units)",
    fixed={"model": {"likelihood": "gaussian"}},
)
def _draw_sigma(fig, a: dict[str, np.ndarray], sweep: SweepKind, out_dir: Path) -> None:
    left, middle, right = fig.subplots(1, 3)
    v = a["value"]
    left.plot(v, a["squared_error_per_pixel"], marker="o")
    left.set_title("reconstruction: squared error of E[x | z = E_q[z|x]]", fontsize=9)
    _axis(left, sweep, v, "squared error per pixel (intensity²)")
    middle.plot(v, a["kl"], marker="o", color="C3", label="KL (nats)")
    middle.set_title("rate: KL(q(z|x) || p(z))", fontsize=10)
    _axis(middle, sweep, v, "KL, nats per example")
    twin = middle.twinx()
    twin.plot(v, a["active_units"], marker="s", color="C4", linestyle="--")
    twin.set_ylabel("active units (dashed), count", fontsize=9)
    twin.yaxis.set_major_locator(MaxNLocator(integer=True))
    twin.tick_params(labelsize=8)
    _bound_panel(right, a, sweep, recon=False)


@register_sweep("beta", "objective", "beta", _number, "KL weight beta")
def _draw_beta(fig, a: dict[str, np.ndarray], sweep: SweepKind, out_dir: Path) -> None:
    left, right = fig.subplots(1, 2)
    rate, distortion = a["kl"], -a["log_p_x_given_z"]
    left.plot(rate, distortion, marker="o", color="C2")
    for r, d, b in zip(rate, distortion, a["value"], strict=True):
        left.annotate(f"beta = {b:g}", (r, d), xytext=(4, 4), textcoords="offset points", fontsize=8)
    left.set_xlabel("rate R = KL(q(z|x) || p(z)), nats per example", fontsize=9)
    left.set_ylabel("distortion D = -E_q[log p(x|z)], nats per example", fontsize=9)
    left.set_title("rate-distortion curve (ELBO = -(D + R))", fontsize=10)
    left.grid(alpha=0.25, linewidth=0.5)
    left.tick_params(labelsize=8)
    _bound_panel(right, a, sweep, recon=False)
    right.set_title("test ELBO (beta = 1) and log p(x) of each beta-trained model", fontsize=9)


@register_sweep("lr", "train", "lr", _number, "Adam learning rate")
def _draw_lr(fig, a: dict[str, np.ndarray], sweep: SweepKind, out_dir: Path) -> None:
    left, right = fig.subplots(1, 2)
    _bound_panel(left, a, sweep, recon=False)
    left.plot(a["value"], a["best_valid_elbo"], marker="v", linestyle=":", label="best validation ELBO")
    left.legend(fontsize=8)
    for value, run in zip(a["value"], a["run"], strict=True):
        metrics = runs.read_metrics(out_dir / str(run))
        if metrics:
            right.plot(
                [r["epoch"] for r in metrics],
                [r["valid_elbo_nats"] for r in metrics],
                label=f"lr = {value:g}",
            )
    right.set_xlabel("epoch", fontsize=9)
    right.xaxis.set_major_locator(MaxNLocator(integer=True))
    right.set_ylabel("validation ELBO, nats per example", fontsize=9)
    right.set_title("repeated training: validation ELBO per epoch", fontsize=10)
    right.legend(fontsize=8)
    right.grid(alpha=0.25, linewidth=0.5)
    right.tick_params(labelsize=8)
    curves = [r["valid_elbo_nats"] for run in a["run"] for r in runs.read_metrics(out_dir / str(run))]
    if (
        curves
    ):  # the first epochs of a large lr can sit far below the rest: cut the axis at the 5th percentile
        right.set_ylim(bottom=float(np.percentile(curves, 5)))
