"""Image folders, reproducible per-sample augmentation, and the epoch sampler.

Reproducibility design: every sample's random views are drawn from a torch RNG seeded by
``(seed, epoch, image index)``, and each epoch's order is a permutation seeded by ``(seed, epoch)``.
The data stream is therefore independent of the number of workers and of where a run was
interrupted, which makes ``--resume`` exact even in the middle of an epoch.
"""

from __future__ import annotations

import io
import logging
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler
from tqdm import tqdm

from mocobench.options import option

logger = logging.getLogger(__name__)

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


class DataError(ValueError):
    """A dataset path or file that cannot be used; the message names it."""


OnBadImage = Literal["error", "skip"]


def on_bad_image_option():
    """The ``on_bad_image`` field shared by every config that reads image folders."""
    return option("error", "Images that cannot be decoded: error (stop, naming the file) or skip (decode all "
                  "once at the start, leave them out, log the count).")


@dataclass(frozen=True)
class ImageList:
    """Image paths with labels; ``classes`` is empty for a plain folder (labels all -1)."""

    root: Path
    paths: tuple[Path, ...]
    labels: tuple[int, ...]
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.paths)


def _images_below(folder: Path, ignored: list[Path]) -> list[Path]:
    """Image files under ``folder``, following symbolic links (a data set linked from elsewhere), but a folder
    reached twice (a link loop, or two links to one folder) and a folder that cannot be read are errors."""

    def unreadable(e: OSError) -> None:
        raise DataError(f"cannot read the folder {e.filename} inside {folder}: {e.strerror}")

    found, seen = [], {}
    for dirpath, _, files in os.walk(folder, followlinks=True, onerror=unreadable):
        real = os.path.realpath(dirpath)
        if real in seen:
            raise DataError(f"{dirpath} is {seen[real]} again (a symbolic link loop, or two links to one folder) "
                            f"inside {folder}: remove the link, or the images would be listed twice")
        seen[real] = dirpath
        for f in files:
            (found if f.lower().endswith(IMG_EXTENSIONS) else ignored).append(Path(dirpath) / f)
    return sorted(found)


def list_images(root: str | Path, labelled: bool | None = None, on_bad_image: str = "error") -> ImageList:
    """List an ImageFolder tree (``root/<class>/*.jpg``) or a plain folder of images.

    ``labelled=True`` requires the class layout; ``None`` accepts either (labels are then -1 for a
    plain folder). Raises :class:`DataError` naming the folder for a missing root, an empty class
    folder or a folder without images. Files without an image extension are left out (count logged).
    ``on_bad_image="skip"`` decodes every image once and leaves out those that fail (count logged);
    ``"error"`` (default) checks nothing up front, and a bad file stops the run when it is read.
    """
    if on_bad_image not in ("error", "skip"):
        raise DataError(f"--on-bad-image must be error or skip, got {on_bad_image!r}")
    images = _list_images(Path(root), labelled)
    return drop_bad_images(images) if on_bad_image == "skip" else images


def _list_images(root: Path, labelled: bool | None) -> ImageList:
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist or is not a folder")
    subdirs = sorted(d for d in root.iterdir() if d.is_dir())
    top_images = sorted(p for p in root.iterdir() if p.is_file() and p.name.lower().endswith(IMG_EXTENSIONS))
    if subdirs and not top_images:
        paths: list[Path] = []
        labels: list[int] = []
        ignored: list[Path] = []
        for c, d in enumerate(subdirs):
            imgs = _images_below(d, ignored)
            if not imgs:
                raise DataError(
                    f"class folder {d} holds no images (expected files ending in {', '.join(IMG_EXTENSIONS)})"
                )
            paths += imgs
            labels += [c] * len(imgs)
        if ignored:
            logger.info("%s: left out %d files without an image extension (e.g. %s)", root, len(ignored), ignored[0])
        return ImageList(root, tuple(paths), tuple(labels), tuple(d.name for d in subdirs))
    if labelled:
        raise DataError(f"{root} is not an ImageFolder tree: expected one sub-folder of images per class")
    if not top_images:
        raise DataError(f"{root} holds no images (expected files ending in {', '.join(IMG_EXTENSIONS)})")
    return ImageList(root, tuple(top_images), tuple([-1] * len(top_images)), ())


def resolve_split(root: Path, names: tuple[str, ...]) -> Path:
    """The first of ``names`` that exists under ``root`` (e.g. ``val`` or ``test``)."""
    for name in names:
        if (root / name).is_dir():
            return root / name
    raise DataError(f"{root} has none of the splits {', '.join(names)}")



def eval_split(root: Path, name: str = "") -> Path:
    """The scored split: ``root/name`` when given, else ``root/val`` or ``root/test``."""
    return resolve_split(root, (name,) if name else ("val", "test"))


def bad_image(path: Path | str, e: Exception) -> DataError:
    """The error for a file that cannot be decoded, naming it and the way out."""
    return DataError(f"cannot decode image {path}: {type(e).__name__}: {e} (remove or replace the file, "
                     "or pass --on-bad-image skip to leave such files out)")


def _open(fp) -> Image.Image:
    """PIL's lazy open (the header only), refusing a decompression bomb: PIL only warns between 1x and 2x its
    pixel limit, then decodes."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        return Image.open(fp)


def _rgb(im: Image.Image) -> Image.Image:
    with im:
        if im.mode.startswith("I;16"):
            im = Image.fromarray((np.asarray(im, dtype=np.float64) * (255.0 / 65535.0) + 0.5).astype(np.uint8))
        return im.convert("RGB")


def load_rgb(path: Path) -> Image.Image:
    """Decode an image as 8-bit RGB (grayscale, palette, CMYK and 16-bit files included: 16-bit values
    are scaled by 255/65535, not clipped); a file that cannot be decoded raises :class:`DataError`."""
    try:
        return _rgb(_open(path))
    except Exception as e:  # PIL raises several unrelated types for bad files
        raise bad_image(path, e) from e


@dataclass(frozen=True)
class EncodedImage:
    """A file's bytes, undecoded, with its header opened by PIL (``size``, ``mode``, ``format``; no pixel
    decoded): what a loader worker reads for ``--aug-device`` (:mod:`mocobench.device_views`)."""

    path: Path
    data: bytes
    header: Image.Image

    def decode(self) -> Image.Image:
        """The pixels as :func:`load_rgb` would decode them."""
        try:
            return _rgb(self.header)
        except Exception as e:
            raise bad_image(self.path, e) from e


def read_encoded(path: Path) -> EncodedImage:
    """Read a file's bytes and parse its header; a file whose header cannot be read raises :class:`DataError`
    (a file truncated after its header fails when decoded, also naming it)."""
    try:
        data = Path(path).read_bytes()
        return EncodedImage(Path(path), data, _open(io.BytesIO(data)))
    except Exception as e:
        raise bad_image(path, e) from e


def find_bad_images(paths: tuple[Path, ...]) -> list[tuple[Path, str]]:
    """Decode every image once (a full decode: truncated files fail too); returns (path, reason) pairs."""
    bad = []
    for p in tqdm(paths, desc="checking images", unit="img", mininterval=2.0, disable=len(paths) < 5000):
        try:
            if p.stat().st_size == 0:
                raise DataError("empty file")
            load_rgb(p)
        except (DataError, OSError) as e:
            bad.append((p, str(e).split(" (remove")[0]))
    return bad


def drop_bad_images(images: ImageList) -> ImageList:
    """``--on-bad-image skip``: the list without the files that cannot be decoded (count and examples logged)."""
    bad = find_bad_images(images.paths)
    if not bad:
        return images
    bad_set = {p for p, _ in bad}
    keep = [i for i, p in enumerate(images.paths) if p not in bad_set]
    logger.warning("--on-bad-image skip: left out %d of %d images under %s that cannot be decoded; first: %s",
                   len(bad), len(images), images.root, "; ".join(f"{p} ({why})" for p, why in bad[:3]))
    if images.classes:
        empty = sorted(set(range(len(images.classes))) - {images.labels[i] for i in keep})
        if empty:
            raise DataError(f"no decodable image left in class folders {[images.classes[c] for c in empty]} of {images.root}")
    if not keep:
        raise DataError(f"no decodable image left under {images.root}")
    return ImageList(images.root, tuple(images.paths[i] for i in keep), tuple(images.labels[i] for i in keep),
                     images.classes)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """Seed of one sample's augmentation in one epoch (distinct for every triple)."""
    return ((seed * 1_000_003 + epoch) * 10_000_019 + index) % (2**63 - 1)


class SeededImageDataset(Dataset):
    """Items are ``(index, seed)`` pairs: the image is decoded and ``transform`` runs under that seed.

    Returns ``(transform(read(path)), label)``; ``read`` decodes (:func:`load_rgb`) unless the transform takes
    the file undecoded (:func:`read_encoded`, ``--aug-device``). The global torch RNG of the calling process is restored
    afterwards, so ``num_workers=0`` does not disturb the training process's RNG.
    :meth:`cache_decoded` keeps every decoded image in memory (a small data set is then decoded once,
    not once per epoch); the transform sees the same pixels either way.
    """

    def __init__(self, images: ImageList, transform: Callable[[Image.Image], object],
                 read: Callable[[Path], object] = load_rgb) -> None:
        self.images = images
        self.transform = transform
        self.read = read
        self.decoded: list[Image.Image] | None = None

    def cache_decoded(self, max_mib: int) -> bool:
        """Decode every image once into memory if the RGB pixels (estimated from the first image)
        fit in ``max_mib`` MiB; returns whether it did. Loader workers forked afterwards share the
        pixels copy-on-write."""
        if max_mib <= 0 or not len(self):
            return False
        if self.read is not load_rgb:
            logger.info("decode cache: off (the views are decoded on the training device, --aug-device)")
            return False
        first = load_rgb(self.images.paths[0])
        need = first.width * first.height * 3 * len(self) / 2**20
        if need > max_mib:
            logger.info("decode cache: ~%.0f MiB needed > --decode-cache-mib %d; decoding every epoch", need, max_mib)
            return False
        paths = self.images.paths
        self.decoded = [first, *(load_rgb(p) for p in tqdm(paths[1:], desc="decoding", unit="img", mininterval=2.0,
                                                           disable=len(paths) < 5000))]
        got = sum(im.width * im.height * 3 for im in self.decoded) / 2**20
        logger.info("decode cache: %d images decoded once (%.0f MiB)", len(paths), got)
        return True

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, item: tuple[int, int]):
        index, seed = item
        img = self.decoded[index] if self.decoded is not None else self.read(self.images.paths[index])
        with torch.random.fork_rng(devices=[]):
            # only the CPU generator: torch.manual_seed also queues a CUDA seeding with a formatted stack
            # trace when CUDA is not initialised (~70 us, as much as this sample's colour jitter)
            torch.default_generator.manual_seed(seed)
            out = self.transform(img)
        return out, self.images.labels[index]


class ImageDataset(Dataset):
    """Deterministic (evaluation) dataset: ``dataset[i] = (transform(image_i), label_i)``."""

    def __init__(self, images: ImageList, transform: Callable[[Image.Image], object],
                 read: Callable[[Path], object] = load_rgb) -> None:
        self.images = images
        self.transform = transform
        self.read = read

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return self.transform(self.read(self.images.paths[index])), self.images.labels[index]


class EpochBatchSampler(Sampler[list[tuple[int, int]]]):
    """Per-rank batches of ``(index, seed)``; the same global order on every rank (drop-last by default).

    Global batch ``s`` of an epoch is ``perm[s*G:(s+1)*G]`` with ``G = batch * world``; rank ``r``
    takes its contiguous ``batch``-sized piece, so W processes see exactly the global batches that
    one process with batch ``W * batch`` would. Call :meth:`set_epoch` before iterating;
    ``start_step`` skips batches already done (resume). With ``drop_last=False`` the last, partial global
    batch is split into ``world`` contiguous pieces as even as possible (some may be empty when it holds
    fewer than ``world`` images), so the union is still exactly one process's last batch.
    """

    def __init__(
        self, num_samples: int, batch_size: int, seed: int, rank: int = 0, world: int = 1, drop_last: bool = True
    ) -> None:
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world = world
        self.drop_last = drop_last
        self.epoch = 0
        self.start_step = 0
        if self.steps_per_epoch == 0:
            raise DataError(
                f"the dataset has {num_samples} images, fewer than one global batch of {batch_size * world}"
            )

    @property
    def steps_per_epoch(self) -> int:
        gb = self.batch_size * self.world
        return self.num_samples // gb if self.drop_last else -(-self.num_samples // gb)

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self.epoch = epoch
        self.start_step = start_step

    def __len__(self) -> int:
        return self.steps_per_epoch - self.start_step

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        perm = torch.randperm(self.num_samples, generator=g).tolist()
        gb = self.batch_size * self.world
        for s in range(self.start_step, self.steps_per_epoch):
            lo, size = s * gb + self.rank * self.batch_size, self.batch_size
            left = self.num_samples - s * gb
            if left < gb:  # the partial last global batch (drop_last=False): even contiguous pieces
                lo, size = s * gb + self.rank * left // self.world, (self.rank + 1) * left // self.world - self.rank * left // self.world
            yield [(i, sample_seed(self.seed, self.epoch, i)) for i in perm[lo : lo + size]]
