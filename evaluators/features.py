"""Frozen-backbone features: globally pooled ResNet features for kNN, linear and fine-grained tasks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def resnet_features(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Globally pooled features of a torchvision ResNet, bypassing its ``fc`` head. Shape: (N, D)."""
    x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    x = net.layer4(net.layer3(net.layer2(net.layer1(x))))
    return torch.flatten(net.avgpool(x), 1)


@torch.no_grad()
def extract_features(
    net: nn.Module, loader, device: torch.device, channels_last: bool = False, normalize: bool = True,
    head: nn.Module | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled features (L2-normalised unless ``normalize=False``) and labels of every sample of
    ``loader``, with ``net`` in eval mode; with ``head``, its output on the pooled features instead
    (the contrastive embedding, e.g. MoCo's 128-d projection). Shape: (N, D), (N,)."""
    was_training = net.training
    net.eval()
    feats, labels = [], []
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    for images, y in loader:
        f = resnet_features(net, images.to(device, memory_format=fmt))
        if head is not None:
            f = head(f)
        f = f.float()
        feats.append(F.normalize(f, dim=1) if normalize else f)
        labels.append(torch.as_tensor(y).to(device))
    net.train(was_training)
    return torch.cat(feats), torch.cat(labels)
