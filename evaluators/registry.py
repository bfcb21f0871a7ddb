"""The one task registry: each evaluator module registers ``name -> (config class, run function)``.

The CLI's ``--task`` choices, the suite and the parametrised tests all read :func:`tasks`. Evaluator
modules are imported on first use; detection modules keep detectron2 imports inside their functions,
so importing mocobench never imports detectron2.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from mocobench.checkpoint import BackboneInfo

#: Modules whose import registers tasks.
EVALUATOR_MODULES = ("mocobench.evaluators.knn",)


class TaskError(ValueError):
    """An unknown task or a bad task option; the message lists the valid values."""


@dataclass(frozen=True)
class TaskContext:
    """What a task run gets besides its config: the backbone (fc = Identity) and where to write."""

    backbone: nn.Module
    info: BackboneInfo
    out: Path


@dataclass(frozen=True)
class Task:
    name: str
    config_cls: type
    run: Callable[[Any, TaskContext], dict[str, float]]
    summary: str


_REGISTRY: dict[str, Task] = {}


def register(name: str, config_cls: type, summary: str) -> Callable:
    """Decorator: ``@register("knn", KnnConfig, "...")`` on ``run(cfg, ctx) -> metrics``."""

    def deco(fn):
        if name in _REGISTRY:
            raise TaskError(f"task {name!r} is registered twice")
        _REGISTRY[name] = Task(name, config_cls, fn, summary)
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
