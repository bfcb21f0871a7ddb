"""Shared fixtures: the real data folder (``MOCOBENCH_DATA``, default ``../shared/data``), a tiny
synthetic ImageFolder, and a helper that runs the CLI in-process."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from mocobench.synth import SynthSpec, write_synthetic_classification

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MOCOBENCH_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not DATA.is_dir():
        pytest.skip(f"real test data not found at {DATA} (set MOCOBENCH_DATA)")
    return DATA


@pytest.fixture(scope="session")
def synth(tmp_path_factory) -> Path:
    """4 classes x (16 train + 8 val) images of 32 px."""
    root = tmp_path_factory.mktemp("synth")
    return write_synthetic_classification(root / "data", SynthSpec(4, 16, 8, 32, 0))


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)
