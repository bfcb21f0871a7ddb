"""Helpers shared by the tests (imported as ``helpers``; pytest puts tests/ on sys.path)."""

from __future__ import annotations

import socket

from click.testing import CliRunner

from mocobench.cli import main

#: Options of a CPU run that takes a second or two on the synthetic set (4 steps per epoch).
TINY = [
    "--arch", "resnet18", "--image-size", "32", "--batch-size", "16", "--queue-size", "64",
    "--workers", "0", "--log-every", "1", "--bn-splits", "2",
]


def run_cli(args: list[str], expect_ok: bool = True):
    """Run ``mocobench ARGS`` in-process; assert the exit code and return the result."""
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    if expect_ok:
        assert result.exit_code == 0, result.output
    else:
        assert result.exit_code != 0, result.output
    return result


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (torchrun's --master_port, a process group's init address)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tb_scalars(folder) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the TensorBoard event files in ``folder``: {tag: [(step, value), ...]}, in write order."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
