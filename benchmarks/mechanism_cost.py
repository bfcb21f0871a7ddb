"""Cost of the three contrastive mechanisms at the same batch size and encoder (the MoCo v2 note's
cost comparison: end-to-end needs both views through the trained encoder, so it costs more memory).

Default: ResNet-18, 64 px, CPU, fp32 (``--device cuda --arch resnet50 --size 224`` on a GPU). Each (mechanism, batch) runs in a fresh subprocess: ``--steps`` timed
steps after 2 warm-up steps on pre-made tensors; peak memory is VmHWM (reset through ``/proc/self/clear_refs``) minus the
resident memory after the model and the data were built (on CUDA: ``max_memory_allocated`` minus
``memory_allocated`` at that point). Writes ``benchmarks/results/mechanism_cost.{json,md}``.

    python benchmarks/mechanism_cost.py --batches 64,128,256
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click

RESULTS = Path(__file__).parent / "results"

CHILD = r"""
import json, sys, time, torch
from mocobench.pretrain.config import PretrainConfig
from mocobench.pretrain.engine import build_model, train_step
method, batch, steps, device, arch, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), *sys.argv[4:6], int(sys.argv[6])
cfg = PretrainConfig(data="-", out="-", method=method, arch=arch, batch_size=batch, image_size=size,
                     queue_size=4096, moco_m=0.99, bn_splits=1).resolved()
torch.manual_seed(0)
model = build_model(cfg, 1, num_images=9469).to(device)
opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
scaler, gen = torch.amp.GradScaler(device, enabled=False), torch.Generator()
x = torch.randn(batch, 3, size, size, device=device), torch.randn(batch, 3, size, size, device=device)
inputs = (x[0], torch.randperm(9469)[:batch].to(device)) if method == "memory_bank" else x
def status(key):
    return next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith(key)) * 1024
if device == "cuda":  # the caching allocator's peak above what the model and data hold
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(); before = torch.cuda.memory_allocated()
else:
    open('/proc/self/clear_refs', 'w').write('5')  # reset VmHWM: the peak from here on
    before = status('VmRSS:')
for _ in range(2):
    train_step(model, model, inputs, opt, scaler, gen)  # returns loss.item(): waits for the device
t0 = time.perf_counter()
for _ in range(steps):
    train_step(model, model, inputs, opt, scaler, gen)
step_s = (time.perf_counter() - t0) / steps
peak = torch.cuda.max_memory_allocated() if device == "cuda" else status('VmHWM:')
print(json.dumps({'step_s': step_s, 'peak_extra_bytes': peak - before}))
"""


@click.command()
@click.option("--batches", default="64,128,256", show_default=True)
@click.option("--steps", default=5, show_default=True)
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--arch", default="resnet18", show_default=True)
@click.option("--size", default=64, show_default=True)
@click.option("--name", default="mechanism_cost", show_default=True, help="Results file stem in benchmarks/results/.")
def main(batches: str, steps: int, device: str, arch: str, size: int, name: str) -> None:
    rows = []
    for batch in (int(b) for b in batches.split(",")):
        for method in ("moco_v2", "end_to_end", "simclr", "memory_bank"):
            out = subprocess.run([sys.executable, "-c", CHILD, method, str(batch), str(steps), device, arch, str(size)],
                                 capture_output=True, text=True)
            if out.returncode != 0:  # out of memory is a result here (the note: batch 4096 is intractable)
                err = (out.stderr.strip().splitlines() or ["?"])[-1][:120]
                rows.append({"method": method, "batch": batch, "step_ms": None, "images_per_s": None,
                             "peak_extra_mib": None, "error": err})
                print(rows[-1], flush=True)
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append({"method": method, "batch": batch, "step_ms": round(1000 * r["step_s"], 1),
                         "images_per_s": round(batch / r["step_s"], 1),
                         "peak_extra_mib": round(r["peak_extra_bytes"] / 2**20, 1)})
            print(rows[-1], flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps({"command": " ".join(["python", *sys.argv]), "rows": rows},
                                                      indent=2) + "\n")
    md = [f"{arch}, {size} px, fp32, {device}; peak: {'torch.cuda.max_memory_allocated' if device == 'cuda' else 'VmHWM'} "
          "above the memory held before the first step.", "",
          "| mechanism | batch | step (ms) | images/s | peak memory of training (MiB) |", "|---|---|---|---|---|"]
    md += [f"| {r['method']} | {r['batch']} | {r['step_ms']} | {r['images_per_s']} | {r['peak_extra_mib']} |"
           if "error" not in r else f"| {r['method']} | {r['batch']} | failed: {r['error']} | | |" for r in rows]
    (RESULTS / f"{name}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
