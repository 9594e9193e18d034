"""Checks every reader makes before it opens a user's path.

A path must exist and be what the reader expects: a regular file (not a directory, a FIFO that
would block, or a link to /dev/zero that never ends) or a directory. Library warnings that a
reader's own checks make redundant are silenced only around the call that triggers them.
"""

from __future__ import annotations

import stat
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from vaelab.errors import UserError
from vaelab.limits import Limits, limit_error


def regular_file(path: str | Path) -> Path:
    """`path` if it names a regular file (links followed); else 'file not found' or 'not a
    regular file' naming it."""
    path = Path(path).expanduser()
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except OSError as err:
        raise UserError(f"{path}: cannot read ({err.strerror})") from None
    if not stat.S_ISREG(mode):
        raise UserError(
            f"{path}: {'a directory, not a file' if stat.S_ISDIR(mode) else 'not a regular file'}"
        )
    return path


def existing_dir(path: str | Path) -> Path:
    """`path` if it names a directory (links followed), else one line saying what it is."""
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"{path}: directory not found")
    if not path.is_dir():
        raise UserError(f"{path}: not a directory")
    return path


def text_file(path: str | Path, limits: Limits) -> Path:
    """A regular file no larger than limits.max_text_file_bytes, for readers that parse it whole."""
    path = regular_file(path)
    size = path.stat().st_size
    if size > limits.max_text_file_bytes:
        raise limit_error(str(path), f"{size:,} bytes of text", "max_text_file_bytes", limits)
    return path


@contextmanager
def warnings_as_errors() -> Iterator[None]:
    """Turn every warning raised inside into an exception, for the caller to turn into a UserError:
    a reader whose input makes a library warn (numpy's loadtxt on an empty file, a cast that
    overflows) has input it should refuse, and the warning must not print before the error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield
