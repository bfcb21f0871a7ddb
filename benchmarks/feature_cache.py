"""The frozen-feature path on this CPU: extraction against the decode-only bound, and a suite with and
without one shared feature cache.

1. Decode-only bound: a pass of the evaluation DataLoader (decode + resize + crop + normalise, the same
   workers and batch) with no network; extraction: the same pass through ``frozen_features`` (random
   ResNet-18, no cache). Each is timed ``--repeats`` times; medians and their ratio are reported.
2. Suite: knn + linear (cached mode) + finegrained on one checkpoint through ``run_transfer``, once with
   one cache folder for the three tasks (what ``mocobench suite`` does) and once with a fresh folder per
   task (every task extracts its own features, as before the cache). Wall times and their ratio; the
   metrics of the two runs must be equal.

Writes ``benchmarks/results/feature_cache.{json,md}``.

    python benchmarks/feature_cache.py --data ../shared/data/imagenette-96 \
        --flowers ../shared/data/flowers102-sub --image-size 64 --repeats 3
"""

from __future__ import annotations

import json
import logging
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import click
import torch
from torch.utils.data import DataLoader

from mocobench.augment import eval_transform
from mocobench.checkpoint import load_backbone
from mocobench.datasets import ImageDataset, list_images
from mocobench.evaluators.features import FeatureKey, dataset_identity, frozen_features
from mocobench.log import setup_logging
from mocobench.transfer.run import run_transfer

logger = logging.getLogger("bench")
RESULTS = Path(__file__).parent / "results"


def _decode_pass(ds, batch: int, workers: int) -> float:
    t0 = time.perf_counter()
    for _ in DataLoader(ds, batch_size=batch, num_workers=workers):
        pass
    return time.perf_counter() - t0


def _extract_pass(net, ds, batch: int, workers: int) -> float:
    key = FeatureKey("bench", "imagenet", "backbone", repr(ds.transform), dataset_identity(ds), "fp32")
    t0 = time.perf_counter()
    frozen_features(net, ds, key, torch.device("cpu"), batch, workers, cache=None)
    return time.perf_counter() - t0


def _suite(data: str, flowers: str, size: int, workers: int, shared: bool, root: Path) -> tuple[float, dict]:
    tasks = {"knn": (data, ()), "linear": (data, ("mode=cached", "epochs=30")), "finegrained": (flowers, ())}
    t0, metrics = time.perf_counter(), {}
    for task, (path, extra) in tasks.items():
        cache = root / ("cache" if shared else f"cache_{task}")
        sets = (f"data={path}", f"image_size={size}", f"workers={workers}", *extra)
        out = run_transfer(task, "random", root / task, sets, arch="resnet18", overwrite=True, feature_cache=cache)
        metrics[task] = json.loads(Path(out).read_text())["metrics"]
    return time.perf_counter() - t0, metrics


@click.command()
@click.option("--data", default="../shared/data/imagenette-96", show_default=True)
@click.option("--flowers", default="../shared/data/flowers102-sub", show_default=True)
@click.option("--image-size", default=64, show_default=True)
@click.option("--batch-size", default=256, show_default=True)
@click.option("--workers", default=2, show_default=True)
@click.option("--repeats", default=3, show_default=True)
def main(data: str, flowers: str, image_size: int, batch_size: int, workers: int, repeats: int) -> None:
    setup_logging()
    torch.set_num_threads(2)
    images = list_images(Path(data) / "train", labelled=True)
    ds = ImageDataset(images, eval_transform(image_size))
    net, _ = load_backbone("random", arch="resnet18")
    decode = [_decode_pass(ds, batch_size, workers) for _ in range(repeats)]
    extract = [_extract_pass(net, ds, batch_size, workers) for _ in range(repeats)]
    n = len(ds)
    result = {"images": n, "image_size": image_size, "batch_size": batch_size, "workers": workers,
              "threads": torch.get_num_threads(), "decode_s": decode, "extract_s": extract,
              "decode_images_per_s": n / statistics.median(decode),
              "extract_images_per_s": n / statistics.median(extract),
              "extract_over_decode_time": statistics.median(extract) / statistics.median(decode)}
    logger.info("decode-only %.0f img/s, extraction %.0f img/s", result["decode_images_per_s"],
                result["extract_images_per_s"])
    suites = {"shared": [], "per_task": []}
    metrics = {}
    for _ in range(repeats):
        for mode in ("per_task", "shared"):  # alternate, so drift hits both
            root = Path(tempfile.mkdtemp(prefix=f"bench_{mode}_"))
            seconds, metrics[mode] = _suite(data, flowers, image_size, workers, mode == "shared", root)
            suites[mode].append(seconds)
            shutil.rmtree(root)
    assert metrics["shared"] == metrics["per_task"], "the cache changed a number"
    result.update(suite_tasks=["knn", "linear (cached, 30 epochs)", "finegrained"],
                  suite_shared_cache_s=suites["shared"], suite_per_task_cache_s=suites["per_task"],
                  suite_speedup=statistics.median(suites["per_task"]) / statistics.median(suites["shared"]),
                  metrics=metrics["shared"])
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "feature_cache.json").write_text(json.dumps(result, indent=2) + "\n")
    md = ["| measurement | median | ratio |", "|---|---|---|",
          f"| decode-only pass, {n} images at {image_size} px | {statistics.median(decode):.1f} s "
          f"({result['decode_images_per_s']:.0f} img/s) | 1 |",
          f"| extraction (random ResNet-18), same loader | {statistics.median(extract):.1f} s "
          f"({result['extract_images_per_s']:.0f} img/s) | {result['extract_over_decode_time']:.2f}x the bound |",
          f"| suite knn + linear (cached) + finegrained, a cache per task | "
          f"{statistics.median(suites['per_task']):.1f} s | 1 |",
          f"| the same suite, one shared cache | {statistics.median(suites['shared']):.1f} s | "
          f"{result['suite_speedup']:.2f}x faster |"]
    (RESULTS / "feature_cache.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
