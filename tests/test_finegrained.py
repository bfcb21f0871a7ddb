"""Fine-grained transfer: the wd selection against direct scikit-learn fits, and end-to-end runs."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import TINY, run_cli
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score

from mocobench.evaluators.finegrained import select_and_fit
from mocobench.results import read_results


def _blobs(n, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.normal(size=(n, 5)) + 1.5 * np.eye(3, 5)[y]
    return x, y


def test_selection_equals_a_direct_scikit_learn_search():
    train, val, test = _blobs(60, 0), _blobs(40, 1), _blobs(40, 2)
    wds = np.logspace(-3, 2, 6)
    res = select_and_fit(train, val, test, wds, "mean_per_class", warm_start=False)
    direct = []
    for wd in wds:  # the protocol written out: fit on train, score val, largest wd wins ties
        clf = LogisticRegression(C=1 / wd, max_iter=1000).fit(*train)
        direct.append((100 * balanced_accuracy_score(val[1], clf.predict(val[0])), wd))
    best_score = max(s for s, _ in direct)
    best_wd = max(wd for s, wd in direct if s == best_score)
    assert res["wd"] == pytest.approx(best_wd) and res["val"] == pytest.approx(best_score)
    clf = LogisticRegression(C=1 / best_wd, max_iter=1000).fit(np.concatenate([train[0], val[0]]),
                                                                np.concatenate([train[1], val[1]]))
    assert res["test"]["mean_per_class"] == pytest.approx(100 * balanced_accuracy_score(test[1], clf.predict(test[0])))
    warm = select_and_fit(train, val, test, wds, "mean_per_class", warm_start=True)
    assert abs(warm["test"]["top1"] - res["test"]["top1"]) <= 2.5  # one test sample in 40


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # max_iter=200 keeps it short
def test_linear_protocol_on_real_flowers(shared_data, synth, tmp_path):
    run_cli(["pretrain", "--data", synth / "train", "--out", tmp_path / "pre", "--epochs", "1", "--max-steps", "1", *TINY])
    out = tmp_path / "fg"
    run_cli(["transfer", tmp_path / "pre" / "checkpoint_last.pth", "--task", "finegrained",
             "--data", shared_data / "flowers102-sub", "--out", out, "--set", "image_size=32", "--set", "workers=0",
             "--set", "grid_size=3", "--set", "max_iter=200"])
    res = read_results(out / "results.json")
    assert {"top1", "mean_per_class", "val_mean_per_class"} <= res["metrics"].keys()
    d = res["config"]["derived"]
    assert d["sizes"] == {"train": 1020, "val": 291, "test": 460} and len(d["val_curve"]) == 3
    assert d["C_chosen"] == pytest.approx(1 / d["wd_chosen"])


def test_finetune_protocol_runs(synth, tmp_path):
    root = tmp_path / "split"
    root.mkdir()
    for split, src in (("train", "train"), ("valid", "val"), ("test", "val")):
        (root / split).symlink_to(synth / src)
    run_cli(["transfer", "random", "--arch", "resnet18", "--task", "finegrained", "--data", root, "--out", tmp_path / "ft",
             "--set", "protocol=finetune", "--set", "ft_epochs=1", "--set", "image_size=32", "--set", "workers=0"])
    m = read_results(tmp_path / "ft" / "results.json")["metrics"]
    assert {"top1", "mean_per_class", "val_top1", "val_mean_per_class"} <= m.keys()


def test_missing_data_is_named(synth, tmp_path):
    r = run_cli(["transfer", "random", "--arch", "resnet18", "--task", "finegrained", "--data", synth,
                 "--out", tmp_path / "a"], expect_ok=False)
    assert "has none of the splits test" in r.output
    r = run_cli(["transfer", "random", "--arch", "resnet18", "--task", "finegrained", "--data", tmp_path,
                 "--out", tmp_path / "b", "--set", "dataset=pets"], expect_ok=False)
    assert "pets: cannot read OxfordIIITPet" in r.output and "download it there first" in r.output
