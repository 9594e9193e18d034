"""Shared pieces of the benchmarks: the reference data, the machine's matmul peak, the classic model.

Benchmarks print their figures and the ratios last, measured side by side in one process:
absolute times on a shared 2-core machine are not comparable between runs, ratios are.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch

from vaelab.config import DataConfig
from vaelab.data import Splits, load_data

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "binarized_mnist"

# The classic MLP VAE of pytorch/examples and Kingma & Welling (2014): 784-400-20, ReLU, Bernoulli.
CLASSIC = {"hidden": (400,), "latent_dim": 20}


def classic_flops_per_image(d: int = 784, h: int = 400, z: int = 20) -> float:
    """Multiply-adds x2 of one forward pass (encoder d-h-2z, decoder z-h-d), x3 for forward + backward."""
    forward = 2 * (d * h + h * 2 * z + z * h + h * d)
    return 3.0 * forward


def matmul_peak_gflops(dtype: torch.dtype = torch.float32, n: int = 1024, seconds: float = 1.5) -> float:
    """Best sustained GFLOP/s of an n x n matrix product on this machine (all threads)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        for _ in range(5):
            a @ b
        best = max(best, 5 * 2 * n**3 / (time.perf_counter() - start) / 1e9)
    return best


def binarized_mnist(smoke: bool) -> Splits:
    """The statically binarized MNIST benchmark, or (smoke / absent data) the embedded digits set."""
    if smoke or not (SHARED / "test.npz").is_file():
        if not smoke:
            print(f"note: {SHARED} not found; running on the embedded mnist5k set instead")
        return load_data(DataConfig(source="mnist5k", binarize="static"))
    return load_data(DataConfig(source=f"binarized-mnist:{SHARED}"))


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    return f"{cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--smoke", action="store_true", help="a seconds-long run on embedded data (for CI)")
    return p
