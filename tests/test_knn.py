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
