"""Where the input pipeline's time goes at 224 px on one CPU core (issue 18, first measurement).

For N real JPEGs (imagenette-sub: 224x224 ImageNet crops; full ImageNet images average ~400x350 px, so their
decode costs about 2-3x more), one thread, one process, each stage timed alone over the same files, median of
``--repeats`` passes; images/s per core, and the ratio to the decode-only bound (reading + decoding is work every
pipeline must do per file; everything else is what a device-side pipeline could move off the CPU):

* read: the file's bytes;
* decode: PIL ``Image.open(...).convert("RGB")`` (what the loaders do) and torchvision's ``decode_jpeg`` on the CPU;
* crop: ``RandomResizedCrop(224, scale=(0.2, 1))`` (bilinear) on the decoded PIL image, x2 views;
* photometric, PIL: MoCo v2's per-view ops after the crop (ColorJitter p 0.8, grayscale p 0.2, blur p 0.5, flip,
  ToTensor, Normalize), x2 views;
* photometric, tensor backend: ``BatchAugment`` on the batch of uint8 crops (the same ops batched), per image;
* collate: stacking two (B, 3, 224, 224) float batches;
* end to end: PIL (``TwoCrops(moco_transform("v2", 224))`` + collate) and the tensor backend (``TensorViews`` +
  ``CollateViews``), the way the loaders run them, per image;
* ``--aug-device`` (:mod:`mocobench.device_views`): its loader half (read the file, parse the header, draw both
  views' parameters, collate: what each worker does) and its device half run on this CPU (``decode_jpeg`` of the
  batch, crop + resize, the batched photometric ops): on a GPU the second half leaves the CPU.

    python benchmarks/input_stages.py --data ../shared/data/imagenette-sub/train --images 256
Writes ``benchmarks/results/input_stages_cpu.{json,md}``.
"""

from __future__ import annotations

import io
import json
import logging
import statistics
import sys
import time
from pathlib import Path

import click
import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.io import decode_jpeg

from mocobench.augment import TwoCrops, moco_transform
from mocobench.batch_augment import BatchAugment, CollateViews, TensorViews
from mocobench.datasets import read_encoded
from mocobench.device_views import CollateFiles, DeviceViews, FileViews
from mocobench.log import setup_logging

logger = logging.getLogger("bench")
RESULTS = Path(__file__).parent / "results"


def _timed(fn, repeats: int) -> float:
    """Median seconds of ``fn()`` over ``repeats`` passes (after one warm-up pass)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


@click.command()
@click.option("--data", default="../shared/data/imagenette-sub/train", show_default=True)
@click.option("--images", default=256, show_default=True, type=click.IntRange(min=8))
@click.option("--batch", default=64, show_default=True, type=click.IntRange(min=1))
@click.option("--repeats", default=3, show_default=True, type=click.IntRange(min=1))
def main(data: str, images: int, batch: int, repeats: int) -> None:
    setup_logging()
    torch.set_num_threads(1)
    files = sorted(p for p in Path(data).rglob("*") if p.suffix.lower() in (".jpeg", ".jpg"))[:images]
    raw = [f.read_bytes() for f in files]
    pil = [Image.open(io.BytesIO(b)).convert("RGB") for b in raw]
    tf = moco_transform("v2", 224)
    crop, photometric = tf.transforms[0], T.Compose(tf.transforms[1:])
    crops = [crop(im) for im in pil for _ in range(2)]
    tensor_views = TensorViews("v2", 224)
    drawn = [tensor_views(im) for im in pil]  # (crops uint8 (2, 3, S, S), params (2, P)) per image
    augment = BatchAugment(moco_transform("v2", 224).transforms)
    torch.manual_seed(0)

    def batches(seq):
        return [seq[i : i + batch] for i in range(0, len(seq), batch)]

    def photometric_tensor():
        for chunk in batches(drawn):
            augment(torch.cat([c for c, _ in chunk]), torch.cat([p for _, p in chunk]))

    views = [torch.randn(3, 224, 224) for _ in range(2 * batch)]
    two_crops = TwoCrops(tf)
    collate_views = CollateViews("v2", 224)

    def end_to_end_pil():
        for chunk in batches(raw):
            out = [two_crops(Image.open(io.BytesIO(b)).convert("RGB")) for b in chunk]
            [torch.stack([o[v] for o in out]) for v in range(2)]

    def end_to_end_tensor():
        for chunk in batches(raw):
            collate_views([(tensor_views(Image.open(io.BytesIO(b)).convert("RGB")), 0) for b in chunk])

    ops = moco_transform("v2", 224).transforms
    file_views, collate_files, device_views = FileViews(ops), CollateFiles(), DeviceViews(ops, torch.device("cpu"))

    def loader_half():
        return [collate_files([(file_views(read_encoded(f)), 0) for f in chunk]) for chunk in batches(files)]

    file_batches = loader_half()

    def device_half():
        for b in file_batches:
            device_views(b)

    def end_to_end_device():
        for b in loader_half():
            device_views(b)

    stages = {
        "read": lambda: [f.read_bytes() for f in files],
        "decode (PIL)": lambda: [Image.open(io.BytesIO(b)).convert("RGB") for b in raw],
        "decode (torchvision decode_jpeg, CPU)": lambda: [
            decode_jpeg(torch.frombuffer(bytearray(b), dtype=torch.uint8)) for b in raw],
        "random resized crop, 2 views (PIL)": lambda: [crop(im) for im in pil for _ in range(2)],
        "photometric + to tensor + normalise, 2 views (PIL)": lambda: [photometric(c) for c in crops],
        "photometric + normalise, 2 views (tensor backend, batched)": photometric_tensor,
        "collate (stack 2 views)": lambda: [torch.stack(views[:batch]) for _ in range(len(raw) // batch)],
        "end to end, PIL backend": end_to_end_pil,
        "end to end, tensor backend": end_to_end_tensor,
        "--aug-device: loader half (read + header + draws + collate, 2 views)": loader_half,
        "--aug-device: device half on this CPU (decode_jpeg + crop/resize + photometric, batched)": device_half,
        "end to end, --aug-device cpu": end_to_end_device,
    }
    rows = {}
    for name, fn in stages.items():
        seconds = _timed(fn, repeats)
        rows[name] = {"images_per_s_per_core": round(len(raw) / seconds, 1), "ms_per_image": round(1e3 * seconds / len(raw), 3)}
    bound = rows["read"]["ms_per_image"] + rows["decode (PIL)"]["ms_per_image"]
    for row in rows.values():
        row["share_of_decode_bound"] = round(row["ms_per_image"] / bound, 2)
    res = {"command": " ".join(["python", *sys.argv]), "images": len(raw), "source_size": list(pil[0].size),
           "batch": batch, "repeats": repeats, "threads": torch.get_num_threads(), "torch": str(torch.__version__),
           "decode_bound_ms_per_image": round(bound, 3), "stages": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "input_stages_cpu.json").write_text(json.dumps(res, indent=2) + "\n")
    md = ["| stage (224 px, one core) | images/s per core | ms per image | x read+decode (PIL) |", "|---|---|---|---|"]
    md += [f"| {name} | {r['images_per_s_per_core']:.0f} | {r['ms_per_image']:.2f} | {r['share_of_decode_bound']:.2f} |"
           for name, r in rows.items()]
    (RESULTS / "input_stages_cpu.md").write_text("\n".join(md) + "\n")
    logger.info("results:\n%s", "\n".join(md))


if __name__ == "__main__":
    main()
