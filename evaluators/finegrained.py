"""Fine-grained / many-shot transfer (Kornblith et al. 2019, arXiv 1805.08974; Ericsson et al. 2021,
arXiv 2011.13377), ``../shared/docs/protocols.md``.

``linear`` (default): frozen pooled features of the centre crop (no augmentation); multinomial
logistic regression (scikit-learn, L-BFGS) with the L2 strength chosen on the validation split over
``wd in logspace(-6, 5, 45)``, ``C = 1 / wd``; refit on train+val with the chosen C; test once.
``finetune``: the whole network trained with SGD on train for a short schedule (no search), scored
on val and test. Metrics: top-1 and mean per-class accuracy (the selection uses ``metric``).
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
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, balanced_accuracy_score
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from mocobench import dist
from mocobench.datasets import (
    DataError,
    EpochBatchSampler,
    ImageDataset,
    OnBadImage,
    SeededImageDataset,
    list_images,
    on_bad_image_option,
    resolve_split,
)
from mocobench.evaluators.features import extract_features, resnet_features
from mocobench.evaluators.registry import TaskContext, TaskError, register
from mocobench.options import option
from mocobench.pretrain.augment import eval_transform, linear_train_transform

logger = logging.getLogger(__name__)

#: torchvision datasets read from --data without downloading: name -> (class, train, val or None, test).
#: ``None`` val: a stratified ``val_fraction`` of train is held out (seeded).
TORCHVISION_SETS = {
    "flowers102": ("Flowers102", {"split": "train"}, {"split": "val"}, {"split": "test"}),
    "pets": ("OxfordIIITPet", {"split": "trainval"}, None, {"split": "test"}),
    "aircraft": ("FGVCAircraft", {"split": "train"}, {"split": "val"}, {"split": "test"}),
    "cars": ("StanfordCars", {"split": "train"}, None, {"split": "test"}),
    "dtd": ("DTD", {"split": "train"}, {"split": "val"}, {"split": "test"}),
    "food101": ("Food101", {"split": "train"}, None, {"split": "test"}),
    "cifar10": ("CIFAR10", {"train": True}, None, {"train": False}),
    "cifar100": ("CIFAR100", {"train": True}, None, {"train": False}),
}



@dataclass
class FinegrainedConfig:
    data: str = option("", "Folder with {train, valid|val, test}/<class>/*, or the root of a torchvision data set.")
    dataset: Literal["folder", "flowers102", "pets", "aircraft", "cars", "dtd", "food101", "cifar10", "cifar100"] = option(
        "folder", "Layout of --data (torchvision sets are read without downloading).")
    on_bad_image: OnBadImage = on_bad_image_option()
    protocol: Literal["linear", "finetune"] = option("linear", "linear (logistic regression) or finetune (whole net).")
    metric: Literal["mean_per_class", "top1"] = option("mean_per_class", "Selection metric (Flowers, Pets, Aircraft: mean per class).")
    image_size: int = option(224, "Centre-crop size (resize to size*256/224 first).")
    wd_min: float = option(-6.0, "log10 of the smallest weight decay in the grid.")
    wd_max: float = option(5.0, "log10 of the largest weight decay in the grid.")
    grid_size: int = option(45, "Number of weight-decay values (C = 1/wd).")
    max_iter: int = option(1000, "L-BFGS iterations per fit.")
    warm_start: bool = option(True, "Start each grid fit from the previous solution (faster; same optimum up to tolerance).")
    val_fraction: float = option(0.2, "Share of train held out as val when the data set has no val split.")
    ft_epochs: int = option(10, "finetune: epochs.")
    ft_lr: float = option(0.01, "finetune: SGD learning rate per 256 images (cosine schedule).")
    ft_weight_decay: float = option(1e-4, "finetune: SGD weight decay.")
    batch_size: int = option(64, "Batch size.")
    workers: int = option(4, "Data-loading workers.")
    device: str = option("auto", "auto, cpu or cuda.")


def score(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Top-1 and mean per-class accuracy, in percent."""
    return {"top1": 100.0 * accuracy_score(y_true, y_pred), "mean_per_class": 100.0 * balanced_accuracy_score(y_true, y_pred)}


def select_and_fit(
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    wds: np.ndarray,
    metric: str = "mean_per_class",
    max_iter: int = 1000,
    warm_start: bool = True,
) -> dict:
    """Choose ``wd`` on val (ties: the larger wd), refit on train+val, score test.

    Shape: features (N, D) float, labels (N,) int. Returns the chosen wd, its val score, the test
    scores and the val curve.
    """
    order = np.sort(np.asarray(wds))[::-1]  # strong to weak regularisation (warm starts move outward)
    clf = LogisticRegression(max_iter=max_iter, warm_start=warm_start)
    curve = []
    for wd in order:
        clf.set_params(C=1.0 / wd)
        clf.fit(*train)
        curve.append({"wd": float(wd), **score(val[1], clf.predict(val[0]))})
    best = max(curve, key=lambda c: c[metric])  # max keeps the first (largest wd) among ties
    final = LogisticRegression(C=1.0 / best["wd"], max_iter=max_iter)
    final.fit(np.concatenate([train[0], val[0]]), np.concatenate([train[1], val[1]]))
    return {"wd": best["wd"], "val": best[metric], "test": score(test[1], final.predict(test[0])), "curve": curve}


def _stratified_split(labels: list[int], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    rng = np.random.default_rng(seed)
    labels_arr = np.asarray(labels)
    train_idx, val_idx = [], []
    for c in np.unique(labels_arr):
        idx = rng.permutation(np.flatnonzero(labels_arr == c))
        n_val = max(1, int(round(fraction * len(idx)))) if len(idx) > 1 else 0
        val_idx += idx[:n_val].tolist()
        train_idx += idx[n_val:].tolist()
    return sorted(train_idx), sorted(val_idx)


def _targets(ds) -> list[int]:
    for attr in ("targets", "_labels", "labels"):
        if hasattr(ds, attr):
            return list(getattr(ds, attr))
    return [ds[i][1] for i in range(len(ds))]


def load_splits(cfg: FinegrainedConfig, seed: int, transforms: dict[str, object]) -> dict[str, Dataset]:
    """``{"train", "val", "test"}`` datasets yielding (image tensor, label); ``transforms`` per split."""
    root = Path(cfg.data)
    if cfg.dataset == "folder":
        splits = {"train": ("train",), "val": ("valid", "val"), "test": ("test",)}
        lists = {k: list_images(resolve_split(root, names), labelled=True, on_bad_image=cfg.on_bad_image)
                 for k, names in splits.items()}
        if not lists["train"].classes == lists["val"].classes == lists["test"].classes:
            raise DataError(f"the class folders of the train, val and test splits under {root} differ")
        return {k: ImageDataset(v, transforms[k]) for k, v in lists.items()}
    import torchvision.datasets as tvd

    name, train_kw, val_kw, test_kw = TORCHVISION_SETS[cfg.dataset]

    def make(kw, split):
        try:
            return getattr(tvd, name)(str(root), transform=transforms[split], download=False, **kw)
        except (RuntimeError, FileNotFoundError, OSError) as e:
            raise DataError(f"{cfg.dataset}: cannot read {name} {kw} under {root} (download it there first): {e}") from e

    out = {"test": make(test_kw, "test")}
    if val_kw is not None:
        out.update(train=make(train_kw, "train"), val=make(val_kw, "val"))
    else:
        full_train, full_val = make(train_kw, "train"), make(train_kw, "val")
        tr, va = _stratified_split(_targets(full_train), cfg.val_fraction, seed)
        out.update(train=Subset(full_train, tr), val=Subset(full_val, va))
    return out


def _num_classes(ds: Dataset) -> int:
    base = ds.dataset if isinstance(ds, Subset) else ds
    if isinstance(base, ImageDataset):
        return len(base.images.classes)
    return len(base.classes)


@register("finegrained", FinegrainedConfig, "fine-grained transfer: many-shot logistic regression or fine-tuning")
def run_finegrained(cfg: FinegrainedConfig, ctx: TaskContext) -> dict[str, float]:
    if cfg.grid_size < 1:
        raise TaskError(f"grid_size must be at least 1, got {cfg.grid_size}")
    device = dist.select_device(cfg.device)
    net = ctx.backbone.to(device)
    test_tf = eval_transform(cfg.image_size)
    if cfg.protocol == "finetune":
        return _finetune(cfg, ctx, net, device)
    splits = load_splits(cfg, ctx.seed, {"train": test_tf, "val": test_tf, "test": test_tf})
    t0 = time.perf_counter()
    feats = {}
    for k, ds in splits.items():
        loader = DataLoader(ds, batch_size=cfg.batch_size, num_workers=cfg.workers)
        f, y = extract_features(net, loader, device, normalize=False)
        feats[k] = (f.cpu().double().numpy(), y.cpu().numpy())
    t_feat = time.perf_counter() - t0
    wds = np.logspace(cfg.wd_min, cfg.wd_max, cfg.grid_size)
    res = select_and_fit(feats["train"], feats["val"], feats["test"], wds, cfg.metric, cfg.max_iter, cfg.warm_start)
    ctx.derived.update(
        wd_chosen=res["wd"], C_chosen=1.0 / res["wd"], val_curve=res["curve"], feature_time_s=round(t_feat, 2),
        fit_time_s=round(time.perf_counter() - t0 - t_feat, 2), sizes={k: len(v[1]) for k, v in feats.items()},
    )
    logger.info("finegrained: wd %.3g chosen on val (%s %.2f); test %s", res["wd"], cfg.metric, res["val"], res["test"])
    return {"top1": res["test"]["top1"], "mean_per_class": res["test"]["mean_per_class"], f"val_{cfg.metric}": res["val"]}


def _finetune(cfg: FinegrainedConfig, ctx: TaskContext, net: nn.Module, device: torch.device) -> dict[str, float]:
    """Whole-network SGD (momentum 0.9, cosine lr over ``ft_epochs``), RRC+flip views; scored on val and test."""
    test_tf = eval_transform(cfg.image_size)
    splits = load_splits(cfg, ctx.seed, {"train": linear_train_transform(cfg.image_size), "val": test_tf, "test": test_tf})
    train = splits["train"]
    if not isinstance(train, ImageDataset):
        raise TaskError("protocol=finetune reads folder data sets only for now (--set dataset=folder)")
    torch.manual_seed(ctx.seed)
    fc = nn.Linear(_feature_dim(net, device), _num_classes(train)).to(device)
    params = [*net.parameters(), *fc.parameters()]
    for p in net.parameters():
        p.requires_grad = True
    lr = cfg.ft_lr * cfg.batch_size / 256
    optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=cfg.ft_weight_decay)
    sampler = EpochBatchSampler(len(train), cfg.batch_size, ctx.seed, drop_last=False)
    loader = DataLoader(SeededImageDataset(train.images, train.transform), batch_sampler=sampler, num_workers=cfg.workers)
    for epoch in range(cfg.ft_epochs):
        for g in optimizer.param_groups:
            g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * epoch / cfg.ft_epochs))
        sampler.set_epoch(epoch)
        net.train()
        for images, labels in loader:
            loss = F.cross_entropy(fc(resnet_features(net, images.to(device))), labels.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        logger.info("finetune epoch %d/%d: loss %.4f", epoch + 1, cfg.ft_epochs, loss.item())
    out = {}
    for split in ("val", "test"):
        f, y = extract_features(net, DataLoader(splits[split], batch_size=cfg.batch_size, num_workers=cfg.workers),
                                device, normalize=False)
        with torch.no_grad():
            pred = fc(f).argmax(1).cpu().numpy()
        for k, v in score(y.cpu().numpy(), pred).items():
            out[k if split == "test" else f"val_{k}"] = v
    ctx.derived["lr_scaled"] = lr
    return out


def _feature_dim(net: nn.Module, device: torch.device) -> int:
    was = net.training
    net.eval()
    with torch.no_grad():
        d = resnet_features(net, torch.zeros(1, 3, 64, 64, device=device)).shape[1]
    net.train(was)
    return d
