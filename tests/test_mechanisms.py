"""The paper's other mechanisms (end_to_end, memory_bank) and SimCLR's NT-Xent against hand-written
references, and runs."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import torchvision
from helpers import TINY, run_cli

from mocobench.checkpoint import load_backbone, read_checkpoint
from mocobench.pretrain.config import RECIPES
from mocobench.pretrain.mechanisms import EndToEnd, MemoryBank, SimCLR, end_to_end_logits, nt_xent_logits
from mocobench.pretrain.moco import contrastive_logits


def test_nt_xent_matches_the_simclr_loss_written_as_loops():
    torch.manual_seed(0)
    z1, z2 = (F.normalize(torch.randn(5, 8, dtype=torch.float64), dim=1) for _ in range(2))
    t = 0.3
    logits, labels = nt_xent_logits(z1, z2, t)
    z = torch.cat([z1, z2])
    n = z.shape[0]
    losses = []
    for i in range(n):  # SimCLR eq. 1: -log exp(s_ij/t) / sum_{k != i} exp(s_ik/t), j the other view
        j = (i + 5) % n
        denom = sum(math.exp(float(z[i] @ z[k]) / t) for k in range(n) if k != i)
        losses.append(-math.log(math.exp(float(z[i] @ z[j]) / t) / denom))
    assert F.cross_entropy(logits, labels).item() == pytest.approx(sum(losses) / n, abs=1e-10)
    assert labels.tolist() == [5, 6, 7, 8, 9, 0, 1, 2, 3, 4] and torch.isinf(logits.diagonal()).all()


def test_end_to_end_is_infonce_with_the_batch_as_dictionary_written_as_loops():
    """The paper's eq. 1 per query, the positive its own key and the K - 1 other keys of the batch the
    negatives (Fig. 3: "K - 1 in end-to-end"); not NT-Xent (which also contrasts views with views)."""
    torch.manual_seed(0)
    q, k = (F.normalize(torch.randn(6, 8, dtype=torch.float64), dim=1) for _ in range(2))
    t = 0.07
    logits, labels = end_to_end_logits(q, k, t)
    losses = [-math.log(math.exp(float(q[i] @ k[i]) / t) / sum(math.exp(float(q[i] @ k[j]) / t) for j in range(6)))
              for i in range(6)]
    assert logits.shape == (6, 6) and labels.tolist() == list(range(6))
    assert F.cross_entropy(logits, labels).item() == pytest.approx(sum(losses) / 6, abs=1e-10)
    nt, nt_labels = nt_xent_logits(q, k, t)
    assert F.cross_entropy(nt, nt_labels).item() != pytest.approx(sum(losses) / 6, abs=1e-3)


def test_end_to_end_shuffles_the_keys_bn_and_back_propagates_through_them():
    """Keys go through the encoder in a shuffled order (other BN groups than their queries', sec. 3.3) and
    come back in batch order, with gradients: with per-group BN (2 splits) the logits and the parameter
    gradients equal a reference that encodes the permuted keys and un-permutes them (1e-10, float64); a
    reference without the shuffle, or with the keys detached, differs."""
    from mocobench.pretrain.split_bn import split_bn_resnet

    def model():
        torch.manual_seed(0)
        return EndToEnd(lambda: split_bn_resnet(torchvision.models.resnet18, 2, num_classes=8), temperature=0.1).double()

    x1, x2 = torch.randn(4, 3, 32, 32, dtype=torch.float64), torch.randn(4, 3, 32, 32, dtype=torch.float64)
    perm = torch.randperm(4, generator=torch.Generator().manual_seed(1))
    assert set(perm[:2].tolist()) not in ({0, 1}, {2, 3})  # the shuffle moves keys into other BN groups
    m = model()
    logits, labels = m(x1, x2, torch.Generator().manual_seed(1))[:2]
    F.cross_entropy(logits, labels).backward()

    def reference(shuffle: bool, detach: bool):
        r = model()
        q = F.normalize(r.encoder(x1), dim=1)
        order = perm if shuffle else torch.arange(4)
        k = torch.empty(4, 8, dtype=torch.float64)
        k[order] = F.normalize(r.encoder(x2[order]), dim=1)
        k = k.detach() if detach else k
        ref = q @ k.T / 0.1
        F.cross_entropy(ref, labels).backward()
        return ref, r.encoder.conv1.weight.grad

    ref, grad = reference(shuffle=True, detach=False)
    torch.testing.assert_close(logits, ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(m.encoder.conv1.weight.grad, grad, rtol=1e-10, atol=1e-10)
    assert labels.tolist() == [0, 1, 2, 3]
    assert not torch.allclose(logits, reference(shuffle=False, detach=False)[0], atol=1e-3)
    assert not torch.allclose(grad, reference(shuffle=True, detach=True)[1], atol=1e-6)


def test_the_papers_mechanisms_run_under_the_v1_recipe_and_simclr_keeps_nt_xent():
    keys = ("moco_t", "mlp", "aug", "lr_schedule")
    for method in ("end_to_end", "memory_bank"):  # Fig. 3's recipe (and InstDisc's T 0.07, linear head)
        assert {k: RECIPES[method][k] for k in keys} == {k: RECIPES["moco_v1"][k] for k in keys}
    assert RECIPES["simclr"]["moco_t"] == 0.2 and RECIPES["simclr"]["mlp"]


@pytest.mark.parametrize("cls,shape", [(EndToEnd, (4, 4)), (SimCLR, (8, 8))])
def test_end_to_end_and_simclr_back_propagate_into_the_queries(cls, shape):
    torch.manual_seed(0)
    model = cls(lambda: torchvision.models.resnet18(num_classes=16), temperature=0.2, mlp=True)
    x1 = torch.randn(4, 3, 32, 32, requires_grad=True)
    x2 = torch.randn(4, 3, 32, 32, requires_grad=True)
    logits, labels, _ = model(x1, x2)
    F.cross_entropy(logits, labels).backward()
    assert x1.grad.abs().sum() > 0 and logits.shape == shape
    if cls is SimCLR:  # end_to_end's keys pass the (non-differentiable) image shuffle: checked above by gradients
        assert x2.grad.abs().sum() > 0


def test_memory_bank_samples_negatives_and_updates_seen_entries_only():
    torch.manual_seed(0)
    model = MemoryBank(lambda: torchvision.models.resnet18(num_classes=16), num_images=20, dim=16,
                       num_negatives=7, temperature=0.1, bank_momentum=0.5).eval()
    x, index = torch.randn(3, 3, 32, 32), torch.tensor([4, 11, 2])
    before = model.bank.clone()
    logits, labels, state = model(x, index, torch.Generator().manual_seed(5))
    sample = torch.randint(20, (7,), generator=torch.Generator().manual_seed(5))
    q = F.normalize(model.encoder(x), dim=1)
    ref, _ = contrastive_logits(q, before[index], before[sample].T, 0.1)
    torch.testing.assert_close(logits, ref, rtol=1e-5, atol=1e-5)
    assert logits.shape == (3, 8) and (labels == 0).all()
    model.after_step(state)
    torch.testing.assert_close(model.bank[index], F.normalize(0.5 * before[index] + 0.5 * q, dim=1), rtol=1e-5, atol=1e-6)
    untouched = torch.ones(20, dtype=torch.bool)
    untouched[index] = False
    assert torch.equal(model.bank[untouched], before[untouched])


@pytest.mark.parametrize("method", ["end_to_end", "simclr", "memory_bank"])
def test_mechanisms_train_and_feed_the_reader(synth, tmp_path, method):
    out = tmp_path / method
    run_cli(["pretrain", "--data", synth / "train", "--out", out, "--method", method, "--epochs", "1", *TINY])
    ckpt = read_checkpoint(out / "checkpoint_last.pth")
    assert ckpt["method"] == method and ckpt["backbone_prefix"] == "encoder."
    assert ("module.bank" in ckpt["state_dict"]) == (method == "memory_bank")
    if method == "memory_bank":
        assert ckpt["state_dict"]["module.bank"].shape == (64, 128)  # one entry per training image
    net, info = load_backbone(out / "checkpoint_last.pth")
    assert info.method == method and torch.equal(net.conv1.weight, ckpt["state_dict"]["module.encoder.conv1.weight"])
