"""vaelab: variational autoencoders and their relatives, trained, measured and shown.

The package follows the path a datum travels: `data` -> `distributions` (p(z), q(z|x), p(x|z))
-> `nets` -> `models` -> `objectives` -> `train` -> `estimators` / `evaluate` -> `plots` /
`report` -> `cli`.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "load"]


def load(run_dir, device="cpu"):
    """Load the model of a finished (or resumable) run directory in eval mode, on `device` (a
    torch.device or auto, cpu, cuda, cuda:N, mps; the CPU by default, as torch.load's tensors are
    where they were saved): a run trained on any device loads on any other."""
    from vaelab.devices import resolve_device
    from vaelab.runs import load_model

    return load_model(run_dir, device=resolve_device(device))
