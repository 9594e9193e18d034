"""Flag parsers shared by the CLI modules.

They raise `argparse.ArgumentTypeError`, which argparse reports with the flag's name
("argument --k: expected an integer, got 'x'"), and which `cli.train_config` turns into the same
one-line message for the flags it converts itself.
"""

from __future__ import annotations

from argparse import ArgumentTypeError


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
