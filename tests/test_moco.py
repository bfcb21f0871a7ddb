"""MoCo maths against hand-written references (the paper's Algorithm 1 and the official builder)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import torchvision

from mocobench.pretrain.moco import (
    MoCo,
    batch_shuffle,
    batch_unshuffle,
    contrastive_logits,
    enqueue_,
    momentum_update_,
)


def reference_infonce(q, k, queue, t):
    """Algorithm 1 of arXiv 1911.05722, written as explicit loops in float64."""
    n, c = q.shape
    losses, rows = [], []
    for i in range(n):
        l_pos = sum(float(q[i, j]) * float(k[i, j]) for j in range(c))
        l_neg = [sum(float(q[i, j]) * float(queue[j, m]) for j in range(c)) for m in range(queue.shape[1])]
        row = [l_pos / t] + [v / t for v in l_neg]
        rows.append(row)
        losses.append(-row[0] + math.log(sum(math.exp(v) for v in row)))
    return torch.tensor(rows, dtype=torch.float64), sum(losses) / n


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_logits_and_loss_match_the_papers_pseudocode(dtype, tol):
    g = torch.Generator().manual_seed(0)
    q = F.normalize(torch.randn(6, 5, generator=g, dtype=dtype), dim=1)
    k = F.normalize(torch.randn(6, 5, generator=g, dtype=dtype), dim=1)
    queue = F.normalize(torch.randn(5, 12, generator=g, dtype=dtype), dim=0)
    logits, labels = contrastive_logits(q, k, queue, 0.2)
    ref_logits, ref_loss = reference_infonce(q, k, queue, 0.2)
    assert logits.shape == (6, 13) and labels.tolist() == [0] * 6
    torch.testing.assert_close(logits.double(), ref_logits, atol=tol, rtol=0)
    assert abs(F.cross_entropy(logits, labels).item() - ref_loss) < tol


def test_momentum_update_matches_the_official_loop():
    g = torch.Generator().manual_seed(1)
    k = [torch.randn(3, 4, generator=g), torch.randn(7, generator=g)]
    q = [torch.randn(3, 4, generator=g), torch.randn(7, generator=g)]
    expected = [pk * 0.99 + pq * (1.0 - 0.99) for pk, pq in zip(k, q, strict=True)]  # builder.py, line by line
    momentum_update_(k, q, 0.99)
    for a, b in zip(k, expected, strict=True):
        torch.testing.assert_close(a, b, atol=1e-7, rtol=1e-6)


def test_queue_is_a_ring_that_wraps():
    queue = torch.zeros(2, 8)
    ptr = torch.zeros(1, dtype=torch.long)
    batches = [torch.full((4, 2), float(i + 1)) for i in range(3)]
    for b in batches:
        enqueue_(queue, ptr, b)
    # third batch overwrote columns 0..3, second batch still in 4..7
    assert queue[0].tolist() == [3.0] * 4 + [2.0] * 4
    assert int(ptr) == 4
    with pytest.raises(ValueError, match="not divisible"):
        enqueue_(queue, ptr, torch.ones(3, 2))


def test_shuffle_then_unshuffle_is_identity_and_a_permutation():
    x = torch.arange(10.0).view(10, 1).repeat(1, 3)
    g = torch.Generator().manual_seed(3)
    xs, idx_unshuffle = batch_shuffle(x, g)
    assert not torch.equal(xs, x)
    assert sorted(xs[:, 0].tolist()) == x[:, 0].tolist()
    torch.testing.assert_close(batch_unshuffle(xs, idx_unshuffle), x, atol=0, rtol=0)


def _tiny_moco(m=0.9, **kw):
    torch.manual_seed(0)
    return MoCo(lambda: torchvision.models.resnet18(num_classes=8), dim=8, queue_size=16, m=m, **kw)


def test_key_encoder_starts_as_a_frozen_copy_and_follows_by_momentum():
    moco = _tiny_moco(m=0.9, mlp=True)
    q0 = {n: p.detach().clone() for n, p in moco.encoder_q.named_parameters()}
    for (n, pk) in moco.encoder_k.named_parameters():
        assert torch.equal(pk, q0[n]) and not pk.requires_grad
    # make q differ from k, then one forward must move k by momentum on parameters only
    with torch.no_grad():
        for p in moco.encoder_q.parameters():
            p.add_(0.5)
    k_before = {n: p.detach().clone() for n, p in moco.encoder_k.named_parameters()}
    q_now = {n: p.detach().clone() for n, p in moco.encoder_q.named_parameters()}
    moco.encoder_q.bn1.running_mean.fill_(100.0)  # a value no key-encoder statistic can reach
    x = torch.randn(4, 3, 32, 32)
    moco(x, x.clone(), torch.Generator().manual_seed(0))
    for n, pk in moco.encoder_k.named_parameters():
        torch.testing.assert_close(pk, 0.9 * k_before[n] + 0.1 * q_now[n], atol=1e-6, rtol=1e-6)
    # BN buffers are not averaged (a blend would carry 0.1 * 100 = 10 from q)
    assert moco.encoder_k.bn1.running_mean.abs().max() < 5
    assert "fc.0.weight" in dict(moco.encoder_q.named_parameters())  # the v2 MLP head names


def test_forward_matches_a_direct_computation_and_shuffle_is_neutral_under_one_bn_batch():
    """With one BN batch, shuffling keys changes nothing (protocols.md); the logits then equal a
    direct computation from the two encoders."""
    moco = _tiny_moco(m=0.0, temperature=0.2)  # m=0: k encoder becomes q's copy before the key forward
    x_q, x_k = torch.randn(8, 3, 32, 32), torch.randn(8, 3, 32, 32)
    logits, labels, keys = moco(x_q, x_k, torch.Generator().manual_seed(5))
    ref_q = F.normalize(moco.encoder_q(x_q), dim=1)
    ref_k = F.normalize(moco.encoder_k(x_k), dim=1)
    ref_logits, _ = contrastive_logits(ref_q, ref_k, moco.queue, 0.2)
    torch.testing.assert_close(keys, ref_k, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(logits, ref_logits, atol=1e-4, rtol=1e-4)
    ptr = int(moco.queue_ptr)
    moco.enqueue(keys)
    torch.testing.assert_close(moco.queue[:, ptr : ptr + 8], keys.T)
    assert int(moco.queue_ptr) == (ptr + 8) % 16


def test_a_masked_negative_gets_no_probability_and_the_loss_is_the_loss_without_it():
    """contrastive_logits(neg_mask): the masked columns are -inf, and the cross-entropy equals the one computed on
    the logits with those columns removed (hand-made reference; 1e-6)."""
    g = torch.Generator().manual_seed(0)
    q, k = F.normalize(torch.randn(3, 4, generator=g), dim=1), F.normalize(torch.randn(3, 4, generator=g), dim=1)
    queue = F.normalize(torch.randn(4, 5, generator=g), dim=0)
    mask = torch.tensor([[True, False, False, False, False], [False, False, False, False, False],
                         [False, True, False, True, False]])
    logits, labels = contrastive_logits(q, k, queue, 0.2, mask)
    assert torch.isinf(logits[:, 1:][mask]).all() and torch.isfinite(logits[:, 1:][~mask]).all()
    for i in range(3):
        kept = torch.cat([(q[i] @ k[i]).reshape(1), (q[i] @ queue)[~mask[i]]]) / 0.2
        ref = -torch.log_softmax(kept, dim=0)[0]
        torch.testing.assert_close(F.cross_entropy(logits[i : i + 1], labels[i : i + 1]), ref, atol=1e-6, rtol=1e-6)


def test_mask_own_keys_leaves_out_exactly_the_querys_own_queued_keys():
    """With mask_own_keys the queue remembers whose key each column is; a query's negatives skip its own image's
    older keys and nothing else, and the ids ring moves with the keys."""
    moco = _tiny_moco(m=0.0, temperature=0.2)
    masked = _tiny_moco(m=0.0, temperature=0.2, mask_own_keys=True)
    x_q, x_k = torch.randn(8, 3, 32, 32), torch.randn(8, 3, 32, 32)
    first = torch.arange(8)
    _, _, state = masked(x_q, x_k, first, torch.Generator().manual_seed(1))
    masked.after_step(state)
    assert masked.queue_ids[:8].tolist() == first.tolist() and (masked.queue_ids[8:] == -1).all()
    index = torch.tensor([3, 9, 0, 10, 11, 12, 13, 7])  # images 3, 0, 7 have keys in the queue
    logits, _, _ = masked(x_q, x_k, index, torch.Generator().manual_seed(2))
    neg = logits[:, 1:]
    expected = masked.queue_ids[None, :] == index[:, None]
    assert expected.sum() == 3 and torch.equal(torch.isinf(neg), expected)
    plain, _, _ = moco(x_q, x_k, torch.Generator().manual_seed(2))  # the unmasked model has no ids and no -inf
    assert torch.isfinite(plain).all() and not hasattr(moco, "queue_ids")
