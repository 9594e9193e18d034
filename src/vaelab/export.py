"""Export a run's networks to ONNX, with a JSON file that says what goes in and comes out.

    result = export_run("runs/vae", "onnx")     # -> runs/vae/export/{encoder,decoder}.onnx, model.json

The encoder maps x: (batch, *x_shape) float32, the model's input, to the parameters of q(z|x);
the decoder maps z: (batch, Z) float32 to the parameters of p(x|z); the batch axis is dynamic in
both. What the parameters are depends on the family, and each family's extraction is declared once
in `POSTERIORS` (by `model.kind`) and `LIKELIHOODS` (by `model.likelihood`):

    vae  q(z|x) = N(loc, diag(scale^2))        encoder -> loc (batch, Z), scale (batch, Z)
    ae   q(z|x) = a point mass at z = f(x)      encoder -> z (batch, Z)
    bernoulli  p(x|z) = Bernoulli(sigmoid(logits))          decoder -> logits (batch, *x_shape)
    gaussian   p(x|z) = N(loc, scale^2) per dimension       decoder -> loc, scale (batch, *x_shape)

A family without an entry is refused in one line before anything is written. The parameters are
the model's own distributions' (`model.posterior(x)`, `model.likelihood(z)`), traced by PyTorch's
dynamo ONNX exporter (onnxscript), so the clamp of the log-variance and the sigma of a Gaussian
decoder are in the graph. model.json describes inputs, outputs (names, dtypes, shapes with
"batch" for the dynamic axis), the likelihood, the prior p(z) with its parameters, and the
transform that turns stored data into the encoder's input. With `check_rows` > 0 the export is
run with ONNX Runtime on that many test rows and compared with PyTorch (`CHECK_RTOL`,
`CHECK_ATOL`), and the largest differences are recorded in model.json.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from vaelab import runs
from vaelab.config import ModelConfig
from vaelab.data import load_data
from vaelab.errors import UserError
from vaelab.models import VAE

log = logging.getLogger(__name__)

FORMATS = ("onnx",)
Format = Literal["onnx"]
EXPORT_DIR = "export"  # RUN/export unless --out says otherwise
ENCODER, DECODER, DESCRIPTION = "encoder.onnx", "decoder.onnx", "model.json"
OPSET = 18
CHECK_RTOL = CHECK_ATOL = 1e-5  # ONNX Runtime against PyTorch, float32 (DECISIONS.md, #11)
TRACE_BATCH = 2  # the example batch the graphs are traced with (1 would be specialized)


@dataclass(frozen=True)
class Parameters:
    """How a family's distribution becomes ONNX outputs: (name, meaning) of each output, the
    tensors of a distribution in that order, and the distribution they parameterize."""

    outputs: tuple[tuple[str, str], ...]
    of: Callable[[Any], tuple[Tensor, ...]]
    distribution: str

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.outputs)


POSTERIORS: dict[str, Parameters] = {
    "vae": Parameters(
        (("loc", "the mean of q(z|x)"), ("scale", "the standard deviation of q(z|x), per dimension")),
        lambda q: (q.base_dist.loc, q.base_dist.scale),
        "q(z|x) = N(loc, diag(scale^2)); a sample is z = loc + scale * eps, eps ~ N(0, I)",
    ),
    "ae": Parameters(
        (("z", "the code z = f(x)"),), lambda q: (q.loc,), "q(z|x) is a point mass at the code z = f(x)"
    ),
}
LIKELIHOODS: dict[str, Parameters] = {
    "bernoulli": Parameters(
        (("logits", "log-odds of x_d = 1"),),
        lambda p: (p.base_dist.logits,),
        "p(x|z) = prod_d Bernoulli(x_d; sigmoid(logits_d)); its mean is sigmoid(logits)",
    ),
    "gaussian": Parameters(
        (("loc", "the mean of p(x|z)"), ("scale", "the standard deviation of p(x|z), per dimension")),
        lambda p: (p.base_dist.loc, p.base_dist.scale),
        "p(x|z) = prod_d N(x_d; loc_d, scale_d^2)",
    ),
}


@dataclass(frozen=True)
class ExportResult:
    out: Path
    files: tuple[Path, ...]
    description: dict[str, Any]


def export_run(
    run_dir: str | Path, format: Format = "onnx", out: str | Path | None = None, *, check_rows: int = 100
) -> ExportResult:
    """Export the best weights of run `run_dir` into `out` (default RUN/export): encoder.onnx,
    decoder.onnx and model.json. The files appear together or not at all (written in a
    temporary directory beside `out`, then moved in); an existing export is replaced."""
    if format not in FORMATS:
        raise UserError(f"format {format!r} is not one of {', '.join(FORMATS)}")
    run_dir = runs.check_run_dir(run_dir)
    config = runs.read_config(run_dir)
    exportable(config.model, run_dir)
    out = Path(out) if out is not None else run_dir / EXPORT_DIR
    _parent(out)  # (refused before the model and the data are loaded)
    model = runs.load_model(run_dir)
    transform, x_check = None, None
    if check_rows > 0:
        splits = load_data(config.data, config.limits)
        x_check = splits.inputs("test")[:check_rows]
        runs.check_example_shape(run_dir, model.x_shape, x_check, config.data.source)
        transform = [
            {"step": type(step).__name__.lower(), **dataclasses.asdict(step)}
            for step in splits.transform.steps
        ]
    description = export_model(model, out, transform=transform, x_check=x_check, run_dir=run_dir)
    return ExportResult(out, (out / ENCODER, out / DECODER, out / DESCRIPTION), description)


def exportable(config: ModelConfig, where: Path | str) -> None:
    """Refuse, in one line, a model family whose parameters this module cannot name."""
    kind, likelihood = config.kind, config.likelihood
    if kind not in POSTERIORS:
        raise UserError(
            f"{where}: model.kind {kind} cannot be exported to ONNX (exportable: {', '.join(POSTERIORS)})"
        )
    if config.posterior != "diagonal":
        raise UserError(
            f"{where}: model.posterior {config.posterior} cannot be exported to ONNX (its q(z|x) is not "
            "a diagonal Gaussian's loc and scale; exportable: model.posterior diagonal)"
        )
    if config.layers > 1:
        raise UserError(
            f"{where}: model.layers {config.layers}: a hierarchical model's q(z|x) and p(z) are drawn "
            "layer by layer through networks, with no fixed parameters to export to ONNX (exportable: "
            "one stochastic layer)"
        )
    if likelihood not in LIKELIHOODS:
        raise UserError(
            f"{where}: model.likelihood {likelihood} cannot be exported to ONNX "
            f"(exportable: {', '.join(LIKELIHOODS)})"
        )
    if config.condition != "none":
        raise UserError(
            f"{where}: model.condition {config.condition} cannot be exported to ONNX (its networks also "
            "read the label; exportable: model.condition none)"
        )


class DistributionParameters(nn.Module):
    """x -> the parameters of the distribution `model.<method>(x)`, a module torch.onnx traces."""

    def __init__(self, model: VAE, method: str, parameters: Parameters) -> None:
        super().__init__()
        self.model, self.method, self.parameters_of = model, method, parameters

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        return self.parameters_of.of(getattr(self.model, self.method)(x))


def graphs(model: VAE) -> tuple[DistributionParameters, DistributionParameters]:
    """(encoder x -> q(z|x)'s parameters, decoder z -> p(x|z)'s parameters) of `model`, in eval mode."""
    config = model.config
    encoder = DistributionParameters(model, "posterior", POSTERIORS[config.kind])
    decoder = DistributionParameters(model, "likelihood", LIKELIHOODS[config.likelihood])
    return encoder.eval(), decoder.eval()


def export_model(
    model: VAE,
    out: Path,
    *,
    transform: list[dict[str, Any]] | None = None,
    x_check: Tensor | None = None,
    run_dir: Path | None = None,
) -> dict[str, Any]:
    """Write encoder.onnx, decoder.onnx and model.json of `model` into `out`; returns the
    description. x_check: (N, *x_shape) model inputs on which ONNX Runtime's outputs must match
    PyTorch's (and the decoder's at their posterior means)."""
    exportable(model.config, run_dir or "model")
    model = model.eval().float()
    encoder, decoder = graphs(model)
    x_example = torch.zeros(TRACE_BATCH, *model.x_shape)  # (tracing reads shapes, not values)
    z_example = torch.zeros(TRACE_BATCH, model.latent_dim)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=_parent(out)))
    try:
        _to_onnx(encoder, x_example, "x", staging / ENCODER)
        _to_onnx(decoder, z_example, "z", staging / DECODER)
        description = describe(model, transform, run_dir)
        if x_check is not None:
            description["check"] = check(model, staging, x_check)
        (staging / DESCRIPTION).write_text(json.dumps(description, indent=2) + "\n")
        _replace_dir(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return description


def _parent(out: Path) -> Path:
    """The directory the export goes into, refusing an `out` that is not a place for one."""
    if out.is_symlink():
        raise UserError(f"{out}: is a symbolic link; export into a directory of its own")
    parent = out.absolute().parent
    if not parent.is_dir():
        raise UserError(f"{out}: the directory {parent} does not exist")
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a directory")
    return parent


def _replace_dir(staging: Path, out: Path) -> None:
    """Move the finished export into place, replacing an earlier one (never through a link)."""
    _parent(out)
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{staging.name.rsplit('-', 1)[-1]}")
        out.rename(old)
    staging.chmod(0o777 & ~_umask())
    staging.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """torch.onnx's own chatter, which says nothing about this export: a FutureWarning of
    torch's pytree (torch 2.13) and a logged line per torchvision operator it cannot register."""
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
            yield
    finally:
        registration.setLevel(level)


def _to_onnx(module: DistributionParameters, example: Tensor, input_name: str, path: Path) -> None:
    names = module.parameters_of.names
    batch = torch.export.Dim("batch", min=1)
    try:
        with _quiet_exporter(), torch.no_grad():
            program = torch.onnx.export(
                module,
                (example,),
                input_names=[input_name],
                output_names=list(names),
                dynamic_shapes=({0: batch},),
                opset_version=OPSET,
                dynamo=True,
                verbose=False,
                optimize=True,
            )
    except Exception as error:  # an operation the exporter cannot translate
        first = (str(error).strip().splitlines() or [""])[0][:200]
        raise UserError(
            f"{path.name}: torch.onnx could not export the network ({type(error).__name__}: {first})"
        ) from None
    assert program is not None
    program.save(str(path))


def _io(name: str, shape: tuple[int | str, ...], meaning: str) -> dict[str, Any]:
    return {"name": name, "dtype": "float32", "shape": list(shape), "meaning": meaning}


def describe(model: VAE, transform: list[dict[str, Any]] | None, run_dir: Path | None) -> dict[str, Any]:
    """model.json: the two graphs' inputs and outputs, the likelihood, the prior and the input
    transform (None: not recorded, the export was made without the run's data)."""
    config = model.config
    x_shape: tuple[int | str, ...] = ("batch", *model.x_shape)
    z_dims: tuple[int | str, ...] = ("batch", model.latent_dim)
    posterior, likelihood = POSTERIORS[config.kind], LIKELIHOODS[config.likelihood]
    return {
        "format": "onnx",
        "opset": OPSET,
        "exporter": f"torch.onnx (dynamo) {torch.__version__}",
        "run": None if run_dir is None else str(run_dir.resolve()),
        "model": config.kind,
        "encoder": {
            "file": ENCODER,
            "inputs": [_io("x", x_shape, "the model's input: stored data after `transform`")],
            "outputs": [_io(name, z_dims, meaning) for name, meaning in posterior.outputs],
            "posterior": posterior.distribution,
        },
        "decoder": {
            "file": DECODER,
            "inputs": [_io("z", z_dims, "latent codes")],
            "outputs": [_io(name, x_shape, meaning) for name, meaning in likelihood.outputs],
            "likelihood": {"family": config.likelihood, "distribution": likelihood.distribution},
        },
        "prior": prior_description(model),
        "transform": transform,
        "units": "log-densities from these parameters are in nats per example of the model's input",
    }


def prior_description(model: VAE) -> dict[str, Any]:
    """p(z) and its parameters: N(0, I), or a mixture sum_k softmax(logits)_k N(loc_k, diag(scale_k^2))
    (for the VampPrior, the encoder's posteriors at its pseudo-inputs)."""
    if model.deterministic:
        return {
            "family": "none",
            "meaning": "an AE has no prior; vaelab decodes z ~ N(0, I) to show its codes",
        }
    kind = model.config.prior
    if kind == "normal":
        return {"family": "normal", "meaning": f"p(z) = N(0, I_{model.latent_dim})"}
    with torch.no_grad():
        p_z: Any = model.prior()  # a DiagonalGaussianMixture
    return {
        "family": "mixture",
        "kind": kind,
        "meaning": "p(z) = sum_k softmax(logits)_k N(z; loc_k, diag(scale_k^2))",
        "logits": p_z.mixture_distribution.logits.tolist(),
        "loc": p_z.component_distribution.base_dist.loc.tolist(),
        "scale": p_z.component_distribution.base_dist.scale.tolist(),
    }


def onnx_outputs(path: Path, name: str, value: Tensor) -> list[np.ndarray]:
    """Run one exported graph with ONNX Runtime on CPU: {name: value} -> its outputs in order."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {name: value.numpy()})


@torch.no_grad()
def torch_outputs(model: VAE, x: Tensor) -> tuple[tuple[Tensor, ...], Tensor, tuple[Tensor, ...]]:
    """(encoder outputs at x, the posterior means z, decoder outputs at z), in PyTorch."""
    encoder, decoder = graphs(model)
    z = model.posterior(x).mean
    return encoder(x), z, decoder(z)


def check(model: VAE, out: Path, x: Tensor) -> dict[str, Any]:
    """Compare ONNX Runtime with PyTorch on x: (N, *x_shape) and on z = E_q[z|x]; a difference
    beyond rtol CHECK_RTOL and atol CHECK_ATOL is an error. Returns the largest differences."""
    expected_encoder, z, expected_decoder = torch_outputs(model, x)
    largest: dict[str, float] = {}
    for file, name, value, expected in (
        (ENCODER, "x", x, expected_encoder),
        (DECODER, "z", z, expected_decoder),
    ):
        got = onnx_outputs(out / file, name, value)
        names = graphs(model)[file == DECODER].parameters_of.names
        for output, a, tensor in zip(names, got, expected, strict=True):
            b = tensor.numpy()
            key = f"{file.removesuffix('.onnx')}.{output}"
            largest[key] = float(np.max(np.abs(a - b))) if a.size else 0.0
            if a.shape != b.shape or not np.allclose(a, b, rtol=CHECK_RTOL, atol=CHECK_ATOL):
                raise UserError(
                    f"{file}: ONNX Runtime's {output} differs from PyTorch's by up to {largest[key]:.3g} "
                    f"(tolerance rtol {CHECK_RTOL}, atol {CHECK_ATOL}); the export is not kept"
                )
    return {"rows": len(x), "rtol": CHECK_RTOL, "atol": CHECK_ATOL, "max_abs_difference": largest}
