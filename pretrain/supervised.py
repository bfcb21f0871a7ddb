"""Supervised pretraining: the same backbone trained with labels and cross-entropy.

The baseline row of every comparison (the MoCo papers compare with ImageNet-supervised weights;
torchvision's reference recipe: SGD lr 0.1 per 256 images, momentum 0.9, wd 1e-4, 90 epochs, lr x0.1
at epochs 30 and 60, RandomResizedCrop + flip). It plugs into the same training loop as
:class:`mocobench.pretrain.moco.MoCo`: ``forward`` returns ``(logits, labels, state)`` and
``after_step(state)`` runs after the optimiser step (nothing to do here).
"""

from __future__ import annotations

import torch
from torch import nn


class Supervised(nn.Module):
    """A classifier around ``encoder`` (a torchvision ResNet whose ``fc`` outputs the class logits)."""

    #: Where the backbone lives in the state dict (the mocobench layout of :mod:`mocobench.layouts`).
    backbone_prefix = "encoder."

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    @property
    def backbone(self) -> nn.Module:
        return self.encoder

    @staticmethod
    def inputs(batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(image, label) batches: the model sees both (labels are the targets)."""
        images, labels = batch
        return images, labels

    def forward(
        self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, None]:
        """Shape: images (B, 3, H, W), labels (B,) -> logits (B, classes), labels (B,), None."""
        return self.encoder(images), labels, None

    def after_step(self, state: None) -> None:
        """Nothing to update outside the optimiser."""
