"""The embedded default data: a deterministic synthetic ImageFolder set (no real images can ship).

Each class is a (shape, colour, texture) triple; within a class the position, size, rotation,
hue, texture phase and the noisy background vary. The same spec always writes the same bytes.
"""

from __future__ import annotations

import colorsys
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

logger = logging.getLogger(__name__)

#: (shape, hue in [0, 1), texture) per class; every pair of classes differs in at least two of the three.
CLASSES: tuple[tuple[str, float, str], ...] = (
    ("circle", 0.00, "plain"),
    ("square", 0.33, "stripes"),
    ("triangle", 0.66, "dots"),
    ("cross", 0.15, "checker"),
    ("ring", 0.50, "plain"),
    ("square", 0.83, "dots"),
    ("circle", 0.58, "checker"),
    ("triangle", 0.08, "stripes"),
    ("cross", 0.75, "plain"),
    ("ring", 0.25, "dots"),
)


@dataclass(frozen=True)
class SynthSpec:
    """Size of the synthetic set. Defaults: 10 classes x (60 train + 20 val) images of 64 px, and
    optionally a test split (for the fine-grained protocol, which selects on val and reports test)."""

    classes: int = 10
    train_per_class: int = 60
    val_per_class: int = 20
    size: int = 64
    seed: int = 0
    test_per_class: int = 0


def class_name(c: int) -> str:
    shape, hue, texture = CLASSES[c]
    return f"{c:02d}_{shape}_{texture}"


def _texture(kind: str, size: int, rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An (H, W, 3) float image of the class colour with its texture."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    period = size / rng.uniform(5.0, 8.0)
    phase = rng.uniform(0, period)
    if kind == "stripes":
        a = rng.uniform(0, math.pi)
        on = (np.sin(2 * np.pi * ((xx * math.cos(a) + yy * math.sin(a)) + phase) / period) > 0).astype(np.float32)
    elif kind == "dots":
        on = (((xx + phase) % period - period / 2) ** 2 + ((yy + phase) % period - period / 2) ** 2
              < (period / 3.2) ** 2).astype(np.float32)
    elif kind == "checker":
        on = ((((xx + phase) // period) + ((yy + phase) // period)) % 2).astype(np.float32)
    else:
        on = np.ones((size, size), np.float32)
    return rgb[None, None, :] * (0.45 + 0.55 * on[..., None])


def _mask(shape: str, size: int, rng: np.random.Generator) -> Image.Image:
    r = rng.uniform(0.22, 0.38) * size
    cx, cy = rng.uniform(r, size - r, size=2)
    rot = rng.uniform(0, 2 * math.pi)
    m = Image.new("L", (size, size), 0)
    d = ImageDraw.Draw(m)

    def poly(n: int, radius: float) -> list[tuple[float, float]]:
        return [(cx + radius * math.cos(rot + 2 * math.pi * i / n), cy + radius * math.sin(rot + 2 * math.pi * i / n))
                for i in range(n)]

    if shape == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    elif shape == "ring":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
        d.ellipse([cx - r / 2, cy - r / 2, cx + r / 2, cy + r / 2], fill=0)
    elif shape == "square":
        d.polygon(poly(4, r * 1.2), fill=255)
    elif shape == "triangle":
        d.polygon(poly(3, r * 1.3), fill=255)
    elif shape == "cross":
        w = r / 2.6
        for a in (rot, rot + math.pi / 2):
            dx, dy = math.cos(a), math.sin(a)
            px, py = -dy * w, dx * w
            d.polygon([(cx - dx * r + px, cy - dy * r + py), (cx + dx * r + px, cy + dy * r + py),
                       (cx + dx * r - px, cy + dy * r - py), (cx - dx * r - px, cy - dy * r - py)], fill=255)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return m


def render(c: int, size: int, rng: np.random.Generator) -> Image.Image:
    """One image of class ``c``."""
    shape, hue, texture = CLASSES[c]
    h = (hue + rng.uniform(-0.04, 0.04)) % 1.0
    rgb = np.array(colorsys.hsv_to_rgb(h, rng.uniform(0.65, 1.0), rng.uniform(0.7, 1.0)), np.float32) * 255
    bg_rgb = np.array(colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0, 0.25), rng.uniform(0.2, 0.8)), np.float32)
    bg = bg_rgb[None, None, :] * 255 + rng.normal(0, 12, size=(size, size, 3)).astype(np.float32)
    fg = _texture(texture, size, rgb, rng)
    alpha = np.asarray(_mask(shape, size, rng), np.float32)[..., None] / 255.0
    img = np.clip(alpha * fg + (1 - alpha) * bg, 0, 255).astype(np.uint8)
    return Image.fromarray(img)


def write_synthetic_classification(out: str | Path, spec: SynthSpec = SynthSpec()) -> Path:
    """Write ``out/{train,val[,test]}/<class>/<i>.png``; returns ``out``. Refuses a non-empty folder."""
    out = Path(out)
    if not 1 <= spec.classes <= len(CLASSES):
        raise ValueError(f"--classes must be between 1 and {len(CLASSES)}, got {spec.classes}")
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} exists and is not empty; choose an empty or new folder")
    splits = (("train", spec.train_per_class, 0), ("val", spec.val_per_class, 1), ("test", spec.test_per_class, 2))
    for split, n, split_id in (s for s in splits if s[1] > 0):
        for c in range(spec.classes):
            folder = out / split / class_name(c)
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                rng = np.random.default_rng([spec.seed, split_id, c, i])
                render(c, spec.size, rng).save(folder / f"{i:04d}.png", optimize=False)
    logger.info(
        "wrote %d classes x (%d train + %d val + %d test) images of %d px to %s",
        spec.classes, spec.train_per_class, spec.val_per_class, spec.test_per_class, spec.size, out,
    )
    return out
