"""The key names of a torchvision ResNet backbone and of detectron2's ResNet, and the map between them.

torchvision -> detectron2 follows the official ``detection/convert-pretrain-to-detectron2.py``
(facebookresearch/moco @ 87e36d3): keys without "layer" get the prefix ``stem.``; ``layer1..4 ->
res2..5``; ``bn1/2/3 -> conv1/2/3.norm``; ``downsample.0 -> shortcut``; ``downsample.1 -> shortcut.norm``.
Both work for BasicBlock (ResNet-18/34) and Bottleneck (50/101/152) names. Used by the one checkpoint
reader (:mod:`mocobench.checkpoint`) and the converters (:mod:`mocobench.convert`).
"""

from __future__ import annotations

import re

_BN = r"(weight|bias|running_mean|running_var|num_batches_tracked)"
#: A detectron2 ResNet backbone key (``stem.conv1.norm.weight``, ``res2.0.shortcut.weight``, ...).
D2_KEY = re.compile(
    rf"^(stem\.conv1\.(weight|norm\.{_BN})|res[2-5]\.\d+\.(conv[1-3]|shortcut)\.(weight|norm\.{_BN}))$"
)
#: A torchvision ResNet backbone key (the classifier ``fc.*`` excluded).
TV_KEY = re.compile(
    rf"^((conv1\.weight|bn1\.{_BN})|layer[1-4]\.\d+\.((conv[1-3]\.weight)|(bn[1-3]\.{_BN})|downsample\.0\.weight|"
    rf"downsample\.1\.{_BN}))$"
)


def tv_to_d2(key: str) -> str | None:
    """detectron2's name of a torchvision backbone key, or None when ``key`` is not one."""
    if not TV_KEY.match(key):
        return None
    k = key if "layer" in key else "stem." + key
    for t in (1, 2, 3, 4):
        k = k.replace(f"layer{t}", f"res{t + 1}")
    for t in (1, 2, 3):
        k = k.replace(f"bn{t}", f"conv{t}.norm")
    return k.replace("downsample.0", "shortcut").replace("downsample.1", "shortcut.norm")


def d2_to_tv(key: str) -> str | None:
    """torchvision's name of a detectron2 backbone key, or None when ``key`` is not one."""
    if not D2_KEY.match(key):
        return None
    k = key.removeprefix("stem.")
    k = k.replace("shortcut.norm", "downsample.1").replace("shortcut", "downsample.0")
    for t in (1, 2, 3):
        k = k.replace(f"conv{t}.norm", f"bn{t}")
    for t in (2, 3, 4, 5):
        k = k.replace(f"res{t}", f"layer{t - 1}")
    return k
