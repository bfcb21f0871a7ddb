"""Typed pretraining configuration. Defaults are the published recipes (``../shared/docs/protocols.md``).

Fields left at ``None`` take the value of the chosen method's recipe (:data:`RECIPES`) when the
config is resolved; the resolved config is what is saved beside the outputs. Derived quantities
(per-process batch, the lr scaled to the batch size, BN splits) are computed by methods and never
written back into the fields.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import click

from mocobench.datasets import OnBadImage, on_bad_image_option
from mocobench.options import Rule, check_config, option

ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
METHODS = ("moco_v1", "moco_v2", "supervised", "end_to_end", "memory_bank", "simclr")
MOCO_METHODS = ("moco_v1", "moco_v2")

#: Method recipes: MoCo v1 (arXiv 1911.05722 sec. 3.3/4) and v2 (arXiv 2003.04297 table 1),
#: as in the official ``main_moco.py`` flags (``--mlp --moco-t 0.2 --aug-plus --cos`` for v2);
#: supervised: torchvision's ImageNet reference recipe (``references/classification``: lr 0.1 per
#: 256 images, 90 epochs, x0.1 at 30 and 60; RandomResizedCrop + flip).
_MOCO = {"lr": 0.03, "epochs": 200, "lr_milestones": (120, 160)}
RECIPES: dict[str, dict[str, object]] = {
    "moco_v1": {**_MOCO, "moco_t": 0.07, "mlp": False, "aug": "v1", "lr_schedule": "step"},
    "moco_v2": {**_MOCO, "moco_t": 0.2, "mlp": True, "aug": "v2", "lr_schedule": "cosine"},
    # The paper's other mechanisms (Fig. 2) under the recipe of its Fig. 3 comparison, MoCo v1's (for the
    # memory bank also InstDisc's own: T 0.07, a linear 128-d head); simclr (NT-Xent) takes moco_v2's. Only
    # the negatives and the key update differ from MoCo (mocobench.pretrain.mechanisms).
    "end_to_end": {**_MOCO, "moco_t": 0.07, "mlp": False, "aug": "v1", "lr_schedule": "step"},
    "memory_bank": {**_MOCO, "moco_t": 0.07, "mlp": False, "aug": "v1", "lr_schedule": "step"},
    "simclr": {**_MOCO, "moco_t": 0.2, "mlp": True, "aug": "v2", "lr_schedule": "cosine"},
    "supervised": {"lr": 0.1, "epochs": 90, "lr_milestones": (30, 60), "lr_schedule": "step", "bn_splits": 1},
}


#: BN groups over the global batch in the paper's setting (8 GPUs, BN per GPU, 256 / 8 = 32 images each).
PAPER_BN_GROUPS = 8


class ConfigError(ValueError):
    """An option value that cannot work; the message names the option and what is expected."""



@dataclass
class PretrainConfig:
    """Everything ``mocobench pretrain`` needs. Each field is one CLI option (``--queue-size`` etc.)."""

    data: str = option("", "ImageFolder tree or plain folder of training images (labels are used by supervised only).", required=True,
                       exists="dir")
    out: str = option("", "Output folder: checkpoints, metrics.jsonl, config.yaml, log.txt.", required=True)
    method: Literal["moco_v1", "moco_v2", "supervised", "end_to_end", "memory_bank", "simclr"] = option(
        "moco_v2",
        "moco_v1 (arXiv 1911.05722), moco_v2 (2003.04297), supervised (labels + cross-entropy: the baseline), "
        "the paper's other mechanisms: end_to_end (InfoNCE, the batch's keys as negatives, v1 recipe) and "
        "memory_bank (InstDisc), or simclr (SimCLR's NT-Xent, 2N-2 negatives).",
    )
    arch: Literal["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"] = option(
        "resnet50", "torchvision ResNet backbone (the papers use resnet50)."
    )
    epochs: int | None = option(None, "Training epochs (MoCo papers: 200, v2 also 800; supervised: 90).", min=1)
    batch_size: int = option(256, "Global batch size over all processes (papers: 256).", min=1)
    lr: float | None = option(
        None, "Learning rate for a batch of 256 (MoCo 0.03, supervised 0.1); the lr used is lr * batch_size / 256."
    , min=0, min_open=True)
    lr_schedule: Literal["step", "cosine"] | None = option(None, "step (v1: x0.1 at the milestones) or cosine (v2).")
    lr_milestones: tuple[int, ...] | None = option(
        None, "Epochs where the step schedule multiplies lr by 0.1 (MoCo v1: 120,160; supervised: 30,60).",
        min=1, increasing=True)
    momentum: float = option(0.9, "SGD momentum.", min=0, max=1, max_open=True)
    weight_decay: float = option(1e-4, "SGD weight decay.", min=0)
    image_size: int = option(224, "Crop size of the training views.", min=8)
    queue_size: int = option(
        65536, "Queue size K (number of negatives; memory_bank: negatives sampled per step); MoCo: divisible by the batch.", min=1)
    dim: int = option(128, "Feature dimension of the projection head.", min=1)
    stem: Literal["standard", "small"] = option(
        "standard", "ResNet stem: standard (7x7/2 conv1 + max-pool, the papers') or small (3x3/1 conv1, no max-pool: "
        "the MoCo CIFAR demo, solo-learn's and lightly's CIFAR models) for images of 32-96 px. Recorded in the "
        "checkpoint; the classification tasks rebuild it, detection refuses it.")
    mask_own_keys: bool = option(
        False, "MoCo: keep each queued key's image index and leave a query's own older keys out of its negatives "
        "(not the paper's; for data sets not much larger than the queue, where a query's key from the last "
        "epoch is a near-copy of its positive).")
    moco_m: float = option(0.999, "Momentum of the key encoder.", min=0, max=1, max_open=True)
    moco_t: float | None = option(None, "Softmax temperature (v1: 0.07, v2: 0.2).", min=0, min_open=True)
    bank_momentum: float = option(0.5, "memory_bank: momentum of the bank entry update (InstDisc: 0.5).", min=0,
                                 max=1, max_open=True)
    mlp: bool | None = option(None, "MLP projection head (v2) instead of one fc layer (v1).")
    aug: Literal["v1", "v2"] | None = option(None, "Augmentation: v1, or v2 (aug+ with blur).")
    bn_splits: int | None = option(
        None,
        "BN statistics per sub-batch of each process (shuffling BN inside a process, as the MoCo CIFAR demo). "
        "Default: the paper's 8 BN groups in the global batch (8 GPUs x 32 images at 256): 8 on one process, "
        "8/W under torchrun with W processes (4 on 2, 1 on 8 or more), lowered to the nearest split that "
        "divides the per-process batch; 1 for supervised.", min=1,
    )
    on_bad_image: OnBadImage = on_bad_image_option()
    detect_anomaly: bool = option(False, "torch.autograd anomaly detection: name the operation that made a NaN (slow).")
    max_steps: int | None = option(None, "Stop after this many optimiser steps in total (checkpointed; resumable).", min=1)
    seed: int = option(0, "Seed of the model init, data order, augmentation and shuffles.", min=0)
    workers: int = option(4, "Data-loading worker processes per training process (0: load in the main process).", min=0)
    aug_backend: Literal["pil", "tensor"] = option(
        "pil", "How the contrastive views are made: pil (the official per-image pipeline) or tensor (the same random "
        "draws and crop, then colour jitter, grayscale, blur and flip as batched tensor ops in the loader; within "
        "~1.3/255 of pil per pixel and faster: see README). Not for supervised.")
    aug_device: Literal["loader", "cpu", "cuda"] = option(
        "loader", "Where the views' pixels are made: loader (in the loader workers) or a device (with --aug-backend "
        "tensor): the workers only read each file and draw its random parameters; decoding (torchvision's decode_jpeg, "
        "nvJPEG on CUDA), the crop and the photometric ops run batched there, within 1/255 of the tensor backend. "
        "cuda: the training GPU; cpu: the same path on the CPU (tests).")
    decode_cache_mib: int = option(
        1024, "Keep the decoded images in memory when they fit in this many MiB (decoded once, not every epoch); 0: never."
    , min=0)
    device: Literal["auto", "cpu", "cuda"] = option("auto", "auto uses CUDA when available.")
    amp: Literal["none", "bf16", "fp16"] = option("none", "Mixed precision (fp16 uses a gradient scaler; CUDA only).")
    channels_last: bool = option(False, "Use the channels_last memory format.")
    compile: bool = option(False, "torch.compile the encoders (experimental: failed with torch 2.11 on CUDA; see README).")
    save_every: int = option(10, "Also keep checkpoint_<epoch>.pth every N epochs (checkpoint_last.pth is every epoch).", min=1)
    log_every: int = option(10, "Write a step line to metrics.jsonl every N steps.", min=1)
    tensorboard: bool = option(True, "Also write metrics.jsonl's numbers as TensorBoard events to <out>/tensorboard.")
    resume: str | None = option(None, "Checkpoint to resume from, or 'auto' for <out>/checkpoint_last.pth if present.")
    knn_train: str | None = option(None, "Labelled ImageFolder used as the kNN monitor's bank (e.g. a train split).",
                                    exists="dir")
    knn_val: str | None = option(None, "Labelled ImageFolder scored by the kNN monitor (e.g. a val split).",
                                  exists="dir")
    knn_k: int = option(200, "kNN monitor: neighbours (MoCo CIFAR demo: 200).", min=1)
    knn_t: float = option(0.1, "kNN monitor: temperature (MoCo CIFAR demo: 0.1).", min=0, min_open=True)
    knn_every: int = option(1, "Run the kNN monitor every N epochs (and after the last).", min=1)

    RULES: ClassVar = (
        Rule(("lr_milestones", "epochs"), lambda c: c.lr_schedule != "step" or c.epochs is None
             or not c.lr_milestones or c.lr_milestones[-1] < c.epochs or c.recipe_milestones(),
             "with --lr-schedule step, every milestone given an epoch before the last (1 <= milestone < epochs)"),
        Rule(("queue_size", "batch_size"), lambda c: c.method not in MOCO_METHODS or c.queue_size % c.batch_size == 0,
             "a queue size divisible by the global batch size (the queue is a ring written one global batch at a time)"),
        Rule(("knn_train", "knn_val"), lambda c: (c.knn_train is None) == (c.knn_val is None),
             "both or neither: the kNN monitor's bank and the split it scores"),
        Rule(("aug_backend", "method"), lambda c: not (c.aug_backend == "tensor" and c.method == "supervised"),
             "--aug-backend pil for supervised (tensor makes the contrastive views; supervised uses the linear "
             "protocol's PIL transform)"),
        Rule(("aug_device", "aug_backend"), lambda c: c.aug_device == "loader" or c.aug_backend == "tensor",
             "--aug-backend tensor with --aug-device cpu or cuda (the device runs the tensor backend's ops)"),
        Rule(("aug_device", "device"), lambda c: not (c.aug_device == "cuda" and c.device == "cpu"),
             "--aug-device cuda only when training on CUDA (the views are made on the training device)"),
        Rule(("amp", "device"), lambda c: not (c.amp == "fp16" and c.device == "cpu"),
             "--amp bf16 on the CPU (fp16 needs CUDA)"),
        Rule(("mask_own_keys", "method"), lambda c: not c.mask_own_keys or c.method in MOCO_METHODS,
             "--mask-own-keys with a MoCo method (the queue's keys)"),
        Rule(("resume",), lambda c: c.resume in (None, "auto") or Path(c.resume).is_file(),
             "'auto' or an existing checkpoint file"),
    )

    # ----------------------------------------------------------------------------- resolution
    def resolved(self) -> PretrainConfig:
        """A copy with every ``None`` recipe field filled from :data:`RECIPES` for ``method``."""
        if self.method not in RECIPES:
            raise ConfigError(f"--method {self.method!r} is unknown; choose one of {', '.join(METHODS)}")
        fill = {k: v for k, v in RECIPES[self.method].items() if getattr(self, k) is None}
        return dataclasses.replace(self, **fill)

    def recipe_milestones(self) -> bool:
        """The milestones are the method's recipe's (a short run keeps them: its lr never drops; logged)."""
        return self.lr_milestones == RECIPES.get(self.method, {}).get("lr_milestones")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["lr_milestones"] = None if self.lr_milestones is None else list(self.lr_milestones)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> PretrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ConfigError(f"unknown config keys {sorted(unknown)}; known: {sorted(names)}")
        d = dict(d)
        if d.get("lr_milestones") is not None:
            d["lr_milestones"] = tuple(d["lr_milestones"])
        return cls(**d)

    # ----------------------------------------------------------------------------- derived values
    def per_process_batch(self, world: int) -> int:
        return self.batch_size // world

    def scaled_lr(self) -> float:
        """Linear scaling rule: ``lr * batch_size / 256`` (0.03 at 256 is the papers' value)."""
        return self.lr * self.batch_size / 256

    def effective_bn_splits(self, world: int) -> int:
        """BN groups per process: ``bn_splits``, or by default the paper's :data:`PAPER_BN_GROUPS` groups over
        the global batch (arXiv 1911.05722 sec. 3.3: BN per GPU, 8 GPUs of 32 images; so a one-process run and
        a W-process run see the same BN batch size), the largest split up to ``8 // W`` that leaves at least
        2 images per group."""
        if self.bn_splits is not None:
            return self.bn_splits
        local = self.per_process_batch(world)
        target = max(1, PAPER_BN_GROUPS // world)
        return next(s for s in range(target, 0, -1) if s == 1 or (local % s == 0 and local // s >= 2))

    def validate(self, world: int = 1) -> None:
        """Raise :class:`ConfigError` naming the option, before any work starts."""
        if not self.data:
            raise ConfigError("--data is required (on the command line or in --config FILE): an ImageFolder tree or a "
                              "folder of images")
        if not self.out:
            raise ConfigError("--out is required (on the command line or in --config FILE): the folder for checkpoints "
                              "and metrics")
        try:  # every field's declared range, choices and paths, then RULES
            check_config(self, flags=True)
        except click.BadParameter as e:
            raise ConfigError(e.message) from e
        if self.batch_size % world:
            raise ConfigError(f"--batch-size {self.batch_size} must be divisible by the {world} processes")
        splits = self.effective_bn_splits(world)
        local = self.per_process_batch(world)
        if splits < 1 or local % splits or local // splits < 2:
            raise ConfigError(
                f"--bn-splits {splits} must divide the per-process batch {local} into sub-batches of at "
                "least 2 images; pass --bn-splits 1 to turn split BN off"
            )


#: Fields that may differ between a run and its resumption: bookkeeping (a run folder may be moved), plus ``epochs`` (to extend a
#: run) and ``lr`` (to continue past a non-finite loss with a lower rate). A change is logged.
RESUMABLE_CHANGES = frozenset(
    {"epochs", "lr", "max_steps", "workers", "resume", "save_every", "log_every", "tensorboard", "device", "compile",
     "data", "out",
     "on_bad_image", "detect_anomaly", "decode_cache_mib", "knn_every", "knn_train", "knn_val", "knn_k", "knn_t"}
)
