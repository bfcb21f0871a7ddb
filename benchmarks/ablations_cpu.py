"""Regenerates ``reports/ablations-cpu/``: the MoCo paper's ablations (arXiv 1911.05722) at CPU scale.

Three sweeps of ``mocobench.sweep`` over one base recipe: MoCo v2 on a ResNet-18, ``cifar10-sub/train``
(5000 images, 32 px), batch 64, K 256 (``--queue``), m 0.99, 15 epochs, kNN monitor (k 200, T 0.1) on
``cifar10-sub/test`` every 5 epochs, one data-loading worker:

* ``negatives``: K in {256, 1024, 4096} for moco_v2 and memory_bank, batch in {32, 64, 128} for
  end_to_end (Fig. 3);
* ``momentum``: m in {0, 0.9, 0.99, 0.999, 0.9999} (the paper's Table 1);
* ``shuffle_bn``: 8 BN splits (the one-process shuffle) against 1 (Fig. A.1).

Each point is then scored by the kNN task (k 200, T 0.07) at the training resolution (32 px, as the MoCo
CIFAR demo evaluates), and a randomly initialised ResNet-18 is scored the same way as the floor.

The base point occurs in all three sweeps (m 0.99 = 8 BN splits = moco_v2 at the base K). It is trained
once: its pretraining folder is copied into the other sweeps before they start, and only the kNN task
runs again there (under the other sweep's label). Each sweep's report goes to ``<out>/<sweep>/``; the
mechanism cost tables (``benchmarks/mechanism_cost.py``, CPU and GPU) are copied into ``<out>/cost*.md``;
the reading of the results against the paper is ``<out>/README.md`` (written by hand). Every point
resumes.

    python benchmarks/ablations_cpu.py                     # K 256 base -> reports/ablations-cpu/
    python benchmarks/ablations_cpu.py --queue 4096 --sweep momentum --sweep shuffle_bn \
        --runs runs/abl-cpu-k4096 --out reports/ablations-cpu/k4096   # the first base, K/N = 0.82
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import click

from mocobench.log import setup_logging
from mocobench.pretrain.config import PretrainConfig
from mocobench.report import write_report
from mocobench.results import RESULTS_FILE
from mocobench.sweep import SweepError, point_label, run_sweep
from mocobench.transfer.run import run_transfer

logger = logging.getLogger("bench")
RESULTS = Path(__file__).parent / "results"
ORDER = ("negatives", "momentum", "shuffle_bn")


def base_point(sweep: str, queue: int) -> dict:
    """The base recipe's point in ``sweep`` (the same run in every sweep)."""
    return {"momentum": {"moco_m": 0.99}, "shuffle_bn": {"bn_splits": 8},
            "negatives": {"method": "moco_v2", "queue_size": queue}}[sweep]


def base_config(data: Path, epochs: int, workers: int, queue: int = 256) -> PretrainConfig:
    return PretrainConfig(
        data=f"{data}/cifar10-sub/train", out="", method="moco_v2", arch="resnet18", batch_size=64, lr=0.03,
        image_size=32, queue_size=queue, moco_m=0.99, epochs=epochs, workers=workers,
        knn_train=f"{data}/cifar10-sub/train", knn_val=f"{data}/cifar10-sub/test", knn_k=200, knn_t=0.1,
        knn_every=5, save_every=epochs, log_every=10,
    )


def share_base_point(runs: Path, sweep: str, queue: int) -> None:
    """Copy the base point's finished pretraining (not its kNN task) from whichever sweep has it."""
    dst = runs / sweep / point_label(base_point(sweep, queue))
    sources = [runs / s / point_label(base_point(s, queue)) for s in ORDER if s != sweep]
    src = next((p for p in sources if (p / "checkpoint_last.pth").exists()), None)
    if dst.exists() or src is None:
        return
    logger.info("%s: reusing the base point %s", dst, src)
    tmp = dst.with_name(dst.name + ".copying")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp, ignore=shutil.ignore_patterns("knn", "report"))
    tmp.rename(dst)


@click.command()
@click.option("--data", default="../shared/data", show_default=True, type=click.Path(path_type=Path))
@click.option("--runs", default="runs/abl-cpu", show_default=True, type=click.Path(path_type=Path))
@click.option("--out", default="reports/ablations-cpu", show_default=True, type=click.Path(path_type=Path))
@click.option("--epochs", default=15, show_default=True)
@click.option("--queue", default=256, show_default=True, help="K of the base recipe.")
@click.option("--workers", default=1, show_default=True)
@click.option("--sweep", "sweeps", multiple=True, type=click.Choice(ORDER), help="Default: all three, in this order.")
def main(data: Path, runs: Path, out: Path, epochs: int, queue: int, workers: int, sweeps: tuple[str, ...]) -> None:
    setup_logging()
    base = base_config(data, epochs, workers, queue)
    knn_data = f"{data}/cifar10-sub"
    knn_set = ("image_size=32", f"workers={workers}")
    if not (runs / "random" / "knn" / RESULTS_FILE).exists():
        run_transfer("knn", "random", runs / "random" / "knn", (f"data={knn_data}", *knn_set), arch="resnet18",
                     pretraining="random")
    for sweep in sweeps or ORDER:
        t0 = time.perf_counter()
        share_base_point(runs, sweep, queue)
        try:
            run_sweep(sweep, base, runs / sweep, knn_data, knn_set)
        except SweepError as e:  # failed points are findings (m = 0); report the rest
            logger.warning("%s", e)
        logger.info("%s: %.0f s in this invocation", sweep, time.perf_counter() - t0)
        report = write_report([runs / sweep, runs / "random"], out / sweep, baseline=point_label(base_point(sweep, queue)),
                              title=f"ablations-cpu: {sweep} (MoCo v2, ResNet-18, cifar10-sub 32 px, {epochs} epochs, "
                                    f"base K {queue})")
        logger.info("report: %s", report.out / "report.md")
    out.mkdir(parents=True, exist_ok=True)
    for name in ("mechanism_cost", "mechanism_cost_gpu"):  # benchmarks/mechanism_cost.py, CPU and a lent GPU
        if "negatives" in (sweeps or ORDER) and (RESULTS / f"{name}.md").exists():
            shutil.copyfile(RESULTS / f"{name}.md", out / f"{name.replace('mechanism_', '')}.md")


if __name__ == "__main__":
    main()
