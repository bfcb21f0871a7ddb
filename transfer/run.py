"""``mocobench transfer``: one task on one checkpoint, ending in ``<out>/results.json``."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch

from mocobench import dist
from mocobench.atomic import OutputFolderError, writable_folder
from mocobench.checkpoint import LoadOptions, load_backbone, set_input_normalization
from mocobench.evaluators.features import FeatureCache
from mocobench.evaluators.registry import TaskContext, TaskError, get_task, tasks
from mocobench.layouts import NORMALIZATIONS
from mocobench.log import setup_logging
from mocobench.options import apply_overrides, check_config
from mocobench.results import RESULTS_FILE, write_results

logger = logging.getLogger(__name__)


def task_config(task_name: str, overrides: tuple[str, ...] = ()) -> tuple[Any, str | None]:
    """The config of task ``task_name`` with ``overrides`` (``KEY=VALUE``; a preset's values first, then the
    pairs over them; upper-case detectron2 keys go to ``opts``), checked field by field and against the class's
    ``RULES`` (:func:`mocobench.options.check_config`), and the ``normalize=NAME`` override (None: none).
    Raises ``click.BadParameter`` or :class:`TaskError` naming the key, before any work."""
    task = get_task(task_name)
    normalize = [o.partition("=")[2] for o in overrides if o.partition("=")[0] == "normalize"]
    overrides = tuple(o for o in overrides if o.partition("=")[0] != "normalize")
    if normalize and normalize[-1] not in NORMALIZATIONS:
        raise TaskError(f"--set normalize={normalize[-1]}: expected one of {', '.join(NORMALIZATIONS)}")
    cfg = task.config_cls()
    upper = [o for o in overrides if o.partition("=")[0][:1].isupper()]
    if upper and hasattr(cfg, "opts"):  # detectron2 config keys (SOLVER.MAX_ITER=200) go to opts
        overrides = tuple(o for o in overrides if o not in upper)
        cfg = dataclasses.replace(cfg, opts=(*cfg.opts, *(x for o in upper for x in o.split("=", 1))))
    cfg = apply_overrides(cfg, overrides)
    presets = getattr(type(cfg), "PRESETS", {})
    if getattr(cfg, "preset", "") in presets:  # the preset's values first, then the explicit --set pairs over them
        cfg = apply_overrides(dataclasses.replace(task.config_cls(), **presets[cfg.preset]), overrides)
    if hasattr(cfg, "data") and not cfg.data:
        raise TaskError(f"task {task_name} needs data: pass --data ROOT (or --set data=ROOT)")
    check_config(cfg)
    return cfg, normalize[-1] if normalize else None


def run_transfer(
    task_name: str,
    checkpoint: str,
    out: str | Path,
    overrides: tuple[str, ...] = (),
    arch: str | None = None,
    pretraining: str | None = None,
    seed: int = 0,
    overwrite: bool = False,
    load: LoadOptions | None = None,
    feature_cache: str | Path | None = None,
    cache_dtype: str = "float32",
) -> Path | None:
    """Load ``checkpoint`` through the one reader, run the task, write results; returns the results path
    (None when the task stopped early on purpose, e.g. the linear protocol's ``stop_at``, and on the
    other ranks of a torchrun launch).

    Frozen-feature tasks share ``feature_cache`` (default ``<out>/feature_cache``; ``cache_dtype`` float16
    halves it). Under torchrun (WORLD_SIZE > 1) the process group is joined here, for the tasks that
    support it; rank 0 writes the results.

    ``normalize=NAME`` among ``overrides`` replaces the input normalisation the checkpoint expects (its
    layout's or catalogue entry's); every task feeds the backbone that normalisation and records it."""
    task = get_task(task_name)
    cfg, normalize = task_config(task_name, overrides)
    out = Path(out)
    if (out / RESULTS_FILE).exists() and not overwrite:
        raise TaskError(f"{out / RESULTS_FILE} exists; pass --overwrite to replace it or choose another --out")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        if not task.distributed:
            raise TaskError(f"task {task_name} does not run under torchrun (tasks that do: "
                            f"{', '.join(n for n, t in tasks().items() if t.distributed)}); detection launches its "
                            "own processes with --num-gpus")
        # a long timeout: a process may wait while another fits its share of SVMs or a logistic regression
        dist.init_from_env(torch.cuda.is_available() and getattr(cfg, "device", "auto") != "cpu", timeout_minutes=600)
    try:
        writable_folder(out)  # before the checkpoint is read or any work starts
    except OutputFolderError as e:
        raise TaskError(str(e)) from e
    setup_logging(dist.get_rank(), out / "log.txt")
    backbone, info = load_backbone(checkpoint, arch=arch, seed=seed, options=load)
    if normalize:
        info = dataclasses.replace(info, normalize=normalize)
    set_input_normalization(backbone, info.normalize)
    logger.info("task %s on %s (%s, %s, %s); input normalisation %s %s", task_name, checkpoint, info.format,
                info.arch, info.method, info.normalize, "(--set normalize)" if normalize else "(the checkpoint's)")
    t0 = time.perf_counter()
    cache = FeatureCache(feature_cache or out / "feature_cache", cache_dtype)
    ctx = TaskContext(backbone, info, out, seed, feature_cache=cache)
    ctx.derived["normalize"] = f"{info.normalize} ({'--set normalize' if normalize else 'the checkpoint'})"
    metrics = task.run(cfg, ctx)
    if metrics is None:
        logger.info("%s stopped before the end; run the same command again to resume (no results yet)", task_name)
        return None
    if not dist.is_main():
        return None
    config = {**dataclasses.asdict(cfg), "derived": ctx.derived}
    path = write_results(out, task_name, info, metrics, config, seed, time.perf_counter() - t0, pretraining)
    logger.info("%s: %s -> %s", task_name, metrics, path)
    return path
