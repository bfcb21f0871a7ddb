"""``mocobench sweep NAME``: the MoCo paper's ablations as sets of normal pretraining runs.

Each point is a ``mocobench pretrain`` run (with the kNN monitor) in ``<out>/<label>/`` followed by the
kNN transfer task in ``<out>/<label>/knn/``, so ``mocobench report`` tabulates the points and plots the
scores against the swept setting (it reads the recipe stored in each checkpoint). Finished points are
skipped: an interrupted sweep resumes (a point's pretraining resumes from its last checkpoint).

Sweeps (arXiv 1911.05722): ``momentum`` (Table 1: m in {0, 0.9, 0.99, 0.999, 0.9999}),
``negatives`` (Fig. 3: K for moco_v2 and memory_bank, the batch size N = K for the paper's end_to_end,
whose negatives are the K - 1 other keys of the batch),
``shuffle_bn`` (Fig. A.1: shuffling BN on (8 BN splits) and off (1)).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from mocobench.pretrain.config import PretrainConfig
from mocobench.results import RESULTS_FILE

logger = logging.getLogger(__name__)

SWEEPS: dict[str, tuple[dict, ...]] = {
    "momentum": tuple({"moco_m": m} for m in (0.0, 0.9, 0.99, 0.999, 0.9999)),
    "negatives": (
        *({"method": "moco_v2", "queue_size": k} for k in (256, 1024, 4096)),
        *({"method": "memory_bank", "queue_size": k} for k in (256, 1024, 4096)),
        *({"method": "end_to_end", "batch_size": b} for b in (32, 64, 128)),
    ),
    "shuffle_bn": ({"bn_splits": 8}, {"bn_splits": 1}),
}


class SweepError(ValueError):
    """An unknown sweep or a point whose settings cannot work."""


def point_label(changes: dict) -> str:
    """``method=moco_v2,queue_size=256`` style folder name of a point."""
    return ",".join(f"{k}={v}" for k, v in changes.items())


def sweep_points(name: str, values: tuple[str, ...] = ()) -> tuple[dict, ...]:
    if name not in SWEEPS:
        raise SweepError(f"unknown sweep {name!r}; choose one of {', '.join(SWEEPS)}")
    points = SWEEPS[name]
    if values:
        points = tuple(p for p in points if point_label(p) in values)
        unknown = set(values) - {point_label(p) for p in SWEEPS[name]}
        if unknown:
            raise SweepError(f"points {sorted(unknown)} are not in sweep {name!r}: "
                             f"{', '.join(point_label(p) for p in SWEEPS[name])}")
    return points


#: Recipe fields a point that changes ``method`` takes from the base method, unless the base sets them: the
#: paper compares mechanisms under one recipe (arXiv 1911.05722, Fig. 3: "We adopt the same pretext task and
#: only vary the contrastive loss mechanism"). The paper ran it under the v1 recipe: pass its fields to the sweep
#: (``--moco-t 0.07 --no-mlp --aug v1 --lr-schedule step``) and every point uses them.
SHARED_RECIPE = ("moco_t", "mlp", "aug", "lr_schedule", "lr_milestones")


def point_config(base: PretrainConfig, run_dir: str | Path, changes: dict) -> PretrainConfig:
    """The pretraining config of one point: ``base`` with ``changes``; a mechanism point keeps the base's recipe."""
    cfg = dataclasses.replace(base, out=str(run_dir), resume="auto", **changes)
    if "method" in changes and changes["method"] != base.method:
        ref = base.resolved()
        cfg = dataclasses.replace(cfg, **{k: getattr(ref, k) for k in SHARED_RECIPE
                                          if getattr(base, k) is None and k not in changes})
    return cfg


def check_sweep(base: PretrainConfig, out: Path, points: tuple[dict, ...], knn_data: str,
                knn_overrides: tuple[str, ...]) -> None:
    """Every point's pretraining config and the kNN task's settings, checked before the first point runs (a bad
    ``--knn-set`` must not surface after hours of pretraining). Raises :class:`SweepError` naming the point."""
    import os

    import click

    from mocobench.datasets import DataError
    from mocobench.evaluators.knn import knn_splits
    from mocobench.evaluators.registry import TaskError
    from mocobench.pretrain.config import ConfigError
    from mocobench.transfer.run import task_config

    world = int(os.environ.get("WORLD_SIZE", "1"))
    for changes in points:
        try:
            point_config(base, out / point_label(changes), changes).resolved().validate(world)
        except ConfigError as e:
            raise SweepError(f"point {point_label(changes)}: {e}") from e
    try:
        knn_splits(task_config("knn", (f"data={knn_data}", *knn_overrides))[0])  # lists the splits, checks k
    except (click.BadParameter, TaskError, DataError) as e:
        raise SweepError(f"--knn-data / --knn-set: {getattr(e, 'message', e)}") from e


def run_sweep(name: str, base: PretrainConfig, out: str | Path, knn_data: str, knn_overrides: tuple[str, ...] = (),
              values: tuple[str, ...] = (), checked: bool = False) -> list[Path]:
    """Pretrain every point of sweep ``name`` from ``base`` (its ``out`` is replaced), then kNN; returns
    the results files. ``knn_data`` is the kNN task's root (train + val splits). ``checked``: the caller ran
    :func:`check_sweep` on the same arguments already."""
    from mocobench.pretrain.engine import NonFiniteLossError, pretrain
    from mocobench.transfer.run import run_transfer

    out = Path(out)
    results, failed = [], []
    points = sweep_points(name, values)
    if not checked:  # the CLI checks before it makes any folder (check_sweep lists the kNN splits: once is enough)
        check_sweep(base, out, points, knn_data, knn_overrides)
    for i, changes in enumerate(points, start=1):
        label = point_label(changes)
        run_dir = out / label
        knn_results = run_dir / "knn" / RESULTS_FILE
        if knn_results.exists():
            logger.info("[%d/%d] %s: done already, skipping", i, len(points), label)
            results.append(knn_results)
            continue
        cfg = point_config(base, run_dir, changes)
        logger.info("[%d/%d] %s: pretraining into %s", i, len(points), label, run_dir)
        try:
            ckpt = pretrain(cfg)
        except NonFiniteLossError as e:  # a finding (the paper: training fails at small m), not a crash
            logger.error("%s: %s", label, e)
            failed.append(f"{label}: {e}")
            continue
        path = run_transfer("knn", str(ckpt), run_dir / "knn", (f"data={knn_data}", *knn_overrides), pretraining=label)
        results.append(path)
    if failed:
        raise SweepError(f"{len(failed)} of {len(points)} points did not finish:\n  " + "\n  ".join(failed))
    return results
