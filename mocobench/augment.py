"""MoCo augmentations (official ``main_moco.py`` and ``moco/loader.py``, facebookresearch/moco @ 87e36d3).

v1 (arXiv 1911.05722, "InstDisc-style"): RandomResizedCrop(scale 0.2-1), RandomGrayscale(0.2),
ColorJitter(0.4, 0.4, 0.4, 0.4), flip.
v2 "aug+" (arXiv 2003.04297): RandomResizedCrop(scale 0.2-1), ColorJitter(0.4, 0.4, 0.4, 0.1) p=0.8,
RandomGrayscale(0.2), GaussianBlur(sigma 0.1-2) p=0.5, flip.
Both end in ToTensor + ImageNet normalisation. All randomness comes from torch's RNG, so a sample's
views are fixed by seeding torch (see :mod:`mocobench.datasets`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from PIL import Image, ImageFilter
from torchvision import transforms as T

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class RandomGaussianBlur:
    """PIL Gaussian blur with sigma ~ U(lo, hi) (official ``moco.loader.GaussianBlur``, torch RNG)."""

    def __init__(self, sigma: tuple[float, float] = (0.1, 2.0)) -> None:
        self.sigma = sigma

    def draw_sigma(self) -> float:
        """One draw from torch's RNG (also used by :mod:`~mocobench.batch_augment`)."""
        lo, hi = self.sigma
        return lo + (hi - lo) * float(torch.rand(()))

    def __call__(self, img: Image.Image) -> Image.Image:
        return img.filter(ImageFilter.GaussianBlur(radius=self.draw_sigma()))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(sigma={self.sigma})"


def moco_transform(aug: str, image_size: int = 224, blur_sigma: tuple[float, float] = (0.1, 2.0)) -> T.Compose:
    """One view's augmentation: ``aug`` is "v1" or "v2" (aug+)."""
    normalize = T.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    crop = T.RandomResizedCrop(image_size, scale=(0.2, 1.0))
    if aug == "v1":
        ops = [crop, T.RandomGrayscale(p=0.2), T.ColorJitter(0.4, 0.4, 0.4, 0.4), T.RandomHorizontalFlip()]
    elif aug == "v2":
        ops = [
            crop,
            T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            T.RandomGrayscale(p=0.2),
            T.RandomApply([RandomGaussianBlur(blur_sigma)], p=0.5),
            T.RandomHorizontalFlip(),
        ]
    else:
        raise ValueError(f"unknown augmentation {aug!r}; expected 'v1' or 'v2'")
    return T.Compose([*ops, T.ToTensor(), normalize])


def linear_train_transform(image_size: int = 224) -> T.Compose:
    """RandomResizedCrop(size) + flip + normalise (official ``main_lincls.py`` training transform)."""
    return T.Compose(
        [T.RandomResizedCrop(image_size), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    )


def eval_transform(image_size: int = 224) -> T.Compose:
    """Resize(size * 256/224) + CenterCrop(size) + normalise (the linear protocol's test transform)."""
    return T.Compose(
        [
            T.Resize(round(image_size * 256 / 224)),
            T.CenterCrop(image_size),
            T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def ssl_transfer_eval_transform(image_size: int = 224) -> T.Compose:
    """Resize(size, bicubic) on the short side + CenterCrop(size) + normalise: the many-shot transfer
    transform of Ericsson et al. 2021 (linusericsson/ssl-transfer @ 416913f, ``linear.py`` L274-279;
    Kornblith et al. 2019 likewise), which keeps the whole short side (the ImageNet eval transform
    drops about 23% of the square)."""
    return T.Compose([T.Resize(image_size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(image_size),
                      T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def ssl_transfer_train_transform(image_size: int = 224) -> T.Compose:
    """RandomResizedCrop(size, bicubic) + flip + normalise: ssl-transfer's fine-tuning views
    (``finetune.py`` L338-343)."""
    return T.Compose([T.RandomResizedCrop(image_size, interpolation=T.InterpolationMode.BICUBIC),
                      T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


class TwoCrops:
    """Two independent views of one decoded image (official ``TwoCropsTransform``)."""

    def __init__(self, transform: Callable[[Image.Image], torch.Tensor]) -> None:
        self.transform = transform

    def __call__(self, img: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(img), self.transform(img)
