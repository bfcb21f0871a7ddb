"""Linear protocol: faithful mode (images every epoch) against cached mode (features once).

Both modes run the same schedule on the same checkpoint, one after the other in one process, and
the script records wall time, the speed ratio and the top-1 difference in
``benchmarks/results/linear_modes.{json,md}``.

    python benchmarks/linear_modes.py --ckpt runs/bench-pretrain/checkpoint_last.pth
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import time
from pathlib import Path

import click
import torch

from mocobench.log import setup_logging
from mocobench.results import read_results
from mocobench.transfer.run import run_transfer

logger = logging.getLogger("bench")
RESULTS = Path(__file__).parent / "results"


@click.command()
@click.option("--ckpt", default="runs/bench-pretrain/checkpoint_last.pth", show_default=True)
@click.option("--data", default="../shared/data/imagenette-sub", show_default=True)
@click.option("--out", default="runs/bench-linear", show_default=True)
@click.option("--epochs", default=20, show_default=True)
@click.option("--image-size", default=64, show_default=True)
@click.option("--batch-size", default=256, show_default=True)
@click.option("--workers", default=1, show_default=True)
def main(ckpt: str, data: str, out: str, epochs: int, image_size: int, batch_size: int, workers: int) -> None:
    setup_logging()
    common = (f"data={data}", f"epochs={epochs}", f"image_size={image_size}", f"batch_size={batch_size}",
              f"workers={workers}")
    rows = {}
    for mode in ("faithful", "cached"):
        run_dir = Path(out) / mode
        shutil.rmtree(run_dir, ignore_errors=True)
        t0 = time.perf_counter()
        run_transfer("linear", ckpt, run_dir, (*common, f"mode={mode}"), overwrite=True)
        wall = time.perf_counter() - t0
        res = read_results(run_dir / "results.json")
        rows[mode] = {"wall_s": round(wall, 1), **{k: round(v, 2) for k, v in res["metrics"].items()}}
    f, c = rows["faithful"], rows["cached"]
    summary = {
        "command": " ".join(["python", *sys.argv]),
        "checkpoint": ckpt,
        "settings": dict(kv.split("=", 1) for kv in common),
        "threads": torch.get_num_threads(),
        "modes": rows,
        "speed_ratio_faithful_over_cached": round(f["wall_s"] / c["wall_s"], 2),
        "top1_best_difference_cached_minus_faithful": round(c["top1_best"] - f["top1_best"], 2),
        "top1_final_difference_cached_minus_faithful": round(c["top1_final"] - f["top1_final"], 2),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "linear_modes.json").write_text(json.dumps(summary, indent=2) + "\n")
    md = [
        "| mode | wall time (s) | top-1 best | top-1 final | top-5 final |",
        "|---|---|---|---|---|",
        *(f"| {m} | {r['wall_s']} | {r['top1_best']:.1f} | {r['top1_final']:.1f} | {r['top5_final']:.1f} |"
          for m, r in rows.items()),
        "",
        f"cached is {summary['speed_ratio_faithful_over_cached']}x faster; top-1 (best) differs by "
        f"{summary['top1_best_difference_cached_minus_faithful']:+.1f} points.",
    ]
    (RESULTS / "linear_modes.md").write_text("\n".join(md) + "\n")
    logger.info("results:\n%s", "\n".join(md))


if __name__ == "__main__":
    main()
