"""kNN monitor during pretraining (the MoCo CIFAR demo's ``test()``: k=200, t=0.1 by default).

Scores the query encoder's pooled backbone features (not the projection head) on a labelled split,
with a labelled bank, both under the eval transform at the training image size.
"""

from __future__ import annotations

import logging
import time

import torch
from torch import nn
from torch.utils.data import DataLoader

from mocobench.datasets import SeededImageDataset, list_images
from mocobench.evaluators.knn import extract_features, knn_scores, topk_accuracy
from mocobench.pretrain.augment import eval_transform

logger = logging.getLogger(__name__)


class KnnMonitor:
    """Builds the two loaders once; :meth:`evaluate` returns ``{"knn_top1", "knn_top5", ...}``."""

    def __init__(
        self, train_dir: str, val_dir: str, image_size: int, k: int, t: float, batch_size: int, workers: int
    ) -> None:
        self.k, self.t = k, t
        tf = eval_transform(image_size)
        bank = list_images(train_dir, labelled=True)
        val = list_images(val_dir, labelled=True)
        if bank.classes != val.classes:
            raise ValueError(f"kNN monitor: classes of {train_dir} and {val_dir} differ")
        self.num_classes = len(bank.classes)

        def loader(images):
            ds = SeededImageDataset(images, tf)
            items = [(i, 0) for i in range(len(images))]  # eval transform is deterministic
            return DataLoader(_Items(ds, items), batch_size=batch_size, num_workers=workers)

        self.bank_loader = loader(bank)
        self.val_loader = loader(val)

    def evaluate(self, net: nn.Module, device: torch.device, channels_last: bool = False) -> dict[str, float]:
        t0 = time.perf_counter()
        bank, bank_y = extract_features(net, self.bank_loader, device, channels_last)
        feats, y = extract_features(net, self.val_loader, device, channels_last)
        acc = topk_accuracy(knn_scores(feats, bank, bank_y, self.num_classes, self.k, self.t), y)
        res = {f"knn_{k}": v for k, v in acc.items()}
        res.update(knn_k=self.k, knn_t=self.t, knn_time_s=round(time.perf_counter() - t0, 2))
        return res


class _Items(torch.utils.data.Dataset):
    """Index a dataset through a fixed list of items (here ``(index, seed)`` pairs)."""

    def __init__(self, ds, items) -> None:
        self.ds, self.items = ds, items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i):
        return self.ds[self.items[i]]
