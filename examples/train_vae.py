"""A VAE on MNIST digits, top to bottom, with vaelab's pieces (cf. pytorch/examples' vae/main.py).

python examples/train_vae.py            # 10 epochs on the 5,000 embedded MNIST digits
python examples/train_vae.py --epochs 1 # a quick look
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from vaelab.config import DataConfig, ModelConfig
from vaelab.data import load_data
from vaelab.estimators import log_px_importance
from vaelab.models import build_model
from vaelab.objectives import beta_elbo
from vaelab.viz.plot import plot_prior_samples

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--epochs", type=int, default=10)
parser.add_argument("--out", type=Path, default=Path("runs/example"))
args = parser.parse_args()

# Data: 4000/500/500 real MNIST digits in [0, 1], binarized once (x' ~ Bernoulli(x)).
data = load_data(DataConfig(source="mnist5k", binarize="static"))

# Model: q(z|x) = N(mu(x), diag sigma^2(x)), p(z) = N(0, I), p(x|z) = Bernoulli(logits(z)).
torch.manual_seed(0)
model = build_model(ModelConfig(hidden=(400,), latent_dim=20), data.x_shape)
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
generator = torch.Generator().manual_seed(0)

for epoch in range(1, args.epochs + 1):
    model.train()
    order = torch.randperm(len(data.train), generator=generator)
    total = 0.0
    for begin in range(0, len(order), 128):
        x = data.train[order[begin : begin + 128]]
        elbo = beta_elbo(model, x, generator).terms.elbo  # (B,): E_q[log p(x|z)] - KL(q || p)
        loss = -elbo.mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += elbo.sum().item()
    print(f"epoch {epoch}: train ELBO {total / len(data.train):.2f} nats per example")

# Evaluation: the ELBO bounds log p(x) from below; importance sampling estimates it.
model.eval()
with torch.no_grad():
    x = data.test
    elbo = beta_elbo(model, x, torch.Generator().manual_seed(1)).terms.elbo.mean()
    log_px = log_px_importance(model, x, k=500, generator=torch.Generator().manual_seed(1))
print(
    f"test ELBO {elbo:.2f}, log p(x) {log_px.value.mean():.2f} ± "
    f"{log_px.stderr.square().sum().sqrt() / len(x):.2f} nats per example (IS, k=500)"
)
print(f"samples: {plot_prior_samples(model, args.out / 'samples.png')}")
