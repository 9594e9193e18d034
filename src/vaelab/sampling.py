"""Samples of a model: z ~ p(z) decoded, as the decoder mean or a draw, given a class for a
conditional model. The figures (`vaelab.viz.images.prior_samples`), the rows of `vaelab sample
--out FILE.npy` (`vaelab.tabular.sampled_rows`) and `vaelab.sample` all decode here.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vaelab.devices import make_generator, model_device
from vaelab.distributions import draw
from vaelab.errors import UserError
from vaelab.labels import for_label

MODES = ("mean", "sample")


@torch.no_grad()
def decode_prior_samples(
    model, n: int, *, mode: str = "mean", seed: int = 0, label: str | int | None = None
) -> Tensor:
    """n samples z ~ p(z) (an AE: N(0, I), the prior it keeps) decoded as the decoder mean E[x|z]
    (mode "mean") or one draw x ~ p(x|z) ("sample"); a conditional model decodes p(x|z, y) given
    the class `label`, a name or code (`vaelab.labels.for_label`). Drawn on the model's device with
    a generator seeded by `seed`; returns the model's input values (n, *x_shape) there."""
    if n < 1:
        raise UserError(f"n must be >= 1, got {n}")
    if mode not in MODES:
        raise UserError(f"mode {mode!r} is not one of {', '.join(MODES)}")
    decoder = for_label(model, label, n)
    generator = make_generator(model_device(model), seed)  # draws where the model runs
    z = draw(model.prior(), (n,), generator)  # (n, Z)
    p_x_given_z = decoder.likelihood(z)
    return p_x_given_z.mean if mode == "mean" else draw(p_x_given_z, (), generator)
