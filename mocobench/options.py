"""Click options generated from a config dataclass, so each option's type, default and help live
in one place (the dataclass field). ``--queue-size`` <-> ``queue_size``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable

import click


def option(default, help: str, **metadata):  # noqa: A002 - "help" as in click
    """A dataclass field that is also a CLI option / ``--set`` key: its default and its help text."""
    return dataclasses.field(default=default, metadata={"help": help, **metadata})


def _unwrap_optional(tp):
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


class NumberTuple(click.ParamType):
    """Comma-separated numbers of one type, e.g. ``120,160`` (int) or ``0.1,0.01`` (float)."""

    def __init__(self, item: type = int) -> None:
        self.item = item
        self.name = f"{item.__name__.upper()},{item.__name__.upper()},..."

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            return tuple(self.item(v) for v in str(value).split(",") if v.strip())
        except ValueError:
            self.fail(f"{value!r} is not a comma-separated list of {self.item.__name__} values", param, ctx)


def click_type(tp) -> click.ParamType | type:
    """The click parameter type of a (non-optional) field annotation."""
    if typing.get_origin(tp) is typing.Literal:
        return click.Choice([str(a) for a in typing.get_args(tp)])
    if typing.get_origin(tp) is tuple:
        return NumberTuple(typing.get_args(tp)[0])
    if tp is bool:
        return click.BOOL
    return tp


def apply_overrides(cfg, pairs: list[str] | tuple[str, ...]):
    """A copy of dataclass ``cfg`` with ``key=value`` strings applied, converted to each field's type.

    Unknown keys and bad values raise ``click.BadParameter`` naming the key and the valid keys.
    """
    hints = typing.get_type_hints(type(cfg))
    names = [f.name for f in dataclasses.fields(cfg)]
    changes = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--set")
        if key not in names:
            raise click.BadParameter(f"unknown key {key!r}; valid keys: {', '.join(names)}", param_hint="--set")
        tp, optional = _unwrap_optional(hints[key])
        if optional and value.lower() in ("none", "null", ""):
            changes[key] = None
            continue
        ptype = click_type(tp)
        try:
            changes[key] = ptype.convert(value, None, None) if isinstance(ptype, click.ParamType) else ptype(value)
        except (ValueError, click.BadParameter) as e:
            raise click.BadParameter(f"{key}={value!r}: expected {getattr(ptype, '__name__', ptype)} ({e})",
                                     param_hint="--set") from e
    return dataclasses.replace(cfg, **changes)


def dataclass_options(cls, exclude: tuple[str, ...] = ()) -> Callable:
    """Decorator adding one click option per field of ``cls`` (fields in ``exclude`` are skipped)."""
    hints = typing.get_type_hints(cls)

    def decorate(fn):
        for f in reversed(dataclasses.fields(cls)):
            if f.name in exclude:
                continue
            tp, optional = _unwrap_optional(hints[f.name])
            name = "--" + f.name.replace("_", "-")
            kw: dict = {"help": f.metadata.get("help", ""), "default": f.default, "show_default": f.default is not None}
            if tp is bool:
                decl = [f"{name}/--no-{name[2:]}"]
            else:
                decl = [name]
                kw["type"] = click_type(tp)
                if typing.get_origin(tp) is tuple and f.default is not None:
                    kw["default"] = ",".join(map(str, f.default))
            if optional and tp is bool:
                kw["default"] = None
            if f.metadata.get("required"):
                kw.update(required=True, show_default=False)
                kw.pop("default")
            fn = click.option(*decl, f.name, **kw)(fn)
        return fn

    return decorate
