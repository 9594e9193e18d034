"""Flag parsers shared by the CLI modules.

They raise `argparse.ArgumentTypeError`, which argparse reports with the flag's name
("argument --k: expected an integer, got 'x'"), and which `cli.train_config` turns into the same
one-line message for the flags it converts itself.
"""

from __future__ import annotations

from argparse import ArgumentTypeError
from collections.abc import Callable
from typing import Any

from vaelab.errors import UserError

# argparse dest -> (config section, field, parser): how a flag becomes a config change
FlagTable = dict[str, tuple[str, str, Callable[[str], Any]]]


def integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ArgumentTypeError(f"expected an integer, got {text!r}") from None


def number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ArgumentTypeError(f"expected a number, got {text!r}") from None


def hidden_sizes(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(h) for h in text.split(","))
    except ValueError:
        raise ArgumentTypeError(f"expected sizes like 400 or 512,256, got {text!r}") from None


def sigma_or_learned(text: str) -> float | None:
    if text == "learned":
        return None
    try:
        return float(text)
    except ValueError:
        raise ArgumentTypeError(f"expected a positive number or 'learned', got {text!r}") from None


def flag_changes(args, table: FlagTable) -> dict[str, dict[str, Any]]:
    """The config changes of the flags in `table` that were given, for `RunConfig.replace`; a value
    its parser rejects is a UserError naming the flag."""
    changes: dict[str, dict[str, Any]] = {}
    for dest, (section, field, parse) in table.items():
        value = getattr(args, dest)
        if value is not None:
            try:
                changes.setdefault(section, {})[field] = parse(value)
            except ArgumentTypeError as err:
                raise UserError(f"argument --{dest.replace('_', '-')}: {err}") from None
    return changes
