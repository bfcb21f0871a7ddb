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
#: ``weights_only`` reader: DINO's ``args`` (an argparse.Namespace only holds attributes).
SAFE_GLOBALS = [argparse.Namespace]
#: The only globals a detectron2 pickle may name: numpy's array and scalar rebuilders, dtypes, an ordered
#: dict and the bytes codec. Anything else (os.system, a model class, ...) is refused before it is called.
_PICKLE_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("collections", "OrderedDict"),
    ("_codecs", "encode"),  # how a protocol-2 pickle written by Python 3 spells bytes (array data)
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
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            ImportError, MemoryError, UnicodeDecodeError) as e:
        raise CheckpointError(f"checkpoint {path} is neither a torch file nor a safe pickle of arrays "
                              f"(truncated, or not a checkpoint?): {type(e).__name__}: {e}") from e
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(obj).__name__}, expected a dict")

    def check(x: Any, where: str) -> None:
        if isinstance(x, np.ndarray) and x.dtype == object:
            raise CheckpointError(f"checkpoint {path}: {where} is an array of Python objects; refused")
        items = x.items() if isinstance(x, dict) else enumerate(x) if isinstance(x, (list, tuple)) else ()
        for k, v in items:
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
    if head[:4] == b"PK\x03\x04" or legacy:
        obj = _torch_load(path)
    else:  # any other pickle (protocol 0-5, Python 2 ones included) goes through the restricted reader
        obj = read_restricted_pickle(path)
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(obj).__name__}, expected a dict")
    return obj


#: Globals a weights file never needs and a malicious pickle uses to run code: a file asking for one is refused
#: without the advice to extract its weights (loading it fully would run that code).
_CODE_RUNNING_MODULES = frozenset({"os", "posix", "nt", "subprocess", "builtins", "__builtin__", "sys", "shutil",
                                   "socket", "importlib", "runpy", "pty", "code", "pickle", "marshal", "ctypes",
                                   "webbrowser", "commands", "operator", "functools", "types"})


def _torch_load(path: Path) -> Any:
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        if found and found.group(1).split(".")[0] in _CODE_RUNNING_MODULES:
            raise CheckpointError(
                f"checkpoint {path} refused: it asks for {found.group(1)}, which runs code when the file is loaded; "
                "nothing in it was run. mocobench loads only tensors and plain containers. Do not open this file "
                "with torch.load(weights_only=False).") from None
        if found:
            raise CheckpointError(
                f"checkpoint {path} needs full unpickling (it holds a Python object, {found.group(1)}); mocobench "
                "never unpickles untrusted objects. If you trust the file, save its weights alone, under the key "
                f"that holds them: python -c \"import torch; c = torch.load('{path}', weights_only=False); "
                f"torch.save({{'state_dict': c['state_dict']}}, '{path.stem}.weights.pth')\" (VICReg's and Barlow "
                "Twins' full files: 'model' for both keys)") from e
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
    """Remove leading DDP/compile prefixes (``module.``, ``_orig_mod.``) from every key, and the
    ``_orig_mod.`` that ``torch.compile`` puts inside the name of a compiled submodule."""
    out = {}
    for k, v in state_dict.items():
        changed = True
        while changed:
            changed = False
            for p in WRAPPER_PREFIXES:
                if k.startswith(p):
                    k, changed = k[len(p) :], True
        out[k.replace("._orig_mod.", ".")] = v
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


def _known(key: str, known: tuple[str, ...]) -> str | None:
    """The part of ``known`` that ``key`` belongs to (``projector`` for ``projector.0.weight``), or None."""
    hit = next((k for k in known if (key.startswith(k) if k.endswith(".") else key == k)), None)
    return hit.rstrip(".") if hit else None


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
        elif part := _known(key, layout.known):
            dropped[part] = dropped.get(part, 0) + 1
        else:
            unknown.append(key)
    if layout.needs_known and not any(k != where.prefix + "fc" for k in dropped):
        return None  # its structure alone is another layout's (a flat ResNet): claim only files with its parts
    return backbone, unknown, dropped


def _siblings(obj: dict, container: str) -> dict[str, int]:
    """Tensors beside the container that were not read (DINO's student beside its teacher, VISSL's heads
    beside the trunk): {dotted path: number of tensors}, counting only dicts of tensors (not optimizer states)."""
    out: dict[str, int] = {}
    node, path = obj, []
    for part in filter(None, container.split(".")):
        for key, value in node.items():
            if key == part:
                continue
            if isinstance(value, (torch.Tensor, np.ndarray)):
                out[".".join([*path, str(key)])] = 1
            elif isinstance(value, dict) and value and all(isinstance(v, (torch.Tensor, np.ndarray))
                                                            for v in value.values()):
                out[".".join([*path, str(key)])] = len(value)
        node, path = node[part], [*path, part]
    return out


def _wheres(layout: Layout, part: str | None) -> tuple[Where, ...]:
    if part is None:
        default = layout.where[0].part
        return tuple(w for w in layout.where if w.part == default)
    if part not in layout.parts:
        raise CheckpointError(f"--part {part}: layout {layout.name} has "
                              + (f"parts {', '.join(layout.parts)}" if layout.parts else "one backbone, no parts"))
    return tuple(w for w in layout.where if w.part == part)


def _refuse_ties(tied: list[tuple], backbone: dict[str, torch.Tensor], source: str) -> None:
    """Layouts that explain a file equally well must read it the same way (stem, input normalisation); when
    they would not, the reader does not pick one by table order: ``--format`` must name it."""
    small = tuple(backbone["conv1.weight"].shape[-2:]) == (3, 3)

    def reading(layout: Layout) -> tuple:
        normalize = layout.small_normalize if small and layout.small_normalize else layout.normalize
        return (layout.stem if small else "standard", normalize)

    readings = {e[3].name: reading(e[3]) for e in tied}
    if len(set(readings.values())) > 1:
        shown = ", ".join(f"{name} (stem {st}, inputs {norm})" for name, (st, norm) in readings.items())
        raise CheckpointError(f"checkpoint {source} fits several layouts that would read it differently: {shown}; "
                              f"name the one that wrote it with --format")


def resolve_layout(obj: dict, options: LoadOptions = LoadOptions(), source: str = "checkpoint") -> Resolved:
    """Find the backbone of a loaded checkpoint (see the module docstring). Tries every layout (or the forced
    one) and keeps those whose every key is a backbone key or a known part; of these, the one that explains
    the most keys by its known parts, then the first in :data:`LAYOUTS`. A structure that no layout explains
    fully is an error naming the keys that are in the way, and the layout it was closest to."""
    if options.prefix is not None:
        if options.format is not None or options.part is not None:
            raise CheckpointError("--prefix reads a ResNet under a key prefix of any layout; it does not combine "
                                  "with --format or --part")
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
        clean.sort(key=lambda e: e[:3])
        *_, layout, where, backbone, _, dropped = clean[0]
        _refuse_ties([e for e in clean if e[:2] == clean[0][:2]], backbone, source)
        sd = _container(obj, where.container) or {}
        for prefix, message in layout.caveats:
            if options.part is None and any(k.startswith(prefix) for k in sd):
                logger.warning("%s: %s", source, message)
        if layout.name == "torchvision" and where.container:
            logger.info("%s: a SimCLR conversion (tonylins/simclr-converter) has this structure and takes inputs "
                        "without mean/std; if it is one, read it with --format simclr_converted", source)
        return Resolved(layout, where, backbone, {**dropped, **_siblings(obj, where.container)})
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


#: The top-level modules of a torchvision ResNet: a key under the backbone prefix that starts with one of
#: them but is no ResNet key (an SE block, an attention layer) changes the network, and is never dropped.
_RESNET_MODULES = ("conv1.", "bn1.", "layer1.", "layer2.", "layer3.", "layer4.")


def _resolve_prefix(obj: dict, options: LoadOptions, source: str) -> Resolved:
    """``--prefix``: the ResNet under ``options.prefix`` in the first container that has one. Other parts of
    that container are dropped (and listed); a key inside the ResNet's own modules that is not a ResNet key is
    an error."""
    layout = Layout("prefix", "unknown", f"--prefix {options.prefix}", ())
    for container in PREFIX_CONTAINERS:
        where = Where(container, options.prefix)
        found = _match(obj, layout, where)
        if found is None:
            continue
        backbone, unknown, dropped = found
        inside = [k for k in unknown if k.startswith(options.prefix) and k[len(options.prefix):].startswith(_RESNET_MODULES)]
        if inside:
            raise CheckpointError(f"checkpoint {source}: {len(inside)} keys inside the ResNet under '{options.prefix}' "
                                  f"are not torchvision ResNet keys (another architecture?): {sorted(inside)[:20]}")
        for key in unknown:
            dropped[_part_of(key)] = dropped.get(_part_of(key), 0) + 1
        return Resolved(layout, where, backbone, {**dropped, **_siblings(obj, where.container)})
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


def set_stem(model: nn.Module, stem: str = "standard") -> nn.Module:
    """``model`` (a torchvision ResNet) with stem ``stem``: ``standard`` keeps the 7x7/2 conv1 and max-pool
    (:func:`fast_maxpool`); ``small`` / ``small_pad2`` (:data:`~mocobench.layouts.STEMS`) puts a 3x3 stride-1
    conv1 and no pool in their place (CIFAR-size images: the MoCo CIFAR demo, solo-learn, lightly). Returns it."""
    if stem == "standard":
        return fast_maxpool(model)
    model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=STEMS[stem], bias=False)
    model.maxpool = nn.Identity()
    return model


def build_resnet(arch: str, stem: str = "standard") -> nn.Module:
    """A torchvision ResNet with stem ``stem`` (:func:`set_stem`)."""
    return set_stem(getattr(torchvision.models, arch)(), stem)


class Renormalize:
    """Forward pre-hook: maps the tasks' ImageNet-normalised input to the normalisation a backbone was
    trained with, ``(x * std_in + mean_in - mean) / std``. Shape: (N, 3, H, W) -> same."""

    def __init__(self, normalize: str) -> None:
        (m0, s0), (m1, s1) = NORMALIZATIONS["imagenet"], NORMALIZATIONS[normalize]
        self.scale = torch.tensor([a / b for a, b in zip(s0, s1, strict=True)]).view(1, 3, 1, 1)
        self.shift = torch.tensor([(a - b) / c for a, b, c in zip(m0, m1, s1, strict=True)]).view(1, 3, 1, 1)

    def __call__(self, module: nn.Module, args: tuple) -> tuple:
        x = args[0]
        if self.scale.device != x.device:
            self.scale, self.shift = self.scale.to(x.device), self.shift.to(x.device)
        # in float32: a bfloat16 product would round swav's 1.0044 to 1
        return ((x.float() * self.scale + self.shift).to(x.dtype), *args[1:])


def set_input_normalization(model: nn.Module, normalize: str) -> nn.Module:
    """Make a ResNet take the tasks' ImageNet-normalised images whatever normalisation its checkpoint
    expects (:data:`~mocobench.layouts.NORMALIZATIONS`): a pre-hook on ``conv1``, so every path through the
    network (``forward``, :func:`mocobench.evaluators.features.resnet_features`) sees it, and conv1's zero
    padding lies in the checkpoint's own input space. Returns ``model``."""
    if normalize not in NORMALIZATIONS:
        raise CheckpointError(f"normalize={normalize}: expected one of {', '.join(NORMALIZATIONS)}")
    if normalize != "imagenet":
        model.conv1.register_forward_pre_hook(Renormalize(normalize))
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
               "queue_size", "moco_m", "moco_t", "mlp", "aug", "bn_splits", "seed", "amp", "aug_backend",
               "aug_device")


def load_projection_head(source: str | Path, options: LoadOptions | None = None) -> nn.Module:
    """The contrastive projection head saved with a pretraining checkpoint, for scoring its output.

    MoCo v1 / InstDisc: ``fc`` = Linear(D, 128); MoCo v2: ``fc.0`` Linear(D, D), ReLU, ``fc.2``
    Linear(D, 128) (the official key names). Only checkpoints of a contrastive method hold one: a
    supervised checkpoint's ``fc`` is its classifier, and torchvision files and ``random`` hold no
    head; each is an error naming what is missing. Shape: (N, D) -> (N, dim).
    """
    if str(source) == "random":
        raise CheckpointError("a 'random' backbone has no trained projection head (features=head needs a "
                              "contrastive pretraining checkpoint)")
    _, path, options = _open(source, options or LoadOptions())
    obj = read_checkpoint(path)
    found = resolve_layout(obj, options, str(path))
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


def _stem(sd: dict[str, torch.Tensor], layout: Layout, options: LoadOptions, source: str,
          recorded: str | None = None) -> str:
    """standard (7x7 conv1) or the named small-image stem of a 3x3 conv1; never guessed: from ``--stem``, the
    stem the file records (``mocobench pretrain --stem``) or the layout's."""
    if recorded and options.stem and options.stem != recorded:
        raise CheckpointError(f"--stem {options.stem}: checkpoint {source} records the stem it was trained with, "
                              f"{recorded}")
    asked = options.stem or recorded
    kernel = tuple(sd["conv1.weight"].shape[-2:])
    if kernel == (7, 7):
        if asked not in (None, "standard"):
            raise CheckpointError(f"--stem {asked}: checkpoint {source} has a standard 7x7 conv1")
        return "standard"
    if kernel != (3, 3):
        raise CheckpointError(f"checkpoint {source}: conv1 is {kernel[0]}x{kernel[1]}; a ResNet stem is 7x7 (or 3x3 "
                              "for small images)")
    stem = asked or layout.stem
    if not stem or stem == "standard":
        raise CheckpointError(
            f"checkpoint {source} has a small-image stem (3x3 conv1) whose padding the {layout.name} layout does not "
            f"name; pass --stem {' or --stem '.join(STEMS)} (conv1 padding {' or '.join(map(str, STEMS.values()))}, "
            "stride 1, no max-pool), as the code that trained it built it")
    if stem not in STEMS:
        raise CheckpointError(f"--stem {stem}: expected standard or one of {', '.join(STEMS)}")
    return stem


def _method(obj: dict, layout: Layout, where: Where, backbone_fc: bool) -> str:
    if layout.method == FROM_FILE:
        return str(obj.get("method") or "unknown")
    if layout.method == FROM_HEAD:  # a bare ResNet state dict with its classifier: supervised weights (a
        # linear-probe checkpoint, e.g. MoCo's main_lincls.py, keeps {state_dict, best_acc1}: not this)
        return "supervised" if backbone_fc and not where.container else "unknown"
    return layout.method


def _open(source: str | Path, options: LoadOptions) -> tuple[Any, Path, LoadOptions]:
    """(catalogue entry or None, local path, load options) of a path or ``zoo:NAME``."""
    if str(source).startswith("zoo:"):
        from mocobench.zoo import resolve  # lazy: the catalogue imports this module

        return resolve(str(source)[4:], options)
    return None, Path(source), options


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
    zoo, path, options = _open(source, options)
    obj = read_checkpoint(path)
    found = resolve_layout(obj, options, str(path))
    layout, where, sd = found.layout, found.where, found.state_dict
    found_arch = infer_resnet_arch(sd)
    if isinstance(obj.get("arch"), str) and obj["arch"] != found_arch and obj["arch"] in _RESNET_LAYOUTS.values():
        raise CheckpointError(f"checkpoint {path} says arch {obj['arch']} but its keys are a {found_arch}")
    if arch is not None and arch != found_arch:
        raise CheckpointError(f"checkpoint {path} holds a {found_arch}, but {arch} was asked for")
    config = obj.get("config") if layout.name == "mocobench" else None
    stem = _stem(sd, layout, options, str(path), config.get("stem") if isinstance(config, dict) else None)
    model = build_resnet(found_arch, stem)
    shapes = model.state_dict()
    mismatched = [f"{k} {tuple(v.shape)} (a {found_arch} has {tuple(shapes[k].shape)})" for k, v in sd.items()
                  if k in shapes and v.shape != shapes[k].shape]
    if mismatched:
        raise CheckpointError(f"checkpoint {path} has the key names of a {found_arch} but other shapes (a widened "
                              f"ResNet, e.g. SimCLR 2x/4x, is not a torchvision architecture): {mismatched[:5]}")
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if set(missing) != {"fc.weight", "fc.bias"} or unexpected:
        raise CheckpointError(
            f"checkpoint {path} does not match {found_arch}: missing keys {sorted(set(missing) - {'fc.weight', 'fc.bias'})}, "
            f"unexpected keys {sorted(unexpected)}"
        )
    model.fc = nn.Identity()
    method = _method(obj, layout, where, where.prefix + "fc" in found.dropped)
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
