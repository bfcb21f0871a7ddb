"""``metrics.jsonl``: one JSON object per line, appended as training goes (after DINO's log.txt)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mocobench.atomic import atomic_write_text


class MetricsWriter:
    """Append-only JSON-lines file; a no-op on non-zero ranks (``enabled=False``)."""

    def __init__(self, path: Path, enabled: bool = True) -> None:
        self.path = path
        self.enabled = enabled

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def truncate_after(self, global_step: int) -> None:
        """Drop records past ``global_step`` (written after the checkpoint a run resumes from)."""
        if not self.enabled or not self.path.exists():
            return
        keep = [line for line in self.path.read_text().splitlines() if line.strip()]
        keep = [line for line in keep if json.loads(line).get("global_step", 0) <= global_step]
        atomic_write_text(self.path, "".join(line + "\n" for line in keep))


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All records of a ``metrics.jsonl`` file."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
