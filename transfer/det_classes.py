"""Detection data restricted to a few classes: the ``keep_classes`` option of the detection tasks.

Writes filtered copies of the annotation files into a folder of the run; the images are linked, not copied.

- COCO (``annotations/instances_{train,val}2017.json``): the other categories and their annotations are
  dropped; every image stays listed. An image left without boxes is background: detectron2 leaves such
  images out of training batches (``DATALOADER.FILTER_EMPTY_ANNOTATIONS``, on by default) and evaluates on
  all of them, so detections on them count as false positives.
- VOC (a devkit with ``VOC2007`` [``VOC2012``]): the other classes' ``<object>`` elements are removed from
  each XML; ``labels.txt`` lists the kept classes in the order given (``voc_classes`` reads it).

This is not a published protocol: it is for small sets such as ``coco-mini`` (160 training images over 80
categories, most with a handful of boxes), where a detector of the few frequent classes can learn on a CPU
budget. No detectron2 here, so the filtering is tested on its own.
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from mocobench.atomic import atomic_write
from mocobench.datasets import DataError

COCO_SPLITS = ("train2017", "val2017")


def _unknown(names: Sequence[str], known: Sequence[str], where: Path) -> None:
    missing = [n for n in names if n not in known]
    if missing:
        raise DataError(f"keep_classes: {missing} are not classes of {where} (its classes: {', '.join(known)})")
    if len(set(names)) != len(names):
        raise DataError(f"keep_classes lists a class twice: {list(names)}")


def _link(src: Path, dst: Path) -> None:
    """``dst`` becomes a symbolic link to ``src`` (absolute), replacing an earlier link."""
    if dst.is_symlink() or dst.exists():
        if dst.is_symlink() and Path(os.readlink(dst)) == src.resolve():
            return
        dst.unlink()
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.symlink_to(src.resolve(), target_is_directory=src.is_dir())


def coco_subset(coco: Path, out: Path, names: Sequence[str]) -> Path:
    """Write ``out/annotations/instances_{train,val}2017.json`` with only the categories ``names`` and link
    ``out/{train,val}2017`` to the images; returns ``out``, a COCO folder for ``register_data``."""
    for split in COCO_SPLITS:
        src = coco / "annotations" / f"instances_{split}.json"
        if not src.is_file():
            raise DataError(f"COCO annotation file {src} does not exist")
        data = json.loads(src.read_text())
        known = [c["name"] for c in data.get("categories", [])]
        _unknown(names, known, src)
        keep = {c["id"] for c in data["categories"] if c["name"] in names}
        data["categories"] = [c for c in data["categories"] if c["id"] in keep]
        data["annotations"] = [a for a in data.get("annotations", []) if a.get("category_id") in keep]
        text = json.dumps(data).encode()
        atomic_write(out / "annotations" / f"instances_{split}.json", lambda f, t=text: f.write(t))
        _link(coco / split, out / split)
    return out


def voc_subset(devkit: Path, years: Sequence[int], out: Path, names: Sequence[str], classes: Sequence[str]) -> Path:
    """A devkit under ``out`` whose XMLs keep only the objects of ``names`` (among the set's ``classes``), with
    ``JPEGImages`` and ``ImageSets`` linked and ``labels.txt`` = ``names``; returns ``out``."""
    _unknown(names, classes, devkit)
    for year in years:
        src = devkit / f"VOC{year}"
        dst = out / f"VOC{year}"
        for sub in ("JPEGImages", "ImageSets"):
            _link(src / sub, dst / sub)
        (dst / "Annotations").mkdir(parents=True, exist_ok=True)
        for xml in sorted((src / "Annotations").glob("*.xml")):
            try:
                tree = ET.parse(xml)
            except ET.ParseError as e:
                raise DataError(f"{xml}: cannot read this VOC annotation ({e})") from e
            root = tree.getroot()
            for obj in root.findall("object"):
                if (obj.findtext("name") or "").strip() not in names:
                    root.remove(obj)
            tree.write(dst / "Annotations" / xml.name)
    (out / "labels.txt").write_text("".join(f"{n}\n" for n in names))
    return out
