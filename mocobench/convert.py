"""Checkpoint converters: pure ``state_dict -> state_dict`` functions, and separate writers.

torchvision -> detectron2 follows the official ``detection/convert-pretrain-to-detectron2.py``
(facebookresearch/moco @ 87e36d3; ``../shared/docs/protocols.md``): keys without "layer" get the
prefix ``stem.``; ``layer1..4 -> res2..5``; ``bn1/2/3 -> conv1/2/3.norm``; ``downsample.0 -> shortcut``;
``downsample.1 -> shortcut.norm``. Unlike the official script, the classification/projection head
(``fc.*``) is dropped, and any key that does not land on a detectron2 ResNet name is an error (the
official script only prints). Works for BasicBlock (ResNet-18/34) and Bottleneck (50/101/152).
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import numpy as np
import torch

from mocobench.atomic import atomic_write
from mocobench.checkpoint import (
    CheckpointError,
    atomic_save,
    backbone_state_dict,
    detect_format,
    read_checkpoint,
)

_BN = r"(weight|bias|running_mean|running_var|num_batches_tracked)"
_D2_KEY = re.compile(
    rf"^(stem\.conv1\.(weight|norm\.{_BN})|res[2-5]\.\d+\.(conv[1-3]|shortcut)\.(weight|norm\.{_BN}))$"
)
_TV_KEY = re.compile(
    rf"^((conv1\.weight|bn1\.{_BN})|layer[1-4]\.\d+\.((conv[1-3]\.weight)|(bn[1-3]\.{_BN})|downsample\.0\.weight|"
    rf"downsample\.1\.{_BN}))$"
)


def torchvision_to_detectron2(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a torchvision ResNet state dict (``fc.*`` dropped) to detectron2's ResNet names."""
    out, bad = {}, []
    for key, value in state_dict.items():
        if key.startswith("fc."):
            continue
        if not _TV_KEY.match(key):
            bad.append(key)
            continue
        k = key if "layer" in key else "stem." + key
        for t in (1, 2, 3, 4):
            k = k.replace(f"layer{t}", f"res{t + 1}")
        for t in (1, 2, 3):
            k = k.replace(f"bn{t}", f"conv{t}.norm")
        k = k.replace("downsample.0", "shortcut").replace("downsample.1", "shortcut.norm")
        assert _D2_KEY.match(k), k
        out[k] = value
    if bad:
        raise CheckpointError(f"{len(bad)} keys are not torchvision ResNet backbone keys and were not converted: {bad}")
    return out


def detectron2_to_torchvision(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse renaming (detectron2 ResNet backbone names -> torchvision)."""
    out, bad = {}, []
    for key, value in state_dict.items():
        if not _D2_KEY.match(key):
            bad.append(key)
            continue
        k = key.removeprefix("stem.")
        k = k.replace("shortcut.norm", "downsample.1").replace("shortcut", "downsample.0")
        for t in (1, 2, 3):
            k = k.replace(f"conv{t}.norm", f"bn{t}")
        for t in (2, 3, 4, 5):
            k = k.replace(f"res{t}", f"layer{t - 1}")
        out[k] = value
    if bad:
        raise CheckpointError(f"{len(bad)} keys are not detectron2 ResNet backbone keys: {bad}")
    return out


def write_detectron2(state_dict: dict[str, torch.Tensor], path: str | Path) -> Path:
    """Write ``{"model": numpy arrays, "__author__": "mocobench", "matching_heuristics": True}`` as a
    ``.pkl`` (detectron2 reads pickles by that suffix); atomic, so no partial file is ever left."""
    path = Path(path)
    if path.suffix != ".pkl":
        raise CheckpointError(f"{path}: detectron2 reads converted weights from a .pkl file")
    payload = {
        "model": {k: v.detach().cpu().numpy() for k, v in state_dict.items()},
        "__author__": "mocobench",
        "matching_heuristics": True,
    }
    atomic_write(path, lambda f: pickle.dump(payload, f))
    return path


def read_detectron2(path: str | Path) -> dict[str, torch.Tensor]:
    """The ``model`` of a detectron2 pickle as tensors."""
    with open(path, "rb") as f:
        data = pickle.load(f, encoding="latin1")
    return {k: torch.as_tensor(np.asarray(v)) for k, v in data["model"].items()}


def convert_checkpoint(source: str | Path, to: str, out: str | Path) -> Path:
    """Any checkpoint that :func:`mocobench.checkpoint.load_backbone` reads -> a detectron2 pickle or a
    plain torchvision state dict (the backbone, without head)."""
    obj = read_checkpoint(source)
    sd = backbone_state_dict(obj, detect_format(obj))
    if to == "detectron2":
        return write_detectron2(torchvision_to_detectron2(sd), out)
    if to == "torchvision":
        torchvision_to_detectron2(sd)  # validates that every key is a ResNet backbone key
        return atomic_save(sd, out)
    raise CheckpointError(f"--to {to!r}: expected detectron2 or torchvision")
