"""Evaluate a run on a split: the ELBO and its two terms, and an importance-sampled log p(x).

All numbers are dataset means in nats per example, with bits per dimension alongside; the
importance-sampling estimate carries its Monte Carlo standard error. Every log-density is of the
data as given, not of the model's input: the input transform's correction
`Splits.log_det_nats()` is added (0 for data scored as they are and for the discrete likelihoods
of 8-bit levels; -D log 256 for a continuous density on dequantized 8-bit data, which makes the
number a lower bound on log P(x) of the levels). So bits/dim = -log P(x) / (D ln 2) with D the
number of subpixels, the figure papers report. The result is written
atomically to RUN/eval.json (RUN/eval-<split>.json for other splits: `eval_path`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from vaelab import devices, runs
from vaelab.data import load_run_data
from vaelab.diagnostics import ACTIVE_THRESHOLD, latent_name
from vaelab.errors import UserError
from vaelab.estimators import (
    DatasetLogPx,
    bits_per_dim,
    dataset_log_px,
    default_chunk_size,
    elbo_decomposition,
)
from vaelab.inference_gaps import inference_gaps
from vaelab.models import LatentVariableModel
from vaelab.objectives import dataset_terms

AE_NOTE = (
    "an autoencoder has no ELBO or log p(x): its code is a point mass, whose KL to any density is "
    "infinite; only the reconstruction term log p(x | z = f(x)) is reported"
)


@dataclass(frozen=True)
class Evaluation:
    """Dataset means over `num_examples` rows of `split`, nats per example unless named *_bpd.

    elbo = log_p_x_given_z - kl = log_p_xz + entropy (E_q[log p(x, z)] + H(q)); kl_per_dim (Z,)
    where q and p(z) are diagonal Gaussians; posterior_mean_variance (Z,) is Cov_x(E_q[z_u]) and
    active_units counts it above `ACTIVE_THRESHOLD` (Burda et al. 2015); log_px is the
    importance-sampled estimate with `k` samples and its Monte Carlo standard error. For an AE
    only log_p_x_given_z is defined (see `note`). log_det_nats: the input transform's correction
    per example, already included in every log-density here (elbo, log_p_x_given_z, log_p_xz,
    log_px), so they are of the data as given; kl and entropy are of z and carry none. path: the
    file `evaluate_run` wrote and per_example: the per-example estimates behind log_px, of the
    model's input (`write_per_example_log_px` stores them of the data as given); neither is part
    of eval.json. kl_layers and active_units_layers: a hierarchical model's KL and active units
    per stochastic layer (`vaelab.hierarchical`), layer 1 next to x.
    """

    run: str
    split: str
    num_examples: int
    num_dims: int
    log_p_x_given_z: float
    seconds_elbo: float
    elbo: float | None = None
    kl: float | None = None
    log_p_xz: float | None = None
    entropy: float | None = None
    kl_per_dim: tuple[float, ...] | None = None
    posterior_mean_variance: tuple[float, ...] | None = None
    active_units: int | None = None
    log_px: float | None = None
    log_px_stderr: float | None = None
    k: int | None = None
    seconds_log_px: float | None = None
    precision: str = "fp32"
    log_det_nats: float = 0.0
    note: str | None = None
    inference_gaps: dict[str, Any] | None = None
    kl_layers: tuple[float, ...] | None = None
    active_units_layers: tuple[int, ...] | None = None
    path: Path | None = None
    per_example: DatasetLogPx | None = field(default=None, repr=False, compare=False)

    @property
    def nll(self) -> float | None:
        return None if self.log_px is None else -self.log_px

    @property
    def gap(self) -> float | None:
        """log p(x) - ELBO: an estimate of E_x KL(q(z|x) || p(z|x)), nats per example."""
        return None if self.log_px is None or self.elbo is None else self.log_px - self.elbo

    def bpd(self, nats: float | None) -> float | None:
        return None if nats is None else float(bits_per_dim(-nats, self.num_dims))

    @property
    def nll_bpd_stderr(self) -> float | None:
        """The Monte Carlo standard error of nll_bpd."""
        return None if self.log_px_stderr is None else float(bits_per_dim(self.log_px_stderr, self.num_dims))

    def to_dict(self) -> dict[str, Any]:
        """The contents of eval.json: every field but `path`, and the derived figures."""
        fields = asdict(replace(self, per_example=None))
        out = {k: list(v) if isinstance(v, tuple) else v for k, v in fields.items() if k not in _NOT_IN_FILE}
        out.update(
            units="nats per example (dataset mean); *_bpd in bits per dimension; elbo and log_px are "
            "higher-is-better, nll = -log_px; log-densities of the data as given (log_det_nats included)",
            nll=self.nll,
            gap=self.gap,
            nll_bpd=self.bpd(self.log_px),
            nll_bpd_stderr=self.nll_bpd_stderr,
            negative_elbo_bpd=self.bpd(self.elbo),
        )
        return out


_NOT_IN_FILE = ("path", "per_example")


def evaluate_model(
    model: LatentVariableModel,
    x: Tensor,
    *,
    k: int = 1000,
    batch_size: int | None = None,
    seed: int = 0,
    run: str = "",
    split: str = "test",
    precision: str = "fp32",
    progress: bool = True,
    log_det_nats: float = 0.0,
) -> Evaluation:
    """The ELBO decomposed (one sample per example; KL, E_q[log p(z)] and H(q) in closed form for
    diagonal Gaussians), KL per latent dimension, active units, and the importance-sampled
    log p(x) with `k` samples per example and its standard error. x: (N, *x_shape).

    Runs on the model's device; x is moved there once when it fits (else batch by batch).
    batch_size: examples per importance-sampling call, and the chunks of samples within it,
    follow from the device's free memory when None (`vaelab.devices`). precision: the
    networks' products (fp32, bf16 or fp16; auto is fp32: the estimate is a measurement);
    log-probabilities and sums stay float32. `progress` shows a bar over the
    importance-sampling batches on a terminal (never when stderr is not a TTY). log_det_nats:
    the input transform's correction per example (`Splits.log_det_nats`), added to every
    log-density so that they are of the data as given."""
    if k < 2:
        raise UserError(f"k must be >= 2 for a standard error, got {k}")
    if batch_size is not None and batch_size < 1:
        raise UserError(f"batch_size must be >= 1, got {batch_size}")
    precision = "fp32" if precision == "auto" else precision
    device = next(iter(model.parameters()), x).device if isinstance(model, torch.nn.Module) else x.device
    dims = math.prod(x.shape[1:])
    if batch_size is None:
        batch_size = devices.evaluation_batch_size(device, k, dims)
    # (the CPU's cache-sized chunks are the estimator's own default)
    chunk_size = (
        None
        if device.type == "cpu"
        else default_chunk_size(k, batch_size, dims, budget_bytes=devices.chunk_budget_bytes(device))
    )
    placed = devices.DeviceData(x, device)
    x = placed.x if placed.resident else x
    common: dict[str, Any] = {
        "run": run,
        "split": split,
        "num_examples": len(x),
        "num_dims": math.prod(x.shape[1:]),
    }
    start = time.perf_counter()
    if model.deterministic:
        terms = dataset_terms(model, x, seed=seed)
        seconds = time.perf_counter() - start
        return Evaluation(
            **common,
            log_p_x_given_z=terms.log_p_x_given_z + log_det_nats,
            seconds_elbo=seconds,
            log_det_nats=log_det_nats,
            note=AE_NOTE,
        )
    elbo_batches = (batch.to(device) for batch in x.split(1000))
    d = elbo_decomposition(model, elbo_batches, generator=devices.make_generator(device, seed))
    seconds_elbo = time.perf_counter() - start
    on_device = (batch.to(device, non_blocking=True) for batch in x.split(batch_size))
    batches = _with_progress(on_device, len(x), f"log p(x), k={k}", enabled=progress)
    with devices.autocast(device, precision):
        estimate = dataset_log_px(
            model, batches, k, generator=devices.make_generator(device, seed), chunk_size=chunk_size
        )
    return Evaluation(
        **common,
        log_p_x_given_z=d.log_p_x_given_z + log_det_nats,
        seconds_elbo=seconds_elbo,
        elbo=d.elbo + log_det_nats,
        kl=d.kl,
        log_p_xz=d.log_p_xz + log_det_nats,
        entropy=d.entropy,
        kl_per_dim=d.kl_per_dim,
        posterior_mean_variance=d.posterior_mean_variance,
        active_units=d.active_units,
        kl_layers=d.kl_layers,
        active_units_layers=d.active_units_layers,
        log_px=estimate.mean + log_det_nats,
        log_px_stderr=estimate.mean_stderr,
        k=k,
        seconds_log_px=estimate.seconds,
        precision=precision,
        per_example=estimate,
        log_det_nats=log_det_nats,
    )


def _with_progress(batches: Iterable[Tensor], total: int, desc: str, *, enabled: bool) -> Iterator[Tensor]:
    """Yield the batches, advancing a bar by each batch's rows once the caller is done with it.

    One update per batch (each is k network passes), so the bar costs nothing measurable.
    """
    with tqdm(total=total, desc=desc, unit="ex", leave=False, disable=None if enabled else True) as bar:
        for x in batches:
            yield x
            bar.update(len(x))


def evaluate_run(
    run_dir: str | Path,
    *,
    k: int = 1000,
    split: str = "test",
    batch_size: int | None = None,
    seed: int = 0,
    precision: str = "fp32",
    progress: bool = True,
    gap_rows: int = 0,
    device: str = "cpu",
) -> Evaluation:
    """Evaluate a run's model on `split` (see `evaluate_model`) and write it to `eval_path`;
    the result's `path` says where. With `gap_rows` > 0, also split the inference gap into its
    approximation and amortization parts on that many seeded random rows
    (`vaelab.inference_gaps`). device: where the model runs (`vaelab.devices`), whatever
    device trained it."""
    run_dir = runs.check_run_dir(run_dir)
    model = runs.load_model(run_dir, device=devices.resolve_device(device))
    config = runs.read_config(run_dir)
    splits = load_run_data(config)
    x = splits.inputs(split)
    runs.check_example_shape(run_dir, model.x_shape, x, config.data.source)
    result = evaluate_model(
        model,
        x,
        k=k,
        batch_size=batch_size,
        seed=seed,
        run=str(run_dir),
        split=split,
        precision=precision,
        progress=progress,
        log_det_nats=splits.log_det_nats(),
    )
    if gap_rows and not model.deterministic:
        rows = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:gap_rows]
        gaps = inference_gaps(model, x[rows].to(next(model.parameters()).device), k=k, seed=seed)
        result = replace(result, inference_gaps=gaps.to_dict())
    path = eval_path(run_dir, split)
    if result.per_example is not None:  # first, so eval.json is never older than the file it explains
        write_per_example_log_px(run_dir, split, result.per_example, log_det_nats=result.log_det_nats)
    runs.write_json(path, result.to_dict())
    return replace(result, path=path)


def format_evaluation(e: Evaluation) -> str:
    """A small table for the terminal."""

    def row(name: str, nats: float, extra: str = "") -> str:
        bpd = bits_per_dim(-nats, e.num_dims)
        return f"  {name:<26} {nats:11.3f} nats  {bpd:7.4f} bits/dim{extra}"

    lines = [f"{e.split} split, all {e.num_examples} examples of {e.num_dims} dims (bits/dim of -value):"]
    if e.log_det_nats:
        correction = f"{e.log_det_nats:.3f} nats of the input transform included"
        lines.append(f"  (log-densities of the data as given: {correction})")
    lines.append(row("E_q[log p(x|z)]", e.log_p_x_given_z))
    if e.elbo is None or e.log_px is None or e.gap is None:  # an autoencoder: see the note
        if e.note:
            lines.append(f"  note: {e.note}")
        return "\n".join(lines)
    lines.append(f"  {'KL(q(z|x) || p(z))':<26} {e.kl:11.3f} nats")
    lines.append(row("ELBO", e.elbo, f"   [{e.seconds_elbo:.1f} s]"))
    lines.append(f"  {'  = E_q[log p(x,z)] + H(q)':<26} {e.log_p_xz:11.3f} + {e.entropy:.3f} nats")
    is_extra = f"  ± {e.log_px_stderr:.3f} s.e.  [{e.seconds_log_px:.1f} s]"
    lines.append(row(f"log p(x), IS k={e.k}", e.log_px, is_extra))
    lines.append(f"  {'gap log p(x) - ELBO':<26} {e.gap:11.3f} nats  (estimates KL(q(z|x) || p(z|x)))")
    if e.active_units is not None and e.posterior_mean_variance is not None:
        lines.append(
            f"  {'active units':<26} {e.active_units:11d} of {len(e.posterior_mean_variance)}"
            f"  (Cov_x(E_q[z_u]) > {ACTIVE_THRESHOLD:g})"
        )
    if e.kl_layers is not None:
        active = e.active_units_layers or ()
        per_layer = ", ".join(
            f"z_{i} {kl:.2f}" + (f" ({active[i - 1]} active)" if active else "")
            for i, kl in enumerate(e.kl_layers, 1)
        )
        lines.append(f"  {'KL per stochastic layer':<26} {per_layer}")
    if e.inference_gaps is not None:
        g = e.inference_gaps
        lines.append(
            f"  {'gap split (Cremer 2018)':<26} approximation {g['approximation_gap']:.3f} ± "
            f"{g['approximation_gap_stderr']:.3f} + amortization {g['amortization_gap']:.3f} ± "
            f"{g['amortization_gap_stderr']:.3f} nats  ({g['num_examples']} random rows)"
        )
        lines.append(f"  {'':<26} method: {g['method']}")
    if e.kl_per_dim is not None:
        top = sorted(enumerate(e.kl_per_dim), key=lambda pair: -pair[1])[:6]
        top_dims = ", ".join(f"{latent_name(i)} {v:.2f}" for i, v in top)
        lines.append(f"  {'KL per latent dim, top':<26} " + top_dims)
    return "\n".join(lines)


def eval_path(run_dir: str | Path, split: str = "test") -> Path:
    """Where `evaluate_run` writes: RUN/eval.json for the test split, RUN/eval-<split>.json else."""
    return Path(run_dir) / ("eval.json" if split == "test" else f"eval-{split}.json")


# ------------------------------------------------------------------- per-example log p(x)


@dataclass(frozen=True)
class PerExampleLogPx:
    """The importance-sampled log p(x) of every row of a split: value, stderr (N,) float64 in nats,
    from k samples each: what the evaluation's dataset mean averaged (the explorer shows where a
    new image falls among them)."""

    value: Tensor
    stderr: Tensor
    k: int
    split: str


def per_example_path(run_dir: str | Path, split: str = "test") -> Path:
    """Where `evaluate_run` keeps the per-example estimates: RUN/log-px-<split>.safetensors."""
    return Path(run_dir) / f"log-px-{split}.safetensors"


def write_per_example_log_px(
    run_dir: Path, split: str, estimate: DatasetLogPx, *, log_det_nats: float = 0.0
) -> Path:
    """Write `estimate`'s per-example value (of the model's input) as log-densities of the data as
    given (`log_det_nats` added, like eval.json's mean) and its stderr, safetensors with k, split
    and log_det_nats in its header, atomically to `per_example_path`."""
    from safetensors.torch import save_file

    path = per_example_path(run_dir, split)
    tensors = {
        "log_px": (estimate.value.double() + log_det_nats).contiguous(),
        "stderr": estimate.stderr.double().contiguous(),
    }
    metadata = {
        "k": str(estimate.k),
        "split": split,
        "units": "nats per example, of the data as given",
        "log_det_nats": repr(float(log_det_nats)),
    }
    runs.atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))
    return path


def read_per_example_log_px(
    run_dir: str | Path, split: str, num_examples: int, *, log_det_nats: float = 0.0
) -> PerExampleLogPx | None:
    """The file `write_per_example_log_px` wrote, checked against the split's `num_examples` rows
    (shapes, dtypes, finite values, k >= 2) before use; None where `evaluate` has not written one.
    Values of the data as given: a file written before the header named its `log_det_nats` held
    the model input's, and gets the run's `log_det_nats` added."""
    from safetensors import SafetensorError, safe_open

    path = per_example_path(run_dir, split)
    if not path.is_file():
        return None
    expected_bytes = 2 * 8 * num_examples
    if path.stat().st_size > expected_bytes + 64 * 1024:  # a header of a few hundred bytes
        raise UserError(f"{path}: {path.stat().st_size} bytes, far more than {num_examples} estimates need")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata, names = f.metadata() or {}, set(f.keys())
            if names != {"log_px", "stderr"}:
                raise UserError(f"{path}: expected tensors log_px and stderr, found {sorted(names)}")
            value, stderr = f.get_tensor("log_px"), f.get_tensor("stderr")
    except SafetensorError as err:
        raise UserError(f"{path}: corrupt or truncated safetensors file ({err})") from None
    k = metadata.get("k", "")
    if not k.isdigit() or int(k) < 2 or metadata.get("split") != split:
        raise UserError(f"{path}: header needs k >= 2 and split {split!r}, got {metadata}")
    for name, tensor in (("log_px", value), ("stderr", stderr)):
        if tensor.dtype != torch.float64 or tuple(tensor.shape) != (num_examples,):
            raise UserError(
                f"{path}: {name} should be float64 of shape ({num_examples},) for the {split} split, "
                f"got {tensor.dtype} {tuple(tensor.shape)}"
            )
        if not torch.isfinite(tensor).all():
            raise UserError(f"{path}: {name} holds values that are not finite")
    if "log_det_nats" not in metadata:  # (written before files were of the data as given)
        value = value + log_det_nats
    return PerExampleLogPx(value, stderr, int(k), split)
