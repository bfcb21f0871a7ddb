"""The one checkpoint module: atomic writes, safe reads, layout detection, strict backbone loading.

Every consumer (tasks, ``convert``, the suite) reads a backbone through :func:`load_backbone`. The
layouts it understands are data (:data:`mocobench.layouts.LAYOUTS`: mocobench, official MoCo, MoCo v3,
solo-learn, lightly, mmselfsup, OpenSelfSup, VISSL, DINO, SwAV, PyContrast, detectron2 pickles, plain
torchvision state dicts); :func:`resolve_layout` recognises them from the structure of the loaded
object, never from the file name. Loading is strict: the missing keys are exactly ``fc.weight`` and
``fc.bias``, and every key outside the backbone must be one the layout is known to save (a projection
head, a momentum encoder, a queue...); anything else is an error that names the keys.

Files are read with ``torch.load(weights_only=True)``; detectron2 ``.pkl`` files with
:func:`read_restricted_pickle`, which builds numpy arrays and plain containers and refuses every other
object before anything in it runs. ``random`` instead of a path is a seeded random initialisation.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision
from torch import nn

from mocobench.atomic import atomic_write
from mocobench.layers import fast_maxpool
from mocobench.layouts import BY_NAME, FROM_FILE, FROM_HEAD, LAYOUTS, NORMALIZATIONS, STEMS, Layout, Where
from mocobench.resnet_keys import TV_KEY, d2_to_tv

logger = logging.getLogger(__name__)

FORMAT = "mocobench"
FORMAT_VERSION = 1
#: Prefixes added by DDP and torch.compile; stripped in this one place.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
#: Containers ``--prefix`` looks in, in order ("" = the file itself).
PREFIX_CONTAINERS = ("", "state_dict", "model", "teacher", "state")
# (block type, blocks per stage) of the torchvision ResNets, used to infer an architecture.
_RESNET_LAYOUTS = {
    ("basic", (2, 2, 2, 2)): "resnet18",
    ("basic", (3, 4, 6, 3)): "resnet34",
    ("bottleneck", (3, 4, 6, 3)): "resnet50",
    ("bottleneck", (3, 4, 23, 3)): "resnet101",
    ("bottleneck", (3, 8, 36, 3)): "resnet152",
}
#: Harmless classes that published checkpoints pickle next to their weights, allowed by the
#: ``weights_only`` reader: DINO's and MoCo v3's ``args`` (an argparse.Namespace only holds attributes).
SAFE_GLOBALS = [argparse.Namespace]
#: The only globals a detectron2 pickle may name: numpy's array and scalar rebuilders, dtypes and an
#: ordered dict. Anything else (os.system, a model class, ...) is refused before it is called.
_PICKLE_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("collections", "OrderedDict"),
}


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and the keys involved."""


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` through :func:`mocobench.atomic.atomic_write` (never a partial file)."""
    return atomic_write(path, lambda f: torch.save(obj, f))


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _PICKLE_ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"the pickle asks for {module}.{name}, which is not a numpy array or a plain "
                                     "container; refused (nothing in the file was run)")


def read_restricted_pickle(path: str | Path) -> dict:
    """A pickle of plain containers and numpy arrays (a detectron2 ``.pkl``), read without running any other
    object: a pickle that names another global is refused. Object arrays are refused too."""
    try:
        with open(path, "rb") as f:
            obj = _RestrictedUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise CheckpointError(f"checkpoint {path} is not a safe pickle of arrays: {e}") from e
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(obj).__name__}, expected a dict")

    def check(x: Any, where: str) -> None:
        if isinstance(x, np.ndarray) and x.dtype == object:
            raise CheckpointError(f"checkpoint {path}: {where} is an array of Python objects; refused")
        if isinstance(x, dict):
            for k, v in x.items():
                check(v, f"{where}.{k}" if where else str(k))

    check(obj, "")
    return obj


def read_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint file on the CPU; a missing, corrupt or unsafe file is an error.

    torch files are read with ``weights_only=True`` (tensors, plain containers and :data:`SAFE_GLOBALS`);
    a plain pickle (a detectron2 ``.pkl``) with :func:`read_restricted_pickle`. A file that needs any
    other object unpickled is refused, and the message says how to extract its weights if you trust it.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    with open(path, "rb") as f:
        head = f.read(14)
    # A plain pickle (a detectron2 .pkl) starts with the PROTO opcode; a legacy (pre-1.6) torch file too, but
    # its first object is torch's magic number (torch/serialization.py MAGIC_NUMBER, pickled as LONG1).
    legacy = head[2:4] == b"\x8a\x0a" and int.from_bytes(head[4:14], "little") == 0x1950A86A20F9469CFC6C
    if head[:1] == b"\x80" and not legacy and not zipfile.is_zipfile(path):
        obj = read_restricted_pickle(path)
    else:
        obj = _torch_load(path)
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(obj).__name__}, expected a dict")
    return obj


def _torch_load(path: Path) -> Any:
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        if found:
            raise CheckpointError(
                f"checkpoint {path} needs full unpickling (it holds a Python object, {found.group(1)}); mocobench "
                "never unpickles untrusted objects. If you trust the file, save its weights alone: python -c "
                f"\"import torch; c = torch.load('{path}', weights_only=False); torch.save(c['state_dict'], "
                f"'{path.stem}.weights.pth')\" (use the key that holds the weights)") from e
        raise CheckpointError(f"checkpoint {path} cannot be read (truncated or not a torch file?): {e}") from e
    except Exception as e:
        raise CheckpointError(f"checkpoint {path} cannot be read (truncated or not a torch file?): {e}") from e


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


@dataclass(frozen=True)
class LoadOptions:
    """How to read a checkpoint when its structure alone does not say (CLI ``--format``, ``--prefix``,
    ``--part``, ``--stem``). ``format`` forces a layout of :data:`~mocobench.layouts.LAYOUTS`; ``prefix``
    reads the ResNet under that key prefix of any layout (keys outside it are dropped and listed); ``part``
    picks one of a layout's backbones (DINO: teacher, the default, or student); ``stem`` names the
    small-image stem of a 3x3 ``conv1`` (``small``, ``small_pad2``) where the layout does not."""

    format: str | None = None
    prefix: str | None = None
    part: str | None = None
    stem: str | None = None


@dataclass(frozen=True)
class Resolved:
    """A checkpoint's backbone as the reader found it: torchvision-named tensors (``fc.*`` removed) and
    where they came from. ``dropped`` counts the tensors left out, by part (``projector``, ``encoder_k``,
    the backbone's own ``fc`` head...)."""

    layout: Layout
    where: Where
    state_dict: dict[str, torch.Tensor]
    dropped: dict[str, int]


def _container(obj: dict, path: str) -> dict | None:
    """The dict at dotted ``path`` of ``obj`` ("" = ``obj``), its keys unwrapped; None when absent."""
    node: Any = obj
    for part in filter(None, path.split(".")):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    if not isinstance(node, dict) or not node or not all(isinstance(k, str) for k in node):
        return None
    return strip_wrappers(node)


def _part_of(key: str) -> str:
    """The part a dropped key belongs to: its first name (``projector`` of ``projector.0.weight``)."""
    return key.split(".", 1)[0]


def _known(key: str, known: tuple[str, ...]) -> bool:
    return any(key.startswith(k) if k.endswith(".") else key == k for k in known)


def _match(obj: dict, layout: Layout, where: Where) -> tuple[dict, list[str], dict[str, int]] | None:
    """Split the container of ``where`` into (backbone, unknown keys, dropped counts), or None when the
    layout's stem key is not there (not this layout)."""
    if any(obj.get(k) != v if v is not None else k not in obj for k, v in layout.top.items()):
        return None
    sd = _container(obj, where.container)
    if sd is None or where.prefix + layout.stem_key not in sd:
        return None
    backbone, unknown, dropped = {}, [], {}
    for key, value in sd.items():
        inner = key[len(where.prefix):] if key.startswith(where.prefix) else None
        if inner is not None and layout.rename == "detectron2":
            inner = d2_to_tv(inner) or inner
        if inner is not None and TV_KEY.match(inner):
            if isinstance(value, np.ndarray):  # detectron2 pickles hold numpy arrays
                value = torch.from_numpy(value)
            if not isinstance(value, torch.Tensor):
                raise CheckpointError(f"key {key} holds a {type(value).__name__}, expected a tensor")
            backbone[inner] = value
        elif inner is not None and inner.startswith("fc."):  # the classifier or projection head
            name = where.prefix + "fc"
            dropped[name] = dropped.get(name, 0) + 1
        elif inner is not None and where.prefix:  # under the backbone's prefix, but not a ResNet key
            unknown.append(key)
        elif _known(key, layout.known):
            dropped[_part_of(key)] = dropped.get(_part_of(key), 0) + 1
        else:
            unknown.append(key)
    return backbone, unknown, dropped


def _wheres(layout: Layout, part: str | None) -> tuple[Where, ...]:
    if part is None:
        default = layout.where[0].part
        return tuple(w for w in layout.where if w.part == default)
    if part not in layout.parts:
        raise CheckpointError(f"--part {part}: layout {layout.name} has "
                              + (f"parts {', '.join(layout.parts)}" if layout.parts else "one backbone, no parts"))
    return tuple(w for w in layout.where if w.part == part)


def resolve_layout(obj: dict, options: LoadOptions = LoadOptions(), source: str = "checkpoint") -> Resolved:
    """Find the backbone of a loaded checkpoint (see the module docstring). Tries every layout (or the forced
    one) and keeps those whose every key is a backbone key or a known part; of these, the one that explains
    the most keys by its known parts, then the first in :data:`LAYOUTS`. A structure that no layout explains
    fully is an error naming the keys that are in the way, and the layout it was closest to."""
    if options.prefix is not None:
        return _resolve_prefix(obj, options, source)
    if options.format is not None and options.format not in BY_NAME:
        raise CheckpointError(f"--format {options.format}: unknown layout; choose one of {', '.join(BY_NAME)}")
    layouts = (BY_NAME[options.format],) if options.format else tuple(x for x in LAYOUTS if x.auto)
    clean, near = [], []
    for rank, layout in enumerate(layouts):
        if options.part is not None and options.format is None and options.part not in layout.parts:
            continue
        for where in _wheres(layout, options.part):
            found = _match(obj, layout, where)
            if found is None:
                continue
            if layout.refuse:
                raise CheckpointError(f"checkpoint {source} is a {layout.name} file ({layout.source}): {layout.refuse}")
            backbone, unknown, dropped = found
            outside = sum(n for k, n in dropped.items() if k != where.prefix + "fc")
            entry = (len(unknown), -outside, rank, layout, where, backbone, unknown, dropped)
            (near if unknown else clean).append(entry)
            break
    if clean:
        *_, layout, where, backbone, _, dropped = min(clean, key=lambda e: e[:3])
        sd = _container(obj, where.container) or {}
        for prefix, message in layout.caveats:
            if options.part is None and any(k.startswith(prefix) for k in sd):
                logger.warning("%s: %s", source, message)
        return Resolved(layout, where, backbone, dropped)
    if near:
        n, _, _, layout, where, backbone, unknown, _ = min(near, key=lambda e: e[:3])
        shown = sorted(unknown)[:20]
        raise CheckpointError(
            f"checkpoint {source} looks like the {layout.name} layout (backbone under "
            f"'{where.container + ':' if where.container else ''}{where.prefix}', {len(backbone)} tensors) but holds "
            f"{n} keys that layout does not save: {shown}{' ...' if n > len(shown) else ''}. Nothing was loaded. "
            f"If those keys are not part of the backbone, --prefix '{where.prefix}' reads the backbone and "
            "drops the rest (listed in results.json)")
    sd = obj.get("state_dict")
    first = list(obj)[:8] if not isinstance(sd, dict) else ["state_dict." + k for k in list(sd)[:8]]
    if options.format:
        layout = BY_NAME[options.format]
        places = " or ".join(f"'{w.container + ':' if w.container else ''}{w.prefix}{layout.stem_key}'"
                             for w in layout.where)
        needs = "".join(f" and a top-level {k}={v!r}" for k, v in layout.top.items())
        wanted = f"layout {options.format} (it has {places}{needs})"
    else:
        wanted = f"any known layout ({', '.join(BY_NAME)})"
    raise CheckpointError(f"checkpoint {source} is not {wanted}: no ResNet conv1.weight where a layout keeps "
                          f"its backbone; first keys seen: {first}. --prefix STR reads a ResNet under any key prefix")


def _resolve_prefix(obj: dict, options: LoadOptions, source: str) -> Resolved:
    """``--prefix``: the ResNet under ``options.prefix`` in the first container that has one; everything else
    in that container is dropped (and listed)."""
    layout = Layout("prefix", "unknown", f"--prefix {options.prefix}", ())
    for container in PREFIX_CONTAINERS:
        where = Where(container, options.prefix)
        found = _match(obj, layout, where)
        if found is None:
            continue
        backbone, unknown, dropped = found
        for key in unknown:
            dropped[_part_of(key)] = dropped.get(_part_of(key), 0) + 1
        return Resolved(layout, where, backbone, dropped)
    raise CheckpointError(f"checkpoint {source}: no key '{options.prefix}conv1.weight' in the file or its "
                          f"{', '.join(c for c in PREFIX_CONTAINERS if c)} entry (after removing 'module.'); "
                          "--prefix names the part of the keys in front of conv1.weight, layer1..., e.g. encoder.")


def detect_format(obj: dict) -> str:
    """The name of the layout of a loaded checkpoint (see :func:`resolve_layout`)."""
    return resolve_layout(obj).layout.name


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


def build_resnet(arch: str, stem: str = "standard") -> nn.Module:
    """A torchvision ResNet; ``stem`` ``small`` / ``small_pad2`` (:data:`~mocobench.layouts.STEMS`) replaces
    the 7x7/2 conv1 and max-pool with a 3x3 stride-1 conv1 and no pool (CIFAR-size images)."""
    model = getattr(torchvision.models, arch)()
    if stem == "standard":
        return fast_maxpool(model)
    model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=STEMS[stem], bias=False)
    model.maxpool = nn.Identity()
    return model


class Renormalize:
    """Forward pre-hook: maps the tasks' ImageNet-normalised input to the normalisation a backbone was
    trained with, ``(x * std_in + mean_in - mean) / std``. Shape: (N, 3, H, W) -> same."""

    def __init__(self, normalize: str) -> None:
        (m0, s0), (m1, s1) = NORMALIZATIONS["imagenet"], NORMALIZATIONS[normalize]
        self.scale = tuple(a / b for a, b in zip(s0, s1, strict=True))
        self.shift = tuple((a - b) / c for a, b, c in zip(m0, m1, s1, strict=True))

    def __call__(self, module: nn.Module, args: tuple) -> tuple:
        x = args[0]
        scale = torch.tensor(self.scale, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        shift = torch.tensor(self.shift, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        return (x * scale + shift, *args[1:])


def set_input_normalization(model: nn.Module, normalize: str) -> nn.Module:
    """Make ``model`` take the tasks' ImageNet-normalised images whatever normalisation its checkpoint
    expects (:data:`~mocobench.layouts.NORMALIZATIONS`). Returns ``model``."""
    if normalize not in NORMALIZATIONS:
        raise CheckpointError(f"normalize={normalize}: expected one of {', '.join(NORMALIZATIONS)}")
    if normalize != "imagenet":
        model.register_forward_pre_hook(Renormalize(normalize))
    return model


@dataclass(frozen=True)
class BackboneInfo:
    """Where a backbone came from. ``method`` is e.g. moco_v2, supervised, random, unknown; ``recipe`` the
    pretraining settings that define it (mocobench checkpoints only). ``format`` is the layout, ``prefix``
    and ``container`` where in the file the ResNet was, ``part`` which of several backbones (DINO teacher),
    ``tensors`` how many were loaded, ``dropped`` the tensors left out by part, ``stem`` standard or a
    small-image variant, ``normalize`` the input normalisation the backbone expects, ``zoo`` the catalogue
    entry it was fetched as."""

    source: str
    format: str
    arch: str
    method: str
    epoch: int | None
    sha256: str | None
    recipe: dict[str, Any] | None = None
    prefix: str = ""
    container: str = ""
    part: str = ""
    tensors: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    stem: str = "standard"
    normalize: str = "imagenet"
    zoo: str | None = None


#: The pretraining settings copied from a mocobench checkpoint into every results file.
RECIPE_KEYS = ("method", "arch", "data", "epochs", "batch_size", "lr", "lr_schedule", "image_size",
               "queue_size", "moco_m", "moco_t", "mlp", "aug", "bn_splits", "seed", "amp", "aug_backend")


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
    found = resolve_layout(obj, source=str(source))
    fmt = found.layout.name
    if fmt not in ("mocobench", "moco_official"):
        raise CheckpointError(f"checkpoint {source} ({fmt}) holds no projection head: features=head needs a "
                              "mocobench or official MoCo checkpoint with encoder_q.fc.* (or fc.0.*, fc.2.*)")
    if obj.get("method") == "supervised":
        raise CheckpointError(f"checkpoint {source} is a supervised pretraining: its fc is a classifier, not a "
                              "projection head; use features=backbone")
    sd = strip_prefix(_container(obj, found.where.container) or {}, found.where.prefix + "fc.")
    if set(sd) == {"weight", "bias"}:
        head: nn.Module = nn.Linear(sd["weight"].shape[1], sd["weight"].shape[0])
    elif set(sd) == {"0.weight", "0.bias", "2.weight", "2.bias"}:
        head = nn.Sequential(nn.Linear(*sd["0.weight"].shape[::-1]), nn.ReLU(), nn.Linear(*sd["2.weight"].shape[::-1]))
    else:
        raise CheckpointError(f"checkpoint {source} has no projection head of a known shape: expected fc.weight/"
                              f"fc.bias (v1) or fc.0.*/fc.2.* (v2) under the encoder, found fc keys {sorted(sd)}")
    head.load_state_dict(sd)
    return head.eval()


def _stem(sd: dict[str, torch.Tensor], layout: Layout, options: LoadOptions, source: str) -> str:
    """standard (7x7 conv1) or the named small-image stem of a 3x3 conv1; never guessed."""
    kernel = tuple(sd["conv1.weight"].shape[-2:])
    if kernel == (7, 7):
        if options.stem not in (None, "standard"):
            raise CheckpointError(f"--stem {options.stem}: checkpoint {source} has a standard 7x7 conv1")
        return "standard"
    if kernel != (3, 3):
        raise CheckpointError(f"checkpoint {source}: conv1 is {kernel[0]}x{kernel[1]}; a ResNet stem is 7x7 (or 3x3 "
                              "for small images)")
    stem = options.stem or layout.stem
    if not stem or stem == "standard":
        raise CheckpointError(
            f"checkpoint {source} has a small-image stem (3x3 conv1) whose padding the {layout.name} layout does not "
            f"name; pass --stem {' or --stem '.join(STEMS)} (conv1 padding {' or '.join(map(str, STEMS.values()))}, "
            "stride 1, no max-pool), as the code that trained it built it")
    if stem not in STEMS:
        raise CheckpointError(f"--stem {stem}: expected standard or one of {', '.join(STEMS)}")
    return stem


def _method(obj: dict, layout: Layout, backbone_fc: bool) -> str:
    if layout.method == FROM_FILE:
        return str(obj.get("method") or "unknown")
    if layout.method == FROM_HEAD:  # a flat ResNet with its classifier: supervised weights
        return "supervised" if backbone_fc else "unknown"
    return layout.method


def load_backbone(source: str | Path, arch: str | None = None, seed: int = 0,
                  options: LoadOptions | None = None) -> tuple[nn.Module, BackboneInfo]:
    """Build a torchvision ResNet from any supported checkpoint, with ``fc`` replaced by Identity.

    ``source`` is a path, ``zoo:NAME`` (a catalogue entry, fetched on first use) or ``"random"`` (then
    ``arch`` is required). Loading is strict (see the module docstring); the log says which layout, prefix
    and part were read, how many tensors were loaded and what was dropped. Returns the model (pooled
    features, Shape: (N, D)) and its :class:`BackboneInfo`.
    """
    options = options or LoadOptions()
    if str(source) == "random":
        if arch is None:
            raise CheckpointError("a 'random' backbone needs an architecture (e.g. resnet50)")
        torch.manual_seed(seed)
        model = build_resnet(arch, options.stem or "standard")
        model.fc = nn.Identity()
        return model, BackboneInfo("random", "random", arch, "random", 0, None, stem=options.stem or "standard")
    zoo = None
    if str(source).startswith("zoo:"):
        from mocobench.zoo import resolve  # lazy: the catalogue imports this module

        zoo, path, options = resolve(str(source)[4:], options)
    else:
        path = Path(source)
    obj = read_checkpoint(path)
    found = resolve_layout(obj, options, str(path))
    layout, where, sd = found.layout, found.where, found.state_dict
    found_arch = infer_resnet_arch(sd)
    if isinstance(obj.get("arch"), str) and obj["arch"] != found_arch and obj["arch"] in _RESNET_LAYOUTS.values():
        raise CheckpointError(f"checkpoint {path} says arch {obj['arch']} but its keys are a {found_arch}")
    if arch is not None and arch != found_arch:
        raise CheckpointError(f"checkpoint {path} holds a {found_arch}, but {arch} was asked for")
    stem = _stem(sd, layout, options, str(path))
    model = build_resnet(found_arch, stem)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if set(missing) != {"fc.weight", "fc.bias"} or unexpected:
        raise CheckpointError(
            f"checkpoint {path} does not match {found_arch}: missing keys {sorted(set(missing) - {'fc.weight', 'fc.bias'})}, "
            f"unexpected keys {sorted(unexpected)}"
        )
    mismatched = [k for k, v in model.state_dict().items() if k in sd and v.shape != sd[k].shape]
    assert not mismatched, mismatched  # load_state_dict raises on shape mismatches before this
    model.fc = nn.Identity()
    method = _method(obj, layout, where.prefix + "fc" in found.dropped)
    epoch = obj.get("epoch") if isinstance(obj.get("epoch"), int) else None
    config = obj.get("config") if layout.name == "mocobench" else None
    recipe = {k: config.get(k) for k in RECIPE_KEYS} if isinstance(config, dict) else None
    if recipe is not None and isinstance(obj.get("bn_groups"), dict):  # the splits used, when left to the default
        recipe["bn_splits"] = obj["bn_groups"].get("splits_per_process", recipe["bn_splits"])
    normalize = (zoo.normalize if zoo else None) or (
        layout.small_normalize if stem != "standard" and layout.small_normalize else layout.normalize)
    info = BackboneInfo(str(source), layout.name, found_arch, zoo.method if zoo else method, epoch,
                        file_sha256(path), recipe, where.prefix, where.container, where.part or "", len(sd),
                        dict(sorted(found.dropped.items())), stem, normalize, zoo.name if zoo else None)
    logger.info("read %s: layout %s, backbone under %r%s%s, %d tensors loaded (%s, %s stem), dropped %s; inputs: %s",
                source, layout.name, where.prefix, f" of {where.container}" if where.container else "",
                f", part {where.part}" if where.part else "", len(sd), found_arch, stem,
                ", ".join(f"{k} ({n})" for k, n in info.dropped.items()) or "nothing", normalize)
    return model, info
