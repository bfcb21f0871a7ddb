"""Detection and instance-segmentation transfer through detectron2 (imported only here).

The MoCo setups (``../shared/docs/protocols.md``; configs in ``transfer/configs``): R50-C4 with
``Res5ROIHeadsExtraNorm``, or R50-FPN; nothing frozen; synchronised BN (``SyncBN`` or
``naiveSyncBN``); PreciseBN; RGB input with torchvision mean/std and ``STRIDE_IN_1X1 False``.
Runs on one CPU process, on several CPU processes (gloo, ``naiveSyncBN``, DDP without
``device_ids``), or on N GPUs / machines through ``detectron2.engine.launch``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import weakref
from pathlib import Path

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode, get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json, register_pascal_voc
from detectron2.engine import AMPTrainer, DefaultTrainer, HookBase, SimpleTrainer, TrainerBase, hooks, launch
from detectron2.engine.defaults import create_ddp_model
from detectron2.evaluation import COCOEvaluator, PascalVOCDetectionEvaluator
from detectron2.layers import get_norm
from detectron2.modeling import ROI_HEADS_REGISTRY
from detectron2.modeling.backbone.resnet import BasicBlock, ResNet
from detectron2.modeling.roi_heads import Res5ROIHeads
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from mocobench.datasets import DataError
from mocobench.log import remove_handlers
from mocobench.pretrain.engine import StopSignal, TrainingInterrupted
from mocobench.transfer.det_classes import coco_subset, voc_subset

logger = logging.getLogger(__name__)
CONFIGS = Path(__file__).parent / "configs"
VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
    "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
METRICS_FILE = "d2_results.json"
#: VOC training sets (``train_sets``) -> the years whose trainval is used; the test set is always VOC2007 test.
VOC_TRAIN_SETS = {"07+12": (2007, 2012), "07": (2007,), "12": (2012,)}
COCO_TASKS = ("coco_det", "coco_instseg")

if "Res5ROIHeadsExtraNorm" not in ROI_HEADS_REGISTRY:

    @ROI_HEADS_REGISTRY.register()
    class Res5ROIHeadsExtraNorm(Res5ROIHeads):
        """Res5 head with an extra norm layer after res5 (MoCo paper, appendix). As the official
        ``detection/train_net.py`` since facebookresearch/moco 87e36d3 ("avoid relying on private method
        of detectron2"): the norm is added in ``__init__``. ``_build_res5_block`` is overridden as a classmethod,
        which detectron2 calls without its warning shim, only to give ResNet-18/34 their BasicBlock res5
        (tests/test_detection.py checks both)."""

        def __init__(self, cfg, input_shape) -> None:
            super().__init__(cfg, input_shape)
            self.res5.add_module("norm", get_norm(cfg.MODEL.RESNETS.NORM, self.res5[-1].out_channels))

        @classmethod
        def _build_res5_block(cls, cfg):
            """res5 of the backbone's own depth: detectron2 builds 3 Bottleneck blocks (ResNet-50 and deeper);
            ResNet-18/34 have 2/3 BasicBlocks (detectron2's ``build_resnet_backbone`` for depths 18 and 34), so the
            checkpoint's res5 loads into the head for every depth."""
            depth = cfg.MODEL.RESNETS.DEPTH
            if depth >= 50:
                return super()._build_res5_block(cfg)
            out_channels = cfg.MODEL.RESNETS.RES2_OUT_CHANNELS * 8  # res5 is 8x res2
            n = {18: 2, 34: 3}[depth]
            blocks = ResNet.make_stage(BasicBlock, n, stride_per_block=[2] + [1] * (n - 1), in_channels=out_channels // 2,
                                       out_channels=out_channels, norm=cfg.MODEL.RESNETS.NORM)
            return torch.nn.Sequential(*blocks), out_channels


#: ``--preset cpu-smoke``: small images, few proposals and ROIs, a few hundred iterations.
PRESETS: dict[str, list[str]] = {
    "cpu-smoke": [
        "INPUT.MIN_SIZE_TRAIN", "(160, 192)", "INPUT.MAX_SIZE_TRAIN", "320",
        "INPUT.MIN_SIZE_TEST", "160", "INPUT.MAX_SIZE_TEST", "320",
        "MODEL.RPN.PRE_NMS_TOPK_TRAIN", "600", "MODEL.RPN.POST_NMS_TOPK_TRAIN", "100",
        "MODEL.RPN.PRE_NMS_TOPK_TEST", "300", "MODEL.RPN.POST_NMS_TOPK_TEST", "50",
        "MODEL.RPN.BATCH_SIZE_PER_IMAGE", "64", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "64",
        "SOLVER.IMS_PER_BATCH", "2", "SOLVER.BASE_LR", "0.01", "SOLVER.MAX_ITER", "300",
        "SOLVER.STEPS", "(200, 260)", "SOLVER.WARMUP_ITERS", "50", "SOLVER.CHECKPOINT_PERIOD", "100",
        "TEST.PRECISE_BN.NUM_ITER", "20", "TEST.DETECTIONS_PER_IMAGE", "50", "DATALOADER.NUM_WORKERS", "1",
    ],
}
#: ``--preset cpu-crop``: cpu-smoke's model at 0.6x the COCO image scale for the cost of 192 px, 1000 iterations
#: (about 10 minutes on 2 cores). detectron2 crops before it resizes: a random 320x320 crop of the original image,
#: resized to a short side of 176, 192 or 208; tested at a short side of 288 (0.6 x 480). At cpu-smoke's 160-192 px the
#: median coco-mini person is about 18 px, below FPN's smallest anchor (32); here about 43 px. Not a published
#: protocol. With keep_classes=person, the best CPU budget measured (benchmarks/detection_cpu.py, person_crop_1000it:
#: identical config): a supervised ResNet-18 above random init in each of 5 seeds, AP50 4.1 ± 1.6 against 1.5 ± 0.6
#: (Welch t 3.3), a gap of 1.6 of supervised's stds: ranked, not separated by several points; MoCo v2 and v1 land
#: between (3.1 ± 0.3, 2.9 ± 0.4 over 3 seeds), above random init, within supervised's spread (benchmarks/RESULTS.md).
PRESETS["cpu-crop"] = [
    *PRESETS["cpu-smoke"],
    "INPUT.CROP.ENABLED", "True", "INPUT.CROP.TYPE", "absolute", "INPUT.CROP.SIZE", "(320, 320)",
    "INPUT.MIN_SIZE_TRAIN", "(176, 192, 208)", "INPUT.MAX_SIZE_TRAIN", "320",
    "INPUT.MIN_SIZE_TEST", "288", "INPUT.MAX_SIZE_TEST", "384",
    "SOLVER.MAX_ITER", "1000", "SOLVER.STEPS", "(700, 900)",
]


def _check_file(path: Path, what: str) -> Path:
    if not path.exists():
        raise DataError(f"{what} {path} does not exist")
    return path


def register_coco(name: str, json_file: Path, image_root: Path) -> int:
    """Register a COCO-format split; category ids are mapped to contiguous ids (not assumed 1..80).

    Checks up front: the json exists and has categories, every listed image exists. Returns the
    number of categories.
    """
    _check_file(json_file, "COCO annotation file")
    data = json.loads(json_file.read_text())
    cats = data.get("categories") or []
    if not cats:
        raise DataError(f"{json_file} has an empty category list")
    missing = [im["file_name"] for im in data.get("images", []) if not (image_root / im["file_name"]).exists()]
    if missing:
        raise DataError(f"{len(missing)} images listed in {json_file} are absent from {image_root}: {missing[:5]}")
    check_coco_annotations(json_file, data)
    _unregister(name)
    DatasetCatalog.register(name, lambda: load_coco_json(str(json_file), str(image_root), name))
    MetadataCatalog.get(name).set(json_file=str(json_file), image_root=str(image_root), evaluator_type="coco")
    return len(cats)


def check_coco_annotations(json_file: Path, data: dict) -> None:
    """Unknown category or image ids are errors (naming the annotation); boxes of zero area or reaching
    outside their image are counted in the log: detectron2 clips boxes to the image and drops the empty
    ones when it builds each training batch."""
    cats = {c["id"] for c in data["categories"]}
    images = {}
    for im in data.get("images", []):
        if im.get("id") in images:
            raise DataError(f"{json_file}: image id {im.get('id')!r} is listed twice ({images[im['id']].get('file_name')} "
                            f"and {im.get('file_name')}); image ids must be unique")
        images[im.get("id")] = im
    degenerate = outside = 0
    for ann in data.get("annotations", []):
        if ann.get("category_id") not in cats:
            raise DataError(f"{json_file}: annotation {ann.get('id')} has category_id {ann.get('category_id')!r}, "
                            f"which is not among the categories {sorted(cats)}")
        im = images.get(ann.get("image_id"))
        if im is None:
            raise DataError(f"{json_file}: annotation {ann.get('id')} refers to image_id {ann.get('image_id')!r}, "
                            "which is not in the images list")
        x, y, w, h = ann["bbox"]
        degenerate += w <= 0 or h <= 0
        outside += x < 0 or y < 0 or x + w > im["width"] or y + h > im["height"]
    if degenerate or outside:
        logger.warning("%s: %d boxes of zero area and %d boxes reaching outside their image; detectron2 clips "
                       "boxes to the image and drops empty ones", json_file, degenerate, outside)


def _unregister(name: str) -> None:
    """Forget an earlier registration of ``name`` (a previous run in this process may have used other paths)."""
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def check_voc_annotations(dirname: Path, split: str, classes: tuple[str, ...]) -> None:
    """Every object of the split's XML files names one of ``classes`` (else an error naming the file and the
    class, before detectron2 would fail inside its loader); boxes reaching outside their image are counted in
    the log, as for COCO."""
    import xml.etree.ElementTree as ET

    outside = 0
    for image_id in (dirname / "ImageSets" / "Main" / f"{split}.txt").read_text().split():
        xml = dirname / "Annotations" / f"{image_id}.xml"
        try:
            root = ET.parse(xml).getroot()
            w, h = (int(float(root.findtext(f"size/{k}", "0"))) for k in ("width", "height"))
            for obj in root.iter("object"):
                name = (obj.findtext("name") or "").strip()
                if name not in classes:
                    raise DataError(f"{xml}: object class {name!r} is not among the {len(classes)} classes "
                                    f"({', '.join(classes)}; a custom set lists its own in labels.txt)")
                box = [float(obj.findtext(f"bndbox/{k}", "nan")) for k in ("xmin", "ymin", "xmax", "ymax")]
                outside += bool(w and h) and (box[0] < 1 or box[1] < 1 or box[2] > w or box[3] > h)
        except (OSError, ET.ParseError, ValueError) as e:
            if isinstance(e, DataError):
                raise
            raise DataError(f"{xml}: cannot read this VOC annotation ({type(e).__name__}: {e})") from e
    if outside:
        logger.warning("%s %s: %d boxes reaching outside their image; detectron2 clips them", dirname, split, outside)


def register_voc(name: str, dirname: Path, split: str, year: int, classes: tuple[str, ...] = VOC_CLASSES) -> None:
    _check_file(dirname / "ImageSets" / "Main" / f"{split}.txt", "VOC split file")
    check_voc_annotations(dirname, split, classes)
    _unregister(name)
    register_pascal_voc(name, str(dirname), split, year, classes)
    MetadataCatalog.get(name).set(evaluator_type="pascal_voc")


def register_data(task: str, data: str, train_sets: str = "07+12") -> tuple[tuple[str, ...], tuple[str, ...], int]:
    """Register the task's train/test splits; returns (train names, test names, number of classes).

    ``data`` empty: the standard ``$DETECTRON2_DATASETS`` layout (``coco/annotations/...``,
    ``VOC2007``, ``VOC2012``). COCO: a folder with ``annotations/instances_{train,val}2017.json`` and
    ``{train,val}2017/``. VOC: a devkit folder holding ``VOC2007`` and, for ``train_sets`` 07+12 (the
    official pascal_voc_R_50_C4_24k.yaml: voc_2007_trainval + voc_2012_trainval), ``VOC2012``; a
    missing folder is an error, never a silent fall-back to fewer training images.
    """
    if task in COCO_TASKS:
        coco = _coco_folder(data)
        n = register_coco("mb_coco_train", coco / "annotations" / "instances_train2017.json", coco / "train2017")
        n_test = register_coco("mb_coco_val", coco / "annotations" / "instances_val2017.json", coco / "val2017")
        if n_test != n:
            raise DataError(f"train and val annotation files under {coco} have {n} and {n_test} categories")
        return ("mb_coco_train",), ("mb_coco_val",), n
    devkit = _devkit(data)
    years = VOC_TRAIN_SETS[train_sets]
    for year in years:
        if not (devkit / f"VOC{year}").is_dir():
            hint = ("; the papers' VOC numbers train on 07+12 trainval: add VOC2012 there, or pass --set "
                    "train_sets=07 to train on VOC2007 trainval alone on purpose") if train_sets == "07+12" else ""
            raise DataError(f"{devkit} holds no VOC{year} folder, which train_sets={train_sets} needs{hint}")
    classes = voc_classes(devkit)
    train = []
    for year in years:
        register_voc(f"mb_voc_{year}_trainval", devkit / f"VOC{year}", "trainval", year, classes)
        train.append(f"mb_voc_{year}_trainval")
    register_voc("mb_voc_2007_test", devkit / "VOC2007", "test", 2007, classes)
    return tuple(train), ("mb_voc_2007_test",), len(classes)


def _root(data: str) -> Path:
    """``data``, or when empty detectron2's ``$DETECTRON2_DATASETS`` (default ``datasets``)."""
    return Path(data) if data else Path(os.environ.get("DETECTRON2_DATASETS", "datasets"))


def _coco_folder(data: str) -> Path:
    return Path(data) if data else _root(data) / "coco"


def _devkit(data: str) -> Path:
    root = _root(data)
    devkit = root / "VOCdevkit" if (root / "VOCdevkit").is_dir() else root
    if not (devkit / "VOC2007").is_dir():
        raise DataError(f"{devkit} holds no VOC2007 folder (expected a VOC devkit: VOC2007[/VOC2012])")
    return devkit


def keep_classes(task: str, data: str, train_sets: str, names: tuple[str, ...], out: Path) -> str:
    """The task's data restricted to the classes ``names`` (:mod:`mocobench.transfer.det_classes`), written
    under ``out``; returns the folder to use as ``data``."""
    if task in COCO_TASKS:
        return str(coco_subset(_coco_folder(data), out, names))
    devkit = _devkit(data)
    years = sorted({*VOC_TRAIN_SETS[train_sets], 2007})  # 2007: the test set
    return str(voc_subset(devkit, years, out, names, voc_classes(devkit)))


def voc_classes(devkit: Path) -> tuple[str, ...]:
    """The 20 Pascal VOC classes, or for a custom VOC-format set the names in ``<devkit>/labels.txt``
    (one per line), in that order."""
    labels = devkit / "labels.txt"
    if not labels.is_file():
        return VOC_CLASSES
    names = tuple(line.strip() for line in labels.read_text().splitlines() if line.strip())
    if not names or len(set(names)) != len(names):
        raise DataError(f"{labels} must list distinct class names, one per line; found {list(names)}")
    return names


def build_cfg(task: str, config_file: str, weights: str, out: Path, depth: int,
              splits: tuple[tuple[str, ...], tuple[str, ...], int], norm: str, preset: str, opts: list[str],
              seed: int, device: str) -> CfgNode:
    """The detectron2 config: shipped YAML, then weights/data/norm, then the preset, then ``opts``.

    ``splits`` is :func:`register_data`'s (train names, test names, number of classes)."""
    cfg = get_cfg()
    cfg.merge_from_file(str(CONFIGS / config_file))
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST, cfg.MODEL.ROI_HEADS.NUM_CLASSES = splits
    cfg.MODEL.WEIGHTS = weights
    cfg.MODEL.DEVICE = device
    cfg.MODEL.RESNETS.DEPTH = depth
    if depth < 50:
        cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.MASK_ON = task == "coco_instseg"
    cfg.MODEL.RESNETS.NORM = norm
    if cfg.MODEL.FPN.NORM:  # backbone and FPN only, the heads stay standard (moco issue #34)
        cfg.MODEL.FPN.NORM = norm
    cfg.OUTPUT_DIR = str(out)
    cfg.SEED = seed
    cfg.merge_from_list(PRESETS[preset] if preset else [])
    cfg.merge_from_list(opts)
    return cfg


class SaveOnSignal(HookBase):
    """SIGTERM or SIGINT during fine-tuning (a scheduler's preemption, Ctrl-C): after the current iteration,
    every process agrees to stop (:func:`mocobench.dist.any_rank`), ``model_<iter>.pth`` is saved as detectron2's
    ``PeriodicCheckpointer`` saves it (model, optimizer, scheduler, iteration; ``last_checkpoint`` names it),
    and the run ends with :class:`TrainingInterrupted`. ``resume=True`` continues from the next iteration."""

    def __init__(self, stop: StopSignal) -> None:
        self.stop = stop

    def before_train(self) -> None:  # the device of the agreement, once (launch has set each process's GPU)
        device = self.trainer.cfg.MODEL.DEVICE
        self.device = torch.device(f"cuda:{torch.cuda.current_device()}" if device == "cuda" else device)

    def after_step(self) -> None:
        if not self.stop.requested(self.device):
            return
        it = self.trainer.iter
        name = f"model_{it:07d}"
        self.trainer.checkpointer.save(name, iteration=it)
        raise TrainingInterrupted(f"stopped after iteration {it + 1} of {self.trainer.max_iter}; saved "
                                  f"{Path(self.trainer.cfg.OUTPUT_DIR) / name}.pth. Run the same command with "
                                  "--resume (--set resume=true; a suite resumes by itself) to continue from there")


class _NotAnError(logging.Filter):
    """detectron2's train loop logs every exception with its traceback; a requested stop is not an error."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], TrainingInterrupted))


class KeepNewestCheckpointer(hooks.PeriodicCheckpointer):
    """detectron2's periodic checkpointer keeping only the newest ``model_<iter>.pth``: after each save, every other
    one in the folder is deleted, also those left by a run before ``--resume`` and by a stop signal (fvcore's
    ``max_to_keep`` only knows this process's saves). The new file and ``last_checkpoint`` are written first, so a
    kill never leaves the folder without a whole checkpoint; after the last iteration only ``model_final.pth`` stays.
    detectron2 keeps them all: 226 MB each for R18-FPN, 2.5 GB for a 1000-iteration run at cpu-smoke's period."""

    def step(self, iteration: int, **kwargs) -> None:
        super().step(iteration, **kwargs)
        if (int(iteration) + 1) % self.period == 0 or iteration >= (self.max_iter or math.inf) - 1:
            newest = Path(self.checkpointer.get_checkpoint_file()).name
            for old in Path(self.checkpointer.save_dir).glob("model_" + "[0-9]" * 7 + ".pth"):  # not model_final
                if old.name != newest:
                    old.unlink()


class Trainer(DefaultTrainer):
    """DefaultTrainer whose DDP wrapper passes no ``device_ids`` on the CPU (DDP rejects them there)."""

    def __init__(self, cfg: CfgNode, stop: StopSignal | None = None) -> None:  # DefaultTrainer's, DDP call changed
        TrainerBase.__init__(self)
        self.stop = stop or StopSignal()
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        device_ids = [comm.get_local_rank()] if cfg.MODEL.DEVICE.startswith("cuda") else None
        model = create_ddp_model(model, broadcast_buffers=False, device_ids=device_ids)
        self._trainer = (AMPTrainer if cfg.SOLVER.AMP.ENABLED else SimpleTrainer)(model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = DetectionCheckpointer(model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    def build_hooks(self) -> list:
        """DefaultTrainer's hooks, its periodic checkpointer replaced by :class:`KeepNewestCheckpointer`, and the
        stop-signal hook."""
        built = super().build_hooks()
        for i, hook in enumerate(built):
            if isinstance(hook, hooks.PeriodicCheckpointer):
                built[i] = KeepNewestCheckpointer(self.checkpointer, hook.period)
        return [*built, SaveOnSignal(self.stop)]

    @classmethod
    def build_evaluator(cls, cfg: CfgNode, dataset_name: str, output_folder=None):
        return build_evaluator(cfg, dataset_name)


def build_evaluator(cfg: CfgNode, dataset_name: str):
    """COCO evaluator (bbox, plus segm with masks) or the Pascal VOC evaluator (11-point AP for 2007)."""
    if MetadataCatalog.get(dataset_name).evaluator_type == "pascal_voc":
        return PascalVOCDetectionEvaluator(dataset_name)
    tasks = ("bbox", "segm") if cfg.MODEL.MASK_ON else ("bbox",)
    return COCOEvaluator(dataset_name, tasks=tasks, distributed=True,
                         output_dir=os.path.join(cfg.OUTPUT_DIR, "inference"))


def _worker(cfg_yaml: str, task: str, data: str, train_sets: str, resume: bool, eval_only: bool) -> None:
    """One process of a run (launched by detectron2): register data, train and/or test, save metrics."""
    cfg = get_cfg()
    cfg.set_new_allowed(True)
    cfg.merge_from_other_cfg(CfgNode.load_cfg(cfg_yaml))
    register_data(task, data, train_sets)
    remove_handlers(logging.getLogger("detectron2"))  # one set of handlers per run (a suite runs many per process)
    getattr(setup_logger, "cache_clear", lambda: None)()
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="detectron2")
    if cfg.MODEL.DEVICE == "cpu":  # share the cores between CPU processes
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // comm.get_world_size()))
    if eval_only:
        model = Trainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=resume)
        results = Trainer.test(cfg, model)
    else:
        loop_logger = logging.getLogger("detectron2.engine.train_loop")
        quiet = _NotAnError()
        loop_logger.addFilter(quiet)
        try:
            with StopSignal() as stop:
                trainer = Trainer(cfg, stop)
                trainer.resume_or_load(resume=resume)
                trainer.train()
        finally:
            loop_logger.removeFilter(quiet)
        results = getattr(trainer, "_last_eval_results", {})
    if comm.is_main_process():
        (Path(cfg.OUTPUT_DIR) / METRICS_FILE).write_text(json.dumps(results, indent=2))


def run(cfg: CfgNode, task: str, data: str, train_sets: str, num_procs: int, num_machines: int, machine_rank: int,
        dist_url: str, resume: bool, eval_only: bool) -> dict[str, float]:
    """Launch the run (1 process in place, N through detectron2's launcher); return flat metrics."""
    out = Path(cfg.OUTPUT_DIR)
    out.mkdir(parents=True, exist_ok=True)
    (out / METRICS_FILE).unlink(missing_ok=True)
    cfg_yaml = cfg.dump()
    (out / "config.yaml").write_text(cfg_yaml)
    launch(_worker, num_procs, num_machines=num_machines, machine_rank=machine_rank, dist_url=dist_url,
           args=(cfg_yaml, task, data, train_sets, resume, eval_only))
    results = json.loads((out / METRICS_FILE).read_text())
    flat = {}
    for kind, metrics in results.items():  # {"bbox": {"AP": .., "AP50": ..}, "segm": {...}}
        for name, value in metrics.items():
            if name in ("AP", "AP50", "AP75"):
                if math.isnan(value):  # detectron2 reports NaN when the model predicted nothing
                    logger.warning("%s %s: the model made no predictions; recording AP 0", kind, name)
                    value = 0.0
                flat[f"{kind}_{name}"] = float(value)
    if not flat:
        raise RuntimeError(f"detectron2 returned no box/mask AP (see {out / 'log.txt'}): {results}")
    return flat

