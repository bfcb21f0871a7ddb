"""The peer at equal wall clock (issue 20): lightly 1.6.0's MoCo v2 pretrained on the same images, resolution and
budget as a mocobench run, scored by the same kNN.

The peer is :class:`pretrain_step.Peer` (lightly's documented parts: ``MoCoProjectionHead``, ``update_momentum``,
``NTXentLoss`` with a K-entry memory bank; ResNet-18, batch 64, K 4096, m 0.99, SGD lr 0.03 x 64/256, momentum 0.9,
wd 1e-4, cosine over the epochs as in lightly's examples) fed by lightly's ``MoCoV2Transform`` through an
ImageFolder loader, under ``--amp``. It trains for ``--epochs`` and stops early when ``--budget-s`` (the mocobench
run's wall clock) is spent; the backbone is then scored by :class:`~mocobench.evaluators.knn.KnnEvaluator`
(bank = train, scored = val, k 200, t 0.1), the kNN of ``small_data_levers.py``. Rows are added to
``benchmarks/results/small_data_levers_<tag>.{json,md}`` beside mocobench's, so the table compares them.
Needs lightly: run it with ``.venv-bench/bin/python`` (``bash benchmarks/setup_bench_env.sh``).

    .venv-bench/bin/python benchmarks/peer_pretrain.py --data ../shared/data/imagenette-96 --tag imagenette96_10ep \
        --epochs 10 --budget-s 760 --temperature 0.1
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from pathlib import Path

import click
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from pretrain_step import Peer, Setting, peer_batches  # noqa: E402
from small_data_levers import write_table  # noqa: E402

from mocobench.datasets import list_images  # noqa: E402
from mocobench.evaluators.knn import KnnEvaluator  # noqa: E402
from mocobench.log import setup_logging  # noqa: E402

logger = logging.getLogger("bench")
RESULTS = Path(__file__).parent / "results"


class _Backbone(nn.Module):
    """The peer's backbone as the kNN evaluator calls it (``resnet_features``: conv1 ... layer4, then pooled)."""

    def __init__(self, seq: nn.Sequential) -> None:
        super().__init__()
        self.conv1, self.bn1, self.relu, self.maxpool, self.layer1, self.layer2, self.layer3, self.layer4 = seq[:8]
        self.avgpool, self.fc = seq[8], nn.Identity()


@click.command()
@click.option("--data", required=True, help="ImageFolder root with train/ and val/.")
@click.option("--tag", required=True, help="small_data_levers_<tag> results to add the row to.")
@click.option("--epochs", default=10, show_default=True, type=click.IntRange(min=1))
@click.option("--budget-s", default=0.0, show_default=True, type=click.FloatRange(min=0), help="0: no limit.")
@click.option("--temperature", default=0.2, show_default=True, type=click.FloatRange(0, min_open=True))
@click.option("--amp", default="bf16", show_default=True, type=click.Choice(["none", "bf16"]))
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=0))
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0))
def main(data, tag, epochs, budget_s, temperature, amp, workers, seed) -> None:
    setup_logging()
    s = Setting(size=64)
    torch.manual_seed(seed)
    peer = Peer(s, amp)
    peer.criterion.temperature = temperature
    steps_per_epoch = len(list_images(f"{data}/train", labelled=True)) // s.batch
    batches = peer_batches(f"{data}/train", s, workers)
    t0, done, losses = time.perf_counter(), 0, []
    for epoch in range(epochs):
        lr = s.lr * 0.5 * (1 + math.cos(math.pi * epoch / epochs))  # cosine per epoch
        for group in peer.opt.param_groups:
            group["lr"] = lr
        for _ in range(steps_per_epoch):
            losses.append(peer.step(*next(batches)))
        done = epoch + 1
        spent = time.perf_counter() - t0
        logger.info("peer epoch %d/%d: loss %.3f, %.0f s", done, epochs, sum(losses[-steps_per_epoch:]) / steps_per_epoch,
                    spent)
        if budget_s and spent >= budget_s:
            break
    seconds = time.perf_counter() - t0
    monitor = KnnEvaluator(f"{data}/train", f"{data}/val", s.size, 200, 0.1, 256, workers)
    top1 = round(monitor.evaluate(_Backbone(peer.backbone), torch.device("cpu"))["top1"], 2)
    results_file = RESULTS / f"small_data_levers_{tag}.json"
    res = json.loads(results_file.read_text()) if results_file.exists() else {"rows": {}}
    name = f"lightly_t{temperature:g}"
    row = res["rows"].setdefault(name, {"setting": f"lightly 1.6.0 MoCo v2, T {temperature:g}, {amp}, {done} of "
                                                   f"{epochs} epochs (budget {budget_s:.0f} s)", "knn": {}, "time_s": {}})
    row["knn"][str(seed)], row["time_s"][str(seed)] = top1, round(seconds, 1)
    row["command"] = " ".join(["python", *sys.argv])
    results_file.write_text(json.dumps(res, indent=2) + "\n")
    write_table(res, tag)
    logger.info("%s seed %d: kNN %.2f after %d epochs in %.0f s (final epoch loss %.3f)", name, seed, top1, done,
                seconds, sum(losses[-steps_per_epoch:]) / steps_per_epoch)


if __name__ == "__main__":
    main()
