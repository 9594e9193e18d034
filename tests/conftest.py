"""Shared fixtures: the shared reference data (skipped with a reason where absent) and tiny data."""

from __future__ import annotations

from pathlib import Path

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
