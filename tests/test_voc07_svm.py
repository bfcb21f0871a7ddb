"""VOC07 SVM (Goyal et al. 2019, FAIR's code): the AP functions against hand-worked examples, the labels
(difficult objects) against hand-written annotations, and the task on real VOC-format images."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import run_cli

from mocobench.evaluators.voc07_svm import VOC_CLASSES, ap_11_point, ap_all_points, l2_rows, voc_labels


def test_ap_all_points_and_11_point_by_hand():
    scores, targets = np.array([0.9, 0.8, 0.7, 0.6]), np.array([1, -1, 1, -1])
    # precision 1, .5, .667, .5 at recall .5, .5, 1, 1; envelope 1, .667 -> .5 * 1 + .5 * 2/3
    assert ap_all_points(scores, targets) == pytest.approx(0.5 + 0.5 * 2 / 3)
    # 11 points: recall >= 0 .. .5 -> 1 (6 points), >= .6 .. 1 -> 2/3 (5 points)
    assert ap_11_point(scores, targets) == pytest.approx((6 + 5 * 2 / 3) / 11)
    assert ap_all_points(np.array([0.1, 0.9]), np.array([1, -1])) == pytest.approx(0.5)
    assert ap_all_points(np.array([3.0, 2.0, 1.0]), np.array([1, 1, -1])) == pytest.approx(1.0)


def test_l2_rows_is_fairs_norm_plus_epsilon():
    x = np.array([[3.0, 4.0], [0.0, 0.0]])
    np.testing.assert_allclose(l2_rows(x), [[3 / 5.00001, 4 / 5.00001], [0, 0]])


def _annotation(objects):
    body = "".join(f"<object><name>{n}</name><difficult>{int(d)}</difficult></object>" for n, d in objects)
    return f"<annotation><filename>x.jpg</filename>{body}</annotation>"


def test_labels_present_difficult_only_and_absent(tmp_path):
    (tmp_path / "ImageSets" / "Main").mkdir(parents=True)
    (tmp_path / "Annotations").mkdir()
    images = {"a": [("dog", 0), ("dog", 1), ("cat", 1)], "b": [("cat", 1), ("cat", 1)], "c": [("person", 0)]}
    for name, objs in images.items():
        (tmp_path / "Annotations" / f"{name}.xml").write_text(_annotation(objs))
    (tmp_path / "ImageSets" / "Main" / "trainval.txt").write_text("a\nb\nc\n")
    images_list, labels = voc_labels(tmp_path, "trainval")
    dog, cat, person = (VOC_CLASSES.index(c) for c in ("dog", "cat", "person"))
    assert labels[0, dog] == 1 and labels[0, cat] == -1 and labels[1, cat] == -1 and labels[2, person] == 1
    assert labels.sum() == 1 - 1 - 1 + 1 and images_list.paths[1].name == "b.jpg"
    (tmp_path / "Annotations" / "c.xml").write_text(_annotation([("person", 0), ("unicorn", 0)]))
    with pytest.raises(Exception, match="unknown class 'unicorn'"):
        voc_labels(tmp_path, "trainval")


@pytest.mark.slow
def test_voc07_svm_on_real_voc_images(shared_data, tmp_path):
    out = tmp_path / "svm"
    run_cli(["transfer", "random", "--arch", "resnet18", "--task", "voc07_svm", "--data", shared_data / "voc-from-coco",
             "--set", "image_size=64", "--set", "pool=global", "--set", "workers=0", "--set", "costs=0.01,0.1,1.0",
             "--set", "low_shot=true", "--set", "low_shot_k=1,2", "--set", "low_shot_samples=2", "--out", out])
    rec = json.loads((out / "results.json").read_text())
    m, d = rec["metrics"], rec["config"]["derived"]
    assert 0 < m["mAP"] < 100 and d["feature_dim"] == 512 and d["sizes"] == {"train": 128, "test": 132}
    assert set(d["ap_per_class"]) | set(d["classes_left_out"]) == set(VOC_CLASSES)
    assert m["mAP"] == pytest.approx(np.mean(list(d["ap_per_class"].values())))
    assert set(d["cost_per_class"].values()) <= {0.01, 0.1, 1.0}
    for k in (1, 2):
        assert m[f"lowshot_k{k}_min"] <= m[f"lowshot_k{k}_mean"] <= m[f"lowshot_k{k}_max"]


def test_fair_pool_is_res5_averaged_with_kernel_6_stride_1():
    import torch
    import torchvision

    from mocobench.evaluators.features import resnet_features

    torch.manual_seed(0)
    net = torchvision.models.resnet18().eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        got = resnet_features(net, x, "res5_k6s1")
        res5 = net.layer4(net.layer3(net.layer2(net.layer1(net.maxpool(net.relu(net.bn1(net.conv1(x))))))))
    assert res5.shape[-2:] == (7, 7) and got.shape == (2, 512 * 2 * 2)
    ref = torch.stack([res5[:, :, i:i + 6, j:j + 6].mean(dim=(2, 3)) for i in range(2) for j in range(2)], dim=2)
    torch.testing.assert_close(got, ref.flatten(1), atol=1e-6, rtol=1e-5)  # channel-major, as flatten of (C, 2, 2)
    with pytest.raises(ValueError, match="smaller than the 6x6 pooling window"):
        resnet_features(net, torch.randn(1, 3, 64, 64), "res5_k6s1")


def test_training_targets_and_low_shot_rows():
    from mocobench.evaluators.voc07_svm import low_shot_rows, train_targets

    labels = np.array([1, 0, -1, 1, 0, 0] * 20)
    np.testing.assert_array_equal(train_targets(np.array([1, 0, -1])), [1, -1, -1])  # difficult: a negative
    rows = low_shot_rows(labels, 2, [0, 2, 0, 5])
    assert len(rows) == 2 + 38 and len(set(rows.tolist())) == 40
    assert (labels[rows[:2]] == 1).all() and (labels[rows[2:]] == 0).all()  # never a difficult image
    np.testing.assert_array_equal(rows, low_shot_rows(labels, 2, [0, 2, 0, 5]))
    assert not np.array_equal(rows, low_shot_rows(labels, 2, [0, 2, 1, 5]))


def test_the_first_best_cost_is_kept():
    from mocobench.evaluators.voc07_svm import train_class

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(3, 0.1, (12, 4)), rng.normal(-3, 0.1, (12, 4))])
    y = np.array([1] * 12 + [-1] * 12)
    _, cost, cv = train_class(x, y, (0.01, 1.0, 100.0), 3, 2000, 0)
    assert cv == [1.0, 1.0, 1.0] and cost == 0.01  # separable: every cost ties, the first is chosen
