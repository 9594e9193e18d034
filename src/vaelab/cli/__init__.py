"""The `vaelab` command line: a thin layer that parses flags into options models and calls the library.

Each command module (`run`: train, evaluate, sample, reconstruct; `figures`: plot, compare, sweep,
report; `explore`: the web explorer; `theory`: bayes, estimators, kl-directions; `tune`: tune;
`export`) adds its subcommands with flags generated from the options models' fields
(`vaelab.cli.options`). Bad input exits with status 2 and one line on stderr (`vaelab: error:
...`), never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Sequence
from typing import NoReturn

from vaelab.config import DeviceError
from vaelab.errors import UserError

# A value such as `--range -10,5,-5,5` starts with '-'; argparse takes it for an option unless it
# looks like a negative number, and its own test knows no comma-separated lists.
_NEGATIVE_VALUES = re.compile(r"^-\d[\d.,eE+-]*$|^-\.\d[\d.,eE+-]*$")


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (exit 2) and accepts negative lists."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = _NEGATIVE_VALUES

    def error(self, message: str) -> NoReturn:
        raise UserError(f"{message} (see '{self.prog} --help')")


def build_parser() -> argparse.ArgumentParser:
    import vaelab
    from vaelab.cli import explore, export, figures, run, theory, tune

    parser = OneLineParser(prog="vaelab", description="Train, measure and look at variational autoencoders.")
    parser.add_argument("--version", action="version", version=f"vaelab {vaelab.__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the library does")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser, metavar="COMMAND")
    for module in (run, figures, explore, theory, tune, export):
        module.add_subcommands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        args.argv = list(sys.argv[1:] if argv is None else argv)  # (what `train --nproc` relaunches)
        logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
        return args.func(args)
    except DeviceError as err:  # the library names the field; the user typed --device
        print(f"vaelab: error: --device {err.problem}", file=sys.stderr)
        return 2
    except UserError as err:
        print(f"vaelab: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vaelab: interrupted", file=sys.stderr)
        return 130
