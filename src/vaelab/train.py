"""The training loop: in-memory minibatches, one explicit RNG stream, a checkpoint every epoch.

Determinism is a feature: the weights are initialized under the run's seed, and every random
draw of training (the shuffle, dynamic binarization, the reparameterization noise) comes from
one `torch.Generator` whose state is checkpointed with the optimizer; dropout masks, which
PyTorch draws from the global RNG, come from that RNG seeded with the run's seed and
checkpointed too (a compiled step, `train.compile`, draws its noise and its masks from the run's
generator). A run killed at any point and resumed with `resume=True` repeats the
interrupted epoch from the same state and finishes with exactly the metrics of an uninterrupted
run (on the same machine and thread count).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import torch
from torch import Tensor
from torch.optim.adam import adam
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

import vaelab
from vaelab import devices, runs, tabular
from vaelab.config import RunConfig
from vaelab.data import Splits, fixed_sigma, for_likelihood, load_data
from vaelab.errors import UserError
from vaelab.labels import resolve_classes, split_labels
from vaelab.limits import check_training_memory
from vaelab.models import Model, build_model
from vaelab.objectives import DENSITY_TERMS, dataset_terms, logged_term_names, objective_for, term_sums
from vaelab.semisupervised import M2, balanced_order, check_labelled_per_batch, classification_record

log = logging.getLogger(__name__)

FUSED_ADAM = True  # measured in benchmarks/train_throughput.py
VALID_SEED_OFFSET = 1  # validation noise comes from seed + 1, the same every epoch
POSTFIX_SECONDS = 0.5  # how often the progress bar's running means are refreshed (and at the end)
POSTFIX_NAMES = {"elbo": "ELBO", "log_p_x_given_z": "recon", "kl": "KL"}  # the logged terms' short names


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    epochs: int
    best_epoch: int
    best_valid_bound: float
    bound: str  # which bound model selection used, e.g. "ELBO" or "IWAE k=5"
    stopped_early: bool


def bound_name(config: RunConfig) -> str:
    """The bound a run is selected on: its objective's, at beta = 1."""
    if config.model.kind == "ae":
        return runs.RECONSTRUCTION
    objective = config.objective
    return f"IWAE k={objective.k}" if objective.name == "iwae" and objective.k > 1 else "ELBO"


def train(
    config: RunConfig,
    out: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    splits: Splits | None = None,
    device: str | None = None,
) -> TrainResult:
    """Train `config` into run directory `out` (or continue it with resume=True).

    Bad input raises UserError before anything is written. The run is locked for this process
    while it trains (another process training it is refused, naming its PID) and created
    complete or not at all (see `vaelab.runs`). A finished run is never overwritten unless
    `overwrite`, and then only once the new one is staged; an unfinished one must be resumed or
    overwritten. A failure before the first checkpoint leaves nothing behind; a later one leaves
    the run resumable. `on_epoch(record)` sees each epoch's metrics as they are checkpointed.
    `device` overrides config.train.device (a resumed run may continue on another device).
    """
    trainer = Trainer(
        config, out, resume=resume, overwrite=overwrite, progress=progress, splits=splits, device=device
    )
    while not trainer.done:
        record = trainer.run_epoch()
        if on_epoch is not None:
            on_epoch(record)
    return trainer.finish()


class Trainer:
    """One run in training: model, optimizer, RNG stream and early-stopping state.

    `run_epoch()` trains one epoch, validates, checkpoints and returns the epoch's record;
    `finish()` marks the run finished. `train()` is the loop most callers want; benchmarks step
    epochs themselves to interleave them with a reference. A Trainer holds the run's lock from
    construction until `finish()`, `close()`, a failed epoch, or the death of its process.
    """

    def __init__(
        self,
        config: RunConfig,
        out: str | Path,
        *,
        resume: bool = False,
        overwrite: bool = False,
        progress: bool = True,
        splits: Splits | None = None,
        device: str | None = None,
    ) -> None:
        out = Path(out)
        self.out, self.progress = out, progress
        self.lock: runs.RunLock | None = None
        self.x_shape: tuple[int, ...] | None = None  # run.json's, when resuming
        replacing = None  # the lock of a run that --overwrite replaces
        try:
            if resume:  # the lock first: nothing of a run another process trains is read or written
                self.lock = runs.RunLock.acquire(runs.check_run_dir(out))
                config, saved = self._read_run(out)
            else:
                replacing, saved = runs.prepare_new_run(out, overwrite=overwrite), None
            if device is not None:
                config = config.replace(train={"device": device})
            self._build(config, splits)
            if saved is not None:
                self._restore(saved)
            else:  # (a run killed before its first checkpoint restarts from scratch)
                torch.manual_seed(config.train.seed)  # dropout's masks
            if resume:
                runs.remove_stray_temporaries(out)
                runs.write_text(out / runs.METRICS, _jsonl(self.state["history"]))
            else:
                self.lock = runs.create_run(out, self.config.to_dict(), self._run_info("running"), replacing)
        except BaseException:
            for lock in (self.lock, replacing):
                if lock is not None:
                    lock.release()
            raise

    def _read_run(self, out: Path) -> tuple[RunConfig, dict[str, Any] | None]:
        """The config and checkpoint state of a run to resume, validated, and the checkpoint's
        weights checked against the config (on the meta device) before anything is allocated."""
        config = runs.read_config(out)
        info = runs.read_run_info(out)
        if info.status == "finished":
            raise UserError(f"{out}: the run is already finished; nothing to resume")
        runs.run_subdir(out, runs.CHECKPOINT)  # (refuses a link: resume writes and deletes there)
        self.x_shape = tuple(info.x_shape)
        if not (out / runs.STATE).is_file():
            return config, None
        saved = runs.load_checkpoint_state(out, config)
        expected = runs.meta_state_dict(config, self.x_shape, where=f"{out / runs.RUN}: `x_shape`")
        runs.check_weights_file(out / saved["weights"], expected)
        return config, saved

    def _build(self, config: RunConfig, splits: Splits | None) -> None:
        """Data, model, optimizer, RNG stream and objective of `config`; writes nothing."""
        # the input transform comes from the likelihood (8-bit data dequantized for a density)
        if splits is None:
            splits = load_data(config.data, config.limits)
        config, splits = tabular.resolve(config, splits)  # the data's `auto` settings, stored in the run
        config = resolve_classes(config, splits)  # a conditional or m2 model's classes, stored in the run
        splits = for_likelihood(
            splits, config.model.likelihood, config.data.source, sigma=fixed_sigma(config.model.sigma)
        )
        if self.x_shape is not None and self.x_shape != splits.x_shape:
            raise UserError(
                f"{self.out / runs.RUN}: `x_shape` {list(self.x_shape)}: the run's data "
                f"(data.source {config.data.source}) now have shape {list(splits.x_shape)}"
            )
        check_training_memory(
            config.model, splits.x_shape, config.train.batch_size, config.objective.k, limits=config.limits
        )
        if config.train.threads:
            torch.set_num_threads(config.train.threads)
        self.device = device = devices.resolve_device(config.train.device, field="train.device")
        devices.make_deterministic(device)  # (recorded in run.json's environment)
        with torch.random.fork_rng(devices=[]):  # built on the CPU: the same weights on every device
            torch.manual_seed(config.train.seed)
            model = build_model(config.model, splits.x_shape)
        tabular.set_bernoulli_columns(model, splits)
        model.to(device)
        self.config, self.splits, self.model = config, splits, model
        self.log_det_nats = splits.log_det_nats()  # logged numbers are log-densities of the data as given
        self.train_data = devices.DeviceData(splits.train, device)  # as stored: uint8 stays uint8
        self.transform = splits.transform  # runs per batch, on the device
        valid = devices.DeviceData(splits.inputs("valid"), device)  # the same fixed draw every epoch
        self.x_valid = valid.x if valid.resident else splits.inputs("valid")
        # a model that uses labels gets each batch's, gathered with x's indices on the device
        labels = split_labels(model, splits, "train", config.data.source)
        check_labelled_per_batch(config)
        self.train_labels = None if labels is None else devices.DeviceData(labels, device)
        self.valid_labels = split_labels(model, splits, "valid", config.data.source)
        steps = config.train.epochs * math.ceil(len(splits.train) / config.train.batch_size)
        self.settings = devices.choose_settings(
            device,
            config.train.precision,
            config.train.compile,
            bf16_safe=model.bf16_safe,
            steps=steps,
            minutes=config.train.minutes,
            step_flops=6.0 * config.train.batch_size * config.objective.k * _count_weights(model),
        )
        self.scaler = devices.grad_scaler(device, self.settings.precision)
        self.optimizer = make_optimizer(model, config)
        self.averaged = averaged_model(model, config.train.ema)
        self.generator = devices.make_generator(device, config.train.seed)
        self.objective = objective_for(model, config.objective.name, free_bits=config.objective.free_bits)
        self.step_loss = StepLoss(self.settings.compile, device, None if self.scaler else self.optimizer)
        self.compile_seconds = None  # compiled before anything is written: a failure leaves no run behind
        self.memory_reported = False
        log.info(
            "training on %s: %s; data %s",
            devices.describe(device),
            self.settings.why,
            self.train_data.where(),
        )
        if self.settings.compile:
            if self.progress:
                tqdm.write("compiling the training step (torch.compile; ~20 s the first time) ...")
            self.compile_seconds = self.step_loss.warm_up(
                model, self.objective, self.train_data, self, self.train_labels
            )
        self.stopped_early = False
        self.state: dict[str, Any] = {
            "epoch": 0,
            "best_valid_bound": -math.inf,
            "best_epoch": 0,
            "bad_epochs": 0,
            "lr": config.train.lr,
            "lr_bad_epochs": 0,
            "history": [],
        }

    def _restore(self, saved: dict[str, Any]) -> None:
        """Continue from a validated checkpoint state: weights, optimizer, RNG streams, history."""
        out, path = self.out, self.out / runs.STATE
        self.state = {**self.state, **saved}  # (older runs lack new keys)
        runs.load_weights(out / saved["weights"], self.model)
        if self.averaged is not None:
            runs.load_weights(out / saved["averaged_weights"], self.averaged)
        runs.load_optimizer_state(self.optimizer, saved["optimizer"], f"{path}: `optimizer`")
        if self.scaler is not None and "grad_scaler" in saved:
            self.scaler.load_state_dict(saved["grad_scaler"])
        saved_type = saved.get("device", "cpu")  # (older runs trained on the CPU)
        if saved_type != self.device.type:
            # Another device's random streams cannot be continued here: the run goes on, from the
            # same weights and optimizer, with streams seeded from the run's seed and the epoch.
            seed = (self.config.train.seed + 1_000_003 * self.state["epoch"]) % 2**63
            self.generator.manual_seed(seed)
            torch.manual_seed(seed)
            log.warning(
                "resuming %s on %s from a checkpoint written on %s: the same weights and optimizer, new "
                "random streams (a resume is exact on the device that wrote the checkpoint)",
                out,
                self.device.type,
                saved_type,
            )
        else:
            restore_global = functools.partial(devices.set_global_rng_state, self.device)
            for name, restore in (("generator", self.generator.set_state), ("global_rng", restore_global)):
                try:
                    if name in saved:
                        restore(saved[name])
                except RuntimeError:
                    raise UserError(f"{path}: `{name}`: not a valid random-number generator state") from None
        log.info("resuming %s after epoch %d", out, self.state["epoch"])

    @property
    def done(self) -> bool:
        minutes = self.config.train.minutes
        out_of_time = minutes is not None and self.state.get("elapsed_seconds", 0.0) >= 60 * minutes
        return self.stopped_early or out_of_time or self.state["epoch"] >= self.config.train.epochs

    @property
    def selected_model(self) -> Model:
        """The model that is validated and saved: the averaged weights under `ema`, else the raw ones."""
        if self.averaged is None:
            return self.model
        return cast(Model, self.averaged.module)  # AveragedModel holds a deep copy of self.model

    def run_epoch(self) -> dict[str, Any]:
        """Train, validate and checkpoint one epoch; returns its record.

        A failure before the run's first checkpoint removes the run (nothing is left behind); a
        later one leaves it resumable from its last checkpoint, and a UserError says so. Either
        way the lock is released and this Trainer is spent.
        """
        if self.lock is None:
            raise RuntimeError(f"{self.out}: this Trainer has finished or failed; resume the run anew")
        try:
            return self._run_epoch()
        except BaseException as error:
            lock, self.lock = self.lock, None
            if not (self.out / runs.STATE).is_file():
                runs.discard_run(self.out, lock)
                raise
            lock.release()
            resumable = f"the run stays resumable: vaelab train --resume {self.out}"
            if isinstance(error, UserError):
                raise UserError(f"{error}; {resumable}") from None
            if isinstance(error, OSError):  # a full disk, ...: the last checkpoint is intact
                raise UserError(f"{error.filename or self.out}: {error.strerror}; {resumable}") from None
            raise

    def _run_epoch(self) -> dict[str, Any]:
        config, state = self.config, self.state
        epoch = state["epoch"] + 1
        start = time.perf_counter()
        lr = state["lr"] if config.train.lr_schedule == "plateau" else learning_rate(config, epoch)
        record: dict[str, Any] = {"epoch": epoch, "lr": lr}
        if self.compile_seconds is not None:  # reported with the first epoch this process trains
            record["compile_seconds"], self.compile_seconds = self.compile_seconds, None
        devices.reset_peak_memory(self.device)
        record.update(_train_epoch(self, epoch, lr))
        if not self.memory_reported:  # with the first epoch this process trains
            self.memory_reported = True
            peak = devices.peak_memory_bytes(self.device)
            if peak is not None:
                record["device_memory_bytes"] = peak
        valid = dataset_terms(
            self.selected_model,
            self.x_valid,
            seed=config.train.seed + VALID_SEED_OFFSET,
            objective=config.objective.name,
            k=config.objective.k,
            labels=self.valid_labels,
        ).shifted(self.log_det_nats)
        record.update({f"valid_{name}_nats": value for name, value in valid.logged().items()})
        record.update(valid_bound_nats=valid.bound, bound=bound_name(config))
        selected = self.selected_model
        if isinstance(selected, M2):  # its classifier's loss and errors (`vaelab.semisupervised`)
            record.update(classification_record(selected, self.splits))
        if valid.bound > state["best_valid_bound"]:
            state.update(best_valid_bound=valid.bound, best_epoch=epoch, bad_epochs=0, lr_bad_epochs=0)
            self._save_best()
        else:
            state["bad_epochs"] += 1
            state["lr_bad_epochs"] += 1
            plateau = config.train.lr_schedule == "plateau"
            if plateau and state["lr_bad_epochs"] >= config.train.lr_patience:
                state.update(lr=max(state["lr"] / 2, config.train.lr / 100), lr_bad_epochs=0)
        state["history"].append(record)
        state["elapsed_seconds"] = state.get("elapsed_seconds", 0.0) + time.perf_counter() - start
        self._checkpoint(epoch)
        patience = config.train.patience
        if patience is not None and state["bad_epochs"] >= patience:
            self.stopped_early = True
            log.info("early stop after epoch %d: no validation improvement for %d epochs", epoch, patience)
        return record

    def _save_best(self) -> None:
        """The selected model's weights become the run's best (a data-parallel rank other than 0
        writes nothing: `vaelab.distributed`)."""
        runs.save_weights(self.out / runs.WEIGHTS, self.selected_model)

    def _checkpoint(self, epoch: int) -> None:
        _checkpoint(self, self.state, epoch)

    def finish(self) -> TrainResult:
        """Mark the run finished, remove stray temporaries and release the run's lock."""
        state = self.state
        runs.write_json(self.out / runs.RUN, self._run_info("finished").model_dump())
        runs.remove_stray_temporaries(self.out)
        self.close()
        return TrainResult(
            self.out,
            state["epoch"],
            state["best_epoch"],
            state["best_valid_bound"],
            bound_name(self.config),
            self.stopped_early,
        )

    def close(self) -> None:
        """Release the run's lock (as the process's death would); the Trainer is spent."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def _run_info(self, status: Literal["running", "finished"]) -> runs.RunInfo:
        from vaelab.nets import count_parameters

        splits, settings = self.splits, self.settings
        return runs.RunInfo(
            environment=devices.environment(self.device),
            settings={
                "precision": settings.precision,
                "compile": "on" if settings.compile else "off",
                "why": settings.why,
                "data": self.train_data.where(),
            },
            vaelab_version=vaelab.__version__,
            torch_version=torch.__version__,
            status=status,
            epochs_done=self.state["epoch"],
            data=splits.name,
            x_shape=list(splits.x_shape),
            num_train=len(splits.train),
            num_valid=len(splits.valid),
            num_test=len(splits.test),
            parameters=count_parameters(self.model),
            units="all *_nats metrics are nats per example; elbo is the bound (higher is better)",
            columns=None if splits.column_names is None else list(splits.column_names),
        )


def make_optimizer(model: Model, config: RunConfig) -> torch.optim.Optimizer:
    """Adam (Kingma & Ba 2015), or AdamW when weight decay is set; the fused CPU kernel, which
    updates all parameters in one pass instead of a chain of per-tensor element-wise ops."""
    train = config.train
    if train.weight_decay > 0:
        return torch.optim.AdamW(
            model.parameters(), lr=train.lr, weight_decay=train.weight_decay, fused=FUSED_ADAM
        )
    return torch.optim.Adam(model.parameters(), lr=train.lr, fused=FUSED_ADAM)


def averaged_model(model: Model, decay: float) -> AveragedModel | None:
    """An exponential moving average of the weights (and buffers), or None when decay is 0."""
    if decay == 0:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def learning_rate(config: RunConfig, epoch: int) -> float:
    """lr of `epoch` (1-based) under a fixed schedule: constant, or cosine from lr to lr/100 over
    the run. (The plateau schedule depends on validation; the Trainer keeps its rate.)"""
    lr = config.train.lr
    if config.train.lr_schedule != "cosine" or config.train.epochs == 1:
        return lr
    progress = (epoch - 1) / (config.train.epochs - 1)
    return lr / 100 + (lr - lr / 100) * 0.5 * (1 + math.cos(math.pi * progress))


def kl_weight(config: RunConfig, epoch: int, step: int, steps_per_epoch: int) -> float:
    """beta, ramped linearly from 0 over the first `kl_warmup_epochs` epochs (per step)."""
    beta, warmup = config.objective.beta, config.objective.kl_warmup_epochs
    if warmup == 0:
        return beta
    done = ((epoch - 1) * steps_per_epoch + step + 1) / (warmup * steps_per_epoch)
    return beta * min(1.0, done)


NONFINITE_CHECK_STEPS = 50
"""On an accelerator the loss is checked for divergence every this many steps (reading it back
each step would wait for the device every step); on the CPU every step (the read is free)."""


@torch.enable_grad()  # a caller's no_grad context must not silently stop training
def _train_epoch(trainer: Trainer, epoch: int, lr: float) -> dict[str, Any]:
    """One pass over the shuffled training set; returns the epoch's mean logged terms (the ELBO
    and its terms, or an AE's reconstruction term alone) as `train_*_nats`, and its speed. The
    log-densities of x among them (`DENSITY_TERMS`) get the trainer's `log_det_nats`, the input
    transform's change of variables, so they are of the data as given."""
    model, config, generator = trainer.model, trainer.config, trainer.generator
    optimizer, scaler, averaged = trainer.optimizer, trainer.scaler, trainer.averaged
    model.train()
    data, labelled, device = trainer.train_data, trainer.train_labels, trainer.device
    batch_size = config.train.batch_size
    if labelled is None:
        order = torch.randperm(len(data), generator=generator, device=generator.device)
    else:  # (m2: labelled rows in every batch, `model.labelled_per_batch`; n counts them as visited)
        order = balanced_order(labelled.x, batch_size, config.model.labelled_per_batch, generator)
    n = len(order)
    if not data.resident:  # streamed rows are gathered in host memory: one copy of the order
        order = order.cpu()
    steps = math.ceil(n / batch_size)
    for group in optimizer.param_groups:
        group["lr"] = lr
    step_function = trainer.step_loss
    whole = isinstance(step_function, StepLoss) and step_function.whole is not None
    if whole:  # (a resume may have replaced the optimizer's state since the compile)
        step_function.keep_state(optimizer)
    lr_tensor = torch.tensor(lr, device=device)  # the whole step's: a tensor, so it never recompiles
    precision, k = trainer.settings.precision, config.objective.k
    names = logged_term_names(model)
    sums = torch.zeros(len(names), dtype=torch.float64, device=device)
    shift = [trainer.log_det_nats if name in DENSITY_TERMS else 0.0 for name in names]
    check_every = 1 if device.type == "cpu" else NONFINITE_CHECK_STEPS
    finite = torch.ones((), dtype=torch.bool, device=device)
    bar = tqdm(
        total=n,
        desc=f"epoch {epoch}/{config.train.epochs}",
        unit="img",
        leave=False,
        disable=not trainer.progress,
        dynamic_ncols=True,
    )
    start = time.perf_counter()
    next_postfix = start  # (a clock read per step, not a float64 division and a format)
    with step_function.tracing() if whole else contextlib.nullcontext():
        for step, begin in enumerate(range(0, n, batch_size)):
            rows = order[begin : begin + batch_size]
            x = trainer.transform(data.rows(rows), generator)
            labels = None if labelled is None else labelled.rows(rows)  # (B,), the same rows as x
            beta = kl_weight(config, epoch, step, steps)
            updated = whole and step_function.updates(len(x))
            if updated:  # forward, backward and Adam in one compiled graph
                loss, term_sums = step_function.train_step(
                    model, trainer.objective, optimizer, x, generator, beta, lr_tensor, k, precision, labels
                )
            else:
                loss, term_sums = step_function(
                    model, trainer.objective, x, generator, beta, k, precision, labels
                )
            if check_every == 1:
                loss_value = loss.item()  # (cheaper than torch.isfinite on a CPU)
                if not math.isfinite(loss_value):
                    _diverged(epoch, f"step {step} (loss {loss_value})")
            else:
                finite &= torch.isfinite(loss)
                if (step + 1) % check_every == 0 and not finite:
                    _diverged(epoch, f"one of steps {step + 1 - check_every}..{step}")
            if scaler is not None:  # fp16: the loss scaled up so small gradients survive, then unscaled
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            elif not updated:  # (the whole step has updated the parameters already)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            if averaged is not None:
                averaged.update_parameters(model)
            sums += term_sums
            bar.update(len(x))
            if trainer.progress and ((now := time.perf_counter()) >= next_postfix or step == steps - 1):
                means = [m + c for m, c in zip((sums / (begin + len(x))).tolist(), shift, strict=True)]
                shown = " | ".join(  # (a hierarchical model's per-layer KLs are in the metrics only)
                    f"{POSTFIX_NAMES[name]} {mean:.2f}"
                    for name, mean in zip(names, means, strict=True)
                    if name in POSTFIX_NAMES
                )
                bar.set_postfix_str(f"{shown} nats")
                next_postfix = now + POSTFIX_SECONDS
    if not finite:
        _diverged(epoch, f"one of its last {check_every} steps")
    means = (sums / n).tolist()  # (waits for the device: the epoch's time is its work's time)
    seconds = time.perf_counter() - start
    bar.close()
    means = [m + c for m, c in zip(means, shift, strict=True)]
    return {
        **{f"train_{name}_nats": mean for name, mean in zip(names, means, strict=True)},
        "seconds": seconds,
        "images_per_second": n / seconds,
    }


def _diverged(epoch: int, where: str) -> None:
    raise UserError(f"training diverged at epoch {epoch}, {where}; try a smaller --lr")


def _count_weights(model: Model) -> int:
    return sum(p.numel() for p in model.parameters())


def step_loss(
    model: Model, objective, x: Tensor, generator, beta, k: int, precision: str, labels: Tensor | None = None
):
    """The forward pass of one training step: the loss (-mean of the objective's surrogate) and
    the batch sums of its logged terms (`term_sums`), in float64, for the epoch's means. The
    networks' products run in `precision` on x's device; log-probabilities stay float32.
    labels: (B,) the rows' labels, for a model that uses them (-1: unlabelled; else None)."""
    with devices.autocast(x.device, precision):
        result = objective(model, x, generator, beta=beta, k=k, labels=labels)
    return -result.surrogate.mean(), term_sums(result.terms)


def whole_step(
    model: Model,
    objective,
    optimizer: torch.optim.Optimizer,
    x: Tensor,
    beta,
    lr,
    k: int,
    precision: str,
    labels: Tensor | None = None,
):
    """One whole training step in one function, so that `torch.compile` makes it one graph: the
    forward pass (`step_loss`), the gradients g = d loss / d theta (`torch.autograd.grad`, which
    dynamo traces under `trace_autograd_ops`) and Adam's update of every parameter with the
    optimizer's own state (PyTorch's functional `adam`, capturable: step counts and bias
    corrections stay tensors on the device, nothing is read back to the host). `beta` and `lr`
    are 0-d tensors, so a KL warm-up or an lr schedule changes no guard and nothing recompiles.
    The parameters and the optimizer's state change in place (no `.grad` is written); returns the
    detached loss and the term sums, as `step_loss`."""
    loss, sums = step_loss(model, objective, x, None, beta, k, precision, labels)
    (group,) = optimizer.param_groups
    grads = torch.autograd.grad(loss, group["params"], allow_unused=True)
    used = [(p, g) for p, g in zip(group["params"], grads, strict=True) if g is not None]
    states = [optimizer.state[p] for p, _ in used]
    with torch.no_grad():
        adam(
            [p for p, _ in used],
            [g for _, g in used],
            [state["exp_avg"] for state in states],
            [state["exp_avg_sq"] for state in states],
            [],
            [state["step"] for state in states],
            foreach=False,
            capturable=True,
            amsgrad=False,
            beta1=group["betas"][0],
            beta2=group["betas"][1],
            lr=lr,
            weight_decay=group["weight_decay"],
            eps=group["eps"],
            maximize=False,
            decoupled_weight_decay=group["decoupled_weight_decay"],
        )
    return loss.detach(), sums


class StepLoss:
    """The training step, run eagerly or compiled by `torch.compile` (train.compile).

    Compiled with the run's optimizer (every precision but fp16, whose loss scaling stays
    eager), the whole step is one graph, `whole_step`: forward, backward and Adam. On a CPU that
    removes the per-operation dispatch of all three and fuses their element-wise work; on CUDA the
    graph's kernels are replayed as one CUDA graph (`triton.cudagraphs`, what
    mode="reduce-overhead" sets), since a small model's step is bound by kernel launches there:
    one code path on both, tested on the CPU. Adam's state tensors are created before the compile
    and kept for the run (`keep_state`), their addresses static, as a CUDA graph needs.
    Without an optimizer (fp16) only the forward pass, `step_loss`, is compiled; AOTAutograd
    compiles its backward with it and the optimizer runs eagerly.
    Random draws cannot take a `torch.Generator` inside a graph, so a compiled step draws from
    the global RNG of the generator's device with the run's generator state swapped in for the
    step and swapped back out after it (`devices.generator_as_global_rng`), and inductor's
    `fallback_random` makes those draws PyTorch's own: the stream, and the resumed run, are
    exactly those of the eager step.
    Shapes are static and one graph is compiled, for the full batch, by `warm_up` (which the
    Trainer calls before it writes anything); a smaller last batch runs eagerly (one step an
    epoch does not repay a second compile, which would double the wait).
    """

    def __init__(
        self,
        compiled: bool,
        device: torch.device | None = None,
        optimizer: torch.optim.Optimizer | None = None,
    ) -> None:
        cuda = device is not None and device.type == "cuda"
        # On a CPU the graph's wrapper is C++ (`cpp_wrapper`): the Python one calling ~40 kernels cost
        # ~2.5% of a step of the classic VAE (one thread, measured); on CUDA the CUDA graph replays them.
        options: dict[str, Any] = {
            "fallback_random": True,
            "triton.cudagraphs": cuda,
            "cpp_wrapper": not cuda,
        }
        whole = compiled and optimizer is not None
        self.compiled = (
            torch.compile(step_loss, dynamic=False, options=options) if compiled and not whole else None
        )
        self.whole = torch.compile(whole_step, dynamic=False, options=options) if whole else None
        self.batch_size: int | None = None  # the compiled batch size, set by warm_up
        self.state: dict[tuple[int, str], Tensor] = {}  # Adam's state tensors the graph was compiled with

    def updates(self, batch_size: int) -> bool:
        """Whether `train_step` (the whole step, optimizer included) runs batches of this size."""
        return self.whole is not None and batch_size == self.batch_size

    def __call__(
        self,
        model: Model,
        objective,
        x: Tensor,
        generator,
        beta: float,
        k: int,
        precision: str,
        labels: Tensor | None = None,
    ):
        if self.compiled is None or len(x) != self.batch_size:
            return step_loss(model, objective, x, generator, beta, k, precision, labels)
        beta_tensor = torch.tensor(beta, device=x.device)  # a tensor: KL warm-up must not recompile
        with devices.generator_as_global_rng(generator):
            return self.compiled(model, objective, x, None, beta_tensor, k, precision, labels)

    def train_step(
        self,
        model: Model,
        objective,
        optimizer,
        x: Tensor,
        generator,
        beta: float,
        lr: Tensor,
        k: int,
        precision: str,
        labels: Tensor | None = None,
    ):
        """The compiled `whole_step` (where `updates(len(x))`), called within `tracing()`: the
        parameters and the optimizer's state are updated; returns (loss, term sums). lr: 0-d
        tensor on x's device; labels: the batch's, for a model that uses them."""
        assert self.whole is not None
        beta_tensor = torch.tensor(beta, device=x.device)
        with devices.generator_as_global_rng(generator):
            return self.whole(model, objective, optimizer, x, beta_tensor, lr, k, precision, labels)

    @staticmethod
    def tracing() -> contextlib.AbstractContextManager[Any]:
        """The context of `train_step` calls: dynamo traces `torch.autograd.grad` into the graph
        (`trace_autograd_ops`). Entered once an epoch, not once a step: it costs ~25 us, 1% of a
        step of the classic VAE on a CPU."""
        return torch._dynamo.config.patch(trace_autograd_ops=True)

    def keep_state(self, optimizer: torch.optim.Optimizer) -> None:
        """Give the optimizer back the state tensors the whole step was compiled with, holding
        its current values: Adam creates its state lazily and `load_state_dict` (a resume)
        replaces it with new tensors, where the graph (and a CUDA graph's static addresses) needs
        the same ones. Creates missing state as Adam's first step would (zeros, step 0)."""
        for group in optimizer.param_groups:
            for p in group["params"]:
                state = optimizer.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                for name in ("step", "exp_avg", "exp_avg_sq"):
                    kept = self.state.setdefault((id(p), name), state[name])
                    if kept is not state[name]:
                        kept.copy_(state[name])
                        state[name] = kept
                    torch._dynamo.mark_static_address(kept)

    def warm_up(
        self,
        model: Model,
        objective,
        x_train: devices.DeviceData,
        trainer: Trainer,
        labels: devices.DeviceData | None = None,
    ) -> float:
        """Compile the step (forward and backward; with the optimizer, the whole step) for the
        epoch's full batches; changes no state of the run (weights, gradients, optimizer state,
        RNG streams). labels: the training labels, for a model that uses them. Returns the seconds
        it took."""
        config = trainer.config
        self.batch_size = min(config.train.batch_size, len(x_train))
        start = time.perf_counter()
        model.train()
        device = next(model.parameters()).device
        optimizer = trainer.optimizer if self.whole is not None else None
        if optimizer is not None:
            self.keep_state(optimizer)
        saved = [t.clone() for t in (*model.parameters(), *self.state.values())]
        try:  # a batch made as the epoch makes them, and a throwaway generator
            rows = torch.arange(self.batch_size, device=device)
            x = trainer.transform(x_train.rows(rows))
            generator = devices.make_generator(device, 0)
            k, precision = config.objective.k, trainer.settings.precision
            y = None if labels is None else labels.rows(rows)
            if optimizer is not None:
                lr = torch.tensor(config.train.lr, device=device)
                with self.tracing():
                    self.train_step(model, objective, optimizer, x, generator, 1.0, lr, k, precision, y)
            else:
                loss, _ = self(model, objective, x, generator, 1.0, k, precision, y)
                loss.backward()
        except Exception as error:  # no C++ compiler, an unsupported operation, ...
            message = str(error).strip()
            first_line = message.splitlines()[0][:200] if message else ""
            raise UserError(
                f"train.compile: torch.compile failed ({type(error).__name__}: {first_line}); "
                "train with --compile off"
            ) from error
        finally:
            model.zero_grad(set_to_none=True)
            with torch.no_grad():  # (in place: the compiled graph keeps these tensors)
                for tensor, value in zip((*model.parameters(), *self.state.values()), saved, strict=True):
                    tensor.copy_(value)
        return time.perf_counter() - start


def _checkpoint(trainer: Trainer, state: dict[str, Any], epoch: int) -> None:
    """Weights first (named by epoch), then state naming them, then drop older weights (in the
    run's own checkpoint directory, never through a link)."""
    out, averaged = trainer.out, trainer.averaged
    checkpoint = runs.run_subdir(out, runs.CHECKPOINT)
    weights = runs.checkpoint_weights(epoch)
    runs.save_weights(out / weights, trainer.model)
    keep = {Path(weights).name}
    if averaged is not None:
        state["averaged_weights"] = runs.checkpoint_weights(epoch, averaged=True)
        runs.save_weights(out / state["averaged_weights"], averaged)
        keep.add(Path(state["averaged_weights"]).name)
    runs.write_text(out / runs.METRICS, _jsonl(state["history"]))
    state.update(
        epoch=epoch,
        weights=weights,
        optimizer=trainer.optimizer.state_dict(),
        generator=trainer.generator.get_state(),
        global_rng=devices.global_rng_state(trainer.device),
        device=trainer.device.type,
    )
    if trainer.scaler is not None:
        state["grad_scaler"] = trainer.scaler.state_dict()
    runs.save_state(out / runs.STATE, state)
    for old in checkpoint.glob("epoch-*.safetensors"):
        if old.name not in keep:
            old.unlink(missing_ok=True)


def _jsonl(history: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(record) + "\n" for record in history)
