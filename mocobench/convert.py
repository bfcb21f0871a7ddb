"""Checkpoint converters: pure ``state_dict -> state_dict`` functions, and separate writers.

torchvision -> detectron2 follows the official ``detection/convert-pretrain-to-detectron2.py``
(facebookresearch/moco @ 87e36d3; ``../shared/docs/protocols.md``): keys without "layer" get the
prefix ``stem.``; ``layer1..4 -> res2..5``; ``bn1/2/3 -> conv1/2/3.norm``; ``downsample.0 -> shortcut``;
``downsample.1 -> shortcut.norm``. Unlike the official script, the classification/projection head
(``fc.*``) is dropped, and any key that does not land on a detectron2 ResNet name is an error (the
official script only prints). Works for BasicBlock (ResNet-18/34) and Bottleneck (50/101/152).
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import torch

from mocobench.atomic import atomic_write
from mocobench.checkpoint import (
    CheckpointError,
    LoadOptions,
    atomic_save,
    load_backbone,
    read_restricted_pickle,
)
from mocobench.resnet_keys import d2_to_tv, tv_to_d2

logger = logging.getLogger(__name__)


def _rename(state_dict: dict[str, torch.Tensor], rename, skip: str | None, what: str) -> dict[str, torch.Tensor]:
    out, bad = {}, []
    for key, value in state_dict.items():
        if skip and key.startswith(skip):
            continue
        new = rename(key)
        if new is None:
            bad.append(key)
        else:
            out[new] = value
    if bad:
        raise CheckpointError(f"{len(bad)} keys are not {what} and were not converted: {bad}")
    return out


def torchvision_to_detectron2(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a torchvision ResNet state dict (``fc.*`` dropped) to detectron2's ResNet names."""
    return _rename(state_dict, tv_to_d2, "fc.", "torchvision ResNet backbone keys")


def detectron2_to_torchvision(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse renaming (detectron2 ResNet backbone names -> torchvision)."""
    return _rename(state_dict, d2_to_tv, None, "detectron2 ResNet backbone keys")


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
    data = read_restricted_pickle(path)
    return {k: torch.as_tensor(v) for k, v in data["model"].items()}


def convert_checkpoint(source: str | Path, to: str, out: str | Path, options: LoadOptions | None = None) -> Path:
    """Any checkpoint that :func:`mocobench.checkpoint.load_backbone` reads -> a detectron2 pickle or a
    plain torchvision state dict (the backbone, without head). Read strictly by the one reader; a
    small-image stem cannot become a detectron2 ResNet (whose stem is 7x7/2 with max-pool) and is refused."""
    if to not in ("detectron2", "torchvision"):
        raise CheckpointError(f"--to {to!r}: expected detectron2 or torchvision")
    net, info = load_backbone(source, options=options)
    sd = net.state_dict()
    if to == "detectron2":
        if info.stem != "standard":
            raise CheckpointError(f"checkpoint {source} has a small-image stem ({info.stem}: 3x3 stride-1 conv1, no "
                                  "max-pool); detectron2's ResNet stem is 7x7 stride 2 with a max-pool, so it "
                                  "cannot be converted")
        path = write_detectron2(torchvision_to_detectron2(sd), out)
    else:
        path = atomic_save(sd, out)
    if info.normalize != "imagenet":
        logger.warning("%s expects %s input normalisation, which %s does not record: evaluate it with --set "
                       "normalize=%s (detectron2: MODEL.PIXEL_MEAN/STD)", source, info.normalize, path, info.normalize)
    return path
