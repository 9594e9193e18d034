"""The evaluation of a run: where it writes, its progress bar, its errors, and what it imports."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest
import torch

from vaelab.config import RunConfig
from vaelab.errors import UserError
from vaelab.evaluate import Evaluation, eval_path, evaluate_model, evaluate_run, format_evaluation
from vaelab.models import build_model
from vaelab.train import train

TINY = RunConfig().replace(
    data={"source": "digits"}, model={"hidden": (16,), "latent_dim": 2}, train={"epochs": 1, "batch_size": 64}
)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("evaluate") / "vae"
    train(TINY, out, progress=False)
    return out


def test_evaluate_run_returns_the_file_it_wrote(run_dir):
    valid = evaluate_run(run_dir, k=5, split="valid", progress=False)
    assert valid.path == run_dir / "eval-valid.json" == eval_path(run_dir, "valid")
    written = json.loads(valid.path.read_text())
    assert written == json.loads(json.dumps(valid.to_dict())) and "path" not in written
    test = evaluate_run(run_dir, k=5, progress=False)
    assert test.path == run_dir / "eval.json" and json.loads(test.path.read_text())["split"] == "test"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_terminal_only(monkeypatch):
    model = build_model(TINY.model, (1, 8, 8)).eval()
    x = torch.rand(30, 1, 8, 8).round()
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    shown = evaluate_model(model, x, k=4, batch_size=10)
    assert "log p(x), k=4" in terminal.getvalue() and "/30 [" in terminal.getvalue()  # examples done
    quiet = _Terminal()
    monkeypatch.setattr(sys, "stderr", quiet)
    hidden = evaluate_model(model, x, k=4, batch_size=10, progress=False)
    assert quiet.getvalue() == ""
    not_a_terminal = io.StringIO()
    monkeypatch.setattr(sys, "stderr", not_a_terminal)
    evaluate_model(model, x, k=4, batch_size=10)
    assert not_a_terminal.getvalue() == ""
    # The bar wraps the batches without touching the numbers.
    assert shown.log_px == hidden.log_px and shown.log_px_stderr == hidden.log_px_stderr


def test_bad_arguments_name_the_argument_not_a_flag():
    model = build_model(TINY.model, (1, 8, 8)).eval()
    x = torch.rand(4, 1, 8, 8).round()
    with pytest.raises(UserError, match="^k must be >= 2 for a standard error, got 1$"):
        evaluate_model(model, x, k=1)
    with pytest.raises(UserError, match="^batch_size must be >= 1, got 0$"):
        evaluate_model(model, x, k=2, batch_size=0)


def test_evaluation_imports_neither_the_trainer_nor_the_theory():
    code = (
        "import sys, vaelab.evaluate; "
        "loaded = sorted(m for m in sys.modules if m == 'vaelab.train' or m.startswith('vaelab.theory')); "
        "assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_printout_names_latent_dims_as_the_figures_do():
    # regression: the printout said z0, z1 while every figure says z1, z2
    e = Evaluation(
        run="r",
        split="test",
        num_examples=10,
        num_dims=4,
        log_p_x_given_z=-3.0,
        seconds_elbo=0.1,
        elbo=-4.0,
        kl=1.0,
        log_p_xz=-5.0,
        entropy=1.0,
        kl_per_dim=(0.25, 0.75),
        posterior_mean_variance=(0.5, 1.0),
        active_units=2,
        log_px=-3.5,
        log_px_stderr=0.01,
        k=10,
        seconds_log_px=0.2,
    )
    text = format_evaluation(e)
    assert text.endswith("KL per latent dim, top     z2 0.75, z1 0.25") and "z0" not in text
