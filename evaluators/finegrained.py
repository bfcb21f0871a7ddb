"""Fine-grained / many-shot transfer (Kornblith et al. 2019, arXiv 1805.08974; Ericsson et al. 2021,
arXiv 2011.13377), ``../shared/docs/protocols.md``. Defaults follow ssl-transfer's code
(linusericsson/ssl-transfer @ 416913f; ``linear.py``, ``finetune.py``), which implements both papers'
protocols; line numbers are cited beside each value.

``linear`` (default): frozen pooled features of Resize(224, bicubic) + CenterCrop(224) (no
augmentation); multinomial logistic regression (scikit-learn, L-BFGS, ``max_iter`` 100, warm starts)
with ``C = 1 / wd`` chosen on the validation split over ``wd in logspace(-6, 5, 45)``, iterated from
the smallest wd up, the first best kept (so a tie keeps the smallest wd); refit on train+val with the
chosen C (warm-started from the last grid fit, as the reference); test once.
``finetune``: the whole network, SGD with Nesterov momentum 0.9 and a per-step cosine schedule for
``ft_steps`` steps of ``ft_batch_size`` RandomResizedCrop(bicubic) + flip views, for every (lr, wd) of
the grid (wd divided by lr, as both papers); the first best on val is refit on train+val from the
pretrained weights and tested once. Kornblith et al.'s grid is larger (7 lrs x 8 wds, 20k steps of 256):
pass it through ``ft_lrs``, ``ft_wds``, ``ft_steps``, ``ft_batch_size``.

The metric, for selection and headline, follows the data set (``linear.py`` L394-406): mean per-class
accuracy for Aircraft, Pets, Flowers (and Caltech-101), top-1 for the others; ``metric=`` overrides it.
"""

from __future__ import annotations

import copy
import logging
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, balanced_accuracy_score
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from mocobench import dist
from mocobench.augment import (
    eval_transform,
    ssl_transfer_eval_transform,
    ssl_transfer_train_transform,
)
from mocobench.datasets import (
    DataError,
    EpochBatchSampler,
    ImageDataset,
    ImageList,
    OnBadImage,
    SeededImageDataset,
    list_images,
    on_bad_image_option,
    resolve_split,
)
from mocobench.evaluators.features import extract_features, feature_key, frozen_features, resnet_features
from mocobench.evaluators.registry import TaskContext, TaskError, register
from mocobench.options import Rule, option

logger = logging.getLogger(__name__)

#: torchvision datasets read from --data without downloading: name -> (class, train, val or None, test).
#: ``None`` val: ``val_fraction`` of train is held out by ssl-transfer's NumPy shuffle under ``split_seed``.
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



#: Data sets scored by mean per-class accuracy (ssl-transfer linear.py L394-406: aircraft, caltech101, flowers,
#: pets); every other set, and a plain folder, by top-1.
MEAN_PER_CLASS_SETS = frozenset({"aircraft", "flowers102", "pets"})
#: Fields of one protocol that the other does not read (left out of the report's protocol and hash).
PROTOCOL_FIELDS = {"linear": ("wd_min", "wd_max", "grid_size", "max_iter", "warm_start", "amp"),
                   "finetune": ("ft_lrs", "ft_wds", "ft_steps", "ft_batch_size")}
#: How the L2 grid is walked (recorded in the results): from the weakest regularisation up, as ssl-transfer.
GRID_ORDER = "ascending wd (C = 1/wd from large to small); ties keep the first, i.e. the smallest wd"


@dataclass
class FinegrainedConfig:
    data: str = option("", "Folder with {train, valid|val, test}/<class>/*, or the root of a torchvision data set.",
                       exists="dir")
    dataset: Literal["folder", "flowers102", "pets", "aircraft", "cars", "dtd", "food101", "cifar10", "cifar100"] = option(
        "folder", "Layout of --data (torchvision sets are read without downloading).")
    on_bad_image: OnBadImage = on_bad_image_option()
    protocol: Literal["linear", "finetune"] = option(
        "linear", "linear (logistic regression on frozen features) or finetune (whole net, lr x wd grid on val).")
    metric: Literal["auto", "mean_per_class", "top1"] = option(
        "auto", "Selection and headline metric; auto: the data set's (mean_per_class for aircraft, pets, flowers102; "
        "top1 for the others and for folders), as ssl-transfer.")
    preprocess: Literal["ssl_transfer", "imagenet"] = option(
        "ssl_transfer", "ssl_transfer: Resize(size, bicubic) + CenterCrop(size) (ssl-transfer linear.py); imagenet: "
        "Resize(size*256/224, bilinear) + CenterCrop(size) (the linear protocol's test transform).")
    image_size: int = option(224, "Centre-crop size (ssl-transfer: 224).", min=8)
    wd_min: float = option(-6.0, "log10 of the smallest weight decay in the grid (ssl-transfer: -6).")
    wd_max: float = option(5.0, "log10 of the largest weight decay in the grid (ssl-transfer: 5).")
    grid_size: int = option(45, "Number of weight-decay values, C = 1/wd (ssl-transfer: 45).", min=1)
    max_iter: int = option(100, "L-BFGS iterations per fit (ssl-transfer: scikit-learn's default, 100).", min=1)
    warm_start: bool = option(
        True, "Start each grid fit from the previous one, and the refit from the last grid fit (ssl-transfer).")
    val_fraction: float = option(0.2, "Share of train held out as val when the data set has no val split (ssl-transfer: 0.2).", min=0, max=1, min_open=True, max_open=True)
    split_seed: int = option(0, "Seed of that held-out split (ssl-transfer: random_seed 0, a NumPy shuffle).", min=0)
    ft_lrs: tuple[float, ...] = option(
        (0.1, 0.01, 0.001, 0.0001), "finetune: learning rates searched (ssl-transfer: logspace(-4, -1, 4), descending).",
        min=0, min_open=True)
    ft_wds: tuple[float, ...] = option(
        (0.0, 1e-6, 1e-5, 1e-4, 1e-3), "finetune: weight decays searched, each divided by the lr "
        "(ssl-transfer: 0 and logspace(-6, -3, 4)).", min=0)
    ft_steps: int = option(5000, "finetune: SGD steps per grid point and for the refit (ssl-transfer: 5000; Kornblith: 20000).", min=1)
    ft_batch_size: int = option(64, "finetune: batch size (ssl-transfer: 64; Kornblith: 256).", min=1)
    batch_size: int = option(64, "Feature-extraction batch size.", min=1)
    workers: int = option(4, "Data-loading workers.", min=0)
    amp: Literal["fp32", "bf16"] = option("fp32", "Feature extraction precision (linear protocol): fp32, or bf16 under autocast.")
    device: str = option("auto", "auto, cpu or cuda.")

    RULES: ClassVar = (Rule(("wd_min", "wd_max"), lambda c: c.wd_min <= c.wd_max, "wd_min <= wd_max (log10 ends of the grid)"),)

    def resolved_metric(self) -> str:
        """The metric that selects and heads the results: ``metric``, or the data set's for ``auto``."""
        if self.metric != "auto":
            return self.metric
        return "mean_per_class" if self.dataset in MEAN_PER_CLASS_SETS else "top1"

    def transforms(self) -> tuple:
        """(training-view transform for finetune, evaluation transform)."""
        test = ssl_transfer_eval_transform if self.preprocess == "ssl_transfer" else eval_transform
        return ssl_transfer_train_transform(self.image_size), test(self.image_size)


def score(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Top-1 and mean per-class accuracy, in percent."""
    return {"top1": 100.0 * accuracy_score(y_true, y_pred), "mean_per_class": 100.0 * balanced_accuracy_score(y_true, y_pred)}


def select_and_fit(
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    wds: np.ndarray,
    metric: str = "mean_per_class",
    max_iter: int = 100,
    warm_start: bool = True,
) -> dict:
    """Choose ``wd`` on val, refit on train+val, score test (ssl-transfer ``linear.py`` L129-177).

    The grid is walked from the smallest wd up and a later wd must score strictly higher to replace
    the best (the reference's ``if test_score > best_score``), so ties keep the smallest wd. With
    ``warm_start`` each fit starts from the previous one and the refit from the last grid fit.
    Shape: features (N, D) float, labels (N,) int. Returns the chosen wd, its val score, the test
    scores and the val curve.
    """
    clf = LogisticRegression(max_iter=max_iter, warm_start=warm_start)
    curve, best = [], None
    with warnings.catch_warnings(record=True) as caught:  # counted once below (ssl-transfer silences them, L79)
        warnings.simplefilter("always", ConvergenceWarning)
        for wd in np.sort(np.asarray(wds)):
            clf.set_params(C=1.0 / wd)
            clf.fit(*train)
            curve.append({"wd": float(wd), **score(val[1], clf.predict(val[0]))})
            if best is None or curve[-1][metric] > best[metric]:
                best = curve[-1]
        clf.set_params(C=1.0 / best["wd"])
        clf.fit(np.concatenate([train[0], val[0]]), np.concatenate([train[1], val[1]]))
    stopped = sum(issubclass(w.category, ConvergenceWarning) for w in caught)
    if stopped:
        logger.info("finegrained: %d of %d L-BFGS fits stopped at max_iter=%d (as in the reference protocol)",
                    stopped, len(curve) + 1, max_iter)
    return {"wd": best["wd"], "val": best[metric], "test": score(test[1], clf.predict(test[0])), "curve": curve}


def holdout_split(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, val) indices: a NumPy shuffle of ``range(n)`` under ``seed``, the first
    ``floor(fraction * n)`` held out (ssl-transfer ``linear.py`` L306-313, ``np.random.seed(0)``)."""
    indices = list(range(n))
    np.random.RandomState(seed).shuffle(indices)
    split = int(np.floor(fraction * n))
    return sorted(indices[split:]), sorted(indices[:split])


def load_splits(cfg: FinegrainedConfig, transforms: dict[str, object]) -> dict[str, Dataset]:
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
        tr, va = holdout_split(len(full_train), cfg.val_fraction, cfg.split_seed)
        out.update(train=Subset(full_train, tr), val=Subset(full_val, va))
    return out


@register("finegrained", FinegrainedConfig, "fine-grained transfer: many-shot logistic regression or fine-tuning",
          distributed=True)
def run_finegrained(cfg: FinegrainedConfig, ctx: TaskContext) -> dict[str, float]:
    device = dist.select_device(cfg.device)
    metric = cfg.resolved_metric()
    train_tf, test_tf = cfg.transforms()
    ctx.derived.update(headline=metric, transform=" ".join(repr(test_tf).split()), split_seed=cfg.split_seed,
                       unused=[f for p, fields in PROTOCOL_FIELDS.items() if p != cfg.protocol for f in fields])
    if cfg.protocol == "finetune":
        if dist.get_world_size() > 1:
            raise TaskError("protocol=finetune runs in one process (its grid is sequential); run it without torchrun")
        ctx.derived["train_transform"] = " ".join(repr(train_tf).split())
        return _finetune(cfg, ctx, ctx.backbone.to(device), device, metric, train_tf, test_tf)
    splits = load_splits(cfg, {"train": test_tf, "val": test_tf, "test": test_tf})
    net = ctx.backbone.to(device)
    t0 = time.perf_counter()
    feats = {}
    for k, ds in splits.items():  # the one feature path: sharded under torchrun, cached
        key = feature_key(ctx, "backbone", test_tf, ds, cfg.amp)
        f, y = frozen_features(net, ds, key, device, cfg.batch_size, cfg.workers, ctx.feature_cache,
                               name=f"finegrained {k}")
        feats[k] = (f.cpu().double().numpy(), y.cpu().numpy())
    t_feat = time.perf_counter() - t0
    ctx.derived["processes"] = dist.get_world_size()  # every process fits the same (deterministic) model
    wds = np.logspace(cfg.wd_min, cfg.wd_max, cfg.grid_size)
    res = select_and_fit(feats["train"], feats["val"], feats["test"], wds, metric, cfg.max_iter, cfg.warm_start)
    ctx.derived.update(
        wd_chosen=res["wd"], C_chosen=1.0 / res["wd"], val_curve=res["curve"], grid_order=GRID_ORDER,
        max_iter=cfg.max_iter, feature_time_s=round(t_feat, 2),
        fit_time_s=round(time.perf_counter() - t0 - t_feat, 2), sizes={k: len(v[1]) for k, v in feats.items()},
    )
    logger.info("finegrained: wd %.3g chosen on val (%s %.2f); test %s", res["wd"], metric, res["val"], res["test"])
    return {"top1": res["test"]["top1"], "mean_per_class": res["test"]["mean_per_class"], f"val_{metric}": res["val"]}


def _finetune(cfg: FinegrainedConfig, ctx: TaskContext, net: nn.Module, device: torch.device, metric: str,
              train_tf, test_tf) -> dict[str, float]:
    """The (lr, wd) grid on val, then the first best refit on train+val and tested (ssl-transfer ``finetune.py``
    L222-251). Each run starts from the pretrained weights."""
    if not cfg.ft_lrs or not cfg.ft_wds or cfg.ft_steps < 1:
        raise TaskError("protocol=finetune needs non-empty ft_lrs and ft_wds and ft_steps >= 1")
    splits = load_splits(cfg, {"train": train_tf, "val": test_tf, "test": test_tf})
    if not isinstance(splits["train"], ImageDataset):
        raise TaskError("protocol=finetune reads folder data sets only for now (--set dataset=folder)")
    train, val = splits["train"].images, splits["val"].images
    trainval = ImageList(train.root, train.paths + val.paths, train.labels + val.labels, train.classes)
    pretrained = copy.deepcopy(net.state_dict())
    grid, best = [], None
    for lr in cfg.ft_lrs:
        for wd in cfg.ft_wds:
            net.load_state_dict(pretrained)
            fc = _train(cfg, ctx.seed, net, train, train_tf, lr, wd / lr, device)
            grid.append({"lr": lr, "wd": wd, **_scores(cfg, net, fc, splits["val"], device)})
            logger.info("finetune lr %g wd %g (%g / lr): val %s %.2f", lr, wd, wd / lr, metric, grid[-1][metric])
            if best is None or grid[-1][metric] > best[metric]:  # strict: the first best is kept
                best = grid[-1]
    net.load_state_dict(pretrained)
    fc = _train(cfg, ctx.seed, net, trainval, train_tf, best["lr"], best["wd"] / best["lr"], device)
    test = _scores(cfg, net, fc, splits["test"], device)
    ctx.derived.update(ft_grid=grid, lr_chosen=best["lr"], wd_chosen=best["wd"], sizes={
        "train": len(train), "val": len(val), "test": len(splits["test"])})
    return {"top1": test["top1"], "mean_per_class": test["mean_per_class"], f"val_{metric}": best[metric]}


def _train(cfg: FinegrainedConfig, seed: int, net: nn.Module, images: ImageList, transform, lr: float,
           weight_decay: float, device: torch.device) -> nn.Linear:
    """``ft_steps`` SGD steps (Nesterov momentum 0.9, cosine lr per step to 0, BN in train mode) on the
    network and a new linear head; returns the head (the network is trained in place)."""
    torch.manual_seed(seed)
    fc = nn.Linear(_feature_dim(net, device), len(images.classes)).to(device)
    for p in net.parameters():
        p.requires_grad = True
    optimizer = torch.optim.SGD([*net.parameters(), *fc.parameters()], lr=lr, momentum=0.9, nesterov=True,
                                weight_decay=weight_decay)
    sampler = EpochBatchSampler(len(images), cfg.ft_batch_size, seed, drop_last=False)
    loader = DataLoader(SeededImageDataset(images, transform), batch_sampler=sampler, num_workers=cfg.workers)
    net.train()
    step, epoch = 0, 0
    while step < cfg.ft_steps:
        sampler.set_epoch(epoch)
        for images_, labels in loader:
            for g in optimizer.param_groups:  # CosineAnnealingLR(T_max=steps), stepped every iteration
                g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / cfg.ft_steps))
            loss = F.cross_entropy(fc(resnet_features(net, images_.to(device))), labels.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            if not math.isfinite(loss.item()):
                logger.warning("finetune lr %g: loss is %s at step %d; stopped (the point scores at chance)", lr,
                               loss.item(), step)
                step = cfg.ft_steps
            if step >= cfg.ft_steps:
                break
        epoch += 1
    return fc


def _scores(cfg: FinegrainedConfig, net: nn.Module, fc: nn.Linear, ds: Dataset, device) -> dict[str, float]:
    f, y = extract_features(net, DataLoader(ds, batch_size=cfg.batch_size, num_workers=cfg.workers), device,
                            normalize=False)
    with torch.no_grad():
        return score(y.cpu().numpy(), fc(f).argmax(1).cpu().numpy())


def _feature_dim(net: nn.Module, device: torch.device) -> int:
    was = net.training
    net.eval()
    with torch.no_grad():
        d = resnet_features(net, torch.zeros(1, 3, 64, 64, device=device)).shape[1]
    net.train(was)
    return d
