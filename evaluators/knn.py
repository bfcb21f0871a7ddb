"""Weighted kNN classification on frozen features (InstDisc, Wu et al. 2018, arXiv 1805.01978).

Features are L2-normalised; similarity is cosine; each of the k nearest bank entries votes for its
class with weight ``exp(s / t)``; the prediction is the class with the largest total. Similarities
are computed ``chunk_size`` queries at a time, so memory is O(chunk_size * N) rather than O(M * N).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from mocobench import dist
from mocobench.datasets import DataError, ImageDataset, list_images
from mocobench.evaluators.registry import TaskContext, register
from mocobench.pretrain.augment import eval_transform

logger = logging.getLogger(__name__)


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
            res[f"top{k}"] = 100.0 * hit.double().mean().item()
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


class KnnEvaluator:
    """Weighted kNN of a labelled query folder against a labelled bank folder.

    Both are read under the eval transform (Resize(size*256/224) + CenterCrop(size)); the loaders are
    built once, so the pretraining monitor can call :meth:`evaluate` every epoch.
    """

    def __init__(
        self, bank_dir: str | Path, query_dir: str | Path, image_size: int, k: int, t: float,
        batch_size: int = 256, workers: int = 4, chunk_size: int = 1024,
    ) -> None:
        self.k, self.t, self.chunk_size = k, t, chunk_size
        bank = list_images(bank_dir, labelled=True)
        query = list_images(query_dir, labelled=True)
        if bank.classes != query.classes:
            raise DataError(f"kNN: the classes of {bank_dir} and {query_dir} differ")
        self.num_classes = len(bank.classes)
        tf = eval_transform(image_size)
        self.bank_loader, self.query_loader = (
            DataLoader(ImageDataset(images, tf), batch_size=batch_size, num_workers=workers)
            for images in (bank, query)
        )

    def evaluate(self, net: nn.Module, device: torch.device, channels_last: bool = False) -> dict[str, float]:
        """``{"top1", "top5"}`` in percent for the pooled features of ``net``."""
        bank, bank_y = extract_features(net, self.bank_loader, device, channels_last)
        feats, y = extract_features(net, self.query_loader, device, channels_last)
        scores = knn_scores(feats, bank, bank_y, self.num_classes, self.k, self.t, self.chunk_size)
        return topk_accuracy(scores, y)


def resolve_split(root: Path, names: tuple[str, ...]) -> Path:
    """The first of ``names`` that exists under ``root`` (e.g. ``val`` or ``test``)."""
    for name in names:
        if (root / name).is_dir():
            return root / name
    raise DataError(f"{root} has none of the splits {', '.join(names)}")


@dataclass
class KnnConfig:
    """kNN transfer (InstDisc protocol, arXiv 1805.01978: k=200, t=0.07)."""

    data: str = field(default="", metadata={"help": "Root with a train split and a val (or test) split."})
    train_split: str = field(default="train", metadata={"help": "Bank split under --data."})
    val_split: str = field(default="", metadata={"help": "Scored split under --data (default: val, else test)."})
    image_size: int = field(default=224, metadata={"help": "Centre-crop size (after resizing to size*256/224)."})
    k: int = field(default=200, metadata={"help": "Neighbours."})
    t: float = field(default=0.07, metadata={"help": "Temperature of the exp(s/t) vote weights."})
    batch_size: int = field(default=256, metadata={"help": "Feature-extraction batch size."})
    workers: int = field(default=4, metadata={"help": "Data-loading workers."})
    chunk_size: int = field(default=1024, metadata={"help": "Queries per similarity block (bounds memory)."})
    device: str = field(default="auto", metadata={"help": "auto, cpu or cuda."})


@register("knn", KnnConfig, "weighted kNN on frozen pooled features (top-1/top-5)")
def run_knn(cfg: KnnConfig, ctx: TaskContext) -> dict[str, float]:
    root = Path(cfg.data)
    bank_dir = resolve_split(root, (cfg.train_split,))
    query_dir = resolve_split(root, (cfg.val_split,) if cfg.val_split else ("val", "test"))
    t0 = time.perf_counter()
    evaluator = KnnEvaluator(bank_dir, query_dir, cfg.image_size, cfg.k, cfg.t, cfg.batch_size, cfg.workers,
                             cfg.chunk_size)
    device = dist.select_device(cfg.device)
    metrics = evaluator.evaluate(ctx.backbone.to(device), device)
    logger.info("kNN (k=%d, t=%g) on %s: %s in %.1fs", cfg.k, cfg.t, query_dir, metrics, time.perf_counter() - t0)
    return metrics
