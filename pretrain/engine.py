"""The pretraining loop: builds the parts from a :class:`PretrainConfig`, trains, checkpoints, resumes.

``pretrain(cfg)`` is the one entry point (the CLI only parses options). Runs on one CPU process, or
on N processes under torchrun (gloo on CPU, NCCL on GPU) with DistributedDataParallel.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

import mocobench
from mocobench import dist
from mocobench.atomic import OutputFolderError, writable_folder
from mocobench.augment import TwoCrops, linear_train_transform, moco_transform
from mocobench.batch_augment import CollateViews, TensorViews
from mocobench.checkpoint import (
    FORMAT,
    FORMAT_VERSION,
    CheckpointError,
    atomic_save,
    detect_format,
    read_checkpoint,
    set_stem,
    strip_wrappers,
)
from mocobench.datasets import EpochBatchSampler, SeededImageDataset, list_images, load_rgb, read_encoded
from mocobench.device_views import CollateFiles, DeviceViews, FileViews
from mocobench.evaluators.knn import KnnEvaluator
from mocobench.log import setup_logging
from mocobench.metrics import MetricsWriter
from mocobench.pretrain.config import PAPER_BN_GROUPS, RESUMABLE_CHANGES, ConfigError, PretrainConfig
from mocobench.pretrain.mechanisms import EndToEnd, MemoryBank, SimCLR
from mocobench.pretrain.moco import MoCo
from mocobench.pretrain.split_bn import split_bn_resnet
from mocobench.pretrain.supervised import Supervised
from mocobench.results import package_versions
from mocobench.schedule import lr_at_epoch

logger = logging.getLogger(__name__)

LAST = "checkpoint_last.pth"


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; training stopped without saving the bad state."""


class TrainingInterrupted(RuntimeError):
    """SIGTERM/SIGINT arrived; the run stopped after the current step and saved a resumable checkpoint."""


class StopSignal:
    """Context manager: SIGTERM and SIGINT set a flag instead of killing the process (main thread only).

    The loop checks :meth:`requested` after every step; under torchrun the flag is OR-ed over ranks so
    that all of them stop at the same step.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._old: dict[int, object] = {}

    def __enter__(self) -> StopSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame) -> None:
        self.received = signum
        logger.warning("received %s: stopping after this step and saving a checkpoint", signal.Signals(signum).name)

    def requested(self, device: torch.device) -> bool:
        return dist.any_rank(self.received is not None, device)


@dataclass
class Progress:
    """Where training stands: ``epoch`` is the epoch in progress (0-based), ``step`` its next step."""

    epoch: int = 0
    step: int = 0
    global_step: int = 0


#: A pretraining method as the loop sees it: ``inputs(batch)``, ``forward(*inputs, generator) ->
#: (logits, labels, state)`` (cross-entropy of logits against labels is the loss), ``after_step(state)``,
#: ``backbone`` and ``backbone_prefix``. The methods differ only inside these classes.
Method = MoCo | Supervised | EndToEnd | SimCLR | MemoryBank


def build_model(cfg: PretrainConfig, world: int, num_classes: int = 0, num_images: int = 0) -> Method:
    """The method's module around a torchvision ResNet; BatchNorm2d becomes SplitBatchNorm when
    bn_splits > 1. ``num_classes`` sizes the supervised classifier, ``num_images`` the memory bank."""
    splits = cfg.effective_bn_splits(world)
    arch = getattr(torchvision.models, cfg.arch)

    def resnet(num_classes: int) -> nn.Module:
        net = split_bn_resnet(arch, splits, num_classes=num_classes) if splits > 1 else arch(num_classes=num_classes)
        return set_stem(net, cfg.stem)

    if cfg.method == "supervised":
        return Supervised(resnet(num_classes))
    encoder_fn = partial(resnet, cfg.dim)
    if cfg.method in ("end_to_end", "simclr"):
        return (EndToEnd if cfg.method == "end_to_end" else SimCLR)(encoder_fn, temperature=cfg.moco_t, mlp=cfg.mlp)
    if cfg.method == "memory_bank":
        return MemoryBank(encoder_fn, num_images, cfg.dim, cfg.queue_size, cfg.moco_t, cfg.bank_momentum, cfg.mlp)
    return MoCo(encoder_fn, dim=cfg.dim, queue_size=cfg.queue_size, m=cfg.moco_m, temperature=cfg.moco_t, mlp=cfg.mlp,
                mask_own_keys=cfg.mask_own_keys)


def _rng_states(shuffle_gen: torch.Generator) -> dict:
    np_state = np.random.get_state()
    return {
        "shuffle": shuffle_gen.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2])},
        "python": random.getstate(),
    }


def _restore_rng(states: dict, shuffle_gen: torch.Generator) -> None:
    shuffle_gen.set_state(states["shuffle"])
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    np.random.set_state(("MT19937", states["numpy"]["key"].numpy().astype(np.uint32), states["numpy"]["pos"]))
    random.setstate(states["python"])


def make_checkpoint(cfg, method, optimizer, scaler, progress: Progress, shuffle_gen) -> dict:
    """Official layout (``epoch``, ``arch``, ``state_dict`` with ``module.`` keys, ``optimizer``) plus ours."""
    return {
        "epoch": progress.epoch,  # as official: the next epoch to run when ``step`` is 0
        "arch": cfg.arch,
        "state_dict": {"module." + k: v for k, v in method.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "mocobench_version": mocobench.__version__,
        "method": cfg.method,
        "backbone_prefix": method.backbone_prefix,
        "config": cfg.to_dict(),
        # The BN groups actually used (bn_splits may be unset in the config: the default depends on the processes).
        "bn_groups": {"splits_per_process": cfg.effective_bn_splits(dist.get_world_size()),
                      "processes": dist.get_world_size()},
        "step_in_epoch": progress.step,
        "global_step": progress.global_step,
        "scheduler": {"name": cfg.lr_schedule, "lr": optimizer.param_groups[0]["lr"]},
        "scaler": scaler.state_dict(),
        "rng": _rng_states(shuffle_gen),
    }


def restore(payload: dict, method: Method, optimizer, scaler, shuffle_gen: torch.Generator) -> Progress:
    """Load a mocobench checkpoint's state (strictly) into the training objects; return its progress."""
    method.load_state_dict(strip_wrappers(payload["state_dict"]))
    optimizer.load_state_dict(payload["optimizer"])
    scaler.load_state_dict(payload["scaler"])
    _restore_rng(payload["rng"], shuffle_gen)
    return Progress(payload["epoch"], payload["step_in_epoch"], payload["global_step"])


def resolve_resume(cfg: PretrainConfig, out: Path) -> Path | None:
    """The checkpoint to resume from, or None. Never starts fresh silently over an existing run."""
    last = out / LAST
    if cfg.resume is None:
        if last.exists():
            raise ConfigError(
                f"{out} already holds a run ({last}); pass --resume auto to continue it or choose another --out"
            )
        return None
    if cfg.resume == "auto":
        if last.exists():
            return last
        logger.info("--resume auto: no %s yet, starting a fresh run", last)
        return None
    path = Path(cfg.resume)
    if not path.is_file():
        raise CheckpointError(f"--resume {path}: no such checkpoint file")
    return path


def remove_stale_temporaries(out: Path) -> None:
    """Delete the temporary files of checkpoint writes that a killed process left behind (the
    checkpoints themselves are replaced atomically, so they are always complete)."""
    for tmp in out.glob(".checkpoint_*.pth.tmp.*"):
        logger.warning("removing %s, left by a process killed while writing a checkpoint", tmp)
        tmp.unlink(missing_ok=True)


def check_resumable(payload: dict, cfg: PretrainConfig, path: Path, world: int = 1) -> None:
    """Refuse to resume from a foreign or newer checkpoint, or with settings that change the maths.
    ``bn_splits`` is compared as the number of splits used on ``world`` processes (unset = the default)."""
    fmt = detect_format(payload)
    if fmt != "mocobench":
        raise CheckpointError(
            f"--resume {path}: a {fmt} checkpoint has no training state to continue (it is an input for "
            "mocobench transfer/convert); start a new run instead"
        )
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"--resume {path}: format_version {payload.get('format_version')} is not {FORMAT_VERSION}, "
            "the one this mocobench writes"
        )
    saved = payload.get("config", {})
    current = cfg.to_dict()
    for k in sorted(RESUMABLE_CHANGES & current.keys()):
        if k in saved and saved[k] != current[k] and k in ("epochs", "lr"):
            logger.warning("resuming with %s=%r (the checkpoint was trained with %r)", k, current[k], saved[k])
    # A field added after the checkpoint was written counts as its default (older runs never changed it).
    defaults = {f.name: f.default for f in dataclasses.fields(PretrainConfig)}
    saved = {k: saved.get(k, defaults.get(k)) for k in current}
    used = payload.get("bn_groups") or {}
    if "splits_per_process" in used and used.get("processes") == world:  # recorded since the 8-group default
        saved["bn_splits"] = used["splits_per_process"]
    elif not used and saved["bn_splits"] is None and world > 1:  # older checkpoints: one group per process
        saved["bn_splits"] = 1
    for c in (saved, current):
        c["bn_splits"] = dataclasses.replace(cfg, bn_splits=c["bn_splits"]).effective_bn_splits(world)
    diff = {k: (saved[k], v) for k, v in current.items() if k not in RESUMABLE_CHANGES and saved[k] != v}
    if diff:
        lines = ", ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in sorted(diff.items()))
        raise ConfigError(f"cannot resume {path} with different settings ({lines})")


def _autocast(device: torch.device, amp: str):
    if amp == "none":
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def train_step(
    model: nn.Module,
    method: Method,
    inputs: tuple[torch.Tensor, ...],
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    shuffle_gen: torch.Generator,
    amp: str = "none",
) -> tuple[float, float]:
    """One step: forward (MoCo: momentum update, shuffled keys, InfoNCE logits), cross-entropy, SGD
    step, then ``method.after_step`` (MoCo: enqueue the keys).

    ``model`` is ``method`` or its DDP wrapper; ``inputs`` come from ``method.inputs(batch)``.
    Returns (loss, top-1 % of the logits: the positive among 1 + K for MoCo, the class when
    supervised). Raises :class:`NonFiniteLossError` before the optimiser step.
    """
    with _autocast(inputs[0].device, amp):
        logits, labels, state = model(*inputs, shuffle_gen)
        loss = F.cross_entropy(logits.float(), labels)
    loss_value = loss.item()
    if not math.isfinite(loss_value):
        raise NonFiniteLossError(f"loss is {loss_value}")
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    method.after_step(state)
    return loss_value, 100.0 * (logits.argmax(dim=1) == labels).float().mean().item()


def train_one_epoch(
    model: nn.Module,
    method: Method,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    shuffle_gen: torch.Generator,
    progress: Progress,
    cfg: PretrainConfig,
    device: torch.device,
    metrics: MetricsWriter,
    stop: StopSignal,
    views: DeviceViews | None = None,
) -> dict[str, float]:
    """Train until the epoch ends, ``cfg.max_steps`` is reached or a stop signal arrives; returns the
    epoch's mean metrics. ``views`` makes each batch's views on the device (``--aug-device``)."""
    model.train()
    world = dist.get_world_size()
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    lr = optimizer.param_groups[0]["lr"]
    sums = {"loss": 0.0, "acc1": 0.0}
    steps = 0
    t_epoch = t_last = time.perf_counter()
    bar = tqdm(
        total=loader.batch_sampler.steps_per_epoch,
        initial=progress.step,
        desc=f"epoch {progress.epoch + 1}/{cfg.epochs}",
        disable=not dist.is_main(),
        dynamic_ncols=True,
        mininterval=2.0,
    )
    for batch in loader:
        if cfg.max_steps is not None and progress.global_step >= cfg.max_steps:
            break
        if views is not None:
            batch = views(batch)
        inputs = tuple(
            x.to(device, non_blocking=True, memory_format=fmt) if x.dim() == 4 else x.to(device, non_blocking=True)
            for x in method.inputs(batch)
        )
        try:
            loss_value, acc1 = train_step(model, method, inputs, optimizer, scaler, shuffle_gen, cfg.amp)
        except NonFiniteLossError as e:
            raise NonFiniteLossError(
                f"{e} at epoch {progress.epoch + 1}, step {progress.step + 1} of {loader.batch_sampler.steps_per_epoch}"
                f" (global step {progress.global_step + 1}); "
                f"stopped without saving this state. The last good checkpoint is {Path(cfg.out) / LAST} "
                "(if one was written); resume from it with a lower --lr."
            ) from None

        progress.step += 1
        progress.global_step += 1
        steps += 1
        sums["loss"] += loss_value
        sums["acc1"] += acc1
        now = time.perf_counter()
        ips = inputs[0].shape[0] * world / max(now - t_last, 1e-9)
        t_last = now
        bar.update(1)
        bar.set_postfix(loss=f"{loss_value:.3f}", acc1=f"{acc1:.1f}", lr=f"{lr:.4g}", ips=f"{ips:.0f}", refresh=False)
        if progress.global_step % cfg.log_every == 0:
            metrics.write(
                {
                    "kind": "step",
                    "epoch": progress.epoch,
                    "step": progress.step,
                    "global_step": progress.global_step,
                    "loss": loss_value,
                    "acc1": acc1,
                    "lr": lr,
                    "images_per_s": ips,
                }
            )
        if stop.requested(device):
            break
    bar.close()
    elapsed = time.perf_counter() - t_epoch
    n = max(steps, 1)
    return {
        "loss": sums["loss"] / n,
        "acc1": sums["acc1"] / n,
        "lr": lr,
        "steps": steps,
        "images_per_s": steps * cfg.batch_size / max(elapsed, 1e-9),
        "time_s": elapsed,
    }


def _save(cfg, method, optimizer, scaler, progress, shuffle_gen, out: Path, periodic: bool) -> None:
    if not dist.is_main():
        return
    payload = make_checkpoint(cfg, method, optimizer, scaler, progress, shuffle_gen)
    atomic_save(payload, out / LAST)
    if periodic:
        atomic_save(payload, out / f"checkpoint_{progress.epoch:04d}.pth")


def training_views(method: str, aug: str, image_size: int, backend: str,
                   on_device: bool = False) -> tuple[Callable, Callable | None]:
    """The per-sample transform and the loader's ``collate_fn`` (None: the default) of a method's views:
    one labelled view (supervised, PIL), one view (memory_bank) or two (MoCo, end_to_end), made by the
    PIL pipeline or by :mod:`~mocobench.batch_augment` (``backend="tensor"``); ``on_device``: only drawn
    in the loader, made by :class:`~mocobench.device_views.DeviceViews` (``--aug-device``)."""
    if method == "supervised":
        return linear_train_transform(image_size), None
    views = 1 if method == "memory_bank" else 2
    if on_device:
        return FileViews(moco_transform(aug, image_size).transforms, views), CollateFiles()
    if backend == "tensor":
        return TensorViews(aug, image_size, views), CollateViews(aug, image_size)
    transform = moco_transform(aug, image_size)
    return (transform if views == 1 else TwoCrops(transform)), None


def pretrain(cfg: PretrainConfig) -> Path:
    """Run (or resume) a MoCo or supervised pretraining; returns the path of the last checkpoint."""
    cfg = cfg.resolved()
    try:
        device = dist.select_device(cfg.device)
    except ValueError as e:
        raise ConfigError(str(e)) from e
    dist.init_from_env(device.type == "cuda")
    rank, world = dist.get_rank(), dist.get_world_size()
    cfg.validate(world)
    out = Path(cfg.out)
    if dist.is_main():
        try:
            writable_folder(out)  # before any work: a folder that cannot hold checkpoints is a bad --out
        except OutputFolderError as e:
            raise ConfigError(str(e)) from e
    dist.barrier()
    setup_logging(rank, out / "log.txt")
    resume_path = resolve_resume(cfg, out)
    if dist.is_main():
        remove_stale_temporaries(out)
    payload = read_checkpoint(resume_path) if resume_path else None
    if payload is not None:
        check_resumable(payload, cfg, resume_path, world)

    supervised = cfg.method == "supervised"
    images = list_images(cfg.data, labelled=supervised or None, on_bad_image=cfg.on_bad_image)
    local_batch = cfg.per_process_batch(world)
    sampler = EpochBatchSampler(len(images), local_batch, cfg.seed, rank, world)
    if cfg.method == "memory_bank" or cfg.mask_own_keys:  # the batch carries image indices in place of labels
        images = dataclasses.replace(images, labels=tuple(range(len(images))))
    on_device = cfg.aug_device != "loader"
    if on_device and device.type != cfg.aug_device:
        raise ConfigError(f"--aug-device {cfg.aug_device} must be the training device ({device.type}; --device "
                          f"{cfg.device}): the views are made where the model runs")
    transform, collate = training_views(cfg.method, cfg.aug, cfg.image_size, cfg.aug_backend, on_device)
    dataset = SeededImageDataset(images, transform, read_encoded if on_device else load_rgb)
    device_views = DeviceViews(moco_transform(cfg.aug, cfg.image_size).transforms, device) if on_device else None
    dataset.cache_decoded(cfg.decode_cache_mib)
    loader = DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=cfg.workers,
        pin_memory=device.type == "cuda",
        persistent_workers=cfg.workers > 0,
        collate_fn=collate,
    )

    torch.manual_seed(cfg.seed)
    method = build_model(cfg, world, len(images.classes), len(images)).to(device)
    if cfg.channels_last:
        method = method.to(memory_format=torch.channels_last)
    if cfg.compile:
        for encoder in (method.encoder_q, method.encoder_k) if isinstance(method, MoCo) else (method.encoder,):
            encoder.compile()
    model: nn.Module = method
    if world > 1:
        # The queue and BN buffers need no broadcast: every rank enqueues the same gathered keys,
        # and rank 0 (whose buffers are saved) is unaffected by a broadcast of its own buffers.
        model = DistributedDataParallel(
            method, device_ids=[device.index] if device.type == "cuda" else None, forward_sync_buffers=False
        )
    params = [p for p in method.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=cfg.scaled_lr(), momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16")
    shuffle_gen = torch.Generator().manual_seed(cfg.seed + 1)
    progress = Progress()
    metrics = MetricsWriter(out / "metrics.jsonl", enabled=dist.is_main(), tensorboard=cfg.tensorboard)

    if payload is not None:
        progress = restore(payload, method, optimizer, scaler, shuffle_gen)
        metrics.truncate_after(progress.global_step)
        if progress.epoch >= cfg.epochs:
            logger.info("%s has finished all %d epochs; nothing to train (raise --epochs to extend it)",
                        resume_path, cfg.epochs)
        else:
            logger.info("resumed %s: epoch %d, step %d (global step %d)",
                        resume_path, progress.epoch + 1, progress.step, progress.global_step)
    elif dist.is_main():
        metrics.path.unlink(missing_ok=True)

    derived = {
        "world_size": world,
        "per_process_batch": local_batch,
        "lr_scaled": cfg.scaled_lr(),
        "bn_splits": cfg.effective_bn_splits(world),
        "steps_per_epoch": sampler.steps_per_epoch,
        "num_images": len(images),
        "device": str(device),
    }
    if dist.is_main():
        (out / "config.yaml").write_text(
            yaml.safe_dump({"config": cfg.to_dict(), "derived": derived, "versions": package_versions()}, sort_keys=False)
        )
    logger.info("%s %s on %d images: %s", cfg.method, cfg.arch, len(images), derived)
    splits = derived["bn_splits"]
    logger.info("BN: %d group(s) per process x %d process(es), %d images per group%s", splits, world,
                local_batch // splits, "" if cfg.bn_splits is not None else
                f" (default: the paper's {PAPER_BN_GROUPS} groups of the global batch as near as the processes allow)")

    if cfg.lr_schedule == "step" and cfg.lr_milestones and cfg.lr_milestones[-1] >= cfg.epochs:
        logger.warning("the %s recipe's lr milestones %s lie at or past --epochs %d: the lr drops at fewer of them "
                       "(none before the first); pass --lr-milestones to place them in this run", cfg.method,
                       ",".join(map(str, cfg.lr_milestones)), cfg.epochs)
    monitor = None
    if cfg.knn_train and dist.is_main():
        monitor = KnnEvaluator(cfg.knn_train, cfg.knn_val, cfg.image_size, cfg.knn_k, cfg.knn_t, 256, cfg.workers,
                               on_bad_image=cfg.on_bad_image)

    with StopSignal() as stop, torch.autograd.set_detect_anomaly(cfg.detect_anomaly):
        while progress.epoch < cfg.epochs:
            if cfg.max_steps is not None and progress.global_step >= cfg.max_steps or stop.requested(device):
                break
            epoch = progress.epoch
            lr = lr_at_epoch(cfg.scaled_lr(), epoch, cfg.epochs, cfg.lr_schedule, cfg.lr_milestones)
            for group in optimizer.param_groups:
                group["lr"] = lr
            sampler.set_epoch(epoch, progress.step)
            stats = train_one_epoch(
                model, method, loader, optimizer, scaler, shuffle_gen, progress, cfg, device, metrics, stop,
                device_views,
            )
            if progress.step < sampler.steps_per_epoch:  # stopped inside the epoch (--max-steps or a signal)
                _save(cfg, method, optimizer, scaler, progress, shuffle_gen, out, periodic=False)
                break
            progress.epoch, progress.step = epoch + 1, 0
            record = {"kind": "epoch", "epoch": epoch, "global_step": progress.global_step, **stats}
            last_epoch = progress.epoch == cfg.epochs
            if monitor is not None and (progress.epoch % cfg.knn_every == 0 or last_epoch):
                knn = monitor.evaluate(method.backbone, device, cfg.channels_last)
                record.update({f"knn_{k}": v for k, v in knn.items()}, knn_k=cfg.knn_k, knn_t=cfg.knn_t)
            dist.barrier()
            metrics.write(record)
            logger.info(
                "epoch %d/%d: %s",
                progress.epoch, cfg.epochs,
                ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()
                          if k not in ("kind", "epoch")),
            )
            _save(cfg, method, optimizer, scaler, progress, shuffle_gen, out,
                  periodic=progress.epoch % cfg.save_every == 0 or last_epoch)
    dist.barrier()
    metrics.close()
    if stop.requested(device):
        name = signal.Signals(stop.received).name if stop.received is not None else "a signal on another rank"
        raise TrainingInterrupted(
            f"interrupted by {name} at epoch {progress.epoch + 1}, step {progress.step} "
            f"(global step {progress.global_step}); saved {out / LAST}. Continue with --resume auto."
        )
    logger.info("done: epoch %d, global step %d; checkpoint %s", progress.epoch, progress.global_step, out / LAST)
    return out / LAST
