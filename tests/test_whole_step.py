"""The compiled whole training step (train.compile with Adam): forward, backward and the optimizer
update in one graph, the eager step's numbers, schedules that change without recompiling, a
warm-up that changes nothing, and a resume that continues it exactly. On CUDA the same function
is replayed as one CUDA graph (tests/test_devices_cuda.py); here it runs on the CPU."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from vaelab import devices
from vaelab.config import RunConfig
from vaelab.data.transforms import Transform
from vaelab.devices import DeviceData
from vaelab.models import build_model
from vaelab.objectives import objective_for
from vaelab.train import StepLoss, Trainer, make_optimizer, step_loss, whole_step

SMALL = RunConfig().replace(
    data={"source": "digits"}, model={"hidden": (32,), "latent_dim": 2}, train={"epochs": 2, "batch_size": 64}
)

FAMILIES = {
    "vae": SMALL,
    "vamp-iwae-gated-dropout": SMALL.replace(
        model={"net": "gated", "prior": "vamp", "prior_components": 5, "dropout": 0.2},
        objective={"name": "iwae", "k": 3},
    ),
    "conv-gaussian-learned-sigma": SMALL.replace(
        model={"net": "conv", "likelihood": "gaussian", "sigma": None}
    ),
    "ae-adamw": SMALL.replace(model={"kind": "ae"}, train={"weight_decay": 1e-4}),
}


def _setup(config, x_shape=(1, 8, 8)):
    torch.manual_seed(0)
    model = build_model(config.model, x_shape).train()
    return model, objective_for(model, config.objective.name), make_optimizer(model, config)


@pytest.mark.parametrize("name", FAMILIES)
def test_the_whole_step_is_one_graph(name):
    """Forward, backward and Adam in one graph: a break would split off the optimizer again."""
    config = FAMILIES[name]
    model, objective, optimizer = _setup(config)
    StepLoss(compiled=False).keep_state(optimizer)  # (Adam's state exists before the compile)
    x = torch.rand(16, 1, 8, 8)
    torch._dynamo.reset()
    with torch._dynamo.config.patch(trace_autograd_ops=True):
        explained = torch._dynamo.explain(whole_step)(
            model, objective, optimizer, x, torch.tensor(0.5), torch.tensor(1e-3), config.objective.k, "bf16"
        )
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons


@pytest.mark.slow
def test_the_compiled_whole_step_follows_eager_steps_and_schedules_do_not_recompile():
    """Five steps with a new lr and KL weight each: the compiled whole step against the eager
    step + fused Adam from the same weights and noise, fp32 (fusion only reorders rounding)."""
    config = FAMILIES["vae"]
    eager, objective, eager_optimizer = _setup(config)
    compiled, _, optimizer = _setup(config)
    step = StepLoss(compiled=True, optimizer=optimizer)
    step.batch_size = 32
    x = torch.rand(32, 1, 8, 8).bernoulli(generator=torch.Generator().manual_seed(1))
    generators = [devices.make_generator(torch.device("cpu"), 2) for _ in range(2)]
    torch._dynamo.reset()
    step.keep_state(optimizer)
    with step.tracing():
        lr = torch.tensor(1e-3)
        step.train_step(compiled, objective, optimizer, x, torch.Generator(), 1.0, lr, 1, "fp32")
    with torch.no_grad():  # back to the eager model's weights and a fresh Adam
        for p, q in zip(compiled.parameters(), eager.parameters(), strict=True):
            p.copy_(q)
        for value in step.state.values():
            value.zero_()
    with torch._dynamo.config.patch(error_on_recompile=True), step.tracing():
        for i, (lr, beta) in enumerate([(1e-3, 0.1), (5e-4, 0.2), (2e-3, 0.3), (1e-4, 0.9), (1e-3, 1.0)]):
            assert step.updates(len(x))
            loss, sums = step.train_step(
                compiled, objective, optimizer, x, generators[0], beta, torch.tensor(lr), 1, "fp32"
            )
            for group in eager_optimizer.param_groups:
                group["lr"] = lr
            eager_loss, eager_sums = step_loss(eager, objective, x, generators[1], beta, 1, "fp32")
            eager_optimizer.zero_grad(set_to_none=True)
            eager_loss.backward()
            eager_optimizer.step()
            torch.testing.assert_close(loss, eager_loss.detach(), msg=f"step {i}")
            torch.testing.assert_close(sums, eager_sums, rtol=1e-6, atol=1e-4, msg=f"step {i}")
            assert torch.equal(generators[0].get_state(), generators[1].get_state())  # the same draws
    for (name, p), q in zip(eager.named_parameters(), compiled.parameters(), strict=True):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-5, msg=name)
    assert all(p.grad is None for p in compiled.parameters())  # (the step writes no .grad)
    eager_state, state = eager_optimizer.state_dict()["state"], optimizer.state_dict()["state"]
    for index, values in eager_state.items():
        assert state[index]["step"] == values["step"] == 5
        torch.testing.assert_close(state[index]["exp_avg_sq"], values["exp_avg_sq"], rtol=1e-4, atol=1e-9)


@pytest.mark.slow
def test_the_whole_step_warm_up_changes_no_state():
    config = SMALL.replace(train={"compile": True})
    model, objective, optimizer = _setup(config)
    x_train = DeviceData(torch.rand(100, 1, 8, 8), torch.device("cpu"))  # full batches of 64, a last of 36
    before = {k: v.clone() for k, v in model.state_dict().items()}
    global_rng = torch.get_rng_state()
    step = StepLoss(compiled=True, optimizer=optimizer)
    torch._dynamo.reset()
    trainer = SimpleNamespace(
        config=config, transform=Transform(), settings=SimpleNamespace(precision="fp32"), optimizer=optimizer
    )
    step.warm_up(model, objective, x_train, trainer)
    assert step.batch_size == 64 and step.updates(64) and not step.updates(36)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), global_rng)
    for state in optimizer.state.values():  # Adam's state as before its first step
        assert state["step"] == 0 and not state["exp_avg"].any() and not state["exp_avg_sq"].any()


@pytest.mark.slow
def test_a_resumed_whole_step_run_keeps_its_compiled_state(tmp_path):
    """A resume loads the optimizer's state into new tensors; the whole step takes their values
    into the tensors it was compiled with, and trains on without a recompile."""
    config = SMALL.replace(train={"compile": "on", "precision": "fp32"})
    first = Trainer(config, tmp_path / "run", progress=False)
    first.run_epoch()
    first.close()
    resumed = Trainer(config, tmp_path / "run", resume=True, progress=False)
    assert resumed.step_loss.whole is not None
    with torch._dynamo.config.patch(error_on_recompile=True):
        resumed.run_epoch()
    kept = {id(t) for t in resumed.step_loss.state.values()}
    for state in resumed.optimizer.state.values():
        assert {id(state[name]) for name in ("step", "exp_avg", "exp_avg_sq")} <= kept
        assert state["step"] == 2 * math.ceil(len(resumed.splits.train) / 64)
