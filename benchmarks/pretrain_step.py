"""Pretraining throughput: mocobench against lightly 1.6.0's MoCo v2, in one process, A B A B.

The peer is built from lightly's documented parts (``MoCoProjectionHead``, ``update_momentum``,
``NTXentLoss`` with a 4096-entry memory bank, ``MoCoV2Transform``), as in its MoCo example. Both run
MoCo v2 on a ResNet-18 at 64 px, batch 64, K 4096, m 0.99, SGD lr 0.0075. Two measurements:

* ``model``: the training step alone on pre-made tensors (the same random batch every step);
* ``pipeline``: the step fed by each implementation's own input pipeline over an ImageFolder
  (``../shared/data/imagenette-sub/train``), with the same number of loader workers.

Variants take turns (round-robin, ``--rounds`` times); each turn times ``--steps`` steps after 2
warm-up steps. Reported: images/s median, min and max over the turns, and the ratio of medians to the
peer. Writes ``benchmarks/results/pretrain_step.{json,md}``. Needs lightly: run it with
``.venv-bench/bin/python`` (``bash benchmarks/setup_bench_env.sh``).

    .venv-bench/bin/python benchmarks/pretrain_step.py --rounds 3 --steps 15
"""

from __future__ import annotations

import copy
import json
import logging
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import click
import torch
import torchvision
from torch import nn

from mocobench.datasets import EpochBatchSampler, SeededImageDataset, list_images
from mocobench.log import setup_logging
from mocobench.pretrain.augment import TwoCrops, moco_transform
from mocobench.pretrain.config import PretrainConfig
from mocobench.pretrain.engine import build_model, train_step

logger = logging.getLogger("bench")
RESULTS = Path(__file__).parent / "results"
BATCH, SIZE, K, M, LR = 64, 64, 4096, 0.99, 0.03 * 64 / 256


class Peer:
    """lightly 1.6.0 MoCo v2 (its documented example), one training step per call."""

    def __init__(self) -> None:
        from lightly.loss import NTXentLoss
        from lightly.models.modules import MoCoProjectionHead
        from lightly.models.utils import deactivate_requires_grad, update_momentum

        self.update_momentum = update_momentum
        resnet = torchvision.models.resnet18()
        self.backbone = nn.Sequential(*list(resnet.children())[:-1])
        self.head = MoCoProjectionHead(512, 512, 128)
        self.backbone_m, self.head_m = copy.deepcopy(self.backbone), copy.deepcopy(self.head)
        deactivate_requires_grad(self.backbone_m)
        deactivate_requires_grad(self.head_m)
        self.criterion = NTXentLoss(temperature=0.2, memory_bank_size=(K, 128))
        params = [*self.backbone.parameters(), *self.head.parameters()]
        self.opt = torch.optim.SGD(params, lr=LR, momentum=0.9, weight_decay=1e-4)

    def step(self, x_q: torch.Tensor, x_k: torch.Tensor) -> float:
        self.update_momentum(self.backbone, self.backbone_m, m=M)
        self.update_momentum(self.head, self.head_m, m=M)
        q = self.head(self.backbone(x_q).flatten(start_dim=1))
        k = self.head_m(self.backbone_m(x_k).flatten(start_dim=1)).detach()
        loss = self.criterion(q, k)
        loss.backward()
        self.opt.step()
        self.opt.zero_grad()
        return loss.item()


class Ours:
    """mocobench's MoCo v2 step (``engine.train_step``), default settings or bf16 + channels_last."""

    def __init__(self, amp: str = "none", channels_last: bool = False) -> None:
        cfg = PretrainConfig(data="-", out="-", arch="resnet18", batch_size=BATCH, image_size=SIZE, queue_size=K,
                             moco_m=M, amp=amp, channels_last=channels_last).resolved()
        torch.manual_seed(0)
        self.method = build_model(cfg, world=1)
        self.fmt = torch.channels_last if channels_last else torch.contiguous_format
        if channels_last:
            self.method = self.method.to(memory_format=torch.channels_last)
        params = [p for p in self.method.parameters() if p.requires_grad]
        self.opt = torch.optim.SGD(params, lr=cfg.scaled_lr(), momentum=0.9, weight_decay=1e-4)
        self.scaler = torch.amp.GradScaler("cpu", enabled=False)
        self.gen = torch.Generator().manual_seed(1)
        self.amp = amp

    def step(self, x_q: torch.Tensor, x_k: torch.Tensor) -> float:
        inputs = (x_q.contiguous(memory_format=self.fmt), x_k.contiguous(memory_format=self.fmt))
        return train_step(self.method, self.method, inputs, self.opt, self.scaler, self.gen, self.amp)[0]


def peer_batches(root: str, workers: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    from lightly.transforms import MoCoV2Transform

    ds = torchvision.datasets.ImageFolder(root, transform=MoCoV2Transform(input_size=SIZE))
    loader = torch.utils.data.DataLoader(ds, batch_size=BATCH, shuffle=True, drop_last=True, num_workers=workers,
                                         persistent_workers=workers > 0)
    while True:
        for (x_q, x_k), _ in loader:
            yield x_q, x_k


def our_batches(root: str, workers: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    images = list_images(root)
    sampler = EpochBatchSampler(len(images), BATCH, seed=0)
    loader = torch.utils.data.DataLoader(SeededImageDataset(images, TwoCrops(moco_transform("v2", SIZE))),
                                         batch_sampler=sampler, num_workers=workers, persistent_workers=workers > 0)
    epoch = 0
    while True:
        sampler.set_epoch(epoch)
        for (x_q, x_k), _ in loader:
            yield x_q, x_k
        epoch += 1


def timed(step: Callable, batches: Iterator, steps: int) -> float:
    """images/s over ``steps`` steps after 2 warm-up steps (data loading included when ``batches`` loads)."""
    for _ in range(2):
        step(*next(batches))
    t0 = time.perf_counter()
    for _ in range(steps):
        step(*next(batches))
    return steps * BATCH / (time.perf_counter() - t0)


def stats(xs: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(xs), 1), "min": round(min(xs), 1), "max": round(max(xs), 1),
            "runs": [round(x, 1) for x in xs]}


@click.command()
@click.option("--data", default="../shared/data/imagenette-sub/train", show_default=True)
@click.option("--rounds", default=3, show_default=True)
@click.option("--steps", default=15, show_default=True)
@click.option("--workers", default=1, show_default=True)
@click.option("--only", type=click.Choice(["all", "model", "pipeline"]), default="all", show_default=True)
def main(data: str, rounds: int, steps: int, workers: int, only: str) -> None:
    setup_logging()
    g = torch.Generator().manual_seed(0)
    fixed = (torch.randn(BATCH, 3, SIZE, SIZE, generator=g), torch.randn(BATCH, 3, SIZE, SIZE, generator=g))

    def repeat():
        while True:
            yield fixed

    variants = {"lightly fp32": Peer(), "mocobench fp32": Ours(), "mocobench bf16+channels_last": Ours("bf16", True)}
    sources = {"lightly fp32": peer_batches, "mocobench fp32": our_batches, "mocobench bf16+channels_last": our_batches}
    results: dict[str, dict] = {}
    for mode in ("model", "pipeline"):
        if only not in ("all", mode):
            continue
        feeds = {name: repeat() if mode == "model" else sources[name](data, workers) for name in variants}
        runs: dict[str, list[float]] = {name: [] for name in variants}
        for r in range(rounds):
            for name, impl in variants.items():
                runs[name].append(timed(impl.step, feeds[name], steps))
                logger.info("%s round %d: %s %.1f images/s", mode, r + 1, name, runs[name][-1])
        peer = statistics.median(runs["lightly fp32"])
        results[mode] = {name: {**stats(xs), "ratio_to_peer": round(statistics.median(xs) / peer, 2)}
                         for name, xs in runs.items()}
    out = {"command": " ".join(["python", *sys.argv]), "threads": torch.get_num_threads(), "torch": torch.__version__,
           "settings": {"arch": "resnet18", "image_size": SIZE, "batch": BATCH, "K": K, "m": M, "workers": workers,
                        "rounds": rounds, "steps": steps, "data": data}, "results": results}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "pretrain_step.json").write_text(json.dumps(out, indent=2) + "\n")
    md = ["| measurement | implementation | images/s median (min–max) | ratio to lightly |", "|---|---|---|---|"]
    for mode, rows in results.items():
        md += [f"| {mode} | {n} | {r['median']} ({r['min']}–{r['max']}) | {r['ratio_to_peer']} |" for n, r in rows.items()]
    (RESULTS / "pretrain_step.md").write_text("\n".join(md) + "\n")
    logger.info("results:\n%s", "\n".join(md))


if __name__ == "__main__":
    main()
