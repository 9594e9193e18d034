"""Codes of a trained run as data: `codes:RUN`, the M1 of Kingma et al.'s (2014) M1+M2 stack.

Every split of the run's own data is replaced by its posterior means E_q[z|x] (float32 (N, Z),
a table of numbers; an autoencoder's code f(x)), with the same labels, so any model (an M2, a
VAE, a probe) trains on the first model's latent space through the ordinary data path: the
stack is one data source, not a second model family. A model trained on codes scores codes:
its log p is a density of z_1, not of the images, and new images go through the first run's
encoder (`encode`) before it sees them. (Kingma et al. train M2 on samples of
q(z_1|x); the means are the deterministic choice, so the data are fixed per run.)
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from vaelab.data.splits import SPLITS, Splits
from vaelab.errors import UserError
from vaelab.limits import Limits


def read_codes(arg: str, limits: Limits) -> Splits:
    """The splits of run `arg`'s data as posterior means of its model (see the module)."""
    from vaelab import runs
    from vaelab.data import load_run_data

    run_dir = runs.check_run_dir(arg)
    config = runs.read_config(run_dir)
    if config.model.kind == "m2":
        raise UserError(
            f"codes:{arg}: model.kind m2: its latent is a label and a code; stack on a vae or ae run"
        )
    if config.model.condition == "label":
        raise UserError(
            f"codes:{arg}: model.condition label: its codes E_q[z|x, y] need each image's label and leave "
            "the class out of z; stack on a vae or ae run without model.condition"
        )
    if config.data.source.startswith("codes:"):
        raise UserError(
            f"codes:{arg}: the run was itself trained on codes ({config.data.source}); stack one level"
        )
    model = runs.load_model(run_dir)
    splits = load_run_data(config)
    train, valid, test = (encode(model, splits.inputs(split)) for split in SPLITS)
    # (load_data gives float codes the identity transform and column names x1..xZ)
    name = f"codes of {Path(arg).name}"
    return replace(splits, name=name, train=train, valid=valid, test=test, column_names=None)


@torch.no_grad()
def encode(model, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """E_q[z|x] of every row: (N, *x_shape) -> (N, Z) float32, on the CPU, in eval mode."""
    model.eval()
    return torch.cat([model.posterior(chunk).mean.float() for chunk in x.split(batch_size)]).contiguous()
