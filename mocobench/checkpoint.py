"""The one checkpoint module: atomic writes, strict reads, format detection, backbone loading.

Formats recognised by :func:`detect_format` (and nowhere else):

* ``mocobench``: written by ``mocobench pretrain``; the official layout (below) plus
  ``format``/``format_version``, ``method``, ``backbone_prefix`` (``encoder_q.`` for MoCo,
  ``encoder.`` for supervised), ``config``, progress, scaler and RNG states.
* ``moco_official``: facebookresearch/moco ``main_moco.py`` checkpoints,
  ``{"epoch", "arch", "state_dict": {"module.encoder_q.*", "module.encoder_k.*", "module.queue",
  "module.queue_ptr"}, "optimizer"}``; also accepted without the ``module.`` prefix.
* ``torchvision``: a plain ResNet state dict (e.g. the supervised ImageNet weights file).
* ``random``: the literal string ``random`` instead of a path, a seeded random initialisation.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

from mocobench.atomic import atomic_write
from mocobench.layers import fast_maxpool

logger = logging.getLogger(__name__)

FORMAT = "mocobench"
FORMAT_VERSION = 1
FORMATS = ("mocobench", "moco_official", "torchvision", "random")
#: Prefixes added by DDP and torch.compile; stripped in this one place.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
# (block type, blocks per stage) of the torchvision ResNets, used to infer an architecture.
_RESNET_LAYOUTS = {
    ("basic", (2, 2, 2, 2)): "resnet18",
    ("basic", (3, 4, 6, 3)): "resnet34",
    ("bottleneck", (3, 4, 6, 3)): "resnet50",
    ("bottleneck", (3, 4, 23, 3)): "resnet101",
    ("bottleneck", (3, 8, 36, 3)): "resnet152",
}


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and the keys involved."""


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` through :func:`mocobench.atomic.atomic_write` (never a partial file)."""
    return atomic_write(path, lambda f: torch.save(obj, f))


def read_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint file on the CPU (``weights_only``); a missing or corrupt file is an error."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"checkpoint {path} cannot be read (truncated or not a torch file?): {e}") from e
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(obj).__name__}, expected a dict")
    return obj


def file_sha256(path: str | Path, length: int = 12) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:length]


def strip_prefix(state_dict: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Keys that start with ``prefix``, with it removed (others dropped)."""
    return {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}


def strip_wrappers(state_dict: dict[str, Any]) -> dict[str, Any]:
    """Remove leading DDP/compile prefixes (``module.``, ``_orig_mod.``) from every key."""
    out = {}
    for k, v in state_dict.items():
        changed = True
        while changed:
            changed = False
            for p in WRAPPER_PREFIXES:
                if k.startswith(p):
                    k, changed = k[len(p) :], True
        out[k] = v
    return out


def detect_format(obj: dict) -> str:
    """Name the format of a loaded checkpoint dict (see the module docstring)."""
    if obj.get("format") == FORMAT:
        return "mocobench"
    sd = obj.get("state_dict")
    if isinstance(sd, dict) and any(k.startswith("encoder_q.") for k in strip_wrappers(sd)):
        return "moco_official"
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()) and "conv1.weight" in strip_wrappers(obj):
        return "torchvision"
    first = list(obj)[:8] if sd is None else ["state_dict." + k for k in list(sd)[:8]]
    raise CheckpointError(
        f"unknown checkpoint format (known: {', '.join(FORMATS)}); first keys seen: {first}"
    )


def infer_resnet_arch(state_dict: dict[str, torch.Tensor]) -> str:
    """Infer the torchvision ResNet depth from backbone keys (``layerN.M.*``)."""
    blocks = []
    for stage in range(1, 5):
        idx = {int(m.group(1)) for k in state_dict if (m := re.match(rf"layer{stage}\.(\d+)\.", k))}
        blocks.append(max(idx) + 1 if idx else 0)
    kind = "bottleneck" if "layer1.0.conv3.weight" in state_dict else "basic"
    arch = _RESNET_LAYOUTS.get((kind, tuple(blocks)))
    if arch is None:
        raise CheckpointError(f"state dict is not a torchvision ResNet: {kind} blocks per stage {blocks}")
    return arch


@dataclass(frozen=True)
class BackboneInfo:
    """Where a backbone came from. ``method`` is e.g. moco_v2, supervised, random, unknown;
    ``recipe`` the pretraining settings that define it (mocobench checkpoints only)."""

    source: str
    format: str
    arch: str
    method: str
    epoch: int | None
    sha256: str | None
    recipe: dict[str, Any] | None = None


#: The pretraining settings copied from a mocobench checkpoint into every results file.
RECIPE_KEYS = ("method", "arch", "data", "epochs", "batch_size", "lr", "lr_schedule", "image_size",
               "queue_size", "moco_m", "moco_t", "mlp", "aug", "bn_splits", "seed", "amp", "aug_backend")


def backbone_state_dict(obj: dict, fmt: str) -> dict[str, torch.Tensor]:
    """The query encoder's (or plain ResNet's) weights without the head (``fc.*``)."""
    if fmt in ("mocobench", "moco_official"):
        # MoCo keeps the query encoder under encoder_q.; supervised pretraining under encoder.
        sd = strip_prefix(strip_wrappers(obj["state_dict"]), obj.get("backbone_prefix", "encoder_q."))
    else:
        sd = strip_wrappers(obj)
    return {k: v for k, v in sd.items() if not k.startswith("fc.")}


def load_projection_head(source: str | Path) -> nn.Module:
    """The contrastive projection head saved with a pretraining checkpoint, for scoring its output.

    MoCo v1 / InstDisc: ``fc`` = Linear(D, 128); MoCo v2: ``fc.0`` Linear(D, D), ReLU, ``fc.2``
    Linear(D, 128) (the official key names). Only checkpoints of a contrastive method hold one: a
    supervised checkpoint's ``fc`` is its classifier, and torchvision files and ``random`` hold no
    head; each is an error naming what is missing. Shape: (N, D) -> (N, dim).
    """
    if str(source) == "random":
        raise CheckpointError("a 'random' backbone has no trained projection head (features=head needs a "
                              "contrastive pretraining checkpoint)")
    obj = read_checkpoint(source)
    fmt = detect_format(obj)
    if fmt not in ("mocobench", "moco_official"):
        raise CheckpointError(f"checkpoint {source} ({fmt}) holds no projection head: features=head needs a "
                              "mocobench or official MoCo checkpoint with encoder_q.fc.* (or fc.0.*, fc.2.*)")
    if obj.get("method") == "supervised":
        raise CheckpointError(f"checkpoint {source} is a supervised pretraining: its fc is a classifier, not a "
                              "projection head; use features=backbone")
    sd = strip_prefix(strip_wrappers(obj["state_dict"]), obj.get("backbone_prefix", "encoder_q.") + "fc.")
    if set(sd) == {"weight", "bias"}:
        head: nn.Module = nn.Linear(sd["weight"].shape[1], sd["weight"].shape[0])
    elif set(sd) == {"0.weight", "0.bias", "2.weight", "2.bias"}:
        head = nn.Sequential(nn.Linear(*sd["0.weight"].shape[::-1]), nn.ReLU(), nn.Linear(*sd["2.weight"].shape[::-1]))
    else:
        raise CheckpointError(f"checkpoint {source} has no projection head of a known shape: expected fc.weight/"
                              f"fc.bias (v1) or fc.0.*/fc.2.* (v2) under the encoder, found fc keys {sorted(sd)}")
    head.load_state_dict(sd)
    return head.eval()


def load_backbone(source: str | Path, arch: str | None = None, seed: int = 0) -> tuple[nn.Module, BackboneInfo]:
    """Build a torchvision ResNet from any supported checkpoint, with ``fc`` replaced by Identity.

    ``source`` is a path or ``"random"`` (then ``arch`` is required). Loading is strict: the only
    keys allowed to be missing are the classification head's, and any unexpected key is an error.
    Returns the model (pooled features, Shape: (N, D)) and its :class:`BackboneInfo`.
    """
    if str(source) == "random":
        if arch is None:
            raise CheckpointError("a 'random' backbone needs an architecture (e.g. resnet50)")
        torch.manual_seed(seed)
        model = fast_maxpool(getattr(torchvision.models, arch)())
        model.fc = nn.Identity()
        return model, BackboneInfo("random", "random", arch, "random", 0, None)
    obj = read_checkpoint(source)
    fmt = detect_format(obj)
    sd = backbone_state_dict(obj, fmt)
    found = obj.get("arch") if fmt != "torchvision" else None
    found = found or infer_resnet_arch(sd)
    if arch is not None and arch != found:
        raise CheckpointError(f"checkpoint {source} holds a {found}, but {arch} was asked for")
    model = fast_maxpool(getattr(torchvision.models, found)())
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if set(missing) != {"fc.weight", "fc.bias"} or unexpected:
        raise CheckpointError(
            f"checkpoint {source} does not match {found}: missing keys {sorted(set(missing) - {'fc.weight', 'fc.bias'})}, "
            f"unexpected keys {sorted(unexpected)}"
        )
    model.fc = nn.Identity()
    method = obj.get("method") or {"moco_official": "moco", "torchvision": "supervised"}.get(fmt, "unknown")
    epoch = obj.get("epoch") if fmt != "torchvision" else None
    config = obj.get("config") if fmt == "mocobench" else None
    recipe = {k: config.get(k) for k in RECIPE_KEYS} if isinstance(config, dict) else None
    if recipe is not None and isinstance(obj.get("bn_groups"), dict):  # the splits used, when left to the default
        recipe["bn_splits"] = obj["bn_groups"].get("splits_per_process", recipe["bn_splits"])
    return model, BackboneInfo(str(source), fmt, found, method, epoch, file_sha256(source), recipe)
