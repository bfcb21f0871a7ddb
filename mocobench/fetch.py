"""``mocobench data fetch NAME --root DIR``: download the public data sets, resumably, with checksums.

Each file is downloaded to ``<root>/<subdir>/<file>.part`` (continued with an HTTP ``Range`` request
after an interruption), checked against its published MD5 (the values torchvision and the COCO
site publish), renamed into place, then extracted. A finished file is not downloaded again; an
extracted archive leaves a ``.<file>.extracted`` marker. The layouts produced are the ones the tasks
read: ``imagenette2/{train,val}``, ``VOCdevkit/VOC2007`` (+ ``VOC2012``), ``coco/{train2017, val2017,
annotations}``, ``flowers-102/`` (``--set dataset=flowers102`` of the finegrained task), and for ``sbd``
``VOCdevkit/VOC2012/SegmentationClassAug`` with ``ImageSets/Segmentation/train_aug.txt`` (``voc_seg``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import requests
from tqdm import tqdm

logger = logging.getLogger(__name__)


class FetchError(RuntimeError):
    """A download that cannot complete or verify; the message names the URL or file."""


@dataclass(frozen=True)
class Resource:
    """One file: where it comes from, its MD5, the folder under ``--root`` it goes to, and whether to extract it."""

    url: str
    md5: str
    subdir: str = ""
    extract: bool = True

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


_VOC = "https://thor.robots.ox.ac.uk/pascal/VOC"
_COCO = "http://images.cocodataset.org"
_FLOWERS = "https://www.robots.ox.ac.uk/~vgg/data/flowers/102"
_SBD = "https://www2.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/semantic_contours/benchmark.tgz"
#: The catalogue (URLs and MD5s as in torchvision.datasets and on cocodataset.org).
DATASETS: dict[str, tuple[Resource, ...]] = {
    "imagenette": (Resource("https://s3.amazonaws.com/fast-ai-imageclas/imagenette2.tgz", "fe2fc210e6bb7c5664d602c3cd71e612"),),
    "imagenette-320": (
        Resource("https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-320.tgz", "3df6f0d01a2c9592104656642f5e78a3"),),
    "voc2007": (Resource(f"{_VOC}/voc2007/VOCtrainval_06-Nov-2007.tar", "c52e279531787c972589f7e41ab4ae64"),
                Resource(f"{_VOC}/voc2007/VOCtest_06-Nov-2007.tar", "b6e924de25625d8de591ea690078ad9f")),
    "voc2012": (Resource(f"{_VOC}/voc2012/VOCtrainval_11-May-2012.tar", "6cd6e144f989b92b3379bac3b3de84fd"),),
    "coco2017": (Resource(f"{_COCO}/annotations/annotations_trainval2017.zip", "f4bbac642086de4f52a3fdda2de5fa2c", "coco"),
                 Resource(f"{_COCO}/zips/val2017.zip", "442b8da7639aecaf257c1dceb8ba8c80", "coco"),
                 Resource(f"{_COCO}/zips/train2017.zip", "cced6f7f71b7629ddf16f17bbcfab6b2", "coco")),
    "flowers102": (Resource(f"{_FLOWERS}/102flowers.tgz", "52808999861908f626f3c1f4e79d11fa", "flowers-102"),
                   Resource(f"{_FLOWERS}/imagelabels.mat", "e0620be6f572b9609742df49c70aed4d", "flowers-102", False),
                   Resource(f"{_FLOWERS}/setid.mat", "a5357ecc9cb78c4bef273ce3793fc85c", "flowers-102", False)),
    # the Semantic Boundaries Dataset (Hariharan et al. 2011), URL and MD5 as torchvision's SBDataset; extracted to
    # sbd/benchmark_RELEASE, then converted into VOC2012's train_aug (needs voc2012 fetched into the same root)
    "sbd": (Resource(_SBD, "82b4d87ceb2ed10f6038a1cba92111cb", "sbd"),),
}


def digest(path: Path, algorithm: str = "md5") -> str:
    """Hex digest of a file (``md5`` or ``sha256``)."""
    h = hashlib.new(algorithm, usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def md5sum(path: Path) -> str:
    return digest(path, "md5")


def matches(path: Path, checksum: str) -> tuple[bool, str]:
    """Whether ``path`` has ``checksum``: ``md5:HEX``, ``sha256:HEX`` or a bare MD5. HEX may be the first 8 or
    more digits only, as torchvision's file names (sha256) and the MoCo README (md5) publish them. Returns
    (match, the digest found)."""
    algorithm, _, expected = checksum.rpartition(":")
    if len(expected) < 8:
        raise FetchError(f"checksum {checksum!r}: give at least 8 hex digits")
    got = digest(path, algorithm or "md5")
    return got.startswith(expected.lower()), got


def download(url: str, dest: Path, md5: str | None, chunk: int = 1 << 16, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` through ``dest.part``, resuming a partial file; verify the checksum
    (``md5`` is a bare MD5 or ``ALGORITHM:HEX``, see :func:`matches`; None: nothing to verify against).

    A complete ``dest`` whose checksum matches is kept as it is. A mismatch deletes the download and raises.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        if md5 is None or matches(dest, md5)[0]:
            logger.info("%s is already complete", dest)
            return dest
        raise FetchError(f"{dest} exists but its checksum is not {md5}; delete it to download it again")
    part = dest.with_name(dest.name + ".part")
    start = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={start}-"} if start else {}
    try:
        with requests.get(url, headers=headers, stream=True, timeout=timeout) as r:
            if r.status_code == 416:  # the partial file already holds every byte
                pass
            elif r.status_code not in (200, 206):
                raise FetchError(f"GET {url} answered HTTP {r.status_code}")
            else:
                if start and r.status_code == 200:
                    logger.warning("%s does not support resuming; downloading %s from the start", url, dest.name)
                    start = 0
                total = int(r.headers.get("Content-Length", 0)) + start or None
                mode = "ab" if start else "wb"
                with open(part, mode) as f, tqdm(total=total, initial=start, unit="B", unit_scale=True,
                                                 desc=dest.name, mininterval=1.0) as bar:
                    for block in r.iter_content(chunk):
                        f.write(block)
                        bar.update(len(block))
    except requests.RequestException as e:
        raise FetchError(f"download of {url} failed ({e}); run the same command again to resume from "
                         f"{part.stat().st_size if part.exists() else 0} bytes") from e
    ok, got = matches(part, md5) if md5 is not None else (True, "")
    if not ok:
        part.unlink()
        raise FetchError(f"{dest.name} from {url}: checksum {got} is not the expected {md5}; the download was deleted")
    os.replace(part, dest)
    return dest


#: The most an archive may unpack to (the largest catalogue archive, COCO train2017, unpacks to 19 GB): a bigger
#: claim, or a decompression bomb, is refused before anything is written.
MAX_UNPACKED_BYTES = 64 * 2**30


def extract(archive: Path, into: Path, max_unpacked: int = MAX_UNPACKED_BYTES) -> None:
    """Extract a .tar/.tgz/.zip once (marker ``.<name>.extracted``); tar members outside ``into`` are refused, and
    so is an archive whose members add up to more than ``max_unpacked`` bytes (checked from the headers first)."""
    marker = into / f".{archive.name}.extracted"
    if marker.exists():
        return
    logger.info("extracting %s into %s", archive, into)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            _check_unpacked(archive, sum(i.file_size for i in z.infolist()), max_unpacked)
            z.extractall(into)
    else:
        with tarfile.open(archive) as t:
            _check_unpacked(archive, sum(m.size for m in t.getmembers()), max_unpacked)
            t.extractall(into, filter="data")
    marker.touch()


def _check_unpacked(archive: Path, total: int, limit: int) -> None:
    if total > limit:
        raise FetchError(f"{archive} would unpack to {total / 2**30:.2f} GiB, more than the limit of "
                         f"{limit / 2**30:.2f} GiB (mocobench.fetch.MAX_UNPACKED_BYTES); nothing was extracted")


def fetch(name: str, root: str | Path, mirror: str | None = None, keep_archives: bool = True) -> Path:
    """Download and extract data set ``name`` under ``root``; ``mirror`` replaces each URL's folder
    (``<mirror>/<file name>``). Returns ``root``."""
    if name not in DATASETS:
        raise FetchError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")
    if name != "sbd":
        return fetch_resources(DATASETS[name], root, mirror, keep_archives)
    from mocobench.datasets import DataError
    from mocobench.segdata import convert_sbd, voc_root

    if voc_root(Path(root), must=False) is None:  # checked before anything is downloaded
        raise FetchError(f"sbd is converted into VOC 2012's train_aug, but {root} holds no VOCdevkit/VOC2012: run "
                         f"`mocobench data fetch voc2012 --root {root}` first")
    fetch_resources(DATASETS[name], root, mirror, keep_archives)
    try:
        convert_sbd(root)
    except DataError as e:
        raise FetchError(str(e)) from e
    return Path(root)


def fetch_resources(resources: tuple[Resource, ...], root: str | Path, mirror: str | None = None,
                    keep_archives: bool = True) -> Path:
    root = Path(root)
    for res in resources:
        url = f"{mirror.rstrip('/')}/{res.filename}" if mirror else res.url
        folder = root / res.subdir
        if res.extract and (folder / f".{res.filename}.extracted").exists():
            logger.info("%s was downloaded and extracted already", res.filename)
            continue
        path = download(url, folder / res.filename, res.md5)
        if res.extract:
            extract(path, folder)
            if not keep_archives:
                path.unlink()
    logger.info("done: %s", root)
    return root
