"""Tabular data: a VAE's reported log-likelihood against the exact one of a factor-analysis model.

    python -u -m benchmarks.tabular [--smoke]

Data: rows x = W z + mu + e, z ~ N(0, I_2), e ~ N(0, diag(psi)), D = 6 columns, whose units differ
by up to nine orders of magnitude (column scales 1e-3 .. 1e6, as a table of measurements has). Its
density is known in closed form, x ~ N(mu, W W^T + diag(psi)), so the test log-likelihood of the
data as given is exact. vaelab trains a VAE with a linear encoder and decoder (`--hidden ''`), a
2-d latent and a learned sigma per column on the csv, standardized (the default for tabular
data). That model family contains factor analysis, so its importance-sampled test log p(x) should
meet the exact value up to estimation error, in the data's own units. The table shows:

- the exact test log-likelihood of the generating model;
- vaelab's reported log p(x) (importance sampled), which includes the standardization's Jacobian
  -sum_d log scale_d;
- the same model's log-density of its standardized input, i.e. the number without the Jacobian:
  the trap of reporting a density of the data after rescaling as if it were of the data;
- the rescaling check: a column multiplied by 1000 in the data and in the run's stored scaling,
  the same weights re-evaluated: the reported number moves by exactly -log 1000.

All figures are nats per row (test-split means).
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import machine, parser
from vaelab.config import RunConfig
from vaelab.evaluate import evaluate_run
from vaelab.train import train

COLUMN_SCALES = (1.0, 1e3, 1e-3, 1e6, 50.0, 0.2)
"""The columns' units: what each standardized column is multiplied by (1e6: grams of a tonne...)."""
LATENT = 2


def factor_analysis(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """W (D, 2), mu (D,), psi (D,) of a factor-analysis model in the units of `COLUMN_SCALES`."""
    rng = np.random.default_rng(seed)
    scales = np.array(COLUMN_SCALES)
    w = rng.normal(size=(len(scales), LATENT))
    mu = rng.normal(size=len(scales))
    psi = rng.uniform(0.1, 0.6, size=len(scales)) ** 2
    return w * scales[:, None], mu * scales, psi * scales**2


def sample_rows(w: np.ndarray, mu: np.ndarray, psi: np.ndarray, n: int, seed: int) -> np.ndarray:
    """n rows x = W z + mu + e: (n, D) float64."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, w.shape[1]))
    return z @ w.T + mu + rng.normal(size=(n, len(mu))) * np.sqrt(psi)


def exact_log_likelihood(x: np.ndarray, w: np.ndarray, mu: np.ndarray, psi: np.ndarray) -> np.ndarray:
    """log N(x; mu, W W^T + diag(psi)) per row, float64: (n,)."""
    cov = torch.as_tensor(w @ w.T + np.diag(psi))
    normal = torch.distributions.MultivariateNormal(torch.as_tensor(mu), covariance_matrix=cov)
    return normal.log_prob(torch.as_tensor(x)).numpy()


def write_csv(path: Path, x: np.ndarray) -> None:
    names = [f"c{j}" for j in range(1, x.shape[1] + 1)]
    lines = [",".join(names)] + [",".join(repr(float(v)) for v in row) for row in x]
    path.write_text("\n".join(lines) + "\n")


def linear_vae_config(csv: Path, epochs: int, seed: int = 0) -> RunConfig:
    """A VAE with a linear encoder and decoder, Z = 2, learned sigma per column (the tabular
    defaults resolve likelihood and sigma), standardized columns; one thread (a model this small
    only loses time to handing work between threads)."""
    return RunConfig().replace(
        data={"source": f"csv:{csv}"},
        model={"latent_dim": LATENT, "hidden": ()},
        train={"epochs": epochs, "batch_size": 32, "lr": 5e-3, "seed": seed, "threads": 1},
    )


def test_rows(csv: Path, run: Path) -> np.ndarray:
    """The test split of a run's csv as stored, float64 (n, D)."""
    from vaelab.data import load_data

    config = json.loads((run / "config.json").read_text())
    splits = load_data(RunConfig.from_dict(config).data)
    return splits.test.double().numpy()


def rescaled_run(run: Path, csv: Path, column: int, factor: float, where: Path) -> Path:
    """A copy of `run` whose data and stored scaling have column `column` (0-based) multiplied by
    `factor`; the weights are the same file."""
    import shutil

    copy = where / f"{run.name}-x{factor:g}"
    shutil.copytree(run, copy)
    x = np.loadtxt(csv, delimiter=",", skiprows=1)
    x[:, column] *= factor
    scaled_csv = where / f"{csv.stem}-x{factor:g}.csv"
    write_csv(scaled_csv, x)
    config = json.loads((copy / "config.json").read_text())
    config["data"]["source"] = f"csv:{scaled_csv}"
    for key in ("standardize_mean", "standardize_scale"):
        config["data"][key][column] *= factor
    (copy / "config.json").write_text(json.dumps(config))
    (copy / "eval.json").unlink(missing_ok=True)
    return copy


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    rows, epochs, k = (2000, 5, 50) if args.smoke else (10000, 15, 1000)
    torch.manual_seed(0)
    w, mu, psi = factor_analysis()
    print(f"machine: {machine()}")
    print(
        f"factor analysis: D = {len(mu)} columns of scales {', '.join(f'{s:g}' for s in COLUMN_SCALES)}; "
        f"{rows} rows (80/10/10 split), linear VAE, Z = {LATENT}, {epochs} epochs, IS k = {k}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        csv = tmp_path / "fa.csv"
        write_csv(csv, sample_rows(w, mu, psi, rows, seed=1))
        start = time.perf_counter()
        run = train(linear_vae_config(csv, epochs), tmp_path / "run", progress=False).run_dir
        trained = time.perf_counter() - start
        evaluation = evaluate_run(run, k=k, progress=False)
        exact = float(exact_log_likelihood(test_rows(csv, run), w, mu, psi).mean())
        log_px, stderr = evaluation.log_px, evaluation.log_px_stderr
        assert log_px is not None and stderr is not None
        without = log_px - evaluation.log_det_nats
        rescaled = evaluate_run(rescaled_run(run, csv, 1, 1000.0, tmp_path), k=k, progress=False)
        assert rescaled.log_px is not None
        seconds = time.perf_counter() - start
    print(f"\ntest split, {evaluation.num_examples} rows; nats per row (higher is better)\n")
    print(f"| {'what':<62} | {'log p(x)':>16} | {'minus exact':>11} |")
    print(f"|{'-' * 64}|{'-' * 18}|{'-' * 13}|")
    print(f"| {'exact: log N(x; mu, W W^T + Psi) of the generating model':<62} | {exact:16.3f} | {0:11.3f} |")
    print(
        f"| {'vaelab VAE, reported (Jacobian of the standardization in)':<62} | "
        f"{log_px:8.3f} ± {stderr:.4f} | {log_px - exact:11.3f} |"
    )
    print(
        f"| {'same VAE without the Jacobian (density of standardized rows)':<62} | "
        f"{without:16.3f} | {without - exact:11.3f} |"
    )
    print(
        f"\nthe Jacobian -sum_d log scale_d = {evaluation.log_det_nats:.3f} nats: without it the number is "
        f"off by {-evaluation.log_det_nats:.1f} nats, and by more the larger the columns' units"
    )
    moved = rescaled.log_px - log_px
    print(
        f"column c2 x 1000 (data and stored scaling), same weights re-evaluated: moved {moved:.6f} nats; "
        f"-log 1000 = {-math.log(1000):.6f} (difference {moved + math.log(1000):.1e})"
    )
    print(f"time: training {trained:.1f} s, all {seconds:.1f} s")


if __name__ == "__main__":
    main()
