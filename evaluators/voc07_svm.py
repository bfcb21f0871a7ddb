"""VOC07 classification with linear SVMs on frozen features (Goyal et al. 2019, arXiv 1905.01235), as the
original code implements it: facebookresearch/fair_self_supervision_benchmark @ 1e5d165 (FAIR below;
VISSL @ 09270ed and mmselfsup @ db861f3 copy it).

* labels (FAIR extra_scripts/create_voc_data_files.py L75-109): per image and class, 1 when an object of
  the class is not marked difficult, -1 ("ignore") when all its objects are difficult, 0 when there is
  none; read here from the devkit's ``Annotations/*.xml`` for the images of ``ImageSets/Main/<set>.txt``
  (the definition of VOC's ``<class>_<set>.txt`` files). Training (train_svm_kfold.py L77-81) counts the
  difficult images as negatives; testing (test_svm.py L116-126) leaves them out.
* features: the frozen backbone's res5 output average-pooled with kernel 6, stride 1 (2x2x2048 = 8192-d
  for ResNet-50 at 224 px; FAIR resnet50 extract_features yaml, ``res5_2_branch2c_bn_s1k6_resize``;
  ``pool=global`` gives the 2048-d global pool), of Resize(256) + a 224x224 squash (no crop), each
  divided by its L2 norm + 1e-5, in float64.
* one ``LinearSVC(C, class_weight={1: 2, -1: 1}, intercept_scaling=1, penalty=l2, loss=squared_hinge,
  tol=1e-4, dual=True, max_iter=2000)`` per class (train_svm_kfold.py L72-76); for every cost of the grid
  (the documented 10^-7..10^2 plus 2^-4..2^-19, 26 costs: GETTING_STARTED.md L133-149, svm_helper.py
  L42-47) the mean 3-fold ``cross_val_score(scoring="average_precision")`` on trainval; the first best cost
  is refit on all of trainval (L90-97) and scored on test.
* AP: FAIR's ``calculate_ap`` (svm_helper.py L67-117): the all-points interpolated AP of VOC2010+ (precision
  made monotone, summed over recall changes), not the 11-point VOC07 AP (``ap=voc07_11point`` computes
  that one); mAP is the mean over the classes, in percent.
* low shot (``low_shot=true``; create_voc_low_shot_samples.py L30-63, train/test_svm_low_shot.py): for k in
  1, 2, 4, ..., 96 and each of 5 samples, every class gets its own k positives and 19 k negatives drawn
  from trainval (difficult images never); one SVM per cost, no cross-validation; the test mAP of every
  (sample, k, cost); per k, mean/min/max/std (ddof 0) over the samples at the cost with the best mean, as
  the reference does (that cost is chosen on the test set, a property of the published protocol).

The reference leaves ``LinearSVC``'s ``random_state`` and the low-shot sampling unseeded; both are seeded
by ``seed`` here. Under torchrun the features are sharded (the one feature path) and the classes are
split across the processes.
"""

from __future__ import annotations

import logging
import time
import warnings
import xml.etree.ElementTree as ET
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torchvision import transforms as T

from mocobench import dist
from mocobench.augment import IMAGENET_MEAN, IMAGENET_STD
from mocobench.datasets import DataError, ImageDataset, ImageList
from mocobench.evaluators.features import feature_key, frozen_features
from mocobench.evaluators.registry import TaskContext, TaskError, register
from mocobench.options import option

logger = logging.getLogger(__name__)

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
               "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")
#: FAIR's documented cost list (GETTING_STARTED.md L133-149) plus the 2^-4..2^-19 it appends (svm_helper.py L42-47).
FAIR_COSTS = (1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0, *(0.5**n for n in range(4, 20)))
LOW_SHOT_K = (1, 2, 4, 8, 16, 32, 64, 96)


def svm_transform(image_size: int = 224) -> T.Compose:
    """Resize(size * 256/224) on the short side, then a size x size squash (no crop), ImageNet normalisation."""
    return T.Compose([T.Resize(round(image_size * 256 / 224)), T.Resize((image_size, image_size)), T.ToTensor(),
                      T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def voc_labels(voc: Path, image_set: str) -> tuple[ImageList, np.ndarray]:
    """The images of ``ImageSets/Main/<image_set>.txt`` and their (N, 20) labels: 1 present (an object not
    marked difficult), -1 difficult only, 0 absent."""
    ids_file = voc / "ImageSets" / "Main" / f"{image_set}.txt"
    if not ids_file.is_file():
        raise DataError(f"{ids_file} does not exist (expected a VOC devkit year folder, e.g. VOCdevkit/VOC2007)")
    ids = sorted(line.strip() for line in ids_file.read_text().splitlines() if line.strip())  # FAIR sorts by id
    labels = np.zeros((len(ids), len(VOC_CLASSES)), dtype=np.int64)
    paths = []
    for i, image_id in enumerate(ids):
        xml = voc / "Annotations" / f"{image_id}.xml"
        try:
            root = ET.parse(xml).getroot()
        except (OSError, ET.ParseError) as e:
            raise DataError(f"cannot read the annotation {xml}: {e}") from e
        for obj in root.iter("object"):
            name = (obj.findtext("name") or "").strip()
            if name not in VOC_CLASSES:
                raise DataError(f"{xml}: unknown class {name!r} (VOC's 20 classes expected)")
            c = VOC_CLASSES.index(name)
            difficult = (obj.findtext("difficult") or "0").strip() == "1"
            labels[i, c] = 1 if not difficult or labels[i, c] == 1 else -1
        paths.append(voc / "JPEGImages" / f"{image_id}.jpg")
    return ImageList(voc, tuple(paths), tuple(0 for _ in ids), ()), labels


def l2_rows(x: np.ndarray) -> np.ndarray:
    """Each row divided by its L2 norm + 1e-5 (FAIR svm_helper.py ``normalize_features``), float64."""
    x = x.astype(np.float64)
    return x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-5)


def ap_all_points(scores: np.ndarray, targets: np.ndarray) -> float:
    """FAIR ``get_precision_recall`` + ``calculate_ap``: ranks by score (descending), precision made
    monotone non-increasing, summed over the recall changes. ``targets`` > 0 are positives."""
    order = np.argsort(scores)[::-1]
    pos = (targets[order] > 0).astype(np.float64)
    tp, fp = np.cumsum(pos), np.cumsum(1 - pos)
    recall = tp / max(pos.sum(), 1)
    precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def ap_11_point(scores: np.ndarray, targets: np.ndarray) -> float:
    """The VOC07 11-point interpolated AP (py-faster-rcnn ``voc_ap(use_07_metric=True)``)."""
    order = np.argsort(scores)[::-1]
    pos = (targets[order] > 0).astype(np.float64)
    tp, fp = np.cumsum(pos), np.cumsum(1 - pos)
    recall, precision = tp / max(pos.sum(), 1), tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return float(np.mean([precision[recall >= t].max() if (recall >= t).any() else 0.0
                          for t in np.arange(0.0, 1.1, 0.1)]))


def train_targets(labels: np.ndarray) -> np.ndarray:
    """SVM targets of a class column: present 1 -> 1; absent 0 and difficult -1 -> -1 (FAIR counts difficult
    images as negatives in training, train_svm_kfold.py L77-81)."""
    return np.where(labels == 1, 1, -1)


def low_shot_rows(labels: np.ndarray, k: int, seed) -> np.ndarray:
    """One class's low-shot training rows: ``k`` positives and ``19 k`` negatives (absent, never difficult)
    drawn without replacement (FAIR create_voc_low_shot_samples.py L30-63), from a generator seeded by
    ``seed`` (per class and sample, so the draw does not depend on the other classes)."""
    rng = np.random.default_rng(seed)
    pos, neg = np.where(labels == 1)[0], np.where(labels == 0)[0]
    return np.concatenate([rng.choice(pos, k, replace=False), rng.choice(neg, 19 * k, replace=False)])


def _svm(cost: float, max_iter: int, seed: int):
    from sklearn.svm import LinearSVC

    return LinearSVC(C=cost, class_weight={1: 2, -1: 1}, intercept_scaling=1.0, penalty="l2", loss="squared_hinge",
                     tol=1e-4, dual=True, max_iter=max_iter, random_state=seed)


@contextmanager
def _quiet_convergence():
    """LinearSVC's ConvergenceWarning silenced: max_iter 2000 is the reference's budget, not printed per fit."""
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


def _fit(clf, x, y):
    with _quiet_convergence():
        return clf.fit(x, y)


def train_class(x: np.ndarray, y: np.ndarray, costs: tuple[float, ...], folds: int, max_iter: int, seed: int):
    """Cost chosen by the mean ``folds``-fold CV AP (first best), refit on all rows. ``y`` in {1, -1}.
    Returns (model, chosen cost, CV AP per cost)."""
    from sklearn.model_selection import cross_val_score

    cv = []
    for cost in costs:
        with _quiet_convergence():
            cv.append(float(cross_val_score(_svm(cost, max_iter, seed), x, y, cv=folds,
                                            scoring="average_precision").mean()))
    best = int(np.argmax(cv))  # the first best, as FAIR test_svm.py L36-63
    return _fit(_svm(costs[best], max_iter, seed), x, y), costs[best], cv


def class_ap(model, x: np.ndarray, labels: np.ndarray, ap_fn) -> float:
    """AP on the test rows that are not difficult (label -1); ``labels`` in {1, 0, -1}."""
    keep = labels != -1
    return ap_fn(model.decision_function(x[keep]), labels[keep])


@dataclass
class Voc07SvmConfig:
    """VOC07 SVM settings; defaults are FAIR's (see the module docstring)."""

    data: str = option("", "VOC devkit folder holding VOC2007 (or the VOC2007 folder itself).", exists="dir")
    train_set: str = option("trainval", "ImageSets/Main list the SVMs are trained on.")
    test_set: str = option("test", "ImageSets/Main list they are scored on.")
    image_size: int = option(224, "Squash size (after resizing the short side to size*256/224).", min=8)
    pool: Literal["fair", "global"] = option("fair", "fair: res5 average-pooled with kernel 6, stride 1 (8192-d at "
                                                     "224 px, FAIR); global: the 2048-d global average.")
    costs: tuple[float, ...] = option(FAIR_COSTS, "SVM costs C (FAIR: 1e-7..100 and 2^-4..2^-19).", min=0,
                                     min_open=True)
    cv_folds: int = option(3, "Folds of the cost selection (FAIR: 3).", min=2)
    max_iter: int = option(2000, "LinearSVC max_iter (FAIR: 2000).", min=1)
    ap: Literal["all_points", "voc07_11point"] = option("all_points", "Test AP: FAIR's all-points interpolated AP, "
                                                                      "or the VOC07 11-point AP.")
    low_shot: bool = option(False, "Also run the low-shot variant (k = 1..96 per class, 5 samples).")
    low_shot_k: tuple[int, ...] = option(LOW_SHOT_K, "Low-shot positives per class.", min=1)
    low_shot_samples: int = option(5, "Low-shot samples per k.", min=1)
    batch_size: int = option(256, "Feature-extraction batch size.", min=1)
    workers: int = option(4, "Data-loading workers.", min=0)
    amp: Literal["fp32", "bf16"] = option("fp32", "Feature extraction precision: fp32, or bf16 under autocast.")
    device: str = option("auto", "auto, cpu or cuda.")


def _features(cfg: Voc07SvmConfig, ctx: TaskContext, images: ImageList, name: str) -> np.ndarray:
    device = dist.select_device(cfg.device)
    tf = svm_transform(cfg.image_size)
    ds = ImageDataset(images, tf)
    features = "res5_k6s1" if cfg.pool == "fair" else "backbone"
    f, _ = frozen_features(ctx.backbone.to(device), ds, feature_key(ctx, features, tf, ds, cfg.amp), device,
                           cfg.batch_size, cfg.workers, ctx.feature_cache, name=name)
    return l2_rows(f.cpu().numpy())


def _mine(items: list) -> list:
    """This rank's share of ``items`` (every ``world``-th): the classes are split across processes."""
    return items[dist.get_rank() :: dist.get_world_size()]


def _gather(values: dict[int, float], n: int, device: torch.device) -> np.ndarray:
    """Per-class values computed on the ranks that own them -> the full (n,) vector on every rank (on
    ``device`` for the collective: NCCL reduces CUDA tensors only)."""
    t, owned = torch.zeros(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)
    for c, v in values.items():
        t[c], owned[c] = v, 1.0
    t, owned = dist.all_reduce_sum(t.to(device)), dist.all_reduce_sum(owned.to(device))
    return (t / owned.clamp(min=1)).cpu().numpy()


@register("voc07_svm", Voc07SvmConfig, "VOC07 classification: per-class linear SVMs on frozen features (mAP)",
          distributed=True)
def run_voc07_svm(cfg: Voc07SvmConfig, ctx: TaskContext) -> dict[str, float]:
    if not cfg.costs or cfg.cv_folds < 2:
        raise TaskError("voc07_svm needs at least one cost and cv_folds >= 2")
    root = Path(cfg.data)
    voc = root if (root / "ImageSets").is_dir() else root / "VOC2007"
    train_images, train_labels = voc_labels(voc, cfg.train_set)
    test_images, test_labels = voc_labels(voc, cfg.test_set)
    t0 = time.perf_counter()
    x_train, x_test = _features(cfg, ctx, train_images, "voc07 train"), _features(cfg, ctx, test_images, "voc07 test")
    t_feat = time.perf_counter() - t0
    ap_fn = ap_all_points if cfg.ap == "all_points" else ap_11_point
    # classes the split can score: train positives for every fold, and a test positive
    usable = [c for c in range(len(VOC_CLASSES)) if (train_labels[:, c] == 1).sum() >= cfg.cv_folds
              and (test_labels[:, c] == 1).sum() >= 1]
    skipped = [VOC_CLASSES[c] for c in range(len(VOC_CLASSES)) if c not in usable]
    if not usable:
        raise TaskError(f"no VOC class has {cfg.cv_folds} positives in {cfg.train_set} and one in {cfg.test_set}")
    if skipped:
        logger.warning("voc07_svm: %d classes have too few positives here and are left out of the mAP: %s",
                       len(skipped), ", ".join(skipped))
    aps, chosen = {}, {}
    for c in _mine(usable):
        y = train_targets(train_labels[:, c])
        model, cost, _ = train_class(x_train, y, cfg.costs, cfg.cv_folds, cfg.max_iter, ctx.seed)
        aps[c], chosen[c] = 100.0 * class_ap(model, x_test, test_labels[:, c], ap_fn), cost
        logger.info("voc07_svm %s: C %.3g, test AP %.2f", VOC_CLASSES[c], cost, aps[c])
    device = dist.select_device(cfg.device)
    ap_vec, cost_vec = _gather(aps, len(VOC_CLASSES), device), _gather(chosen, len(VOC_CLASSES), device)
    metrics = {"mAP": float(np.mean(ap_vec[usable]))}
    ctx.derived.update(headline="mAP", ap_per_class={VOC_CLASSES[c]: float(ap_vec[c]) for c in usable},
                       cost_per_class={VOC_CLASSES[c]: float(cost_vec[c]) for c in usable}, classes_left_out=skipped,
                       feature_dim=int(x_train.shape[1]), transform=" ".join(repr(svm_transform(cfg.image_size)).split()),
                       sizes={"train": len(train_images), "test": len(test_images)}, feature_time_s=round(t_feat, 2),
                       unused=[] if cfg.low_shot else ["low_shot_k", "low_shot_samples"])
    if cfg.low_shot:
        metrics.update(_low_shot(cfg, ctx, x_train, train_labels, x_test, test_labels, usable, ap_fn))
    return metrics


def _low_shot(cfg, ctx, x_train, train_labels, x_test, test_labels, usable, ap_fn) -> dict[str, float]:
    """mean/min/max/std of the test mAP over the samples, per k, at the cost with the best mean."""
    out, costs_chosen = {}, {}
    device = dist.select_device(cfg.device)
    for k in cfg.low_shot_k:  # checked on every process before any work, so all stop together
        for c in usable:
            pos, neg = (train_labels[:, c] == 1).sum(), (train_labels[:, c] == 0).sum()
            if pos < k or neg < 19 * k:
                raise TaskError(f"low shot k={k}: class {VOC_CLASSES[c]} has {pos} positives and {neg} negatives "
                                f"in {cfg.train_set} ({k} and {19 * k} needed); lower low_shot_k")
    for k in cfg.low_shot_k:
        maps = np.zeros((cfg.low_shot_samples, len(cfg.costs)))
        for s in range(cfg.low_shot_samples):
            aps: dict[int, list[float]] = {}
            for c in _mine(usable):
                rows = low_shot_rows(train_labels[:, c], k, [ctx.seed, k, s, c])
                y = train_targets(train_labels[rows, c])
                aps[c] = [ap_fn(_fit(_svm(cost, cfg.max_iter, ctx.seed), x_train[rows], y).decision_function(
                    x_test[test_labels[:, c] != -1]), test_labels[test_labels[:, c] != -1, c]) for cost in cfg.costs]
            per_cost = [_gather({c: v[j] for c, v in aps.items()}, len(VOC_CLASSES), device)
                        for j in range(len(cfg.costs))]
            maps[s] = [100.0 * float(np.mean(v[usable])) for v in per_cost]
        best = int(np.argmax(maps.mean(axis=0)))  # chosen on the test mAP, as the reference does
        col = maps[:, best]
        out.update({f"lowshot_k{k}_mean": float(col.mean()), f"lowshot_k{k}_min": float(col.min()),
                    f"lowshot_k{k}_max": float(col.max()), f"std_lowshot_k{k}": float(col.std())})
        costs_chosen[k] = cfg.costs[best]
        logger.info("voc07_svm low shot k=%d: %.2f (min %.2f, max %.2f, std %.2f) at C %.3g", k, col.mean(),
                    col.min(), col.max(), col.std(), cfg.costs[best])
    ctx.derived["low_shot_cost"] = costs_chosen
    return out
