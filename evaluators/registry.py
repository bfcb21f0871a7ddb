"""The one task registry: each evaluator module registers ``name -> (config class, run function)``.

The CLI's ``--task`` choices, the suite and the parametrised tests all read :func:`tasks`. Evaluator
modules are imported on first use; detection modules keep detectron2 imports inside their functions,
so importing mocobench never imports detectron2.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from mocobench.checkpoint import BackboneInfo

#: Modules whose import registers tasks.
EVALUATOR_MODULES = (
    "mocobench.evaluators.knn",
    "mocobench.evaluators.linear",
    "mocobench.evaluators.finegrained",
    "mocobench.evaluators.fewshot",
    "mocobench.evaluators.voc07_svm",
    "mocobench.evaluators.segmentation",
    "mocobench.evaluators.detection",
)


class TaskError(ValueError):
    """An unknown task or a bad task option; the message lists the valid values."""


@dataclass(frozen=True)
class TaskContext:
    """What a task run gets besides its config: the backbone (fc = Identity), where to write, the
    seed, ``derived``: values the task computes from its config (saved in results.json), and the
    feature cache of the run or suite (None: extract without caching)."""

    backbone: nn.Module
    info: BackboneInfo
    out: Path
    seed: int = 0
    derived: dict[str, Any] = field(default_factory=dict)
    feature_cache: Any = None  # mocobench.evaluators.features.FeatureCache shared by the frozen-feature tasks


@dataclass(frozen=True)
class Task:
    name: str
    config_cls: type
    run: Callable[[Any, TaskContext], dict[str, float] | None]
    summary: str
    distributed: bool = False  # runs under torchrun (each rank a share of the work, same numbers)


_REGISTRY: dict[str, Task] = {}


def register(name: str, config_cls: type, summary: str, distributed: bool = False) -> Callable:
    """Decorator: ``@register("knn", KnnConfig, "...")`` on ``run(cfg, ctx) -> metrics`` (None: stopped
    early on purpose, resumable; no results are written). ``distributed``: the task runs under torchrun."""

    def deco(fn):
        if name in _REGISTRY:
            raise TaskError(f"task {name!r} is registered twice")
        _REGISTRY[name] = Task(name, config_cls, fn, summary, distributed)
        return fn

    return deco


def tasks() -> dict[str, Task]:
    """All registered tasks, by name."""
    for module in EVALUATOR_MODULES:
        importlib.import_module(module)
    return dict(sorted(_REGISTRY.items()))


def get_task(name: str) -> Task:
    registry = tasks()
    if name not in registry:
        raise TaskError(f"unknown task {name!r}; valid tasks: {', '.join(registry)}")
    return registry[name]
