"""Two small parts of the MoCo step, each against the usual alternative, A B A B in one process.

* momentum update of the key encoder: mocobench's ``momentum_update_`` (two fused ``_foreach`` calls)
  against the official builder's Python loop over parameters (``_momentum_update_key_encoder``:
  ``param_k.data = param_k.data * m + param_q.data * (1 - m)``), and lightly 1.6.0's
  ``update_momentum`` when lightly is installed (``.venv-bench``);
* queue update: mocobench's in-place ring write (``enqueue_``) against a shifting FIFO that builds a
  new queue each step (``torch.cat([keys.T, queue[:, :-N]], 1)``).

Reported: the median time of one call (µs) over ``--repeats`` alternating turns of ``--calls`` calls,
min–max, and the ratio to mocobench. Writes ``benchmarks/results/<name>.{json,md}``.

    .venv-bench/bin/python benchmarks/step_parts.py
"""

from __future__ import annotations

import json
import logging
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import click
import torch
import torchvision
from torch import nn

from mocobench.log import setup_logging
from mocobench.pretrain.moco import enqueue_, momentum_update_

logger = logging.getLogger("bench")
RESULTS = Path(__file__).parent / "results"


def official_loop(enc_k: nn.Module, enc_q: nn.Module, m: float) -> None:
    """The official ``moco/builder.py`` loop."""
    for param_q, param_k in zip(enc_q.parameters(), enc_k.parameters(), strict=True):
        param_k.data = param_k.data * m + param_q.data * (1.0 - m)


def shifting_fifo(queue: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """A FIFO without a pointer: the new keys in front, the oldest N dropped (a new tensor)."""
    return torch.cat([keys.T, queue[:, : -keys.shape[0]]], dim=1)


def encoder(arch: str) -> nn.Module:
    """A ResNet with MoCo v2's MLP head (Shape: (N, 3, H, W) -> (N, 128))."""
    net = getattr(torchvision.models, arch)(num_classes=128)
    net.fc = nn.Sequential(nn.Linear(net.fc.in_features, net.fc.in_features), nn.ReLU(), net.fc)
    return net


def momentum_fns(arch: str, update_momentum: Callable | None) -> dict[str, Callable[[], None]]:
    torch.manual_seed(0)
    enc_q, enc_k = encoder(arch), encoder(arch)
    params_q, params_k = list(enc_q.parameters()), list(enc_k.parameters())
    fns = {"mocobench": lambda: momentum_update_(params_k, params_q, 0.999),
           "official loop": lambda: official_loop(enc_k, enc_q, 0.999)}
    if update_momentum is not None:
        fns["lightly update_momentum"] = lambda: update_momentum(enc_q, enc_k, 0.999)
    return fns


def queue_fns(k: int, batch: int) -> dict[str, Callable[[], None]]:
    queue, keys = torch.randn(128, k), torch.randn(batch, 128)
    ptr = torch.zeros(1, dtype=torch.long)
    state = {"fifo": queue.clone()}

    def fifo() -> None:
        state["fifo"] = shifting_fifo(state["fifo"], keys)

    return {"mocobench": lambda: enqueue_(queue, ptr, keys), "shifting FIFO": fifo}


def per_call_us(fn: Callable[[], None], calls: int) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) / calls * 1e6


def compare(fns: dict[str, Callable[[], None]], repeats: int, calls: int) -> dict[str, dict]:
    times: dict[str, list[float]] = {n: [] for n in fns}
    for _ in range(repeats):
        for n, fn in fns.items():
            times[n].append(per_call_us(fn, calls))
    ours = statistics.median(times["mocobench"])
    return {n: {"median_us": round(statistics.median(t), 1), "min_us": round(min(t), 1), "max_us": round(max(t), 1),
                "ratio_to_mocobench": round(statistics.median(t) / ours, 2)} for n, t in times.items()}


@click.command()
@click.option("--archs", default="resnet18,resnet50", show_default=True)
@click.option("--queues", default="4096,65536", show_default=True)
@click.option("--batch", default=256, show_default=True, help="Keys written per queue update.")
@click.option("--repeats", default=7, show_default=True)
@click.option("--calls", default=20, show_default=True)
@click.option("--name", default="step_parts", show_default=True, help="Results file stem in benchmarks/results/.")
def main(archs: str, queues: str, batch: int, repeats: int, calls: int, name: str) -> None:
    setup_logging()
    try:
        from lightly.models.utils import update_momentum
    except ImportError:
        update_momentum = None
        logger.info("lightly is not installed: its update_momentum is left out (run with .venv-bench)")
    results: dict[str, dict] = {}
    for arch in archs.split(","):
        with torch.no_grad():
            results[f"momentum update, {arch} + MLP head"] = compare(momentum_fns(arch, update_momentum), repeats, calls)
    for k in (int(q) for q in queues.split(",")):
        results[f"queue update, K {k}, {batch} keys"] = compare(queue_fns(k, batch), repeats, calls)
    hardware = f"{torch.get_num_threads()} CPU threads"
    out = {"command": " ".join(["python", *sys.argv]), "hardware": hardware, "torch": torch.__version__,
           "results": results}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(out, indent=2) + "\n")
    md = [f"{hardware}, torch {torch.__version__}; one call, median of {repeats} turns of {calls} calls.", "",
          "| part | implementation | µs per call, median (min–max) | ratio to mocobench |", "|---|---|---|---|"]
    for part, rows in results.items():
        md += [f"| {part} | {n} | {r['median_us']} ({r['min_us']}–{r['max_us']}) | {r['ratio_to_mocobench']} |"
               for n, r in rows.items()]
    (RESULTS / f"{name}.md").write_text("\n".join(md) + "\n")
    logger.info("results:\n%s", "\n".join(md))


if __name__ == "__main__":
    main()
