"""Weighted kNN classification on frozen features (InstDisc, Wu et al. 2018, arXiv 1805.01978).

Features are L2-normalised; similarity is cosine; each of the k nearest bank entries votes for its
class with weight ``exp(s / t)``; the prediction is the class with the largest total. Similarities
are computed in blocks of queries x bank entries with a running top-k, so memory is bounded by the
block size whatever the bank size (``benchmarks/knn_memory.py`` measures it against the full product).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from mocobench import dist
from mocobench.augment import eval_transform
from mocobench.checkpoint import load_projection_head
from mocobench.datasets import (
    DataError,
    ImageDataset,
    ImageList,
    OnBadImage,
    eval_split,
    list_images,
    on_bad_image_option,
    resolve_split,
)
from mocobench.evaluators.features import (
    AUG_DEVICE_RULE,
    AugDevice,
    FeatureKey,
    aug_device_option,
    eval_set,
    extract_features,
    feature_key,
    frozen_features,
)
from mocobench.evaluators.registry import TaskContext, register
from mocobench.options import option

logger = logging.getLogger(__name__)


def knn_topk(
    queries: torch.Tensor, bank: torch.Tensor, bank_labels: torch.Tensor, k: int = 200, chunk_size: int = 1024,
    bank_chunk_size: int = 131072,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` most similar bank entries of each query: (similarities, their labels), most similar first.

    Similarities are computed in blocks of ``chunk_size`` queries x ``bank_chunk_size`` bank entries with a
    running top-k, so memory stays O(chunk_size * (bank_chunk_size + k)) for any bank size.
    Shape: queries (M, D), bank (N, D) (both L2-normalised), bank_labels (N,) -> (M, min(k, N)) twice.
    """
    k = min(k, bank.shape[0])
    if k == 0:  # an empty block of a sharded bank: no candidates
        m = queries.shape[0]
        return queries.new_empty(m, 0), torch.empty(m, 0, dtype=torch.long, device=queries.device)
    sims, labels = [], []
    for start in range(0, queries.shape[0], chunk_size):
        q = queries[start : start + chunk_size]
        top_sim = top_idx = None
        for b0 in range(0, bank.shape[0], bank_chunk_size):
            sim = q @ bank[b0 : b0 + bank_chunk_size].T  # chunk x block cosine similarities
            s, i = sim.topk(min(k, sim.shape[1]), dim=1)
            if top_sim is None:
                top_sim, top_idx = s, i + b0
            else:
                merged = torch.cat([top_sim, s], dim=1)
                top_sim, pos = merged.topk(min(k, merged.shape[1]), dim=1)
                top_idx = torch.cat([top_idx, i + b0], dim=1).gather(1, pos)
        sims.append(top_sim)
        labels.append(bank_labels[top_idx])
    return torch.cat(sims), torch.cat(labels)


def knn_vote(top_sim: torch.Tensor, top_labels: torch.Tensor, num_classes: int, t: float = 0.07) -> torch.Tensor:
    """Class scores: each neighbour votes for its class with ``exp(s / t)``. Shape: (M, k) x2 -> (M, C)."""
    weights = (top_sim / t).exp()
    votes = torch.zeros(top_sim.shape[0], num_classes, dtype=weights.dtype, device=weights.device)
    return votes.scatter_add_(1, top_labels, weights)


def knn_scores(
    queries: torch.Tensor,
    bank: torch.Tensor,
    bank_labels: torch.Tensor,
    num_classes: int,
    k: int = 200,
    t: float = 0.07,
    chunk_size: int = 1024,
    bank_chunk_size: int = 131072,
) -> torch.Tensor:
    """Class scores of each query against the whole bank (one process). Shape: (M, D), (N, D), (N,) -> (M, C)."""
    return knn_vote(*knn_topk(queries, bank, bank_labels, k, chunk_size, bank_chunk_size), num_classes, t)


def sharded_knn_scores(
    queries: torch.Tensor, bank_shard: torch.Tensor, labels_shard: torch.Tensor, num_classes: int, k: int = 200,
    t: float = 0.07, chunk_size: int = 1024,
) -> torch.Tensor:
    """:func:`knn_scores` when each torchrun rank holds one block of the bank (and every query): each rank
    takes its block's top-k, the (M, k) candidates of all ranks are gathered and merged into the global
    top-k, so no rank ever holds the whole bank. Same neighbours as one process (ties aside). Every rank
    returns the scores. Shape: (M, D), (N_r, D), (N_r,) -> (M, C)."""
    k_all = int(dist.all_reduce_sum(torch.tensor(bank_shard.shape[0], device=queries.device)).item())
    k = min(k, k_all)
    sim, lab = knn_topk(queries, bank_shard, labels_shard, k, chunk_size)
    if dist.get_world_size() > 1:
        pad = k - sim.shape[1]  # a block smaller than k: pad with candidates that never win
        sim = F.pad(sim, (0, pad), value=float("-inf"))
        lab = F.pad(lab, (0, pad), value=0)
        sims, labs = dist.all_gather_cat(sim[None]), dist.all_gather_cat(lab[None])  # (W, M, k)
        sim, pos = sims.permute(1, 0, 2).reshape(sim.shape[0], -1).topk(k, dim=1)
        lab = labs.permute(1, 0, 2).reshape(lab.shape[0], -1).gather(1, pos)
    return knn_vote(sim, lab, num_classes, t)


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Top-k accuracies in percent. Shape: scores (M, C), labels (M,)."""
    ranked = scores.argsort(dim=1, descending=True)
    res = {}
    for k in ks:
        if k <= scores.shape[1]:
            hit = (ranked[:, :k] == labels[:, None]).any(dim=1)
            res[f"top{k}"] = 100.0 * hit.double().mean().item()
    return res


def check_k(k: int, bank: ImageList, option: str) -> None:
    """``k`` neighbours need a bank of at least ``k`` images (a larger k would silently become the bank size:
    another protocol). Checked once the bank is listed, before any image is read."""
    if k > len(bank):
        raise DataError(f"{option}={k} is larger than the kNN bank: {bank.root} holds {len(bank)} images; pass "
                        f"{option} {len(bank)} or fewer (the InstDisc protocol: 200 of ImageNet's 1.28M)")


class KnnEvaluator:
    """Weighted kNN of a labelled query folder against a labelled bank folder.

    Both are read under the eval transform (Resize(size*256/224) + CenterCrop(size)); the loaders are
    built once, so the pretraining monitor can call :meth:`evaluate` every epoch.
    """

    def __init__(
        self, bank_dir: str | Path, query_dir: str | Path, image_size: int, k: int, t: float,
        batch_size: int = 256, workers: int = 4, chunk_size: int = 1024, on_bad_image: str = "error",
    ) -> None:
        self.k, self.t, self.chunk_size = k, t, chunk_size
        bank = list_images(bank_dir, labelled=True, on_bad_image=on_bad_image)
        query = list_images(query_dir, labelled=True, on_bad_image=on_bad_image)
        if bank.classes != query.classes:
            raise DataError(f"kNN: the classes of {bank_dir} and {query_dir} differ")
        check_k(k, bank, "--knn-k")
        self.num_classes = len(bank.classes)
        tf = eval_transform(image_size)
        self.bank_loader, self.query_loader = (
            DataLoader(ImageDataset(images, tf), batch_size=batch_size, num_workers=workers)
            for images in (bank, query)
        )

    def evaluate(self, net: nn.Module, device: torch.device, channels_last: bool = False,
                 head: nn.Module | None = None) -> dict[str, float]:
        """``{"top1", "top5"}`` in percent for the pooled features of ``net`` (or ``head``'s output on them)."""
        bank, bank_y = extract_features(net, self.bank_loader, device, channels_last, head=head)
        feats, y = extract_features(net, self.query_loader, device, channels_last, head=head)
        scores = knn_scores(feats, bank, bank_y, self.num_classes, self.k, self.t, self.chunk_size)
        return topk_accuracy(scores, y)


@dataclass
class KnnConfig:
    """kNN transfer (InstDisc protocol, arXiv 1805.01978: k=200, t=0.07).

    ``features=backbone`` scores the pooled backbone features (as lightly's and solo-learn's kNN
    monitors do: comparable with their numbers and with the MoCo CIFAR demo's monitor only when it
    is run on the backbone); ``head`` scores the L2-normalised output of the checkpoint's projection
    head (128-d for MoCo), the embedding InstDisc's kNN numbers and the MoCo CIFAR demo score.
    """

    data: str = option("", "Root with a train split and a val (or test) split.", exists="dir")
    train_split: str = option("train", "Bank split under --data.")
    val_split: str = option("", "Scored split under --data (default: val, else test).")
    image_size: int = option(224, "Centre-crop size (after resizing to size*256/224).", min=8)
    features: Literal["backbone", "head"] = option(
        "backbone", "What is scored: backbone (pooled features; lightly, solo-learn) or head (the checkpoint's "
        "projection-head output, L2-normalised; InstDisc, MoCo CIFAR demo). head needs a contrastive checkpoint.")
    k: int = option(200, "Neighbours.", min=1)
    t: float = option(0.07, "Temperature of the exp(s/t) vote weights.", min=0, min_open=True)
    batch_size: int = option(256, "Feature-extraction batch size.", min=1)
    workers: int = option(4, "Data-loading workers.", min=0)
    chunk_size: int = option(1024, "Queries per similarity block (bounds memory).", min=1)
    amp: Literal["fp32", "bf16"] = option("fp32", "Feature extraction precision: fp32, or bf16 under autocast.")
    device: str = option("auto", "auto, cpu or cuda.")
    aug_device: AugDevice = aug_device_option("the bank's and the queries' features")
    on_bad_image: OnBadImage = on_bad_image_option()

    RULES: ClassVar = (AUG_DEVICE_RULE,)


def knn_splits(cfg: KnnConfig) -> tuple[ImageList, ImageList]:
    """(bank, queries) of ``cfg.data``, listed (no image read) and checked: the same classes, ``k`` within the bank."""
    root = Path(cfg.data)
    bank_images = list_images(resolve_split(root, (cfg.train_split,)), labelled=True, on_bad_image=cfg.on_bad_image)
    query_images = list_images(eval_split(root, cfg.val_split), labelled=True, on_bad_image=cfg.on_bad_image)
    if bank_images.classes != query_images.classes:
        raise DataError(f"kNN: the classes of {bank_images.root} and {query_images.root} differ")
    check_k(cfg.k, bank_images, "--set k")
    return bank_images, query_images


@register("knn", KnnConfig, "weighted kNN on frozen pooled features (top-1/top-5)", distributed=True)
def run_knn(cfg: KnnConfig, ctx: TaskContext) -> dict[str, float]:
    """Under torchrun each process extracts (or reads from the cache) its block of the bank and every query;
    the top-k is merged across processes (:func:`sharded_knn_scores`)."""
    bank_images, query_images = knn_splits(cfg)
    t0 = time.perf_counter()
    device = dist.select_device(cfg.device)
    head = load_projection_head(ctx.info.source).to(device) if cfg.features == "head" else None
    net = ctx.backbone.to(device)
    out: list[tuple[torch.Tensor, torch.Tensor]] = []
    for images, gather, name in ((bank_images, False, "kNN bank"), (query_images, True, "kNN queries")):
        ds, described, on_device = eval_set(images, cfg.image_size, cfg.aug_device, device)
        key: FeatureKey = feature_key(ctx, cfg.features, described, ds, cfg.amp)
        f, y = frozen_features(net, ds, key, device, cfg.batch_size, cfg.workers, ctx.feature_cache, head, gather, name,
                               on_device)
        out.append((F.normalize(f, dim=1), y))
    (bank, bank_y), (queries, y) = out
    scores = sharded_knn_scores(queries, bank, bank_y, len(bank_images.classes), cfg.k, cfg.t, cfg.chunk_size)
    metrics = topk_accuracy(scores, y)
    ctx.derived.update(num_bank=len(bank_images), num_queries=len(query_images), processes=dist.get_world_size())
    logger.info("kNN (k=%d, t=%g, %s features) on %s: %s in %.1fs", cfg.k, cfg.t, cfg.features, query_images.root,
                metrics, time.perf_counter() - t0)
    return metrics
