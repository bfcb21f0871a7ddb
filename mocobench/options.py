"""Click options generated from a config dataclass, so each option's type, default and help live
in one place (the dataclass field). ``--queue-size`` <-> ``queue_size``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable

import click


def _unwrap_optional(tp):
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


class IntTuple(click.ParamType):
    """Comma-separated integers, e.g. ``120,160``."""

    name = "INT,INT,..."

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            return tuple(int(v) for v in str(value).split(",") if v.strip())
        except ValueError:
            self.fail(f"{value!r} is not a comma-separated list of integers", param, ctx)


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
                if typing.get_origin(tp) is typing.Literal:
                    kw["type"] = click.Choice([str(a) for a in typing.get_args(tp)])
                elif typing.get_origin(tp) is tuple:
                    kw["type"] = IntTuple()
                    kw["default"] = ",".join(map(str, f.default))
                else:
                    kw["type"] = tp
            if optional and tp is bool:
                kw["default"] = None
            if f.metadata.get("required"):
                kw.update(required=True, show_default=False)
                kw.pop("default")
            fn = click.option(*decl, f.name, **kw)(fn)
        return fn

    return decorate
