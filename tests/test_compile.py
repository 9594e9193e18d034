"""Compiled training steps (train.compile): one graph for every model family, the eager step's
numbers and random stream, a warm-up that changes nothing, and exact resumption."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from vaelab import runs
from vaelab.config import RunConfig
from vaelab.data import load_data
from vaelab.data.transforms import Transform
from vaelab.devices import DeviceData
from vaelab.errors import UserError
from vaelab.models import build_model
from vaelab.objectives import objective_for
from vaelab.train import StepLoss, Trainer, step_loss, train

SMALL = RunConfig().replace(
    data={"source": "digits"}, model={"hidden": (32,), "latent_dim": 2}, train={"epochs": 2, "batch_size": 64}
)

FAMILIES = {
    "vae": SMALL,
    "vamp-iwae-gated-dropout": SMALL.replace(
        model={"net": "gated", "prior": "vamp", "prior_components": 5, "dropout": 0.2},
        objective={"name": "iwae", "k": 3},
    ),
    "mog-beta": SMALL.replace(model={"prior": "mog", "prior_components": 3}, objective={"beta": 0.5}),
    "conv-gaussian-learned-sigma": SMALL.replace(
        model={"net": "conv", "likelihood": "gaussian", "sigma": None}
    ),
    "ae": SMALL.replace(model={"kind": "ae"}),
}


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("name", FAMILIES)
def test_the_training_step_is_one_graph(name, precision):
    """A graph break would split the step (and its backward) into pieces and lose the fusion."""
    config = FAMILIES[name]
    torch.manual_seed(0)
    model = build_model(config.model, (1, 8, 8)).train()
    objective = objective_for(model, config.objective.name)
    x = torch.rand(16, 1, 8, 8)
    torch._dynamo.reset()
    explained = torch._dynamo.explain(step_loss)(
        model, objective, x, None, torch.tensor(0.5), config.objective.k, precision
    )
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons


def _metrics(run):
    drop = ("seconds", "images_per_second", "compile_seconds")
    lines = (run / runs.METRICS).read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in drop} for line in lines]


@pytest.mark.slow
def test_compiled_training_follows_the_eager_run(tmp_path):
    # fp32 both: under precision auto a CPU with native bf16 would round both runs in bf16
    config = FAMILIES["vamp-iwae-gated-dropout"].replace(model={"dropout": 0.0}, train={"precision": "fp32"})
    splits = load_data(config.data)
    eager = Trainer(config, tmp_path / "eager", progress=False, splits=splits)
    compiled = Trainer(
        config.replace(train={"compile": True}), tmp_path / "compiled", progress=False, splits=splits
    )
    for _ in range(2):
        a, b = eager.run_epoch(), compiled.run_epoch()
        # the same draws from the run's generator: its stream is exactly where the eager run left it
        assert torch.equal(eager.generator.get_state(), compiled.generator.get_state())
        for key in ("train_elbo_nats", "valid_elbo_nats", "valid_bound_nats"):
            assert b[key] == pytest.approx(a[key], abs=1e-3), key  # fusion only reorders rounding
    assert "compile_seconds" in _first_record(tmp_path / "compiled")
    for (name, p), q in zip(eager.model.named_parameters(), compiled.model.parameters(), strict=True):
        torch.testing.assert_close(q, p, rtol=1e-3, atol=1e-4, msg=name)


def _first_record(run):
    return json.loads((run / runs.METRICS).read_text().splitlines()[0])


@pytest.mark.slow
def test_the_warm_up_compiles_the_full_batch_and_changes_no_state():
    config = SMALL.replace(train={"compile": True})
    torch.manual_seed(0)
    model = build_model(config.model, (1, 8, 8))
    objective = objective_for(model, "elbo")
    x_train = torch.rand(100, 1, 8, 8)  # full batches of 64 and a last batch of 36
    before = {k: v.clone() for k, v in model.state_dict().items()}
    global_rng = torch.get_rng_state()
    step = StepLoss(compiled=True)
    torch._dynamo.reset()
    trainer = SimpleNamespace(
        config=config, transform=Transform(), settings=SimpleNamespace(precision="fp32")
    )
    step.warm_up(model, objective, DeviceData(x_train, torch.device("cpu")), trainer)
    assert step.batch_size == 64
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), global_rng)
    generator = torch.Generator().manual_seed(1)
    with torch._dynamo.config.patch(error_on_recompile=True):  # compiled already; the last batch is eager
        for size in (64, 36):
            step(model, objective, x_train[torch.arange(size)], generator, 0.3, 1, "fp32")[0].backward()


@pytest.mark.slow
def test_a_compiled_run_resumes_exactly(tmp_path):
    config = SMALL.replace(train={"compile": True, "epochs": 2})
    train(config, tmp_path / "straight", progress=False)
    stopped = Trainer(config, tmp_path / "resumed", progress=False)
    stopped.run_epoch()
    stopped.close()  # the process "dies" (its lock goes): the next Trainer starts from the checkpoint
    train(config, tmp_path / "resumed", resume=True, progress=False)
    assert _metrics(tmp_path / "resumed") == _metrics(tmp_path / "straight")
    assert (tmp_path / "resumed" / runs.WEIGHTS).read_bytes() == (
        tmp_path / "straight" / runs.WEIGHTS
    ).read_bytes()


def test_a_failed_compile_leaves_no_run_behind(tmp_path, monkeypatch):
    def fail(*args):
        raise UserError(
            "train.compile: torch.compile failed (InvalidCxxCompiler: ...); train without --compile"
        )

    monkeypatch.setattr(StepLoss, "warm_up", fail)
    with pytest.raises(UserError, match="without --compile"):
        Trainer(SMALL.replace(train={"compile": True}), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
