"""Command-line flags generated from a frozen config dataclass, and the dataclass back from them.

A field becomes ``--field-name`` (``metadata["flag"]`` overrides the name) with the field's
default, its ``metadata["help"]`` (and ``choices`` / ``metavar`` where given) and a type read
from the annotation: ``bool`` -> ``--x`` / ``--no-x``; ``int``, ``float``, ``str`` -> one value;
``tuple[X, ...]`` -> one or more values; ``str | int`` -> an int where the value is one. A field
whose type is itself a dataclass (``StatsConfig.convention``) contributes its own fields, flat.
So a default or a help text is written once, on the dataclass, and ``--help``, docs/cli.md and
the library agree (the habit of trl's ``TrlParser`` over ``HfArgumentParser``).

Invalid values are refused by the dataclass's own validation (``__post_init__``), whose
ValueError names the field; the CLI reports it as a usage error (exit 2).
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any


def _dest(prefix: str, name: str) -> str:
    return f"{prefix}{name}"


def _int_or_str(value: str) -> int | str:
    try:
        return int(value)
    except ValueError:
        return value


def _scalar(tp: Any) -> Callable[[str], Any]:
    if tp in (int, float, str):
        return tp
    args = set(typing.get_args(tp))
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and args == {str, int}:
        return _int_or_str
    raise TypeError(f"no command-line form for a field of type {tp!r}")


def _fields(cls: type) -> Iterable[tuple[dataclasses.Field, Any]]:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.init:
            yield f, hints[f.name]


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    raise TypeError(f"field {f.name!r} has no default: it cannot be an optional flag")


def add_flags(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    *,
    skip: Iterable[str] = (),
    prefix: str = "",
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> None:
    """Add one flag per init field of dataclass ``cls`` (nested dataclasses flattened).

    ``overrides``: field -> presentation only (``flag``, ``metavar``, ``choices``) where the
    command line says it differently from the dataclass; defaults and help stay the field's."""
    skip = set(skip)
    overrides = overrides or {}
    for f, tp in _fields(cls):
        if f.name in skip:
            continue
        if dataclasses.is_dataclass(tp):
            add_flags(parser, tp, skip=skip, prefix=prefix, overrides=overrides)
            continue
        default = _default(f)
        meta = {**f.metadata, **overrides.get(f.name, {})}
        flag = meta.get("flag", "--" + f.name.replace("_", "-"))
        help_text = meta.get("help", f.name.replace("_", " "))
        kw: dict[str, Any] = {"dest": _dest(prefix, f.name), "default": default}
        if tp is bool:  # a switch away from the default: --x when off, --no-x when on
            kw["action"] = "store_false" if default else "store_true"
            kw["help"] = help_text
            if default:
                flag = meta.get("negative_flag", "--no-" + flag.removeprefix("--"))
        else:
            origin = typing.get_origin(tp)
            if origin is tuple:
                kw["type"], kw["nargs"] = _scalar(typing.get_args(tp)[0]), "+"
                shown = " ".join(map(str, default)) or "none"
            else:
                kw["type"] = _scalar(tp)
                shown = str(default)
            kw["help"] = f"{help_text} (default: {shown})"
            for key in ("choices", "metavar"):
                if key in meta:
                    kw[key] = meta[key]
        parser.add_argument(flag, **kw)


def from_args(cls: type, args: argparse.Namespace, *, prefix: str = "", **overrides: Any) -> Any:
    """The ``cls`` instance the flags of ``add_flags(..., cls)`` describe; a value the
    dataclass refuses is a ``store_schema.problems.UsageError`` (exit 2) naming the field."""
    values: dict[str, Any] = {}
    for f, tp in _fields(cls):
        if f.name in overrides:
            values[f.name] = overrides[f.name]
        elif dataclasses.is_dataclass(tp):
            values[f.name] = from_args(tp, args, prefix=prefix)
        else:
            value = getattr(args, _dest(prefix, f.name), _default(f))
            values[f.name] = tuple(value) if typing.get_origin(tp) is tuple else value
    # imported here: the store_schema package loads xarray, which building the CLI must not
    from repcollapse.store_schema.problems import UsageError

    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from exc


class LazyFlagsParser(argparse.ArgumentParser):
    """A parser whose dataclass flags are added on first use (a parse, a usage or help line).

    The config dataclasses live beside the analysis code, which imports pandas, scipy and
    altair: building every command's parser at start-up must not import them, or every
    ``repcollapse`` command would pay seconds for flags it does not parse. ``defer(fn)`` queues
    ``fn(parser)``; argparse hands the arguments of a sub-command to that sub-parser's
    ``parse_known_args``, so only the command being run (or documented) imports its configs.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pending: list[Callable[[argparse.ArgumentParser], None]] = []

    def defer(self, fn: Callable[[argparse.ArgumentParser], None]) -> None:
        self._pending.append(fn)

    def _populate(self) -> None:
        while self._pending:
            self._pending.pop(0)(self)

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        self._populate()
        return super().parse_known_args(args, namespace)

    def format_usage(self) -> str:
        self._populate()
        return super().format_usage()

    def format_help(self) -> str:
        self._populate()
        return super().format_help()
