"""Pretraining throughput: mocobench against lightly 1.6.0's MoCo v2, in one process, A B A B.

The peer is built from lightly's documented parts (``MoCoProjectionHead``, ``update_momentum``,
``NTXentLoss`` with a 4096-entry memory bank, ``MoCoV2Transform``), as in its MoCo example. Both run
MoCo v2 on a ResNet-18 at 64 px, batch 64, K 4096, m 0.99, SGD lr 0.0075. Three measurements:

* ``model``: the training step alone on pre-made tensors (the same random batch every step);
* ``pipeline``: the step fed by each implementation's own input pipeline over an ImageFolder
  (``../shared/data/imagenette-sub/train``), with the same number of loader workers. mocobench's
  pipeline keeps the decoded images in memory when they fit (``--decode-cache-mib``, its default);
  that one-time decode happens in the warm-up and is logged, not timed;
* ``loader``: each distinct input pipeline alone (no training step), images/s it can deliver.

Variants take turns (round-robin, ``--rounds`` times); each turn times ``--steps`` steps after 2
warm-up steps. Reported: images/s median, min and max over the turns, and the ratio of medians to the
peer. Writes ``benchmarks/results/<name>.{json,md}``. Needs lightly: run it with
``.venv-bench/bin/python`` (``bash benchmarks/setup_bench_env.sh``).

    .venv-bench/bin/python benchmarks/pretrain_step.py --rounds 5 --steps 15 --workers 1
    .venv-bench/bin/python benchmarks/pretrain_step.py --rounds 5 --steps 15 --workers 0 --only pipeline \
        --variants "lightly fp32,lightly bf16,mocobench fp32,mocobench bf16,mocobench fp32 tensor-aug,mocobench bf16 tensor-aug" \
        --name pretrain_step_workers0
    # on a GPU (benchmarks/gpu_checks.sh step): ResNet-50, 224 px, batch 128, K 65536, AMP variants
    python benchmarks/pretrain_step.py --device cuda --arch resnet50 --size 224 --batch 128 --queue 65536 --m 0.999 ...
"""

from __future__ import annotations

import copy
import json
import logging
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import click
import torch
import torchvision
from torch import nn

from mocobench.augment import moco_transform
from mocobench.datasets import EpochBatchSampler, SeededImageDataset, list_images, load_rgb, read_encoded
from mocobench.device_views import DeviceViews
from mocobench.log import setup_logging
from mocobench.pretrain.config import PretrainConfig
from mocobench.pretrain.engine import _autocast, build_model, train_step, training_views

logger = logging.getLogger("bench")
RESULTS = Path(__file__).parent / "results"


@dataclass(frozen=True)
class Setting:
    """One benchmark setting; the defaults are the CPU benchmark of issue 6 (lr 0.03 per 256 images)."""

    device: str = "cpu"
    arch: str = "resnet18"
    size: int = 64
    batch: int = 64
    queue: int = 4096
    m: float = 0.99

    @property
    def lr(self) -> float:
        return 0.03 * self.batch / 256

    @property
    def feat_dim(self) -> int:
        return 512 if self.arch in ("resnet18", "resnet34") else 2048


class Peer:
    """lightly 1.6.0 MoCo v2 (its documented example), one training step per call; ``amp`` wraps the
    forward in torch.autocast as a user of lightly would (bf16 needs no gradient scaler)."""

    def __init__(self, s: Setting, amp: str = "none") -> None:
        from lightly.loss import NTXentLoss
        from lightly.models.modules import MoCoProjectionHead
        from lightly.models.utils import deactivate_requires_grad, update_momentum

        torch.manual_seed(0)
        self.s, self.amp, self.update_momentum = s, amp, update_momentum
        resnet = getattr(torchvision.models, s.arch)()
        self.backbone = nn.Sequential(*list(resnet.children())[:-1]).to(s.device)
        self.head = MoCoProjectionHead(s.feat_dim, s.feat_dim, 128).to(s.device)
        self.backbone_m, self.head_m = copy.deepcopy(self.backbone), copy.deepcopy(self.head)
        deactivate_requires_grad(self.backbone_m)
        deactivate_requires_grad(self.head_m)
        self.criterion = NTXentLoss(temperature=0.2, memory_bank_size=(s.queue, 128)).to(s.device)
        params = [*self.backbone.parameters(), *self.head.parameters()]
        self.opt = torch.optim.SGD(params, lr=s.lr, momentum=0.9, weight_decay=1e-4)

    def step(self, x_q: torch.Tensor, x_k: torch.Tensor) -> float:
        x_q, x_k = x_q.to(self.s.device, non_blocking=True), x_k.to(self.s.device, non_blocking=True)
        self.update_momentum(self.backbone, self.backbone_m, m=self.s.m)
        self.update_momentum(self.head, self.head_m, m=self.s.m)
        with _autocast(torch.device(self.s.device), self.amp):
            q = self.head(self.backbone(x_q).flatten(start_dim=1))
            k = self.head_m(self.backbone_m(x_k).flatten(start_dim=1)).detach()
            loss = self.criterion(q.float(), k.float())
        loss.backward()
        self.opt.step()
        self.opt.zero_grad()
        return loss.item()


class Ours:
    """mocobench's MoCo v2 step (``engine.train_step``), default settings or mixed precision + channels_last."""

    def __init__(self, s: Setting, amp: str = "none", channels_last: bool = False, bn_splits: int | None = None) -> None:
        cfg = PretrainConfig(data="-", out="-", arch=s.arch, batch_size=s.batch, image_size=s.size, queue_size=s.queue,
                             moco_m=s.m, amp=amp, channels_last=channels_last, bn_splits=bn_splits).resolved()
        torch.manual_seed(0)
        self.s = s
        self.method = build_model(cfg, world=1).to(s.device)
        self.fmt = torch.channels_last if channels_last else torch.contiguous_format
        if channels_last:
            self.method = self.method.to(memory_format=torch.channels_last)
        params = [p for p in self.method.parameters() if p.requires_grad]
        self.opt = torch.optim.SGD(params, lr=cfg.scaled_lr(), momentum=0.9, weight_decay=1e-4)
        self.scaler = torch.amp.GradScaler(s.device, enabled=amp == "fp16")
        self.gen = torch.Generator().manual_seed(1)
        self.amp = amp

    def step(self, x_q: torch.Tensor, x_k: torch.Tensor) -> float:
        inputs = tuple(x.to(self.s.device, non_blocking=True, memory_format=self.fmt) for x in (x_q, x_k))
        return train_step(self.method, self.method, inputs, self.opt, self.scaler, self.gen, self.amp)[0]


@dataclass(frozen=True)
class Variant:
    """One implementation and its settings. mocobench shuffles BN (8 split-BN groups on one process)
    unless ``bn_splits`` says otherwise; the peer does not. ``aug_backend`` is mocobench's
    ``--aug-backend`` (it only changes the pipeline measurement); ``device`` is ``--aug-backend tensor
    --aug-device <the training device>``."""

    impl: str
    amp: str = "none"
    channels_last: bool = False
    bn_splits: int | None = None
    aug_backend: str = "pil"


#: which ones run is --variants
VARIANTS: dict[str, Variant] = {
    "lightly fp32": Variant("lightly"),
    "lightly bf16": Variant("lightly", "bf16"),
    "mocobench fp32": Variant("mocobench"),
    "mocobench fp32 no-shuffle-bn": Variant("mocobench", bn_splits=1),
    "mocobench bf16": Variant("mocobench", "bf16"),
    "mocobench bf16 no-shuffle-bn": Variant("mocobench", "bf16", bn_splits=1),
    "mocobench bf16+channels_last": Variant("mocobench", "bf16", True),
    "mocobench bf16 tensor-aug": Variant("mocobench", "bf16", aug_backend="tensor"),
    "mocobench fp32 tensor-aug": Variant("mocobench", aug_backend="tensor"),
    "mocobench bf16+channels_last tensor-aug": Variant("mocobench", "bf16", True, aug_backend="tensor"),
    "mocobench fp16+channels_last": Variant("mocobench", "fp16", True),
    # --aug-device: the workers read and draw; decode, crop and photometric ops on the training device
    "mocobench fp32 device-aug": Variant("mocobench", aug_backend="device"),
    "mocobench bf16 device-aug": Variant("mocobench", "bf16", aug_backend="device"),
    "mocobench bf16+channels_last device-aug": Variant("mocobench", "bf16", True, aug_backend="device"),
}
CPU_VARIANTS = ("lightly fp32,lightly bf16,mocobench fp32,mocobench bf16,mocobench bf16+channels_last,"
                "mocobench fp32 tensor-aug,mocobench bf16 tensor-aug,mocobench bf16+channels_last tensor-aug")


def pipeline_name(name: str) -> str:
    v = VARIANTS[name]
    return "lightly" if v.impl == "lightly" else f"mocobench {v.aug_backend}"


def build(name: str, s: Setting):
    v = VARIANTS[name]
    return Peer(s, v.amp) if v.impl == "lightly" else Ours(s, v.amp, v.channels_last, v.bn_splits)


def _loader(ds, s: Setting, workers: int, **kw) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(ds, num_workers=workers, persistent_workers=workers > 0,
                                       pin_memory=s.device == "cuda", **kw)


def peer_batches(root: str, s: Setting, workers: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    from lightly.transforms import MoCoV2Transform

    ds = torchvision.datasets.ImageFolder(root, transform=MoCoV2Transform(input_size=s.size))
    loader = _loader(ds, s, workers, batch_size=s.batch, shuffle=True, drop_last=True)
    while True:
        for (x_q, x_k), _ in loader:
            yield x_q, x_k


def our_batches(root: str, s: Setting, workers: int, backend: str) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    images = list_images(root)
    sampler = EpochBatchSampler(len(images), s.batch, seed=0)
    on_device = backend == "device"
    transform, collate = training_views("moco_v2", "v2", s.size, "tensor" if on_device else backend,
                                        on_device)  # as `mocobench pretrain`
    dataset = SeededImageDataset(images, transform, read_encoded if on_device else load_rgb)
    views = DeviceViews(moco_transform("v2", s.size).transforms, torch.device(s.device)) if on_device else None
    t0 = time.perf_counter()
    if dataset.cache_decoded(PretrainConfig.decode_cache_mib):  # as `mocobench pretrain` does by default
        logger.info("decode cache built in %.1f s (once per run; not in the timed steps)", time.perf_counter() - t0)
    loader = _loader(dataset, s, workers, batch_sampler=sampler, collate_fn=collate)
    epoch = 0
    while True:
        sampler.set_epoch(epoch)
        for batch in loader:
            (x_q, x_k), _ = views(batch) if views is not None else batch
            yield x_q, x_k
        epoch += 1


def timed(step: Callable, batches: Iterator, steps: int, s: Setting) -> float:
    """images/s over ``steps`` steps after 2 warm-up steps (data loading included when ``batches`` loads).
    ``step`` returns ``loss.item()``, which waits for the device, so the host clock is fair on CUDA (or
    does nothing: the loader alone)."""
    for _ in range(2):
        step(*next(batches))
    t0 = time.perf_counter()
    for _ in range(steps):
        step(*next(batches))
    return steps * s.batch / (time.perf_counter() - t0)


def stats(xs: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(xs), 1), "min": round(min(xs), 1), "max": round(max(xs), 1),
            "runs": [round(x, 1) for x in xs]}


@click.command()
@click.option("--data", default="../shared/data/imagenette-sub/train", show_default=True)
@click.option("--rounds", default=3, show_default=True)
@click.option("--steps", default=15, show_default=True)
@click.option("--workers", default=1, show_default=True)
@click.option("--only", type=click.Choice(["all", "model", "pipeline", "loader"]), default="all", show_default=True)
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--arch", default="resnet18", show_default=True)
@click.option("--size", default=64, show_default=True)
@click.option("--batch", default=64, show_default=True)
@click.option("--queue", default=4096, show_default=True)
@click.option("--m", default=0.99, show_default=True)
@click.option("--variants", default=CPU_VARIANTS, show_default=True, help=f"Comma-separated: {', '.join(VARIANTS)}.")
@click.option("--name", default="pretrain_step", show_default=True, help="Results file stem in benchmarks/results/.")
def main(data: str, rounds: int, steps: int, workers: int, only: str, device: str, arch: str, size: int, batch: int,
         queue: int, m: float, variants: str, name: str) -> None:
    setup_logging()
    s = Setting(device, arch, size, batch, queue, m)
    names = [v.strip() for v in variants.split(",")]
    peer_name = next(n for n in names if VARIANTS[n] == Variant("lightly"))
    g = torch.Generator().manual_seed(0)
    fixed = tuple(torch.randn(batch, 3, size, size, generator=g).to(device) for _ in range(2))

    def repeat():
        while True:
            yield fixed

    impls = {n: build(n, s) for n in names}

    def feed(n: str) -> Iterator:
        v = VARIANTS[n]
        return peer_batches(data, s, workers) if v.impl == "lightly" else our_batches(data, s, workers, v.aug_backend)

    def no_step(*batch) -> None:
        return None

    results: dict[str, dict] = {}
    for mode in ("model", "pipeline", "loader"):
        if only not in ("all", mode):
            continue
        if mode == "loader":  # one row per distinct input pipeline, named after it
            rows = {pipeline_name(n): n for n in names}
            steppers, feeds, peer_row = {r: no_step for r in rows}, {r: feed(n) for r, n in rows.items()}, "lightly"
        else:  # the augmentation backend changes nothing in the model step: those variants sit it out
            rows = [n for n in names if mode == "pipeline" or VARIANTS[n].aug_backend == "pil"]
            steppers, peer_row = {n: impls[n].step for n in rows}, peer_name
            feeds = {n: repeat() if mode == "model" else feed(n) for n in rows}
        runs: dict[str, list[float]] = {r: [] for r in steppers}
        for i in range(rounds):
            for r, step in steppers.items():
                runs[r].append(timed(step, feeds[r], steps, s))
                logger.info("%s round %d: %s %.1f images/s", mode, i + 1, r, runs[r][-1])
        peer = statistics.median(runs[peer_row])
        results[mode] = {r: {**stats(xs), "ratio_to_peer": round(statistics.median(xs) / peer, 2)}
                         for r, xs in runs.items()}
    hardware = torch.cuda.get_device_name() if device == "cuda" else f"{torch.get_num_threads()} CPU threads"
    out = {"command": " ".join(["python", *sys.argv]), "hardware": hardware, "torch": torch.__version__,
           "settings": {**asdict(s), "workers": workers, "rounds": rounds, "steps": steps, "data": data},
           "results": results}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(out, indent=2) + "\n")
    md = [f"{arch}, {size} px, batch {batch}, K {queue}, m {m}, {hardware}, torch {torch.__version__}, "
          f"{workers} loader workers; {rounds} rounds of {steps} steps.", "",
          f"| measurement | implementation | images/s median (min–max) | ratio to {peer_name} |", "|---|---|---|---|"]
    for mode, rows in results.items():
        md += [f"| {mode} | {n} | {r['median']} ({r['min']}–{r['max']}) | {r['ratio_to_peer']} |" for n, r in rows.items()]
    (RESULTS / f"{name}.md").write_text("\n".join(md) + "\n")
    logger.info("results:\n%s", "\n".join(md))


if __name__ == "__main__":
    main()
