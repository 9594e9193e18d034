"""The conditional VAE (`--condition label`) against the same VAE without labels, and on images
that are not digits.

    python -u -m benchmarks.conditional [--smoke] [--out DIR]

Two data sets: `mnist5k` (dynamic binarization) and a generated folder of 28x28 grey PNGs in four
class sub-folders (circle, square, triangle, cross, each at a random position, size, stroke width
and angle: `make_shapes`), read as `folder:DIR`, whose class names are the sub-folders'. On each a
conditional VAE is trained (mlp 512-256, Z = 8, 60 epochs, early stopping after 10 without
improvement) and evaluated on the test split:
log p(x|y) given each image's true label, importance sampled (k = 1000). On mnist5k the same VAE
without labels is trained beside it, for its log p(x). (For one joint model, log p(x|y) -
log p(x) = log p(y|x) - log p(y) <= log 10 nats with balanced classes; these are two models,
trained apart.) Sample grids given each class are written to DIR (default a temporary directory):
look at them. All figures are nats per test image.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from benchmarks.common import machine, parser
from vaelab.config import RunConfig
from vaelab.evaluate import evaluate_run
from vaelab.train import train
from vaelab.viz.figures import FigureOptions
from vaelab.viz.plot import plot_run

SHAPES = ("circle", "square", "triangle", "cross")


def make_shapes(root: Path, per_class: int, seed: int = 0) -> Path:
    """`per_class` 28x28 grey PNGs of each of `SHAPES` in root/<shape>/, outlines of random centre,
    radius 5..10, stroke 2..3 pixels and (triangle, cross) angle."""
    rng = np.random.default_rng(seed)
    for name in SHAPES:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            image = Image.new("L", (28, 28), 0)
            pen = ImageDraw.Draw(image)
            r = rng.uniform(5, 10)
            cx, cy = rng.uniform(r + 2, 26 - r, 2)
            width, angle = int(rng.integers(2, 4)), rng.uniform(0, 2 * math.pi)
            if name == "circle":
                pen.ellipse([cx - r, cy - r, cx + r, cy + r], outline=255, width=width)
            elif name == "square":
                pen.rectangle([cx - r, cy - r, cx + r, cy + r], outline=255, width=width)
            elif name == "triangle":
                corners = [
                    (
                        cx + r * math.cos(angle + k * 2 * math.pi / 3),
                        cy + r * math.sin(angle + k * 2 * math.pi / 3),
                    )
                    for k in range(3)
                ]
                pen.line([*corners, corners[0]], fill=255, width=width)
            else:
                for b in (angle, angle + math.pi / 2):
                    ends = [
                        (cx - r * math.cos(b), cy - r * math.sin(b)),
                        (cx + r * math.cos(b), cy + r * math.sin(b)),
                    ]
                    pen.line(ends, fill=255, width=width)
            image.save(root / name / f"{i:04d}.png")
    return root


def run(source: str, condition: str, out: Path, smoke: bool, k: int) -> dict:
    config = RunConfig().replace(
        data={"source": source, "binarize": "dynamic"},
        model={"hidden": (512, 256), "latent_dim": 8, "condition": condition},
        train={"epochs": 1 if smoke else 60, "patience": 10, "batch_size": 100, "seed": 0},
    )
    result = train(config, out, progress=False)
    evaluation = evaluate_run(out, k=k, progress=False)
    return {
        "epochs": result.epochs,
        "elbo": evaluation.elbo,
        "log_px": evaluation.log_px,
        "se": evaluation.log_px_stderr,
    }


def main() -> None:
    arguments = parser(__doc__.splitlines()[0])
    arguments.add_argument("--out", type=Path, help="where the runs and their sample grids go")
    args = arguments.parse_args()
    smoke = args.smoke
    k = 5 if smoke else 1000
    print(f"conditional VAE benchmark on {machine()}{' (smoke)' if smoke else ''}")
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        shapes = make_shapes(Path(tmp) / "shapes", 40 if smoke else 600)
        rows = []
        for name, source, condition in (
            ("mnist5k, conditional", "mnist5k", "label"),
            ("mnist5k, no labels", "mnist5k", "none"),
            ("shapes, conditional", f"folder:{shapes}", "label"),
        ):
            if smoke and source == "mnist5k":  # (the smoke run: the folder's path alone, in seconds)
                continue
            run_dir = out / name.replace(", ", "-").replace(" ", "-")
            measured = run(source, condition, run_dir, smoke, k)
            rows.append((name, measured))
            if condition == "label":
                classes = 1 if smoke else 10 if source == "mnist5k" else len(SHAPES)
                for code in range(classes):
                    plot_run(run_dir, "samples", None, FigureOptions(n=36, label=code))
        print(f"{'run':<24} {'epochs':>6} {'test ELBO':>10} {'test log p(x[|y])':>18}  (nats, IS k={k})")
        for name, m in rows:
            print(f"{name:<24} {m['epochs']:>6} {m['elbo']:>10.2f} {m['log_px']:>11.2f} ± {m['se']:.2f}")
        if len(rows) == 3:
            print(f"log p(x|y) - log p(x) on mnist5k: {rows[0][1]['log_px'] - rows[1][1]['log_px']:.2f} nats")
        print(f"sample grids given each class: {out}/*/figures/samples-n36-label*.png")


if __name__ == "__main__":
    main()
