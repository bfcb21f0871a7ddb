"""Can voc_seg tell pretrainings apart on this CPU? ResNet-18 rows on coco-mini (its masks as VOC classes) and on
the synthetic scenes, under the budgets tried, with seconds per iteration.

Each (budget, row, seed) is one ``mocobench transfer --task voc_seg`` run into ``RUNS/<budget>/<row>/seed<k>``; a
finished run is skipped, so the script resumes. Writes ``results/segmentation_cpu.{json,md}``: the budgets run now
replace their earlier entries, the others are kept. ``RUNS/<budget>`` is also an input of ``mocobench report``.

    python benchmarks/segmentation_cpu.py --data ../shared/data --runs /tmp/segbench
"""

from __future__ import annotations

import json
import logging
import statistics
from pathlib import Path

import click

from mocobench.log import setup_logging
from mocobench.results import read_results
from mocobench.transfer.run import run_transfer

RESULTS = Path(__file__).parent / "results"
#: The checkpoints: imagenette supervised (15 epochs, 64 px), the imagenette-cpu report's MoCo v2 and v1 (45 epochs,
#: 64 px, their pretraining seed 1) and an early MoCo v2 (the negatives ablation, 15 epochs, 32 px) for the real
#: images; the demo's pretrainings on the synthetic shapes for the synthetic scenes.
ROWS = {
    "random": "random",
    "supervised": "runs/imagenette-cpu/supervised/checkpoint_last.pth",
    "moco_v2": "runs/imagenette-cpu/moco_v2_seed1/checkpoint_last.pth",
    "moco_v1": "runs/imagenette-cpu/moco_v1_seed1/checkpoint_last.pth",
    "moco_v2_abl15": "runs/abl-cpu/negatives/method=moco_v2,queue_size=4096/checkpoint_last.pth",
    "demo_supervised": "runs/demo/supervised/checkpoint_last.pth",
    "demo_moco_v2": "runs/demo/moco_v2/checkpoint_last.pth",
}
_SMALL = ("lr=0.02", "crop_size=64", "scale_range=0.0625,0.25", "test_scale=0.125")
#: name -> (data folder under --data, --set pairs over preset=cpu-smoke, rows, seeds)
BUDGETS: dict[str, tuple[str, tuple[str, ...], tuple[str, ...], tuple[int, ...]]] = {
    "cpu-smoke": ("coco-mini", (), ("random", "supervised", "moco_v2_abl15"), (0,)),
    "lr0.02_300it_scale0.25-1": ("coco-mini", ("lr=0.02", "scale_range=0.25,1.0", "test_scale=0.5"),
                                 ("supervised",), (0,)),
    "lr0.02_800it_scale0.25-1": ("coco-mini", ("lr=0.02", "iterations=800", "scale_range=0.25,1.0",
                                               "test_scale=0.5"), ("supervised",), (0,)),
    "lr0.02_2000it_crop64": ("coco-mini", (*_SMALL, "iterations=2000"), ("supervised",), (0,)),
    "person_lr0.02_1000it_crop64": ("coco-mini", (*_SMALL, "iterations=1000", "keep_classes=person"),
                                    ("random", "supervised"), (0,)),
    # a linear probe of the frozen conv5 features (1x1 classifier, the backbone's weights and BN statistics fixed):
    # what the features hold, not what fine-tuning 160 images can make of them (the budgets above). Measured on
    # random and supervised only: it ranked random init above supervised, so the MoCo rows and seeds were not run.
    "person_frozen_linear_1000it": ("coco-mini", ("keep_classes=person", "frozen_backbone=true", "head_convs=0",
                                                  "lr=0.02", "iterations=1000"), ("random", "supervised"), (0,)),
    "synthetic_demo": ("segmentation", ("scale_range=0.5,2.0", "test_scale=1", "iterations=200", "lr=0.02"),
                       ("random", "demo_supervised", "demo_moco_v2"), (0, 1)),
}


@click.command()
@click.option("--data", required=True, help="../shared/data (coco-mini); the synthetic scenes are read from "
              "--synthetic.")
@click.option("--synthetic", default="runs/demo/data", show_default=True, help="Folder holding segmentation/.")
@click.option("--runs", required=True, help="Where the runs go (resumable).")
@click.option("--budgets", default=",".join(BUDGETS), show_default=True)
@click.option("--rows", default="", help="Only these rows of each budget (default: all of its rows).")
@click.option("--seeds", default="", help="Only these seeds of each budget (default: all of its seeds).")
def main(data: str, synthetic: str, runs: str, budgets: str, rows: str, seeds: str) -> None:
    setup_logging()
    log = logging.getLogger("bench")
    names = budgets.split(",")
    if unknown := [n for n in names if n not in BUDGETS]:
        raise click.BadParameter(f"{', '.join(unknown)}: not in {', '.join(BUDGETS)}", param_hint="--budgets")
    table = []
    for name in names:
        folder, sets, budget_rows, budget_seeds = BUDGETS[name]
        root = Path(synthetic if folder == "segmentation" else data) / folder
        for row in (r for r in budget_rows if not rows or r in rows.split(",")):
            scores = []
            for seed in (k for k in budget_seeds if not seeds or str(k) in seeds.split(",")):
                out = Path(runs) / name / row / f"seed{seed}"
                if not (out / "results.json").exists():
                    run_transfer("voc_seg", ROWS[row], out, (f"data={root}", "preset=cpu-smoke", "workers=2", *sets),
                                 arch="resnet18", pretraining=row, seed=seed)
                res = read_results(out / "results.json")
                d = res["config"]["derived"]
                scores.append({"seed": seed, **res["metrics"], "s_per_iteration": d["s_per_iteration"],
                               "per_class_iou": {k: v for k, v in d["per_class_iou"].items() if v}})
            miou = [s["mIoU"] for s in scores]
            table.append({"budget": name, "data": folder, "sets": list(sets), "row": row, "runs": scores,
                          "mIoU_mean": statistics.fmean(miou), "mIoU_std": statistics.stdev(miou) if len(miou) > 1
                          else None, "s_per_iteration": statistics.median(s["s_per_iteration"] for s in scores)})
            log.info("%s %s: mIoU %s", name, row, [round(m, 2) for m in miou])
    RESULTS.mkdir(exist_ok=True)
    earlier = RESULTS / "segmentation_cpu.json"
    kept = [t for t in json.loads(earlier.read_text()) if t["budget"] not in names] if earlier.exists() else []
    table = sorted(kept + table, key=lambda t: list(BUDGETS).index(t["budget"]))  # stable: rows keep their order
    (RESULTS / "segmentation_cpu.json").write_text(json.dumps(table, indent=1) + "\n")
    lines = ["| budget (data; --set over cpu-smoke) | row | mIoU (seeds) | pixel acc | s/it |", "|---|---|---|---|---|"]
    for t in table:
        mious = ", ".join(f"{s['mIoU']:.2f}" for s in t["runs"])
        acc = ", ".join(f"{s['pixel_acc']:.2f}" for s in t["runs"])
        lines.append(f"| {t['budget']} ({t['data']}; {' '.join(t['sets']) or '-'}) | {t['row']} | {mious} | {acc} | "
                     f"{t['s_per_iteration']:.2f} |")
    (RESULTS / "segmentation_cpu.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
