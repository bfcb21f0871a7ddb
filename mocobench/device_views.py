"""Views decoded, cropped and augmented on the training device (``--aug-device``, issue 18).

At 224 px one CPU core makes ~88 MoCo v2 views per second with the PIL pipeline (``benchmarks/input_stages.py``):
a GPU that steps 1400 images/s waits on a dozen workers. This path leaves the workers only what must happen per
file, and moves the pixel work to the device, batched:

* per sample, in the loader worker, under the sample's seed (:class:`FileViews`): read the file's bytes, read its
  size from the header (PIL opens lazily: no pixel is decoded) and draw every random parameter exactly as the PIL
  pipeline does (:func:`~mocobench.batch_augment.draw_params`: the same RNG calls in the same order, so a seed gives
  the same crop box and photometric row, and resume stays exact). A JPEG in RGB or grey travels as its bytes; any
  other file (PNG, 16-bit, CMYK, ...) is decoded here by :func:`~mocobench.datasets.load_rgb` and travels as
  uint8 pixels.
* per batch (:class:`CollateFiles`): a :class:`FileBatch` of the sources, boxes ``(V, B, 4)``, parameter rows
  ``(V, B, P)`` and file names.
* on the device (:class:`DeviceViews`): decode the JPEGs with ``torchvision.io.decode_jpeg`` (one batched call;
  nvJPEG on CUDA), crop each view's box and resize it to ``S x S`` (bilinear, antialiased as PIL's resize), then
  the tensor backend's photometric ops (:class:`~mocobench.batch_augment.BatchAugment`).

Distance from the tensor backend, measured on real JPEGs (``tests/test_device_views.py``): the decoded pixels are
identical on the CPU (both libjpeg-turbo); the resized crop is within 1/255 (PIL rounds its fixed-point filter
differently); the photometric ops are the same code. So the views stay within the tensor backend's distance from
the PIL pipeline plus one level. nvJPEG's IDCT differs from libjpeg's by a level or two (not measured here).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torchvision import transforms as T
from torchvision.io import ImageReadMode, decode_jpeg

from mocobench.batch_augment import BatchAugment, crop_op, draw_params, photometric_stages
from mocobench.datasets import EncodedImage, bad_image

#: Files sent undecoded: JPEGs whose mode both decoders turn into the same RGB (CMYK and others go as pixels).
DEVICE_DECODED = {("JPEG", "RGB"), ("JPEG", "L")}


@dataclass
class FileBatch:
    """One batch of :class:`FileViews` items. ``sources[b]``: JPEG bytes ``(L,)`` or RGB pixels ``(H, W, 3)``,
    uint8; ``boxes``: ``(V, B, 4)`` int64 crop boxes (top, left, height, width); ``params``: ``(V, B, P)``."""

    sources: list[torch.Tensor]
    boxes: torch.Tensor
    params: torch.Tensor
    names: tuple[str, ...]

    def pin_memory(self) -> FileBatch:
        """Called by the DataLoader's pinning thread (``pin_memory=True``)."""
        return FileBatch([s.pin_memory() for s in self.sources], self.boxes, self.params.pin_memory(), self.names)


class FileViews:
    """Per-sample half: ``EncodedImage -> (source, boxes (V, 4), params (V, P), name)`` for ``views`` views of
    the transforms ``ops`` (2 for MoCo's query and key, drawn one after the other as ``TwoCrops``; 1 for the
    memory bank and the linear protocol's training view)."""

    def __init__(self, ops: list, views: int = 2) -> None:
        self.ops = ops
        photometric_stages(self.ops)  # refuse a pipeline it cannot mirror now, not in a loader worker
        self.views = views

    def __call__(self, img: EncodedImage) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, str]:
        drawn = [draw_params(self.ops, img.header) for _ in range(self.views)]
        boxes = torch.tensor([box for box, _ in drawn], dtype=torch.int64)
        return source_of(img), boxes, torch.stack([row for _, row in drawn]), str(img.path)


def source_of(img: EncodedImage) -> torch.Tensor:
    """What travels to the device: a JPEG's bytes ``(L,)`` when both decoders agree on its mode, else the
    pixels decoded here ``(H, W, 3)``, uint8."""
    if (img.header.format, img.header.mode) in DEVICE_DECODED:
        return torch.frombuffer(bytearray(img.data), dtype=torch.uint8)
    return torch.from_numpy(np.asarray(img.decode()).copy())


class CollateFiles:
    """DataLoader ``collate_fn`` for :class:`FileViews` items ``((source, boxes, params, name), label)``:
    returns ``(FileBatch, labels)``."""

    def __call__(self, items: list) -> tuple[FileBatch, torch.Tensor]:
        batch = FileBatch([s for (s, _, _, _), _ in items], torch.stack([b for (_, b, _, _), _ in items], 1),
                          torch.stack([p for (_, _, p, _), _ in items], 1), tuple(n for (*_, n), _ in items))
        return batch, torch.tensor([label for _, label in items])


def decode_sources(sources: Sequence[torch.Tensor], names: Sequence[str], device: torch.device) -> list[torch.Tensor]:
    """Each source as uint8 RGB ``(3, H, W)`` on ``device``: the JPEG bytes in one ``decode_jpeg`` call (if it
    fails, one by one, to name the file that cannot be decoded); the pixels copied over."""
    out: list[torch.Tensor | None] = [None] * len(sources)
    jpegs = [i for i, s in enumerate(sources) if s.dim() == 1]
    if jpegs:
        try:
            decoded = decode_jpeg([sources[i] for i in jpegs], mode=ImageReadMode.RGB, device=device)
        except RuntimeError:
            decoded = [_decode_one(sources[i], names[i], device) for i in jpegs]
        for i, img in zip(jpegs, decoded, strict=True):
            out[i] = img
    for i, s in enumerate(sources):
        if s.dim() == 3:
            out[i] = s.to(device, non_blocking=True).permute(2, 0, 1)
    return out


def _decode_one(data: torch.Tensor, name: str, device: torch.device) -> torch.Tensor:
    try:
        return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
    except RuntimeError as e:
        raise bad_image(name, e) from e


def resized_crops(images: Sequence[torch.Tensor], boxes: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """``boxes (V, B, 4)`` of the B ``images`` ``(3, H, W)`` uint8, each resized to ``size`` (bilinear,
    antialiased, as ``RandomResizedCrop``'s PIL resize; rounded to uint8): ``(V * B, 3, *size)`` view-major."""
    crops = []
    for view in boxes.tolist():
        for img, (top, left, h, w) in zip(images, view, strict=True):
            x = img[None, :, top : top + h, left : left + w].float()
            crops.append(F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False, antialias=True))
    return torch.cat(crops).round_().clamp_(0, 255).to(torch.uint8)


class DeviceViews:
    """Per-batch half, on ``device``: ``(FileBatch, labels) -> (views, labels)`` with ``views`` as the other
    backends give them (a list of V ``(B, 3, S, S)`` float32 tensors, a single tensor for V = 1)."""

    def __init__(self, ops: list, device: torch.device) -> None:
        self.size = crop_op(ops).size
        self.augment = BatchAugment(ops)
        self.device = device

    def decode_and_crop(self, files: FileBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """The uint8 crops ``(V * B, 3, S, S)`` (view-major) and their parameter rows ``(V * B, P)``, on the device."""
        images = decode_sources(files.sources, files.names, self.device)
        return resized_crops(images, files.boxes, self.size), files.params.flatten(0, 1).to(self.device, non_blocking=True)

    def __call__(self, batch: tuple[FileBatch, torch.Tensor]) -> tuple[object, torch.Tensor]:
        files, labels = batch
        x = self.augment(*self.decode_and_crop(files))
        x = x.view(*files.boxes.shape[:2], *x.shape[1:])
        return (list(x.unbind(0)) if x.shape[0] > 1 else x[0]), labels



# ------------------------------------------------------------------ the evaluation transform, on the device
class FileImage:
    """Per-sample half of the evaluation path (nothing is drawn): ``EncodedImage -> (source, name)``."""

    def __call__(self, img: EncodedImage) -> tuple[torch.Tensor, str]:
        return source_of(img), str(img.path)


def collate_images(items: list) -> tuple[tuple[list[torch.Tensor], tuple[str, ...]], torch.Tensor]:
    """DataLoader ``collate_fn`` for :class:`FileImage` items ``((source, name), label)``."""
    return ([s for (s, _), _ in items], tuple(n for (_, n), _ in items)), torch.tensor([y for _, y in items])


def resized_size(height: int, width: int, short: int) -> tuple[int, int]:
    """``T.Resize(short)``'s output size: the short side becomes ``short``, the long one ``int(short * long /
    short_side)`` (torchvision ``_compute_resized_output_size``)."""
    if width <= height:
        return int(short * height / width), short
    return short, int(short * width / height)


class DeviceEval:
    """``Resize(R) + CenterCrop(S) + normalise`` (bilinear, antialiased; :func:`~mocobench.augment.eval_transform`,
    the linear protocol's test transform) on ``device``: ``((sources, names), labels) -> ((B, 3, S, S), labels)``.
    Within 1/255 of the PIL transform before normalisation (the resize's rounding)."""

    def __init__(self, ops: list, device: torch.device) -> None:
        kinds = [type(op) for op in ops]
        if kinds != [T.Resize, T.CenterCrop, T.ToTensor, T.Normalize] or ops[0].interpolation != T.InterpolationMode.BILINEAR \
                or not isinstance(ops[0].size, int) and len(ops[0].size) != 1:
            raise TypeError(f"the device path makes Resize(int, bilinear) + CenterCrop + normalise, not {ops!r}")
        self.short = ops[0].size if isinstance(ops[0].size, int) else ops[0].size[0]
        self.crop = tuple(ops[1].size)
        self.mean = torch.tensor(ops[3].mean, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(ops[3].std, device=device).view(1, 3, 1, 1)
        self.device = device

    def __call__(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        (sources, names), labels = batch
        out = []
        for img in decode_sources(sources, names, self.device):
            size = resized_size(img.shape[1], img.shape[2], self.short)
            x = F.interpolate(img[None].float(), size=size, mode="bilinear", align_corners=False, antialias=True)
            top = int(round((size[0] - self.crop[0]) / 2.0))  # as CenterCrop
            left = int(round((size[1] - self.crop[1]) / 2.0))
            out.append(x[:, :, top : top + self.crop[0], left : left + self.crop[1]].round_().clamp_(0, 255))
        return torch.cat(out).div_(255).sub_(self.mean).div_(self.std), labels
