"""Detection transfer through real detectron2 and pycocotools on coco-mini and the VOC sets.

Schedules are tiny (a few iterations at 160 px), so the APs are near zero; what is checked is that
every path runs, that ground truth scored as predictions gives AP 100 through the same evaluators,
and that bad input is named.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from helpers import run_cli

from mocobench.results import read_results

pytestmark = pytest.mark.slow
SMOKE = ["--preset", "cpu-smoke", "--set", "head=FPN", "--set", "SOLVER.MAX_ITER=3", "--set", "TEST.PRECISE_BN.NUM_ITER=2",
         "--set", "DATALOADER.NUM_WORKERS=0", "--set", "SOLVER.CHECKPOINT_PERIOD=1000"]


@pytest.mark.parametrize("task,keys", [("coco_det", {"bbox_AP", "bbox_AP50", "bbox_AP75"}),
                                       ("coco_instseg", {"bbox_AP", "segm_AP", "segm_AP75"})])
def test_coco_tasks_end_to_end(shared_data, tmp_path, task, keys):
    out = tmp_path / task
    every_iteration = ["--set", "SOLVER.CHECKPOINT_PERIOD=1"]  # 3 periodic saves, each deleting the one before
    run_cli(["transfer", "random", "--arch", "resnet18", "--task", task, "--data", shared_data / "coco-mini",
             "--out", out, *SMOKE, *every_iteration])
    assert [p.name for p in (out / "d2").glob("model_*.pth")] == ["model_final.pth"]
    res = read_results(out / "results.json")
    assert keys <= res["metrics"].keys() and all(0 <= v <= 100 for v in res["metrics"].values())
    assert res["config"]["derived"]["num_classes"] == 80 and res["config"]["preset"] == "cpu-smoke"
    assert (out / "d2" / "d2_results.json").exists() and (out / "d2" / "config.yaml").exists()
    assert "SOLVER.MAX_ITER" in res["config"]["opts"]
    if task == "coco_det":  # evaluating the trained weights again gives the same numbers
        run_cli(["transfer", "random", "--arch", "resnet18", "--task", task, "--data", shared_data / "coco-mini",
                 "--out", out, *SMOKE, "--eval-only", "--resume", "--overwrite"])
        assert read_results(out / "results.json")["metrics"] == res["metrics"]


def test_c4_head_on_a_resnet18_fine_tunes_end_to_end(shared_data, tmp_path):
    out = tmp_path / "c4"
    run_cli(["transfer", "random", "--arch", "resnet18", "--task", "voc_det", "--data", shared_data / "voc-from-coco",
             "--out", out, *SMOKE, "--set", "head=C4", "--set", "train_sets=07"])
    res = read_results(out / "results.json")
    assert res["config"]["head"] == "C4" and res["config"]["derived"]["config_file"] == "voc_R_50_C4_24k_moco.yaml"
    assert {"bbox_AP", "bbox_AP50"} <= res["metrics"].keys() and all(0 <= v <= 100 for v in res["metrics"].values())


def test_voc_det_with_two_cpu_processes_and_repeats(shared_data, tmp_path):
    out = tmp_path / "voc"
    run_cli(["transfer", "random", "--arch", "resnet18", "--task", "voc_det", "--data", shared_data / "voc-from-coco",
             "--out", out, *SMOKE, "--set", "train_sets=07", "--num-gpus", "2", "--repeats", "2"])
    res = read_results(out / "results.json")
    assert {"bbox_AP", "bbox_AP50", "bbox_AP75", "bbox_AP_std"} <= res["metrics"].keys()
    runs = res["config"]["derived"]["runs"]
    assert len(runs) == 2 and res["metrics"]["bbox_AP50"] == pytest.approx((runs[0]["bbox_AP50"] + runs[1]["bbox_AP50"]) / 2)
    assert res["config"]["num_procs"] == 2 and res["config"]["norm"] == "naiveSyncBN"
    assert res["config"]["train_sets"] == "07" and res["config"]["derived"]["train_datasets"] == ["mb_voc_2007_trainval"]


def _gt_as_predictions(dataset_name: str, with_masks: bool, out=None):
    from detectron2.config import get_cfg
    from detectron2.data import DatasetCatalog
    from detectron2.structures import BitMasks, Boxes, BoxMode, Instances, PolygonMasks

    from mocobench.transfer.detection import build_evaluator

    cfg = get_cfg()
    cfg.MODEL.MASK_ON = with_masks
    cfg.OUTPUT_DIR = str(out) if out else tempfile.mkdtemp()  # never ./output
    evaluator = build_evaluator(cfg, dataset_name)
    evaluator.reset()
    for d in DatasetCatalog.get(dataset_name):
        anns = [a for a in d["annotations"] if not a.get("iscrowd", 0)]
        inst = Instances((d["height"], d["width"]))
        boxes = [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in anns]
        inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
        inst.scores = torch.ones(len(anns))
        inst.pred_classes = torch.tensor([a["category_id"] for a in anns], dtype=torch.long)
        if with_masks:
            polys = PolygonMasks([a["segmentation"] for a in anns])
            inst.pred_masks = BitMasks.from_polygon_masks(polys, d["height"], d["width"]).tensor
        evaluator.process([{"image_id": d["image_id"], "file_name": d["file_name"]}], [{"instances": inst}])
    return evaluator.evaluate()


def test_ground_truth_scores_ap_100_through_the_same_evaluators(shared_data):
    from mocobench.transfer.detection import register_data

    train, test, _ = register_data("coco_instseg", str(shared_data / "coco-mini"))
    res = _gt_as_predictions(test[0], with_masks=True)
    assert res["bbox"]["AP"] == pytest.approx(100.0) and res["segm"]["AP"] == pytest.approx(100.0, abs=0.5)
    train, test, _ = register_data("voc_det", str(shared_data / "voc-from-coco"), "07")
    res = _gt_as_predictions(test[0], with_masks=False)
    assert res["bbox"]["AP50"] == pytest.approx(100.0) and res["bbox"]["AP"] == pytest.approx(100.0)


def test_genuine_voc_files_load(shared_data):
    from detectron2.data import DatasetCatalog

    from mocobench.transfer.detection import VOC_CLASSES, register_data

    train, test, n = register_data("voc_det", str(shared_data / "voc-real-tiny"))
    assert train == ("mb_voc_2007_trainval", "mb_voc_2012_trainval") and n == 20
    for name in (*train, *test):
        dicts = DatasetCatalog.get(name)
        assert len(dicts) == 5 and all(d["annotations"] for d in dicts)
        for d in dicts:
            for a in d["annotations"]:
                x0, y0, x1, y1 = a["bbox"]
                assert 0 <= x0 < x1 <= d["width"] and 0 <= y0 < y1 <= d["height"]
                assert 0 <= a["category_id"] < len(VOC_CLASSES)


def test_bad_detection_input_is_named(shared_data, tmp_path):
    coco = tmp_path / "coco"
    shutil.copytree(shared_data / "coco-mini", coco)
    args = ["transfer", "random", "--arch", "resnet18", "--task", "coco_det", "--data", coco, *SMOKE]
    val_json = coco / "annotations" / "instances_val2017.json"
    data = json.loads(val_json.read_text())
    first = data["images"][0]["file_name"]
    (coco / "val2017" / first).unlink()
    r = run_cli([*args, "--out", tmp_path / "a"], expect_ok=False)
    assert "1 images listed in" in r.output and first in r.output
    val_json.write_text(json.dumps({**data, "categories": []}))
    r = run_cli([*args, "--out", tmp_path / "b"], expect_ok=False)
    assert "has an empty category list" in r.output
    val_json.unlink()
    r = run_cli([*args, "--out", tmp_path / "c"], expect_ok=False)
    assert f"COCO annotation file {val_json} does not exist" in r.output


def test_voc_07_plus_12_is_the_default_and_never_falls_back_silently(shared_data, tmp_path):
    """The papers' VOC numbers train on 07+12 trainval: a devkit without VOC2012 is an error naming the folder
    and the option that chooses 07 on purpose (before, training quietly used VOC2007 alone)."""
    from mocobench.transfer.detection import register_data

    with pytest.raises(ValueError, match=r"holds no VOC2012 folder.*--set train_sets=07"):
        register_data("voc_det", str(shared_data / "voc-from-coco"))
    r = run_cli(["transfer", "random", "--arch", "resnet18", "--task", "voc_det", "--data",
                 shared_data / "voc-from-coco", "--out", tmp_path / "e", *SMOKE], expect_ok=False)
    assert "VOC2012" in r.output and "train_sets=07" in r.output
    assert register_data("voc_det", str(shared_data / "voc-real-tiny"), "12")[0] == ("mb_voc_2012_trainval",)


def _d2_cfg(config_file: str, norm: str = "naiveSyncBN"):
    from mocobench.transfer.detection import build_cfg

    return build_cfg("coco_instseg", config_file, "", tempfile.mkdtemp(), 50, (("a",), ("b",), 3), norm, "", [], 0, "cpu")


def test_shipped_configs_match_the_official_values():
    """Values read back through detectron2 from the shipped YAML files (facebookresearch/moco @ 87e36d3,
    detection/configs): naiveSyncBN in the C4 base file itself, the 2x COCO schedule by default, and for FPN
    synchronised BN in the backbone and FPN only (moco issue #34), with standard heads."""
    from detectron2.config import get_cfg

    from mocobench.evaluators.detection import DetectionConfig, _config_file
    from mocobench.transfer.detection import CONFIGS

    raw = get_cfg()
    raw.merge_from_file(str(CONFIGS / "Base-RCNN-C4-BN-moco.yaml"))
    assert raw.MODEL.RESNETS.NORM == "naiveSyncBN" and raw.MODEL.ROI_HEADS.NAME == "Res5ROIHeadsExtraNorm"
    assert raw.MODEL.BACKBONE.FREEZE_AT == 0 and raw.TEST.PRECISE_BN.ENABLED and not raw.MODEL.RESNETS.STRIDE_IN_1X1
    assert DetectionConfig().schedule == "2x" and DetectionConfig().train_sets == "07+12"
    c4 = _d2_cfg(_config_file("coco_det", DetectionConfig()))
    assert c4.SOLVER.MAX_ITER == 180000 and tuple(c4.SOLVER.STEPS) == (120000, 160000)
    fpn = _d2_cfg(_config_file("coco_det", DetectionConfig(head="FPN")), norm="SyncBN")
    assert fpn.MODEL.RESNETS.NORM == fpn.MODEL.FPN.NORM == "SyncBN"
    assert fpn.MODEL.ROI_BOX_HEAD.NORM == fpn.MODEL.ROI_MASK_HEAD.NORM == ""
    assert fpn.MODEL.ROI_BOX_HEAD.NUM_CONV == 0 and fpn.MODEL.ROI_BOX_HEAD.NUM_FC == 2
    for f in CONFIGS.glob("*_moco.yaml"):
        assert f.read_text().startswith("# Provenance: "), f"{f.name} has no provenance line"


def test_res5_extra_norm_is_built_in_init_without_the_private_method_shim():
    """The extra norm after res5 exists, and detectron2 logs no warning about overriding its private
    ``_build_res5_block`` (the old subclass relied on that shim). The records are caught on detectron2's own
    logger, which an earlier in-process run may have cut off from the root logger."""
    import logging

    from detectron2.modeling import build_model

    from mocobench.transfer.detection import Res5ROIHeadsExtraNorm

    records = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    d2_logger = logging.getLogger("detectron2.modeling.roi_heads.roi_heads")
    d2_logger.addHandler(handler)
    try:
        model = build_model(_d2_cfg("coco_R_50_C4_2x_moco.yaml", norm="BN"))
    finally:
        d2_logger.removeHandler(handler)
    heads = model.roi_heads
    assert type(heads) is Res5ROIHeadsExtraNorm
    assert isinstance(heads.res5.norm, torch.nn.BatchNorm2d) and heads.res5.norm.num_features == 2048
    assert not [r for r in records if "_build_res5_block" in r.getMessage()]


@pytest.mark.parametrize("depth,blocks", [(18, 2), (34, 3)])
def test_c4_head_of_a_basicblock_resnet_is_its_pretrained_res5(tmp_path, depth, blocks):
    """head=C4 for ResNet-18/34: the ROI head's res5 is the checkpoint's layer4 (BasicBlocks, 512 channels),
    loaded bit for bit through the converter and detectron2's checkpointer; only the extra norm is new."""
    import torchvision
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    from mocobench.convert import torchvision_to_detectron2, write_detectron2
    from mocobench.transfer.detection import build_cfg

    torch.manual_seed(0)
    net = getattr(torchvision.models, f"resnet{depth}")()
    for m in net.modules():  # every BN tensor distinct, so a wrong mapping cannot pass unnoticed
        if isinstance(m, torch.nn.BatchNorm2d):
            for t in (m.weight.data, m.bias.data, m.running_mean):
                t.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    converted = torchvision_to_detectron2(net.state_dict())
    pkl = write_detectron2(converted, tmp_path / "w.pkl")
    cfg = build_cfg("voc_det", "voc_R_50_C4_24k_moco.yaml", str(pkl), tmp_path, depth, (("a",), ("b",), 2), "BN", "",
                    [], 0, "cpu")
    model = build_model(cfg)
    DetectionCheckpointer(model).load(str(pkl))
    res5 = model.roi_heads.res5
    assert len(res5) == blocks + 1 and res5.norm.num_features == 512  # the blocks, then the extra norm
    head = {k: v for k, v in model.roi_heads.state_dict().items() if k.startswith("res5.")}
    want = {k: v for k, v in converted.items() if k.startswith("res5.")}
    assert head.keys() - want.keys() == {f"res5.norm.{n}" for n in ("weight", "bias", "running_mean", "running_var",
                                                                   "num_batches_tracked")}  # only the extra norm
    assert all(torch.equal(head[k], v) for k, v in want.items()), [k for k, v in want.items() if not torch.equal(head[k], v)]
    assert torch.equal(res5[0].shortcut.weight, net.layer4[0].downsample[0].weight)  # torchvision's own names
    assert torch.equal(res5[-2].conv2.norm.running_mean, net.layer4[-1].bn2.running_mean)


def test_synthetic_detection_sets_score_ap_100_and_map_their_ids(tmp_path):
    """The embedded COCO set (ids 3, 7, 11, 20) and its VOC copy (labels.txt) load and are consistent."""
    from mocobench.synth_det import CATEGORIES, SynthDetSpec, write_synthetic_detection
    from mocobench.transfer.detection import register_data

    root = write_synthetic_detection(tmp_path / "d", SynthDetSpec(train=4, val=6, size=96))
    train, test, n = register_data("coco_instseg", str(root / "coco"))
    assert n == len(CATEGORIES)
    res = _gt_as_predictions(test[0], with_masks=True)
    assert res["bbox"]["AP"] == pytest.approx(100.0) and res["segm"]["AP"] == pytest.approx(100.0, abs=1.0)
    train, test, n = register_data("voc_det", str(root / "voc"), "07")
    assert n == len(CATEGORIES)
    res = _gt_as_predictions(test[0], with_masks=False)
    assert res["bbox"]["AP50"] == pytest.approx(100.0)
    (root / "voc" / "labels.txt").write_text("circle\ncircle\n")
    with pytest.raises(ValueError, match="labels.txt must list distinct class names"):
        register_data("voc_det", str(root / "voc"), "07")


def test_a_coco_image_listed_twice_and_voc_objects_of_unknown_classes_are_named(shared_data, tmp_path, caplog):
    from mocobench.datasets import DataError
    from mocobench.transfer.detection import check_coco_annotations, register_data

    data = json.loads((shared_data / "coco-mini" / "annotations" / "instances_val2017.json").read_text())
    twice = {**data, "images": [*data["images"], {**data["images"][0], "file_name": "copy.jpg"}]}
    with pytest.raises(DataError, match=rf"image id {data['images'][0]['id']} is listed twice"):
        check_coco_annotations(tmp_path / "x.json", twice)
    devkit = tmp_path / "voc"
    shutil.copytree(shared_data / "voc-from-coco", devkit)
    xml = sorted((devkit / "VOC2007" / "Annotations").glob("*.xml"))[0]
    text = xml.read_text()
    name = text.split("<name>")[1].split("</name>")[0]
    xml.write_text(text.replace(f"<name>{name}</name>", "<name>unicorn</name>", 1))
    with pytest.raises(DataError, match=rf"{xml.name}: object class 'unicorn' is not among the 20 classes"):
        register_data("voc_det", str(devkit), "07")
    xml.write_text(text.replace("<xmax>", "<xmax>9999", 1).replace("<xmax>9999", "<xmax>", 1)
                   .replace("</xmax>", "0000</xmax>", 1))  # one box far past its image: counted, clipped later
    with caplog.at_level("WARNING"):
        register_data("voc_det", str(devkit), "07")
    assert "boxes reaching outside their image" in caplog.text


def test_sigterm_during_fine_tuning_saves_and_the_same_command_resumes(tmp_path):
    """A real detectron2 run gets SIGTERM mid-training: it saves model_<iter>.pth after the current iteration,
    ends with one message (no traceback), and the same command with --resume continues from the next iteration
    to the end (issue 19)."""
    import signal
    import subprocess
    import sys
    import time

    from mocobench.synth_det import SynthDetSpec, write_synthetic_detection

    root = write_synthetic_detection(tmp_path / "d", SynthDetSpec(train=8, val=4, size=96))
    out = tmp_path / "voc"
    cmd = [sys.executable, "-m", "mocobench", "transfer", "random", "--arch", "resnet18", "--task", "voc_det",
           "--data", str(root / "voc"), "--out", str(out), "--preset", "cpu-smoke", "--set", "head=FPN",
           "--set", "train_sets=07", "--set", "SOLVER.MAX_ITER=400", "--set", "SOLVER.CHECKPOINT_PERIOD=1000",
           "--set", "TEST.PRECISE_BN.NUM_ITER=2", "--set", "DATALOADER.NUM_WORKERS=0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = out / "d2" / "log.txt"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if log.exists() and "Starting training from iteration 0" in log.read_text():
            break
        time.sleep(0.05)
    time.sleep(3)  # a few iterations
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=300)[0]
    assert proc.returncode == 1, output
    assert "Traceback" not in output and "stopped after iteration" in output and "--resume" in output, output
    last = (out / "d2" / "last_checkpoint").read_text().strip()
    it = int(last.removeprefix("model_").removesuffix(".pth"))
    assert 0 <= it < 399 and (out / "d2" / last).is_file()  # under load the signal may come after iteration 0
    assert not (out / "results.json").exists()
    saved = torch.load(out / "d2" / last, map_location="cpu", weights_only=False)  # our own file, just written
    assert saved["iteration"] == it and "optimizer" in saved["trainer"]["_trainer"] and "LRScheduler" in saved["trainer"]["hooks"]
    short = [c if c != "SOLVER.MAX_ITER=400" else f"SOLVER.MAX_ITER={it + 4}" for c in cmd]  # finish soon after
    short = [c if c != "SOLVER.CHECKPOINT_PERIOD=1000" else "SOLVER.CHECKPOINT_PERIOD=2" for c in short]
    resumed = subprocess.run([*short, "--resume"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"Starting training from iteration {it + 1}" in log.read_text()
    # the signal's model_<it>.pth, written by the first process, is deleted by the resumed one's saves
    assert [p.name for p in (out / "d2").glob("model_*.pth")] == ["model_final.pth"]
    assert read_results(out / "results.json")["metrics"]["bbox_AP50"] >= 0


def test_keep_classes_filters_both_formats_and_scores_only_the_kept_classes(shared_data, tmp_path):
    """coco-mini and its VOC copy restricted to person and car: the registered splits hold exactly the kept
    classes' boxes (counted here from the original files), every image stays, ground truth scores AP 100
    through the same evaluators, and an unknown name is refused naming the file and the classes."""
    import xml.etree.ElementTree as ET

    from detectron2.data import DatasetCatalog, MetadataCatalog

    from mocobench.datasets import DataError
    from mocobench.transfer.detection import keep_classes, register_data

    names = ("person", "car")
    src = json.loads((shared_data / "coco-mini/annotations/instances_val2017.json").read_text())
    ids = {c["id"]: c["name"] for c in src["categories"]}
    want = sorted((a["image_id"], ids[a["category_id"]]) for a in src["annotations"] if ids[a["category_id"]] in names)
    data = keep_classes("coco_det", str(shared_data / "coco-mini"), "07", names, tmp_path / "coco")
    train, test, n = register_data("coco_det", data)
    assert n == 2
    dicts = DatasetCatalog.get(test[0])
    thing = MetadataCatalog.get(test[0]).thing_classes
    got = sorted((d["image_id"], thing[a["category_id"]]) for d in dicts for a in d["annotations"])
    assert got == want and len(dicts) == len(src["images"])
    assert _gt_as_predictions(test[0], with_masks=False)["bbox"]["AP"] == pytest.approx(100.0)

    voc = shared_data / "voc-from-coco"
    test_ids = (voc / "VOC2007/ImageSets/Main/test.txt").read_text().split()
    want = sorted((i, o.findtext("name")) for i in test_ids
                  for o in ET.parse(voc / f"VOC2007/Annotations/{i}.xml").getroot().findall("object")
                  if o.findtext("name") in names)
    data = keep_classes("voc_det", str(voc), "07", ("car", "person"), tmp_path / "voc")
    train, test, n = register_data("voc_det", data, "07")
    assert n == 2 and MetadataCatalog.get(test[0]).thing_classes == ["car", "person"]  # labels.txt's order
    dicts = DatasetCatalog.get(test[0])
    got = sorted((d["image_id"], ("car", "person")[a["category_id"]]) for d in dicts for a in d["annotations"])
    assert got == want and len(dicts) == len(test_ids)
    assert _gt_as_predictions(test[0], with_masks=False)["bbox"]["AP50"] == pytest.approx(100.0)

    with pytest.raises(DataError, match=r"\['persons'\] are not classes of .*instances_train2017.json.*person"):
        keep_classes("coco_det", str(shared_data / "coco-mini"), "07", ("persons",), tmp_path / "bad")
    with pytest.raises(DataError, match=r"\['cars'\] are not classes of .*voc-from-coco.*aeroplane"):
        keep_classes("voc_det", str(voc), "07", ("person", "cars"), tmp_path / "bad2")


def test_cpu_crop_preset_is_the_measured_cpu_budget(tmp_path):
    """``preset=cpu-crop`` must be the configuration benchmarks/detection_cpu.py measured as person_crop_1000it
    (cpu-smoke plus these --set changes), so the separation it reports holds for the preset."""
    import importlib.util

    from mocobench.transfer import detection as det

    spec = importlib.util.spec_from_file_location("detection_cpu", Path(__file__).parents[1] / "benchmarks" /
                                                  "detection_cpu.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    task, _, sets, _, _ = bench.BUDGETS["person_crop_1000it"]
    assert task == "coco_det" and sets[0] == "keep_classes=person"  # a task option; the rest are detectron2 keys
    measured = sets[1:]
    common = ("coco_det", "coco_R_50_FPN_2x_moco.yaml", "w.pkl", tmp_path, 18, (("tr",), ("te",), 1), "naiveSyncBN")
    crop = det.build_cfg(*common, "cpu-crop", [], 0, "cpu")
    assert crop.dump() == det.build_cfg(*common, "cpu-smoke", [x for kv in measured for x in kv.split("=", 1)], 0,
                                        "cpu").dump()
    assert crop.INPUT.CROP.ENABLED and tuple(crop.INPUT.CROP.SIZE) == (320, 320) and crop.SOLVER.MAX_ITER == 1000
    assert crop.dump() != det.build_cfg(*common, "cpu-smoke", [], 0, "cpu").dump()
