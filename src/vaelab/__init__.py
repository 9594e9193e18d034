"""vaelab: variational autoencoders and their relatives, trained, measured and shown.

The package follows the path a datum travels: `data` -> `distributions` (p(z), q(z|x), p(x|z))
-> `nets` -> `models` -> `objectives` -> `train` -> `estimators` / `evaluate` -> `plots` /
`report` -> `cli`.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "load"]


def load(run_dir):
    """Load the model of a finished (or resumable) run directory, on CPU, in eval mode."""
    from vaelab.runs import load_model

    return load_model(run_dir)
