"""vaelab: variational autoencoders and their relatives, trained, measured and shown.

The package follows the path a datum travels: `data` -> `distributions` (p(z), q(z|x), p(x|z))
-> `nets` -> `models` -> `objectives` -> `train` -> `estimators` / `evaluate` -> `plots` /
`report` -> `cli`.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "load", "sample"]


def load(run_dir, device="cpu"):
    """Load the model of a finished (or resumable) run directory in eval mode, on `device` (a
    torch.device or auto, cpu, cuda, cuda:N, mps; the CPU by default, as torch.load's tensors are
    where they were saved): a run trained on any device loads on any other."""
    from vaelab.devices import resolve_device
    from vaelab.runs import load_model

    return load_model(run_dir, device=resolve_device(device))


def sample(model, n=64, *, label=None, mode="mean", seed=0):
    """n samples of a loaded model (`load`), as the model's input values (n, *x_shape) on the CPU:
    z ~ p(z) decoded as the decoder mean E[x|z] (mode "mean") or one draw x ~ p(x|z) ("sample").
    A conditional model (trained with model.condition label) decodes p(x|z, y) given the class
    `label`, a class name or code (its names: `model.config.classes`):

        model = vaelab.load("runs/cvae")
        x = vaelab.sample(model, 16, label="7")    # 16 sevens; model.given(y) scores log p(x|y)
    """
    from vaelab.sampling import decode_prior_samples

    return decode_prior_samples(model, n, mode=mode, seed=seed, label=label).cpu()
