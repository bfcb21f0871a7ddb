"""Few-shot transfer: prototypical (nearest class mean) classification of frozen features in N-way K-shot
episodes, the protocol of Ericsson et al. 2021 (arXiv 2011.13377), as linusericsson/ssl-transfer @
416913f implements it in ``few_shot.py``:

* features: the frozen backbone's globally pooled features (eval mode, no L2 normalisation) of
  Resize((257, 257)) (bilinear, aspect ratio not kept) + CenterCrop(224) + ImageNet normalisation
  (``few_shot.py`` and its CD-FSL loaders; generalised here to Resize(size * 257 / 224));
* an episode draws ``ways`` classes (``torch.randperm``), then ``shots + queries`` distinct images of each
  (another ``randperm``): the first ``shots`` are the support, the rest the queries;
* prototypes: the mean support feature of each class; a query goes to the nearest prototype in squared
  Euclidean distance; the episode's accuracy is over its ``ways * queries`` queries;
* the result: the mean accuracy over ``episodes`` episodes, with the 95% confidence interval
  ``1.96 * std / sqrt(episodes)`` (``np.std``, ddof 0).

Defaults: ssl-transfer's parser (L217-229): 5-way, 15 queries, 600 episodes; its default shot is 5 and its
README's runs use 5 and 50 shots; the CD-FSL benchmark (Guo et al. 2020) reports 5, 20 and 50 shots, the
``shots`` default. Episodes are drawn from a generator seeded by ``seed`` (ssl-transfer's CD-FSL loaders set
no seed), so a run is repeatable; features are extracted once per image through the one feature path
(the eval transform is deterministic, so this is the same as extracting per episode).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torchvision import transforms as T

from mocobench import dist
from mocobench.augment import IMAGENET_MEAN, IMAGENET_STD
from mocobench.datasets import (
    DataError,
    ImageDataset,
    ImageList,
    OnBadImage,
    list_images,
    on_bad_image_option,
)
from mocobench.evaluators.features import feature_key, frozen_features
from mocobench.evaluators.registry import TaskContext, TaskError, register
from mocobench.options import option

logger = logging.getLogger(__name__)


def fewshot_transform(image_size: int = 224) -> T.Compose:
    """Resize((s * 257/224, s * 257/224)) + CenterCrop(s) + ImageNet normalisation (ssl-transfer's CD-FSL
    loaders: ``Scale([257, 257])``, ``CenterCrop(224)``)."""
    side = round(image_size * 257 / 224)
    return T.Compose([T.Resize((side, side)), T.CenterCrop(image_size), T.ToTensor(),
                      T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def episode_accuracy(support: torch.Tensor, query: torch.Tensor) -> float:
    """Nearest-prototype accuracy (%) of one episode. Shape: support (W, S, D), query (W, Q, D); the true
    class of ``query[w]`` is ``w``."""
    prototypes = support.mean(dim=1)  # (W, D)
    q = query.reshape(-1, query.shape[-1])
    dist2 = ((q[:, None, :] - prototypes[None]) ** 2).sum(-1)  # squared Euclidean, (W*Q, W)
    truth = torch.arange(query.shape[0]).repeat_interleave(query.shape[1])
    return 100.0 * (dist2.argmin(dim=1) == truth).double().mean().item()


SPLITS = ("train", "valid", "val", "test")


def _images(root: Path, split: str, on_bad_image: str) -> ImageList:
    """The split folder ``split``, or for ``all`` every split folder under ``root`` concatenated (``root``
    itself when it has none)."""
    if split != "all":
        return list_images(root / split, labelled=True, on_bad_image=on_bad_image)
    parts = [list_images(root / s, labelled=True, on_bad_image=on_bad_image) for s in SPLITS if (root / s).is_dir()]
    if not parts:
        return list_images(root, labelled=True, on_bad_image=on_bad_image)
    if any(p.classes != parts[0].classes for p in parts):
        raise DataError(f"the class folders of the splits under {root} differ")
    return ImageList(root, sum((p.paths for p in parts), ()), sum((p.labels for p in parts), ()), parts[0].classes)


def run_episodes(feats: torch.Tensor, labels: torch.Tensor, ways: int, shots: int, queries: int, episodes: int,
                 seed: int) -> tuple[float, float, list[float]]:
    """(mean accuracy, 95% confidence half-width, per-episode accuracies) over ``episodes`` episodes drawn
    from the classes with at least ``shots + queries`` images."""
    by_class = [torch.nonzero(labels == c).flatten() for c in labels.unique().tolist()]
    eligible = [idx for idx in by_class if len(idx) >= shots + queries]
    if len(eligible) < len(by_class):
        logger.warning("fewshot %d-shot: %d of %d classes have fewer than %d images and are left out of the episodes",
                       shots, len(by_class) - len(eligible), len(by_class), shots + queries)
    if len(eligible) < ways:
        raise TaskError(f"{ways}-way {shots}-shot with {queries} queries needs {ways} classes with at least "
                        f"{shots + queries} images; the split has {len(eligible)}")
    g = torch.Generator().manual_seed(seed)
    acc = []
    for _ in range(episodes):
        chosen = torch.randperm(len(eligible), generator=g)[:ways]
        picks = [eligible[c][torch.randperm(len(eligible[c]), generator=g)[: shots + queries]] for c in chosen.tolist()]
        batch = torch.stack([feats[p] for p in picks])  # (W, S+Q, D)
        acc.append(episode_accuracy(batch[:, :shots], batch[:, shots:]))
    a = np.asarray(acc)
    return float(a.mean()), float(1.96 * a.std() / math.sqrt(episodes)), acc


@dataclass
class FewshotConfig:
    """Few-shot protocol settings; defaults are ssl-transfer's (see the module docstring)."""

    data: str = option("", "A folder of class folders, or a root holding --split.", exists="dir")
    split: str = option("all", "Images the episodes draw from: all (the split folders under --data together, as "
                        "ssl-transfer concatenates them; or --data itself when it holds the class folders), or a split.")
    ways: int = option(5, "Classes per episode (ssl-transfer few_shot.py: 5).", min=1)
    shots: tuple[int, ...] = option((5, 20, 50), "Support images per class; one result per value (CD-FSL: 5, 20, 50).",
                                  min=1)
    queries: int = option(15, "Query images per class and episode (ssl-transfer: 15).", min=1)
    episodes: int = option(600, "Episodes per shot count (ssl-transfer: 600).", min=1)
    image_size: int = option(224, "Centre-crop size (after the square resize to size*257/224).", min=8)
    batch_size: int = option(256, "Feature-extraction batch size.", min=1)
    workers: int = option(4, "Data-loading workers.", min=0)
    amp: Literal["fp32", "bf16"] = option("fp32", "Feature extraction precision: fp32, or bf16 under autocast.")
    device: str = option("auto", "auto, cpu or cuda.")
    on_bad_image: OnBadImage = on_bad_image_option()


@register("fewshot", FewshotConfig, "few-shot: nearest class mean on frozen features, N-way K-shot episodes",
          distributed=True)
def run_fewshot(cfg: FewshotConfig, ctx: TaskContext) -> dict[str, float]:
    """``acc_<K>shot`` and ``ci95_<K>shot`` for each K of ``shots`` (headline: the first)."""
    if cfg.ways < 2 or cfg.queries < 1 or cfg.episodes < 1 or not cfg.shots or min(cfg.shots) < 1:
        raise TaskError("fewshot needs ways >= 2, queries >= 1, episodes >= 1 and shots >= 1")
    images = _images(Path(cfg.data), cfg.split, cfg.on_bad_image)
    device = dist.select_device(cfg.device)
    tf = fewshot_transform(cfg.image_size)
    ds = ImageDataset(images, tf)
    t0 = time.perf_counter()
    feats, labels = frozen_features(ctx.backbone.to(device), ds, feature_key(ctx, "backbone", tf, ds, cfg.amp),
                                    device, cfg.batch_size, cfg.workers, ctx.feature_cache, name="fewshot")
    feats, labels = feats.double().cpu(), labels.cpu()
    metrics, curves, eligible = {}, {}, {}
    counts = torch.bincount(labels)
    for i, shots in enumerate(cfg.shots):
        mean, ci, acc = run_episodes(feats, labels, cfg.ways, shots, cfg.queries, cfg.episodes, ctx.seed + i)
        eligible[f"{shots}shot"] = int((counts >= shots + cfg.queries).sum())
        metrics[f"acc_{shots}shot"], metrics[f"ci95_{shots}shot"] = mean, ci
        curves[f"{shots}shot"] = [round(a, 4) for a in acc]
        logger.info("fewshot %d-way %d-shot (%d queries, %d episodes): %.2f +- %.2f", cfg.ways, shots, cfg.queries,
                    cfg.episodes, mean, ci)
    ctx.derived.update(headline=f"acc_{cfg.shots[0]}shot", transform=" ".join(repr(tf).split()),
                       num_images=len(images), num_classes=len(images.classes), episode_accuracies=curves,
                       classes_with_enough_images=eligible,
                       time_s=round(time.perf_counter() - t0, 2))
    return metrics
