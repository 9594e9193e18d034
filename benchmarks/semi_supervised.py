"""Semi-supervised classification with few labels: M2, M1+M2 and a probe on a plain VAE's codes.

    python -u -m benchmarks.semi_supervised                      # mnist5k, 10 labels per class, 3 seeds
    python -u -m benchmarks.semi_supervised --data mnist:DIR     # the full MNIST (Kingma et al.'s setting)
    python -u -m benchmarks.semi_supervised --smoke              # seconds, the 8x8 digits (CI)

Per seed s, with the same N labels per class (`data.labels_per_class`, chosen by `labels_seed` s,
so every method sees the same labelled rows):
- M1: a plain VAE trained on every train row, labels unused;
- probe: multinomial logistic regression (scikit-learn) on M1's posterior means of the labelled
  rows, scored on the test split's codes;
- M2: `--model m2` on the images (Kingma et al. 2014), with `M2_OPTIONS`: labelled rows in every
  batch, the classifier's weight alpha and dropout (README: what each bought);
- M2 as before: the same with the options of the previous session (alpha 0.1, the labelled rows
  shuffled in with the others, no dropout), side by side;
- M1+M2: `--model m2` with `M2_OPTIONS` on M1's codes (`--data codes:M1RUN`).
Reported: test error (%) of each, mean ± standard error over the seeds (s.e. = sd / sqrt(seeds)),
and each seed's value. Kingma et al.'s figures are for the full MNIST (50,000 train rows, 100
labels, long training), quoted as context: mnist5k has 4,000 train rows and this runs for minutes.
Runs live in benchmarks/out/semi/ and are retrained each time (--keep reuses finished ones).
"""

from __future__ import annotations

import math
import shutil
import statistics
import time
from pathlib import Path

import numpy as np

from benchmarks.common import machine, parser
from vaelab import runs
from vaelab.config import RunConfig
from vaelab.data import load_run_data
from vaelab.data.codes import encode
from vaelab.data.labels import labelled_rows
from vaelab.evaluate import evaluate_run
from vaelab.experiments.compare import linear_probe
from vaelab.train import train

OUT = Path(__file__).resolve().parent / "out" / "semi"
PAPER = {"M2": 11.97, "M1+M2": 3.33}  # Kingma et al. 2014, Table 1, MNIST with 100 labels (test error %)
PAPER_STDERR = {"M2": 1.71, "M1+M2": 0.14}  # (their ± over runs)
M2_OPTIONS = {"labelled_per_batch": 10, "alpha": 5.0, "dropout": 0.5}
"""M2's settings (the model section; the first two are the defaults)."""
BEFORE = {"labelled_per_batch": 0, "alpha": 0.1, "dropout": 0.0}
"""The previous session's M2 (2026-11-30, first half): 38.27 ± 2.45 % on mnist5k."""


def configs(data: str, per_class: int, seed: int, epochs: int, smoke: bool) -> dict[str, RunConfig]:
    """The M1 VAE and the three M2 runs of one seed (M1+M2's data are filled in once M1 exists)."""
    hidden = (64,) if smoke else (500,)
    # (compile off: a compile costs more than these short runs save, and every run is measured alike)
    train_options = {
        "epochs": epochs,
        "batch_size": 100,
        "seed": seed,
        "threads": 1,
        "lr": 1e-3,
        "compile": "off",
    }
    binarize = "dynamic"
    m1 = RunConfig().replace(
        data={"source": data, "binarize": binarize},
        model={"kind": "vae", "latent_dim": 50, "hidden": hidden},
        train=train_options,
    )
    labels = {"labels_per_class": per_class, "labels_seed": seed}
    m2 = RunConfig().replace(
        data={"source": data, "binarize": binarize, **labels},
        model={"kind": "m2", "latent_dim": 50, "hidden": hidden, **M2_OPTIONS},
        train=train_options,
    )
    stacked = RunConfig().replace(
        data={"source": "codes:M1", **labels},
        model={"kind": "m2", "latent_dim": 50, "hidden": hidden, **M2_OPTIONS},
        train=train_options,
    )
    return {"M1": m1, "M2": m2, "M2 as before": m2.replace(model=BEFORE), "M1+M2": stacked}


def trained(config: RunConfig, out: Path, keep: bool) -> Path:
    if keep and out.is_dir() and runs.read_run_info(out).status == "finished":
        return out
    train(config, out, overwrite=True, progress=False)
    return out


def probe_error(m1: Path, per_class: int, seed: int) -> float:
    """Test error (%) of a logistic regression on M1's codes of the same labelled train rows."""
    config = runs.read_config(m1)
    model = runs.load_model(m1)
    splits = load_run_data(config)
    assert splits.train_labels is not None and splits.test_labels is not None
    rows = labelled_rows(splits.train_labels, per_class, seed)
    z_train = encode(model, splits.inputs("train")[rows]).double().numpy()
    z_test = encode(model, splits.inputs("test")).double().numpy()
    y_train, y_test = splits.train_labels[rows].numpy(), splits.test_labels.numpy()
    return 100 * (1 - linear_probe(z_train, y_train, z_test, y_test, seed=seed))


def mean_stderr(values: list[float]) -> tuple[float, float]:
    sd = statistics.stdev(values) if len(values) > 1 else math.nan
    return statistics.fmean(values), sd / math.sqrt(len(values))


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument(
        "--data", default="mnist5k", help="labelled data spec (mnist5k, or mnist:DIR for the full set)"
    )
    p.add_argument("--labels-per-class", type=int, default=10)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=30, help="epochs of every run")
    p.add_argument("--keep", action="store_true", help="reuse finished runs in benchmarks/out/semi")
    args = p.parse_args()
    seeds, epochs = (2, 1) if args.smoke else (args.seeds, args.epochs)
    if args.smoke:  # (the 8x8 digits: seconds)
        args.data, args.labels_per_class = "digits", 5
    start = time.perf_counter()
    print(f"semi-supervised test error, {args.data}, {args.labels_per_class} labels per class, {seeds} seeds")
    print(f"machine: {machine()}; every run 1 thread, {epochs} epochs, batch 100")
    print(f"M2 and M1+M2: {M2_OPTIONS}; M2 as before: {BEFORE}")
    errors: dict[str, list[float]] = {"probe on M1 codes": [], "M2 as before": [], "M2": [], "M1+M2": []}
    for seed in range(seeds):
        folder = OUT / ("smoke" if args.smoke else "") / f"seed{seed}"
        if not args.keep and folder.exists():
            shutil.rmtree(folder)
        plan = configs(args.data, args.labels_per_class, seed, epochs, args.smoke)
        m1 = trained(plan["M1"], folder / "m1", args.keep)
        errors["probe on M1 codes"].append(probe_error(m1, args.labels_per_class, seed))
        stacked = plan["M1+M2"].replace(data={"source": f"codes:{m1}"})
        for name, config in (("M2 as before", plan["M2 as before"]), ("M2", plan["M2"]), ("M1+M2", stacked)):
            run = trained(config, folder / name.lower().replace("+", "-").replace(" ", "-"), args.keep)
            result = evaluate_run(run, k=2 if args.smoke else 100, progress=False)
            assert result.classification is not None
            errors[name].append(result.classification["percent"])
        row = ", ".join(f"{name} {values[-1]:.2f}%" for name, values in errors.items())
        print(f"  seed {seed}: {row}  [{time.perf_counter() - start:.0f} s so far]", flush=True)
    print(f"\ntest error (%), mean ± s.e. over {seeds} seeds (each seed: its own 100-label draw and init):")
    for name, values in errors.items():
        mean, stderr = mean_stderr(values)
        paper = (
            f"   (Kingma et al. 2014, full MNIST: {PAPER[name]:.2f} ± {PAPER_STDERR[name]:.2f})"
            if name in PAPER
            else ""
        )
        each = ", ".join(f"{v:.2f}" for v in values)
        print(f"  {name:<20} {mean:6.2f} ± {stderr:5.2f}   seeds: {each}{paper}")
    probe, m2 = statistics.fmean(errors["probe on M1 codes"]), statistics.fmean(errors["M2"])
    stacked, before = statistics.fmean(errors["M1+M2"]), statistics.fmean(errors["M2 as before"])
    print(
        f"ratio M2 / probe error: {m2 / probe:.2f}; ratio M1+M2 / probe error: {stacked / probe:.2f}; "
        f"ratio M2 / M2 as before: {m2 / before:.2f}"
    )
    print(f"wall clock {time.perf_counter() - start:.0f} s")
    assert np.isfinite([m2, stacked, probe, before]).all()


if __name__ == "__main__":
    main()
