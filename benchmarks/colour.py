"""Test bits/dim of 32x32 colour images: a conv VAE with the discretized logistic mixture against
two baselines computed in the same run.

    .venv/bin/python -u -m benchmarks.colour              # 2 x 3 min of training + evaluation
    .venv/bin/python -u -m benchmarks.colour --smoke      # seconds, for CI

Data, offline: 32x32 patches cut from the two photographs scikit-learn installs
(`sklearn.datasets.load_sample_images`, china.jpg and flower.jpg, 427x640 RGB). Each photograph is
cut by columns so that no pixel of a test patch is in a training patch: columns 0-415 give the
training patches (stride 16, so they overlap each other), 416-511 the validation patches and
512-639 the test patches (both stride 32, disjoint), 1,250 / 78 / 104 patches in all.

Three models of the same 8-bit data, each reported as -log2 P(x) / 3072 on the test patches:

- `histogram`: independent per-subpixel histograms of the training patches with add-one
  (Laplace) smoothing, P(x_d = k) = (n_dk + 1) / (N + 256); exact, no sampling;
- `VAE, logistic mixture`: vaelab's resnet VAE with a mixture of K discretized logistics per
  subpixel, scoring the levels themselves (log P(x) directly; no correction);
- `VAE, gaussian (dequantized)`: the same network with a Gaussian decoder (learned sigma per
  subpixel) on y = (x + u)/256, reported with the dequantization correction -D log 256 included:
  a lower bound on its log P(x) (Jensen), the number papers report for continuous decoders.

For the VAEs, log P(x) is the importance-sampled estimate with k samples; "± IS" is its Monte
Carlo standard error, "± data" the standard error of the mean over the test patches (the spread
of the patches themselves, which is what comparing two models on the same patches does not need,
but a reader comparing with another test set does). CIFAR-10 (`--data cifar10`) is not measured
here: this machine has no GPU and the GPU machine cannot reach the CIFAR-10 files.
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import machine, parser
from vaelab.config import RunConfig
from vaelab.data import Splits, for_likelihood
from vaelab.estimators import bits_per_dim, dataset_log_px, elbo_decomposition
from vaelab.runs import load_model
from vaelab.train import train

PATCH = 32
TRAIN_COLUMNS, VALID_COLUMNS = 416, 512  # column cuts of each 427x640 photograph
PUBLISHED_CIFAR10 = "IAF-VAE 3.11, NVAE 2.91, VDVAE 2.87 bits/dim (CIFAR-10 test; not measured here)"


def patches(image: np.ndarray, columns: tuple[int, int], stride: int) -> np.ndarray:
    """(N, 3, 32, 32) uint8 patches of image (H, W, 3) whose columns lie in [columns), every `stride`."""
    height = image.shape[0]
    rows = range(0, height - PATCH + 1, stride)
    cols = range(columns[0], columns[1] - PATCH + 1, stride)
    cut = [image[r : r + PATCH, c : c + PATCH] for r in rows for c in cols]
    return np.stack(cut).transpose(0, 3, 1, 2).copy()


def sample_image_patches(smoke: bool) -> Splits:
    from sklearn.datasets import load_sample_images

    images = load_sample_images().images
    train_stride = 64 if smoke else 16
    parts = {
        "train": [patches(im, (0, TRAIN_COLUMNS), train_stride) for im in images],
        "valid": [patches(im, (TRAIN_COLUMNS, VALID_COLUMNS), PATCH) for im in images],
        "test": [patches(im, (VALID_COLUMNS, im.shape[1]), PATCH) for im in images],
    }
    x = {name: torch.from_numpy(np.concatenate(arrays)) for name, arrays in parts.items()}
    return Splits("sample-images-32", x["train"], x["valid"], x["test"])


def histogram_bits_per_dim(train_x: torch.Tensor, test_x: torch.Tensor) -> tuple[float, float]:
    """Per-subpixel add-one histograms of train, scored exactly on test: (bits/dim, s.e. over test)."""
    n, d = len(train_x), train_x[0].numel()
    flat = train_x.reshape(n, d).long()
    counts = torch.zeros(d, 256, dtype=torch.float64)
    counts.scatter_add_(1, flat.T, torch.ones(d, n, dtype=torch.float64))
    log_p = torch.log((counts + 1.0) / (n + 256))  # (D, 256)
    test = test_x.reshape(len(test_x), d).long()
    per_example = log_p.gather(1, test.T).sum(0)  # (N_test,) nats
    bpd = -per_example / (d * math.log(2))
    return float(bpd.mean()), float(bpd.std() / math.sqrt(len(bpd)))


def vae(splits: Splits, likelihood: str, args, out: Path) -> dict:
    config = RunConfig().replace(
        model={
            "net": "resnet",
            "width": args.width,
            "hidden": (args.hidden,),
            "latent_dim": args.latent_dim,
            "likelihood": likelihood,
            **({"mixtures": args.mixtures} if likelihood == "logistic-mixture" else {"sigma": None}),
        },
        train={"epochs": args.epochs, "batch_size": 16, "lr": 1e-3, "seed": 0, "minutes": args.minutes},
    )
    start = time.perf_counter()
    result = train(config, out, overwrite=True, progress=False, splits=splits)
    seconds = time.perf_counter() - start
    prepared = for_likelihood(splits, likelihood, splits.name)  # the run's transform, as evaluate's
    x, log_det = prepared.inputs("test"), prepared.log_det_nats()
    model = load_model(out)
    generator = torch.Generator().manual_seed(0)
    estimate = dataset_log_px(model, x, args.k, batch_size=26, generator=generator)
    terms = elbo_decomposition(model, x, batch_size=len(x), generator=generator)
    # of the data as given: the transform's correction added, as `vaelab evaluate` does
    bpd = -(estimate.value + log_det) / (x[0].numel() * math.log(2))  # (N,) bits/dim per patch
    return {
        "bpd": float(bpd.mean()),
        "is_se": float(bits_per_dim(estimate.mean_stderr, x[0].numel())),
        "data_se": float(bpd.std() / math.sqrt(len(bpd))),
        "elbo_bpd": float(bits_per_dim(-(terms.elbo + log_det), x[0].numel())),
        "epochs": result.epochs,
        "seconds": seconds,
        "log_det": log_det,
    }


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--data", choices=["sample-images", "cifar10"], default="sample-images")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--minutes", type=float, default=3.0, help="training budget per VAE")
    p.add_argument("--k", type=int, default=32, help="importance samples per test patch")
    p.add_argument("--width", type=int, default=8)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--latent-dim", type=int, default=32)
    p.add_argument("--mixtures", type=int, default=5)
    args = p.parse_args(argv)
    if args.data == "cifar10":
        raise SystemExit(
            "benchmarks.colour: --data cifar10 is not measured this session (no GPU here, and the GPU "
            f"machine cannot reach the CIFAR-10 files); published: {PUBLISHED_CIFAR10}"
        )
    if args.smoke:
        args.epochs, args.minutes, args.k, args.width, args.hidden, args.latent_dim = 1, None, 4, 4, 16, 4
    torch.set_num_threads(torch.get_num_threads())
    splits = sample_image_patches(args.smoke)
    print(
        f"{machine()}; data: {splits.name} train/valid/test {len(splits.train)}/{len(splits.valid)}/"
        f"{len(splits.test)} patches of {tuple(splits.x_shape)}"
    )
    rows = []
    hist_bpd, hist_se = histogram_bits_per_dim(splits.train, splits.test)
    rows.append(("histogram (add-one, exact)", hist_bpd, 0.0, hist_se, None, "-"))
    with tempfile.TemporaryDirectory() as tmp:
        for name, likelihood in (
            ("VAE, logistic mixture", "logistic-mixture"),
            ("VAE, gaussian (dequantized)", "gaussian"),
        ):
            r = vae(splits, likelihood, args, Path(tmp) / likelihood)
            budget = f"{r['epochs']} epochs, {r['seconds']:.0f} s"
            rows.append((name, r["bpd"], r["is_se"], r["data_se"], r["elbo_bpd"], budget))
            print(f"  {name}: trained {budget}; log_det {r['log_det']:.1f} nats included", flush=True)
    print(f"\ntest bits/dim (lower is better), k = {args.k} importance samples per patch")
    print(f"{'model':<30} {'bits/dim':>9} {'± IS':>7} {'± data':>7} {'-ELBO':>7}  training")
    for name, bpd, is_se, data_se, elbo_bpd, budget in rows:
        elbo = "-" if elbo_bpd is None else f"{elbo_bpd:7.3f}"
        print(f"{name:<30} {bpd:9.3f} {is_se:7.1e} {data_se:7.3f} {elbo:>7}  {budget}")
    print(f"\nratio VAE (logistic mixture) / histogram: {rows[1][1] / hist_bpd:.3f} of the bits")
    print(f"ratio VAE (gaussian, dequantized) / histogram: {rows[2][1] / hist_bpd:.3f} of the bits")
    print(f"CIFAR-10 on a GPU: unmeasured this session; published: {PUBLISHED_CIFAR10}")


if __name__ == "__main__":
    main()
