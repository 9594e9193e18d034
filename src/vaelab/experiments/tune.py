"""Hyperparameter studies on Optuna: `vaelab tune`, and the engine `vaelab sweep` runs on.

    space = read_search_space("space.yaml", base)       # {"train.lr": FloatParam(...), ...}
    tune(base, space, "runs/study", trials=20, jobs=2)  # -> the best trial's run directory

A study lives in a directory OUT: its Optuna storage (`study.db`, SQLite, for one process;
`study.journal`, Optuna's journal file, when several processes on this machine share it; or
any RDB URL given as `storage`, e.g. PostgreSQL, for workers on several machines), and one
ordinary run directory per trial (`OUT/trial-0007`), trained by `vaelab.train`: evaluate, plot
and report read them as any run. The objective is the validation bound the run is selected on
(`valid_bound_nats`, higher is better), reported every epoch so that the pruner (the median
rule: stop a trial whose bound is below the median of earlier trials at the same epoch) can stop
a bad trial early; a pruned trial's run is finished after fewer epochs.

Workers: `jobs` processes on this machine (spawned, one PyTorch thread each), or several
`vaelab tune` commands on any machines that share the storage. A worker claims a trial under a
lock (`OUT/.claim.lock`) so that exactly `trials` trials run, none twice. A worker that is killed
leaves its trial RUNNING; the next worker on the same machine to claim a trial finds it (its
process is gone), marks it failed and queues its parameters again, and the trial that takes
them resumes the killed run from its last checkpoint: the study goes on and nothing is lost. A
killed `vaelab tune` is resumed by starting it again.

Search spaces (`read_search_space`, `parse_param`): a JSON or YAML mapping from config fields
(`section.field`, as in config.json) to a parameter, e.g.

    train.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
    model.latent_dim: {type: int, low: 2, high: 32, log: true}
    model.hidden: {type: categorical, choices: [[256], [512, 256]]}

or the same on the command line: `--param train.lr=float:1e-4:1e-2:log`,
`--param model.hidden=choice:256|512,256`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import multiprocessing
import os
import socket
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import Field, JsonValue, RootModel

from vaelab import runs
from vaelab.config import MAX_CONFIG_BYTES, SECTIONS, ConfigError, Options, RunConfig, validated
from vaelab.data import Splits, load_data
from vaelab.errors import UserError
from vaelab.experiments.tracking import Tracking
from vaelab.train import Trainer

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)

CLAIM_LOCK = ".claim.lock"
SQLITE_FILE, JOURNAL_FILE = "study.db", "study.journal"
BEST_LINK = "best"


# ------------------------------------------------------------------------------- search spaces


class FloatParam(Options):
    """A real number in [low, high], sampled on a log scale with `log` (then low > 0)."""

    type: Literal["float"]
    low: float
    high: float
    log: bool = False


class IntParam(Options):
    """An integer in [low, high], sampled on a log scale with `log` (then low > 0)."""

    type: Literal["int"]
    low: int
    high: int
    log: bool = False


class ChoiceParam(Options):
    """One of `choices` (JSON values: numbers, strings, booleans, lists such as [512, 256])."""

    type: Literal["categorical"]
    choices: Annotated[tuple[JsonValue, ...], Field(min_length=1, max_length=1000, strict=False)]


Param = Annotated[FloatParam | IntParam | ChoiceParam, Field(discriminator="type")]


class _Space(RootModel[dict[str, Param]]):
    model_config = {"strict": True}


SearchSpace = dict[str, FloatParam | IntParam | ChoiceParam]
"""config field (`section.field`) -> its parameter."""


def check_search_space(space: SearchSpace, base: RunConfig, where: str) -> SearchSpace:
    """`space` checked against the run config: every name a field, low <= high (low > 0 on a log
    scale), choices distinct, and every bound and choice a valid value of its field in `base`
    (so no trial fails on a value the config refuses), none ignored by the rest of the config."""
    if not space:
        raise UserError(f"{where}: the search space is empty; give at least one parameter")
    for name, param in space.items():
        section, _, field_name = name.partition(".")
        if section not in SECTIONS or field_name not in type(getattr(base, section)).model_fields:
            raise UserError(f"{where}: {name}: not a config field (section.field, e.g. train.lr)")
        values: tuple[Any, ...]
        if isinstance(param, ChoiceParam):
            values = param.choices
            if len({json.dumps(v) for v in values}) != len(values):
                raise UserError(f"{where}: {name}: a choice is repeated")
        else:
            if not param.low <= param.high:
                raise UserError(f"{where}: {name}: low {param.low} is above high {param.high}")
            if param.log and param.low <= 0:
                raise UserError(f"{where}: {name}: a log scale needs low > 0, got {param.low}")
            values = (param.low, param.high)
        for value in values:
            try:
                config = base.replace(**{section: {field_name: value}})
            except ConfigError as err:
                raise UserError(f"{where}: {name}: {short(value)}: {err.problem}") from None
        for problem in config.ignored_settings(set(space)):
            raise UserError(f"{where}: {problem}; drop it or change what it depends on")
    return space


def short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def search_space_from(raw: Any, base: RunConfig, where: str) -> SearchSpace:
    """A search space from parsed JSON/YAML (a mapping of field -> parameter), validated."""
    if not isinstance(raw, dict):
        raise UserError(f"{where}: expected a mapping of config fields to parameters, e.g. train.lr: {{...}}")
    space = validated(_Space, raw, where).root
    return check_search_space(space, base, where)


def read_search_space(path: str | Path, base: RunConfig) -> SearchSpace:
    """A search space file: YAML (.yaml, .yml) or JSON, checked as `check_search_space` does."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: {'not a regular file' if path.exists() else 'file not found'}")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise UserError(f"{path}: {path.stat().st_size:,} bytes is too large for a search space")
    text = path.read_bytes()
    try:
        if path.suffix in (".yaml", ".yml"):
            raw = yaml.safe_load(text)
        else:
            raw = json.loads(text)
    except (ValueError, RecursionError, yaml.YAMLError) as err:
        first = (str(err).strip().splitlines() or ["invalid"])[0]
        reason = "nested too deeply" if isinstance(err, RecursionError) else first
        raise UserError(
            f"{path}: not valid {'YAML' if path.suffix in ('.yaml', '.yml') else 'JSON'} ({reason})"
        ) from None
    count_values(raw, str(path))
    return search_space_from(raw, base, str(path))


MAX_SPACE_VALUES = 100_000
"""Values a search space may hold, counting every use of a YAML alias (an alias bomb of a few
hundred bytes expands to billions)."""


def count_values(raw: Any, where: str) -> int:
    """The number of values in parsed JSON/YAML, refused past MAX_SPACE_VALUES (each alias of a
    shared node counts again: that is how much validation would walk)."""
    count, stack = 0, [raw]
    while stack:
        value = stack.pop()
        count += 1
        if count > MAX_SPACE_VALUES:
            raise UserError(f"{where}: more than {MAX_SPACE_VALUES:,} values; not a search space")
        if isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return count


def load_search_space(file: str | Path | None, params: tuple[str, ...], base: RunConfig) -> SearchSpace:
    """The search space of a file (if any) and of `params` (`parse_param`'s texts) together;
    a parameter given both ways takes the text's."""
    space = read_search_space(file, base) if file is not None else {}
    if params:
        space |= search_space_from(dict(parse_param(text) for text in params), base, "param")
    return check_search_space(space, base, str(file) if file is not None else "param")


def parse_param(text: str) -> tuple[str, dict[str, Any]]:
    """'train.lr=float:1e-4:1e-2:log' -> ("train.lr", {"type": "float", "low": ..., "log": True});
    int:LOW:HIGH[:log] likewise; choice:A|B|C with each choice JSON (a bare word is a string, and
    comma-separated numbers a list: 512,256)."""
    name, sep, spec = text.partition("=")
    kind, _, rest = spec.partition(":")
    if not sep or not name or kind not in ("float", "int", "choice"):
        raise UserError(
            f"param {text!r}: expected NAME=float:LOW:HIGH[:log], NAME=int:LOW:HIGH[:log] "
            "or NAME=choice:A|B|..."
        )
    if kind == "choice":
        return name, {"type": "categorical", "choices": [_choice(part) for part in rest.split("|")]}
    parts = rest.split(":")
    if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] != "log"):
        raise UserError(f"param {text!r}: expected {kind}:LOW:HIGH or {kind}:LOW:HIGH:log")
    number = int if kind == "int" else float
    try:
        low, high = number(parts[0]), number(parts[1])
    except ValueError:
        raise UserError(
            f"param {text!r}: LOW and HIGH must be {'integers' if kind == 'int' else 'numbers'}"
        ) from None
    return name, {"type": kind, "low": low, "high": high, "log": len(parts) == 3}


def _choice(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        pass
    if "," in text:
        with contextlib.suppress(ValueError):
            return [json.loads(part) for part in text.split(",")]
    return text


# ------------------------------------------------------------------------------------ the engine


def _optuna():
    try:
        import optuna
    except ImportError:
        raise UserError("sweeps and studies need Optuna: pip install 'vaelab[tune]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # vaelab logs each trial itself
    return optuna


def default_storage(out: Path, jobs: int) -> str:
    """The storage of a study in `out`: the one already there, else SQLite for one process and
    Optuna's journal file for several (SQLite's locking is not for concurrent writers)."""
    if (out / JOURNAL_FILE).exists() or (jobs > 1 and not (out / SQLITE_FILE).exists()):
        return f"journal:{out / JOURNAL_FILE}"
    return f"sqlite:///{out / SQLITE_FILE}"


def check_storage(storage: str, jobs: int) -> None:
    if storage.startswith("sqlite:") and jobs > 1:
        raise UserError(
            f"storage {storage}: SQLite is for one process; with jobs > 1 use a journal file "
            "(journal:PATH) or a server database (postgresql://...)"
        )
    if not storage.startswith("journal:") and "://" not in storage:
        raise UserError(
            f"storage {storage!r}: expected journal:PATH or a database URL such as sqlite:///FILE"
        )


@dataclass(frozen=True)
class Engine:
    """How to open a study, in any process: plain values, so spawned workers get it whole.

    sampler: `tpe`, `random`, or `grid` over `grid` (param name -> its choices as JSON text);
    pruner: `median` (after `prune_startup` finished trials) or `none`. trials: how many
    trials the study runs in all (failed ones count, except those lost with a killed worker).
    """

    out: str
    storage: str
    study: str
    trials: int
    sampler: Literal["tpe", "random", "grid"] = "tpe"
    seed: int = 0
    grid: dict[str, list[str]] = field(default_factory=dict)
    pruner: Literal["median", "none"] = "median"
    prune_startup: int = 2
    stop_on_error: bool = False  # a UserError stops the worker (its trial queued again), not fails it
    invocation: str = ""  # this command's id: trials it skips count for it; the next one retries them

    def open(self) -> optuna.Study:
        optuna = _optuna()
        samplers = {
            "tpe": lambda: optuna.samplers.TPESampler(seed=self.seed),
            "random": lambda: optuna.samplers.RandomSampler(seed=self.seed),
            "grid": lambda: _grid_sampler(optuna)(self.grid, seed=self.seed),
        }
        pruner = (
            optuna.pruners.MedianPruner(n_startup_trials=self.prune_startup, n_warmup_steps=0)
            if self.pruner == "median"
            else optuna.pruners.NopPruner()
        )
        return optuna.create_study(
            storage=self._storage(optuna),
            study_name=self.study,
            direction="maximize",
            sampler=samplers[self.sampler](),
            pruner=pruner,
            load_if_exists=True,
        )

    def _storage(self, optuna):
        if self.storage.startswith("journal:"):
            from optuna.storages.journal import JournalFileBackend

            return optuna.storages.JournalStorage(JournalFileBackend(self.storage.removeprefix("journal:")))
        try:
            return optuna.storages.RDBStorage(self.storage)
        except (ImportError, ValueError) as err:
            raise UserError(f"storage {self.storage}: cannot open it ({err})") from None


def _grid_sampler(optuna):
    """Optuna's GridSampler without its `study.stop()` after the last point, which only works
    inside `study.optimize` (workers here claim trials themselves and stop on the budget)."""

    class GridSampler(optuna.samplers.GridSampler):
        def after_trial(self, study, trial, state, values) -> None:
            pass

    return GridSampler


@contextlib.contextmanager
def claim_lock(out: Path) -> Iterator[None]:
    """Workers on this machine claim trials one at a time (an exclusive flock on OUT/.claim.lock)."""
    fd = os.open(out / CLAIM_LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _worker_attr() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid()}


def _alive(pid: int) -> bool:
    """Whether process `pid` still runs: it exists and is not a zombie (a killed worker whose
    parent has not reaped it, e.g. one reparented to a subreaper, is dead for the study)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # Linux: the state is the field after the parenthesized command name
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def requeue_lost_trials(study: optuna.Study) -> list[int]:
    """Trials RUNNING in a process of this machine that is gone: mark each failed (`lost`) and
    queue its parameters again, with its run, which the next trial resumes. Returns their numbers."""
    optuna = _optuna()
    lost = []
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        worker = trial.user_attrs.get("worker", {})
        if worker.get("host") != socket.gethostname() or _alive(int(worker.get("pid", 0))):
            continue
        study._storage.set_trial_user_attr(trial._trial_id, "lost", True)
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
        study.enqueue_trial(trial.params, user_attrs={"run": trial.user_attrs.get("run")})
        log.warning(
            "trial %d: its worker (PID %s) is gone; queued again to resume", trial.number, worker.get("pid")
        )
        lost.append(trial.number)
    return lost


def counts(trial: optuna.trial.FrozenTrial, engine: Engine) -> bool:
    """Whether a trial counts towards the study's trials: not one lost with its worker, nor one
    an earlier command skipped (`TrialSkipped`; `requeue_skipped` queues those again)."""
    attrs = trial.user_attrs
    return not attrs.get("lost") and not ("skipped" in attrs and attrs.get("invocation") != engine.invocation)


def requeue_skipped(study: optuna.Study, engine: Engine) -> None:
    """Queue again, once, the parameters of the trials earlier commands skipped."""
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retries") for t in trials}
    for trial in trials:
        if not counts(trial, engine) and "skipped" in trial.user_attrs and trial.number not in retried:
            study.enqueue_trial(trial.params, user_attrs={"retries": trial.number})


def claim_trial(study: optuna.Study, engine: Engine) -> optuna.Trial | None:
    """The next trial for this worker, or None once the study has all its trials."""
    optuna = _optuna()
    with claim_lock(Path(engine.out)):
        requeue_lost_trials(study)
        counted = [t for t in study.get_trials(deepcopy=False) if counts(t, engine)]
        waiting = any(t.state == optuna.trial.TrialState.WAITING for t in counted)
        if len(counted) >= engine.trials and not waiting:
            return None
        trial = study.ask()
        trial.set_user_attr("worker", _worker_attr())
        return trial


TrialFunction = Callable[["optuna.Trial"], float]


def work(engine: Engine, run_trial: TrialFunction, on_trial: Callable[[Any], None] | None = None) -> None:
    """One worker: claim trials and run them until the study has all its trials. A trial that
    raises UserError (a diverging learning rate, ...) is failed with its message and the study
    goes on; an interrupted one (Ctrl-C) is queued again to resume, then the worker stops."""
    optuna = _optuna()
    study = engine.open()
    while (trial := claim_trial(study, engine)) is not None:
        try:
            value = run_trial(trial)
        except optuna.TrialPruned:
            frozen = study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        except TrialSkipped as skipped:
            log.warning("trial %d: %s", trial.number, skipped)
            trial.set_user_attr("skipped", str(skipped))
            trial.set_user_attr("invocation", engine.invocation)
            frozen = study.tell(trial, state=optuna.trial.TrialState.FAIL)
        except UserError as err:
            if engine.stop_on_error:
                _give_back(study, trial, engine)
                raise
            log.warning("trial %d failed: %s", trial.number, err)
            trial.set_user_attr("error", str(err))
            frozen = study.tell(trial, state=optuna.trial.TrialState.FAIL)
        except BaseException:
            _give_back(study, trial, engine)
            raise
        else:
            frozen = study.tell(trial, value)
        if on_trial is not None:
            on_trial(frozen)


class TrialSkipped(Exception):
    """A trial that another process's work makes moot (a grid point whose run is locked)."""


def _give_back(study: optuna.Study, trial: optuna.Trial, engine: Engine) -> None:
    """A trial this worker stops without finishing: queued again, to be resumed by a later one."""
    trial.set_user_attr("worker", {"host": socket.gethostname(), "pid": 0})
    with claim_lock(Path(engine.out)):
        requeue_lost_trials(study)


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)  # jobs processes share the cores; more threads each would oversubscribe


def _work_in_process(engine: Engine, run_trial: TrialFunction) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    work(engine, run_trial)


def run_workers(
    engine: Engine,
    run_trial: TrialFunction,
    jobs: int,
    on_trial: Callable[[Any], None] | None = None,
    poll_seconds: float = 1.0,
) -> None:
    """`work` in this process (jobs = 1) or in `jobs` spawned processes; `on_trial` sees each
    finished trial (from this process, by watching the study, when workers are processes)."""
    Path(engine.out).mkdir(parents=True, exist_ok=True)
    study = engine.open()  # created here, once, before any worker loads it
    with claim_lock(Path(engine.out)):
        requeue_skipped(study, engine)
    if jobs == 1:
        work(engine, run_trial, on_trial)
        return
    seen = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_init_worker)
    try:
        futures = [pool.submit(_work_in_process, engine, run_trial) for _ in range(jobs)]
        while True:
            done, pending = wait(futures, timeout=poll_seconds, return_when=FIRST_EXCEPTION)
            for trial in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
                if trial.state.is_finished() and trial.number not in seen:
                    seen.add(trial.number)
                    if on_trial is not None:
                        on_trial(trial)
            if not pending or any(f.exception() for f in done):
                break
        for future in futures:
            future.result()
    except BaseException:
        workers = getattr(pool, "_processes", None) or {}  # stop them now: a rerun must not race them
        for process in list(workers.values()):
            process.terminate()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown()


# ---------------------------------------------------------------------------------------- tune


_SPLITS: dict[str, Splits] = {}


def _splits(config: RunConfig) -> Splits:
    """The data of a trial, loaded once per worker (every trial of a study shares `data`)."""
    key = json.dumps(config.to_dict()["data"]) + json.dumps(config.to_dict()["limits"])
    if key not in _SPLITS:
        _SPLITS[key] = load_data(config.data, config.limits)
    return _SPLITS[key]


def suggest(trial: optuna.Trial, space: SearchSpace) -> dict[str, dict[str, Any]]:
    """The trial's values of the space, as config changes {section: {field: value}}."""
    changes: dict[str, dict[str, Any]] = {}
    for name, param in space.items():
        if isinstance(param, FloatParam):
            value: Any = trial.suggest_float(name, param.low, param.high, log=param.log)
        elif isinstance(param, IntParam):
            value = trial.suggest_int(name, param.low, param.high, log=param.log)
        else:  # (Optuna's choices are scalars: each is its JSON text)
            value = json.loads(trial.suggest_categorical(name, [json.dumps(c) for c in param.choices]))
        section, _, field_name = name.partition(".")
        changes.setdefault(section, {})[field_name] = value
    return changes


def train_trial(trial: optuna.Trial, config: RunConfig, run_dir: Path) -> float:
    """Train `config` into `run_dir` (resuming it if a killed worker left it), reporting the
    validation bound each epoch to the study and to the trackers `train.track` names (each trial
    is one tracked run; a pruned one closes as KILLED); prunes when the pruner says so. Returns
    the best bound."""
    optuna = _optuna()
    trial.set_user_attr("run", run_dir.name)
    status = runs.run_info(run_dir)["status"] if (run_dir / runs.RUN).is_file() else None
    if status == "finished":  # (its worker was killed between the run's end and the study's record)
        return float(runs.best_record(runs.read_metrics(run_dir))["valid_bound_nats"])
    trainer = Trainer(
        config, run_dir, resume=status == "running", overwrite=True, progress=False, splits=_splits(config)
    )
    pruned = False
    tracking = Tracking(run_dir)
    try:
        for record in trainer.state["history"]:  # the epochs a resumed run had trained
            trial.report(record["valid_bound_nats"], record["epoch"])
        while not trainer.done and not pruned:
            record = trainer.run_epoch()
            tracking.log_epoch(record)
            trial.report(record["valid_bound_nats"], record["epoch"])
            pruned = trial.should_prune()
        result = trainer.finish()
    except BaseException as error:
        tracking.close("KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED")
        raise
    finally:
        trainer.close()
    if pruned:
        tracking.close("KILLED")
        raise optuna.TrialPruned(f"pruned after epoch {result.epochs}")
    tracking.finish()
    return result.best_valid_bound


def tune_trial(trial: optuna.Trial, base: dict[str, Any], space: dict[str, Any], out: str) -> float:
    """One trial of `tune`: a module-level function of plain values, for spawned workers."""
    config = RunConfig.from_dict(base).replace(**suggest(trial, _Space.model_validate(space).root))
    run_dir = Path(out) / trial.user_attrs.get("run", f"trial-{trial.number:04d}")
    return train_trial(trial, config, run_dir)


@dataclass(frozen=True)
class TuneResult:
    best_run: Path
    best_value: float
    best_params: dict[str, Any]
    trials: list[dict[str, Any]]  # number, state, value, run, params


def tune(
    base: RunConfig,
    space: SearchSpace,
    out: str | Path,
    *,
    trials: int,
    jobs: int = 1,
    storage: str | None = None,
    study: str = "vaelab",
    sampler: Literal["tpe", "random", "grid"] = "tpe",
    seed: int = 0,
    pruner: Literal["median", "none"] = "median",
    prune_startup: int = 2,
    on_trial: Callable[[Any], None] | None = None,
) -> TuneResult:
    """Run (or resume) the study `study` in `out` until it has `trials` trials; link OUT/best to
    the best trial's run and return it. sampler `grid` needs a space of categorical parameters."""
    out = Path(out)
    if (out / runs.CONFIG).is_file():
        raise UserError(f"{out}: is a run directory; a study needs a directory of its own")
    storage = storage or default_storage(out, jobs)
    check_storage(storage, jobs)
    out.mkdir(parents=True, exist_ok=True)
    grid = {}
    if sampler == "grid":
        for name, param in space.items():
            if not isinstance(param, ChoiceParam):
                raise UserError(f"{name}: the grid sampler needs categorical parameters (choices)")
            grid[name] = [json.dumps(c) for c in param.choices]
    engine = Engine(str(out), storage, study, trials, sampler, seed, grid, pruner, prune_startup)
    check_same_space(engine, space)
    space_raw = {name: param.model_dump(mode="json") for name, param in space.items()}
    run_workers(
        engine, partial(tune_trial, base=base.to_dict(), space=space_raw, out=str(out)), jobs, on_trial
    )
    return tune_result(engine)


def distributions(space: SearchSpace) -> dict[str, Any]:
    """The Optuna distribution of each parameter (choices as their JSON text)."""
    optuna = _optuna()
    made = {}
    for name, param in space.items():
        if isinstance(param, FloatParam):
            made[name] = optuna.distributions.FloatDistribution(param.low, param.high, log=param.log)
        elif isinstance(param, IntParam):
            made[name] = optuna.distributions.IntDistribution(param.low, param.high, log=param.log)
        else:
            made[name] = optuna.distributions.CategoricalDistribution([json.dumps(c) for c in param.choices])
    return made


def check_same_space(engine: Engine, space: SearchSpace) -> None:
    """Refuse a space that the study's earlier trials contradict (other choices for a parameter,
    a log scale turned off), which Optuna cannot mix in one study."""
    optuna = _optuna()
    new = distributions(space)
    for trial in engine.open().get_trials(deepcopy=False):
        for name, old in trial.distributions.items():
            if name in new:
                try:
                    optuna.distributions.check_distribution_compatibility(old, new[name])
                except ValueError as err:
                    raise UserError(
                        f"{engine.out}: study {engine.study}: {name}: {err} (its trial {trial.number} had "
                        "another space); name another study"
                    ) from None


def tune_result(engine: Engine) -> TuneResult:
    optuna = _optuna()
    study = engine.open()
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        raise UserError(f"{engine.out}: study {engine.study}: no trial completed; nothing to choose from")
    best = max(
        complete, key=lambda t: t.value if t.value is not None and math.isfinite(t.value) else -math.inf
    )
    best_run = Path(engine.out) / best.user_attrs["run"]
    link_best(Path(engine.out), best_run.name)
    trials = [
        {
            "number": t.number,
            "state": t.state.name.lower(),
            "value": t.value,
            "run": t.user_attrs.get("run"),
            "params": t.params,
        }
        for t in study.get_trials(deepcopy=False)
    ]
    return TuneResult(best_run, float(best.value or -math.inf), best.params, trials)


def link_best(out: Path, run_name: str) -> None:
    """OUT/best -> the best trial's run (a relative symbolic link, replaced atomically)."""
    link = out / BEST_LINK
    if link.exists() and not link.is_symlink():
        raise UserError(f"{link}: exists and is not a link; move it so that the best run can be linked there")
    temporary = out / f".{BEST_LINK}.{os.getpid()}"
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(run_name, target_is_directory=True)
    os.replace(temporary, link)
