"""A CPU detection protocol that tells pretrainings apart: the budgets tried on coco-mini and its VOC copy.

The committed cpu-small report's detection cells were 0.0 for every checkpoint (``--preset cpu-smoke``: 300
iterations over all 80 categories of 160 images). Each budget here changes that protocol (the classes kept, the
image size, the iterations, the lr) and is scored on ResNet-18 rows: supervised and MoCo v2 pretrained on
imagenette-96 at 64 px, and random init. Each (budget, row, seed) is one ``mocobench transfer`` run into
``RUNS/<budget>/<row>/seed<k>``; a finished run is skipped, so the script resumes. Writes
``results/detection_cpu.{json,md}`` (AP50 per seed, mean, std; seconds per run).

    python benchmarks/detection_cpu.py --data ../shared/data --runs /tmp/detbench --budgets person_600it
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from pathlib import Path

import click

from mocobench.log import setup_logging
from mocobench.results import read_results
from mocobench.transfer.run import run_transfer

RESULTS = Path(__file__).parent / "results"
#: The rows: benchmarks/imagenette_cpu_report.py's pretrainings, in its folders. The MoCo rows are its second
#: pretraining seed (``--pretrain-seed 1``): the seed-0 MoCo folders were deleted after the first detection budgets
#: (person_600it's moco_v2 row was never run), and in the report a row holds all its pretraining seeds.
ROWS = {
    "random": "random",
    "supervised": "runs/imagenette-cpu/supervised/checkpoint_last.pth",
    "moco_v2": "runs/imagenette-cpu/moco_v2_seed1/checkpoint_last.pth",
    "moco_v1": "runs/imagenette-cpu/moco_v1_seed1/checkpoint_last.pth",
}
#: cpu-crop's image scale (transfer/detection.py PRESETS["cpu-crop"]): 320 px crops resized to 176-208, test 288.
CROP_SCALE = ("INPUT.CROP.ENABLED=True", "INPUT.CROP.TYPE=absolute", "INPUT.CROP.SIZE=(320,320)",
              "INPUT.MIN_SIZE_TRAIN=(176,192,208)", "INPUT.MAX_SIZE_TRAIN=320", "INPUT.MIN_SIZE_TEST=288",
              "INPUT.MAX_SIZE_TEST=384")
#: name -> (task, data folder under --data, --set pairs over preset=cpu-smoke head=FPN, rows, seeds)
BUDGETS: dict[str, tuple[str, str, tuple[str, ...], tuple[str, ...], tuple[int, ...]]] = {
    "person_600it": ("coco_det", "coco-mini", ("keep_classes=person", "SOLVER.MAX_ITER=600",
                                              "SOLVER.STEPS=(400,520)"), ("random", "supervised"), (0,)),
    # The backbone frozen (detectron2 freezes the stem and res2..res5 and turns their BN into FrozenBatchNorm with the
    # checkpoint's statistics): FPN and heads learn on the pretrained features, as a linear probe does on top of them.
    "person_frozen_600it": ("coco_det", "coco-mini", ("keep_classes=person", "MODEL.BACKBONE.FREEZE_AT=5",
                                                     "SOLVER.MAX_ITER=600", "SOLVER.STEPS=(400,520)"),
                            ("supervised",), (0,)),  # below the fine-tuned random row already: random not run
    # Person only at 0.6x the COCO image size for the cost of 192 px; the same config as --preset cpu-crop (its
    # comment in transfer/detection.py says why; tests/test_detection.py checks they agree).
    # The MoCo rows ran seeds 0-2 only (--seeds 0,1,2): 10 minutes a run.
    "person_crop_1000it": ("coco_det", "coco-mini", ("keep_classes=person", *CROP_SCALE, "SOLVER.MAX_ITER=1000", "SOLVER.STEPS=(700,900)"),
                           ("random", "supervised", "moco_v2", "moco_v1"), (0, 1, 2, 3, 4)),
    # The paper's VOC head (R50-C4 there): res5 runs on each ROI, so the box head starts from the pretrained res5
    # (2 BasicBlocks for ResNet-18, Res5ROIHeadsExtraNorm). 32 ROIs an image (64 in cpu-crop) and 700 iterations
    # keep a run near 10 minutes: 0.80 s an iteration against 1.40 at 64 ROIs (40 timed iterations).
    "person_c4_700it": ("coco_det", "coco-mini", ("keep_classes=person", "head=C4", *CROP_SCALE,
                                                 "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE=32",
                                                 "SOLVER.MAX_ITER=700", "SOLVER.STEPS=(490,630)"),
                        ("supervised",), (0,)),  # below the FPN budget's supervised runs: random not run
}


@click.command()
@click.option("--data", required=True, help="../shared/data (coco-mini, voc-from-coco).")
@click.option("--runs", required=True, help="Where the runs go (resumable).")
@click.option("--budgets", default=",".join(BUDGETS), show_default=True)
@click.option("--seeds", default="", help="Only these of each budget's seeds (comma-separated): a first look.")
def main(data: str, runs: str, budgets: str, seeds: str) -> None:
    setup_logging()
    log = logging.getLogger("bench")
    path = RESULTS / "detection_cpu.json"
    table = {(t["budget"], t["row"]): t for t in (json.loads(path.read_text()) if path.exists() else [])}
    for name in budgets.split(","):
        task, folder, sets, rows, budget_seeds = BUDGETS[name]
        run_seeds = [k for k in budget_seeds if not seeds or str(k) in seeds.split(",")]
        extra = ("train_sets=07",) if task == "voc_det" else ()  # voc-from-coco has VOC2007 only
        for row in rows:
            folder_of = {k: Path(runs) / name / row / f"seed{k}" for k in budget_seeds}
            for seed in run_seeds:
                out = folder_of[seed]
                if not (out / "results.json").exists():
                    start = time.perf_counter()
                    run_transfer(task, ROWS[row], out, (f"data={Path(data) / folder}", "preset=cpu-smoke", "head=FPN",
                                                        *extra, *sets), arch="resnet18", pretraining=row, seed=seed)
                    (out / "seconds.txt").write_text(f"{time.perf_counter() - start:.0f}\n")
            # every finished seed of the budget, so a first look with --seeds does not shrink a committed entry
            done = [k for k in budget_seeds if (folder_of[k] / "results.json").exists()]
            if not done:
                continue
            scores = []
            for seed in done:
                out = folder_of[seed]
                res = read_results(out / "results.json")
                scores.append({"seed": seed, **res["metrics"], "seconds": float((out / "seconds.txt").read_text())})
            ap50 = [s["bbox_AP50"] for s in scores]
            table[name, row] = {"budget": name, "task": task, "data": folder, "sets": list(sets), "row": row,
                                "runs": scores, "AP50_mean": statistics.fmean(ap50),
                                "AP50_std": statistics.stdev(ap50) if len(ap50) > 1 else None}
            log.info("%s %s: AP50 %s", name, row, [round(a, 2) for a in ap50])
    rows = sorted(table.values(), key=lambda t: (list(BUDGETS).index(t["budget"]), list(ROWS).index(t["row"])))
    RESULTS.mkdir(exist_ok=True)
    path.write_text(json.dumps(rows, indent=1) + "\n")
    lines = ["| budget (task, data; --set over cpu-smoke head=FPN) | row | AP50 per seed | mean ± std | AP | s per run |",
             "|---|---|---|---|---|---|"]
    for t in rows:
        per = ", ".join(f"{s['bbox_AP50']:.1f}" for s in t["runs"])
        std = f" ± {t['AP50_std']:.1f}" if t["AP50_std"] is not None else ""
        ap = statistics.fmean(s["bbox_AP"] for s in t["runs"])
        sec = statistics.median(s["seconds"] for s in t["runs"])
        lines.append(f"| {t['budget']} ({t['task']}, {t['data']}; {' '.join(t['sets']) or '-'}) | {t['row']} | {per} | "
                     f"{t['AP50_mean']:.1f}{std} | {ap:.1f} | {sec:.0f} |")
    (RESULTS / "detection_cpu.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
