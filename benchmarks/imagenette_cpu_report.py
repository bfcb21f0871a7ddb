"""Regenerates ``reports/imagenette-cpu/``: four pretrainings of ResNet-18 compared on every transfer task.

Pretrainings on ``imagenette-96/train`` (64 px, batch 64, CPU budget): MoCo v2 (45 epochs, T 0.1), MoCo v1 (45 epochs)
and supervised (15 epochs), and random initialisation. Then ``mocobench suite`` runs kNN and linear
on imagenette-96, finegrained on flowers102-sub (linear and finegrained again with seeds 1 and 2), and coco_det /
voc_det with the ``cpu-smoke`` preset unless ``--tasks`` leaves them out; ``--task-runs`` adds the runs of
``benchmarks/detection_cpu.py`` and ``benchmarks/segmentation_cpu.py``. The report gets ``imagenette_cpu_notes.md``
as its "What this can and cannot show".

Every stage resumes: a finished pretraining or task is skipped on a re-run.

    python benchmarks/imagenette_cpu_report.py --data ../shared/data --runs runs --out reports/imagenette-cpu \\
        --tasks knn,linear,finegrained --task-runs /tmp/detbench/person_600it

Another pretraining seed K of some rows (the spread between pretrainings) joins the report under the same row
names: ``--only pretrain --pretrain-seed K --rows ...`` pretrains them into ``<folder>_seed<K>``, then
``--pretrain-seed K --rows ...`` (without ``--only``) runs the ``--tasks`` on them into ``suite_pretrain<K>*`` and
re-makes the report from these runs, the rows of OUT/report.csv (the earlier seeds, whose run folders may be gone;
its rows of a task that ``--task-runs`` supply again are replaced by those runs) and ``--task-runs``.
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
from mocobench.report import collect, read_notes, read_tidy, write_report
from mocobench.results import read_results
from mocobench.suite import run_suite

logger = logging.getLogger("bench")
RESULTS = Path(__file__).parent / "results"

#: One entry per pretraining: (run folder under --runs, recipe changes over the shared settings below).
PRETRAININGS: dict[str, tuple[str, dict]] = {
    # The small-data recipe that meets issue 20's goal (kNN +17 over random init): the v2 recipe with the MoCo CIFAR
    # demo's T 0.1, 45 epochs, bf16 and the tensor augmentation backend (benchmarks/small_data_levers.py's
    # imagenette96_45ep t_0.1 run, whose folder can be copied to runs/imagenette-cpu/moco_v2 to reuse it).
    "moco_v2": ("imagenette-cpu/moco_v2", {"method": "moco_v2", "epochs": 45, "moco_m": 0.99, "moco_t": 0.1,
                                           "amp": "bf16", "aug_backend": "tensor", "knn_every": 45, "save_every": 45}),
    # v1 recipe (T 0.07, fc head, v1 augmentation, step lr) on v2's budget of 45 epochs (at 20 it did not separate
    # from random init: kNN 35.6 against 33.4); milestones at the recipe's 120/200 and 160/200 of the epochs
    # (official main_moco.py --schedule 120 160 of 200). A run folder of the 20-epoch version must be moved away
    # first: resume would extend it (its lr already dropped at 12 and 16) and the suites would keep its results.
    "moco_v1": ("imagenette-cpu/moco_v1", {"method": "moco_v1", "epochs": 45, "moco_m": 0.99, "lr_milestones": (27, 36),
                                           "amp": "bf16", "aug_backend": "tensor"}),
    # torchvision recipe (lr 0.1 per 256, x0.1 at 30/90 and 60/90 of the epochs); labels make 15 epochs enough.
    "supervised": ("imagenette-cpu/supervised", {"method": "supervised", "epochs": 15, "lr": 0.1, "lr_milestones": (5, 10)}),
}


#: The tasks of the cpu-small suite preset reported here, and those run again with seeds 1 and 2 (kNN has no seed;
#: detection and segmentation run once, seed 0: at 4-10 minutes a run, seeds are for benchmarks/detection_cpu.py).
TASKS = ("knn", "linear", "finegrained", "coco_det", "voc_det")
SEEDED = ("linear", "finegrained")
SEEDS = (0, 1, 2)
#: The report's "What this can and cannot show" items (``mocobench report --notes``), and its title.
NOTES = Path(__file__).parent / "imagenette_cpu_notes.md"
TITLE = "imagenette-cpu: ResNet-18 pretrainings on imagenette-96 (64 px, CPU)"


def pretrain_config(data: Path, runs: Path, name: str, workers: int, seed: int = 0) -> PretrainConfig:
    """The row's recipe; another pretraining ``seed`` (the spread between pretrainings) runs in ``<folder>_seed<k>``."""
    folder, changes = PRETRAININGS[name]
    if seed:
        folder, changes = f"{folder}_seed{seed}", {**changes, "seed": seed}
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
@click.option("--pretrain-seed", default=0, show_default=True, type=click.IntRange(0), help="Pretrain the --rows again "
              "with this seed, into <folder>_seed<k> (the spread between pretraining seeds); without --only pretrain, "
              "also evaluate them and add them to OUT/report.csv's rows.")
@click.option("--rows", default=",".join(PRETRAININGS), show_default=True, help="With --pretrain-seed: these rows.")
@click.option("--tasks", default=",".join(TASKS), show_default=True, help="The cpu-small tasks to run.")
@click.option("--task-runs", "--detection-runs", "task_runs", multiple=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folders of benchmarks/detection_cpu.py or segmentation_cpu.py runs whose results join the report "
              "(one budget each); with --pretrain-seed they replace OUT/report.csv's rows of their task.")
def main(data: Path, runs: Path, out: str, workers: int, only: str, pretrain_seed: int, rows: str, tasks: str,
         task_runs) -> None:
    setup_logging()
    row_names = rows.split(",")
    unknown = [r for r in row_names if r not in PRETRAININGS]
    if unknown:
        raise click.BadParameter(f"{unknown} are not rows; choose among {list(PRETRAININGS)}", param_hint="--rows")
    if only == "pretrain":
        for name in row_names:
            pretrain(pretrain_config(data, runs, name, workers, pretrain_seed))
        return
    names = tuple(tasks.split(","))
    if pretrain_seed:
        another_seed(data, runs, Path(out), workers, pretrain_seed, row_names, names, task_runs)
        return
    if row_names != list(PRETRAININGS):
        raise click.UsageError("--rows goes with --pretrain-seed: the report uses every row's seed 0")
    ckpts = [f"{name}={pretrain(pretrain_config(data, runs, name, workers))}" for name in PRETRAININGS]
    suites = run_suites([*ckpts, "random"], runs / "imagenette-cpu" / "suite", names, data)
    report_and_summary([*suites, *task_runs], out, suites[0])


def run_suites(ckpts: list[str], folder: Path, tasks: tuple[str, ...], data: Path) -> list[Path]:
    """The cpu-small ``tasks`` on ``ckpts`` into ``folder``; the SEEDED probes again with the next probe seeds, into
    ``<folder>_seed<k>`` (mean ± std in the report). Returns the suite folders, ``folder`` first."""
    suites = [folder]
    t0 = time.perf_counter()
    run_suite(ckpts, folder, "cpu-small", tasks, data_root=data, arch="resnet18")
    for seed in SEEDS[1:]:
        suites.append(folder.with_name(f"{folder.name}_seed{seed}"))
        run_suite(ckpts, suites[-1], "cpu-small", tuple(t for t in SEEDED if t in tasks), data_root=data,
                  arch="resnet18", seed=seed)
    logger.info("suites %s*: %.0f s in this invocation", folder.name, time.perf_counter() - t0)
    return suites


def report_and_summary(roots: list[Path], out: str | Path, first_suite: Path) -> None:
    """The report from ``roots`` (with the notes and title), then the summary of ``first_suite``'s tasks."""
    report = write_report(roots, out, title=TITLE, notes=read_notes(NOTES))
    logger.info("report: %s", report.out / "report.md")
    write_summary(first_suite, report.pivot)


def another_seed(data: Path, runs: Path, out: Path, workers: int, seed: int, rows: list[str], tasks: tuple[str, ...],
                 task_runs) -> None:
    """The ``rows`` pretrained with ``seed`` (pretrained here when not yet done) run the ``tasks`` (SEEDED ones with
    every probe seed) under their row names; the report is re-made from them, ``task_runs`` and OUT/report.csv's
    rows (the earlier seeds), so each row's cells hold all its pretraining seeds. Earlier rows of a task
    that ``task_runs`` supply again are left out: those runs replace that column (a new budget)."""
    earlier = out / "report.csv"
    if not earlier.is_file():
        raise click.UsageError(f"{earlier} does not exist: make the seed-0 report first (without --pretrain-seed)")
    kept = read_tidy(earlier)
    if task_runs:
        replaced = set(collect(list(task_runs))["task"].str.split("@").str[0])
        kept = kept[~kept["task"].isin(replaced)]
    rows_csv = runs / "imagenette-cpu" / "earlier_report.csv"
    rows_csv.parent.mkdir(parents=True, exist_ok=True)
    rows_csv.write_text(kept.to_csv(index=False))
    ckpts = [f"{name}={pretrain(pretrain_config(data, runs, name, workers, seed))}" for name in rows]
    suites = run_suites(ckpts, runs / "imagenette-cpu" / f"suite_pretrain{seed}", tasks, data)
    report_and_summary([rows_csv, *suites, *task_runs], out, suites[0])


def write_summary(suite_out: Path, table) -> None:
    """``benchmarks/results/imagenette_cpu.{json,md}``: the headline numbers and the wall time of each task run in
    ``suite_out`` (— for rows it did not run)."""
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
    md += [f"| {task} | " + " | ".join(str(round(row[n])) if n in row else "—" for n in table.index) + " |"
           for task, row in sorted(times.items())]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "imagenette_cpu.md").write_text("\n".join(md) + "\n")
    (RESULTS / "imagenette_cpu.json").write_text(json.dumps({"command": " ".join(["python", *sys.argv]),
                                                             "task_time_s": times}, indent=2) + "\n")
    logger.info("summary:\n%s", "\n".join(md))


if __name__ == "__main__":
    main()
