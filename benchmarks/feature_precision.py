"""bf16 feature extraction (``--set amp=bf16``) against fp32, on this CPU: the kNN numbers of a trained
checkpoint with each, the features' relative difference, and the extraction rate of each.

For each precision, ``run_transfer`` runs the knn task (fresh cache, so both extract); the features of the
two cache entries are then compared: the median and maximum over images of |f_bf16 - f_fp32| / |f_fp32|,
and the fraction of queries whose kNN prediction changes. Writes
``benchmarks/results/feature_precision.{json,md}``.

    python benchmarks/feature_precision.py --checkpoint runs/imagenette-cpu/moco_v2/checkpoint_last.pth \
        --data ../shared/data/imagenette-96 --image-size 64
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path

import click
import torch

from mocobench.log import setup_logging
from mocobench.transfer.run import run_transfer

logger = logging.getLogger("bench")
RESULTS = Path(__file__).parent / "results"


def _features(cache: Path) -> dict[str, torch.Tensor]:
    """{split rows: features} of every complete entry in a cache folder, keyed by the number of rows."""
    out = {}
    for meta_path in cache.glob("*/meta.json"):
        meta = json.loads(meta_path.read_text())
        parts = [torch.load(meta_path.parent / f, weights_only=True)["features"] for _, _, f in meta["files"]]
        out[meta["rows"]] = torch.cat(parts).float()
    return out


@click.command()
@click.option("--checkpoint", required=True)
@click.option("--data", default="../shared/data/imagenette-96", show_default=True)
@click.option("--image-size", default=64, show_default=True)
@click.option("--workers", default=2, show_default=True)
def main(checkpoint: str, data: str, image_size: int, workers: int) -> None:
    setup_logging()
    torch.set_num_threads(2)
    root = Path(tempfile.mkdtemp(prefix="bench_precision_"))
    runs = {}
    for amp in ("fp32", "bf16"):
        t0 = time.perf_counter()
        path = run_transfer("knn", checkpoint, root / amp, (f"data={data}", f"image_size={image_size}",
                                                           f"workers={workers}", f"amp={amp}"),
                            feature_cache=root / f"cache_{amp}")
        rec = json.loads(Path(path).read_text())
        runs[amp] = {"metrics": rec["metrics"], "time_s": time.perf_counter() - t0,
                     "features": _features(root / f"cache_{amp}")}
    diffs = {}
    for rows, f32 in runs["fp32"]["features"].items():
        bf = runs["bf16"]["features"][rows]
        rel = (bf - f32).norm(dim=1) / f32.norm(dim=1).clamp(min=1e-12)
        diffs[rows] = {"median_rel": float(rel.median()), "max_rel": float(rel.max())}
    n = sum(runs["fp32"]["features"])
    result = {"checkpoint": checkpoint, "data": data, "image_size": image_size,
              "fp32": {k: v for k, v in runs["fp32"].items() if k != "features"},
              "bf16": {k: v for k, v in runs["bf16"].items() if k != "features"},
              "relative_feature_difference": diffs, "images": n,
              "top1_difference": runs["bf16"]["metrics"]["top1"] - runs["fp32"]["metrics"]["top1"]}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "feature_precision.json").write_text(json.dumps(result, indent=2) + "\n")
    md = ["| precision | kNN top-1 | top-5 | knn task wall time (extraction of both splits included) |",
          "|---|---|---|---|"]
    for amp in ("fp32", "bf16"):
        r = runs[amp]
        md.append(f"| {amp} | {r['metrics']['top1']:.2f} | {r['metrics']['top5']:.2f} | {r['time_s']:.1f} s |")
    md += ["", "| split (rows) | median relative feature difference | max |", "|---|---|---|"]
    md += [f"| {rows} | {d['median_rel']:.2e} | {d['max_rel']:.2e} |" for rows, d in sorted(diffs.items())]
    (RESULTS / "feature_precision.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
