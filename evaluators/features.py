"""The one frozen-feature path: globally pooled ResNet features for kNN, linear, fine-grained and few-shot.

:func:`frozen_features` extracts the features of a data set once per (checkpoint, input normalisation,
features, transform, image list, precision), sharded over the processes of a torchrun launch (each
rank a contiguous block of rows), and stores them in a :class:`FeatureCache` folder shared by the tasks
of a run or a suite. A cache entry is one file per block of rows plus ``meta.json`` (its complete
key), all written atomically; any number of processes can read any rows of it later, and an entry
whose key differs in any field is never read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from mocobench import dist
from mocobench.atomic import atomic_write_text
from mocobench.augment import eval_transform
from mocobench.checkpoint import atomic_save
from mocobench.datasets import ImageDataset, ImageList, read_encoded
from mocobench.device_views import DeviceEval, FileImage, collate_images
from mocobench.evaluators.registry import TaskError
from mocobench.options import Rule, option

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16")
STORAGE = {"float32": torch.float32, "float16": torch.float16}


def resnet_features(net: nn.Module, x: torch.Tensor, pool: str = "global") -> torch.Tensor:
    """Pooled res5 features of a torchvision ResNet, bypassing its ``fc`` head: ``global`` average
    (Shape: (N, D)), or ``res5_k6s1``, average pooling with kernel 6 and stride 1 flattened (the VOC07 SVM
    features of Goyal et al. 2019: (N, D * 2 * 2) for a 7x7 res5 map)."""
    x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    x = net.layer4(net.layer3(net.layer2(net.layer1(x))))
    if pool == "res5_k6s1":
        if min(x.shape[-2:]) < 6:
            raise ValueError(f"res5 map {tuple(x.shape[-2:])} is smaller than the 6x6 pooling window: use images of "
                             "at least 161 px, or the global pool")
        return torch.flatten(F.avg_pool2d(x, 6, 1), 1)
    return torch.flatten(net.avgpool(x), 1)


def autocast(device: torch.device, precision: str):
    if precision not in PRECISIONS:
        raise ValueError(f"amp={precision}: expected one of {', '.join(PRECISIONS)}")
    return torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()


@torch.no_grad()
def extract_features(
    net: nn.Module, loader, device: torch.device, channels_last: bool = False, normalize: bool = True,
    head: nn.Module | None = None, precision: str = "fp32", pool: str = "global",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled features (L2-normalised unless ``normalize=False``) and labels of every sample of
    ``loader``, with ``net`` in eval mode, in this process; with ``head``, its output on the pooled
    features instead (the contrastive embedding, e.g. MoCo's 128-d projection). ``precision`` bf16 runs
    the network under autocast; features are returned in float32. Shape: (N, D), (N,)."""
    was_training = net.training
    net.eval()
    feats, labels = [], []
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    for images, y in loader:
        with autocast(device, precision):
            f = resnet_features(net, images.to(device, memory_format=fmt), pool)
            if head is not None:
                f = head(f)
        f = f.float()
        feats.append(F.normalize(f, dim=1) if normalize else f)
        labels.append(torch.as_tensor(y).to(device))
    net.train(was_training)
    if not feats:
        return torch.empty(0, 0, device=device), torch.empty(0, dtype=torch.long, device=device)
    return torch.cat(feats), torch.cat(labels)


def dataset_identity(dataset: Dataset) -> str:
    """What names a data set's samples in the cache key: the root, every path, label, size and mtime of an
    image list (``ImageDataset``/``SeededImageDataset``), else the class, its root and split, its length
    and its file list."""
    if isinstance(dataset, Subset):  # a held-out split of a torchvision set: the set and the indices
        return hashlib.sha256(f"{dataset_identity(dataset.dataset)}:{list(dataset.indices)}".encode()).hexdigest()[:16]
    images = getattr(dataset, "images", None)
    h = hashlib.sha256()
    if images is not None and hasattr(images, "paths"):
        h.update(str(Path(images.root).resolve()).encode())
        for p, y in zip(images.paths, images.labels, strict=True):
            st = Path(p).stat()  # a file rewritten in place is another sample
            h.update(f"\n{p}\t{y}\t{st.st_size}\t{st.st_mtime_ns}".encode())
    else:
        files = getattr(dataset, "_image_files", None) or getattr(dataset, "samples", None) or ()
        h.update(f"{type(dataset).__name__}:{getattr(dataset, 'root', '')}:{getattr(dataset, '_split', '')}:"
                 f"{len(dataset)}:{[str(f) for f in files]}".encode())
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class FeatureKey:
    """Everything a feature matrix depends on; the cache entry is named by its hash and holds it whole."""

    checkpoint: str  # the file's sha256, or random:<arch>:<seed>
    normalize: str  # the input normalisation the backbone is fed (mocobench.layouts.NORMALIZATIONS)
    features: str  # backbone (global pool), res5_k6s1 (VOC07 SVM pool) or head (projection output)
    transform: str  # repr of the evaluation transform
    images: str  # dataset_identity of the split
    precision: str  # fp32 or bf16 extraction

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:20]


class FeatureCache:
    """A folder of feature matrices: ``<root>/<key digest>/rows_<start>_<stop>.pt`` ({features, labels} of
    those rows) and ``meta.json`` (the key, the number of rows, the storage dtype and the row files), written
    by rank 0 once every block is on disk. ``dtype`` float16 halves the files; features are then rounded
    through float16 on a miss too, so a hit and a miss give the same numbers."""

    def __init__(self, root: str | Path, dtype: str = "float32") -> None:
        if dtype not in STORAGE:
            raise ValueError(f"feature cache dtype {dtype!r}: expected float32 or float16")
        self.root, self.dtype = Path(root), dtype

    def entry(self, key: FeatureKey) -> Path:
        return self.root / f"{key.digest()}_{self.dtype}"

    def meta(self, key: FeatureKey) -> dict | None:
        """The entry's metadata when it is complete and was written for exactly ``key`` and this dtype."""
        path = self.entry(key) / "meta.json"
        try:
            meta = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        return meta if meta.get("key") == asdict(key) and meta.get("dtype") == self.dtype else None

    def read(self, key: FeatureKey, rows: range) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Rows ``rows`` of a complete entry (float32 features, labels), or None on a miss."""
        meta = self.meta(key)
        if meta is None or rows.stop > meta["rows"]:
            return None
        feats, labels = [], []
        for start, stop, name in meta["files"]:
            lo, hi = max(start, rows.start), min(stop, rows.stop)
            if lo >= hi:
                continue
            try:
                part = torch.load(self.entry(key) / name, map_location="cpu", weights_only=True, mmap=True)
                feats.append(part["features"][lo - start : hi - start].float())
                labels.append(part["labels"][lo - start : hi - start].clone())
            except Exception as e:  # noqa: BLE001 - a damaged entry is a miss, never an error
                logger.warning("feature cache %s: %s cannot be read (%s); extracting again", self.entry(key), name, e)
                return None
        if not feats:
            return torch.empty(0, 0), torch.empty(0, dtype=torch.long)
        return torch.cat(feats), torch.cat(labels)

    def invalidate(self, key: FeatureKey) -> None:
        """Remove an entry's ``meta.json`` before its rows are written again (a crash then leaves a miss)."""
        (self.entry(key) / "meta.json").unlink(missing_ok=True)

    def write_rows(self, key: FeatureKey, rows: range, feats: torch.Tensor, labels: torch.Tensor) -> None:
        entry = self.entry(key)
        entry.mkdir(parents=True, exist_ok=True)
        atomic_save({"features": feats.to("cpu", STORAGE[self.dtype]).contiguous(), "labels": labels.cpu()},
                    entry / f"rows_{rows.start:010d}_{rows.stop:010d}.pt")

    def finish(self, key: FeatureKey, blocks: list[range]) -> None:
        """Write ``meta.json`` once every block's file is there (else the entry stays a miss)."""
        files = [[r.start, r.stop, f"rows_{r.start:010d}_{r.stop:010d}.pt"] for r in blocks if len(r)]
        missing = [f for _, _, f in files if not (self.entry(key) / f).is_file()]
        if missing:
            raise RuntimeError(f"feature cache {self.entry(key)}: row files {missing} were not written")
        meta = {"key": asdict(key), "rows": blocks[-1].stop if blocks else 0, "dtype": self.dtype, "files": files}
        atomic_write_text(self.entry(key) / "meta.json", json.dumps(meta, indent=1) + "\n")


def feature_key(ctx, features: str, transform, dataset: Dataset, precision: str) -> FeatureKey:
    """The cache key of ``dataset`` under ``transform`` (the transform, or a string that names it fully) for
    the backbone of task context ``ctx``: the file's sha256 and which network was read from it (layout,
    container, prefix, part, stem, architecture), or the seed of a random initialisation."""
    info = ctx.info
    if info.sha256:
        checkpoint = (f"{info.sha256}:{info.format}:{info.container}:{info.prefix}:{info.part}:{info.stem}:"
                      f"{info.arch}")
    else:
        checkpoint = f"random:{info.arch}:{info.stem}:seed{ctx.seed}"
    described = transform if isinstance(transform, str) else " ".join(repr(transform).split())
    return FeatureKey(checkpoint, info.normalize, features, described, dataset_identity(dataset), precision)


AugDevice = Literal["loader", "cpu", "cuda"]


def aug_device_option(what: str):
    """The ``aug_device`` field of the tasks whose images can be made on the device (issue 18)."""
    return option("loader", "Where the images are decoded and transformed: loader (the workers, PIL) or the task's "
                  "device (cpu, cuda): the workers read the bytes (and draw the crops), decode_jpeg and the transforms "
                  f"run batched there, within 1/255 of PIL. Applies to {what}.")


AUG_DEVICE_RULE = Rule(("aug_device", "device"), lambda c: not (c.aug_device == "cuda" and c.device == "cpu"),
                       "aug_device cuda only when the task runs on CUDA (the images are made on its device)")


def eval_set(images: ImageList, image_size: int, aug_device: str, device: torch.device
             ) -> tuple[Dataset, str, DeviceEval | None]:
    """The test transform's (:func:`~mocobench.augment.eval_transform`) data set of ``images``, its cache-key
    description and, for ``aug_device`` other than loader, its device half (:func:`frozen_features`'s
    ``on_device``). The device's pixels differ from PIL's by a rounding step: another cache entry."""
    transform = eval_transform(image_size)
    described = " ".join(repr(transform).split())
    if aug_device == "loader":
        return ImageDataset(images, transform), described, None
    if aug_device != device.type:
        raise TaskError(f"aug_device {aug_device} must be the task's device ({device.type}; --set device=...)")
    return (ImageDataset(images, FileImage(), read_encoded), f"{described} on the device",
            DeviceEval(transform.transforms, device))


def shard(n: int, rank: int, world: int) -> range:
    """Rank ``rank``'s contiguous block of ``n`` rows (the first ``n % world`` ranks get one more)."""
    return range(rank * n // world, (rank + 1) * n // world)


@torch.no_grad()
def frozen_features(
    net: nn.Module, dataset: Dataset, key: FeatureKey, device: torch.device, batch_size: int = 256,
    workers: int = 4, cache: FeatureCache | None = None, head: nn.Module | None = None, gather: bool = True,
    name: str = "features", on_device: DeviceEval | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Unnormalised features and labels of ``dataset`` through the one path: from the cache when ``key`` is
    there, else extracted (each torchrun rank its :func:`shard` of the rows) and cached. ``gather=True``
    returns every row on every rank; ``False`` only this rank's block (the kNN bank: bounded memory per
    process). ``on_device``: the dataset yields :class:`~mocobench.device_views.FileImage` items, decoded and
    transformed on the device (``--set aug_device=...``). Shape: (N or len(shard), D), (N or len(shard),), on
    ``device``."""
    n, rank, world = len(dataset), dist.get_rank(), dist.get_world_size()
    mine = shard(n, rank, world)
    wanted = range(n) if gather else mine
    if cache is not None:
        hit = cache.read(key, wanted)
        # every process takes the same branch: a hit only when all of them read their rows
        if dist.all_reduce_min(int(hit is not None), device):
            logger.info("%s: feature cache hit (%d rows, %s)", name, len(wanted), cache.entry(key))
            return hit[0].to(device), hit[1].to(device)
        logger.info("%s: feature cache miss, extracting %d rows on %d process(es) into %s", name, n, world,
                    cache.entry(key))
        if dist.is_main():
            cache.invalidate(key)
        dist.barrier()
    t0 = time.perf_counter()
    loader = DataLoader(Subset(dataset, list(mine)), batch_size=batch_size, num_workers=workers,
                        collate_fn=collate_images if on_device is not None else None)
    if on_device is not None:
        loader = map(on_device, loader)
    pool = "res5_k6s1" if key.features == "res5_k6s1" else "global"
    feats, labels = extract_features(net, loader, device, normalize=False, head=head, precision=key.precision,
                                     pool=pool)
    if cache is not None:
        feats = feats.to(STORAGE[cache.dtype]).float()  # what a hit will read back
        cache.write_rows(key, mine, feats, labels)
        dist.barrier()
        if dist.is_main():
            cache.finish(key, [shard(n, r, world) for r in range(world)])
        dist.barrier()
    seconds = time.perf_counter() - t0
    logger.info("%s: %d rows in %.1fs on this process (%.1f images/s)", name, len(mine), seconds,
                len(mine) / max(seconds, 1e-9))
    if gather and world > 1:
        feats, labels = dist.all_gather_rows(feats), dist.all_gather_rows(labels)
    return feats, labels
