"""``mocobench suite``: a list of transfer tasks on one or more checkpoints, then the report.

Layout: ``<out>/<label>/<task>/results.json`` (the label names the pretraining in the report). A
pair that already has its results file is skipped, so an interrupted suite resumes where it stopped
(the linear protocol and detection also resume inside an interrupted task). A failing pair does not
stop the others; the suite reports the failures at the end.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mocobench.log import setup_logging
from mocobench.results import RESULTS_FILE

if TYPE_CHECKING:
    from mocobench.checkpoint import LoadOptions

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskSpec:
    """One task of a suite: its data folder (relative to ``--data-root`` unless absolute) and ``--set`` pairs;
    ``optional``: skipped, not failed, when the data folder does not exist (a data set that needs a login)."""

    task: str
    data: str
    overrides: tuple[str, ...] = ()
    optional: bool = False


_SMALL_DET = ("preset=cpu-smoke", "head=FPN")  # FPN: C4 runs res5 on every ROI, 2.6x the time an iteration (R18)
#: Named task lists. ``cpu-small``: ResNet-18 at 64 px on ``../shared/data`` (the committed
#: imagenette-cpu report); ``demo``: the same on the embedded synthetic data; ``paper``: the published
#: protocols (``../shared/docs/protocols.md``) on the standard data sets (GPUs).
PRESETS: dict[str, tuple[TaskSpec, ...]] = {
    "cpu-small": (
        TaskSpec("knn", "imagenette-96", ("image_size=64",)),
        TaskSpec("linear", "imagenette-96", ("image_size=64", "mode=cached")),
        TaskSpec("finegrained", "flowers102-sub", ("image_size=64", "metric=mean_per_class")),  # Flowers' metric
        TaskSpec("coco_det", "coco-mini", _SMALL_DET),
        TaskSpec("voc_det", "voc-from-coco", (*_SMALL_DET, "train_sets=07")),  # the set has VOC2007 only
        TaskSpec("voc_seg", "coco-mini", ("preset=cpu-smoke",)),  # coco-mini's masks drawn as VOC classes
    ),
    "demo": (
        TaskSpec("knn", "classification", ("image_size=64",)),
        TaskSpec("linear", "classification", ("image_size=64", "mode=cached", "epochs=30")),
        TaskSpec("finegrained", "classification", ("image_size=64", "grid_size=12")),
        TaskSpec("coco_det", "coco", (*_SMALL_DET, "SOLVER.MAX_ITER=100", "SOLVER.STEPS=(70,90)")),
        TaskSpec("voc_det", "voc", (*_SMALL_DET, "train_sets=07", "SOLVER.MAX_ITER=100", "SOLVER.STEPS=(70,90)")),
        # 160 px scenes: the paper's scale range around the original size, crops of 128; lr 0.02, as 100-300
        # iterations at the paper's 0.003 leave every row predicting background (measured: mIoU 17.9 for all)
        TaskSpec("voc_seg", "segmentation", ("preset=cpu-smoke", "scale_range=0.5,2.0", "test_scale=1",
                                             "iterations=200", "lr=0.02", "workers=2")),
    ),
    "paper": (  # data as `mocobench data fetch ... --root DATA_ROOT` leaves it (ImageNet: your own copy)
        TaskSpec("linear", "imagenet"),
        TaskSpec("knn", "imagenet"),
        TaskSpec("finegrained", "", ("dataset=flowers102",)),  # DATA_ROOT/flowers-102
        TaskSpec("voc_det", "VOCdevkit", ("repeats=5",)),  # the papers: mean of 5 runs
        TaskSpec("coco_det", "coco"),
        TaskSpec("coco_instseg", "coco"),
        TaskSpec("voc_seg", "VOCdevkit"),  # train_aug: `mocobench data fetch sbd` after voc2012
        TaskSpec("cityscapes_seg", "cityscapes", optional=True),  # manual download (login)
    ),
}


class SuiteError(RuntimeError):
    """Some task/checkpoint pairs failed; the message lists them and their errors."""


def parse_checkpoint(arg: str) -> tuple[str, str]:
    """``[LABEL=]SOURCE`` -> (label, source). The default label is ``random``, the catalogue name of
    ``zoo:NAME``, or the checkpoint's folder name."""
    label, sep, source = arg.partition("=")
    if not sep:
        source = arg
        label = (arg if arg == "random" else arg[4:] if arg.startswith("zoo:")
                 else Path(arg).parent.name or Path(arg).stem)
    if source.startswith("zoo:"):
        from mocobench.zoo import ZooError, get_entry

        try:
            get_entry(source[4:])
        except ZooError as e:
            raise SuiteError(str(e)) from e
    elif source != "random" and not Path(source).is_file():
        raise SuiteError(f"checkpoint {source} does not exist (give a file, zoo:NAME, or 'random' with --arch)")
    return label, source


def select_tasks(preset: str, tasks: tuple[str, ...] = ()) -> tuple[TaskSpec, ...]:
    if preset not in PRESETS:
        raise SuiteError(f"unknown suite preset {preset!r}; choose one of {', '.join(PRESETS)}")
    specs = PRESETS[preset]
    unknown = set(tasks) - {s.task for s in specs}
    if unknown:
        raise SuiteError(f"tasks {sorted(unknown)} are not in preset {preset!r} ({', '.join(s.task for s in specs)})")
    return tuple(s for s in specs if not tasks or s.task in tasks)


def split_overrides(pairs: tuple[str, ...], specs: tuple[TaskSpec, ...]) -> dict[str, tuple[str, ...]]:
    """``TASK.KEY=VALUE`` -> {task: ("KEY=VALUE", ...)}; a pair must start with a task of the suite."""
    names = {s.task for s in specs}
    out: dict[str, list[str]] = {n: [] for n in names}
    for pair in pairs:
        task, dot, rest = pair.partition(".")
        if not dot or task not in names:
            raise SuiteError(f"--set {pair!r}: expected TASK.KEY=VALUE with TASK one of {', '.join(sorted(names))}")
        out[task].append(rest)
    return {k: tuple(v) for k, v in out.items()}


def data_folder(spec: TaskSpec, data_root: str | Path) -> Path:
    return Path(spec.data) if Path(spec.data).is_absolute() else Path(data_root) / spec.data


def task_settings(specs: tuple[TaskSpec, ...], data_root: str | Path,
                  extra: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...] | None]:
    """Each task's ``--set`` pairs (its data folder, the preset's pairs, the suite's ``--set``), every one
    checked as ``transfer`` checks it before the first pair runs, so a bad value or a missing data folder
    ends the suite before any work; None for an optional task whose data folder is absent."""
    import click

    from mocobench.evaluators.registry import TaskError
    from mocobench.transfer.run import task_config

    out: dict[str, tuple[str, ...] | None] = {}
    for spec in specs:
        data = data_folder(spec, data_root)
        if spec.optional and not data.exists():
            out[spec.task] = None
            continue
        sets = (f"data={data}", *spec.overrides, *extra[spec.task])
        if spec.task.endswith(("_det", "_instseg")):
            sets += ("resume=true",)  # continue an interrupted detectron2 run (fresh when there is none)
        try:
            task_config(spec.task, sets)
        except (click.BadParameter, TaskError) as e:
            raise SuiteError(f"task {spec.task}: {getattr(e, 'message', e)}") from e
        out[spec.task] = sets
    return out


def _for_zoo(load: LoadOptions | None) -> LoadOptions | None:
    """A catalogue entry knows its layout: of the load options only ``--part`` and ``--stem`` apply to it."""
    from mocobench.checkpoint import LoadOptions

    return LoadOptions(part=load.part, stem=load.stem) if load else None


def check_suite(checkpoints: list[str], preset: str, tasks: tuple[str, ...], data_root: str | Path,
                overrides: tuple[str, ...]) -> tuple[tuple[TaskSpec, ...], list[tuple[str, str]], dict]:
    """Everything a suite can check before any work: the preset and task names, the checkpoints and their
    labels, and each task's settings (:func:`task_settings`). Returns (tasks, (label, source) pairs, settings);
    raises :class:`SuiteError` naming what is wrong."""
    specs = select_tasks(preset, tasks)
    extra = split_overrides(overrides, PRESETS[preset])  # keys of unselected tasks of the preset are fine
    pairs = [parse_checkpoint(c) for c in checkpoints]
    labels = [label for label, _ in pairs]
    if len(set(labels)) != len(labels):
        raise SuiteError(f"two checkpoints have the same label ({labels}); name them LABEL=PATH")
    return specs, pairs, task_settings(specs, data_root, extra)


def run_suite(
    checkpoints: list[str],
    out: str | Path,
    preset: str = "cpu-small",
    tasks: tuple[str, ...] = (),
    data_root: str | Path = ".",
    arch: str | None = None,
    overrides: tuple[str, ...] = (),
    load: LoadOptions | None = None,
    cache_dtype: str = "float32",
    seed: int = 0,
) -> list[Path]:
    """Run every (checkpoint, task) pair that has no results yet; returns all results files of the suite.
    ``seed``: every task's seed (a report over suites of several seeds shows mean ± std).
    ``load`` (how to read a file checkpoint) applies to every file; zoo entries carry their own. The
    frozen-feature tasks of one checkpoint share ``<out>/<label>/feature_cache``, so each split is decoded
    and passed through the backbone once per checkpoint, whatever the number of tasks reading it."""
    from mocobench import dist
    from mocobench.evaluators.registry import get_task
    from mocobench.transfer.run import run_transfer

    specs, pairs, sets = check_suite(checkpoints, preset, tasks, data_root, overrides)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:  # under torchrun: the tasks that shard over processes; detection launches its own
        skipped = [s.task for s in specs if not get_task(s.task).distributed]
        specs = tuple(s for s in specs if get_task(s.task).distributed)
        if skipped:
            logger.warning("under torchrun the suite runs %s; run %s without torchrun afterwards (same --out: "
                           "finished pairs are skipped; detection takes --set TASK.num_procs=N)",
                           ", ".join(s.task for s in specs), ", ".join(skipped))
    out = Path(out)
    rank = int(os.environ.get("RANK", "0"))
    setup_logging(rank, out / "suite.log")
    done, failed = [], []
    total = len(pairs) * len(specs)
    for i, ((label, source), spec) in enumerate(((p, s) for p in pairs for s in specs), start=1):
        task_out = out / label / spec.task
        results = task_out / RESULTS_FILE
        if results.exists():
            logger.info("[%d/%d] %s on %s: done already (%s), skipping", i, total, spec.task, label, results)
            done.append(results)
            continue
        if sets[spec.task] is None:
            logger.info("[%d/%d] %s on %s: skipped, %s does not exist (optional in this preset)", i, total, spec.task,
                        label, data_folder(spec, data_root))
            continue
        logger.info("[%d/%d] %s on %s (%s)", i, total, spec.task, label, source)
        error = path = None
        try:
            path = run_transfer(spec.task, source, task_out, sets[spec.task], arch, label,  # logs into task_out/log.txt
                                load=_for_zoo(load) if source.startswith("zoo:") else load,
                                feature_cache=out / label / "feature_cache", cache_dtype=cache_dtype, seed=seed)
        except Exception as e:  # noqa: BLE001 - one failing pair must not stop the others
            # ... except under torchrun (the other processes would wait for this one forever) and on SIGTERM
            if world > 1 or type(e).__name__ == "TrainingInterrupted":
                raise
            error = e
        setup_logging(rank, out / "suite.log")
        if error is not None:
            logger.error("%s on %s failed: %s", spec.task, label, error)
            failed.append(f"{spec.task} on {label}: {type(error).__name__}: {error}")
            continue
        if path is not None:
            done.append(path)
    dist.barrier()  # every rank's last pair is done before rank 0 reports
    if failed:
        raise SuiteError(f"{len(failed)} of {total} pairs failed (the others are in {out}):\n  " + "\n  ".join(failed))
    return done
