"""ONNX export, run with ONNX Runtime: the encoder's and decoder's outputs equal PyTorch's
distributions' parameters within rtol 1e-5, atol 1e-5 on 100 test rows, at any batch size, for the
MLP, gated and conv nets, a VAE and an AE, each likelihood (Bernoulli, Gaussian with a fixed and a
learned sigma) and each prior; a family without an exporter is refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch

from vaelab import runs
from vaelab.cli import main
from vaelab.config import DataConfig
from vaelab.data import load_data

RTOL = ATOL = 1e-5
ROWS = 100
TINY = ["--data", "digits", "--hidden", "16", "--threads", "1", "--quiet"]


@pytest.fixture(scope="module")
def test_rows() -> torch.Tensor:
    """100 rows of the digits test split as the model takes them: (100, 1, 8, 8) float32."""
    return load_data(DataConfig(source="digits")).inputs("test")[:ROWS]


def session(path: Path) -> onnxruntime.InferenceSession:
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@torch.no_grad()
def expected(model, x: torch.Tensor, z: torch.Tensor) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The parameters of q(z|x) and p(x|z), read from the model's own distributions."""
    q = model.posterior(x)
    encoder = [q.mean] if model.deterministic else [q.mean, q.stddev]
    p = model.likelihood(z)
    decoder = [p.base_dist.logits] if model.config.likelihood == "bernoulli" else [p.mean, p.stddev]
    return [t.numpy() for t in encoder], [t.numpy() for t in decoder]


def assert_close(got: list[np.ndarray], want: list[np.ndarray]) -> None:
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        assert a.dtype == np.float32 and a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL)


# Each net, each likelihood (sigma fixed and learned), a VAE and an AE, a mixture prior
FAMILIES = {
    "vae-mlp-bernoulli": {"net": "mlp", "likelihood": "bernoulli"},
    "vae-mlp-gaussian": {"net": "mlp", "likelihood": "gaussian", "sigma": 0.1},
    "vae-conv-gaussian-learned": {"net": "conv", "likelihood": "gaussian", "sigma": None},
    "ae-conv-bernoulli": {"kind": "ae", "net": "conv", "likelihood": "bernoulli"},
    "vae-gated-bernoulli-vamp": {
        "net": "gated",
        "likelihood": "bernoulli",
        "prior": "vamp",
        "prior_components": 3,
    },
}


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_onnx_runtime_matches_pytorch_on_100_test_rows(family, tiny_model, test_rows, tmp_path):
    from vaelab.export import export_model

    model = tiny_model(latent_dim=3, **FAMILIES[family]).eval()
    with torch.no_grad():  # away from the initialization (a learned sigma starts at 1 everywhere)
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    out = tmp_path / "export"
    description = export_model(model, out, x_check=test_rows)
    assert description["check"]["rows"] == ROWS

    z = torch.randn(ROWS, 3)
    want_encoder, want_decoder = expected(model, test_rows, z)
    encoder, decoder = session(out / "encoder.onnx"), session(out / "decoder.onnx")
    assert_close(encoder.run(None, {"x": test_rows.numpy()}), want_encoder)
    assert_close(decoder.run(None, {"z": z.numpy()}), want_decoder)
    for batch in (1, 7):  # the batch axis is dynamic
        want_encoder, want_decoder = expected(model, test_rows[:batch], z[:batch])
        assert_close(encoder.run(None, {"x": test_rows[:batch].numpy()}), want_encoder)
        assert_close(decoder.run(None, {"z": z[:batch].numpy()}), want_decoder)

    # model.json says what the graphs take and give
    for graph, onnx in (("encoder", encoder), ("decoder", decoder)):
        declared = description[graph]
        assert [i["name"] for i in declared["inputs"]] == [i.name for i in onnx.get_inputs()]
        assert [o["name"] for o in declared["outputs"]] == [o.name for o in onnx.get_outputs()]
        assert declared["inputs"][0]["shape"] == onnx.get_inputs()[0].shape
    assert description["encoder"]["inputs"][0]["shape"] == ["batch", 1, 8, 8]
    assert description["decoder"]["likelihood"]["family"] == model.config.likelihood
    assert json.loads((out / "model.json").read_text()) == description


def test_the_prior_is_described_with_its_parameters(tiny_model):
    from vaelab.export import prior_description

    assert prior_description(tiny_model(latent_dim=3))["meaning"] == "p(z) = N(0, I_3)"
    assert prior_description(tiny_model(kind="ae"))["family"] == "none"
    model = tiny_model(latent_dim=3, prior="mog", prior_components=4)
    prior = prior_description(model)
    assert np.asarray(prior["loc"]).shape == (4, 3) and np.asarray(prior["logits"]).shape == (4,)
    np.testing.assert_allclose(prior["loc"], model.prior_means.detach().numpy(), rtol=0, atol=0)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "run"
    threads = torch.get_num_threads()
    try:
        assert main(["train", *TINY, "--epochs", "1", "--latent-dim", "2", "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.mark.slow
def test_the_export_command_writes_graphs_checked_on_test_rows(run_dir, test_rows, tmp_path, capsys):
    out = tmp_path / "shipped"
    out.mkdir()
    (out / "stale.txt").write_text("an earlier export")  # replaced as a whole
    assert main(["export", str(run_dir), "--format", "onnx", "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert "checked on 100 test rows" in printed.out and printed.err == ""
    assert sorted(p.name for p in out.iterdir()) == ["decoder.onnx", "encoder.onnx", "model.json"]
    description = json.loads((out / "model.json").read_text())
    assert description["run"] == str(run_dir.resolve()) and description["transform"] == []
    assert max(description["check"]["max_abs_difference"].values()) <= ATOL
    model = runs.load_model(run_dir)
    z = torch.randn(ROWS, 2)
    want_encoder, want_decoder = expected(model, test_rows, z)
    assert_close(session(out / "encoder.onnx").run(None, {"x": test_rows.numpy()}), want_encoder)
    assert_close(session(out / "decoder.onnx").run(None, {"z": z.numpy()}), want_decoder)
    assert not list(tmp_path.glob(".shipped*"))  # no staging or old directory left


@pytest.mark.slow
def test_the_default_export_directory_and_no_check(run_dir):
    assert main(["export", str(run_dir), "--check-rows", "0"]) == 0
    description = json.loads((run_dir / "export" / "model.json").read_text())
    assert "check" not in description and description["transform"] is None


def test_a_family_without_an_exporter_is_refused_in_one_line(run_dir, monkeypatch, capsys, tmp_path):
    from vaelab import export

    monkeypatch.setattr(export, "LIKELIHOODS", {"gaussian": export.LIKELIHOODS["gaussian"]})
    assert main(["export", str(run_dir), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "model.likelihood bernoulli cannot be exported to ONNX (exportable: gaussian)" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_an_export_that_disagrees_with_pytorch_is_not_kept(run_dir, monkeypatch, capsys, tmp_path):
    from vaelab import export

    real = export.onnx_outputs
    monkeypatch.setattr(export, "onnx_outputs", lambda *args: [a + 1e-3 for a in real(*args)])
    assert main(["export", str(run_dir), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "encoder.onnx: ONNX Runtime's loc differs from PyTorch's by up to 0.001" in err, err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["export", "RUN", "--format", "tflite"], "argument --format: invalid choice: 'tflite'"),
        (
            ["export", "RUN", "--check-rows", "-1"],
            "argument --check-rows: Input should be greater than or equal",
        ),
        (["export", "MISSING"], "MISSING: run directory not found"),
        (["export", "RUN", "--out", "FILE"], "FILE: exists and is not a directory"),
        (["export", "RUN", "--out", "NOPARENT"], "does not exist"),
    ],
)
def test_bad_export_arguments_are_one_line(argv, message, run_dir, tmp_path, capsys):
    places = {
        "RUN": run_dir,
        "MISSING": tmp_path / "missing",
        "FILE": tmp_path / "file",
        "NOPARENT": tmp_path / "no" / "export",
    }
    (tmp_path / "file").write_text("x")
    argv = [str(places[a]) if a in places else a for a in argv]
    message = message.replace("MISSING", str(places["MISSING"])).replace("FILE", str(places["FILE"]))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
