"""The embedded detection data: synthetic shapes with boxes and polygon masks, in COCO format and as a
Pascal VOC copy (the same images and boxes), so that coco_det, coco_instseg and voc_det run with no
download.

Each image holds 1-3 non-overlapping textured shapes on a noisy background. Category ids are
deliberately not 1..K (``CATEGORY_IDS``) so that the id mapping of custom COCO files is exercised.
The VOC copy lists its class names in ``<voc>/labels.txt`` (a custom VOC-format set; see
``mocobench.transfer.detection.register_data``). The same spec always writes the same bytes.
"""

from __future__ import annotations

import colorsys
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
from PIL import Image, ImageDraw

from mocobench.atomic import atomic_write_text

logger = logging.getLogger(__name__)

CATEGORIES = ("circle", "square", "triangle", "cross")
CATEGORY_IDS = (3, 7, 11, 20)


@dataclass(frozen=True)
class SynthDetSpec:
    """Defaults: 120 train + 40 val images of 160 px, 1-3 objects each."""

    train: int = 120
    val: int = 40
    size: int = 160
    max_objects: int = 3
    seed: int = 0


def _polygon(shape: str, cx: float, cy: float, r: float, rot: float) -> list[tuple[float, float]]:
    """Outline of a shape as a polygon (circle: 32 points; cross: 12)."""
    def ring(n: int, radius: float, start: float = rot) -> list[tuple[float, float]]:
        return [(cx + radius * math.cos(start + 2 * math.pi * i / n), cy + radius * math.sin(start + 2 * math.pi * i / n))
                for i in range(n)]

    if shape == "circle":
        return ring(32, r)
    if shape == "square":
        return ring(4, r * 1.2)
    if shape == "triangle":
        return ring(3, r * 1.3)
    if shape == "cross":
        w = r / 2.6
        pts = [(r, w), (w, w), (w, r), (-w, r), (-w, w), (-r, w), (-r, -w), (-w, -w), (-w, -r), (w, -r), (w, -w), (r, -w)]
        c, s = math.cos(rot), math.sin(rot)
        return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in pts]
    raise ValueError(f"unknown shape {shape!r}")


def _area(poly: list[tuple[float, float]]) -> float:
    """Shoelace area of a simple polygon."""
    return 0.5 * abs(sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(poly, poly[1:] + poly[:1], strict=True)))


def render_scene(size: int, max_objects: int, rng: np.random.Generator) -> tuple[Image.Image, list[dict]]:
    """One image and its objects ``{"category": index, "polygon": [(x, y), ...], "bbox": [x0, y0, x1, y1]}``."""
    bg_rgb = np.array(colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0, 0.3), rng.uniform(0.2, 0.8)), np.float32)
    img = bg_rgb[None, None, :] * 255 + rng.normal(0, 12, size=(size, size, 3)).astype(np.float32)
    objects: list[dict] = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        for _attempt in range(20):  # place without overlapping the objects already drawn
            r = rng.uniform(0.09, 0.2) * size
            cx, cy = rng.uniform(r * 1.3, size - r * 1.3, size=2)
            if all(math.hypot(cx - o["c"][0], cy - o["c"][1]) > (r + o["r"]) * 1.35 for o in objects):
                break
        else:
            continue
        cat = int(rng.integers(len(CATEGORIES)))
        poly = _polygon(CATEGORIES[cat], cx, cy, r, rng.uniform(0, 2 * math.pi))
        poly = [(min(max(x, 0.0), size - 1.0), min(max(y, 0.0), size - 1.0)) for x, y in poly]
        mask = Image.new("L", (size, size), 0)
        ImageDraw.Draw(mask).polygon(poly, fill=255)
        alpha = np.asarray(mask, np.float32)[..., None] / 255.0
        rgb = np.array(colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0.6, 1.0), rng.uniform(0.7, 1.0)), np.float32)
        img = alpha * rgb[None, None, :] * 255 + (1 - alpha) * img
        xs, ys = [p[0] for p in poly], [p[1] for p in poly]
        objects.append({"category": cat, "polygon": poly, "bbox": [min(xs), min(ys), max(xs), max(ys)], "c": (cx, cy), "r": r})
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)), objects


def _voc_xml(name: str, size: int, objects: list[dict]) -> str:
    objs = "".join(
        f"<object><name>{escape(CATEGORIES[o['category']])}</name><pose>Unspecified</pose><truncated>0</truncated>"
        f"<difficult>0</difficult><bndbox>"
        f"<xmin>{round(o['bbox'][0]) + 1}</xmin><ymin>{round(o['bbox'][1]) + 1}</ymin>"
        f"<xmax>{round(o['bbox'][2]) + 1}</xmax><ymax>{round(o['bbox'][3]) + 1}</ymax></bndbox></object>"
        for o in objects
    )
    return (f"<annotation><folder>VOC2007</folder><filename>{name}.jpg</filename><size><width>{size}</width>"
            f"<height>{size}</height><depth>3</depth></size>{objs}</annotation>\n")


def write_synthetic_detection(out: str | Path, spec: SynthDetSpec = SynthDetSpec()) -> Path:
    """Write ``out/coco`` (``annotations/instances_{train,val}2017.json``, ``{train,val}2017/``) and
    ``out/voc`` (``labels.txt``, ``VOC2007/{JPEGImages,Annotations,ImageSets/Main/{trainval,test}.txt}``)."""
    out = Path(out)
    coco, voc = out / "coco", out / "voc" / "VOC2007"
    for d in (coco, out / "voc"):
        if d.exists() and any(d.iterdir()):
            raise ValueError(f"{d} exists and is not empty; choose an empty or new folder")
    for d in (coco / "annotations", voc / "JPEGImages", voc / "Annotations", voc / "ImageSets" / "Main"):
        d.mkdir(parents=True, exist_ok=True)
    categories = [{"id": i, "name": n, "supercategory": "shape"} for i, n in zip(CATEGORY_IDS, CATEGORIES, strict=True)]
    ann_id = 1
    for split, n, split_id, voc_split in (("train", spec.train, 0, "trainval"), ("val", spec.val, 1, "test")):
        (coco / f"{split}2017").mkdir(exist_ok=True)
        images, annotations, ids = [], [], []
        for i in range(n):
            rng = np.random.default_rng([spec.seed, 100 + split_id, i])
            img, objects = render_scene(spec.size, spec.max_objects, rng)
            name = f"{split_id}{i:05d}"
            img.save(coco / f"{split}2017" / f"{name}.jpg", quality=95)
            img.save(voc / "JPEGImages" / f"{name}.jpg", quality=95)
            image_id = split_id * 100000 + i + 1
            images.append({"id": image_id, "file_name": f"{name}.jpg", "width": spec.size, "height": spec.size})
            for o in objects:
                x0, y0, x1, y1 = o["bbox"]
                annotations.append({
                    "id": ann_id, "image_id": image_id, "category_id": CATEGORY_IDS[o["category"]],
                    "bbox": [round(v, 2) for v in (x0, y0, x1 - x0, y1 - y0)], "area": round(_area(o["polygon"]), 2),
                    "segmentation": [[round(v, 2) for p in o["polygon"] for v in p]], "iscrowd": 0,
                })
                ann_id += 1
            atomic_write_text(voc / "Annotations" / f"{name}.xml", _voc_xml(name, spec.size, objects))
            ids.append(name)
        atomic_write_text(coco / "annotations" / f"instances_{split}2017.json",
                          json.dumps({"images": images, "annotations": annotations, "categories": categories}))
        atomic_write_text(voc / "ImageSets" / "Main" / f"{voc_split}.txt", "\n".join(ids) + "\n")
    atomic_write_text(out / "voc" / "labels.txt", "\n".join(CATEGORIES) + "\n")
    logger.info("wrote %d train + %d val detection images of %d px to %s (COCO) and %s (VOC)",
                spec.train, spec.val, spec.size, coco, out / "voc")
    return out


def write_synthetic_segmentation(out: str | Path, spec: SynthDetSpec = SynthDetSpec()) -> Path:
    """Write the same kind of scenes as a semantic segmentation set in the plain-folder layout
    (:mod:`mocobench.segdata`): ``out/images/<id>.png``, ``out/labels/<id>.png`` (0 background, 1 + the shape's
    index; the label map is the polygon the image was painted with), ``classes.txt``, ``train.txt``, ``val.txt``.
    Seeds differ from the detection set's. Returns ``out``."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} exists and is not empty; choose an empty or new folder")
    for d in (out / "images", out / "labels"):
        d.mkdir(parents=True, exist_ok=True)
    for split, n, split_id in (("train", spec.train, 0), ("val", spec.val, 1)):
        ids = []
        for i in range(n):
            img, objects = render_scene(spec.size, spec.max_objects, np.random.default_rng([spec.seed, 200 + split_id, i]))
            label = Image.new("L", (spec.size, spec.size), 0)
            for o in objects:
                ImageDraw.Draw(label).polygon(o["polygon"], fill=1 + o["category"])
            name = f"{split}{i:05d}"
            img.save(out / "images" / f"{name}.png")  # lossless: the label's edges are the image's
            label.save(out / "labels" / f"{name}.png")
            ids.append(name)
        atomic_write_text(out / f"{split}.txt", "\n".join(ids) + "\n")
    atomic_write_text(out / "classes.txt", "\n".join(("background", *CATEGORIES)) + "\n")
    logger.info("wrote %d train + %d val segmentation images of %d px to %s", spec.train, spec.val, spec.size, out)
    return out
