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

from mocobench.cli import main
from mocobench.evaluators.registry import tasks
from mocobench.options import _unwrap_optional, apply_overrides, check_config
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


def _inside(item: type, bounds) -> str:
    """A value inside the declared range ``bounds`` of a list's items."""
    lo, hi, lo_open, hi_open = bounds
    if lo is not None and hi is not None:
        return str((lo + hi) / 2 if item is float else lo + (not lo_open))
    return str(lo + 1 if lo is not None else hi - 1)


def bad_values(f: dataclasses.Field, tp) -> st.SearchStrategy[str]:
    """Strings that field ``f`` (annotation ``tp``) must refuse."""
    bounds = f.metadata.get("range")
    if typing.get_origin(tp) is typing.Literal:
        choices = {str(c) for c in typing.get_args(tp)}
        return TEXT.filter(lambda s: s not in choices)
    if typing.get_origin(tp) is tuple:
        wrong = st.sampled_from(["a,b", "1,x", "?"])
        if bounds is not None:  # one item outside the declared range, after a good one
            item = typing.get_args(tp)[0]
            good = _inside(item, bounds)
            wrong |= bad_values(dataclasses.field(metadata={"range": bounds}), item).filter(
                lambda v: "," not in v).map(lambda v: f"{good},{v}")
        if f.metadata.get("increasing") and bounds is not None:
            good = _inside(typing.get_args(tp)[0], bounds)
            wrong |= st.just(f"{good},{good}")  # not strictly increasing
        return wrong
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
    numbers = (int, float)
    missing = [f"{name}.{f.name}" for name, _, f, tp in FIELDS if "range" not in f.metadata and f.name not in exempt
               and (tp in numbers or typing.get_origin(tp) is tuple and typing.get_args(tp)[0] in numbers)]
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


# ---------------------------------------------------------------------------------------------- relations, paths

#: One violation of every declared relation (``RULES``) of every config: (config, field changes). A new rule
#: without a case here fails ``test_every_rule_has_a_case``.
RULE_CASES = {
    "pretrain": [
        {"method": "moco_v1", "lr_schedule": "step", "epochs": 10, "lr_milestones": (5, 10)},
        {"method": "moco_v2", "batch_size": 64, "queue_size": 100},
        {"knn_train": "."},
        {"method": "supervised", "aug_backend": "tensor"},
        {"amp": "fp16", "device": "cpu"},
        {"resume": "no-such-checkpoint.pth"},
        {"method": "supervised", "mask_own_keys": True},
        {"aug_device": "cpu"},
        {"aug_device": "cuda", "aug_backend": "tensor", "device": "cpu"},
    ],
    "task:linear": [{"epochs": 10, "lr_milestones": (5, 10)}, {"epochs": 10, "stop_at": 11},
                    {"aug_device": "cuda", "device": "cpu"}],
    "task:knn": [{"aug_device": "cuda", "device": "cpu"}],
    "task:finegrained": [{"wd_min": 2.0, "wd_max": 1.0}],
    **{f"task:{t}": [{"scale_range": (2.0, 1.0)}, {"scale_range": (0.5,)}, {"iterations": 10, "stop_at": 20}]
       for t in ("voc_seg", "cityscapes_seg")},
    **{f"task:{t}": [{"num_machines": 2, "machine_rank": 2}] for t in ("voc_det", "coco_det", "coco_instseg")},
}


def _rule_cases():
    for name, changes in ((n, c) for n, cases in RULE_CASES.items() for c in cases):
        yield pytest.param(name, changes, id=f"{name}:{','.join(changes)}")


@pytest.mark.parametrize(("name", "changes"), list(_rule_cases()))
def test_a_broken_relation_is_named_before_any_work(name, changes, tmp_path):
    cfg = dataclasses.replace(CONFIGS[name](**({"data": str(tmp_path)} if "data" in {
        f.name for f in dataclasses.fields(CONFIGS[name])} else {})), **changes)
    with pytest.raises(click.BadParameter) as err:
        check_config(cfg.resolved() if name == "pretrain" else cfg)
    broken = [r for r in getattr(CONFIGS[name], "RULES", ()) if not r.holds(cfg)]
    assert broken, f"{changes} breaks no rule of {name}"
    assert "expected" in err.value.message and all(k in err.value.message for k in broken[0].fields), err.value.message
    assert all(k in err.value.message for k in changes if k in broken[0].fields)


def test_every_rule_has_a_case():
    """Each declared relation is broken by at least one case above (so each is known to be enforced)."""
    for name, cls in CONFIGS.items():
        for rule in getattr(cls, "RULES", ()):
            base = {"data": "."} if any(f.name == "data" for f in dataclasses.fields(cls)) else {}
            assert any(not rule.holds(dataclasses.replace(cls(**base), **c)) for c in RULE_CASES.get(name, ())), (
                f"{name}: no case of RULE_CASES breaks {rule.fields}: {rule.expected}")


def test_the_defaults_of_every_config_pass_their_own_checks(tmp_path):
    for name, cls in CONFIGS.items():
        base = {"data": str(tmp_path)} if any(f.name == "data" for f in dataclasses.fields(cls)) else {}
        cfg = cls(**base)
        check_config(cfg.resolved() if name == "pretrain" else cfg)
        for preset, values in getattr(cls, "PRESETS", {}).items():
            check_config(dataclasses.replace(cfg, preset=preset, **values))


PATH_FIELDS = [(n, cls, f) for n, cls in CONFIGS.items() for f in dataclasses.fields(cls) if f.metadata.get("exists")]


@pytest.mark.parametrize(("name", "cls", "field"), PATH_FIELDS, ids=[f"{n}.{f.name}" for n, _, f in PATH_FIELDS])
def test_a_path_that_does_not_exist_is_named(name, cls, field, tmp_path):
    missing = tmp_path / "not-here"
    with pytest.raises(click.BadParameter, match=f"{field.name}={missing}: no such folder"):
        check_config(dataclasses.replace(cls(), **{field.name: str(missing)}))
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(click.BadParameter, match="expected a folder"):
        check_config(dataclasses.replace(cls(), **{field.name: str(tmp_path / "a-file")}))


def test_a_config_built_in_python_is_checked_like_the_command_line():
    """The sweep and the library API build configs without click: out-of-range values are still refused."""
    with pytest.raises(click.BadParameter, match="k=0"):
        check_config(CONFIGS["task:knn"](k=0))
    with pytest.raises(click.BadParameter, match=r"steps=0\.9,0\.7.*strictly increase"):
        check_config(CONFIGS["task:voc_seg"](steps=(0.9, 0.7)))


# ---------------------------------------------------------------------------------------------- every command


def _commands(group: click.Group, path: tuple[str, ...] = ()):
    for name, cmd in sorted(group.commands.items()):
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, (*path, name))
        else:
            yield (*path, name), cmd


def _typed_options():
    """(command path, option) for every option of every command whose type can refuse a value."""
    out = []
    for path, cmd in _commands(main):
        for p in cmd.params:
            if isinstance(p, click.Option) and not p.is_flag and isinstance(
                    p.type, click.IntRange | click.FloatRange | click.Choice | type(click.INT) | type(click.FLOAT)):
                out.append((path, p))
    return out


OPTIONS = _typed_options()


def test_every_number_option_of_every_command_declares_its_range():
    """suite, sweep, data, zoo and transfer's own options included: a plain int/float option is one someone forgot."""
    plain = [f"{' '.join(path)} {p.opts[0]}" for path, p in OPTIONS if p.type in (click.INT, click.FLOAT)]
    assert not plain, f"options without a declared range: {plain}"


def _bad_option_values(p: click.Option) -> st.SearchStrategy[str]:
    if isinstance(p.type, click.Choice):
        return TEXT.filter(lambda s: s not in p.type.choices)
    kind = int if isinstance(p.type, click.IntRange) else float
    bounds = (p.type.min, p.type.max, p.type.min_open, p.type.max_open)
    fake = dataclasses.field(metadata={"range": bounds})
    return bad_values(fake, kind)


@pytest.mark.parametrize(("path", "param"), OPTIONS, ids=[f"{' '.join(c)} {p.opts[0]}" for c, p in OPTIONS])
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_every_command_refuses_a_bad_option_value_in_one_line(path, param, data, tmp_path_factory):
    value = data.draw(_bad_option_values(param))
    cwd = tmp_path_factory.mktemp("cmd")
    r = run_cli([*path, param.opts[0], value, "--out", str(cwd / "r")] if any(
        "--out" in q.opts for q in dict(_commands(main))[path].params) else [*path, param.opts[0], value], expect_ok=False)
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    errors = [line for line in r.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and param.opts[0] in errors[0], r.output
    assert not (cwd / "r").exists()


def test_k_past_the_knn_bank_is_refused_before_any_image_is_read(synth, tmp_path):
    """64 training images: k=65 would silently become k=64 (another protocol); it is refused by name."""
    from helpers import TINY

    r = run_cli(["transfer", "--task", "knn", "random", "--arch", "resnet18", "--data", synth, "--out", tmp_path / "k",
                 "--set", "k=65", "--set", "workers=0"], expect_ok=False)
    assert r.exit_code == 1 and f"--set k=65 is larger than the kNN bank: {synth / 'train'} holds 64 images" in r.output
    assert not (tmp_path / "k" / "feature_cache").exists() and not (tmp_path / "k" / "results.json").exists()
    run_cli(["transfer", "--task", "knn", "random", "--arch", "resnet18", "--data", synth, "--out", tmp_path / "k",
             "--set", "k=64", "--set", "workers=0", "--set", "image_size=32"])  # the whole bank is allowed
    r = run_cli(["pretrain", "--data", synth / "train", "--out", tmp_path / "p", *TINY, "--epochs", "1",
                 "--knn-train", synth / "train", "--knn-val", synth / "val", "--knn-k", "100"], expect_ok=False)
    assert "--knn-k=100 is larger than the kNN bank" in r.output and not (tmp_path / "p" / "checkpoint_last.pth").exists()


def test_a_suite_checks_every_task_before_its_first_pair(synth, tmp_path):
    """A bad value for the last task of a suite must not surface after the first tasks ran for hours."""
    root = tmp_path / "root"
    root.mkdir()
    (root / "classification").symlink_to(synth)
    base = ["suite", "random", "--arch", "resnet18", "--preset", "demo", "--tasks", "knn,linear", "--data-root", root,
            "--out", tmp_path / "s", "--set", "knn.k=5"]
    r = run_cli([*base, "--set", "linear.lr_milestones=5,40"], expect_ok=False)  # the demo's linear has 30 epochs
    assert r.exit_code == 1 and "task linear: lr_milestones=5,40, epochs=30: expected every milestone" in r.output
    r = run_cli([*base, "--set", "linear.epochs=0"], expect_ok=False)
    assert "task linear: epochs='0': expected an integer >= 1" in r.output, r.output
    r = run_cli([*base, "--tasks", "knn,voc_det"], expect_ok=False)
    assert f"task voc_det: data={root / 'voc'}: no such folder" in r.output, r.output
    assert not (tmp_path / "s").exists()
