"""Every field of every typed config refuses what it does not accept, with a clean, named error (issue 19).

The fields are read from the registry and the pretraining config, so a new task or field is covered without a
new test. Hypothesis draws, for each field, values outside its declared range, of the wrong type, or outside
its choices; the library path (``--set`` / config files) must raise ``click.BadParameter`` naming the key, and
the command line must end with exit code 2 and a one-line ``Error:``, never a traceback.
"""

from __future__ import annotations

import dataclasses
import typing

import click
import pytest
from helpers import run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mocobench.evaluators.registry import tasks
from mocobench.options import _unwrap_optional, apply_overrides
from mocobench.pretrain.config import PretrainConfig

CONFIGS = {**{f"task:{name}": t.config_cls for name, t in tasks().items()}, "pretrain": PretrainConfig}
TEXT = st.text(alphabet="abcxyz!?", min_size=1, max_size=6)  # never a number, a boolean word or a choice


def _checked_fields():
    """(config name, class, field, type) for every field whose values can be wrong: numbers, lists of numbers,
    choices, booleans (a string or a list of strings accepts anything)."""
    out = []
    for name, cls in CONFIGS.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            tp, _ = _unwrap_optional(hints[f.name])
            numbers = typing.get_origin(tp) is tuple and typing.get_args(tp)[0] in (int, float)
            if tp in (int, float, bool) or typing.get_origin(tp) is typing.Literal or numbers:
                out.append((name, cls, f, tp))
    return out


FIELDS = _checked_fields()


def bad_values(f: dataclasses.Field, tp) -> st.SearchStrategy[str]:
    """Strings that field ``f`` (annotation ``tp``) must refuse."""
    bounds = f.metadata.get("range")
    if typing.get_origin(tp) is typing.Literal:
        choices = {str(c) for c in typing.get_args(tp)}
        return TEXT.filter(lambda s: s not in choices)
    if typing.get_origin(tp) is tuple:
        return st.sampled_from(["a,b", "1,x", "?"])
    if tp is bool:
        return TEXT.filter(lambda s: s.lower() not in {"y", "n", "t", "f", "yes", "no", "true", "false", "on", "off"})
    wrong = TEXT | (st.floats(0.5, 1e6).map(lambda x: f"{x}.5") if tp is int else st.nothing())
    if bounds is None:
        return wrong
    lo, hi, lo_open, hi_open = bounds
    below = st.integers(-10**6, -1).map(lambda d: lo + d) if lo is not None else st.nothing()
    above = st.integers(1, 10**6).map(lambda d: hi + d) if hi is not None else st.nothing()
    edges = [str(lo)] * lo_open + [str(hi)] * hi_open
    return wrong | below.map(str) | above.map(str) | (st.sampled_from(edges) if edges else st.nothing())


def test_every_number_of_every_config_declares_its_range():
    """Declared once, next to the field: a numeric field without a range is a new field someone forgot."""
    exempt = {"wd_min", "wd_max"}  # finegrained's log10 grid ends may be any real number
    missing = [f"{name}.{f.name}" for name, _, f, tp in FIELDS if tp in (int, float) and "range" not in f.metadata
               and f.name not in exempt]
    assert not missing, f"numeric fields without a declared range: {missing}"


@pytest.mark.parametrize(("name", "cls", "field", "tp"), FIELDS, ids=[f"{n}.{f.name}" for n, _, f, _ in FIELDS])
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_set_pairs_and_config_files_refuse_bad_values_by_name(name, cls, field, tp, data):
    value = data.draw(bad_values(field, tp))
    with pytest.raises(click.BadParameter) as err:
        apply_overrides(cls(), [f"{field.name}={value}"])
    assert field.name in err.value.message


TRANSFER = [(n, cls, f, tp) for n, cls, f, tp in FIELDS if n.startswith("task:")]


@pytest.mark.parametrize("task", sorted(tasks()))
@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_the_transfer_command_ends_bad_values_with_a_one_line_error(task, data, tmp_path_factory):
    fields = [(f, tp) for n, _, f, tp in TRANSFER if n == f"task:{task}"]
    field, tp = data.draw(st.sampled_from(fields))
    value = data.draw(bad_values(field, tp))
    out = tmp_path_factory.mktemp("out")
    r = run_cli(["transfer", "--task", task, "random", "--arch", "resnet18", "--data", str(out), "--out", str(out / "r"),
                 "--set", f"{field.name}={value}"], expect_ok=False)
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    errors = [line for line in r.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and field.name in errors[0], r.output
    assert not (out / "r").exists()  # refused before any work


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_the_pretrain_command_ends_bad_values_with_a_one_line_error(data, tmp_path_factory):
    fields = [(f, tp) for n, _, f, tp in FIELDS if n == "pretrain" and tp is not bool]
    field, tp = data.draw(st.sampled_from(fields))
    value = data.draw(bad_values(field, tp))
    out = tmp_path_factory.mktemp("pre")
    r = run_cli(["pretrain", "--data", str(out), "--out", str(out / "r"), f"--{field.name.replace('_', '-')}", value],
                expect_ok=False)
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    assert not (out / "r").exists()
