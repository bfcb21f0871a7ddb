"""Layer swaps that change speed, never values.

torchvision's ResNet max-pools the stem's output ``(N, 64, H/2, W/2)`` in NCHW memory, and on this CPU
(torch 2.14, AMD EPYC) PyTorch's NCHW ``max_pool2d_with_indices`` is ~12x slower than the same op on a
channels_last tensor ([128, 64, 32, 32], 2 threads: 26-32 ms against 2.2 ms; 13% of a bf16 MoCo step
at 64 px). :class:`MaxPool2dNHWC` pools CPU NCHW inputs in channels_last memory and hands back NCHW:
the outputs and the input gradients are identical (tested bit for bit, ties included).
"""

from __future__ import annotations

import torch
from torch import nn


class MaxPool2dNHWC(nn.MaxPool2d):
    """``nn.MaxPool2d`` that pools a CPU NCHW input as channels_last. Shape: (N, C, H, W) -> (N, C, H', W')."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or x.dim() != 4 or not x.is_contiguous():
            return super().forward(x)
        return super().forward(x.contiguous(memory_format=torch.channels_last)).contiguous()


def fast_maxpool(net: nn.Module) -> nn.Module:
    """Swap a torchvision ResNet's ``maxpool`` for :class:`MaxPool2dNHWC` (no parameters: the state dict
    is unchanged). Returns ``net``."""
    p = net.maxpool
    net.maxpool = MaxPool2dNHWC(p.kernel_size, p.stride, p.padding, p.dilation, p.return_indices, p.ceil_mode)
    return net
