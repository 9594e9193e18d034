"""Flag parsers shared by the CLI modules: bad text becomes a one-line UserError."""

from __future__ import annotations

from vaelab.errors import UserError


def integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise UserError(f"expected an integer, got {text!r}") from None


def number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise UserError(f"expected a number, got {text!r}") from None
