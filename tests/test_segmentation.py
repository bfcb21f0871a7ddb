"""Semantic segmentation (``voc_seg``, ``cityscapes_seg``): the metrics against hand-computed values, the FCN's
shapes, the training view on a hand-made label map, the four data layouts (genuine VOC JPEGs, a converted SBD
release, Cityscapes ids, coco-mini's polygons), label errors, and real runs: two gloo processes against one,
exact resume after SIGKILL."""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from helpers import free_port, run_cli, tb_scalars
from PIL import Image
from torch import nn

from mocobench import dist
from mocobench.checkpoint import read_checkpoint
from mocobench.datasets import DataError
from mocobench.evaluators.segmentation import FCN, SegConfig, confusion, milestones, seg_scores, with_preset
from mocobench.metrics import read_metrics
from mocobench.segdata import (
    IGNORE,
    VOC_SEG_CLASSES,
    CocoAsVoc,
    ViewParams,
    convert_sbd,
    draw_view,
    keep_classes,
    load_split,
    make_view,
)
from mocobench.synth_det import SynthDetSpec, write_synthetic_segmentation


@pytest.fixture(scope="module")
def seg_data(tmp_path_factory) -> Path:
    """The synthetic segmentation set: 16 train + 6 val scenes of 64 px (5 classes)."""
    return write_synthetic_segmentation(tmp_path_factory.mktemp("seg") / "segmentation", SynthDetSpec(16, 6, 64))


# ------------------------------------------------------------------------------------------------ metrics

def test_scores_match_a_hand_computed_confusion_matrix_with_ignore_and_an_absent_class():
    classes = ("bg", "a", "b", "never")
    target = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 255]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 3, 0]])  # the two ignored pixels are predicted 3 and 0: not counted
    conf = confusion(pred, target, 4)
    assert conf.tolist() == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]]
    s = seg_scores(conf, classes)
    # IoU: bg 1/(2+2-1)=1/3, a 2/(2+3-2)=2/3, b 1/(2+1-1)=1/2; "never" is in neither prediction nor truth
    assert s["per_class_iou"] == pytest.approx({"bg": 100 / 3, "a": 200 / 3, "b": 50.0, "never": None})
    assert s["left_out"] == ["never"]
    assert s["mIoU"] == pytest.approx(100 * (1 / 3 + 2 / 3 + 1 / 2) / 3, abs=1e-9)
    assert s["pixel_acc"] == pytest.approx(100 * 4 / 6, abs=1e-9)
    assert s["mean_acc"] == pytest.approx(100 * (1 / 2 + 1 + 1 / 2) / 3, abs=1e-9)


def test_a_class_predicted_but_absent_from_the_truth_scores_zero_and_counts():
    s = seg_scores(confusion(torch.tensor([0, 1, 1]), torch.tensor([0, 0, 0]), 2), ("bg", "fg"))
    assert s["per_class_iou"] == {"bg": pytest.approx(100 / 3), "fg": 0.0}
    assert s["left_out"] == [] and s["mIoU"] == pytest.approx(100 / 6)


# ------------------------------------------------------------------------------------------------ model

@pytest.mark.parametrize("arch,channels", [("resnet18", 512), ("resnet50", 2048)])
def test_fcn_has_stride_16_dilated_conv5_and_the_papers_head(arch, channels):
    torch.manual_seed(0)
    net = getattr(torchvision.models, arch)()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    fcn = FCN(net, num_classes=21).eval()
    assert all(torch.equal(before[k], v) for k, v in fcn.backbone.state_dict().items()), "dilation changed weights"
    convs3 = [m for m in fcn.backbone.layer4.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert convs3 and all(c.dilation == (2, 2) and c.stride == (1, 1) and c.padding == (2, 2) for c in convs3)
    assert fcn.backbone.layer4[0].downsample[0].stride == (1, 1)
    assert fcn.backbone.layer3[0].downsample[0].stride == (2, 2)  # conv4 untouched
    head = [m for m in fcn.head if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.dilation, c.bias) for c in head] == [
        (channels, 256, (3, 3), (6, 6), None), (256, 256, (3, 3), (6, 6), None)]
    assert [type(m) for m in fcn.head] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU] * 2
    assert fcn.classifier.kernel_size == (1, 1) and fcn.classifier.out_channels == 21
    with torch.no_grad():
        x = torch.randn(2, 3, 96, 65)
        assert fcn.features(x).shape == (2, channels, 6, 5)  # ceil(96/16), ceil(65/16)
        assert fcn(x).shape == (2, 21, 96, 65)
        assert fcn(x, size=(200, 130)).shape == (2, 21, 200, 130)


def test_contracted_dilation_is_torchvisions_replace_stride_with_dilation():
    """With ``contract_dilation`` conv5 is exactly torchvision's dilated ResNet-50 (the reference): same weights,
    same map; the default (the paper's wording) dilates the first block too, and its map differs."""
    torch.manual_seed(0)
    ref = torchvision.models.resnet50(replace_stride_with_dilation=[False, False, True]).eval()
    ours = torchvision.models.resnet50().eval()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        want = nn.Sequential(*list(ref.children())[:-2])(x)
        got = FCN(ours, 2, contract_dilation=True).eval().features(x)
        paper = FCN(copy.deepcopy(ours), 2).eval().features(x)
    assert want.shape == (1, 2048, 6, 6)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(paper, want, atol=1e-3)


def test_milestones_are_the_papers_70_and_90_percent():
    assert milestones(SegConfig()) == (21000, 27000)  # mmselfsup step=[21000, 27000]
    from mocobench.evaluators.segmentation import CityscapesSegConfig

    c = CityscapesSegConfig()
    assert (c.iterations, c.lr, c.crop_size, milestones(c)) == (90000, 0.01, 769, (63000, 81000))


# ------------------------------------------------------------------------------------------------ views

def test_view_scales_pads_with_ignore_crops_and_flips_a_hand_made_label_map():
    label = np.array([[1, 2, 3], [4, 5, 6]], np.uint8)  # W 3, H 2
    img = Image.fromarray(np.full((2, 3, 3), 128, np.uint8))
    x, y = make_view(img, label, ViewParams(scale=2.0, top=0, left=1, flip=False), crop=5)
    # x2 nearest -> 6 wide, 4 high; padded to 5 rows with 255; window rows 0-4, columns 1-5
    expect = [[1, 2, 2, 3, 3], [1, 2, 2, 3, 3], [4, 5, 5, 6, 6], [4, 5, 5, 6, 6], [IGNORE] * 5]
    assert y.tolist() == expect
    assert x.shape == (3, 5, 5) and torch.all(x[:, -1] == 0) and torch.all(x[:, :-1] != 0)  # pad: 0 = mean colour
    _, yf = make_view(img, label, ViewParams(2.0, 0, 1, flip=True), crop=5)
    assert yf.tolist() == [row[::-1] for row in expect]


def test_view_pads_right_and_bottom_when_the_scaled_image_is_smaller_than_the_crop():
    label = np.array([[7, 8]], np.uint8)
    img = Image.fromarray(np.zeros((1, 2, 3), np.uint8))
    _, y = make_view(img, label, ViewParams(1.0, 0, 0, False), crop=3)
    assert y.tolist() == [[7, 8, IGNORE], [IGNORE] * 3, [IGNORE] * 3]


def test_drawn_views_stay_inside_the_padded_image_and_the_scale_range():
    rng = np.random.default_rng(0)
    for _ in range(500):
        w, h = int(rng.integers(1, 900)), int(rng.integers(1, 900))
        p = draw_view(rng, (w, h), 513, (0.5, 2.0))
        assert 0.5 <= p.scale <= 2.0
        sw, sh = max(1, round(w * p.scale)), max(1, round(h * p.scale))
        assert 0 <= p.top <= max(sh, 513) - 513 and 0 <= p.left <= max(sw, 513) - 513


# ------------------------------------------------------------------------------------------------ data layouts

def _palette() -> list[int]:
    """The PASCAL VOC colour map (VOCdevkit ``VOClabelcolormap.m``)."""
    pal = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal


@pytest.fixture
def voc_tree(shared_data, tmp_path) -> Path:
    """A VOCdevkit/VOC2012 with the 5 genuine JPEGs of voc-real-tiny, palette SegmentationClass PNGs drawn from
    their XML boxes (255 on the box borders, as VOC's object outlines), train (3) and val (2) lists."""
    import xml.etree.ElementTree as ET

    src = shared_data / "voc-real-tiny" / "VOCdevkit" / "VOC2012"
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    (voc / "SegmentationClass").mkdir(parents=True)
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    shutil.copytree(src / "JPEGImages", voc / "JPEGImages")
    ids = sorted(p.stem for p in (src / "JPEGImages").glob("*.jpg"))
    for i in ids:
        root = ET.parse(src / "Annotations" / f"{i}.xml").getroot()
        w, h = (int(root.find(f"size/{k}").text) for k in ("width", "height"))
        lab = np.zeros((h, w), np.uint8)
        for o in root.iter("object"):
            c = VOC_SEG_CLASSES.index(o.find("name").text)
            x0, y0, x1, y1 = (int(float(o.find(f"bndbox/{k}").text)) - 1 for k in ("xmin", "ymin", "xmax", "ymax"))
            lab[y0:y1 + 1, x0:x1 + 1] = IGNORE
            lab[y0 + 2:y1 - 1, x0 + 2:x1 - 1] = c
        im = Image.fromarray(lab)
        im.putpalette(_palette())
        im.save(voc / "SegmentationClass" / f"{i}.png")
    (voc / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(ids[:3]) + "\n")
    (voc / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(ids[3:]) + "\n")
    return tmp_path


def _sbd_release(root: Path, ids_train: list[str], ids_val: list[str], size=(40, 30)) -> dict[str, np.ndarray]:
    """An SBD ``benchmark_RELEASE/dataset`` in the release's format: ``cls/<id>.mat`` holding struct ``GTcls`` with
    ``Segmentation`` (uint8 class indices), ``Boundaries`` and ``CategoriesPresent``; train.txt, val.txt."""
    from scipy.io import savemat

    ds = root / "benchmark_RELEASE" / "dataset"
    (ds / "cls").mkdir(parents=True)
    masks = {}
    for n, i in enumerate(ids_train + ids_val):
        m = np.zeros(size[::-1], np.uint8)
        m[5:20, 3 + n:30] = 1 + n % 20
        masks[i] = m
        savemat(ds / "cls" / f"{i}.mat", {"GTcls": {"Segmentation": m, "Boundaries": np.zeros((20, 1), object),
                                                     "CategoriesPresent": np.array([[1 + n % 20]])}})
    (ds / "train.txt").write_text("\n".join(ids_train) + "\n")
    (ds / "val.txt").write_text("\n".join(ids_val) + "\n")
    return masks


def test_voc_layout_reads_genuine_jpegs_and_palette_masks(voc_tree):
    train = load_split(voc_tree / "VOCdevkit", "auto", "train")
    assert len(train) == 3 and train.classes == VOC_SEG_CLASSES
    img = train.image(0)
    lab = train.label(0, img.size)
    assert lab.shape == (img.height, img.width) and set(np.unique(lab)) - {0, IGNORE}
    with pytest.raises(DataError, match="fetch sbd"):
        load_split(voc_tree, "voc", "train_aug")


def test_sbd_conversion_builds_train_aug_as_mmsegmentation(voc_tree, tmp_path):
    voc = voc_tree / "VOCdevkit" / "VOC2012"
    train_ids = (voc / "ImageSets/Segmentation/train.txt").read_text().split()
    val_ids = (voc / "ImageSets/Segmentation/val.txt").read_text().split()
    # SBD holds one VOC train id, one VOC val id (both must not become aug) and two ids of its own
    extra = ["2008_000001", "2008_000002"]
    masks = _sbd_release(voc_tree / "sbd", [train_ids[0], extra[0]], [val_ids[0], extra[1]])
    for i in extra:  # their JPEGs: copies of a genuine one, resized to the mask's size
        Image.open(voc / "JPEGImages" / f"{train_ids[0]}.jpg").resize((40, 30)).save(voc / "JPEGImages" / f"{i}.jpg")
    convert_sbd(voc_tree)
    lists = voc / "ImageSets" / "Segmentation"
    assert lists.joinpath("aug.txt").read_text().split() == extra
    assert lists.joinpath("train_aug.txt").read_text().split() == sorted(train_ids + extra)
    assert sorted(p.stem for p in (voc / "SegmentationClassAug").glob("*.png")) == extra
    for i in extra:
        assert np.array_equal(np.asarray(Image.open(voc / "SegmentationClassAug" / f"{i}.png")), masks[i])
    split = load_split(voc_tree, "voc", "train_aug")
    sources = dict(zip([p.stem for p in split.images], split.labels, strict=True))
    assert sources[train_ids[0]].parent.name == "SegmentationClass"  # VOC's own mask for a VOC train image
    assert sources[extra[0]].parent.name == "SegmentationClassAug"
    assert np.array_equal(split.label(split.images.index(voc / "JPEGImages" / f"{extra[1]}.jpg")), masks[extra[1]])
    assert (voc / ".sbd_converted").exists()
    convert_sbd(voc_tree)  # a second call does nothing


def test_data_fetch_sbd_downloads_verifies_and_converts(voc_tree, server, monkeypatch):
    import hashlib

    from mocobench import fetch

    served, base = server
    rel = voc_tree / "release"
    _sbd_release(rel, ["2008_000003"], ["2008_000004"])
    voc = voc_tree / "VOCdevkit" / "VOC2012"
    for i in ("2008_000003", "2008_000004"):
        Image.new("RGB", (40, 30)).save(voc / "JPEGImages" / f"{i}.jpg")
    with tarfile.open(served / "benchmark.tgz", "w:gz") as t:
        t.add(rel / "benchmark_RELEASE", arcname="benchmark_RELEASE")
    md5 = hashlib.md5((served / "benchmark.tgz").read_bytes(), usedforsecurity=False).hexdigest()
    monkeypatch.setitem(fetch.DATASETS, "sbd", (fetch.Resource(f"{base}/benchmark.tgz", md5, "sbd"),))
    run_cli(["data", "fetch", "sbd", "--root", voc_tree])
    assert (voc / "ImageSets/Segmentation/aug.txt").read_text().split() == ["2008_000003", "2008_000004"]
    r = run_cli(["data", "fetch", "sbd", "--root", voc_tree / "empty"], expect_ok=False)
    assert "voc2012" in r.output and "first" in r.output


def test_cityscapes_label_ids_map_to_the_19_train_ids(tmp_path):
    img_dir, gt_dir = tmp_path / "leftImg8bit/val/aachen", tmp_path / "gtFine/val/aachen"
    img_dir.mkdir(parents=True)
    gt_dir.mkdir(parents=True)
    Image.new("RGB", (4, 1)).save(img_dir / "aachen_000000_000019_leftImg8bit.png")
    Image.fromarray(np.array([[7, 26, 0, 33]], np.uint8)).save(gt_dir / "aachen_000000_000019_gtFine_labelIds.png")
    split = load_split(tmp_path, "auto", "val")
    assert split.label(0).tolist() == [[0, 13, IGNORE, 18]]  # road, car, unlabeled, bicycle
    assert len(split.classes) == 19 and split.classes[13] == "car"
    with pytest.raises(DataError, match="login"):
        load_split(tmp_path, "cityscapes", "train")


def test_coco_polygons_become_voc_class_maps(shared_data):
    from pycocotools.coco import COCO

    root = shared_data / "coco-mini"
    split = load_split(root, "auto", "val")
    assert split.classes == VOC_SEG_CLASSES and len(split) == 158
    coco = COCO(str(root / "annotations" / "instances_val2017.json"))
    person = coco.getCatIds(catNms=["person"])[0]
    checked = 0
    for i, image_id in enumerate(split.labels[:40]):
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id, iscrowd=False))
        people = [a for a in anns if a["category_id"] == person]
        if not people:
            continue
        lab = split.label(i, split.image(i).size)
        union = np.zeros_like(lab, bool)
        for a in people:
            union |= coco.annToMask(a).astype(bool)
        others = np.zeros_like(lab, bool)  # other objects, and crowd regions (255) of any class
        for a in coco.loadAnns(coco.getAnnIds(imgIds=image_id)):
            if a["category_id"] != person or a["iscrowd"]:
                others |= coco.annToMask(a).astype(bool)
        only_person = union & ~others
        assert np.all(lab[only_person] == VOC_SEG_CLASSES.index("person"))
        assert np.all(lab[~union & ~others] == 0)
        checked += 1
    assert checked >= 5
    crowd = CocoAsVoc(root / "annotations" / "instances_val2017.json")
    crowded = [i for i, anns in crowd.anns.items() if any(a["iscrowd"] for a in anns)]
    if crowded:
        assert (crowd(crowded[0]) == IGNORE).any()


def test_coco_crowd_rles_are_ignored_and_smaller_objects_drawn_over_larger(tmp_path):
    """A hand-made COCO file: a large dog polygon with a small cat polygon inside it, a compressed-RLE crowd person,
    and a giraffe (not a VOC class: background)."""
    from pycocotools import mask as mask_utils

    crowd = np.zeros((20, 30), np.uint8, order="F")
    crowd[15:, 20:] = 1
    rle = mask_utils.encode(crowd)
    rle["counts"] = rle["counts"].decode()
    anns = [
        {"id": 1, "image_id": 1, "category_id": 18, "iscrowd": 0, "area": 150.0,
         "segmentation": [[2, 2, 17, 2, 17, 12, 2, 12]]},  # dog, x 2-17, y 2-12
        {"id": 2, "image_id": 1, "category_id": 17, "iscrowd": 0, "area": 9.0,
         "segmentation": [[5, 5, 8, 5, 8, 8, 5, 8]]},  # cat inside the dog
        {"id": 3, "image_id": 1, "category_id": 1, "iscrowd": 1, "area": 50.0, "segmentation": rle},
        {"id": 4, "image_id": 1, "category_id": 25, "iscrowd": 0, "area": 20.0,
         "segmentation": [[22, 2, 27, 2, 27, 6, 22, 6]]},
    ]
    cats = [{"id": 1, "name": "person"}, {"id": 17, "name": "cat"}, {"id": 18, "name": "dog"},
            {"id": 25, "name": "giraffe"}]
    f = tmp_path / "instances.json"
    f.write_text(json.dumps({"images": [{"id": 1, "width": 30, "height": 20, "file_name": "a.jpg"}],
                             "annotations": anns, "categories": cats}))
    lab = CocoAsVoc(f)(1)
    dog, cat = VOC_SEG_CLASSES.index("dog"), VOC_SEG_CLASSES.index("cat")
    assert lab[10, 3] == dog and lab[6, 6] == cat  # the cat stays on top of the larger dog
    assert np.all(lab[15:, 20:] == IGNORE) and np.all(lab[2:6, 23:27] == 0)  # crowd 255; giraffe background
    f.write_text("{}")
    with pytest.raises(DataError, match="is not a COCO instances file"):
        CocoAsVoc(f)


def test_a_label_value_outside_the_classes_names_the_file_and_the_value(seg_data, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(seg_data, bad)
    name = (bad / "val.txt").read_text().split()[0]
    lab = np.asarray(Image.open(bad / "labels" / f"{name}.png")).copy()
    lab[0, 0] = 9
    Image.fromarray(lab).save(bad / "labels" / f"{name}.png")
    split = load_split(bad, "auto", "val")
    with pytest.raises(DataError, match=rf"labels/{name}.png holds value 9; expected class indices 0..4"):
        split.label(0)
    Image.new("RGB", (64, 64)).save(bad / "labels" / f"{name}.png")
    with pytest.raises(DataError, match="RGB image; expected one channel"):
        split.label(0)
    Image.new("L", (10, 64)).save(bad / "labels" / f"{name}.png")
    with pytest.raises(DataError, match="is 10x64 but its image"):
        split.label(0, split.image(0).size)
    (bad / "labels" / f"{name}.png").unlink()
    with pytest.raises(DataError, match="missing"):
        load_split(bad, "auto", "val")


def test_keep_classes_folds_the_other_classes_into_the_background(seg_data):
    split = load_split(seg_data, "auto", "train")
    sub = keep_classes(split, ("triangle", "circle"))
    assert sub.classes == ("background", "triangle", "circle")
    for i in range(4):
        lab = split.label(i)
        want = np.select([lab == 3, lab == 1, lab == IGNORE], [1, 2, IGNORE], 0)
        assert np.array_equal(sub.label(i), want)
    with pytest.raises(DataError, match=r"\['dog'\] are not classes"):
        keep_classes(split, ("dog",))


def test_synthetic_labels_are_the_painted_shapes(seg_data):
    split = load_split(seg_data, "auto", "train")
    assert split.classes == ("background", "circle", "square", "triangle", "cross") and len(split) == 16
    for i in range(4):
        img, lab = np.asarray(split.image(i)).astype(float), split.label(i)
        assert set(np.unique(lab)) > {0}
        # each object is one flat colour painted through the same polygon; the background is noisy
        inside = {tuple(c) for c in img[lab > 0]}
        assert len(inside) <= 3
        assert not inside & {tuple(c) for c in img[lab == 0]}


# ------------------------------------------------------------------------------------------------ runs

TINY_SEG = ["--set", "crop_size=64", "--set", "batch_size=4", "--set", "iterations=4", "--set", "workers=0",
            "--set", "log_every=1", "--set", "scale_range=0.5,1.5", "--set", "head_channels=32"]


def _transfer(data: Path, out: Path, *extra: str) -> list[str]:
    return ["transfer", "--task", "voc_seg", "random", "--arch", "resnet18", "--data", str(data), "--out", str(out),
            *TINY_SEG, *extra]


def test_a_cpu_run_writes_miou_per_class_iou_and_what_it_left_out(seg_data, tmp_path):
    run_cli(_transfer(seg_data, tmp_path / "run"))
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert set(res["metrics"]) == {"mIoU", "pixel_acc", "mean_acc"}
    d = res["config"]["derived"]
    assert set(d["per_class_iou"]) == {"background", "circle", "square", "triangle", "cross"}
    assert d["output_stride"] == 16 and d["milestones"] == [3, 4] and d["layout"] == "folder"
    assert d["deviations"] and d["iterations_resumed_at"] == 0 and d["s_per_iteration"] > 0
    assert res["metrics"]["mIoU"] == pytest.approx(np.mean([v for v in d["per_class_iou"].values() if v is not None]))
    board = tb_scalars(tmp_path / "run" / "tensorboard")
    assert [s for s, _ in board["segmentation/loss"]] == [1, 2, 3, 4] and "segmentation/lr" in board


def test_preset_values_apply_under_explicit_settings(seg_data, tmp_path):
    cfg = with_preset(SegConfig, "cpu-smoke", crop_size=96)
    assert (cfg.crop_size, cfg.batch_size, cfg.iterations, cfg.test_scale) == (96, 8, 300, 0.25)
    run_cli(_transfer(seg_data, tmp_path / "p", "--set", "preset=cpu-smoke", "--set", "scale_range=0.5,2.0",
                      "--set", "test_scale=1", "--set", "iterations=2"))
    c = json.loads((tmp_path / "p" / "results.json").read_text())["config"]
    assert (c["crop_size"], c["batch_size"], c["scale_range"], c["test_scale"], c["iterations"]) == (
        64, 4, [0.5, 2.0], 1.0, 2)  # explicit values win, the preset fills the rest (checkpoint_every)
    assert c["checkpoint_every"] == 100


def test_stop_and_resume_equals_the_uninterrupted_run(seg_data, tmp_path):
    run_cli(_transfer(seg_data, tmp_path / "ref"))
    run_cli(_transfer(seg_data, tmp_path / "cut", "--set", "stop_at=2"))
    assert not (tmp_path / "cut" / "results.json").exists()
    assert read_checkpoint(tmp_path / "cut" / "seg_last.pth")["iteration"] == 2
    r = run_cli(_transfer(seg_data, tmp_path / "cut", "--set", "iterations=5"), expect_ok=False)
    assert "other settings or another checkpoint (iterations)" in r.output
    r = run_cli([*_transfer(seg_data, tmp_path / "cut"), "--arch", "resnet34"], expect_ok=False)
    assert "seg_last.pth" in r.output and "backbone arch" in r.output  # another network never continues this one
    run_cli(_transfer(seg_data, tmp_path / "cut", "--set", "stop_at=2"))  # the same stop again: no work lost
    assert read_checkpoint(tmp_path / "cut" / "seg_last.pth")["iteration"] == 2
    run_cli(_transfer(seg_data, tmp_path / "cut"))
    _assert_same(tmp_path / "ref", tmp_path / "cut", atol=0)
    # the records past the resumed iteration are dropped, not repeated: the same curve as the uninterrupted run
    assert read_metrics(tmp_path / "cut" / "metrics.jsonl") == read_metrics(tmp_path / "ref" / "metrics.jsonl")


def test_a_frozen_backbone_keeps_the_loaded_weights_and_bn_statistics_and_trains_the_head(seg_data, tmp_path):
    net = torchvision.models.resnet18()
    for m in net.modules():  # statistics unlike a fresh BN's (0, 1), so a single update would show
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0)
    torch.save(net.state_dict(), tmp_path / "tv.pth")
    args = [a if a != "random" else str(tmp_path / "tv.pth") for a in _transfer(seg_data, tmp_path / "run")]
    run_cli([*args, "--set", "frozen_backbone=true", "--set", "head_convs=0"])
    model = read_checkpoint(tmp_path / "run" / "seg_last.pth")["model"]
    loaded = net.state_dict()
    backbone = {k.removeprefix("backbone."): v for k, v in model.items() if k.startswith("backbone.")}
    assert set(backbone) == set(loaded) - {"fc.weight", "fc.bias"}
    for k, v in backbone.items():  # weights, BN statistics and num_batches_tracked: bit for bit
        assert torch.equal(v, loaded[k]), f"{k} changed"
    assert set(model) - {f"backbone.{k}" for k in backbone} == {"classifier.weight", "classifier.bias"}  # linear
    assert model["classifier.bias"].abs().sum() > 0  # initialised to zero: the four SGD steps moved the head


def _assert_same(a: Path, b: Path, atol: float, rtol: float = 0.0) -> None:
    sa, sb = (read_checkpoint(p / "seg_last.pth") for p in (a, b))
    assert sa["iteration"] == sb["iteration"]
    for k, v in sa["model"].items():
        torch.testing.assert_close(v, sb["model"][k], atol=atol, rtol=rtol, msg=f"{k} differs")
    assert sa["losses"] == pytest.approx(sb["losses"], abs=max(atol, 1e-6))
    if atol == 0:
        assert sa["losses"] == sb["losses"]
        ma, mb = (json.loads((p / "results.json").read_text())["metrics"] for p in (a, b))
        assert ma == mb


@pytest.mark.slow
def test_kill_9_mid_run_resumes_exactly(seg_data, tmp_path):
    args = _transfer(seg_data, tmp_path / "ref", "--set", "iterations=6", "--set", "checkpoint_every=2")
    run_cli(args)
    out = tmp_path / "killed"
    args = [a if a != str(tmp_path / "ref") else str(out) for a in args]
    proc = subprocess.Popen([sys.executable, "-m", "mocobench.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    state = out / "seg_last.pth"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        if state.exists() and read_checkpoint(state)["iteration"] >= 2:
            break
        time.sleep(0.02)
    proc.kill()
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert 2 <= read_checkpoint(state)["iteration"] < 6
    run_cli(args)
    _assert_same(tmp_path / "ref", out, atol=0)


def _bn_worker(rank: int, port: int, out: str) -> None:
    import torch.distributed as tdist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    tdist.init_process_group("gloo", rank=rank, world_size=2)
    torch.manual_seed(0)
    x = torch.randn(6, 4, 5, 3, dtype=torch.float64) * 3 + 1
    w = torch.randn(6, 4, 5, 3, dtype=torch.float64)
    bn = dist.sync_batchnorm(nn.Sequential(nn.BatchNorm2d(4)).double(), torch.device("cpu"))
    assert type(bn[0]) is dist.GlooSyncBatchNorm
    xs = x[rank * 3:(rank + 1) * 3].clone().requires_grad_()
    for _ in range(2):
        y = bn(xs)
        (y * w[rank * 3:(rank + 1) * 3]).sum().backward()
    torch.save({"y": y.detach(), "gx": xs.grad, "gw": bn[0].weight.grad, "gb": bn[0].bias.grad,
                "state": bn.state_dict()}, Path(out) / f"bn{rank}.pt")
    tdist.destroy_process_group()


@pytest.mark.slow
def test_gloo_sync_batchnorm_equals_batchnorm_over_the_global_batch(tmp_path):
    import torch.multiprocessing as mp

    mp.start_processes(_bn_worker, args=(free_port(), str(tmp_path)), nprocs=2, start_method="spawn")
    r = [torch.load(tmp_path / f"bn{i}.pt") for i in range(2)]
    torch.manual_seed(0)
    x = (torch.randn(6, 4, 5, 3, dtype=torch.float64) * 3 + 1).requires_grad_()
    w = torch.randn(6, 4, 5, 3, dtype=torch.float64)
    bn = nn.BatchNorm2d(4).double()
    for _ in range(2):
        y = bn(x)
        (y * w).sum().backward()
    close = dict(atol=1e-12, rtol=0)
    torch.testing.assert_close(torch.cat([r[0]["y"], r[1]["y"]]), y.detach(), **close)
    torch.testing.assert_close(torch.cat([r[0]["gx"], r[1]["gx"]]), x.grad, **close)
    # parameter gradients: each rank holds its share (DDP sums them)
    torch.testing.assert_close(r[0]["gw"] + r[1]["gw"], bn.weight.grad, **close)
    torch.testing.assert_close(r[0]["gb"] + r[1]["gb"], bn.bias.grad, **close)
    for k, v in bn.state_dict().items():
        torch.testing.assert_close(r[0]["state"][f"0.{k}"], v, **close)
        torch.testing.assert_close(r[1]["state"][f"0.{k}"], v, **close)


@pytest.mark.slow
def test_two_gloo_processes_under_torchrun_train_the_one_process_network(seg_data, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = _transfer(seg_data, tmp_path / "ddp")[1:]
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          str(free_port()), "-m", "mocobench.cli", "transfer", *args],
                         capture_output=True, text=True, env=env, timeout=600)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    one = subprocess.run([sys.executable, "-m", "mocobench.cli", "transfer",
                          *_transfer(seg_data, tmp_path / "one")[1:]], capture_output=True, text=True, env=env,
                         timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    # float32: measured max differences 3e-6 absolute / 1.3e-6 relative (BN running variances), losses equal to
    # the logged 6 decimals; a per-process loss mean or unsynchronised BN is off by more than 1e-3
    _assert_same(tmp_path / "one", tmp_path / "ddp", atol=1e-6, rtol=1e-5)
    d = json.loads((tmp_path / "ddp" / "results.json").read_text())["config"]["derived"]
    assert d["processes"] == 2 and d["per_process_batch"] == 2
    a, b = (json.loads((tmp_path / p / "results.json").read_text()) for p in ("one", "ddp"))
    # the sharded eval sees every val pixel once: the same scores (weights equal to 1e-6 give the same argmax here)
    assert a["metrics"] == pytest.approx(b["metrics"], abs=1e-6)
    assert a["config"]["derived"]["per_class_iou"] == pytest.approx(b["config"]["derived"]["per_class_iou"], abs=1e-6)
