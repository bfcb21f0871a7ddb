"""Distributed helpers, all no-ops on one process (after detectron2's ``utils/comm.py``).

The launcher is torchrun (``torchrun --nproc_per_node N -m mocobench.cli pretrain ...``): it sets
RANK / WORLD_SIZE / LOCAL_RANK, and :func:`init_from_env` joins the process group with NCCL when
CUDA is used and gloo otherwise. mocobench has no distribution layer of its own beyond this module.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)


def is_dist() -> bool:
    """True when a process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_dist() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def is_main() -> bool:
    return get_rank() == 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def init_from_env(use_cuda: bool, timeout_minutes: int = 30) -> bool:
    """Join the process group described by torchrun's environment; return True if distributed.

    Does nothing (returns False) when WORLD_SIZE is unset or 1, so a plain ``python`` run is a
    single process with the same code path.
    """
    if is_dist():
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    backend = "nccl" if use_cuda else "gloo"
    if use_cuda:
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend=backend, timeout=timedelta(minutes=timeout_minutes))
    logger.info("joined process group: backend=%s rank=%d world=%d", backend, get_rank(), get_world_size())
    return True


def destroy() -> None:
    if is_dist():
        dist.destroy_process_group()


def barrier() -> None:
    if is_dist():
        dist.barrier()


@torch.no_grad()
def all_gather_cat(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` from every rank along dim 0, rank order (no gradient).

    Shape: (B, ...) on each rank -> (world * B, ...). Same-size tensors only, as in the official
    MoCo ``concat_all_gather``.
    """
    world = get_world_size()
    if world == 1:
        return tensor
    out = [torch.empty_like(tensor) for _ in range(world)]
    dist.all_gather(out, tensor.contiguous())
    return torch.cat(out, dim=0)


@torch.no_grad()
def all_gather_rows(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate along dim 0 the tensors of every rank, in rank order, when their row counts differ (a
    rank may hold none). Shape: (B_r, ...) on rank r -> (sum B_r, ...)."""
    world = get_world_size()
    if world == 1:
        return tensor
    meta = torch.tensor([tensor.shape[0], tensor.shape[1] if tensor.dim() > 1 else 0], device=tensor.device)
    sizes = [torch.zeros_like(meta) for _ in range(world)]
    dist.all_gather(sizes, meta)
    rows = [int(s[0]) for s in sizes]
    trailing = tuple(tensor.shape[1:]) if tensor.shape[0] else ((max(int(s[1]) for s in sizes),) if tensor.dim() > 1 else ())
    padded = tensor.new_zeros((max(rows), *trailing))
    padded[: tensor.shape[0]] = tensor
    out = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(out, padded)
    return torch.cat([o[:r] for o, r in zip(out, rows, strict=True)])


def broadcast_(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    """In-place broadcast from ``src``; identity on one process."""
    if is_dist():
        dist.broadcast(tensor, src)
    return tensor


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum of ``tensor`` over ranks (a new tensor); itself on one process."""
    if not is_dist():
        return tensor
    out = tensor.clone()
    dist.all_reduce(out)
    return out


def all_reduce_min(value: int, device: torch.device) -> int:
    """The smallest of an integer over ranks (every rank gets it); itself on one process."""
    if not is_dist():
        return value
    t = torch.tensor([value], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return int(t.item())


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank if ``flag`` is True on any rank (so all ranks stop at the same step)."""
    if not is_dist():
        return flag
    t = torch.tensor([int(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def all_reduce_mean(value: float, device: torch.device) -> float:
    """Mean of a Python float over ranks (for logging)."""
    if not is_dist():
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / get_world_size()


def select_device(name: str = "auto") -> torch.device:
    """``auto``: this process's CUDA device (LOCAL_RANK) when CUDA is available, else the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--device cuda was asked for, but torch sees no CUDA device")
        return torch.device("cuda", local_rank())
    if name != "cpu":
        raise ValueError(f"unknown device {name!r}; expected auto, cpu or cuda")
    return torch.device("cpu")


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks whose gradient is the sum over ranks of the output's gradient (every rank's loss depends on
    the sum), as detectron2's ``differentiable_all_reduce``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class GlooSyncBatchNorm(torch.nn.BatchNorm2d):
    """BatchNorm2d normalising with the statistics of the global batch over every process, on any device
    (``nn.SyncBatchNorm`` takes GPU tensors only): the sum, then the squared deviations from the global
    mean, are summed over ranks with a differentiable all-reduce (:class:`_AllReduceSum`), so
    gradients flow to every rank's inputs as in one process over the whole batch. Running statistics are
    updated as BatchNorm2d does (unbiased variance). One process, or eval mode: BatchNorm2d.
    Shape: (N, C, H, W) -> same; N may differ between ranks."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not is_dist() or get_world_size() == 1:
            return super().forward(x)
        all_reduce = _AllReduceSum.apply
        dtype, x = x.dtype, x.float() if x.dtype in (torch.float16, torch.bfloat16) else x  # statistics in fp32
        c = x.shape[1]
        shape = (1, c, 1, 1)
        count = all_reduce_sum(torch.tensor([x.numel() // c], dtype=torch.float64, device=x.device)).item()
        mean = all_reduce(x.sum((0, 2, 3))) / count  # two passes: as exact as BatchNorm2d's own reduction
        centred = x - mean.view(shape)
        var = all_reduce(centred.pow(2).sum((0, 2, 3))) / count
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), factor)
                unbiased = var.detach() * (count / max(count - 1.0, 1.0))
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), factor)
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out.to(dtype)


def sync_batchnorm(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """Every BatchNorm2d of ``module`` synchronised over the process group: ``nn.SyncBatchNorm`` on CUDA
    (NCCL), :class:`GlooSyncBatchNorm` elsewhere. Parameters and buffers keep their names and values, so
    checkpoints load into either. Returns the converted module (itself on one process)."""
    if get_world_size() == 1:
        return module
    if device.type == "cuda":
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)

    def convert(m: torch.nn.Module) -> torch.nn.Module:
        if type(m) is torch.nn.BatchNorm2d:
            like = next(iter(m.parameters()), None) if m.affine else m.running_mean
            new = GlooSyncBatchNorm(m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats,
                                    device=None if like is None else like.device, dtype=None if like is None else like.dtype)
            new.load_state_dict(m.state_dict())
            new.train(m.training)
            return new
        for name, child in m.named_children():
            setattr(m, name, convert(child))
        return m

    return convert(module)
