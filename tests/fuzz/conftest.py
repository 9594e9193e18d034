"""The fuzz harness: mutated inputs, each classified by outcome, none of them a failure.

Every case runs through `fuzz.check(kind, call, ...)` (a library call) or `fuzz.cli(kind, argv,
...)` (a whole `vaelab` command) and ends in one of these outcomes:

- ok: the input was accepted and what came back passes the caller's `accepted` check;
- clean error: a `UserError` of one line (a command: exit 2 and one `vaelab: error:` line);
- and the failures: traceback (any other exception, or a multi-line message), memory error (a
  `MemoryError` or an allocator failure: each case runs with its address space capped a little
  above what the process holds, so a loader that trusts a header fails here rather than swap the
  machine), invalid accepted (an input that must be refused was accepted, or the result fails
  the `accepted` check), warning (a library warning printed before or instead of the result),
  and half written (a command that failed left a file that was not there before it ran).

A failure fails the test with the input's outcome and detail; Hypothesis then shrinks the input.

Tests draw inputs with Hypothesis under the `vaelab-fuzz` profile registered here (seeded by
`derandomize=True`, no example database, no deadline), as
`@settings(settings.get_profile("vaelab-fuzz"))`. `VAELAB_FUZZ_EXAMPLES` sets the examples per
test (default 40, so the whole of tests/fuzz/ takes well under a minute; `make fuzz` runs 2000).
Tests whose every case runs a command on a run directory (a model loaded, an evaluation, figures)
use the profile `vaelab-fuzz-run`: a tenth of those examples, at least 5.
The run ends with a table of cases by input kind and outcome (printed with -v, or whenever
VAELAB_FUZZ_EXAMPLES is set; written as Markdown to the file VAELAB_FUZZ_SUMMARY names).
"""

from __future__ import annotations

import contextlib
import io
import os
import resource
import traceback
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from vaelab.errors import UserError

FUZZ_EXAMPLES = int(os.environ.get("VAELAB_FUZZ_EXAMPLES", "40"))

settings.register_profile(
    "vaelab-fuzz",
    max_examples=FUZZ_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
FUZZ_RUN_EXAMPLES = max(5, FUZZ_EXAMPLES // 10)
settings.register_profile(
    "vaelab-fuzz-run", settings.get_profile("vaelab-fuzz"), max_examples=FUZZ_RUN_EXAMPLES
)

OK, CLEAN = "ok", "clean error"
FAILURES = ("traceback", "memory error", "invalid accepted", "warning", "half written")
OUTCOMES = (OK, CLEAN, *FAILURES)

MEMORY_HEADROOM = 2 << 30
"""Address space a case may add to what the process already maps: far more than any valid fuzz
input needs, far less than a header that declares gigabytes asks for."""

ALLOCATOR_FAILURES = ("can't allocate memory", "Unable to allocate", "out of memory")


@contextlib.contextmanager
def capped_memory() -> Iterator[None]:
    """RLIMIT_AS set to the current mapped size plus MEMORY_HEADROOM for the duration."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    mapped = next(
        int(line.split()[1]) * 1024
        for line in Path("/proc/self/status").read_text().splitlines()
        if line.startswith("VmSize:")
    )
    cap = mapped + MEMORY_HEADROOM
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def file_list(root: Path) -> set[str]:
    """Every path under `root`, relative to it (links not followed)."""
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


@dataclass(frozen=True)
class Command:
    """What a command did: its outcome (one of OUTCOMES), exit status and stderr."""

    outcome: str
    code: int | None
    stderr: str


class Tally:
    """Runs fuzz cases, classifies each, and counts them by (input kind, outcome)."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()

    def check(
        self,
        kind: str,
        call: Callable[[], Any],
        *,
        accepted: Callable[[Any], str | None] | None = None,
        must_refuse: bool = False,
    ) -> str:
        """Run `call()`; `accepted(result)` returns a problem with an accepted result (or None);
        `must_refuse` says the input is invalid, so acceptance is a failure. Returns the outcome,
        after failing the test if it is a failure."""
        detail = ""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                with capped_memory():
                    result = call()
            except UserError as err:
                outcome = CLEAN if "\n" not in str(err) else "traceback"
                detail = str(err)
            except MemoryError:
                outcome, detail = "memory error", traceback.format_exc()
            except Exception as err:  # anything else is a bug, which is what fuzzing looks for
                memory = any(text in str(err) for text in ALLOCATOR_FAILURES)
                outcome, detail = ("memory error" if memory else "traceback"), traceback.format_exc()
            else:
                problem = (
                    "an invalid input was accepted"
                    if must_refuse
                    else (accepted(result) if accepted else None)
                )
                outcome, detail = ("invalid accepted", problem) if problem else (OK, "")
        if caught and outcome in (OK, CLEAN):
            outcome = "warning"
            detail = "; ".join(f"{w.category.__name__}: {w.message}" for w in caught)
        return self._record(kind, outcome, detail)

    def cli(
        self,
        kind: str,
        argv: list[str],
        *,
        must_refuse: bool,
        enough: type[Exception] | None = None,
        unchanged_on_failure: Path | None = None,
    ) -> Command:
        """Run `vaelab ARGV` in process: exit 0 is ok (unless `must_refuse`); exit 2 with exactly
        one line `vaelab: error: ...` on stderr is a clean error; anything else is a failure.
        `enough`: an exception the caller raises to cut an accepted command short (a resumed
        training that has shown it runs), counted as exit 0. `unchanged_on_failure`: a directory
        whose file list a failing command must leave as it was. The process's torch thread count,
        which `train` sets from the run's config, is restored afterwards."""
        import torch

        from vaelab import cli

        before = file_list(unchanged_on_failure) if unchanged_on_failure is not None else set()
        threads = torch.get_num_threads()
        out, err = io.StringIO(), io.StringIO()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), capped_memory():
                    code = cli.main(argv)
            except SystemExit as exit_:
                code = exit_.code
            except MemoryError:
                return self._command(kind, "memory error", None, traceback.format_exc())
            except Exception as exc:  # a traceback the CLI let through, unless it is `enough`
                if enough is None or not isinstance(exc, enough):
                    memory = any(text in str(exc) for text in ALLOCATOR_FAILURES)
                    outcome = "memory error" if memory else "traceback"
                    return self._command(kind, outcome, None, traceback.format_exc())
                code = 0
            finally:
                torch.set_num_threads(threads)
        lines = err.getvalue().strip().splitlines()
        left = set()
        if code == 0:
            outcome = "invalid accepted" if must_refuse else OK
        elif code == 2 and len(lines) == 1 and lines[0].startswith("vaelab: error: "):
            outcome = CLEAN
        else:
            outcome = "traceback"
        if caught and outcome in (OK, CLEAN):
            outcome = "warning"
        if code != 0 and unchanged_on_failure is not None and outcome in (CLEAN, "warning"):
            left = file_list(unchanged_on_failure) ^ before
            if left:
                outcome = "half written"
        messages = [f"{w.category.__name__}: {w.message}" for w in caught]
        detail = f"exit {code}; stderr: {err.getvalue()!r}; warnings: {messages}"
        if left:
            detail += f"; files added or removed: {sorted(left)}"
        return self._command(kind, outcome, code, detail, err.getvalue())

    def _command(self, kind: str, outcome: str, code: int | None, detail: str, stderr: str = "") -> Command:
        return Command(self._record(kind, outcome, detail), code, stderr)

    def _record(self, kind: str, outcome: str, detail: str) -> str:
        self.counts[kind, outcome] += 1
        if outcome in FAILURES:
            pytest.fail(f"{kind}: {outcome}: {detail}", pytrace=False)
        return outcome

    def table(self) -> str:
        """Cases by input kind (rows) and outcome (columns), as a Markdown table."""
        kinds = sorted({kind for kind, _ in self.counts})
        rows = ["| input | " + " | ".join(OUTCOMES) + " | total |", "|---" * (len(OUTCOMES) + 2) + "|"]
        for kind in [*kinds, "all"]:
            counts = [
                sum(n for (k, o), n in self.counts.items() if o == outcome and kind in (k, "all"))
                for outcome in OUTCOMES
            ]
            rows.append(f"| {kind} | " + " | ".join(map(str, counts)) + f" | {sum(counts)} |")
        return "\n".join(rows)


TALLY_KEY = pytest.StashKey[Tally]()


@pytest.fixture(scope="session")
def fuzz(request) -> Tally:
    """The session's tally of fuzz cases (see the module docstring)."""
    if TALLY_KEY not in request.config.stash:
        request.config.stash[TALLY_KEY] = Tally()
    return request.config.stash[TALLY_KEY]


def pytest_terminal_summary(terminalreporter, config) -> None:
    tally = config.stash.get(TALLY_KEY, None)
    if tally is None or not tally.counts:
        return
    if config.getoption("verbose") > 0 or "VAELAB_FUZZ_EXAMPLES" in os.environ:
        terminalreporter.write_sep(
            "=", f"fuzz cases by input and outcome ({FUZZ_EXAMPLES} examples per test)"
        )
        terminalreporter.write_line(tally.table())
    if path := os.environ.get("VAELAB_FUZZ_SUMMARY"):
        Path(path).write_text(tally.table() + "\n")
