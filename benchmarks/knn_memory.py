"""kNN over a large bank: blocked running top-k (``knn_scores``) against the naive full product.

For each bank size (synthetic L2-normalised features, dim 2048, 10 classes) and implementation, a
fresh subprocess builds the bank and the queries, then scores the queries; it reports the wall time
of the scoring and its peak memory above the memory held before scoring (``VmHWM - VmRSS`` from
/proc, with the peak reset through ``/proc/self/clear_refs`` after the bank is built). The two implementations alternate (naive, blocked, naive, blocked ...) and must agree.
Writes ``benchmarks/results/knn_memory.{json,md}``.

    python benchmarks/knn_memory.py --sizes 10000,100000,1000000 --queries 1000
"""

from __future__ import annotations

import json
import logging
import statistics
import subprocess
import sys
from pathlib import Path

import click

logger = logging.getLogger("bench")
RESULTS = Path(__file__).parent / "results"

CHILD = r"""
import json, sys, time, torch
from mocobench.evaluators.knn import knn_scores
impl, n, m, d, k = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
g = torch.Generator().manual_seed(0)
bank = torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=1)
labels = torch.randint(10, (n,), generator=g)
queries = torch.nn.functional.normalize(torch.randn(m, d, generator=g), dim=1)
def status(key):
    return next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith(key)) * 1024
open('/proc/self/clear_refs', 'w').write('5')  # reset VmHWM: the peak from here on
before = status('VmRSS:')
t0 = time.perf_counter()
if impl == 'naive':
    sim = queries @ bank.T
    top, idx = sim.topk(k, dim=1)
    scores = torch.zeros(m, 10).scatter_add_(1, labels[idx], (top / 0.07).exp())
else:
    scores = knn_scores(queries, bank, labels, 10, k, 0.07)
elapsed = time.perf_counter() - t0
print(json.dumps({'time_s': elapsed, 'peak_extra_bytes': status('VmHWM:') - before,
                  'pred': scores.argmax(1).tolist()[:200]}))
"""


def run(impl: str, n: int, m: int, d: int, k: int) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, impl, str(n), str(m), str(d), str(k)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@click.command()
@click.option("--sizes", default="10000,100000,1000000", show_default=True)
@click.option("--queries", default=1000, show_default=True)
@click.option("--dim", default=2048, show_default=True)
@click.option("--k", default=200, show_default=True)
@click.option("--repeats", default=3, show_default=True)
def main(sizes: str, queries: int, dim: int, k: int, repeats: int) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    rows = []
    for n in (int(s) for s in sizes.split(",")):
        runs: dict[str, list[dict]] = {"naive": [], "blocked": []}
        for _ in range(repeats):
            for impl in runs:
                runs[impl].append(run(impl, n, queries, dim, k))
                logger.info("bank %d, %s: %.2f s, %.0f MiB", n, impl, runs[impl][-1]["time_s"],
                            runs[impl][-1]["peak_extra_bytes"] / 2**20)
        assert runs["naive"][0]["pred"] == runs["blocked"][0]["pred"], "the implementations disagree"
        row = {"bank": n, "queries": queries, "dim": dim}
        for impl, rs in runs.items():
            row[impl] = {"time_s_median": round(statistics.median(r["time_s"] for r in rs), 3),
                         "peak_extra_mib_median": round(statistics.median(r["peak_extra_bytes"] for r in rs) / 2**20, 1)}
        row["time_ratio_naive_over_blocked"] = round(row["naive"]["time_s_median"] / row["blocked"]["time_s_median"], 2)
        rows.append(row)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "knn_memory.json").write_text(json.dumps({"command": " ".join(["python", *sys.argv]), "rows": rows},
                                                        indent=2) + "\n")
    md = ["| bank | naive time (s) | naive peak extra (MiB) | blocked time (s) | blocked peak extra (MiB) | time naive / blocked |",
          "|---|---|---|---|---|---|"]
    md += [f"| {r['bank']:,} | {r['naive']['time_s_median']} | {r['naive']['peak_extra_mib_median']} | "
           f"{r['blocked']['time_s_median']} | {r['blocked']['peak_extra_mib_median']} | {r['time_ratio_naive_over_blocked']} |"
           for r in rows]
    (RESULTS / "knn_memory.md").write_text("\n".join(md) + "\n")
    logger.info("\n%s", "\n".join(md))


if __name__ == "__main__":
    main()
