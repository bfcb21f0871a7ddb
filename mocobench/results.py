"""The one results format: ``<out>/results.json``, read by reports (architecture.md).

``{"schema_version", "task", "checkpoint": {source, sha256, format (the layout), arch, epoch, recipe, prefix,
container, part, tensors, dropped, stem, normalize, zoo} (:class:`~mocobench.checkpoint.BackboneInfo`), "pretraining",
"metrics": {name: value}, "config", "versions", "seed", "time_s", "created"}``. Written atomically.
"""

from __future__ import annotations

import json
import math
import platform
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mocobench
from mocobench.atomic import atomic_write_text

if TYPE_CHECKING:  # the checkpoint reader (torchvision) is not needed to read or write results
    from mocobench.checkpoint import BackboneInfo

SCHEMA_VERSION = 1
RESULTS_FILE = "results.json"


class ResultsError(ValueError):
    """A results file that cannot be read; the message names it."""


def package_versions() -> dict[str, str]:
    import torch
    import torchvision

    return {
        "mocobench": mocobench.__version__,
        "torch": str(torch.__version__),
        "torchvision": str(torchvision.__version__),
        "python": platform.python_version(),
    }


def write_results(
    out: str | Path,
    task: str,
    backbone: BackboneInfo,
    metrics: dict[str, float],
    config: dict[str, Any],
    seed: int,
    time_s: float,
    pretraining: str | None = None,
) -> Path:
    """Write ``out/results.json``; ``pretraining`` overrides the method read from the checkpoint. A metric that is
    not a finite number is an error (nothing is written): a NaN score is a failed run, not a result."""
    check_metrics(metrics, f"task {task}'s results for {out}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "schema_version": SCHEMA_VERSION,
        "task": task,
        "checkpoint": {k: v for k, v in asdict(backbone).items() if k != "method"},
        "pretraining": pretraining or backbone.method,
        "metrics": metrics,
        "config": config,
        "versions": package_versions(),
        "seed": seed,
        "time_s": round(time_s, 2),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    path = out / RESULTS_FILE
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")
    return path


def read_results(path: str | Path) -> dict[str, Any]:
    """Load a results file, refusing unknown schema versions."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ResultsError(f"results file {path} cannot be read: {e}") from e
    version = record.get("schema_version") if isinstance(record, dict) else None
    if version != SCHEMA_VERSION:
        raise ResultsError(f"results file {path} has schema_version {version!r}; this mocobench reads {SCHEMA_VERSION}")
    check_metrics(record.get("metrics"), f"results file {path}")
    return record


def check_metrics(metrics: Any, where: str) -> None:
    """``metrics`` must map names to finite numbers; otherwise :class:`ResultsError` naming ``where`` and the metric."""
    if not isinstance(metrics, dict) or not metrics:
        raise ResultsError(f"{where}: 'metrics' must be a non-empty mapping of name to number, got {metrics!r}")
    for name, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ResultsError(f"{where}: metric {name!r} is {value!r}; expected a finite number")
