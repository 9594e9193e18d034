"""The example script and every benchmark run end to end in their short smoke modes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(*argv: str, cwd: Path) -> str:
    done = subprocess.run([sys.executable, *argv], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.slow
def test_example_trains_and_reports(tmp_path):
    out = run(str(ROOT / "examples" / "train_vae.py"), "--epochs", "1", "--out", str(tmp_path), cwd=tmp_path)
    assert "test ELBO" in out and (tmp_path / "samples.png").is_file()


@pytest.mark.slow
@pytest.mark.parametrize(
    "bench, expect",
    [
        ("train_throughput", "ratio vaelab (defaults) / plain PyTorch loop"),
        ("nll_eval", "the speed of the hand-batched loop"),
        ("likelihood_recipe", "Polyak averaging: last epoch's validation bound"),
        ("ddp_throughput", "ratio 2 ranks / 1 process"),
        ("colour", "ratio VAE (logistic mixture) / histogram"),
        ("tabular", "same weights re-evaluated: moved"),
        ("conditional", "sample grids given each class"),
    ],
)
def test_benchmark_smoke(bench, expect):
    assert expect in run("-m", f"benchmarks.{bench}", "--smoke", cwd=ROOT)


def test_recipe_ablations_are_chosen_by_name():
    from benchmarks.likelihood_recipe import variants

    from vaelab.config import preset

    recipe = preset("recipe")
    assert list(variants(recipe, None)) == ["recipe"]
    chosen = variants(recipe, ["VampPrior", "averaging"])
    assert list(chosen) == ["recipe", "without VampPrior (N(0, I) prior)", "without Polyak averaging"]
    assert chosen["without VampPrior (N(0, I) prior)"].model.prior == "normal"
    assert chosen["without Polyak averaging"].train.ema == 0.0
    assert len(variants(recipe, [])) > 5
    with pytest.raises(SystemExit, match="names an ablation"):
        variants(recipe, ["no such ingredient"])
