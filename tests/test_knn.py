"""Weighted kNN against a brute-force loop (tolerance 1e-5 on the class scores)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mocobench.evaluators.knn import knn_scores, topk_accuracy


def brute_force(queries, bank, labels, num_classes, k, t):
    out = torch.zeros(len(queries), num_classes, dtype=torch.float64)
    for i, q in enumerate(queries):
        sims = sorted(((float(q @ b), int(y)) for b, y in zip(bank, labels, strict=True)), reverse=True)[:k]
        for s, y in sims:
            out[i, y] += math.exp(s / t)
    return out


@pytest.mark.parametrize("chunk,bank_chunk", [(1, 1000), (3, 7), (1000, 1), (1000, 1000)])
def test_knn_scores_match_brute_force(chunk, bank_chunk):
    g = torch.Generator().manual_seed(0)
    bank = F.normalize(torch.randn(40, 6, generator=g), dim=1)
    labels = torch.randint(0, 4, (40,), generator=g)
    queries = F.normalize(torch.randn(7, 6, generator=g), dim=1)
    scores = knn_scores(queries, bank, labels, 4, k=10, t=0.07, chunk_size=chunk, bank_chunk_size=bank_chunk)
    torch.testing.assert_close(scores.double(), brute_force(queries, bank, labels, 4, 10, 0.07), rtol=1e-5, atol=1e-5)


def test_k_larger_than_the_bank_uses_the_whole_bank():
    bank = F.normalize(torch.eye(3), dim=1)
    scores = knn_scores(bank, bank, torch.tensor([0, 1, 1]), 2, k=200, t=1.0)
    assert scores.shape == (3, 2)
    torch.testing.assert_close(scores[0], torch.tensor([math.e, 2.0]))


def test_topk_accuracy():
    scores = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.15, 0.05], [0.2, 0.3, 0.5]])
    acc = topk_accuracy(scores, torch.tensor([1, 1, 0]), ks=(1, 2))
    assert acc["top1"] == pytest.approx(100 / 3) and acc["top2"] == pytest.approx(200 / 3)


@pytest.mark.parametrize("method,head_keys", [("moco_v1", {"fc.weight"}), ("moco_v2", {"fc.0.weight", "fc.2.weight"})])
def test_head_features_are_the_checkpoints_projection_output(synth, tmp_path, method, head_keys):
    """features=head scores normalise(head(pooled)), the head rebuilt from the checkpoint's encoder_q.fc.* (v1: one
    Linear, v2: the MLP), equal to the pretraining module's own encoder output (1e-6)."""
    from helpers import TINY, run_cli

    from mocobench.checkpoint import load_backbone, load_projection_head, read_checkpoint
    from mocobench.evaluators.features import resnet_features
    from mocobench.pretrain.config import PretrainConfig
    from mocobench.pretrain.engine import build_model
    from mocobench.results import read_results

    run_cli(["pretrain", "--data", synth / "train", "--out", tmp_path / "pre", "--method", method, "--epochs", "1",
             "--max-steps", "1", *TINY])
    ckpt = tmp_path / "pre" / "checkpoint_last.pth"
    obj = read_checkpoint(ckpt)
    assert {k.removeprefix("module.encoder_q.") for k in obj["state_dict"] if ".fc." in k} >= head_keys
    model = build_model(PretrainConfig.from_dict(obj["config"]), world=1)
    model.load_state_dict({k.removeprefix("module."): v for k, v in obj["state_dict"].items()})
    backbone, _ = load_backbone(ckpt)
    head = load_projection_head(ckpt)
    x = torch.randn(3, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(head(resnet_features(backbone.eval(), x)), model.encoder_q(x), atol=1e-6, rtol=0)
    out = tmp_path / "knn"
    run_cli(["transfer", ckpt, "--task", "knn", "--data", synth, "--out", out, "--set", "features=head",
             "--set", "image_size=32", "--set", "workers=0", "--set", "k=5"])
    res = read_results(out / "results.json")
    assert res["config"]["features"] == "head" and 0 <= res["metrics"]["top1"] <= 100


def test_head_features_need_a_projection_head(synth, tmp_path):
    from helpers import TINY, run_cli

    run_cli(["pretrain", "--data", synth / "train", "--out", tmp_path / "sup", "--method", "supervised", "--epochs", "1",
             "--max-steps", "1", *TINY[:-2]])
    args = ["--task", "knn", "--data", synth, "--set", "features=head", "--set", "image_size=32", "--set", "workers=0",
            "--set", "k=5"]
    r = run_cli(["transfer", tmp_path / "sup" / "checkpoint_last.pth", *args, "--out", tmp_path / "a"], expect_ok=False)
    assert "supervised pretraining: its fc is a classifier, not a projection head" in r.output
    r = run_cli(["transfer", "random", "--arch", "resnet18", *args, "--out", tmp_path / "b"], expect_ok=False)
    assert "has no trained projection head" in r.output
    import torchvision

    tv = tmp_path / "tv.pth"
    torch.save(torchvision.models.resnet18().state_dict(), tv)
    r = run_cli(["transfer", tv, *args, "--out", tmp_path / "c"], expect_ok=False)
    assert "(torchvision) holds no projection head" in r.output
