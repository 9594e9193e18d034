"""Shared fixtures: the shared reference data (skipped with a reason where absent), tiny data and a
trained VAE/AE pair."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "binarized_mnist" / "test.npz").is_file():
        pytest.skip(f"reference data not found at {SHARED_DATA} (only present next to the project in CI/dev)")
    return SHARED_DATA


@pytest.fixture
def tiny_npz(tmp_path) -> Path:
    """120 random 8x8 binary images with labels, as an .npz data set."""
    rng = np.random.default_rng(0)
    path = tmp_path / "tiny.npz"
    np.savez(path, x=(rng.random((120, 8, 8)) < 0.3).astype(np.float32), y=np.repeat(np.arange(4), 30))
    return path


@pytest.fixture
def parse_train():
    """`vaelab train FLAGS` parsed into its RunConfig, without training."""
    from vaelab.cli import build_parser
    from vaelab.cli.options import build
    from vaelab.cli.run import TrainOptions, train_config

    def parse(*argv):
        args = build_parser().parse_args(["train", *map(str, argv)])
        return train_config(args.fields, args, build(TrainOptions, args, args.own))

    return parse


# ------------------------------------------------------------------ a trained VAE and AE pair

# Small and quick, yet a 2-D code that separates digits well beyond chance (test_experiments_compare).
PAIR_OVERRIDES = {
    "data": {"source": "mnist5k", "binarize": "none"},
    "model": {"latent_dim": 2, "hidden": (256, 128)},
    "train": {"epochs": 6, "batch_size": 32, "lr": 1e-3, "seed": 0},
}


@dataclass(frozen=True)
class TrainedPair:
    """Run directories of a VAE and an AE: same networks, data and budget, both evaluated (k = 50)."""

    vae: Path
    ae: Path
    config: Any  # the VAE's RunConfig; the AE's differs in model.kind only


@pytest.fixture(scope="session")
def pair(tmp_path_factory) -> TrainedPair:
    """Trained once per session (a few seconds each) and shared by the figure, compare and report tests."""
    import torch

    from vaelab import runs
    from vaelab.config import RunConfig
    from vaelab.data import load_data
    from vaelab.evaluate import evaluate_run
    from vaelab.train import train

    config = RunConfig().replace(**PAIR_OVERRIDES)
    base = tmp_path_factory.getbasetemp() / "trained-pair"
    pair = TrainedPair(base / "vae", base / "ae", config)
    splits = None
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # other jobs share the 2 cores; a second thread mostly spins under load
    try:
        for kind, out in (("vae", pair.vae), ("ae", pair.ae)):
            if (out / runs.RUN).is_file() and runs.run_info(out)["status"] == "finished":
                continue
            splits = splits or load_data(config.data)
            train(config.replace(model={"kind": kind}), out, overwrite=True, progress=False, splits=splits)
            evaluate_run(out, k=50)
    finally:
        torch.set_num_threads(threads)
    return pair


@pytest.fixture
def tiny_model():
    """A factory of small untrained models on 8x8 images: tiny_model(kind, latent_dim, prior=...)."""
    import torch

    from vaelab.config import ModelConfig
    from vaelab.models import build_model

    def build(kind: str = "vae", latent_dim: int = 2, x_shape=(1, 8, 8), seed: int = 0, **model):
        torch.manual_seed(seed)
        config = ModelConfig(kind=kind, latent_dim=latent_dim, hidden=(16,), **model)
        return build_model(config, x_shape)

    return build


# ------------------------------------------------------------- tiny runs for the explorer


@pytest.fixture(scope="session")
def explore_runs(tmp_path_factory) -> dict[str, Path]:
    """Run directories on scikit-learn's 8x8 digits, one epoch each (seconds): a 3-D VAE
    (evaluated, k = 20, so its per-example log p(x) is stored), an AE, and a 3-D VAE with a
    3-component mixture prior. Shared by the explorer's tests and its fuzz tests."""
    from vaelab.config import RunConfig
    from vaelab.data import load_data
    from vaelab.evaluate import evaluate_run
    from vaelab.train import train

    base = tmp_path_factory.mktemp("explore-runs")
    config = RunConfig().replace(
        data={"source": "digits"},
        model={"latent_dim": 3, "hidden": (32,)},
        train={"epochs": 1, "batch_size": 64, "seed": 0},
    )
    splits = load_data(config.data)
    models = {"vae": {}, "ae": {"kind": "ae"}, "mog": {"prior": "mog", "prior_components": 3}}
    runs = {name: base / name for name in models}
    for name, model in models.items():
        train(config.replace(model=model), runs[name], progress=False, splits=splits)
    evaluate_run(runs["vae"], k=20, progress=False)
    return runs


@pytest.fixture(scope="session")
def conditional_run(tmp_path_factory) -> Path:
    """A conditional VAE (model.condition label) on scikit-learn's 8x8 digits, 2-D latent, one
    epoch (seconds), evaluated (k = 20): the conditional figures', report's and explorer's tests."""
    from vaelab.config import RunConfig
    from vaelab.evaluate import evaluate_run
    from vaelab.train import train

    out = tmp_path_factory.mktemp("conditional-run") / "cvae"
    config = RunConfig().replace(
        data={"source": "digits"},
        model={"latent_dim": 2, "hidden": (32,), "condition": "label"},
        train={"epochs": 1, "batch_size": 64, "seed": 0},
    )
    train(config, out, progress=False)
    evaluate_run(out, k=20, progress=False)
    return out


@pytest.fixture(scope="session")
def hierarchical_run(tmp_path_factory) -> Path:
    """A Ladder VAE (model.layers 2 of 2 units each, the VampPrior of 4 pseudo-inputs at the top) on
    scikit-learn's 8x8 digits, one epoch (seconds), evaluated (k = 20): the explorer's tests of a
    hierarchical run."""
    from vaelab.config import RunConfig
    from vaelab.evaluate import evaluate_run
    from vaelab.train import train

    out = tmp_path_factory.mktemp("hierarchical-run") / "lvae"
    config = RunConfig().replace(
        data={"source": "digits"},
        model={"latent_dim": 2, "hidden": (32,), "layers": 2, "prior": "vamp", "prior_components": 4},
        train={"epochs": 1, "batch_size": 64, "seed": 0},
    )
    train(config, out, progress=False)
    evaluate_run(out, k=20, progress=False)
    return out


# ------------------------------------------------------------------ a real headless browser

CHROMIUM = Path("/usr/bin/chromium")
"""Debian's chromium (`.ci/run` installs it): Playwright drives it, so no browser is downloaded."""


@pytest.fixture(scope="module")
def chromium():
    """A headless Chromium driven by Playwright, shared by a module's browser tests (pages are
    theirs). Module-scoped: Playwright's sync API keeps an asyncio loop running in the main
    thread while it is open, which would break later modules' own `asyncio.run`.

    Where Debian's chromium or Playwright is absent the tests skip with the reason, except in CI
    (CI=true), where that is a failure: a browser test that silently stops running tests nothing.
    """
    import os

    missing = None
    if not CHROMIUM.is_file():
        missing = f"Chromium not found at {CHROMIUM} (Debian: apt-get install chromium)"
    else:
        try:
            from playwright.sync_api import sync_playwright
        except ImportError:
            missing = "Playwright is not installed (pip install 'vaelab[explore]')"
    if missing is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but the browser tests cannot run: {missing}")
        pytest.skip(missing)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
        )
        yield browser
        browser.close()


@dataclass
class WatchedPage:
    """A Playwright page and what it reported: console errors, uncaught exceptions, failed loads
    (`errors`) and every URL it requested (`requests`)."""

    page: Any
    errors: list[str]
    requests: list[str]


@pytest.fixture
def watched_page(chromium):
    """A fresh 1280x900 page of the shared browser, watched (see `WatchedPage`), closed after the test."""
    page = chromium.new_page(viewport={"width": 1280, "height": 900})
    watched = WatchedPage(page, [], [])
    page.on("console", lambda m: watched.errors.append(m.text) if m.type in ("error", "assert") else None)
    page.on("pageerror", lambda exc: watched.errors.append(str(exc)))
    page.on("requestfailed", lambda request: watched.errors.append(f"failed: {request.url}"))
    page.on("request", lambda request: watched.requests.append(request.url))
    yield watched
    page.close()


# ------------------------------------------------------------- one tiny run of every model family

FAMILY_FLAGS: dict[str, tuple[str, ...]] = {
    "vae": (),
    "ae": ("--model", "ae"),
    "full": ("--posterior", "full"),
    "iaf": ("--posterior", "iaf", "--flow-hidden", "8"),
    "mog": ("--prior", "mog", "--prior-components", "3"),
    "vamp": ("--prior", "vamp", "--prior-components", "3"),
    "hvae": ("--layers", "2"),
    "cvae": ("--condition", "label"),
    "m2": ("--model", "m2", "--labels-per-class", "10"),
    "m1m2": ("--data", "codes:{vae}", "--model", "m2", "--labels-per-class", "10"),
    "tabular": ("--data", "csv:{csv}"),
    "colour": ("--data", "folder:{folder}"),
    "colour-cvae": ("--data", "folder:{folder}", "--condition", "label"),
}
"""`vaelab train` flags of each family of the matrix (tests/test_family_matrix.py), on top of
`--data digits` and a tiny net; {vae}, {csv}, {folder} name the M1 run and the generated data."""


def write_family_data(root: Path) -> tuple[Path, Path]:
    """A small csv (3 continuous columns and a 0/1 one, 200 rows) and a folder of 8x8 colour PNGs in
    two classes (red and blue squares, 30 each) under `root`."""
    from PIL import Image

    rng = np.random.default_rng(0)
    csv = root / "table.csv"
    a = rng.normal(size=200)
    rows = zip(a, 2 * a + rng.normal(size=200), rng.exponential(size=200), rng.random(200) < 0.3, strict=True)
    csv.write_text("a,b,c,d\n" + "".join(f"{x:.5g},{y:.5g},{z:.5g},{int(d)}\n" for x, y, z, d in rows))
    folder = root / "colour"
    for name, colour in (("red", (220, 30, 30)), ("blue", (30, 30, 220))):
        (folder / name).mkdir(parents=True)
        for i in range(30):
            image = np.full((8, 8, 3), 255, np.uint8)
            r, c = rng.integers(0, 5, 2)
            image[r : r + 3, c : c + 3] = colour
            Image.fromarray(image).save(folder / name / f"{i}.png")
    return csv, folder


@pytest.fixture(scope="session")
def family_runs(tmp_path_factory) -> dict[str, Path]:
    """One run of each family of `FAMILY_FLAGS`, trained by `vaelab train` (in process) for one epoch
    on scikit-learn's 8x8 digits (or the generated csv and PNG folder) and evaluated (k = 10): the
    family x command matrix's runs (seconds in all)."""
    import torch

    from vaelab.cli import main
    from vaelab.evaluate import evaluate_run

    base = tmp_path_factory.mktemp("family-runs")
    (base / "data").mkdir()
    csv, folder = write_family_data(base / "data")
    runs = {name: base / name for name in FAMILY_FLAGS}
    common = ("--data", "digits", "--epochs", "1", "--hidden", "16", "--latent-dim", "2")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for name, flags in FAMILY_FLAGS.items():
            given = [f.format(vae=runs["vae"], csv=csv, folder=folder) for f in flags]
            argv = ["train", *common, "--batch-size", "64", "--compile", "off", "--quiet", *given]
            assert main([*argv, "--out", str(runs[name])]) == 0, name
            evaluate_run(runs[name], k=10, gap_rows=0, progress=False)
    finally:
        torch.set_num_threads(threads)
    return runs


@pytest.fixture(scope="session")
def serve_explorer():
    """`serve_explorer(runs, k, log)`, for the explorer tests' module-scoped server fixtures
    (`yield from serve_explorer(...)`)."""
    return _serve_explorer


def _serve_explorer(runs: list[Path], k: int, log: Path) -> Iterator[str]:
    """The real `vaelab explore RUN...` on a free port of 127.0.0.1 (its stderr in `log`): yields its
    URL once every run is loaded, then stops it."""
    command = [sys.executable, "-m", "vaelab", "explore", *map(str, runs), "--port", "0", "--k", str(k)]
    with open(log, "w") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True)
    assert process.stdout is not None
    with process.stdout:
        line = process.stdout.readline()  # the URL, once the runs are loaded
        match = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
        if match is None:
            process.kill()
            process.wait()
            pytest.fail(f"explore did not start: {line!r} {log.read_text()}")
        yield match.group(1)
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
