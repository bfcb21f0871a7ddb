"""Learning-rate schedules of the official ``main_moco.py`` (``adjust_learning_rate``), set per epoch."""

from __future__ import annotations

import math
from collections.abc import Sequence


def lr_at_epoch(base_lr: float, epoch: int, epochs: int, schedule: str, milestones: Sequence[int] = ()) -> float:
    """Cosine: ``base * 0.5 * (1 + cos(pi * epoch / epochs))`` (v2); step: x0.1 at each milestone passed (v1)."""
    if schedule == "cosine":
        return base_lr * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))
    if schedule == "step":
        return base_lr * 0.1 ** sum(epoch >= m for m in milestones)
    raise ValueError(f"unknown lr schedule {schedule!r}; expected 'step' or 'cosine'")
