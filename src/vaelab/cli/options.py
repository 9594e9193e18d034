"""Command-line flags generated from the options models' field metadata.

Every option is a field of a pydantic model (`vaelab.config`'s run sections, or a command's own
options model below them); this module turns each field into one argparse argument with its help
(the field's description, choices and default), metavar and a parser for its type, and turns the
parsed flags back into validated models. A value that fails validation is reported under the flag
the user typed (`argument --lr: Input should be greater than 0, got -1.0`), never as a traceback.

    parser = argparse.ArgumentParser()
    fields = add_fields(parser, EvaluateOptions)
    options = build(EvaluateOptions, parser.parse_args(argv), fields)
"""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from vaelab.config import SECTIONS, ConfigError, Flag, RunConfig, merged, read_config_file, validated
from vaelab.errors import UserError

_UNSET = argparse.SUPPRESS  # a flag not given leaves no attribute, so defaults stay the model's


@dataclass(frozen=True)
class CliField:
    """One generated argument: its argparse `dest`, the dotted field it sets and the flag's text."""

    dest: str
    field: str
    flag: str


class Fields(dict[str, CliField]):
    """dotted field name -> its argument, for one parser."""

    def given(self, args: argparse.Namespace) -> dict[str, Any]:
        """dotted field -> parsed value, for the flags that were given (a repeated flag's values
        as a tuple)."""
        given = {name: getattr(args, f.dest) for name, f in self.items() if hasattr(args, f.dest)}
        return {name: tuple(v) if isinstance(v, list) else v for name, v in given.items()}

    def flag_error(self, err: ConfigError, given: dict[str, Any]) -> UserError:
        """A validation error, under the flag the user typed when the value came from one (an
        item of a list, e.g. `model.hidden.1`, belongs to its field's flag)."""
        for name in given:
            if err.field == name or err.field.startswith(name + "."):
                item = err.field[len(name) + 1 :]
                return UserError(
                    f"argument {self[name].flag}: {f'item {item}: ' if item else ''}{err.problem}"
                )
        return err


def add_fields(
    parser: argparse.ArgumentParser,
    model: type[BaseModel],
    *,
    section: str | None = None,
    only: tuple[str, ...] | None = None,
    defaults: BaseModel | None = None,
) -> Fields:
    """Add one argument per field of `model` (or of the names in `only`); `section` prefixes the
    dotted names (a RunConfig section); `defaults` overrides the defaults shown in --help."""
    fields = Fields()
    for name, info in model.model_fields.items():
        if only is not None and name not in only:
            continue
        dotted = f"{section}.{name}" if section else name
        fields[dotted] = _add(parser, dotted, name, info, getattr(defaults, name, info.default))
    return fields


def add_command(
    sub: argparse._SubParsersAction,
    name: str,
    options: type[BaseModel],
    func: Callable[[argparse.Namespace], int],
    **parser_args: Any,
) -> argparse.ArgumentParser:
    """Add the subcommand `name` (`parser_args`: help, description) that runs `func(args)`, with
    one flag per field of `options`; `build(options, args, args.own)` reads them back."""
    parser = sub.add_parser(name, **parser_args)
    parser.set_defaults(func=func, own=add_fields(parser, options))
    return parser


def add_run_config(
    parser: argparse.ArgumentParser, only: tuple[str, ...] | None = None, defaults: RunConfig | None = None
) -> Fields:
    """Arguments for the RunConfig fields (all, or the dotted names in `only`)."""
    fields = Fields()
    defaults = defaults or RunConfig()
    for section in SECTIONS:
        kind = type(getattr(defaults, section))
        names = None if only is None else tuple(f.split(".")[1] for f in only if f.startswith(section + "."))
        if names != ():
            fields.update(
                add_fields(parser, kind, section=section, only=names, defaults=getattr(defaults, section))
            )
    return fields


def build(model: type[BaseModel], args: argparse.Namespace, fields: Fields, **extra: Any):
    """The validated `model` from the parsed flags (and `extra` values set by the command)."""
    given = fields.given(args)
    try:
        return validated(model, {**given, **extra}, "")
    except ConfigError as err:
        raise fields.flag_error(err, given) from None


def run_config(
    fields: Fields, args: argparse.Namespace, base: RunConfig, config_file: Path | None
) -> tuple[RunConfig, set[str]]:
    """`base`, then the JSON `config_file`, then the flags in `fields` that were given, validated
    once; and the dotted names of the fields the user set (in the file or by a flag). A bad value
    is reported under its flag, or under the file and the field."""
    file_layer = read_config_file(config_file) if config_file else {}
    given = fields.given(args)
    try:
        config = merged(base, file_layer, run_config_changes(given))
    except ConfigError as err:
        named = fields.flag_error(err, given)
        if named is not err:
            raise named from None
        raise ConfigError(str(config_file or "config"), err.field, err.problem) from None
    user_set = set(given) | {f"{s}.{k}" for s, values in file_layer.items() for k in values}
    return config, user_set


def run_config_changes(given: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{"model.latent_dim": 4} -> {"model": {"latent_dim": 4}}, for `vaelab.config.merged`."""
    changes: dict[str, dict[str, Any]] = {}
    for dotted, value in given.items():
        section, name = dotted.split(".")
        changes.setdefault(section, {})[name] = value
    return changes


# --------------------------------------------------------------------- one field, one argument


def _add(parser: argparse.ArgumentParser, dotted: str, name: str, info: FieldInfo, default: Any) -> CliField:
    flag = _flag_metadata(info)
    kind, optional = _strip_optional(info.annotation)
    flag_name = flag.name or "--" + name.replace("_", "-")
    dest = dotted.replace(".", "__")
    kwargs: dict[str, Any] = {"help": _help(info, kind, flag, default)}
    if flag.repeat:  # a tuple field, one item per occurrence of the flag
        kind = _strip_optional(typing.get_args(kind)[0])[0]
    if flag.positional:
        if flag.choices is not None:
            kwargs["choices"] = tuple(flag.choices())
        elif typing.get_origin(kind) is Literal:
            kwargs["choices"] = typing.get_args(kind)
        if not info.is_required():  # an optional positional (explore's RUN_B), absent: its default
            kwargs.update(nargs="?", default=default)
        parser.add_argument(
            dest, metavar=flag.name or name.upper(), type=_parser(kind, flag, optional), **kwargs
        )
        return CliField(dest, dotted, flag.name or name.upper())
    if kind is bool:
        # a run-config switch may be on in a preset or file, so it can be turned off too
        kwargs["action"] = argparse.BooleanOptionalAction if "." in dotted else "store_true"
    else:
        kwargs["type"] = _parser(kind, flag, optional)
        if typing.get_origin(kind) is Literal or flag.choices is not None:
            kwargs["choices"] = typing.get_args(kind) if flag.choices is None else tuple(flag.choices())
            kwargs["type"] = str
        else:
            kwargs["metavar"] = flag.metavar or _metavar(kind)
        if flag.repeat:
            kwargs["action"] = "append"
        if flag.bare is not None:  # `--compile` alone is `--compile on`
            kwargs.update(nargs="?", const=flag.bare)
    parser.add_argument(flag_name, dest=dest, default=_UNSET, required=info.is_required(), **kwargs)
    if flag.negative is not None:  # `--no-compile` is `--compile off`
        parser.add_argument(
            "--no-" + flag_name.removeprefix("--"),
            dest=dest,
            action="store_const",
            const=flag.negative,
            default=_UNSET,
            help=f"the same as {flag_name} {flag.negative}",
        )
    return CliField(dest, dotted, flag_name)


def _flag_metadata(info: FieldInfo) -> Flag:
    """The `Flag` among the field's metadata, or inside an `Annotated` member of its union."""
    for item in info.metadata:
        if isinstance(item, Flag):
            return item
    for arg in typing.get_args(info.annotation):
        for item in getattr(arg, "__metadata__", ()):
            if isinstance(item, Flag):
                return item
    return Flag()


def _strip_optional(annotation: Any) -> tuple[Any, bool]:
    """(the type without None and without Annotated metadata, whether None was allowed); a union
    of a type and words (`float | Literal["auto"]`) stays a union."""
    args = typing.get_args(annotation)
    optional = typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in args
    if optional:
        rest = [a for a in args if a is not type(None)]
        annotation = rest[0] if len(rest) == 1 else typing.Union[tuple(rest)]  # noqa: UP007
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation, optional


def _parser(kind: Any, flag: Flag, optional: bool) -> Callable[[str], Any]:
    """Text -> value for a field's type; argparse reports an error under the flag's name."""
    if typing.get_origin(kind) is tuple:
        item = typing.get_args(kind)[0]  # tuple[int, ...] or tuple[float, float]: one item type
        item_parser = _parser(_strip_optional(item)[0], Flag(), False)

        def parse_tuple(text: str) -> tuple:
            if not text:  # `--hidden ''`: the empty list
                return ()
            try:
                return tuple(item_parser(part) for part in text.split(","))
            except argparse.ArgumentTypeError:
                raise argparse.ArgumentTypeError(
                    f"expected comma-separated values like 512,256, got {text!r}"
                ) from None

        base: Callable[[str], Any] = parse_tuple
    elif typing.get_origin(kind) in (typing.Union, types.UnionType):  # a type or its words: auto, ...
        words = {
            w for a in typing.get_args(kind) if typing.get_origin(a) is Literal for w in typing.get_args(a)
        }
        (other,) = [a for a in typing.get_args(kind) if typing.get_origin(a) is not Literal]
        other_parser = _parser(_strip_optional(other)[0], Flag(), False)

        def parse_word_or_value(text: str) -> Any:
            return text if text in words else other_parser(text)

        base = parse_word_or_value
    else:
        scalars: dict[Any, Callable[[str], Any]] = {int: _integer, float: _number, Path: Path}
        base = scalars.get(kind, str)
    if optional and flag.none:

        def parse_or_none(text: str) -> Any:
            return None if text == flag.none else base(text)

        return parse_or_none
    return base


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def _metavar(kind: Any) -> str:
    return {int: "N", float: "F", Path: "PATH"}.get(kind, "VALUE")


def _help(info: FieldInfo, kind: Any, flag: Flag, default: Any) -> str:
    text = info.description or ""
    if flag.positional or info.is_required() or "(default" in text:
        return text
    if isinstance(default, tuple):
        shown = ",".join(str(v) for v in default)
    elif default is None:
        shown = "none"
    elif kind is bool:
        shown = "on" if default else "off"
    else:
        shown = str(default)
    if default is None and flag.none:
        shown = flag.none
    return f"{text} (default {shown})".replace("%", "%%")
