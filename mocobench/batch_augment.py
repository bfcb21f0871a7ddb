"""MoCo augmentation as batched tensor ops (``--aug-backend tensor``), with the PIL pipeline's random draws.

The PIL pipeline (:func:`~mocobench.augment.moco_transform`, the official one) costs ~0.5 ms per
64 px view on one CPU core, most of it in per-image colour jitter, blur and tensor conversion. This
backend splits the work in two:

* per sample (:class:`TensorViews`, in the loader worker, under the sample's seed): walk the same
  ``Compose`` and draw every random parameter from torch's RNG in the same order and the same way as
  its transforms do, so a seed gives the same crop, jitter factors and order, and the same grayscale,
  blur and flip choices (tested: the RNG ends in the same state). The crop is the PIL transform
  itself (``RandomResizedCrop``, bilinear), so the geometry is bit-identical. Output: uint8 crops
  ``(V, 3, S, S)`` and one parameter row per view ``(V, P)``.
* per batch (:class:`BatchAugment`, the loader's ``collate_fn``): colour jitter, grayscale, blur, flip
  and normalisation in float32 on ``(N, 3, S, S)``, each op on the views that drew it.

Differences from the PIL pipeline, all near the 8-bit quantisation step (measured on 60 real images:
mean |difference| of the un-normalised views 1.3/255 at the median, 2.6/255 at most): no rounding to 8 bits between ops; PIL's contrast
rounds the mean grey level; PIL shifts hue on an 8-bit HSV image by ``int(255 * h)`` steps; PIL's
``GaussianBlur`` approximates a Gaussian by three box blurs, here it is an exact Gaussian of
``2 * ceil(3 * sigma_max) + 1`` taps with replicated edges.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import functional as TF
from torchvision.transforms.functional import pil_to_tensor

from mocobench.augment import IMAGENET_MEAN, IMAGENET_STD, RandomGaussianBlur, moco_transform

# Columns of a view's parameter row.
JITTER, FACTORS, ORDER, GRAY, BLUR, SIGMA, FLIP = 0, 1, 5, 9, 10, 11, 12
N_PARAMS = 13
CHUNK = 16  # views per pass of the batched ops
#: ITU-R 601-2 luma, as PIL's ``convert("L")`` (used by its grayscale, contrast and saturation).
LUMA = (0.299, 0.587, 0.114)


def _unwrap(op):
    """The transform inside a one-transform ``RandomApply``, else ``op``."""
    if not isinstance(op, T.RandomApply):
        return op
    if len(op.transforms) != 1:
        raise TypeError(f"RandomApply of {len(op.transforms)} transforms is not supported")
    return op.transforms[0]


#: transform type -> photometric stage ("" for those with no batched stage).
_STAGE = {T.RandomResizedCrop: "", T.ToTensor: "", T.Normalize: "", T.ColorJitter: "jitter",
          T.RandomGrayscale: "gray", RandomGaussianBlur: "blur", T.RandomHorizontalFlip: "flip"}


def photometric_stages(ops: list) -> list[str]:
    """The batched stages of ``ops`` in their order; a transform this module cannot mirror raises."""
    stages = []
    for op in ops:
        stage = _STAGE.get(type(_unwrap(op)))
        if stage is None:
            raise TypeError(f"--aug-backend tensor cannot mirror {_unwrap(op)!r}")
        if stage:
            stages.append(stage)
    return stages


def crop_op(ops: list) -> T.RandomResizedCrop:
    """The pipeline's ``RandomResizedCrop`` (every view of this module has one)."""
    crops = [op for op in ops if isinstance(op, T.RandomResizedCrop)]
    if len(crops) != 1:
        raise TypeError(f"expected one RandomResizedCrop in {ops!r}")
    return crops[0]


def draw_params(ops: list, img: Image.Image) -> tuple[tuple[int, int, int, int], torch.Tensor]:
    """One view's random draws: the crop box ``(top, left, height, width)`` and the parameter row ``(P,)``.
    Consumes torch's RNG exactly as ``T.Compose(ops)(img)`` would (``ops`` checked by
    :func:`photometric_stages`); only ``img.size`` is read, so a lazily opened file is not decoded."""
    row = torch.zeros(N_PARAMS)
    box = (0, 0, 0, 0)
    for op in ops:
        inner = _unwrap(op)
        if isinstance(op, T.RandomApply) and op.p < torch.rand(1):  # as RandomApply.forward
            continue
        if isinstance(inner, T.RandomResizedCrop):  # as RandomResizedCrop.forward, which then crops the box
            box = tuple(inner.get_params(img, inner.scale, inner.ratio))
        elif isinstance(inner, T.ColorJitter):
            order, *factors = T.ColorJitter.get_params(inner.brightness, inner.contrast, inner.saturation, inner.hue)
            row[JITTER] = 1.0
            row[FACTORS : FACTORS + 4] = torch.tensor(factors)
            row[ORDER : ORDER + 4] = order.float()
        elif isinstance(inner, T.RandomGrayscale):
            row[GRAY] = float(torch.rand(1) < inner.p)
        elif isinstance(inner, RandomGaussianBlur):
            row[BLUR], row[SIGMA] = 1.0, inner.draw_sigma()
        elif isinstance(inner, T.RandomHorizontalFlip):
            row[FLIP] = float(torch.rand(1) < inner.p)
    return box, row


def draw_view(ops: list, img: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
    """One view: the PIL crop as uint8 ``(3, S, S)`` and its parameter row ``(P,)`` (:func:`draw_params`;
    the crop is ``RandomResizedCrop``'s own, bit for bit)."""
    box, row = draw_params(ops, img)
    crop = crop_op(ops)
    return pil_to_tensor(TF.resized_crop(img, *box, crop.size, crop.interpolation, antialias=crop.antialias)), row


class TensorViews:
    """Per-sample half: ``img -> (crops uint8 (V, 3, S, S), params (V, P))`` for ``views`` views (2 for
    MoCo's query and key, drawn one after the other as ``TwoCrops``; 1 for the memory bank)."""

    def __init__(self, aug: str, image_size: int, views: int = 2) -> None:
        self.ops = moco_transform(aug, image_size).transforms
        photometric_stages(self.ops)  # refuse a pipeline it cannot mirror now, not in a loader worker
        self.views = views

    def __call__(self, img: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
        drawn = [draw_view(self.ops, img) for _ in range(self.views)]
        return torch.stack([crop for crop, _ in drawn]), torch.stack([row for _, row in drawn])


def luma(x: torch.Tensor) -> torch.Tensor:
    """``(N, 3, H, W) -> (N, 1, H, W)`` grey level (PIL's weights)."""
    return (x * x.new_tensor(LUMA).view(1, 3, 1, 1)).sum(1, keepdim=True)


def _blend_(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """In place: ``factor * x + (1 - factor) * other`` clamped to [0, 1] (torchvision's ``_blend``);
    ``factor`` is ``(N,)``, ``other`` broadcasts to ``x``."""
    f = factor.view(-1, 1, 1, 1)
    return x.mul_(f).add_(other * (1 - f)).clamp_(0, 1)


def adjust_brightness_(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """In place, as the contrast and saturation ops: ``(N, 3, H, W)`` scaled by ``f`` (N,), clamped."""
    return x.mul_(f.view(-1, 1, 1, 1)).clamp_(0, 1)


def adjust_contrast_(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return _blend_(x, luma(x).mean((1, 2, 3), keepdim=True), f)


def adjust_saturation_(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return _blend_(x, luma(x), f)


def adjust_hue(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Rotate hue by ``f`` (N,) turns in HSV (Pillow's hexagonal hue, as torchvision's ``adjust_hue``).

    With ``cr = max - min`` and the hue in sixths ``h6`` (torchvision's ``_rgb2hsv`` cases, r before g
    before b), channel n of the result is ``max - cr * clamp(min(k, 4 - k), 0, 1)``,
    ``k = (n + h6 + 6 f) mod 6`` for n = 5, 3, 1 (r, g, b): V and S are kept, H moves.
    """
    maxc, minc = x.amax(1, keepdim=True), x.amin(1, keepdim=True)  # (N, 1, H, W)
    cr = maxc - minc
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    # 0/1 masks of the max channel as sign(c - max) + 1 (c <= max): torch.where and float remainder
    # are 10-20x slower than plain arithmetic on this CPU
    is_r = (r - maxc).sign_().add_(1)
    is_g = (g - maxc).sign_().add_(1).mul_(1 - is_r)
    is_b = 1 - is_r - is_g
    h6 = is_r * (g - b) + is_g * (b - r + 2 * cr) + is_b * (r - g + 4 * cr)
    t = h6.div_(cr.clamp_min(1e-12)).add_(6.0 * f.view(-1, 1, 1, 1)) + x.new_tensor([5.0, 3.0, 1.0]).view(1, 3, 1, 1)
    k = t - 6.0 * torch.floor(t / 6.0)  # t mod 6
    return maxc - cr * torch.minimum(k, 4.0 - k).clamp_(0, 1)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """Separable Gaussian blur of ``(N, C, H, W)`` with one ``sigma`` per image ``(N,)``, ``2 * radius + 1``
    taps, edges replicated (as PIL's box blurs extend the edge pixels). Shifted multiply-adds: 2x
    faster here than a grouped convolution, whose groups change with every batch."""
    n, c, h, w = x.shape
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma.view(-1, 1)) ** 2)
    k = (k / k.sum(1, keepdim=True)).view(n, 1, 1, 1, -1)  # (N, 1, 1, 1, taps)
    padded = F.pad(x, (radius,) * 4, mode="replicate")
    rows = torch.zeros(n, c, h + 2 * radius, w, dtype=x.dtype, device=x.device)
    for i in range(2 * radius + 1):
        rows.addcmul_(padded[..., i : i + w], k[..., i])
    out = torch.zeros_like(x)
    for i in range(2 * radius + 1):
        out.addcmul_(rows[:, :, i : i + h], k[..., i])
    return out


#: ColorJitter's fn_idx order; the first three work in place
_JITTER_OPS = (adjust_brightness_, adjust_contrast_, adjust_saturation_, adjust_hue)


class BatchAugment:
    """Per-batch half: ``(crops uint8 (N, 3, S, S), params (N, P)) -> normalised float32 (N, 3, S, S)``,
    applying the stages of the transforms ``ops`` (e.g. ``moco_transform(aug, size).transforms``) in their order."""

    def __init__(self, ops: list) -> None:
        blur = [op.transforms[0] for op in ops if isinstance(op, T.RandomApply)
                and isinstance(op.transforms[0], RandomGaussianBlur)]
        self.radius = math.ceil(3 * blur[0].sigma[1]) if blur else 0
        self.stages = photometric_stages(ops)

    def __call__(self, crops: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """``crops`` uint8 and ``params`` on one device (the loader's CPU, or the training device for
        ``--aug-device``); the result is on it too."""
        x = crops.float().div_(255)
        for stage in self.stages:
            if stage == "jitter":  # each (position, op) pair on the views that drew it
                on = params[:, JITTER] > 0
                order = params[:, ORDER : ORDER + 4].long()
                for pos in range(4):
                    for op_id, fn in enumerate(_JITTER_OPS):
                        idx = (on & (order[:, pos] == op_id)).nonzero().squeeze(1)
                        if idx.numel():
                            x[idx] = _in_chunks(fn, x[idx], params[idx, FACTORS + op_id])
                continue
            idx = (params[:, {"gray": GRAY, "blur": BLUR, "flip": FLIP}[stage]] > 0).nonzero().squeeze(1)
            if not idx.numel():
                continue
            if stage == "gray":
                x[idx] = luma(x[idx]).expand(-1, 3, -1, -1)
            elif stage == "blur":
                x[idx] = gaussian_blur(x[idx], params[idx, SIGMA], self.radius)
            else:
                x[idx] = x[idx].flip(-1)
        mean, std = x.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1), x.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
        return x.sub_(mean).div_(std)


def _in_chunks(fn, x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """``fn(x, f)`` computed CHUNK images at a time into ``x`` on the CPU: the temporaries then stay in cache
    (hue: 2x faster than on a whole batch); on an accelerator in one pass (fewer kernel launches)."""
    chunk = CHUNK if x.device.type == "cpu" else max(1, x.shape[0])
    for xc, fc in zip(x.split(chunk), f.split(chunk), strict=True):
        out = fn(xc, fc)
        if out is not xc:
            xc.copy_(out)
    return x


class CollateViews:
    """DataLoader ``collate_fn`` for :class:`TensorViews` items ``((crops, params), label)``: returns
    ``([view_1, ..., view_V], labels)`` as the PIL pipeline's default collate does (a single tensor for
    V = 1), each view ``(B, 3, S, S)`` float32."""

    def __init__(self, aug: str, image_size: int) -> None:
        self.augment = BatchAugment(moco_transform(aug, image_size).transforms)

    def __call__(self, items: list) -> tuple[object, torch.Tensor]:
        crops = torch.stack([c for (c, _), _ in items], 1)  # (V, B, 3, S, S): view-major
        params = torch.stack([p for (_, p), _ in items], 1)
        v, b = crops.shape[:2]
        x = self.augment(crops.flatten(0, 1), params.flatten(0, 1)).view(v, b, *crops.shape[2:])
        labels = torch.tensor([label for _, label in items])
        return (list(x.unbind(0)) if v > 1 else x[0]), labels
