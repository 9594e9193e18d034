"""Data-parallel training: one run trained by N processes with DistributedDataParallel.

    torchrun --nproc-per-node 2 -m vaelab train --data mnist5k --out runs/ddp    # or:
    vaelab train --nproc 2 --data mnist5k --out runs/ddp

Each process (rank) is started by torchrun (`vaelab train --nproc N` starts torchrun's launcher
in-process) and joins one process group: gloo for CPU tensors, NCCL for CUDA ones. The result
equals one process training the same global batch size with the same seed, up to
floating-point rounding (tests/test_distributed.py states the tolerance), because:

- every rank walks the same seeded permutation of the training set, batch by batch; of each
  global batch of B rows, rank r of W trains rows [r B / W, (r + 1) B / W) (its shard);
- every rank draws the noise of the *whole* global batch from the shared generator and keeps its
  rows: the data transform (dynamic binarization, dequantization) runs on the global batch, the
  reparameterization noise eps is drawn for all B rows (`vaelab.distributions.batch_rows`) and
  dropout masks for all B rows (`RowsDropout`); so every generator stays in step with the one
  process's, on every rank;
- rank r's loss is -(W / B) sum of its rows' objective; DDP averages the gradients over the W
  ranks, giving the gradient of -(1/B) sum over the batch, one process's loss;
- each step's objective and logged terms are all-reduced (summed) over the ranks, so the epoch
  metrics are the global batch's and every rank sees the same loss (a diverging step stops
  every rank at once, with the same error).

Validation runs on every rank over the whole validation split (the same numbers everywhere);
rank 0's early-stopping state is broadcast after each epoch, so all ranks stop together.
Only rank 0 touches the run directory: it holds the run's lock, stages and creates the run,
writes checkpoints, metrics and run.json, and on `--resume` reads the checkpoint, whose state
(weights, optimizer, generators, history) it then broadcasts: the other ranks need neither the
run directory nor a shared file system, only the data. A rank that dies or hangs ends the job:
torchrun stops the others when one exits, and a collective that waits longer than the process
group's timeout raises on the ranks still waiting.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import signal
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from vaelab import devices, runs
from vaelab.config import RunConfig
from vaelab.data import Splits
from vaelab.distributions import BatchRows, batch_rows, current_batch_rows
from vaelab.errors import UserError
from vaelab.models import Model
from vaelab.objectives import term_sums
from vaelab.train import Trainer, TrainResult
from vaelab.train import train as train_one_process

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_SECONDS = 600.0
"""How long a collective waits for the other ranks before it fails (validation runs on every
rank, so no rank waits out another's validation)."""

SYNCED_STATE = (
    "epoch",
    "best_valid_bound",
    "best_epoch",
    "bad_epochs",
    "lr",
    "lr_bad_epochs",
    "elapsed_seconds",
)
"""The trainer state that decides what happens next, broadcast from rank 0 after every epoch."""


@dataclass(frozen=True)
class World:
    """This process's place in a data-parallel job, from torchrun's environment variables."""

    rank: int
    local_rank: int
    size: int

    @classmethod
    def from_environment(cls) -> World | None:
        """The job this process is a rank of, or None outside torchrun (or for one process)."""
        if "LOCAL_RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) < 2:
            return None
        return cls(int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]), int(os.environ["WORLD_SIZE"]))

    def rows(self, n: int) -> BatchRows:
        """This rank's rows of a global batch of n rows (shares differ by at most one row)."""
        return BatchRows(n, self.rank * n // self.size, (self.rank + 1) * n // self.size)


def launched() -> bool:
    """Whether torchrun started this process (as one rank of a job, of any size)."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def rank() -> int:
    """This process's rank in a data-parallel job (0 outside one)."""
    world = World.from_environment()
    return 0 if world is None else world.rank


# ------------------------------------------------------------------------------- the entry point


def train(
    config: RunConfig,
    out: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    on_epoch=None,
    splits: Splits | None = None,
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    device: str | None = None,
) -> TrainResult | None:
    """`vaelab.train.train`, as one rank of a torchrun job when started by torchrun.

    Returns rank 0's TrainResult; the other ranks return None (rank 0 reports). Outside
    torchrun this is `vaelab.train.train`. A rank that loses the others (a crashed or hung rank,
    a timeout) raises one UserError naming its rank; the run stays resumable from its last
    checkpoint.
    """
    world = World.from_environment()
    if world is None:
        return train_one_process(
            config,
            out,
            resume=resume,
            overwrite=overwrite,
            progress=progress,
            on_epoch=on_epoch,
            splits=splits,
            device=device,
        )
    cuda = torch.cuda.is_available() and os.environ.get("CUDA_VISIBLE_DEVICES") != ""
    if cuda:
        torch.cuda.set_device(world.local_rank)
    dist.init_process_group(
        "cpu:gloo,cuda:nccl" if cuda else "gloo",
        rank=world.rank,
        world_size=world.size,
        timeout=timedelta(seconds=timeout_seconds),
    )
    try:
        trainer = DistributedTrainer(
            config,
            out,
            world=world,
            resume=resume,
            overwrite=overwrite,
            progress=progress,
            splits=splits,
            device=device,
        )
        while not trainer.done:
            record = trainer.run_epoch()
            if on_epoch is not None and world.rank == 0:
                on_epoch(record)
        result = trainer.finish()
        dist.barrier()  # (rank 0 has written run.json: the job ends finished on every rank)
        return result if world.rank == 0 else None
    except RuntimeError as error:
        if not lost_contact(error):
            raise
        first_line = re.sub(r"^\[[^\]]*\] *", "", (str(error).strip().splitlines() or [""])[0])[:300]
        resumable = world.rank == 0 and (Path(out) / runs.STATE).is_file()
        raise UserError(
            f"rank {world.rank} of {world.size}: lost contact with the other ranks ({first_line})"
            + (
                f"; the run stays resumable: vaelab train --nproc {world.size} --resume {out}"
                if resumable
                else ""
            )
        ) from None
    except UserError as error:
        if world.rank == 0:
            raise
        raise UserError(f"rank {world.rank}: {error}") from None
    finally:
        dist.destroy_process_group()


def lost_contact(error: RuntimeError) -> bool:
    """Whether a collective failed: a peer died, hung past the timeout, or the network broke
    (gloo raises a plain RuntimeError naming its source file, NCCL and c10d a DistError)."""
    return isinstance(error, dist.DistError) or "gloo" in str(error)


class PeerFailed(SystemExit):
    """Rank 0 could not start the run and says why; the other ranks leave without a word."""

    def __init__(self) -> None:
        super().__init__(2)


# ----------------------------------------------------------------------------------- the trainer


class DistributedTrainer(Trainer):
    """A Trainer that is one rank of a data-parallel job (see the module's docstring).

    Rank 0 is an ordinary Trainer (lock, run directory, checkpoints) whose training step is
    sharded; the other ranks build the same model, optimizer and generators from rank 0's
    config and state and never touch the run directory.
    """

    def __init__(
        self,
        config: RunConfig,
        out: str | Path,
        *,
        world: World,
        resume: bool = False,
        overwrite: bool = False,
        progress: bool = True,
        splits: Splits | None = None,
        device: str | None = None,
    ) -> None:
        self.world = world
        if world.rank == 0:
            try:
                super().__init__(
                    config,
                    out,
                    resume=resume,
                    overwrite=overwrite,
                    progress=progress,
                    splits=splits,
                    device=device,
                )
            except BaseException as error:
                broadcast_json({"error": str(error)}, world)
                raise
            broadcast_json({"config": self.config.to_dict(), "x_shape": list(self.splits.x_shape)}, world)
        else:
            header = broadcast_json(None, world)
            if "error" in header:
                raise PeerFailed()
            self.out, self.progress, self.lock = Path(out), False, None
            self.x_shape = tuple(header["x_shape"])
            self._build(RunConfig.from_dict(header["config"]), splits)
        self._receive_state()
        model_device = next(self.model.parameters()).device
        step = _Step(self.model, self.objective)
        ddp = DistributedDataParallel(
            step,
            device_ids=[model_device.index] if model_device.type == "cuda" else None,
            forward_sync_buffers=False,
        )  # (the buffers are constants: N(0, I)'s parameters)
        self.step_loss = ShardedStepLoss(ddp, world)  # type: ignore[assignment]

    def _build(self, config: RunConfig, splits: Splits | None) -> None:
        if config.train.compile == "on":
            raise UserError(
                "train.compile: not available with data-parallel training; train without --compile"
            )
        super()._build(config.replace(train={"compile": "off"}), splits)  # (auto: off under DDP)
        shard_dropout(self.model, config)

    def _receive_state(self) -> None:
        """Every rank continues from rank 0's state: weights (raw and averaged), optimizer,
        both random streams and the trainer's history (bytes written by `torch.save` on rank 0
        and read back with `weights_only=True`)."""
        bundle = None
        if self.world.rank == 0:
            bundle = {
                "model": self.model.state_dict(),
                "averaged": None if self.averaged is None else self.averaged.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "generator": self.generator.get_state(),
                "global_rng": torch.get_rng_state(),
                "state": self.state,
            }
        bundle = broadcast_tensors(bundle, self.world)
        if self.world.rank == 0:
            return
        self.model.load_state_dict(bundle["model"])
        if self.averaged is not None:
            self.averaged.load_state_dict(bundle["averaged"])
        self.optimizer.load_state_dict(bundle["optimizer"])
        self.generator.set_state(bundle["generator"])
        torch.set_rng_state(bundle["global_rng"])
        self.state = bundle["state"]

    def run_epoch(self) -> dict[str, Any]:
        record = super().run_epoch() if self.world.rank == 0 else self._run_epoch()
        synced = {name: self.state[name] for name in SYNCED_STATE} | {"stopped_early": self.stopped_early}
        synced = broadcast_json(synced if self.world.rank == 0 else None, self.world)
        self.stopped_early = synced.pop("stopped_early")
        self.state.update(synced)
        return record

    def _save_best(self) -> None:
        if self.world.rank == 0:
            super()._save_best()

    def _checkpoint(self, epoch: int) -> None:
        if self.world.rank == 0:
            super()._checkpoint(epoch)
        else:
            self.state["epoch"] = epoch

    def finish(self) -> TrainResult:
        if self.world.rank == 0:
            return super().finish()
        state = self.state
        return TrainResult(
            self.out, state["epoch"], state["best_epoch"], state["best_valid_bound"], "", False
        )


# ------------------------------------------------------------------------------ the sharded step


class _Step(nn.Module):
    """The objective as a module, so that DistributedDataParallel sees the forward pass it
    synchronizes: (x rows, generator, beta, k, precision, their labels or None) -> (sum of the
    surrogate over the rows, `term_sums` of the logged terms)."""

    def __init__(self, model: Model, objective) -> None:
        super().__init__()
        self.model, self.objective = model, objective

    def forward(
        self,
        x: Tensor,
        generator: torch.Generator,
        beta: float,
        k: int,
        precision: str,
        labels: Tensor | None,
    ):
        with devices.autocast(x.device, precision):
            result = self.objective(self.model, x, generator, beta=beta, k=k, labels=labels)
        return result.surrogate.sum(), term_sums(result.terms)


class ShardedStepLoss:
    """The training step's forward pass on this rank's rows of the global batch x: (B, ...).

    Returns (loss, term sums) as `vaelab.train.StepLoss` does for the whole batch: the loss's
    gradient is this rank's share, -(W / B) sum over its rows, which DDP averages into the
    gradient of one process's -(1/B) sum; its value is the global batch's -mean (the same on
    every rank); the term sums are over the global batch. labels: (B,) the batch's labels for a
    model that uses them, sliced as x.
    """

    def __init__(self, ddp: DistributedDataParallel, world: World) -> None:
        self.ddp, self.world = ddp, world

    def __call__(
        self,
        model,
        objective,
        x: Tensor,
        generator,
        beta: float,
        k: int,
        precision: str,
        labels: Tensor | None = None,
    ):
        n, rows = len(x), self.world.rows(len(x))
        shard = slice(rows.start, rows.stop)
        labels = None if labels is None else labels[shard]
        with batch_rows(rows):
            surrogate_sum, sums = self.ddp(x[shard], generator, beta, k, precision, labels)
        totals = torch.cat([surrogate_sum.detach().to(torch.float64).reshape(1), sums])
        dist.all_reduce(totals)
        share = -surrogate_sum * (self.world.size / n)
        loss = share + ((-totals[0] / n).to(share.dtype) - share.detach())
        return loss, totals[1:]  # on x's device, where the epoch's sums are


class RowsDropout(nn.Dropout):
    """Dropout that, inside `batch_rows`, draws the masks of the whole global batch from the
    global RNG and keeps this rank's rows (as `torch.nn.functional.dropout` draws them: a
    Bernoulli(1 - p) mask divided by 1 - p). A network input of the batch has `per_row` rows per
    example: 1 in the encoder, the k samples of the IWAE bound in the decoder."""

    def __init__(self, p: float, per_row: int) -> None:
        super().__init__(p)
        self.per_row = per_row

    def forward(self, x: Tensor) -> Tensor:
        rows = current_batch_rows()
        if rows is None or not self.training:
            return super().forward(x)
        local, m, rest = rows.stop - rows.start, self.per_row, x.shape[1:]
        if len(x) != m * local:
            raise RuntimeError(f"RowsDropout: {len(x)} rows is not {m} per example of {local} examples")
        whole = torch.empty((m * rows.size, *rest), dtype=x.dtype, device=x.device).bernoulli_(1 - self.p)
        mask = whole.div_(1 - self.p).view(m, rows.size, *rest)[:, rows.start : rows.stop]
        return x * mask.reshape(x.shape)


def shard_dropout(model: Model, config: RunConfig) -> None:
    """Replace the model's dropout layers with `RowsDropout` (no weights change), and let its
    prior, which a VampPrior computes by running the encoder on its pseudo-inputs (not rows of
    the batch), draw its masks whole."""
    if config.model.dropout == 0:
        return
    iwae = config.objective.name == "iwae" and config.model.kind == "vae"
    for network, per_row in ((model.encoder, 1), (model.decoder, config.objective.k if iwae else 1)):
        for name, module in list(network.named_modules()):
            if isinstance(module, nn.Dropout):
                parent = network.get_submodule(name.rpartition(".")[0]) if "." in name else network
                setattr(parent, name.rpartition(".")[2], RowsDropout(module.p, per_row))
    prior = model.prior

    def whole_prior():
        with batch_rows(None):
            return prior()

    model.__dict__["prior"] = whole_prior  # an instance attribute, found before the class's method


# ----------------------------------------------------------------------------------- collectives


def broadcast_bytes(data: bytes | None, world: World) -> bytes:
    """Rank 0's bytes on every rank (`data` is ignored on the others)."""
    size = torch.tensor([len(data) if world.rank == 0 and data is not None else 0], dtype=torch.int64)
    dist.broadcast(size, src=0)
    buffer = (
        torch.frombuffer(bytearray(data), dtype=torch.uint8)
        if world.rank == 0 and data
        else torch.empty(int(size.item()), dtype=torch.uint8)
    )
    if len(buffer):
        dist.broadcast(buffer, src=0)
    return buffer.numpy().tobytes()


def broadcast_json(value: Any, world: World) -> Any:
    """Rank 0's JSON-able value on every rank."""
    return json.loads(broadcast_bytes(json.dumps(value).encode() if world.rank == 0 else None, world))


def broadcast_tensors(value: Any, world: World) -> Any:
    """Rank 0's value of tensors, numbers, strings, lists and dicts on every rank (written with
    `torch.save`, read with `torch.load(weights_only=True)`: no general unpickler runs)."""
    buffer = io.BytesIO()
    if world.rank == 0:
        torch.save(value, buffer)
    data = broadcast_bytes(buffer.getvalue() if world.rank == 0 else None, world)
    return torch.load(io.BytesIO(data), weights_only=True)


# -------------------------------------------------------------------------------------- launching


def launch(nproc: int, argv: list[str], module: str = "vaelab") -> int:
    """Run `python -m MODULE ARGV` as `nproc` ranks on this machine, as `torchrun --standalone
    --nproc-per-node NPROC -m vaelab ARGV` would (the launcher runs in this process; each rank
    is a child process with OMP_NUM_THREADS = cores / nproc unless set). Returns 0 when every
    rank succeeded, 2 when a rank stopped on a UserError (which it printed); a rank that died
    otherwise is one UserError naming it and how it ended."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import elastic_launch
    from torch.distributed.run import config_from_args, get_args_parser

    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    # torchrun --standalone, on the loopback address: a c10d store on a free port of 127.0.0.1
    args = get_args_parser().parse_args(
        [
            "--rdzv-backend=c10d",
            "--rdzv-endpoint=127.0.0.1:0",
            f"--rdzv-id={uuid.uuid4()}",
            "--local-addr=127.0.0.1",
            f"--nproc-per-node={nproc}",
            "--max-restarts=0",
            "--module",
            module,
        ]
    )
    args.training_script_args = argv  # (set after parsing: torchrun's parser would read vaelab's flags)
    config, command, command_args = config_from_args(args)

    elastic = logging.getLogger("torch.distributed.elastic")
    level = elastic.level
    elastic.setLevel(logging.CRITICAL)  # torchrun's notes (SIGTERM sent, the failure's report): said below
    try:
        elastic_launch(config, command)(*command_args)
    except ChildFailedError as error:
        rank, failure = min(error.failures.items(), key=lambda item: item[1].timestamp)
        if failure.exitcode == 2:  # a rank's UserError, which it has printed: nothing to add
            return 2
        how = (
            f"was killed by {signal.Signals(-failure.exitcode).name}"
            if failure.exitcode < 0
            else f"exited with status {failure.exitcode}"
        )
        raise UserError(
            f"data-parallel training: rank {rank} of {nproc} (PID {failure.pid}) {how} first; the other "
            "ranks were stopped"
        ) from None
    finally:
        elastic.setLevel(level)
    return 0
