"""Split BatchNorm: shuffling BN emulated on one device (the MoCo CIFAR demo's ``SplitBatchNorm``).

In training mode the batch is cut into ``num_splits`` groups and each group is normalised with its own
statistics; the running statistics are the mean over the groups. In eval mode it is BatchNorm2d.

:class:`SplitBatchNorm` groups samples with stride ``num_splits`` (sample ``i * s + j`` is in group
``j``), as the demo does: on NCHW memory ``(N, C, H, W) -> (N/s, s*C, H, W)`` is a view, so the split
costs no copy. :func:`split_bn_resnet` reorders the encoder's input batch so that group ``j`` is the
``j``-th contiguous chunk, and restores the order of its output: one process with ``--bn-splits W``
then computes the same forward outputs, losses and gradients (so the same weights and queue) as W
processes with plain BN on their local batches (the official multi-GPU shuffle BN). The saved BN
running statistics differ: here they average the W groups' statistics, while a W-process run saves
rank 0's, which saw its own group only (none of them is used in training; eval-mode features of the
two checkpoints differ slightly). The reordering touches only the input images and the output features, which
are small; every other layer works per sample. The parameter and buffer names are BatchNorm2d's, so
checkpoints stay torchvision-compatible.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


def _check(n: int, s: int) -> None:
    if n % s != 0:
        raise ValueError(f"SplitBatchNorm: batch {n} is not divisible by num_splits={s}")


def _channels_last(x: torch.Tensor) -> bool:
    """A 4-d tensor laid out NHWC (not also NCHW-contiguous, as a 1x1 map would be)."""
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


class SplitBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d with per-group statistics in training (group j: samples j, j+s, j+2s, ...).
    Shape: (N, C, H, W), N % num_splits == 0."""

    def __init__(self, num_features: int, num_splits: int, **kwargs) -> None:
        super().__init__(num_features, **kwargs)
        self.num_splits = num_splits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.num_splits
        if not self.training or s == 1:
            return super().forward(x)
        n, c, h, w = x.shape
        _check(n, s)
        channels_last = _channels_last(x)
        # Group j's channels become channels j*C .. (j+1)*C - 1: a view of NCHW memory (a copy otherwise).
        xs = x.reshape(n // s, s * c, h, w)
        # BatchNorm2d's own rule for the running-average factor.
        factor = 1.0 / float(self.num_batches_tracked + 1) if self.momentum is None else self.momentum
        mean = self.running_mean.repeat(s)
        var = self.running_var.repeat(s)
        out = F.batch_norm(xs, mean, var, self.weight.repeat(s), self.bias.repeat(s), True, factor, self.eps)
        with torch.no_grad():
            self.running_mean.copy_(mean.view(s, c).mean(dim=0))
            self.running_var.copy_(var.view(s, c).mean(dim=0))
            self.num_batches_tracked.add_(1)
        out = out.view(n, c, h, w)
        return out.contiguous(memory_format=torch.channels_last) if channels_last else out


def interleave(x: torch.Tensor, s: int) -> torch.Tensor:
    """Row ``i * s + j`` of the result is row ``i`` of chunk ``j``. Shape: (N, ...) -> (N, ...)."""
    _check(x.shape[0], s)
    out = x.reshape(s, x.shape[0] // s, *x.shape[1:]).transpose(0, 1).reshape(x.shape)
    return out.contiguous(memory_format=torch.channels_last) if _channels_last(x) else out


def deinterleave(x: torch.Tensor, s: int) -> torch.Tensor:
    """Inverse of :func:`interleave`. Shape: (N, ...) -> (N, ...)."""
    return x.reshape(x.shape[0] // s, s, *x.shape[1:]).transpose(0, 1).reshape(x.shape)


def split_bn_resnet(arch: Callable[..., nn.Module], num_splits: int, **kwargs) -> nn.Module:
    """``arch(norm_layer=SplitBatchNorm, **kwargs)`` whose split groups are the contiguous chunks of its
    input batch in training (forward hooks reorder the input and restore the output's order)."""
    net = arch(norm_layer=lambda c: SplitBatchNorm(c, num_splits), **kwargs)

    def to_groups(module: nn.Module, args: tuple) -> tuple | None:
        return (interleave(args[0], num_splits), *args[1:]) if module.training else None

    def to_chunks(module: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor | None:
        return deinterleave(out, num_splits) if module.training else None

    net.register_forward_pre_hook(to_groups)
    net.register_forward_hook(to_chunks)
    return net
