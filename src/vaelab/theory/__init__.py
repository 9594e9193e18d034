"""The theory behind variational inference as small, checked tools, one module per subject:

- `vaelab.theory.kl`: KL divergences (discrete, Gaussian, Monte Carlo) and the forward vs reverse
  KL experiment;
- `vaelab.theory.bayes`: Bayes' rule over finitely many hypotheses and the diagnostic-test
  calculator;
- `vaelab.theory.exact`: latent-variable models whose log p(x) and p(z|x) are known exactly, and the
  table that runs every estimator of log p(x) against them.

The identities used throughout (Kingma & Welling 2014, eqs. 1-3; Blei et al. 2017, Section 2.2):

    log p(x) = ELBO(q) + KL(q(z|x) || p(z|x)),
    ELBO(q)  = E_q[log p(x|z)] - KL(q(z|x) || p(z))  =  E_q[log p(x, z)] + H(q(z|x)).

Theory sits above the core (distributions, models, estimators), which never imports it, and
computes numbers and arrays only; its figures are drawn by `vaelab.viz.theory`.
"""
