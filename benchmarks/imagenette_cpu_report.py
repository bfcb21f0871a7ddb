"""Regenerates ``reports/imagenette-cpu/``: four pretrainings of ResNet-18 compared on every transfer task.

Pretrainings on ``imagenette-96/train`` (64 px, batch 64, CPU budget): MoCo v2 (the pretraining
benchmark's run, ``benchmarks/pretrain_imagenette.py``: 45 epochs), MoCo v1 and supervised (shorter
budgets, stated in the report), and random initialisation. Then ``mocobench suite`` runs kNN and linear
on imagenette-96, finegrained on flowers102-sub, coco_det on coco-mini and voc_det on voc-from-coco
(detection with the ``cpu-smoke`` preset), and ``mocobench report`` writes the tables and figures.

Every stage resumes: a finished pretraining or task is skipped on a re-run.

    python benchmarks/imagenette_cpu_report.py --data ../shared/data --runs runs --out reports/imagenette-cpu
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

import click

from mocobench.log import setup_logging
from mocobench.pretrain.config import PretrainConfig
from mocobench.pretrain.engine import pretrain
from mocobench.report import write_report
from mocobench.results import read_results
from mocobench.suite import run_suite

logger = logging.getLogger("bench")
RESULTS = Path(__file__).parent / "results"

#: One entry per pretraining: (run folder under --runs, recipe changes). The shared settings are those
#: of benchmarks/pretrain_imagenette.py, whose MoCo v2 run (runs/bench-pretrain) is reused as it is.
PRETRAININGS: dict[str, tuple[str, dict]] = {
    "moco_v2": ("bench-pretrain", {"method": "moco_v2", "epochs": 45, "moco_m": 0.99}),
    # v1 recipe (T 0.07, fc head, v1 augmentation, step lr) on a shorter budget; milestones at the
    # recipe's 120/200 and 160/200 of the epochs.
    "moco_v1": ("imagenette-cpu/moco_v1", {"method": "moco_v1", "epochs": 25, "moco_m": 0.99, "lr_milestones": (15, 20)}),
    # torchvision recipe (lr 0.1 per 256, x0.1 at 30/90 and 60/90 of the epochs); labels make 15 epochs enough.
    "supervised": ("imagenette-cpu/supervised", {"method": "supervised", "epochs": 15, "lr": 0.1, "lr_milestones": (5, 10)}),
}


def pretrain_config(data: Path, runs: Path, name: str, workers: int) -> PretrainConfig:
    folder, changes = PRETRAININGS[name]
    base = dict(
        data=f"{data}/imagenette-96/train", out=str(runs / folder), arch="resnet18", batch_size=64, lr=0.03,
        image_size=64, queue_size=4096, workers=workers, resume="auto",
        knn_train=f"{data}/imagenette-96/train", knn_val=f"{data}/imagenette-96/val", knn_k=200, knn_t=0.1,
        knn_every=5, save_every=5, log_every=10,
    )
    return PretrainConfig(**{**base, **changes})


@click.command()
@click.option("--data", default="../shared/data", show_default=True, type=click.Path(path_type=Path))
@click.option("--runs", default="runs", show_default=True, type=click.Path(path_type=Path))
@click.option("--out", default="reports/imagenette-cpu", show_default=True)
@click.option("--workers", default=1, show_default=True)
@click.option("--only", type=click.Choice(["pretrain", "all"]), default="all", show_default=True)
def main(data: Path, runs: Path, out: str, workers: int, only: str) -> None:
    setup_logging()
    ckpts = [f"{name}={pretrain(pretrain_config(data, runs, name, workers))}" for name in PRETRAININGS]
    if only == "pretrain":
        return
    suite_out = runs / "imagenette-cpu" / "suite"
    t0 = time.perf_counter()
    run_suite([*ckpts, "random"], suite_out, "cpu-small", data_root=data, arch="resnet18")
    logger.info("suite: %.0f s in this invocation", time.perf_counter() - t0)
    report = write_report([suite_out], out, title="imagenette-cpu: ResNet-18 pretrainings on imagenette-96 (64 px, CPU)")
    logger.info("report: %s", report.out / "report.md")
    write_summary(suite_out, report.pivot)


def write_summary(suite_out: Path, table) -> None:
    """``benchmarks/results/imagenette_cpu.{json,md}``: the headline numbers and each task's wall time."""
    times = {}
    for path in sorted(suite_out.glob("*/*/results.json")):
        rec = read_results(path)
        times.setdefault(rec["task"], {})[rec["pretraining"]] = rec["time_s"]
    heads = [("knn", "top1"), ("linear", "top1_best"), ("linear", "top1_final"), ("finegrained", "mean_per_class"),
             ("coco_det", "bbox_AP"),
             ("coco_det", "bbox_AP50"), ("voc_det", "bbox_AP"), ("voc_det", "bbox_AP50")]
    heads = [h for h in heads if h in table.columns]
    md = ["| pretraining | " + " | ".join(f"{t} {m}" for t, m in heads) + " |", "|---" * (len(heads) + 1) + "|"]
    md += [f"| {name} | " + " | ".join(table.loc[name, h] for h in heads) + " |" for name in table.index]
    md += ["", "Wall time of each task (s, 2 CPU cores):", "", "| task | " + " | ".join(table.index) + " |",
           "|---" * (len(table.index) + 1) + "|"]
    md += [f"| {task} | " + " | ".join(str(round(row.get(n, float("nan")))) for n in table.index) + " |"
           for task, row in sorted(times.items())]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "imagenette_cpu.md").write_text("\n".join(md) + "\n")
    (RESULTS / "imagenette_cpu.json").write_text(json.dumps({"command": " ".join(["python", *sys.argv]),
                                                             "task_time_s": times}, indent=2) + "\n")
    logger.info("summary:\n%s", "\n".join(md))


if __name__ == "__main__":
    main()
