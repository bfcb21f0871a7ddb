"""Semantic segmentation transfer (``voc_seg``, ``cityscapes_seg``): the MoCo paper's FCN, fine-tuned whole.

Protocol (He et al. 2020, arXiv 1911.05722, appendix A.5 "Semantic segmentation"; Table 6), checked against
``fcn_d6_r50-d16_513x513_30k_voc12aug_moco.py`` and ``fcn_d6_r50-d16_769x769_90k_cityscapes_moco.py``: the ResNet's conv layers with the 3x3 convolutions of conv5 dilated 2 and
stride 1 (output stride 16), two 3x3 convolutions of 256 channels with dilation 6, each with BN and ReLU, and
a 1x1 classifier; logits upsampled bilinearly to the input. Training: random scale 0.5-2.0, crop 513 (VOC) /
769 (Cityscapes) padded with the ignore label, horizontal flip; batch 16; SGD momentum 0.9, weight decay 1e-4;
lr 0.003 (VOC) / 0.01 (Cityscapes), x0.1 at 70% and 90%; 30k iterations on VOC train_aug, 90k on Cityscapes
train. Inference on the whole image at its original size; mIoU on val from one confusion matrix.

The public configs that reproduce it are CVMI-Lab/SlotCon's ``transfer/segmentation/configs`` (@30ff33d4, an
mmsegmentation 0.x setup; ../shared/docs/protocols.md names them under mmselfsup, which has never held these
files): FCNHead with ``dropout_ratio=0`` and no auxiliary head, ``align_corners=True``, SGD with no warmup and
weight decay on every parameter, steps at 21k/27k of 30k (63k/81k of 90k), 8 images x 2 GPUs; the train pipeline
is resize, crop, flip, pad (no photometric distortion, no ``cat_max_ratio``). Where those files differ from the
paper, the paper is followed; the differences are listed with every result (``derived.deviations``,
:data:`DEVIATIONS`). Note that their Normalize uses the 0-1 ImageNet mean and std on 0-255 pixels (a bug).

Scale: one process, or N under torchrun. The batch is global (``batch_size`` images per step whatever N), BN
is synchronised (``nn.SyncBatchNorm`` on GPUs, :class:`mocobench.dist.GlooSyncBatchNorm` on CPUs), the loss is
the mean over the labelled pixels of the global batch, and each image's view is drawn from its own seed: N
processes train the same network as one. Training checkpoints every ``checkpoint_every`` iterations
(atomically) and resumes exactly; evaluation is sharded and the confusion matrix reduced once.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, replace
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from mocobench import dist
from mocobench.checkpoint import atomic_save, read_checkpoint
from mocobench.datasets import EpochBatchSampler
from mocobench.evaluators.features import autocast
from mocobench.evaluators.registry import TaskContext, TaskError, register
from mocobench.metrics import MetricsWriter
from mocobench.options import Rule, option
from mocobench.schedule import lr_at_epoch
from mocobench.segdata import (
    IGNORE,
    TRAIN_SPLITS,
    SegEvalDataset,
    SegTrainDataset,
    keep_classes,
    load_split,
    resolve_layout,
)

logger = logging.getLogger(__name__)
STATE_FILE = "seg_last.pth"
#: Fields that may change between a run and its resumption.
RESUMABLE = ("workers", "device", "resume", "stop_at", "checkpoint_every", "log_every", "tensorboard")
#: Known differences from the paper and SlotCon's setup, recorded with every result.
DEVIATIONS = (
    "loss averaged over the labelled pixels of the global batch (mmsegmentation 0.x, as in SlotCon's configs, "
    "averages over every pixel of each GPU's batch, ignored ones included), so N processes train exactly as one",
    "random scale relative to the original image (the paper); SlotCon's configs scale relative to a 513 (VOC) / "
    "1025 (Cityscapes) short side",
    "whole test images at their original size (the paper); SlotCon's configs resize VOC test images to a 513 short "
    "side and slide 769 windows over Cityscapes at 2049x1025, then resize the prediction back",
    "conv5's first block dilated too (the paper: 'the 3x3 convolutions in conv5 blocks have dilation 2'); SlotCon's "
    "contract_dilation=True keeps it at 1 (--set contract_dilation=true)",
    "one run per seed (the paper averages 5 trials: run seeds 0-4 with --seed and average)",
)


@dataclass
class SegConfig:
    """The FCN protocol; the defaults are the paper's VOC setting (``cityscapes_seg``: its Cityscapes one)."""

    data: str = option("", "VOCdevkit (or VOC2012), a Cityscapes folder, a COCO folder (classes mapped to VOC), or "
                       "a folder with images/, labels/, classes.txt and {train,val}.txt.", exists="dir")
    dataset: Literal["auto", "voc", "cityscapes", "coco", "folder"] = option(
        "auto", "Layout of --data (auto: recognised from its files).")
    train_split: str = option("", "Training split; empty: the layout's standard (VOC train_aug, the paper's; "
                              "Cityscapes/COCO/folder train).")
    val_split: str = option("val", "Scored split (the paper: VOC val2012, Cityscapes val).")
    keep_classes: tuple[str, ...] = option(
        (), "Train and score only these classes (names, comma-separated); the others join the first class, the "
        "background. Empty: every class (the paper).")
    iterations: int = option(30000, "Training iterations (paper: 30k on VOC train_aug; SlotCon: max_iters 30000).", min=1)
    batch_size: int = option(16, "Global batch: images per iteration over all processes (paper: 16).", min=1)
    lr: float = option(0.003, "Base learning rate (paper: 0.003 on VOC, 0.01 on Cityscapes).", min=0, min_open=True)
    momentum: float = option(0.9, "SGD momentum (SlotCon: optimizer momentum 0.9; the paper does not name it).", min=0, max=1, max_open=True)
    weight_decay: float = option(1e-4, "Weight decay on every parameter (paper: 0.0001).", min=0)
    steps: tuple[float, ...] = option((0.7, 0.9), "lr x0.1 at these fractions of the iterations (paper: 70% and 90%; "
                                      "SlotCon: step=[21000, 27000] of 30000).",
                                      min=0, max=1, min_open=True, increasing=True)
    crop_size: int = option(513, "Square training crop (paper: 513 on VOC, 769 on Cityscapes).", min=16)
    scale_range: tuple[float, ...] = option((0.5, 2.0), "Random scale of the training images (paper: 0.5-2.0).",
                                            min=0, min_open=True)
    test_scale: float = option(1.0, "Scale of the test images before the network (paper: 1, the original size); the "
                               "predictions are scored at the original size either way.", min=0, min_open=True)
    head_channels: int = option(256, "Channels of the head's 3x3 convolutions (paper: 256).", min=1)
    head_dilation: int = option(6, "Dilation of the head's 3x3 convolutions (paper: 6, DeepLab's large field of view).", min=1)
    head_convs: int = option(2, "Number of 3x3 convolutions in the head (paper: 2).", min=0)
    frozen_backbone: bool = option(
        False, "Train the head only: the backbone's weights and BN statistics stay as loaded (the paper fine-tunes "
        "the whole network). With head_convs=0 this is a linear probe of the conv5 features, as the frozen-feature "
        "segmentation probes of MaskContrast (arXiv 2102.06191) and DINOv2 (arXiv 2304.07193).")
    contract_dilation: bool = option(
        False, "Keep dilation 1 in conv5's first block (SlotCon's mmseg contract_dilation=True, torchvision's "
        "replace_stride_with_dilation); default: every conv5 3x3 conv dilated 2, as the paper says.")
    preset: Literal["", "cpu-smoke"] = option(
        "", "cpu-smoke: crop 128, batch 8, 300 iterations, images at 1/8-1/2 scale (test 1/4), for CPUs; --set "
        "values apply over it.")
    amp: Literal["fp32", "bf16"] = option("fp32", "Training and inference precision: fp32 (paper) or bf16 autocast.")
    checkpoint_every: int = option(1000, "Save <out>/seg_last.pth every N iterations (and at the end).", min=1)
    log_every: int = option(20, "Log the loss every N iterations (and write it to <out>/metrics.jsonl).", min=1)
    tensorboard: bool = option(True, "Also write the loss and lr as TensorBoard events to <out>/tensorboard.")
    resume: bool = option(True, "Continue <out>/seg_last.pth when it exists.")
    stop_at: int = option(0, "Stop after this iteration without results (resume later); 0 = run to the end.", min=0)
    workers: int = option(4, "Data-loading workers per process.", min=0)
    device: str = option("auto", "auto, cpu or cuda.")

    RULES: ClassVar = (
        Rule(("scale_range",), lambda c: len(c.scale_range) == 2 and c.scale_range[0] <= c.scale_range[1],
             "two scales MIN,MAX with MIN <= MAX"),
        Rule(("stop_at", "iterations"), lambda c: c.stop_at <= c.iterations,
             "stop_at at most iterations (0: run to the end)"),
    )


@dataclass
class CityscapesSegConfig(SegConfig):
    iterations: int = option(90000, "Training iterations (paper: 90k on Cityscapes train; SlotCon: 90000).", min=1)
    lr: float = option(0.01, "Base learning rate (paper: 0.01 on Cityscapes).", min=0, min_open=True)
    crop_size: int = option(769, "Square training crop (paper: 769 on Cityscapes).", min=16)


#: ``preset=cpu-smoke`` (ResNet-18 on two CPU cores): these values replace the defaults, and ``--set`` pairs
#: apply over them (:func:`mocobench.transfer.run.run_transfer`; :func:`with_preset` for code).
PRESETS = {"cpu-smoke": {"crop_size": 128, "batch_size": 8, "iterations": 300, "scale_range": (0.125, 0.5),
                         "test_scale": 0.25, "checkpoint_every": 100}}
SegConfig.PRESETS = CityscapesSegConfig.PRESETS = PRESETS


def with_preset(cls: type[SegConfig], preset: str, **changes) -> SegConfig:
    """A config of ``cls`` with ``preset``'s values, then ``changes``."""
    return replace(cls(), preset=preset, **{**PRESETS.get(preset, {}), **changes})


# ---------------------------------------------------------------------------------------------- model

def dilate_res5(net: nn.Module, dilation: int = 2, contract_first: bool = False) -> nn.Module:
    """Every 3x3 convolution of a torchvision ResNet's ``layer4`` (conv5) gets stride 1 and ``dilation`` (padding
    ``dilation``: sizes kept), and its downsampling shortcut stride 1: output stride 32 -> 16 (the paper: "the 3x3
    convolutions in conv5 blocks have dilation 2 and stride 1"; mmseg ResNet ``dilations=(1, 1, 1, 2)``,
    ``strides=(1, 2, 2, 1)``). ``contract_first``: the first block's convolutions keep dilation 1 (mmseg
    ``contract_dilation``). The weights are unchanged. Returns ``net``."""
    for i, block in enumerate(net.layer4):
        d = 1 if contract_first and i == 0 else dilation
        for conv in (m for m in block.modules() if isinstance(m, nn.Conv2d)):
            if conv.kernel_size == (3, 3):
                conv.stride, conv.dilation, conv.padding = (1, 1), (d, d), (d, d)
        if block.downsample is not None:
            block.downsample[0].stride = (1, 1)
    return net


def _res5_channels(net: nn.Module) -> int:
    last = net.layer4[-1]
    return (last.bn3 if hasattr(last, "bn3") else last.bn2).num_features


class FCN(nn.Module):
    """The paper's FCN: ResNet conv layers (conv5 dilated, stride 16), ``convs`` x [3x3 conv (``channels``,
    dilation ``dilation``, no bias), BN, ReLU], 1x1 classifier, no dropout. Shape: (N, 3, H, W) -> (N, classes,
    H', W'), bilinear with aligned corners (SlotCon's ``align_corners=True``; DeepLab's 513 = 32 x 16 + 1 crops) to
    ``size`` (default (H, W)); the map before upsampling is (ceil(H/16), ceil(W/16)).

    Initialisation as mmsegmentation: head convs Kaiming normal (fan_out, ReLU; mmcv ``ConvModule``), BN weight 1
    and bias 0, classifier normal std 0.01 and bias 0 (``BaseDecodeHead.init_weights``)."""

    def __init__(self, backbone: nn.Module, num_classes: int, channels: int = 256, dilation: int = 6,
                 convs: int = 2, contract_dilation: bool = False) -> None:
        super().__init__()
        self.backbone = dilate_res5(backbone, 2, contract_dilation)
        layers, c = [], _res5_channels(backbone)
        for _ in range(convs):
            conv = nn.Conv2d(c, channels, 3, padding=dilation, dilation=dilation, bias=False)
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            layers += [conv, nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
            c = channels
        self.head = nn.Sequential(*layers)
        self.classifier = nn.Conv2d(c, num_classes, 1)
        nn.init.normal_(self.classifier.weight, 0.0, 0.01)
        nn.init.zeros_(self.classifier.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """conv5 output: (N, 3, H, W) -> (N, 2048 or 512, ceil(H/16), ceil(W/16))."""
        b = self.backbone
        x = b.maxpool(b.relu(b.bn1(b.conv1(x))))
        return b.layer4(b.layer3(b.layer2(b.layer1(x))))

    def forward(self, x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        logits = self.classifier(self.head(self.features(x)))
        return F.interpolate(logits, size=size or x.shape[-2:], mode="bilinear", align_corners=True)


# ---------------------------------------------------------------------------------------------- metrics

def confusion(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(C, C) int64 counts on the inputs' device, rows the true class, columns the predicted one; pixels labelled 255
    are left out. Shapes: pred and target (...), the same."""
    keep = target != IGNORE
    idx = target[keep].long() * num_classes + pred[keep].long()
    return torch.bincount(idx, minlength=num_classes * num_classes).view(num_classes, num_classes)


def seg_scores(conf: torch.Tensor, classes: tuple[str, ...]) -> dict:
    """mIoU, pixel accuracy and mean class accuracy (percent) of a confusion matrix, with per-class IoU.

    IoU_c = TP / (TP + FP + FN). A class absent from both the ground truth and the predictions (union 0) has no
    IoU and is left out of the mean (listed in ``left_out``), as mmsegmentation's ``nanmean``; a class predicted
    but absent from the ground truth scores 0. Mean accuracy averages TP / GT over the classes in the ground truth.
    """
    conf = conf.double()
    tp, gt, pred = conf.diag(), conf.sum(1), conf.sum(0)
    union = gt + pred - tp
    present = union > 0
    iou = torch.where(present, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))
    total = conf.sum()
    return {
        "mIoU": 100.0 * float(iou[present].mean()) if present.any() else float("nan"),
        "pixel_acc": 100.0 * float(tp.sum() / total) if total > 0 else float("nan"),
        "mean_acc": 100.0 * float((tp[gt > 0] / gt[gt > 0]).mean()) if (gt > 0).any() else float("nan"),
        "per_class_iou": {c: (None if math.isnan(v) else 100.0 * v) for c, v in zip(classes, iou.tolist(),
                                                                                             strict=True)},
        "left_out": [c for c, p in zip(classes, present.tolist(), strict=True) if not p],
    }


# ---------------------------------------------------------------------------------------------- run

def _check(cfg: SegConfig, world: int) -> None:
    """What the config cannot say alone (its fields' ranges and RULES are checked before): the relation to the
    number of processes."""
    if cfg.batch_size % world:
        raise TaskError(f"batch_size={cfg.batch_size} (global) must be a multiple of the {world} processes")


def milestones(cfg: SegConfig) -> tuple[int, ...]:
    """The iterations where the lr drops x0.1: ``round(f * iterations)`` for each fraction (30k: 21000, 27000)."""
    return tuple(round(f * cfg.iterations) for f in cfg.steps)


def run_segmentation(task: str, cfg: SegConfig, ctx: TaskContext) -> dict[str, float] | None:
    world = dist.get_world_size()
    _check(cfg, world)
    if ctx.info.stem != "standard":
        raise TaskError(f"the checkpoint's ResNet has a small-image stem ({ctx.info.stem}); the FCN protocol needs "
                        "the standard 7x7 stride-2 stem (output stride 16)")
    device = dist.select_device(cfg.device)
    layout = resolve_layout(cfg.data, cfg.dataset)
    train = load_split(cfg.data, layout, cfg.train_split or TRAIN_SPLITS[layout])
    val = load_split(cfg.data, layout, cfg.val_split)
    if train.classes != val.classes:
        raise TaskError(f"the train and val splits of {cfg.data} name different classes")
    if cfg.keep_classes:
        train, val = keep_classes(train, cfg.keep_classes), keep_classes(val, cfg.keep_classes)
    classes = train.classes
    torch.manual_seed(ctx.seed)  # the head's initialisation: the same on every process
    model = FCN(ctx.backbone, len(classes), cfg.head_channels, cfg.head_dilation, cfg.head_convs,
                cfg.contract_dilation)
    if cfg.frozen_backbone:
        model.backbone.requires_grad_(False)  # no graph through it: the step costs the head's backward only
    model = dist.sync_batchnorm(model, device).to(device)
    ctx.derived.update(layout=layout, train_split=train.name, val_split=val.name, num_classes=len(classes),
                       sizes={"train": len(train), "val": len(val)}, milestones=list(milestones(cfg)),
                       output_stride=16, processes=world, per_process_batch=cfg.batch_size // world,
                       resolved={k: getattr(cfg, k) for k in PRESETS.get(cfg.preset, {})},
                       deviations=list(DEVIATIONS))
    done = _train(cfg, ctx, model, train, device)
    if done is None:
        return None
    t0 = time.perf_counter()
    scores = evaluate(model, val, device, cfg)
    ctx.derived.update(per_class_iou=scores["per_class_iou"], classes_left_out=scores["left_out"],
                       eval_time_s=round(time.perf_counter() - t0, 2), **done)
    if scores["left_out"]:
        logger.info("%s: %d classes absent from the val labels and predictions, left out of the mean: %s", task,
                    len(scores["left_out"]), ", ".join(scores["left_out"]))
    logger.info("%s: mIoU %.2f, pixel accuracy %.2f, mean accuracy %.2f", task, scores["mIoU"], scores["pixel_acc"],
                scores["mean_acc"])
    return {k: scores[k] for k in ("mIoU", "pixel_acc", "mean_acc")}


def _train(cfg: SegConfig, ctx: TaskContext, model: nn.Module, train, device: torch.device) -> dict | None:
    """``cfg.iterations`` SGD steps of the whole network, resumable; None when ``stop_at`` stopped it early."""
    from mocobench.pretrain.engine import StopSignal, TrainingInterrupted

    world, rank = dist.get_world_size(), dist.get_rank()
    trained = [p for p in model.parameters() if p.requires_grad]  # the head only with frozen_backbone
    optimizer = torch.optim.SGD(trained, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    state_path = ctx.out / STATE_FILE
    start, losses, trained_s = 0, [], 0.0
    backbone = {"source": ctx.info.source, "sha256": ctx.info.sha256, "arch": ctx.info.arch,
                "normalize": ctx.info.normalize}
    found = cfg.resume and state_path.exists()
    if dist.all_reduce_min(int(found), device) != int(dist.any_rank(found, device)):
        raise TaskError(f"{state_path} exists for some processes only: the output folder must be shared by every "
                        "machine (or copied to each) for a run to resume")
    if found:
        state = read_checkpoint(state_path)
        saved, now = state.get("config", {}), asdict(cfg)
        diff = sorted(k for k in now if k not in RESUMABLE and saved.get(k) != now[k])
        diff += ["seed"] if state.get("seed") != ctx.seed else []
        diff += [f"backbone {k}" for k in backbone if state.get("backbone", {}).get(k) != backbone[k]]
        if diff:
            raise TaskError(f"{state_path} was written with other settings or another checkpoint ({', '.join(diff)}); "
                            "remove it or use another --out")
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise TaskError(f"{state_path} does not fit this network: {e}") from e
        start, losses, trained_s = state["iteration"], state["losses"], state.get("train_time_s", 0.0)
        logger.info("segmentation: resumed %s at iteration %d of %d", state_path, start, cfg.iterations)
    if cfg.stop_at and cfg.stop_at <= start < cfg.iterations:
        logger.info("segmentation: %s is at iteration %d, at or past stop_at=%d; run without stop_at to continue",
                    state_path, start, cfg.stop_at)
        return None
    board = MetricsWriter(ctx.out / "metrics.jsonl", enabled=dist.is_main(), tensorboard=cfg.tensorboard)
    board.truncate_after(start)
    net = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    sampler = EpochBatchSampler(len(train), cfg.batch_size // world, ctx.seed, rank, world, drop_last=True)
    loader = DataLoader(SegTrainDataset(train, cfg.crop_size, tuple(cfg.scale_range)), batch_sampler=sampler,
                        num_workers=cfg.workers, persistent_workers=cfg.workers > 0, pin_memory=device.type == "cuda")
    steps = milestones(cfg)

    def save(it: int) -> None:
        if dist.is_main():
            atomic_save({"iteration": it, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                         "losses": losses, "config": asdict(cfg), "seed": ctx.seed, "backbone": backbone,
                         "train_time_s": trained_s + time.perf_counter() - t0}, state_path)
        dist.barrier()

    model.train()
    if cfg.frozen_backbone:
        model.backbone.eval()  # its BN normalises with the loaded statistics and does not update them
    it, t0 = start, time.perf_counter()
    with StopSignal() as stop:
        while it < cfg.iterations:
            epoch, step = divmod(it, sampler.steps_per_epoch)
            sampler.set_epoch(epoch, step)
            for images, labels in loader:
                lr = lr_at_epoch(cfg.lr, it, cfg.iterations, "step", steps)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
                with autocast(device, cfg.amp):
                    logits = net(images)
                loss_sum = F.cross_entropy(logits.float(), labels, ignore_index=IGNORE, reduction="sum")
                # the mean over the global batch's labelled pixels; DDP averages the gradients over processes
                labelled = dist.all_reduce_sum((labels != IGNORE).sum().double()).clamp(min=1)
                loss = loss_sum * (world / labelled)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                it += 1
                value = dist.all_reduce_mean(float(loss.detach()), device)
                if not math.isfinite(value):
                    raise TaskError(f"segmentation: the loss is {value} at iteration {it} (lr {lr:g}); the last good "
                                    f"state is {state_path} — lower --set lr or use amp=fp32")
                losses.append(round(value, 6))
                if it % cfg.log_every == 0 or it == cfg.iterations:
                    window = losses[-cfg.log_every:]
                    board.write({"kind": "segmentation", "global_step": it, "loss": sum(window) / len(window),
                                 "lr": lr})
                    rate = (it - start) / max(time.perf_counter() - t0, 1e-9)
                    logger.info("segmentation it %d/%d: loss %.4f lr %.2g, %.2f s/it, ETA %.0f min", it, cfg.iterations,
                                sum(losses[-cfg.log_every:]) / len(losses[-cfg.log_every:]), lr, 1 / rate,
                                (cfg.iterations - it) / rate / 60)
                stopping = stop.requested(device)
                if it % cfg.checkpoint_every == 0 or it == cfg.iterations or stopping or it == cfg.stop_at:
                    save(it)
                if stopping:
                    raise TrainingInterrupted(f"stopped at iteration {it}; run the same command to resume")
                if cfg.stop_at and it >= cfg.stop_at and it < cfg.iterations:
                    logger.info("segmentation: stopped after iteration %d (stop_at); run again to resume", it)
                    return None
                if it >= cfg.iterations:
                    break
    board.close()
    train_s = trained_s + time.perf_counter() - t0  # over every session of the run (saved in the state)
    return {"iterations_resumed_at": start, "train_time_s": round(train_s, 2),
            "s_per_iteration": round(train_s / max(it, 1), 4), "final_loss": losses[-1] if losses else None}


@torch.no_grad()
def evaluate(model: FCN, split, device: torch.device, cfg: SegConfig) -> dict:
    """Whole-image inference (batch 1, ``test_scale``), logits upsampled to the original label size, one confusion
    matrix; processes take images ``rank::world`` and the matrices are summed once."""
    model.eval()
    indices = list(range(dist.get_rank(), len(split), dist.get_world_size()))
    loader = DataLoader(SegEvalDataset(split, indices, cfg.test_scale), batch_size=1, num_workers=cfg.workers)
    conf = torch.zeros(len(split.classes), len(split.classes), dtype=torch.int64, device=device)  # NCCL: on the GPU
    for image, label in loader:
        with autocast(device, cfg.amp):
            logits = model(image.to(device), size=tuple(label.shape[-2:]))
        conf += confusion(logits.argmax(1), label.to(device), len(split.classes))
    return seg_scores(dist.all_reduce_sum(conf).cpu(), split.classes)


register("voc_seg", SegConfig, "FCN semantic segmentation, VOC 2012 train_aug -> val (mIoU)", distributed=True)(
    lambda cfg, ctx: run_segmentation("voc_seg", cfg, ctx))
register("cityscapes_seg", CityscapesSegConfig, "FCN semantic segmentation, Cityscapes train -> val (mIoU)",
         distributed=True)(lambda cfg, ctx: run_segmentation("cityscapes_seg", cfg, ctx))
