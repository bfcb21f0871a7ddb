"""Split BatchNorm: shuffling BN emulated on one device (the MoCo CIFAR demo's ``SplitBatchNorm``).

In training mode the batch is cut into ``num_splits`` contiguous chunks and each chunk is normalised
with its own statistics, exactly what ``num_splits`` processes with plain BN would compute on their
local batches; the running statistics are the mean over the chunks. In eval mode it is BatchNorm2d.
The demo groups samples with stride ``num_splits`` (a zero-copy view); contiguous chunks are used
here so that one process with ``--bn-splits W`` reproduces a W-process shuffle-BN run.
The parameter and buffer names are BatchNorm2d's, so checkpoints stay torchvision-compatible.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SplitBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d with per-chunk statistics in training. Shape: (N, C, H, W), N % num_splits == 0."""

    def __init__(self, num_features: int, num_splits: int, **kwargs) -> None:
        super().__init__(num_features, **kwargs)
        self.num_splits = num_splits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.num_splits
        if not self.training or s == 1:
            return super().forward(x)
        n, c, h, w = x.shape
        if n % s != 0:
            raise ValueError(f"SplitBatchNorm: batch {n} is not divisible by num_splits={s}")
        # (N, C, H, W) -> (N/s, s*C, H, W): chunk j's channels become channels j*C .. (j+1)*C - 1.
        xs = x.reshape(s, n // s, c, h, w).transpose(0, 1).reshape(n // s, s * c, h, w)
        # BatchNorm2d's own rule for the running-average factor.
        factor = 1.0 / float(self.num_batches_tracked + 1) if self.momentum is None else self.momentum
        mean = self.running_mean.repeat(s)
        var = self.running_var.repeat(s)
        out = F.batch_norm(
            xs, mean, var, self.weight.repeat(s), self.bias.repeat(s), True, factor, self.eps
        )
        with torch.no_grad():
            self.running_mean.copy_(mean.view(s, c).mean(dim=0))
            self.running_var.copy_(var.view(s, c).mean(dim=0))
            self.num_batches_tracked.add_(1)
        return out.reshape(n // s, s, c, h, w).transpose(0, 1).reshape(n, c, h, w)
