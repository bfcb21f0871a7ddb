"""One logging set-up for every command: INFO on rank 0, WARNING on the other ranks."""

from __future__ import annotations

import logging
import sys
from pathlib import Path


def remove_handlers(logger: logging.Logger) -> None:
    """Detach and close every handler of ``logger`` (before configuring it again)."""
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()


def setup_logging(rank: int = 0, log_file: Path | None = None, level: int = logging.INFO) -> None:
    """Configure the root logger once per process; optionally mirror rank 0 into ``log_file``."""
    root = logging.getLogger()
    remove_handlers(root)
    fmt = logging.Formatter(
        f"%(asctime)s [%(levelname)s] {'' if rank == 0 else f'[rank{rank}] '}%(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(fmt)
    root.addHandler(handler)
    if log_file is not None and rank == 0:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(log_file)
        fh.setFormatter(fmt)
        root.addHandler(fh)
    root.setLevel(level if rank == 0 else logging.WARNING)
