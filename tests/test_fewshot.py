"""Few-shot (ssl-transfer ``few_shot.py``): the nearest-prototype episode against a hand-written loop, the
confidence interval against its formula, and the task on real CIFAR-10 images."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from helpers import run_cli

from mocobench.evaluators.fewshot import episode_accuracy, fewshot_transform, run_episodes


def test_episode_accuracy_is_the_nearest_prototype_by_squared_euclidean_distance():
    g = torch.Generator().manual_seed(0)
    support, query = torch.randn(5, 3, 8, generator=g, dtype=torch.float64), torch.randn(5, 4, 8, generator=g,
                                                                                              dtype=torch.float64)
    protos = [support[w].mean(0) for w in range(5)]
    right = 0
    for w in range(5):
        for q in query[w]:
            d = [float(((q - p) ** 2).sum()) for p in protos]
            right += int(min(range(5), key=d.__getitem__) == w)
    assert episode_accuracy(support, query) == pytest.approx(100.0 * right / 20, abs=1e-12)


def test_episodes_and_the_confidence_interval():
    g = torch.Generator().manual_seed(1)
    labels = torch.arange(8).repeat_interleave(30)
    feats = torch.randn(240, 16, generator=g, dtype=torch.float64) + 0.8 * torch.nn.functional.one_hot(labels, 16)
    mean, ci, acc = run_episodes(feats, labels, 5, 5, 15, 50, seed=3)
    assert len(acc) == 50 and mean == pytest.approx(np.mean(acc))
    assert ci == pytest.approx(1.96 * np.std(acc, ddof=0) / math.sqrt(50))  # ssl-transfer: np.std, ddof 0
    assert run_episodes(feats, labels, 5, 5, 15, 50, seed=3)[2] == acc  # seeded: repeatable
    assert run_episodes(feats, labels, 5, 5, 15, 50, seed=4)[2] != acc
    assert 20 < mean < 100  # the class signal is found (chance is 20%)
    with pytest.raises(Exception, match="needs 5 classes with at least 40 images; the split has 0"):
        run_episodes(feats, labels, 5, 20, 20, 5, seed=0)


def test_transform_is_the_square_resize_and_centre_crop():
    tf = fewshot_transform(224)
    assert "Resize(size=(257, 257)" in repr(tf) and "CenterCrop(size=(224, 224))" in repr(tf)


@pytest.mark.slow
def test_fewshot_task_on_real_images(shared_data, tmp_path):
    out = tmp_path / "fs"
    run_cli(["transfer", "random", "--arch", "resnet18", "--task", "fewshot", "--data", shared_data / "cifar10-sub",
             "--set", "image_size=32", "--set", "workers=0", "--set", "shots=1,5", "--set", "episodes=100",
             "--out", out])
    rec = json.loads((out / "results.json").read_text())
    m = rec["metrics"]
    assert set(m) == {"acc_1shot", "ci95_1shot", "acc_5shot", "ci95_5shot"}
    assert 20 < m["acc_1shot"] < m["acc_5shot"] < 100 and 0 < m["ci95_5shot"] < 5
    assert rec["config"]["derived"]["headline"] == "acc_1shot" and rec["config"]["derived"]["num_classes"] == 10
