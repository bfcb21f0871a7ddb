"""The seed spread of the demo's detection tasks: do its rows separate, or can they not at this budget?

`make demo` runs coco_det and voc_det once (seed 0, 100 iterations of the cpu-smoke preset on the synthetic
shapes) for MoCo v2, supervised and random init. This runs the same pairs again with seeds 1 and 2 into
``DEMO/suite_seed<k>`` (the demo's own ``DEMO/suite`` is seed 0) and tabulates mean ± std per row:
``results/demo_detection_seeds.{json,md}``. Resumes like ``mocobench suite`` (finished pairs are skipped).

    make demo && python benchmarks/demo_detection_seeds.py --demo runs/demo
"""

from __future__ import annotations

import json
import logging
import statistics
from pathlib import Path

import click

from mocobench.log import setup_logging
from mocobench.results import read_results
from mocobench.suite import run_suite

RESULTS = Path(__file__).parent / "results"
TASKS = ("voc_det", "coco_det")
ROWS = ("supervised", "moco_v2", "random")


@click.command()
@click.option("--demo", default="runs/demo", show_default=True, type=click.Path(exists=True, path_type=Path),
              help="A finished `make demo` folder (DEMO_DIR).")
@click.option("--seeds", default="1,2", show_default=True, help="Seeds to add to the demo's seed 0.")
def main(demo: Path, seeds: str) -> None:
    setup_logging()
    ckpts = [f"{r}={demo / r / 'checkpoint_last.pth'}" for r in ROWS if r != "random"] + ["random"]
    suites = {0: demo / "suite"}
    for seed in (int(s) for s in seeds.split(",")):
        suites[seed] = demo / f"suite_seed{seed}"
        run_suite(ckpts, suites[seed], "demo", TASKS, data_root=demo / "data", arch="resnet18", seed=seed)
    table, md = [], ["| task | row | AP50 per seed (" + ", ".join(map(str, suites)) + ") | mean ± std |", "|---|---|---|---|"]
    for task in TASKS:
        for row in ROWS:
            ap50 = [read_results(s / row / task / "results.json")["metrics"]["bbox_AP50"] for s in suites.values()]
            mean, std = statistics.fmean(ap50), statistics.stdev(ap50)
            table.append({"task": task, "row": row, "seeds": list(suites), "AP50": ap50, "mean": mean, "std": std})
            md.append(f"| {task} | {row} | {', '.join(f'{a:.1f}' for a in ap50)} | {mean:.1f} ± {std:.1f} |")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "demo_detection_seeds.json").write_text(json.dumps(table, indent=1) + "\n")
    (RESULTS / "demo_detection_seeds.md").write_text("\n".join(md) + "\n")
    logging.getLogger("bench").info("demo detection seeds:\n%s", "\n".join(md))


if __name__ == "__main__":
    main()
