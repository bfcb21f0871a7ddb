"""``metrics.jsonl``: one JSON object per line, appended as training goes (after DINO's log.txt), mirrored to
TensorBoard event files in ``tensorboard/`` beside it (what users of detectron2 and lightly open first)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from mocobench.atomic import atomic_write_text

logger = logging.getLogger(__name__)
#: Record keys that place a record rather than measure something (the step axis, the record's kind).
POSITION_KEYS = frozenset({"kind", "epoch", "step", "global_step"})


class MetricsWriter:
    """Append-only JSON-lines file; a no-op on non-zero ranks (``enabled=False``).

    With ``tensorboard``, every numeric field of a record is also written as the scalar ``<kind>/<key>`` at step
    ``global_step`` to ``<folder>/tensorboard`` (``torch.utils.tensorboard``; the ``tensorboard`` package comes with
    detectron2; without it a warning is logged once and only the JSON lines are written). After a resume,
    :meth:`truncate_after` also makes TensorBoard drop the events past the resumed step."""

    def __init__(self, path: Path, enabled: bool = True, tensorboard: bool = False) -> None:
        self.path = path
        self.enabled = enabled
        self.tensorboard = tensorboard and enabled
        self._tb = None
        self._purge_step: int | None = None

    def _board(self):
        if self._tb is None and self.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                logger.warning("TensorBoard files are not written: %s (pip install tensorboard)", e)
                self.tensorboard = False
                return None
            self._tb = SummaryWriter(log_dir=str(self.path.parent / "tensorboard"), purge_step=self._purge_step)
        return self._tb

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        board = self._board()
        if board is not None and "global_step" in record:
            for key, value in record.items():
                if key not in POSITION_KEYS and isinstance(value, (int, float)) and not isinstance(value, bool):
                    board.add_scalar(f"{record.get('kind', 'metrics')}/{key}", value, record["global_step"])
            board.flush()

    def truncate_after(self, global_step: int) -> None:
        """Drop records past ``global_step`` (written after the checkpoint a run resumes from)."""
        self._purge_step = global_step + 1
        if not self.enabled or not self.path.exists():
            return
        keep = [line for line in self.path.read_text().splitlines() if line.strip()]
        keep = [line for line in keep if json.loads(line).get("global_step", 0) <= global_step]
        atomic_write_text(self.path, "".join(line + "\n" for line in keep))

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All records of a ``metrics.jsonl`` file."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
