"""Run directories: save/load round trip, refusal of foreign or damaged checkpoints."""

from __future__ import annotations

import pytest
import torch

import vaelab
from vaelab import runs
from vaelab.config import ModelConfig, RunConfig
from vaelab.errors import UserError
from vaelab.models import build_model
from vaelab.train import train


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "digits"
    config = RunConfig().replace(
        data={"source": "digits"}, train={"epochs": 2}, model={"hidden": (32,), "latent_dim": 3}
    )
    train(config, out, progress=False)
    return out


def test_load_round_trips_weights_and_config(finished_run, tmp_path):
    model = vaelab.load(finished_run)
    assert model.x_shape == (1, 8, 8) and model.latent_dim == 3 and not model.training
    copy = tmp_path / "again.safetensors"
    runs.save_weights(copy, model)
    other = build_model(model.config, model.x_shape)
    runs.load_weights(copy, other)
    for (k, a), (_, b) in zip(model.state_dict().items(), other.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    assert runs.read_config(finished_run).model.latent_dim == 3
    assert runs.run_info(finished_run)["status"] == "finished"
    assert [r["epoch"] for r in runs.read_metrics(finished_run)] == [1, 2]


def test_posterior_prior_likelihood_shapes(finished_run):
    model = vaelab.load(finished_run)
    x = torch.rand(5, 1, 8, 8)
    q = model.posterior(x)
    assert q.batch_shape == (5,) and q.event_shape == (3,)
    assert model.prior().batch_shape == () and model.prior().event_shape == (3,)
    p = model.likelihood(torch.zeros(7, 5, 3))
    assert p.batch_shape == (7, 5) and p.event_shape == (1, 8, 8)
    assert p.log_prob(x).shape == (7, 5)


def test_weights_of_another_architecture_are_refused(finished_run):
    other = build_model(ModelConfig(hidden=(16,), latent_dim=3), (1, 8, 8))
    with pytest.raises(UserError, match="another architecture"):
        runs.load_weights(finished_run / runs.WEIGHTS, other)


def test_truncated_weights_and_state_are_refused(finished_run, tmp_path):
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes((finished_run / runs.WEIGHTS).read_bytes()[:500])
    with pytest.raises(UserError, match="corrupt or truncated safetensors"):
        runs.load_weights(cut, vaelab.load(finished_run))
    state = tmp_path / "state.pt"
    state.write_bytes((finished_run / runs.STATE).read_bytes()[:200])
    with pytest.raises(UserError, match="corrupt or unreadable"):
        runs.load_state(state)


def test_state_holds_no_pickled_objects(finished_run):
    state = torch.load(finished_run / runs.STATE, weights_only=True)  # raises on arbitrary objects
    assert state["epoch"] == 2 and "optimizer" in state and "generator" in state


def test_a_pickle_with_code_is_not_executed(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    path = tmp_path / "evil.pt"
    torch.save({"x": Evil()}, path)
    with pytest.raises(UserError, match="corrupt or unreadable"):
        runs.load_state(path)


def test_finished_run_is_not_overwritten_unless_asked(finished_run):
    before = (finished_run / runs.WEIGHTS).read_bytes()
    config = runs.read_config(finished_run)
    with pytest.raises(UserError, match="finished run is there"):
        train(config, finished_run, progress=False)
    assert (finished_run / runs.WEIGHTS).read_bytes() == before


def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "f.json"
    runs.write_json(path, {"a": 1})

    def boom(tmp):
        open(tmp, "w").write("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        runs.atomic_write(path, boom)
    assert runs.read_json(path) == {"a": 1}
    assert list(tmp_path.iterdir()) == [path]
