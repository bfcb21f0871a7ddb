"""Detection tasks (``voc_det``, ``coco_det``, ``coco_instseg``): typed configs and registration.

detectron2 is imported only when a task runs (:mod:`mocobench.transfer.detection`). Protocol:
``../shared/docs/protocols.md`` ("Detection transfer"); the metrics are detectron2's COCO (or Pascal
VOC, 11-point for 2007) AP, AP50 and AP75 in percent, for boxes and, with masks, segments.
"""

from __future__ import annotations

import logging
import statistics
from dataclasses import dataclass
from typing import ClassVar, Literal

from mocobench import dist
from mocobench.convert import torchvision_to_detectron2, write_detectron2
from mocobench.evaluators.registry import TaskContext, TaskError, register
from mocobench.layouts import NORMALIZATIONS
from mocobench.options import Rule, option

logger = logging.getLogger(__name__)
DEPTHS = {"resnet18": 18, "resnet34": 34, "resnet50": 50, "resnet101": 101, "resnet152": 152}



@dataclass
class DetectionConfig:
    """detectron2 fine-tuning of the whole backbone; uppercase ``--set KEY=VALUE`` go to ``opts``."""

    data: str = option("", "COCO folder (annotations/instances_{train,val}2017.json, {train,val}2017/) or VOC devkit "
                       "(VOC2007[, VOC2012]); empty: the $DETECTRON2_DATASETS layout.", exists="dir")
    head: Literal["C4", "FPN"] = option("C4", "C4 with Res5ROIHeadsExtraNorm (the MoCo setup; for ResNet-18/34 a "
                                        "BasicBlock res5), or FPN.")
    schedule: Literal["1x", "2x"] = option(
        "2x", "COCO schedule: 2x (180k iterations, the MoCo paper's COCO rows: official coco_R_50_C4_2x.yaml) or 1x "
        "(90k, ours: shorter, not comparable with the published numbers).")
    train_sets: Literal["07+12", "07", "12"] = option(
        "07+12", "VOC training sets (trainval of each): 07+12 (official pascal_voc_R_50_C4_24k.yaml, the papers' "
        "numbers; VOC2012 missing is an error) or 07 / 12 alone, on purpose. Tested on VOC2007 test.")
    norm: Literal["SyncBN", "naiveSyncBN", "BN"] = option(
        "naiveSyncBN", "Norm of backbone and heads (naiveSyncBN also works with several CPU processes).")
    preset: Literal["", "cpu-smoke", "cpu-crop"] = option(
        "", "cpu-smoke: small images, few ROIs/proposals, 300 iterations (the path runs; real-data detectors stay at "
        "chance). cpu-crop: the same model at 0.6x the image scale via 320 px crops resized to 192, 1000 iterations "
        "(with keep_classes=person the best CPU budget measured on coco-mini: benchmarks/RESULTS.md). Not published "
        "protocols.")
    num_procs: int = option(1, "Processes per machine (one per GPU; gloo CPU processes without CUDA).", min=1)
    num_machines: int = option(1, "Machines.", min=1)
    machine_rank: int = option(0, "Rank of this machine.", min=0)
    dist_url: str = option("auto", "Rendezvous URL for several processes or machines.")
    device: str = option("auto", "auto, cpu or cuda.")
    resume: bool = option(False, "Resume from the last detectron2 checkpoint in the output folder.")
    eval_only: bool = option(False, "Only evaluate (the converted weights, or the last checkpoint with resume).")
    keep_classes: tuple[str, ...] = option(
        (), "Only these classes (names, e.g. person,car): the others' boxes are dropped from training and test and "
        "AP is the mean over these. Not a published protocol: for small sets on a CPU (benchmarks/detection_cpu.py).")
    repeats: int = option(1, "Runs with seeds seed..seed+N-1; metrics are the mean (std in *_std); VOC papers use 5.",
                          min=1)
    opts: tuple[str, ...] = option((), "detectron2 config overrides KEY VALUE ... (from --set KEY.SUB=VALUE).")

    RULES: ClassVar = (Rule(("machine_rank", "num_machines"), lambda c: c.machine_rank < c.num_machines,
                            "machine_rank below num_machines (ranks 0 .. num_machines - 1)"),)


#: Config fields that do not apply to a task (left out of the report's protocol table and config hash).
UNUSED_FIELDS = {"voc_det": ("schedule",), "coco_det": ("train_sets",), "coco_instseg": ("train_sets",)}


def _config_file(task: str, cfg: DetectionConfig) -> str:
    if task == "voc_det":
        return f"voc_R_50_{cfg.head}_24k_moco.yaml"
    return f"coco_R_50_{cfg.head}_{cfg.schedule}_moco.yaml"


def pixel_stats(normalize: str) -> list[str]:
    """detectron2 ``MODEL.PIXEL_MEAN/STD`` (RGB, 0-255 scale) of an input normalisation other than the
    shipped configs' ImageNet one (``mocobench.layouts.NORMALIZATIONS``), as opts."""
    if normalize == "imagenet":
        return []
    mean, std = NORMALIZATIONS[normalize]
    return ["MODEL.PIXEL_MEAN", str([round(255 * m, 4) for m in mean]), "MODEL.PIXEL_STD",
            str([round(255 * s, 4) for s in std])]


def run_detection(task: str, cfg: DetectionConfig, ctx: TaskContext) -> dict[str, float]:
    from mocobench.transfer import detection as det  # detectron2 from here on

    if ctx.info.stem != "standard":
        raise TaskError(f"the checkpoint's ResNet has a small-image stem ({ctx.info.stem}: 3x3 stride-1 conv1, no "
                        "max-pool); detectron2's ResNet stem is 7x7 stride 2 with a max-pool, so detection cannot use it")
    depth = DEPTHS.get(ctx.info.arch)
    if depth is None:
        raise TaskError(f"detection needs a ResNet backbone; the checkpoint holds {ctx.info.arch}")
    device = str(dist.select_device(cfg.device).type)
    if cfg.norm == "SyncBN" and device == "cpu" and cfg.num_procs * cfg.num_machines > 1:
        raise TaskError("norm=SyncBN needs GPUs with several processes; use norm=naiveSyncBN on the CPU")
    data = cfg.data
    if cfg.keep_classes:
        data = det.keep_classes(task, cfg.data, cfg.train_sets, cfg.keep_classes, ctx.out / "data")
        logger.info("%s: classes %s only, annotations written under %s", task, ", ".join(cfg.keep_classes), data)
    splits = det.register_data(task, data, cfg.train_sets)
    weights = write_detectron2(torchvision_to_detectron2(ctx.backbone.state_dict()), ctx.out / "backbone_d2.pkl")
    runs = []
    for i in range(cfg.repeats):
        run_dir = ctx.out / (f"d2_run{i}" if cfg.repeats > 1 else "d2")
        d2cfg = det.build_cfg(task, _config_file(task, cfg), str(weights), run_dir, depth, splits, cfg.norm,
                              cfg.preset, [*pixel_stats(ctx.info.normalize), *cfg.opts], ctx.seed + i, device)
        runs.append(det.run(d2cfg, task, data, cfg.train_sets, cfg.num_procs, cfg.num_machines, cfg.machine_rank,
                            cfg.dist_url, cfg.resume, cfg.eval_only))
        logger.info("%s run %d/%d: %s", task, i + 1, cfg.repeats, runs[-1])
    ctx.derived.update(config_file=_config_file(task, cfg), num_classes=splits[2], runs=runs,
                       train_datasets=list(splits[0]), unused=list(UNUSED_FIELDS[task]))
    metrics = {k: statistics.fmean(r[k] for r in runs) for k in runs[0]}
    if cfg.repeats > 1:
        metrics.update({f"{k}_std": statistics.stdev(r[k] for r in runs) for k in runs[0]})
    return metrics


for _task, _summary in (
    ("voc_det", "Faster R-CNN on Pascal VOC07+12 -> VOC07 test (box AP, AP50, AP75)"),
    ("coco_det", "Faster R-CNN on COCO (box AP, AP50, AP75)"),
    ("coco_instseg", "Mask R-CNN on COCO (box and mask AP, AP50, AP75)"),
):
    register(_task, DetectionConfig, _summary)(lambda cfg, ctx, _t=_task: run_detection(_t, cfg, ctx))
