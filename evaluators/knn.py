"""Weighted kNN classification on frozen features (InstDisc, Wu et al. 2018, arXiv 1805.01978).

Features are L2-normalised; similarity is cosine; each of the k nearest bank entries votes for its
class with weight ``exp(s / t)``; the prediction is the class with the largest total. Similarities
are computed ``chunk_size`` queries at a time, so memory is O(chunk_size * N) rather than O(M * N).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def knn_scores(
    queries: torch.Tensor,
    bank: torch.Tensor,
    bank_labels: torch.Tensor,
    num_classes: int,
    k: int = 200,
    t: float = 0.07,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """Class scores of each query.

    Shape: queries (M, D), bank (N, D) (both L2-normalised), bank_labels (N,) -> scores (M, num_classes).
    """
    k = min(k, bank.shape[0])
    out = []
    for start in range(0, queries.shape[0], chunk_size):
        sim = queries[start : start + chunk_size] @ bank.T  # chunk x N cosine similarities
        top_sim, top_idx = sim.topk(k, dim=1)
        weights = (top_sim / t).exp()
        votes = torch.zeros(sim.shape[0], num_classes, dtype=weights.dtype, device=weights.device)
        votes.scatter_add_(1, bank_labels[top_idx], weights)
        out.append(votes)
    return torch.cat(out)


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Top-k accuracies in percent. Shape: scores (M, C), labels (M,)."""
    ranked = scores.argsort(dim=1, descending=True)
    res = {}
    for k in ks:
        if k <= scores.shape[1]:
            hit = (ranked[:, :k] == labels[:, None]).any(dim=1)
            res[f"top{k}"] = 100.0 * hit.float().mean().item()
    return res


def resnet_features(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Globally pooled features of a torchvision ResNet, bypassing its ``fc`` head. Shape: (N, D)."""
    x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    x = net.layer4(net.layer3(net.layer2(net.layer1(x))))
    return torch.flatten(net.avgpool(x), 1)


@torch.no_grad()
def extract_features(
    net: nn.Module, loader, device: torch.device, channels_last: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised pooled features and labels of every sample of ``loader`` (net in eval mode)."""
    was_training = net.training
    net.eval()
    feats, labels = [], []
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    for images, y in loader:
        f = resnet_features(net, images.to(device, memory_format=fmt))
        feats.append(F.normalize(f.float(), dim=1))
        labels.append(torch.as_tensor(y).to(device))
    net.train(was_training)
    return torch.cat(feats), torch.cat(labels)
