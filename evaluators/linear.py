"""The linear classification protocol (official ``main_lincls.py``, facebookresearch/moco @ 87e36d3).

A linear layer on the frozen backbone's pooled features: SGD lr 30 (per 256 images), momentum 0.9,
weight decay 0, batch 256, 100 epochs, lr x0.1 at epochs 60 and 80; fc initialised N(0, 0.01) with
zero bias; the backbone stays in eval mode (frozen BN statistics) and is checked to be unchanged after
the first epoch; training views RandomResizedCrop(224) + flip, test Resize(256) + CenterCrop(224).
Reported: best and final val top-1/top-5.

Modes:

* ``faithful`` (default): the protocol above, images through the backbone every epoch. Validation
  features are computed once: the frozen eval-mode backbone and the deterministic test transform give
  the same features every epoch, so this changes no number. Resumable (``linear_last.pth`` per epoch).
* ``cached``: backbone features of the training set are extracted once (the centre crop, plus
  ``cached_views - 1`` augmented views per image), and the same linear layer is trained on them with the
  same schedule. Much faster; it is an approximation (fewer distinct augmentations).

Under torchrun (N processes) the global batch stays ``batch_size``: each process reads its contiguous
piece of every global batch (the same (index, seed) pairs one process would read, augmentations seeded
by (seed, epoch, index)), the pieces' features are gathered, and every process applies the identical
update of the fc layer to the whole global batch, so N processes train the classifier one process
trains (the features agree up to the backbone's float rounding on other batch shapes). Features of
the validation set and of cached views go through the one feature path (sharded, cached); every val
image is scored exactly once.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, default_collate
from torchvision import transforms as T
from tqdm import tqdm

from mocobench import dist
from mocobench.augment import linear_train_transform
from mocobench.checkpoint import atomic_save, read_checkpoint
from mocobench.datasets import (
    EpochBatchSampler,
    OnBadImage,
    SeededImageDataset,
    eval_split,
    list_images,
    on_bad_image_option,
    read_encoded,
    resolve_split,
    sample_seed,
)
from mocobench.device_views import CollateFiles, DeviceViews, FileViews
from mocobench.evaluators.features import (
    AUG_DEVICE_RULE,
    AugDevice,
    aug_device_option,
    autocast,
    eval_set,
    feature_key,
    frozen_features,
    resnet_features,
)
from mocobench.evaluators.knn import topk_accuracy
from mocobench.evaluators.registry import TaskContext, TaskError, register
from mocobench.metrics import MetricsWriter
from mocobench.options import Rule, option
from mocobench.schedule import lr_at_epoch

logger = logging.getLogger(__name__)
STATE_FILE = "linear_last.pth"



@dataclass
class LinearConfig:
    """Linear protocol settings; defaults are main_lincls.py's."""

    data: str = option("", "Root with a train split and a val (or test) split of class folders.", exists="dir")
    train_split: str = option("train", "Training split under --data.")
    val_split: str = option("", "Evaluation split under --data (default: val, else test).")
    on_bad_image: OnBadImage = on_bad_image_option()
    mode: Literal["faithful", "cached"] = option("faithful", "faithful (images every epoch) or cached (features once).")
    epochs: int = option(100, "Training epochs.", min=1)
    lr: float = option(30.0, "Learning rate per 256 images (used: lr * batch_size / 256).", min=0, min_open=True)
    lr_milestones: tuple[int, ...] = option((), "Epochs of the x0.1 steps (default: 60% and 80% of --epochs: 60, 80).",
                                            min=1, increasing=True)
    momentum: float = option(0.9, "SGD momentum.", min=0, max=1, max_open=True)
    weight_decay: float = option(0.0, "SGD weight decay.", min=0)
    batch_size: int = option(256, "Batch size.", min=1)
    image_size: int = option(224, "Crop size (test: resize to size*256/224, centre crop).", min=8)
    cached_views: int = option(1, "cached mode: views per training image (1 = centre crop; more add RRC+flip views).", min=1)
    workers: int = option(4, "Data-loading workers.", min=0)
    amp: Literal["fp32", "bf16"] = option("fp32", "Backbone precision: fp32, or bf16 under autocast.")
    device: str = option("auto", "auto, cpu or cuda.")
    aug_device: AugDevice = aug_device_option("the faithful mode's training views (RRC + flip) and the val and "
                                              "centre-crop features")
    resume: bool = option(True, "Continue <out>/linear_last.pth when it exists (faithful mode).")
    stop_at: int = option(0, "faithful mode: stop after this epoch without results (resume later); 0 = run to the end.", min=0)
    tensorboard: bool = option(True, "Also write the per-epoch loss and val top-1 (<out>/metrics.jsonl) as TensorBoard "
                               "events to <out>/tensorboard.")

    RULES: ClassVar = (
        Rule(("lr_milestones", "epochs"), lambda c: all(m < c.epochs for m in c.lr_milestones),
             "every milestone an epoch before the last (1 <= milestone < epochs)"),
        Rule(("stop_at", "epochs"), lambda c: c.stop_at <= c.epochs, "stop_at at most epochs (0: run to the end)"),
        AUG_DEVICE_RULE,
    )


#: Settings that may differ between a faithful run and its resumption.
RESUMABLE = ("workers", "device", "resume", "stop_at", "tensorboard")


def milestones(cfg: LinearConfig) -> tuple[int, ...]:
    """The lr steps: as given, or 60% and 80% of the epochs (60 and 80 at 100 epochs)."""
    return cfg.lr_milestones or (round(0.6 * cfg.epochs), round(0.8 * cfg.epochs))


def new_classifier(dim: int, num_classes: int) -> nn.Linear:
    """fc with weight ~ N(0, 0.01) and zero bias (main_lincls.py)."""
    fc = nn.Linear(dim, num_classes)
    nn.init.normal_(fc.weight, mean=0.0, std=0.01)
    nn.init.zeros_(fc.bias)
    return fc


def sgd_epoch(fc: nn.Linear, batches: Iterator[tuple[torch.Tensor, torch.Tensor]], optimizer) -> float:
    """One pass of cross-entropy SGD on (features, labels) batches; returns the mean loss."""
    fc.train()
    total, n = 0.0, 0
    for feats, labels in batches:
        loss = F.cross_entropy(fc(feats), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.item() * len(labels)
        n += len(labels)
    return total / max(n, 1)


@torch.no_grad()
def evaluate(fc: nn.Linear, feats: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    fc.eval()
    return topk_accuracy(fc(feats), labels)


def _collate(batch, files: bool = False):
    """default_collate (:class:`~mocobench.device_views.CollateFiles` for ``files``), and None for a rank's
    empty piece of the last global batch."""
    return (CollateFiles()(batch) if files else default_collate(batch)) if batch else None


def _feature_batches(backbone, loader, device, precision: str, dim: int,
                     views: DeviceViews | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Frozen features of each global training batch (the backbone stays in eval mode, no gradient): this
    process's piece, gathered with the other processes' pieces in rank order; ``views`` makes the images
    on the device (``aug_device``)."""
    for batch in loader:
        if batch is None:
            feats, labels = torch.zeros(0, dim, device=device), torch.zeros(0, dtype=torch.long, device=device)
        else:
            if views is not None:
                batch = views(batch)
            with torch.no_grad(), autocast(device, precision):
                feats = resnet_features(backbone, batch[0].to(device)).float()
            labels = batch[1].to(device)
        yield dist.all_gather_rows(feats), dist.all_gather_rows(labels)


def _tensor_batches(feats, labels, batch_size: int, seed: int, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    perm = perm.to(feats.device)
    for i in range(0, len(labels), batch_size):
        idx = perm[i : i + batch_size]
        yield feats[idx], labels[idx]


def _assert_frozen(backbone: nn.Module, reference: dict[str, torch.Tensor]) -> None:
    """main_lincls.py's sanity check: the backbone must not have changed."""
    for k, v in backbone.state_dict().items():
        if not torch.equal(v, reference[k]):
            raise RuntimeError(f"linear protocol: frozen backbone tensor {k} changed during training")


@register("linear", LinearConfig, "linear classifier on the frozen backbone (main_lincls protocol)", distributed=True)
def run_linear(cfg: LinearConfig, ctx: TaskContext) -> dict[str, float] | None:
    """Train and score the linear classifier; None when ``stop_at`` stopped a faithful run early."""
    root = Path(cfg.data)
    train = list_images(resolve_split(root, (cfg.train_split,)), labelled=True, on_bad_image=cfg.on_bad_image)
    val = list_images(eval_split(root, cfg.val_split), labelled=True, on_bad_image=cfg.on_bad_image)
    if train.classes != val.classes:
        raise TaskError(f"the class folders of {train.root} and {val.root} differ")
    device = dist.select_device(cfg.device)
    backbone = ctx.backbone.to(device).eval()
    for p in backbone.parameters():
        p.requires_grad = False
    steps = milestones(cfg)
    lr = cfg.lr * cfg.batch_size / 256
    ctx.derived.update(lr_scaled=lr, lr_milestones=list(steps), num_train=len(train), num_val=len(val))

    t0 = time.perf_counter()
    world = dist.get_world_size()
    if cfg.batch_size % world:
        raise TaskError(f"batch_size {cfg.batch_size} (the global batch) must be divisible by the {world} processes")
    val_ds, val_key, on_device = eval_set(val, cfg.image_size, cfg.aug_device, device)
    val_feats, val_labels = frozen_features(backbone, val_ds, feature_key(ctx, "backbone", val_key, val_ds, cfg.amp),
                                            device, cfg.batch_size, cfg.workers, ctx.feature_cache, name="linear val",
                                            on_device=on_device)
    dim = val_feats.shape[1]
    ctx.derived["processes"] = world
    torch.manual_seed(ctx.seed)
    fc = new_classifier(dim, len(train.classes)).to(device)
    optimizer = torch.optim.SGD(fc.parameters(), lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)

    if cfg.mode == "cached":
        train_feats, train_labels = _cached_train_features(cfg, ctx, backbone, train, device)
        ctx.derived["feature_time_s"] = round(time.perf_counter() - t0, 2)

        def batches(epoch):
            return _tensor_batches(train_feats, train_labels, cfg.batch_size, ctx.seed, epoch)
    else:
        sampler = EpochBatchSampler(len(train), cfg.batch_size // world, ctx.seed, dist.get_rank(), world,
                                    drop_last=False)
        ops = linear_train_transform(cfg.image_size).transforms
        views = DeviceViews(ops, device) if cfg.aug_device != "loader" else None
        dataset = (SeededImageDataset(train, FileViews(ops, 1), read_encoded) if views is not None
                   else SeededImageDataset(train, T.Compose(ops)))
        loader = DataLoader(dataset, batch_sampler=sampler, num_workers=cfg.workers,
                            persistent_workers=cfg.workers > 0, collate_fn=partial(_collate, files=views is not None))

        def batches(epoch):
            sampler.set_epoch(epoch)
            return _feature_batches(backbone, loader, device, cfg.amp, dim, views)

    reference = copy.deepcopy(backbone.state_dict())
    state_path = ctx.out / STATE_FILE
    start, history = 0, []
    if cfg.mode == "faithful" and cfg.resume and state_path.exists():
        state = read_checkpoint(state_path)
        saved, now = state.get("config", {}), asdict(cfg)
        diff = sorted(k for k in now if k not in RESUMABLE and saved.get(k) != now[k])
        if diff:
            raise TaskError(f"{state_path} was written with other settings ({', '.join(diff)}); "
                            "remove it or use another --out")
        fc.load_state_dict(state["fc"])
        optimizer.load_state_dict(state["optimizer"])
        start, history = state["epoch"], state["history"]
        logger.info("linear: resumed %s at epoch %d", state_path, start)
    board = MetricsWriter(ctx.out / "metrics.jsonl", enabled=dist.is_main(), tensorboard=cfg.tensorboard)
    board.truncate_after(start)

    for epoch in tqdm(range(start, cfg.epochs), desc=f"linear ({cfg.mode})", initial=start, total=cfg.epochs,
                      mininterval=2.0):
        for group in optimizer.param_groups:
            group["lr"] = lr_at_epoch(lr, epoch, cfg.epochs, "step", steps)
        loss = sgd_epoch(fc, batches(epoch), optimizer)
        if epoch == start:
            _assert_frozen(backbone, reference)
        history.append({"epoch": epoch + 1, "loss": loss, **evaluate(fc, val_feats, val_labels)})
        board.write({"kind": "linear", "global_step": epoch + 1, **history[-1]})
        logger.info("linear epoch %d/%d: %s", epoch + 1, cfg.epochs, history[-1])
        if cfg.mode == "faithful":
            if dist.is_main():  # every process holds the same fc
                atomic_save({"epoch": epoch + 1, "fc": fc.state_dict(), "optimizer": optimizer.state_dict(),
                             "history": history, "config": asdict(cfg)}, state_path)
            dist.barrier()
            if cfg.stop_at and epoch + 1 >= cfg.stop_at and epoch + 1 < cfg.epochs:
                logger.info("linear: stopped after epoch %d (stop_at); run again to resume", epoch + 1)
                return None
    board.close()
    best = max(history, key=lambda h: h["top1"])
    final = history[-1]
    metrics = {"top1_best": best["top1"], "top1_final": final["top1"], "best_epoch": best["epoch"]}
    if "top5" in final:
        metrics.update(top5_best=best["top5"], top5_final=final["top5"])
    ctx.derived["history"] = history
    return metrics


class SeededView(Dataset):
    """View ``view`` of every image: ``dataset[i]`` is the training transform under the seed of (seed, view, i),
    so a cached view is a fixed function of its index (and shardable and cacheable like any data set)."""

    def __init__(self, images, transform, seed: int, view: int) -> None:
        self.base, self.seed, self.view = SeededImageDataset(images, transform), seed, view
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int):
        return self.base[(index, sample_seed(self.seed, self.view, index))]


def _cached_train_features(cfg: LinearConfig, ctx: TaskContext, backbone, train, device):
    """Centre-crop features of every training image, plus ``cached_views - 1`` seeded augmented views, all
    through the one feature path (the centre crops are the kNN bank's features: one cache entry)."""
    centre, described, on_device = eval_set(train, cfg.image_size, cfg.aug_device, device)
    sets = [(centre, described, on_device)]
    for view in range(1, cfg.cached_views):  # the augmented views: PIL in the loader (aug_device or not)
        ds = SeededView(train, linear_train_transform(cfg.image_size), ctx.seed, view)
        sets.append((ds, f"{' '.join(repr(ds.transform).split())} seed={ctx.seed} view={view}", None))
    feats, labels = [], []
    for ds, transform, views in sets:
        f, y = frozen_features(backbone, ds, feature_key(ctx, "backbone", transform, ds, cfg.amp), device,
                               cfg.batch_size, cfg.workers, ctx.feature_cache, name="linear train", on_device=views)
        feats.append(f)
        labels.append(y)
    return torch.cat(feats), torch.cat(labels)
