"""Click options generated from a config dataclass, so each option's type, default and help live
in one place (the dataclass field). ``--queue-size`` <-> ``queue_size``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import click


def option(default, help: str, *, min=None, max=None, min_open: bool = False, max_open: bool = False,  # noqa: A002
           increasing: bool = False, exists: Literal["dir", "file"] | None = None, **metadata):
    """A dataclass field that is also a CLI option / ``--set`` / config-file key: its default, its help text and
    what it accepts, declared once here and checked by click for the command line, ``--set`` pairs and config
    files alike, and by :func:`check_config` for configs built in Python.

    ``min``/``max``: the range of a number, or of every item of a list of numbers (inclusive unless ``*_open``);
    ``increasing``: a list's items strictly increase; ``exists``: a non-empty value names an existing folder or
    file. Relations between fields are :class:`Rule` s in the config class's ``RULES``."""
    if min is not None or max is not None:
        metadata["range"] = (min, max, min_open, max_open)
    if increasing:
        metadata["increasing"] = True
    if exists:
        metadata["exists"] = exists
    return dataclasses.field(default=default, metadata={"help": help, **metadata})


@dataclass(frozen=True)
class Rule:
    """A relation between fields of a config that the fields' own ranges cannot say (``k`` no larger than
    the bank, milestones inside the epochs), declared in the config class's ``RULES`` tuple: ``holds(cfg)``
    must be true; ``expected`` says what is expected, naming the fields."""

    fields: tuple[str, ...]
    holds: Callable[[Any], bool]
    expected: str


def _unwrap_optional(tp):
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


class NumberTuple(click.ParamType):
    """Comma-separated numbers of one type, e.g. ``120,160`` (int) or ``0.1,0.01`` (float); ``bounds`` (a
    declared range, :func:`option`) applies to every item; ``increasing``: the items strictly increase."""

    def __init__(self, item: type = int, bounds=None, increasing: bool = False) -> None:
        self.item, self.bounds, self.increasing = item, bounds, increasing
        self.name = f"{item.__name__.upper()},{item.__name__.upper()},..."

    def convert(self, value, param, ctx):
        if isinstance(value, tuple | list):
            items = tuple(value)
        else:
            try:
                items = tuple(self.item(v) for v in str(value).split(",") if v.strip())
            except ValueError:
                self.fail(f"{value!r} is not a comma-separated list of {self.item.__name__} values", param, ctx)
        if self.bounds is not None:
            check = click_type(self.item, {"range": self.bounds})
            for v in items:
                try:
                    check.convert(v, None, None)
                except click.BadParameter:
                    self.fail(f"item {v} of {value!r} is not {describe_range(self.item, self.bounds)}", param, ctx)
        if self.increasing and any(b <= a for a, b in zip(items, items[1:], strict=False)):
            self.fail(f"{value!r} does not strictly increase", param, ctx)
        return items


def describe_range(tp, bounds) -> str:
    """``an integer >= 1``, ``a number > 0 and <= 1``: what a declared range accepts ('' without one); for a
    list, ``comma-separated numbers, each ...``."""
    if typing.get_origin(tp) is tuple:
        item = describe_range(typing.get_args(tp)[0], bounds)
        return f"comma-separated {typing.get_args(tp)[0].__name__} values" + (
            f", each {item.split(' ', 2)[2]}" if item else "")
    if bounds is None:
        return ""
    lo, hi, lo_open, hi_open = bounds
    parts = ([f"{'>' if lo_open else '>='} {lo}"] if lo is not None else []) + (
        [f"{'<' if hi_open else '<='} {hi}"] if hi is not None else [])
    return f"{'an integer' if tp is int else 'a number'} {' and '.join(parts)}"


def click_type(tp, metadata=None) -> click.ParamType | type:
    """The click parameter type of a (non-optional) field annotation; a declared range (:func:`option`) makes
    an int or float field a ``click.IntRange`` / ``click.FloatRange``."""
    bounds = (metadata or {}).get("range")
    if bounds is not None and tp in (int, float):
        lo, hi, lo_open, hi_open = bounds
        cls = click.IntRange if tp is int else click.FloatRange
        return cls(min=lo, max=hi, min_open=lo_open, max_open=hi_open)
    if typing.get_origin(tp) is typing.Literal:
        return click.Choice([str(a) for a in typing.get_args(tp)])
    if typing.get_origin(tp) is tuple and typing.get_args(tp)[0] in (int, float):
        return NumberTuple(typing.get_args(tp)[0], bounds, bool((metadata or {}).get("increasing")))
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
    fields = {f.name: f for f in dataclasses.fields(cfg)}
    names = list(fields)
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
        ptype = click_type(tp, fields[key].metadata)
        try:
            changes[key] = ptype.convert(value, None, None) if isinstance(ptype, click.ParamType) else ptype(value)
        except (ValueError, click.BadParameter) as e:
            expected = describe_range(tp, fields[key].metadata.get("range")) or getattr(ptype, "__name__", ptype)
            raise click.BadParameter(f"{key}={value!r}: expected {expected} ({e})", param_hint="--set") from e
    return dataclasses.replace(cfg, **changes)


def _shown(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple | list) else str(value)


def check_config(cfg, flags: bool = False) -> None:
    """Check every field of dataclass ``cfg`` against what it declares (:func:`option`: type, range, choices,
    increasing lists, existing paths), then the class's ``RULES``; before any work starts. Raises
    ``click.BadParameter`` naming the field (``--name`` when ``flags``), the value and what was expected.
    Values from the command line, ``--set`` and config files were converted already; this also covers
    configs built in Python (the sweep's points, the library API) and the relations between fields."""
    hints = typing.get_type_hints(type(cfg))

    def name(field: str) -> str:
        return "--" + field.replace("_", "-") if flags else field

    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if value is None:
            continue
        tp, _ = _unwrap_optional(hints[f.name])
        ptype = click_type(tp, f.metadata)
        if isinstance(ptype, click.ParamType) and ptype is not click.BOOL:
            try:
                ptype.convert(str(value) if isinstance(ptype, click.Choice) else value, None, None)
            except click.BadParameter as e:
                raise click.BadParameter(f"{name(f.name)}={_shown(value)}: {e.message}") from e
        kind = f.metadata.get("exists")
        if kind and value and not (Path(value).is_dir() if kind == "dir" else Path(value).is_file()):
            what = "no such folder" if kind == "dir" else "no such file"
            if Path(value).exists():
                what = f"expected a {'folder' if kind == 'dir' else 'file'}"
            raise click.BadParameter(f"{name(f.name)}={value}: {what}")
    for rule in getattr(type(cfg), "RULES", ()):
        if not rule.holds(cfg):
            given = ", ".join(f"{name(k)}={_shown(getattr(cfg, k))}" for k in rule.fields)
            raise click.BadParameter(f"{given}: expected {rule.expected}")


def dataclass_options(cls, exclude: tuple[str, ...] = (), enforce_required: bool = True) -> Callable:
    """Decorator adding one click option per field of ``cls`` (fields in ``exclude`` are skipped).
    ``enforce_required=False``: required fields may come from a config file; the config class checks them."""
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
                kw["type"] = click_type(tp, f.metadata)
                if typing.get_origin(tp) is tuple and f.default is not None:
                    kw["default"] = ",".join(map(str, f.default))
            if optional and tp is bool:
                kw["default"] = None
            if f.metadata.get("required") and enforce_required:
                kw.update(required=True, show_default=False)
                kw.pop("default")
            fn = click.option(*decl, f.name, **kw)(fn)
        return fn

    return decorate


def _as_set_value(value) -> str:
    """A YAML/JSON value in ``--set`` syntax (lists comma-separated, null ``none``, booleans ``true``/``false``)."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | tuple):
        if any("," in str(v) for v in value):
            raise ValueError(f"the list {value!r} has an item with a comma, which a --set value cannot carry")
        return ",".join(map(str, value))
    return str(value)


def read_config_file(path: str, section: str = "config") -> dict:
    """The mapping of a YAML or JSON config file: the one under ``section`` when the file has it (a run's
    ``config.yaml``, a ``results.json``), else the top level. Errors name the file."""
    import yaml

    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as e:
        raise click.BadParameter(f"cannot read {path}: {e}", param_hint="--config") from e
    if isinstance(data, dict) and isinstance(data.get(section), dict):
        data = data[section]
    if not isinstance(data, dict):
        raise click.BadParameter(f"{path} holds a {type(data).__name__}; expected a mapping of KEY: VALUE",
                                 param_hint="--config")
    return data


def config_file_pairs(path: str, cls, skip: tuple[str, ...] = ("derived",)) -> list[str]:
    """``KEY=VALUE`` pairs (the ``--set`` syntax) of the fields of config class ``cls`` in file ``path``
    (:func:`read_config_file`); ``skip`` keys are ignored. An unknown key or a value that does not convert
    to its field's type is an error naming the file, the key and what was expected."""
    names = [f.name for f in dataclasses.fields(cls)]
    pairs = []
    for key, value in read_config_file(path).items():
        name = str(key).replace("-", "_")
        if name in skip:
            continue
        if name not in names:
            raise click.BadParameter(f"{path}: unknown key {key!r}; valid keys: {', '.join(names)}", param_hint="--config")
        try:
            pairs.append(f"{name}={_as_set_value(value)}")
        except ValueError as e:
            raise click.BadParameter(f"{path}: {key}: {e}", param_hint="--config") from e
    try:
        apply_overrides(cls(), pairs)  # every value is checked against its field's type here, naming the file
    except click.BadParameter as e:
        raise click.BadParameter(f"{path}: {e.message}", param_hint="--config") from e
    return pairs


def merge_config_file(path: str | None, cls, options: dict) -> dict:
    """Click ``options`` of a command over the values of config file ``path``: a value given on the command
    line (or by an environment variable) wins, every other field comes from the file, then the defaults."""
    if not path:
        return options
    from click.core import ParameterSource

    ctx = click.get_current_context()
    pairs = config_file_pairs(path, cls)
    from_file, keys = apply_overrides(cls(), pairs), {p.partition("=")[0] for p in pairs}
    explicit = {k for k in options if ctx.get_parameter_source(k) in (ParameterSource.COMMANDLINE,
                                                                        ParameterSource.ENVIRONMENT)}
    return {**options, **{k: getattr(from_file, k) for k in keys if k not in explicit}}
