"""``mocobench zoo``: the published ResNet checkpoints people compare against, as data.

Each :class:`ZooEntry` gives the download URL, the layout the one reader reads it with, the
architecture, the checksum where one is published, the licence and the published numbers it should
reproduce, each with its source. ``mocobench zoo fetch NAME --root DIR`` downloads an entry with the
resumable downloader of :mod:`mocobench.fetch`. Where no checksum is published, the first download's
SHA-256 is pinned in ``<root>/zoo.lock.json`` and reported as unverified; later downloads must match it.
``zoo:NAME`` is accepted wherever a checkpoint is (``transfer``, ``suite``, ``convert``): the file is
looked for under ``$MOCOBENCH_ZOO`` (default ``~/.cache/mocobench/zoo``) and fetched there if missing.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path

from mocobench.atomic import atomic_write_text
from mocobench.checkpoint import CheckpointError, LoadOptions
from mocobench.fetch import FetchError, digest, download
from mocobench.layouts import BY_NAME

logger = logging.getLogger(__name__)

LOCK_FILE = "zoo.lock.json"


@dataclass(frozen=True)
class Published:
    """A published number: ``value`` of ``metric`` on ``task`` (a mocobench task and metric name), and where
    it was published."""

    task: str
    metric: str
    value: float
    source: str


@dataclass(frozen=True)
class ZooEntry:
    """One published checkpoint. ``checksum``: ``sha256:HEX`` (HEX may be the 8-digit prefix torchvision's
    file names carry) or ``md5:HEX``, None where none is published. ``part``: the backbone the reader takes
    from a file holding several (DINO's teacher)."""

    name: str
    url: str
    layout: str
    arch: str
    method: str
    epochs: int | None
    licence: str
    checksum: str | None
    published: tuple[Published, ...] = ()
    normalize: str | None = None
    part: str | None = None
    notes: str = ""

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


_MOCO = "facebookresearch/moco @ 87e36d3"
_FB = "https://dl.fbaipublicfiles.com"
_CC = "CC-BY-NC 4.0"


def _linear(value: float, source: str) -> Published:
    """ImageNet linear top-1 (mocobench's linear task, headline top1_best)."""
    return Published("linear", "top1_best", value, source)


def _voc(value: float, source: str) -> Published:
    """Pascal VOC07+12 Faster R-CNN R50-C4 AP50 (mocobench's voc_det task)."""
    return Published("voc_det", "bbox_AP50", value, source)


#: MoCo v1 IN-1M semantic segmentation, He et al. 2020 (arXiv 1911.05722) Table 6, mean of 5 trials (the table is
#: an image in the paper's transcriptions; the figures agree with its text and with ../shared/docs/protocols.md).
_MOCO_V1_SEG = (Published("voc_seg", "mIoU", 72.5, "He et al. 2020 Table 6, MoCo IN-1M (mean of 5 trials)"),
                Published("cityscapes_seg", "mIoU", 75.3, "He et al. 2020 Table 6, MoCo IN-1M (mean of 5 trials)"))


def _moco(version: str, epochs: int, md5: str, linear: float, ap50: float, linear_note: str = "",
          extra: tuple[Published, ...] = ()) -> ZooEntry:
    name = f"moco_{version}_{epochs}ep"
    return ZooEntry(
        name, f"{_FB}/moco/moco_checkpoints/{name}/{name}_pretrain.pth.tar", "moco_official", "resnet50",
        f"moco_{version}", epochs, _CC, f"md5:{md5}",
        (_linear(linear, f"{_MOCO} README, Models table (this file){linear_note}"),
         _voc(ap50, f"{_MOCO} detection/README.md, Results (mean of 5 trials)"), *extra))


_SWAV = "facebookresearch/swav @ 06b1b7c README, Model Zoo (its eval_linear.py protocol)"
_V3 = "facebookresearch/moco-v3 @ c349e6e CONFIG.md, ResNet-50 models (its main_lincls.py protocol: SGD, batch 1024)"
#: The catalogue. Numbers are the ones each repository publishes for the file itself; a linear number
#: measured with a framework's own linear protocol says so in its source (mocobench runs MoCo's).
CATALOGUE: tuple[ZooEntry, ...] = (
    _moco("v1", 200, "b251726a", 60.6, 81.5, extra=_MOCO_V1_SEG),
    _moco("v2", 200, "59fd9945", 67.7, 82.4, "; 67.5 is the mean of 5 linear runs, the paper's figure"),
    _moco("v2", 800, "a04e12f8", 71.1, 82.5),
    ZooEntry("torchvision_r50", "https://download.pytorch.org/models/resnet50-0676ba61.pth", "torchvision",
             "resnet50", "supervised", 90, "BSD-3-Clause (code); the weights follow ImageNet's terms",
             "sha256:0676ba61", (),
             notes="ResNet50_Weights.IMAGENET1K_V1 (torchvision 0.29.1 models/resnet.py): 76.130 top-1 trained end to "
                   "end, not a linear probe. MoCo's supervised VOC figure (81.3 AP50) is of MSRA's caffe2 R-50, "
                   "not of these weights, so no VOC number is given."),
    *(ZooEntry(f"moco_v3_r50_{n}ep", f"{_FB}/moco-v3/r-50-{n}ep/r-50-{n}ep.pth.tar", "moco_v3", "resnet50",
               "moco_v3", n, _CC, None, (_linear(acc, _V3),)) for n, acc in ((100, 68.9), (300, 72.8), (1000, 74.6))),
    ZooEntry("dino_r50", f"{_FB}/dino/dino_resnet50_pretrain/dino_resnet50_pretrain.pth", "torchvision", "resnet50",
             "dino", None, "Apache-2.0", None,
             (_linear(75.3, "facebookresearch/dino @ 7c446df README, Pretrained models (its eval_linear.py)"),),
             notes="the teacher's backbone alone (hubconf dino_resnet50)"),
    ZooEntry("dino_r50_full", f"{_FB}/dino/dino_resnet50_pretrain/dino_resnet50_pretrain_full_checkpoint.pth", "dino",
             "resnet50", "dino", None, "Apache-2.0", None,
             (_linear(75.3, "facebookresearch/dino @ 7c446df README, Pretrained models (its eval_linear.py)"),),
             part="teacher", notes="student and teacher with their heads; --part student reads the student"),
    ZooEntry("swav_800ep", f"{_FB}/deepcluster/swav_800ep_pretrain.pth.tar", "swav", "resnet50", "swav", 800, _CC,
             None, (_linear(75.3, _SWAV),)),
    ZooEntry("deepclusterv2_800ep", f"{_FB}/deepcluster/deepclusterv2_800ep_pretrain.pth.tar", "swav", "resnet50",
             "deepcluster_v2", 800, _CC, None, (_linear(75.2, _SWAV),)),
    ZooEntry("selav2_400ep", f"{_FB}/deepcluster/selav2_400ep_pretrain.pth.tar", "swav", "resnet50", "sela_v2", 400,
             _CC, None, (_linear(71.8, _SWAV),), notes="2x160+4x96 crops"),
    ZooEntry("barlowtwins_r50", f"{_FB}/barlowtwins/ep1000_bs2048_lrw0.2_lrb0.0048_lambd0.0051/resnet50.pth",
             "torchvision", "resnet50", "barlow_twins", 1000, "MIT", None,
             (_linear(73.5, "facebookresearch/barlowtwins @ 8e8d284 README (its evaluate.py)"),),
             notes="the file torch.hub's resnet50 entry fetches; the README now also links ljng/resnet50.pth"),
    ZooEntry("vicreg_r50", f"{_FB}/vicreg/resnet50.pth", "torchvision", "resnet50", "vicreg", 1000, "MIT", None,
             (_linear(73.2, "facebookresearch/vicreg @ 4e12602 README (its evaluate.py)"),)),
)
ENTRIES: dict[str, ZooEntry] = {e.name: e for e in CATALOGUE}


class ZooError(CheckpointError):
    """An unknown entry or a download that cannot be verified; the message names the entry and the file."""


def get_entry(name: str) -> ZooEntry:
    if name not in ENTRIES:
        raise ZooError(f"unknown zoo entry {name!r}; mocobench zoo list shows them ({', '.join(ENTRIES)})")
    return ENTRIES[name]


def zoo_root() -> Path:
    """``$MOCOBENCH_ZOO``, else ``~/.cache/mocobench/zoo``."""
    return Path(os.environ.get("MOCOBENCH_ZOO") or Path.home() / ".cache" / "mocobench" / "zoo")


def _lock(root: Path) -> dict[str, str]:
    path = root / LOCK_FILE
    if not path.exists():
        return {}
    try:
        lock = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ZooError(f"{path} cannot be read ({e}); delete it to pin the checksums again") from e
    if not isinstance(lock, dict):
        raise ZooError(f"{path}: expected a JSON object of file name -> sha256")
    return lock


def entry_path(entry: ZooEntry, root: str | Path) -> Path:
    """Where ``entry`` lives under ``root``: ``<root>/<name>/<file name>`` (several entries publish files of the
    same name, e.g. Barlow Twins' and VICReg's ``resnet50.pth``)."""
    return Path(root) / entry.name / entry.filename


def fetch_entry(entry: ZooEntry, root: str | Path, mirror: str | None = None) -> tuple[Path, str]:
    """Download ``entry`` to :func:`entry_path` (resumable); returns (path, how it was checked). When no
    checksum is published, the file's SHA-256 is pinned in ``root/zoo.lock.json`` (by entry name) on the
    first download, reported as unverified, and later downloads must match it."""
    root = Path(root)
    url = f"{mirror.rstrip('/')}/{entry.filename}" if mirror else entry.url
    dest = entry_path(entry, root)
    lock = _lock(root)
    pinned = lock.get(entry.name)
    checksum = entry.checksum or (f"sha256:{pinned}" if pinned else None)
    try:
        path = download(url, dest, checksum)
    except FetchError as e:
        hint = f" (the sha256 pinned in {root / LOCK_FILE} on the first download)" if pinned else ""
        raise ZooError(f"zoo entry {entry.name}: {e}{hint}") from e
    if entry.checksum:
        return path, f"verified against the published {entry.checksum}"
    if pinned:
        return path, f"matches the sha256 pinned in {root / LOCK_FILE} (no checksum is published)"
    lock[entry.name] = digest(path, "sha256")
    atomic_write_text(root / LOCK_FILE, json.dumps(dict(sorted(lock.items())), indent=2) + "\n")
    logger.warning("%s: no checksum is published; pinned sha256 %s in %s", entry.name, lock[entry.name],
                   root / LOCK_FILE)
    return path, f"UNVERIFIED (no checksum is published); sha256 pinned in {root / LOCK_FILE}"


def resolve(name: str, options: LoadOptions) -> tuple[ZooEntry, Path, LoadOptions]:
    """``zoo:NAME`` -> (entry, local file, load options with the entry's layout and part). The file is
    fetched into :func:`zoo_root` when missing; a ``--prefix`` or ``--format`` that disagrees with the
    entry is an error."""
    entry = get_entry(name)
    if options.prefix is not None or options.format not in (None, entry.layout):
        raise ZooError(f"zoo:{name} is read as layout {entry.layout}; drop --format/--prefix")
    path = entry_path(entry, zoo_root())
    if not path.exists():  # a file in place was verified when it was fetched: not hashed again on every load
        logger.info("zoo:%s is not in %s; fetching %s", name, zoo_root(), entry.url)
        path, _ = fetch_entry(entry, zoo_root())
    return entry, path, replace(options, format=entry.layout, part=options.part or entry.part)


def published_value(zoo: str | None, task: str, metric: str) -> Published | None:
    """The number catalogue entry ``zoo`` publishes for (task, metric), if any."""
    entry = ENTRIES.get(zoo or "")
    return next((p for p in entry.published if (p.task, p.metric) == (task, metric)), None) if entry else None


def describe(entry: ZooEntry) -> str:
    """One catalogue entry as ``mocobench zoo list`` prints it."""
    checksum = entry.checksum or "none published (pinned on first fetch)"
    lines = [f"{entry.name}: {entry.arch} {entry.method}" + (f", {entry.epochs} epochs" if entry.epochs else ""),
             f"    url: {entry.url}", f"    layout: {entry.layout}" + (f" (part {entry.part})" if entry.part else "")
             + f", inputs: {entry.normalize or BY_NAME[entry.layout].normalize}", f"    checksum: {checksum}", f"    licence: {entry.licence}"]
    lines += [f"    published {p.task} {p.metric}: {p.value} ({p.source})" for p in entry.published]
    lines += [f"    note: {entry.notes}"] if entry.notes else []
    return "\n".join(lines)


def catalogue_markdown() -> str:
    """The README's catalogue table, generated from :data:`CATALOGUE` (tests keep the README equal to it)."""
    rows = ["| name | layout | method, epochs | checksum | licence | published (source) |", "|---|---|---|---|---|---|"]
    for e in CATALOGUE:
        pub = "; ".join(f"{p.task} {p.metric} {p.value} ({p.source})" for p in e.published) or "—"
        rows.append(f"| `{e.name}` | {e.layout}{f' ({e.part})' if e.part else ''} | {e.method}"
                    f"{f', {e.epochs}' if e.epochs else ''} | {e.checksum or 'none (pinned)'} | {e.licence} | {pub} |")
    return "\n".join(rows)
