"""Does mixed precision, or the tensor augmentation backend, change what pretraining learns? kNN top-1
of runs with each precision (``--amp``) and each ``--aug-backend`` (``--aug-backends``), several seeds.

The recipe is the ablations' base recipe (``benchmarks/ablations_cpu.py``: MoCo v2, ResNet-18,
``cifar10-sub`` at 32 px, batch 64, m 0.99, 15 epochs) with K 4096 (``--queue``); the score is the kNN monitor after the
last epoch (k 200, T 0.1, bank ``cifar10-sub/train``, scored on ``cifar10-sub/test``). bf16 counts as
"within noise" when the difference of the means is inside the spread of the fp32 seeds (likewise
tensor against pil). Writes ``benchmarks/results/<name>.{json,md}``; every run resumes.

    python benchmarks/amp_accuracy.py --device cuda --seeds 0,1,2 --amp none,bf16 --name amp_accuracy_gpu
    python benchmarks/amp_accuracy.py --amp none --aug-backends pil,tensor --queue 256 --seeds 0,1 \
        --runs runs/aug-accuracy --name aug_backend_accuracy_cpu
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import statistics
import sys
from pathlib import Path

import click
from ablations_cpu import base_config

from mocobench.log import setup_logging
from mocobench.metrics import read_metrics
from mocobench.pretrain.engine import pretrain

logger = logging.getLogger("bench")
RESULTS = Path(__file__).parent / "results"


def final_knn(run: Path) -> float:
    rows = read_metrics(run / "metrics.jsonl")
    return [r for r in rows if r.get("kind") == "epoch" and "knn_top1" in r][-1]["knn_top1"]


@click.command()
@click.option("--data", default="../shared/data", show_default=True, type=click.Path(path_type=Path))
@click.option("--runs", default="runs/amp-accuracy", show_default=True, type=click.Path(path_type=Path))
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--seeds", default="0,1,2", show_default=True)
@click.option("--amp", "amps", default="none,bf16", show_default=True)
@click.option("--aug-backends", default="pil", show_default=True)
@click.option("--epochs", default=15, show_default=True)
@click.option("--queue", default=4096, show_default=True)
@click.option("--workers", default=1, show_default=True)
@click.option("--name", default="amp_accuracy", show_default=True, help="Results file stem in benchmarks/results/.")
def main(data: Path, runs: Path, device: str, seeds: str, amps: str, aug_backends: str, epochs: int, queue: int,
         workers: int, name: str) -> None:
    setup_logging()
    base = base_config(data, epochs, workers, queue)
    scores: dict[str, dict[int, float]] = {}
    for amp, backend in itertools.product(amps.split(","), aug_backends.split(",")):
        key = amp if backend == "pil" else f"{amp} {backend}"  # pil runs keep their earlier names
        for seed in (int(s) for s in seeds.split(",")):
            run = runs / f"{device}-{key.replace(' ', '-')}-seed{seed}"
            cfg = dataclasses.replace(base, out=str(run), resume="auto", device=device, amp=amp, seed=seed,
                                      channels_last=amp != "none", aug_backend=backend)
            pretrain(cfg)
            scores.setdefault(key, {})[seed] = final_knn(run)
            logger.info("%s seed %d: kNN top-1 %.2f", key, seed, scores[key][seed])
    summary = {amp: {"mean": round(statistics.mean(v.values()), 2),
                     "std": round(statistics.stdev(v.values()), 2) if len(v) > 1 else None,
                     "min": round(min(v.values()), 2), "max": round(max(v.values()), 2), "runs": v} for amp, v in scores.items()}
    out = {"command": " ".join(["python", *sys.argv]), "device": device, "epochs": epochs, "results": summary}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(out, indent=2) + "\n")
    md = [f"MoCo v2, ResNet-18, cifar10-sub 32 px, K {queue}, {epochs} epochs, {device}; kNN top-1 (%) after the last epoch.", "",
          "| precision, augmentation backend | mean | std | min–max | per seed |", "|---|---|---|---|---|"]
    md += [f"| {amp} | {r['mean']} | {r['std']} | {r['min']}–{r['max']} | "
           + ", ".join(f"{s}: {v:.2f}" for s, v in r["runs"].items()) + " |" for amp, r in summary.items()]
    (RESULTS / f"{name}.md").write_text("\n".join(md) + "\n")
    logger.info("results:\n%s", "\n".join(md))


if __name__ == "__main__":
    main()
