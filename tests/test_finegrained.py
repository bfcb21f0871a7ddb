"""Fine-grained transfer: the wd selection against direct scikit-learn fits, and end-to-end runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import TINY, run_cli
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score

from mocobench.augment import IMAGENET_MEAN, IMAGENET_STD
from mocobench.evaluators.finegrained import FinegrainedConfig, holdout_split, select_and_fit
from mocobench.results import read_results


def _blobs(n, seed, sep=1.5):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.normal(size=(n, 5)) + sep * np.eye(3, 5)[y]
    return x, y


def test_selection_equals_a_direct_scikit_learn_search():
    train, val, test = _blobs(60, 0, 4.0), _blobs(40, 1, 4.0), _blobs(40, 2, 1.5)  # separable: weak wds tie on val
    wds = np.logspace(-3, 2, 6)
    res = select_and_fit(train, val, test, wds, "mean_per_class", max_iter=1000, warm_start=False)
    direct = []
    for wd in wds:  # the protocol written out: fit on train, score val, the smallest wd wins ties (ssl-transfer)
        clf = LogisticRegression(C=1 / wd, max_iter=1000).fit(*train)
        direct.append((100 * balanced_accuracy_score(val[1], clf.predict(val[0])), wd))
    best_score = max(s for s, _ in direct)
    best_wd = min(wd for s, wd in direct if s == best_score)
    assert sum(s == best_score for s, _ in direct) >= 2, "the data must produce a tie for this test to pin the rule"
    assert res["wd"] == pytest.approx(best_wd) and res["val"] == pytest.approx(best_score)
    clf = LogisticRegression(C=1 / best_wd, max_iter=1000).fit(np.concatenate([train[0], val[0]]),
                                                                np.concatenate([train[1], val[1]]))
    assert res["test"]["mean_per_class"] == pytest.approx(100 * balanced_accuracy_score(test[1], clf.predict(test[0])))
    assert [c["wd"] for c in res["curve"]] == sorted(wds)  # walked from the smallest wd up
    warm = select_and_fit(train, val, test, wds, "mean_per_class", max_iter=1000, warm_start=True)
    assert abs(warm["test"]["top1"] - res["test"]["top1"]) <= 2.5  # one test sample in 40


def test_the_metric_follows_the_data_set_as_ssl_transfer():
    """ssl-transfer linear.py L394-406: mean per class for Aircraft, Pets, Flowers; top-1 for the others."""
    assert {d: FinegrainedConfig(dataset=d).resolved_metric() for d in ("aircraft", "pets", "flowers102")} == \
        dict.fromkeys(("aircraft", "pets", "flowers102"), "mean_per_class")
    for d in ("cars", "dtd", "food101", "cifar10", "cifar100", "folder"):
        assert FinegrainedConfig(dataset=d).resolved_metric() == "top1"
    assert FinegrainedConfig(dataset="cars", metric="mean_per_class").resolved_metric() == "mean_per_class"


def test_preprocessing_is_bicubic_short_side_224_then_centre_crop(shared_data):
    """The default keeps the whole short side (Resize(224, bicubic) + CenterCrop(224)), not the ImageNet eval
    transform's Resize(256) + CenterCrop(224); checked against PIL written out (exact)."""
    from PIL import Image
    from torchvision.transforms.functional import to_tensor

    path = next((shared_data / "flowers102-sub" / "train").rglob("*.jpg"))
    img = Image.open(path).convert("RGB").resize((500, 375), Image.BICUBIC)  # a short side that is not 224
    w, h = img.size
    size = (224, int(224 * h / w)) if w <= h else (int(224 * w / h), 224)  # torchvision: int() of the long side
    bilinear = img.resize(size, Image.BILINEAR)
    ref = img.resize(size, Image.BICUBIC)
    left, top = round((ref.width - 224) / 2), round((ref.height - 224) / 2)
    ref = to_tensor(ref.crop((left, top, left + 224, top + 224)))
    _, tf = FinegrainedConfig().transforms()
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    torch.testing.assert_close(tf(img) * std + mean, ref, atol=1e-6, rtol=0)
    assert not torch.allclose(to_tensor(bilinear.crop((left, top, left + 224, top + 224))), ref, atol=1e-3)
    _, old = FinegrainedConfig(preprocess="imagenet").transforms()
    assert not torch.allclose(old(img), tf(img), atol=1e-2)


def test_holdout_split_is_ssl_transfers_numpy_shuffle():
    indices = list(range(103))
    np.random.seed(0)  # ssl-transfer linear.py: np.random.seed(random_seed); np.random.shuffle(indices)
    np.random.shuffle(indices)
    train, val = holdout_split(103, 0.2, 0)
    assert val == sorted(indices[:20]) and train == sorted(indices[20:])


def test_linear_protocol_on_real_flowers(shared_data, synth, tmp_path):
    run_cli(["pretrain", "--data", synth / "train", "--out", tmp_path / "pre", "--epochs", "1", "--max-steps", "1", *TINY])
    out = tmp_path / "fg"
    run_cli(["transfer", tmp_path / "pre" / "checkpoint_last.pth", "--task", "finegrained",
             "--data", shared_data / "flowers102-sub", "--out", out, "--set", "image_size=32", "--set", "workers=0",
             "--set", "grid_size=3", "--set", "max_iter=200", "--set", "metric=mean_per_class"])
    res = read_results(out / "results.json")
    assert {"top1", "mean_per_class", "val_mean_per_class"} <= res["metrics"].keys()
    d = res["config"]["derived"]
    assert d["sizes"] == {"train": 1020, "val": 291, "test": 460} and len(d["val_curve"]) == 3
    assert d["C_chosen"] == pytest.approx(1 / d["wd_chosen"])
    assert d["headline"] == "mean_per_class" and d["max_iter"] == 200 and d["split_seed"] == 0
    assert "Resize(size=32, interpolation=bicubic" in d["transform"] and d["grid_order"].startswith("ascending wd")
    assert "ft_steps" in d["unused"] and "grid_size" not in d["unused"]  # not part of the linear protocol's hash


def test_finetune_protocol_runs(synth, tmp_path):
    root = tmp_path / "split"
    root.mkdir()
    for split, src in (("train", "train"), ("valid", "val"), ("test", "val")):
        (root / split).symlink_to(synth / src)
    run_cli(["transfer", "random", "--arch", "resnet18", "--task", "finegrained", "--data", root, "--out", tmp_path / "ft",
             "--set", "protocol=finetune", "--set", "ft_steps=2", "--set", "ft_lrs=0.01,0.001", "--set", "ft_wds=0,1e-4",
             "--set", "ft_batch_size=16", "--set", "image_size=32", "--set", "workers=0"])
    res = read_results(tmp_path / "ft" / "results.json")
    assert {"top1", "mean_per_class", "val_top1"} <= res["metrics"].keys()
    d = res["config"]["derived"]
    assert [(g["lr"], g["wd"]) for g in d["ft_grid"]] == [(0.01, 0.0), (0.01, 1e-4), (0.001, 0.0), (0.001, 1e-4)]
    best = max(g["top1"] for g in d["ft_grid"])
    assert (d["lr_chosen"], d["wd_chosen"]) == next((g["lr"], g["wd"]) for g in d["ft_grid"] if g["top1"] == best)
    assert res["metrics"]["val_top1"] == best and d["headline"] == "top1"


def test_missing_data_is_named(synth, tmp_path):
    r = run_cli(["transfer", "random", "--arch", "resnet18", "--task", "finegrained", "--data", synth,
                 "--out", tmp_path / "a"], expect_ok=False)
    assert "has none of the splits test" in r.output
    r = run_cli(["transfer", "random", "--arch", "resnet18", "--task", "finegrained", "--data", tmp_path,
                 "--out", tmp_path / "b", "--set", "dataset=pets"], expect_ok=False)
    assert "pets: cannot read OxfordIIITPet" in r.output and "download it there first" in r.output
