"""Small-data MoCo levers, one at a time (issue 20): which setting makes MoCo v2 learn on a CPU budget.

Each lever is the base recipe with one change (``--lever NAME``, repeatable; default: all), pretrained with
``mocobench.pretrain`` and scored by the same kNN (bank = train, scored = val, t 0.1, k = min(200, bank)), beside
random initialisation, for each seed. Rows: setting, kNN top-1 per seed, mean, the spread, wall time. Finished
runs are read back, so an interrupted benchmark resumes. Results: ``benchmarks/results/small_data_levers_<tag>.{json,md}``.

    python benchmarks/small_data_levers.py --data runs/demo/data/classification --tag demo --epochs 15 --queue 512
"""

from __future__ import annotations

import json
import logging
import statistics
import sys
import time
from pathlib import Path

import click
import torch

from mocobench.checkpoint import LoadOptions, load_backbone
from mocobench.datasets import list_images
from mocobench.evaluators.knn import KnnEvaluator
from mocobench.log import setup_logging
from mocobench.options import apply_overrides
from mocobench.pretrain.config import PretrainConfig
from mocobench.pretrain.engine import LAST, pretrain

logger = logging.getLogger("bench")
RESULTS = Path(__file__).parent / "results"

#: One change each against the base (the names are the rows of the table).
LEVERS: dict[str, dict] = {
    "base": {},
    "queue/4": {"queue_size": "K/4"},
    "queue/2": {"queue_size": "K/2"},
    "queue/8": {"queue_size": "K/8"},
    "queue/4+mask_own_keys": {"queue_size": "K/4", "mask_own_keys": True},
    "mask_own_keys": {"mask_own_keys": True},
    "stem_small": {"stem": "small"},
    "lr_x2": {"lr": 0.06},
    "t_0.1": {"moco_t": 0.1},
    "m_0.9": {"moco_m": 0.9},
    "bn_plain": {"bn_splits": 1},
    # the best single levers together
    "t_0.1+queue/4": {"moco_t": 0.1, "queue_size": "K/4"},
    "t_0.1+m_0.9": {"moco_t": 0.1, "moco_m": 0.9},
    "t_0.1+queue/4+m_0.9": {"moco_t": 0.1, "queue_size": "K/4", "moco_m": 0.9},
    # a query's own key from the previous epoch, still queued, pushed away as a negative (issue 20)
    "t_0.1+mask_own_keys": {"moco_t": 0.1, "mask_own_keys": True},
    # the peer's plain BN (it does not shuffle or split BN)
    "t_0.1+bn_plain": {"moco_t": 0.1, "bn_splits": 1},
}


def _config(data: str, out: Path, base: dict, change: dict) -> PretrainConfig:
    values = {**base, **change}
    if isinstance(values.get("queue_size"), str):  # K/4: a fraction of the base queue, a multiple of the batch
        k = base["queue_size"] // int(values["queue_size"].split("/")[1])
        values["queue_size"] = max(base["batch_size"], k // base["batch_size"] * base["batch_size"])
    return PretrainConfig(data=f"{data}/train", out=str(out), resume="auto", **values)


@click.command()
@click.option("--data", required=True, help="ImageFolder root with train/ and val/.")
@click.option("--out", default="runs/bench-levers", show_default=True)
@click.option("--tag", required=True, help="Name of the results files (small_data_levers_<tag>).")
@click.option("--lever", "levers", multiple=True, type=click.Choice(list(LEVERS)), help="Default: every lever.")
@click.option("--seeds", default="0", show_default=True, help="Comma-separated pretraining seeds.")
@click.option("--epochs", default=15, show_default=True, type=click.IntRange(min=1))
@click.option("--image-size", default=64, show_default=True, type=click.IntRange(min=16))
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(min=2))
@click.option("--queue", default=512, show_default=True, type=click.IntRange(min=1))
@click.option("--moco-m", default=0.99, show_default=True, type=click.FloatRange(0, 1, max_open=True))
@click.option("--set", "extra", multiple=True, metavar="KEY=VALUE", help="Base recipe change, e.g. stem=small.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=0))
def main(data, out, tag, levers, seeds, epochs, image_size, batch_size, queue, moco_m, extra, workers) -> None:
    setup_logging()
    base = dict(method="moco_v2", arch="resnet18", epochs=epochs, batch_size=batch_size, image_size=image_size,
                queue_size=queue, moco_m=moco_m, workers=workers, knn_every=epochs, save_every=epochs, log_every=10)
    with_extra = apply_overrides(PretrainConfig(**base), list(extra))
    base = {k: getattr(with_extra, k) for k in {*base, *(p.partition("=")[0].replace("-", "_") for p in extra)}}
    bank = len(list_images(f"{data}/train", labelled=True))
    k = min(200, bank)
    monitor = KnnEvaluator(f"{data}/train", f"{data}/val", image_size, k, 0.1, 256, workers)
    results_file = RESULTS / f"small_data_levers_{tag}.json"
    res = json.loads(results_file.read_text()) if results_file.exists() else {"rows": {}}
    res.update(command=" ".join(["python", *sys.argv]), base=base, knn={"k": k, "t": 0.1, "bank": bank},
               threads=torch.get_num_threads(), torch=str(torch.__version__))
    seed_list = [int(s) for s in seeds.split(",")]
    stem = base.get("stem", "standard")
    for seed in seed_list:  # random init with the base stem: the floor every row must clear
        key = f"random_{stem}"
        row = res["rows"].setdefault(key, {"setting": f"random init ({stem} stem)", "knn": {}, "time_s": {}})
        if str(seed) not in row["knn"]:
            net, _ = load_backbone("random", arch="resnet18", seed=seed, options=LoadOptions(stem=stem))
            row["knn"][str(seed)] = round(monitor.evaluate(net, torch.device("cpu"))["top1"], 2)
    for name in levers or LEVERS:
        for seed in seed_list:
            row = res["rows"].setdefault(name, {"setting": json.dumps(LEVERS[name]) if LEVERS[name] else "base",
                                                "knn": {}, "time_s": {}})
            if str(seed) in row["knn"]:
                continue
            run = Path(out) / tag / name / f"seed{seed}"
            cfg = _config(data, run, {**base, "seed": seed}, LEVERS[name])
            t0 = time.perf_counter()
            pretrain(cfg)
            net, _ = load_backbone(run / LAST)
            row["knn"][str(seed)] = round(monitor.evaluate(net, torch.device("cpu"))["top1"], 2)
            row["time_s"][str(seed)] = round(time.perf_counter() - t0, 1)
            row["config"] = {k: v for k, v in cfg.resolved().to_dict().items() if k not in ("data", "out", "resume")}
            RESULTS.mkdir(exist_ok=True)
            results_file.write_text(json.dumps(res, indent=2) + "\n")  # after every run: resumable
            logger.info("%s seed %d: kNN %.2f", name, seed, row["knn"][str(seed)])
    results_file.write_text(json.dumps(res, indent=2) + "\n")
    write_table(res, tag)


def write_table(res: dict, tag: str) -> None:
    """``small_data_levers_<tag>.md`` from the results (also called by ``peer_pretrain.py``)."""
    md = ["| setting | kNN top-1 per seed | mean | spread (max-min) | time per run (s) |", "|---|---|---|---|---|"]
    for name, row in res["rows"].items():
        v = list(row["knn"].values())
        if not v:  # started, not finished (interrupted)
            continue
        t = list(row.get("time_s", {}).values())
        md.append(f"| {name}: {row['setting']} | {', '.join(f'{x:.1f}' for x in v)} | {statistics.mean(v):.1f} | "
                  f"{max(v) - min(v):.1f} | {statistics.median(t):.0f} |" if t else
                  f"| {name} | {', '.join(f'{x:.1f}' for x in v)} | {statistics.mean(v):.1f} | {max(v) - min(v):.1f} | - |")
    (RESULTS / f"small_data_levers_{tag}.md").write_text("\n".join(md) + "\n")
    logger.info("results:\n%s", "\n".join(md))


if __name__ == "__main__":
    main()
