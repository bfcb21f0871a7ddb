"""Measured result of the pretraining issue: MoCo v2, ResNet-18, 64 px, on imagenette-96 (CPU budget).

Pretrains with ``mocobench.pretrain`` (kNN monitor every 5 epochs: k=200, t=0.1, bank = train,
scored = val), then scores the same architecture at random initialisation with the same kNN code,
and writes ``benchmarks/results/pretrain_imagenette96.{json,md}``. Resumable: re-running continues
the pretraining from ``<out>/checkpoint_last.pth``.

    python benchmarks/pretrain_imagenette.py --data ../shared/data/imagenette-96 --out runs/bench-pretrain
"""

from __future__ import annotations

import json
import logging
import statistics
import sys
import time
from pathlib import Path

import click
import torch

from mocobench.checkpoint import load_backbone
from mocobench.evaluators.knn import KnnEvaluator
from mocobench.log import setup_logging
from mocobench.metrics import read_metrics
from mocobench.pretrain.config import PretrainConfig
from mocobench.pretrain.engine import pretrain

logger = logging.getLogger("bench")
RESULTS = Path(__file__).parent / "results"


@click.command()
@click.option("--data", default="../shared/data/imagenette-96", show_default=True)
@click.option("--out", default="runs/bench-pretrain", show_default=True)
@click.option("--epochs", default=45, show_default=True)
@click.option("--moco-m", default=0.99, show_default=True)
@click.option("--lr", default=0.03, show_default=True, help="Per 256 images (scaled to the batch).")
@click.option("--workers", default=1, show_default=True)
@click.option("--tag", default="", help="Suffix of the results files (to keep several settings).")
def main(data: str, out: str, epochs: int, moco_m: float, lr: float, workers: int, tag: str) -> None:
    setup_logging()
    cfg = PretrainConfig(
        data=f"{data}/train", out=out, method="moco_v2", arch="resnet18", epochs=epochs, batch_size=64,
        lr=lr, image_size=64, queue_size=4096, moco_m=moco_m, workers=workers, resume="auto",
        knn_train=f"{data}/train", knn_val=f"{data}/val", knn_k=200, knn_t=0.1, knn_every=5,
        save_every=5, log_every=10,
    )
    t0 = time.perf_counter()
    ckpt = pretrain(cfg)
    wall = time.perf_counter() - t0
    records = read_metrics(Path(out) / "metrics.jsonl")
    steps = [r for r in records if r["kind"] == "step"]
    epochs_rec = [r for r in records if r["kind"] == "epoch"]

    monitor = KnnEvaluator(cfg.knn_train, cfg.knn_val, cfg.image_size, 200, 0.1, 256, workers)
    scores = {}
    for name in ("random", str(ckpt)):
        net, info = load_backbone(name, arch="resnet18", seed=0)
        scores[info.method] = monitor.evaluate(net, torch.device("cpu"))
    res = {
        "command": " ".join(["python", *sys.argv]),
        "config": cfg.resolved().to_dict(),
        "pretrain_wall_s_this_invocation": round(wall, 1),
        "pretrain_epoch_time_s_total": round(sum(r["time_s"] for r in epochs_rec), 1),
        "images_per_s_median_step": round(statistics.median(r["images_per_s"] for r in steps), 1),
        "images_per_s_median_epoch": round(statistics.median(r["images_per_s"] for r in epochs_rec), 1),
        "knn_curve": [
            {"epoch": r["epoch"] + 1, "knn_top1": round(r["knn_top1"], 2), "loss": round(r["loss"], 3),
             "acc1": round(r["acc1"], 2)}
            for r in epochs_rec if "knn_top1" in r
        ],
        "knn_final": {k: {m: round(v, 2) for m, v in s.items()} for k, s in scores.items()},
        "threads": torch.get_num_threads(),
        "torch": str(torch.__version__),
    }
    RESULTS.mkdir(exist_ok=True)
    name = "pretrain_imagenette96" + (f"_{tag}" if tag else "")
    (RESULTS / f"{name}.json").write_text(json.dumps(res, indent=2) + "\n")
    moco, rnd = scores["moco_v2"], scores["random"]
    md = [
        "| backbone | kNN top-1 | kNN top-5 |",
        "|---|---|---|",
        f"| random init (ResNet-18) | {rnd['top1']:.1f} | {rnd['top5']:.1f} |",
        f"| MoCo v2, {epochs} epochs, lr {lr} per 256, m {moco_m} | {moco['top1']:.1f} | {moco['top5']:.1f} |",
    ]
    (RESULTS / f"{name}.md").write_text("\n".join(md) + "\n")
    logger.info("results:\n%s", "\n".join(md))


if __name__ == "__main__":
    main()
