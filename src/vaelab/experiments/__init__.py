"""Experiments over whole runs: AE vs VAE (`compare`), one run per value (`sweep`), the HTML
`report`, and `current_evaluation`, the evaluation all three read.

Layer rule: experiments import `vaelab.viz` and the core, never the command line; nothing below
them (viz, the core) imports experiments.
"""
