"""How the MoCo step cost grows with the queue size K and the batch size (model step, pre-made tensors).

ResNet-18, 64 px, MoCo v2, CPU. For each setting the step is timed ``--steps`` times after 2 warm-up
steps, settings taking turns for ``--rounds`` rounds; the time of the contrastive term alone (the
N x K negative logits, their softmax and gradient) is measured the same way, to say which term dominates.
Writes ``benchmarks/results/pretrain_scaling.{json,md}``.

    python benchmarks/pretrain_scaling.py
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import click
import torch
import torch.nn.functional as F

from mocobench.pretrain.config import PretrainConfig
from mocobench.pretrain.engine import build_model, train_step
from mocobench.pretrain.moco import contrastive_logits

RESULTS = Path(__file__).parent / "results"


def step_timer(batch: int, k: int):
    cfg = PretrainConfig(data="-", out="-", arch="resnet18", batch_size=batch, image_size=64, queue_size=k,
                         moco_m=0.99).resolved()
    torch.manual_seed(0)
    method = build_model(cfg, world=1)
    opt = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    scaler, gen = torch.amp.GradScaler("cpu", enabled=False), torch.Generator()
    x = (torch.randn(batch, 3, 64, 64), torch.randn(batch, 3, 64, 64))
    return lambda: train_step(method, method, x, opt, scaler, gen)


def loss_timer(batch: int, k: int):
    q = F.normalize(torch.randn(batch, 128), dim=1).requires_grad_()
    key, queue = F.normalize(torch.randn(batch, 128), dim=1), F.normalize(torch.randn(128, k), dim=0)

    def run():
        logits, labels = contrastive_logits(q, key, queue, 0.2)
        F.cross_entropy(logits, labels).backward()
    return run


def seconds(fn, steps: int) -> float:
    for _ in range(2):
        fn()
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - t0) / steps


@click.command()
@click.option("--queues", default="4096,16384,65536", show_default=True)
@click.option("--batches", default="32,64,128", show_default=True)
@click.option("--rounds", default=3, show_default=True)
@click.option("--steps", default=5, show_default=True)
def main(queues: str, batches: str, rounds: int, steps: int) -> None:
    settings = [(64, int(k)) for k in queues.split(",")] + [(int(b), 4096) for b in batches.split(",") if int(b) != 64]
    timers = {s: (step_timer(*s), loss_timer(*s)) for s in settings}
    times: dict[tuple[int, int], dict[str, list[float]]] = {s: {"step": [], "contrastive": []} for s in settings}
    for _ in range(rounds):
        for s, (step, loss) in timers.items():
            times[s]["step"].append(seconds(step, steps))
            times[s]["contrastive"].append(seconds(loss, steps))
    rows = []
    for (batch, k), t in sorted(times.items()):
        step_s, loss_s = statistics.median(t["step"]), statistics.median(t["contrastive"])
        rows.append({"batch": batch, "K": k, "step_ms": round(1000 * step_s, 1), "images_per_s": round(batch / step_s, 1),
                     "contrastive_ms": round(1000 * loss_s, 2), "contrastive_share_pct": round(100 * loss_s / step_s, 1)})
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "pretrain_scaling.json").write_text(json.dumps(
        {"command": " ".join(["python", *sys.argv]), "threads": torch.get_num_threads(), "rows": rows}, indent=2) + "\n")
    md = ["| batch | K | step (ms, median) | images/s | contrastive term (ms) | share of the step |", "|---|---|---|---|---|---|"]
    md += [f"| {r['batch']} | {r['K']} | {r['step_ms']} | {r['images_per_s']} | {r['contrastive_ms']} | "
           f"{r['contrastive_share_pct']}% |" for r in rows]
    (RESULTS / "pretrain_scaling.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
