"""Semantic segmentation data: four layouts read into one :class:`SegSplit`, one label check, and the
joint training view (random scale, pad with the ignore label, crop, flip).

Layouts (``dataset=`` of the ``voc_seg`` / ``cityscapes_seg`` tasks; ``auto`` recognises them):

- ``voc``: ``VOCdevkit/VOC2012`` with ``JPEGImages/``, ``SegmentationClass/`` (palette PNGs, 0-20 and 255
  on object borders) and ``ImageSets/Segmentation/{train,val}.txt``; ``train_aug`` (10,582 images) adds
  ``SegmentationClassAug/`` and ``train_aug.txt`` written by :func:`convert_sbd` from the SBD release
  (``mocobench data fetch sbd``). A listed image reads ``SegmentationClass`` when it has one there and
  ``SegmentationClassAug`` otherwise, as mmsegmentation's ``pascal_voc12_aug.py`` (VOC's own masks for VOC
  train, SBD's for the rest).
- ``cityscapes``: ``leftImg8bit/{split}/<city>/*_leftImg8bit.png`` and ``gtFine/{split}/<city>/
  *_gtFine_labelIds.png``; label ids mapped to the 19 train ids (:data:`CITYSCAPES_TRAIN_IDS`), the rest 255.
- ``coco``: ``annotations/instances_{split}2017.json`` and ``{split}2017/``: the polygons and RLEs drawn as
  VOC class maps (:data:`COCO_TO_VOC`; objects of the other 60 categories are background, crowd regions of a
  VOC class are 255), larger objects first so that smaller ones stay visible.
- ``folder``: ``images/``, single-channel PNG ``labels/`` (same stem), ``classes.txt`` (one name per line, the
  line number is the label value) and ``{split}.txt`` lists of stems; 255 is ignore.

A label value that is neither a class index nor 255 is an error naming the file and the value.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from mocobench.atomic import atomic_write, atomic_write_text
from mocobench.datasets import DataError, load_rgb

logger = logging.getLogger(__name__)

IGNORE = 255
VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
               "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")
#: VOC's 21 segmentation classes: background, then the 20 detection classes (label values 0..20).
VOC_SEG_CLASSES = ("background", *VOC_CLASSES)
#: COCO category names that differ from their VOC class name; the other 14 VOC classes keep their name
#: (the mapping that built ``../shared/data/voc-from-coco``, see its SOURCE.txt).
COCO_TO_VOC = {"airplane": "aeroplane", "motorcycle": "motorbike", "couch": "sofa", "potted plant": "pottedplant",
               "dining table": "diningtable", "tv": "tvmonitor"}
#: Cityscapes ``labelIds`` -> train ids 0..18 (cityscapesscripts ``helpers/labels.py``: the labels whose
#: ``trainId`` is not 255); every other id is 255.
CITYSCAPES_TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
                        26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
CITYSCAPES_CLASSES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
                      "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle",
                      "bicycle")
LAYOUTS = ("voc", "cityscapes", "coco", "folder")
#: Size of VOC 2012 train_aug: VOC train (1,464) plus the SBD images outside VOC train and val (9,118).
TRAIN_AUG_SIZE = 10582


@dataclass(frozen=True)
class SegSplit:
    """One split: image paths, per-image label sources, the class names, and how a label source is read
    (``read(source) -> (H, W) uint8`` class indices, 255 ignore, before the check)."""

    root: Path
    name: str
    classes: tuple[str, ...]
    images: tuple[Path, ...]
    labels: tuple[object, ...]
    read: Callable[[object], np.ndarray]

    def __len__(self) -> int:
        return len(self.images)

    def image(self, i: int) -> Image.Image:
        return load_rgb(self.images[i])

    def label(self, i: int, size: tuple[int, int] | None = None) -> np.ndarray:
        """The checked label map of image ``i``: (H, W) uint8; ``size`` (W, H) is the image's, checked too."""
        lab = self.read(self.labels[i])
        where = self.labels[i] if isinstance(self.labels[i], Path) else self.images[i]
        if lab.ndim != 2:
            raise DataError(f"label map {where} has shape {lab.shape}; expected one channel of class indices "
                            "(a palette or grayscale PNG, not RGB colours)")
        if size is not None and (lab.shape[1], lab.shape[0]) != tuple(size):
            raise DataError(f"label map {where} is {lab.shape[1]}x{lab.shape[0]} but its image {self.images[i]} is "
                            f"{size[0]}x{size[1]}")
        bad = np.unique(lab[(lab >= len(self.classes)) & (lab != IGNORE)])
        if bad.size:
            raise DataError(f"label map {where} holds value {int(bad[0])}{' and others' if bad.size > 1 else ''}; "
                            f"expected class indices 0..{len(self.classes) - 1} ({len(self.classes)} classes) or "
                            f"{IGNORE} (ignore)")
        return lab


class _Remapped:
    """A label reader followed by a lookup table (picklable, for loader workers)."""

    def __init__(self, read: Callable[[object], np.ndarray], lut: np.ndarray) -> None:
        self.read, self.lut = read, lut

    def __call__(self, source: object) -> np.ndarray:
        return self.lut[self.read(source)]


def keep_classes(split: SegSplit, names: tuple[str, ...]) -> SegSplit:
    """``split`` scored on the first class (the background) and ``names`` only: the other classes become the
    background, in that order the kept ones are renumbered 1..len(names); 255 stays 255."""
    unknown = [n for n in names if n not in split.classes[1:]]
    if unknown:
        raise DataError(f"keep_classes: {unknown} are not classes of {split.root} (its classes after the background "
                        f"{split.classes[0]!r}: {', '.join(split.classes[1:])})")
    lut = np.zeros(256, np.uint8)
    lut[IGNORE] = IGNORE
    lut[len(split.classes):IGNORE] = np.arange(len(split.classes), IGNORE)  # out-of-range values stay out of range
    for new, name in enumerate(names, start=1):
        lut[split.classes.index(name)] = new
    return SegSplit(split.root, split.name, (split.classes[0], *names), split.images, split.labels,
                    _Remapped(split.read, lut))


def read_png_label(path: Path) -> np.ndarray:
    """A class-index PNG (palette or grayscale) as (H, W) uint8; the palette's colours are not used."""
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L", "I", "I;16"):
                raise DataError(f"label map {path} is a {im.mode} image; expected one channel of class indices "
                                "(a palette or grayscale PNG, not RGB colours)")
            lab = np.asarray(im)
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - PIL raises several types for bad files
        raise DataError(f"cannot read label map {path}: {type(e).__name__}: {e}") from e
    if lab.max(initial=0) > 255:
        raise DataError(f"label map {path} holds value {int(lab.max())}; expected class indices below 256")
    return lab.astype(np.uint8)


def _read_list(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"split list {path} does not exist")
    ids = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise DataError(f"split list {path} is empty")
    return ids


def _existing(paths: list[Path], what: str) -> None:
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise DataError(f"{len(missing)} {what} listed but missing, e.g. {missing[0]}")


def detect_layout(root: Path) -> str:
    """The layout of ``root`` (see the module docstring)."""
    if (root / "classes.txt").is_file():
        return "folder"
    if (root / "leftImg8bit").is_dir():
        return "cityscapes"
    if voc_root(root, must=False) is not None:  # before COCO: VOC's Annotations/ is annotations/ on some file systems
        return "voc"
    if any((root / "annotations").glob("instances_*.json")):
        return "coco"
    raise DataError(f"{root}: not a segmentation data folder (expected classes.txt + images/ + labels/, a "
                    "Cityscapes leftImg8bit/ + gtFine/, a COCO annotations/ folder, or VOCdevkit/VOC2012)")


def voc_root(root: Path, must: bool = True) -> Path | None:
    for cand in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (cand / "JPEGImages").is_dir() and (cand / "ImageSets").is_dir():
            return cand
    if must:
        raise DataError(f"{root}: no VOC2012 folder (looked for JPEGImages/ and ImageSets/ in {root}, {root}/VOC2012 "
                        f"and {root}/VOCdevkit/VOC2012; `mocobench data fetch voc2012 --root ROOT` leaves "
                        "ROOT/VOCdevkit/VOC2012)")
    return None


def _voc(root: Path, split: str) -> SegSplit:
    voc = voc_root(root)
    lists = voc / "ImageSets" / "Segmentation"
    if split == "train_aug" and not (lists / "train_aug.txt").is_file():
        fetch_root = voc.parent.parent if voc.parent.name == "VOCdevkit" else voc.parent
        raise DataError(f"{lists / 'train_aug.txt'} does not exist: the paper trains on VOC train_aug (10,582 images "
                        f"with SBD's masks). Run `mocobench data fetch sbd --root {fetch_root}` to build it, "
                        "or pass --set train_split=train for VOC's 1,464 training images")
    ids = _read_list(lists / f"{split}.txt")
    labels = [voc / "SegmentationClass" / f"{i}.png" for i in ids]
    labels = [p if p.is_file() else voc / "SegmentationClassAug" / p.name for p in labels]
    images = [voc / "JPEGImages" / f"{i}.jpg" for i in ids]
    _existing(images, f"images of {split}.txt")
    _existing(labels, f"label maps of {split}.txt (SegmentationClass/ or SegmentationClassAug/)")
    return SegSplit(voc, split, VOC_SEG_CLASSES, tuple(images), tuple(labels), read_png_label)


def _cityscapes(root: Path, split: str) -> SegSplit:
    images = sorted((root / "leftImg8bit" / split).glob("*/*_leftImg8bit.png"))
    if not images:
        raise DataError(f"no images under {root / 'leftImg8bit' / split}/<city>/*_leftImg8bit.png (Cityscapes needs "
                        "a login: download leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip from "
                        "https://www.cityscapes-dataset.com and extract both into the same folder)")
    labels = [root / "gtFine" / split / p.parent.name / p.name.replace("_leftImg8bit.png", "_gtFine_labelIds.png")
              for p in images]
    _existing(labels, f"gtFine *_gtFine_labelIds.png files of {split}")
    lut = np.full(256, IGNORE, np.uint8)
    lut[list(CITYSCAPES_TRAIN_IDS)] = list(CITYSCAPES_TRAIN_IDS.values())
    return SegSplit(root, split, CITYSCAPES_CLASSES, tuple(images), tuple(labels), _Remapped(read_png_label, lut))


class CocoAsVoc:
    """Rasterises one COCO image's annotations to a VOC class map (:data:`COCO_TO_VOC`); picklable."""

    def __init__(self, annotation_file: Path) -> None:
        import json

        try:
            data = json.loads(annotation_file.read_text())
            names = {c["id"]: COCO_TO_VOC.get(c["name"], c["name"]) for c in data["categories"]}
            images, annotations = data["images"], data["annotations"]
        except (ValueError, KeyError, TypeError) as e:
            raise DataError(f"{annotation_file} is not a COCO instances file ({type(e).__name__}: {e}; expected "
                            "'images', 'annotations' and 'categories' with ids and names)") from e
        self.voc_id = {cid: VOC_SEG_CLASSES.index(n) for cid, n in names.items() if n in VOC_SEG_CLASSES}
        self.images = {im["id"]: im for im in images}
        self.anns: dict[int, list[dict]] = {i: [] for i in self.images}
        for a in annotations:
            if a["category_id"] in self.voc_id and a["image_id"] in self.anns:
                self.anns[a["image_id"]].append(a)

    def __call__(self, image_id: object) -> np.ndarray:
        from pycocotools import mask as mask_utils

        im = self.images[image_id]
        h, w = im["height"], im["width"]
        lab = np.zeros((h, w), np.uint8)
        for a in sorted(self.anns[image_id], key=lambda a: -a.get("area", 0.0)):
            seg = a["segmentation"]
            if isinstance(seg, list):
                rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w)) if seg else None
            elif isinstance(seg.get("counts"), list):
                rle = mask_utils.frPyObjects(seg, h, w)
            else:
                rle = seg
            if rle is None:
                continue
            m = mask_utils.decode(rle).astype(bool)
            lab[m] = IGNORE if a.get("iscrowd", 0) else self.voc_id[a["category_id"]]
        return lab


def _coco(root: Path, split: str) -> SegSplit:
    ann = root / "annotations" / f"instances_{split}2017.json"
    if not ann.is_file():
        raise DataError(f"{ann} does not exist (COCO layout: annotations/instances_{{train,val}}2017.json)")
    reader = CocoAsVoc(ann)
    ids = sorted(reader.images)
    images = [root / f"{split}2017" / reader.images[i]["file_name"] for i in ids]
    _existing(images, f"images of {ann.name}")
    return SegSplit(root, split, VOC_SEG_CLASSES, tuple(images), tuple(ids), reader)


def _folder(root: Path, split: str) -> SegSplit:
    if not (root / "classes.txt").is_file():
        raise DataError(f"{root / 'classes.txt'} does not exist (the folder layout: images/, labels/, classes.txt with "
                        "one class name per line, {split}.txt)")
    classes = tuple(line.strip() for line in (root / "classes.txt").read_text().splitlines() if line.strip())
    if not 1 <= len(classes) <= IGNORE:
        raise DataError(f"{root / 'classes.txt'} names {len(classes)} classes; expected 1 to {IGNORE}")
    stems = _read_list(root / f"{split}.txt")
    images = []
    for s in stems:
        found = [p for p in (root / "images" / f"{s}{e}" for e in (".jpg", ".jpeg", ".png", ".JPEG")) if p.is_file()]
        if not found:
            raise DataError(f"{root / f'{split}.txt'} lists {s!r} but images/{s}.jpg (or .png) does not exist")
        images.append(found[0])
    labels = [root / "labels" / f"{s}.png" for s in stems]
    _existing(labels, f"label maps (labels/<stem>.png) of {split}.txt")
    return SegSplit(root, split, classes, tuple(images), tuple(labels), read_png_label)


#: The standard training split of each layout (the paper's: VOC train_aug, Cityscapes train fine).
TRAIN_SPLITS = {"voc": "train_aug", "cityscapes": "train", "coco": "train", "folder": "train"}
_READERS = {"voc": _voc, "cityscapes": _cityscapes, "coco": _coco, "folder": _folder}


def resolve_layout(root: str | Path, layout: str) -> str:
    """``layout``, or for ``auto`` the one :func:`detect_layout` recognises; a missing folder or an unknown name is
    an error."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"segmentation data folder {root} does not exist")
    layout = detect_layout(root) if layout == "auto" else layout
    if layout not in _READERS:
        raise DataError(f"unknown segmentation layout {layout!r}; expected auto or one of {', '.join(LAYOUTS)}")
    return layout


def load_split(root: str | Path, layout: str, split: str) -> SegSplit:
    """Split ``split`` of the data under ``root`` in ``layout`` (``auto``: :func:`detect_layout`)."""
    return _READERS[resolve_layout(root, layout)](Path(root), split)


# ---------------------------------------------------------------------------------------------- transforms

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


def to_tensor(img: Image.Image, scale: float = 1.0) -> torch.Tensor:
    """ImageNet-normalised (3, H', W') float tensor of an RGB image, resized by ``scale`` (bilinear) first."""
    if scale != 1.0:
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.BILINEAR)
    x = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).float().div_(255)
    return (x - IMAGENET_MEAN) / IMAGENET_STD


@dataclass(frozen=True)
class ViewParams:
    """The random draws of one training view: scale, crop offsets (in the padded scaled image), flip."""

    scale: float
    top: int
    left: int
    flip: bool


def draw_view(rng: np.random.Generator, size: tuple[int, int], crop: int,
              scale_range: tuple[float, float]) -> ViewParams:
    """Draw a view of an image of ``size`` (W, H): scale uniform in ``scale_range`` (the paper's 0.5-2.0), a
    uniform ``crop`` x ``crop`` window of the scaled image padded to at least the crop, flip with p 0.5."""
    s = float(rng.uniform(*scale_range))
    w, h = max(1, round(size[0] * s)), max(1, round(size[1] * s))
    top = int(rng.integers(0, max(h, crop) - crop + 1))
    left = int(rng.integers(0, max(w, crop) - crop + 1))
    return ViewParams(s, top, left, bool(rng.random() < 0.5))


def make_view(img: Image.Image, label: np.ndarray, p: ViewParams, crop: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The view ``p`` of (image, label): scale (image bilinear, label nearest), pad bottom and right to the crop
    (image with 0 = the mean colour after normalisation, label with 255), crop, flip.
    Returns (3, crop, crop) float and (crop, crop) int64."""
    w, h = max(1, round(img.width * p.scale)), max(1, round(img.height * p.scale))
    x = to_tensor(img.resize((w, h), Image.BILINEAR))
    y = torch.from_numpy(np.asarray(Image.fromarray(label).resize((w, h), Image.NEAREST), dtype=np.int64).copy())
    ph, pw = max(0, crop - h), max(0, crop - w)
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), value=0.0)
        y = F.pad(y, (0, pw, 0, ph), value=IGNORE)
    x = x[:, p.top : p.top + crop, p.left : p.left + crop]
    y = y[p.top : p.top + crop, p.left : p.left + crop]
    if p.flip:
        x, y = x.flip(-1), y.flip(-1)
    return x.contiguous(), y.contiguous()


class SegTrainDataset(torch.utils.data.Dataset):
    """Items are ``(index, seed)`` (:class:`mocobench.datasets.EpochBatchSampler`); the view's draws come from
    a NumPy generator seeded with ``seed`` alone, so a resumed run and any number of processes draw the same."""

    def __init__(self, split: SegSplit, crop: int, scale_range: tuple[float, float]) -> None:
        self.split, self.crop, self.scale_range = split, crop, scale_range

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        index, seed = item
        img = self.split.image(index)
        label = self.split.label(index, img.size)
        p = draw_view(np.random.default_rng(seed), img.size, self.crop, self.scale_range)
        return make_view(img, label, p, self.crop)


class SegEvalDataset(torch.utils.data.Dataset):
    """``(image resized by test_scale, label at the original size)``: (3, h, w) float, (H, W) int64."""

    def __init__(self, split: SegSplit, indices: list[int], test_scale: float = 1.0) -> None:
        self.split, self.indices, self.test_scale = split, indices, test_scale

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        img = self.split.image(self.indices[i])
        label = self.split.label(self.indices[i], img.size)
        return to_tensor(img, self.test_scale), torch.from_numpy(label.astype(np.int64))


# ---------------------------------------------------------------------------------------------- SBD

def convert_sbd(root: str | Path) -> Path:
    """Build VOC 2012 ``train_aug`` from the SBD release under ``root/sbd/benchmark_RELEASE`` and VOC 2012
    under ``root/VOCdevkit/VOC2012`` (both as ``mocobench data fetch`` leaves them).

    As mmsegmentation's ``tools/convert_datasets/voc_aug.py``: each SBD ``dataset/cls/*.mat`` (``GTcls``'s
    ``Segmentation``, class indices 0-20) becomes ``SegmentationClassAug/<id>.png``; ``aug.txt`` lists the SBD
    train + val ids outside VOC train and val; ``train_aug.txt`` is VOC train plus ``aug.txt`` (sorted).
    A finished conversion leaves ``.sbd_converted`` and is not repeated. Returns the VOC2012 folder."""
    from scipy.io import loadmat

    root = Path(root)
    voc = voc_root(root)
    marker = voc / ".sbd_converted"
    if marker.exists():
        logger.info("SBD was converted already (%s)", marker)
        return voc
    sbd = root / "sbd" / "benchmark_RELEASE" / "dataset"
    if not (sbd / "cls").is_dir():
        raise DataError(f"{sbd / 'cls'} does not exist; `mocobench data fetch sbd --root {root}` downloads it")
    lists = voc / "ImageSets" / "Segmentation"
    voc_train, voc_val = _read_list(lists / "train.txt"), _read_list(lists / "val.txt")
    sbd_ids = _read_list(sbd / "train.txt") + _read_list(sbd / "val.txt")
    aug = sorted(set(sbd_ids) - set(voc_train) - set(voc_val))
    out = voc / "SegmentationClassAug"
    out.mkdir(exist_ok=True)
    for n, i in enumerate(aug):
        mat = sbd / "cls" / f"{i}.mat"
        try:
            seg = np.asarray(loadmat(str(mat))["GTcls"][0]["Segmentation"][0], dtype=np.uint8)
        except Exception as e:  # noqa: BLE001 - scipy raises several types for bad files
            raise DataError(f"cannot read SBD label {mat}: {type(e).__name__}: {e}") from e
        atomic_write(out / f"{i}.png", lambda f, seg=seg: Image.fromarray(seg).save(f, format="PNG"))
        if (n + 1) % 1000 == 0:
            logger.info("SBD: %d / %d label maps converted", n + 1, len(aug))
    train_aug = sorted(set(voc_train) | set(aug))
    atomic_write_text(lists / "aug.txt", "".join(f"{i}\n" for i in aug))
    atomic_write_text(lists / "train_aug.txt", "".join(f"{i}\n" for i in train_aug))
    if len(train_aug) != TRAIN_AUG_SIZE:
        logger.warning("train_aug has %d images, not the standard %d (a partial VOC or SBD copy?)", len(train_aug),
                       TRAIN_AUG_SIZE)
    marker.touch()
    logger.info("SBD: %d label maps in %s; train_aug.txt lists %d images", len(aug), out, len(train_aug))
    return voc
