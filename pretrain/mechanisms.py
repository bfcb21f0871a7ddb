"""The two other contrastive mechanisms of the MoCo paper's comparison (arXiv 1911.05722, Fig. 2 and 3),
and SimCLR's NT-Xent (arXiv 2002.05709), a different loss that is often mistaken for the first.

Everything else is shared with MoCo (:mod:`mocobench.pretrain.moco`): the encoder and its head, the
augmentation, the loss (cross-entropy over logits / T, positive at ``labels``) and the training loop.
Only the source of the negatives and the update of the keys differ:

==============  ==========================================  =============================================
mechanism       negatives                                   keys / key encoder
==============  ==========================================  =============================================
``moco_*``      queue of the last K keys                    momentum encoder ``k = m k + (1 - m) q``
``end_to_end``  the other keys of the (global) batch: the   the query encoder itself, back-propagated
                paper's Fig. 2a, MoCo's InfoNCE with the    (the paper's Fig. 3 plots it at K = the
                batch as the dictionary (K - 1 negatives)   batch size N: "K - 1 in end-to-end")
``simclr``      the other 2N - 2 views of the batch, in     the same encoder, back-propagated; both
                both directions (NT-Xent)                   views are queries
``memory_bank`` K entries sampled from a bank of one        bank entry of the image, updated after the
                feature per training image (InstDisc,       step: ``v = normalise(m_b v + (1 - m_b) q)``
                arXiv 1805.01978)                           (m_b = ``--bank-momentum``, 0.5)
==============  ==========================================  =============================================
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from mocobench import dist
from mocobench.pretrain.moco import MoCo, add_mlp_head, batch_shuffle, contrastive_logits


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from every rank, differentiably: the backward pass sums each slice's gradient
    over the ranks and returns it to its owner, so W processes compute the gradient of one process
    with the whole batch (tested with two gloo processes). Shape: (B, ...) -> (world * B, ...).
    """
    if dist.get_world_size() == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x))


def nt_xent_logits(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """NT-Xent logits of the 2B local views against the 2B * world views of all ranks.

    Shape: z1, z2 (B, C) L2-normalised -> logits (2B, 2B * world) with each view's similarity to
    itself at -inf, labels (2B,) = the column of the other view of the same image.
    """
    local = torch.cat([z1, z2])
    keys = all_gather_with_grad(local)
    b, offset = z1.shape[0], dist.get_rank() * local.shape[0]
    logits = local @ keys.T / temperature
    rows = torch.arange(2 * b, device=local.device)
    logits[rows, offset + rows] = float("-inf")
    labels = offset + torch.cat([rows[b:], rows[:b]])
    return logits, labels


def end_to_end_logits(q: torch.Tensor, keys: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """MoCo's InfoNCE (paper eq. 1) with the keys of the whole batch as the dictionary: each query's own key
    is its positive, the other N - 1 keys of the global batch its negatives.

    Shape: q (B, C) this rank's queries, keys (world * B, C) the global batch's keys in batch order (both
    L2-normalised) -> logits (B, world * B) = q . keys^T / T, labels (B,) the column of each query's own key.
    """
    labels = dist.get_rank() * q.shape[0] + torch.arange(q.shape[0], device=q.device)
    return q @ keys.T / temperature, labels


class _BatchNegatives(nn.Module):
    """One encoder (with its head), back-propagated through both views; the negatives come from the batch."""

    backbone_prefix = "encoder."

    def __init__(self, encoder_fn: Callable[[], nn.Module], temperature: float, mlp: bool) -> None:
        super().__init__()
        self.temperature = temperature
        self.encoder = encoder_fn()
        if mlp:
            add_mlp_head(self.encoder)

    @property
    def backbone(self) -> nn.Module:
        return self.encoder

    inputs = staticmethod(MoCo.two_views)  # ((query view, key view), labels) batches, as MoCo

    def after_step(self, state: None) -> None:
        """Nothing outside the optimiser: the keys are the query encoder's."""


class EndToEnd(_BatchNegatives):
    """The paper's end-to-end mechanism: queries and keys from the same encoder, both back-propagated, and
    the batch as the dictionary (arXiv 1911.05722, Fig. 2a; Fig. 3 runs it under the v1 recipe)."""

    def __init__(self, encoder_fn: Callable[[], nn.Module], temperature: float = 0.07, mlp: bool = False) -> None:
        super().__init__(encoder_fn, temperature, mlp)

    def forward(self, im_q: torch.Tensor, im_k: torch.Tensor, generator: torch.Generator | None = None):
        """Shape: (B, 3, H, W) x 2 -> logits (B, B * world), labels (B,), None. Queries and keys go through
        the encoder in two passes, as MoCo's two encoders, and the keys with shuffled BN as MoCo's: the
        paper (sec. 3.3) uses it "for both MoCo and its end-to-end ablation counterpart". The keys are
        gathered differentiably and put back in batch order, so every rank back-propagates into them."""
        q = F.normalize(self.encoder(im_q), dim=1)
        im_k, idx_unshuffle = batch_shuffle(im_k, generator)
        k = F.normalize(self.encoder(im_k), dim=1)
        logits, labels = end_to_end_logits(q, all_gather_with_grad(k)[idx_unshuffle], self.temperature)
        return logits, labels, None


class SimCLR(_BatchNegatives):
    """SimCLR's NT-Xent: negatives from the current batch in both directions; one encoder, both views."""

    def __init__(self, encoder_fn: Callable[[], nn.Module], temperature: float = 0.2, mlp: bool = True) -> None:
        super().__init__(encoder_fn, temperature, mlp)

    def forward(self, im_q: torch.Tensor, im_k: torch.Tensor, generator: torch.Generator | None = None):
        """Shape: (B, 3, H, W) x 2 -> logits (2B, 2B * world), labels (2B,), None."""
        z = F.normalize(self.encoder(torch.cat([im_q, im_k])), dim=1)
        logits, labels = nt_xent_logits(*z.chunk(2), self.temperature)
        return logits, labels, None


class MemoryBank(nn.Module):
    """Negatives sampled from a bank of one L2-normalised feature per training image.

    Args:
        encoder_fn: builds a ResNet whose ``fc`` outputs ``dim`` features.
        num_images: bank size (one entry per training image; the batch carries image indices).
        dim: feature dimension C.
        num_negatives: K entries sampled (uniformly, with replacement) per step, shared by the batch.
        temperature: T.
        bank_momentum: m_b of the entry update (InstDisc: 0.5).
        mlp: MLP head.
    """

    backbone_prefix = "encoder."

    def __init__(self, encoder_fn: Callable[[], nn.Module], num_images: int, dim: int = 128,
                 num_negatives: int = 4096, temperature: float = 0.07, bank_momentum: float = 0.5,
                 mlp: bool = False) -> None:
        super().__init__()
        self.temperature, self.bank_momentum, self.num_negatives = temperature, bank_momentum, num_negatives
        self.encoder = encoder_fn()
        if mlp:
            add_mlp_head(self.encoder)
        self.register_buffer("bank", F.normalize(torch.randn(num_images, dim), dim=1))

    @property
    def backbone(self) -> nn.Module:
        return self.encoder

    @staticmethod
    def inputs(batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(view, image index) batches: the engine puts each image's index where the label would be."""
        view, index = batch
        return view, index

    def forward(self, images: torch.Tensor, index: torch.Tensor, generator: torch.Generator):
        """Shape: images (B, 3, H, W), index (B,) -> logits (B, 1 + K), labels (B,) zeros,
        state (q (world * B, C), index (world * B,)) for :meth:`after_step`."""
        q = F.normalize(self.encoder(images), dim=1)
        sample = torch.randint(self.bank.shape[0], (self.num_negatives,), generator=generator).to(q.device)
        positives = self.bank[index].to(q.dtype)
        negatives = self.bank[sample].T.to(q.dtype)  # (C, K)
        logits, labels = contrastive_logits(q, positives, negatives, self.temperature)
        state = (dist.all_gather_cat(q.detach().to(self.bank.dtype)), dist.all_gather_cat(index))
        return logits, labels, state

    @torch.no_grad()
    def after_step(self, state: tuple[torch.Tensor, torch.Tensor]) -> None:
        """Move each seen image's entry towards its new feature (every rank applies the same update)."""
        q, index = state
        m = self.bank_momentum
        self.bank[index] = F.normalize(m * self.bank[index] + (1 - m) * q, dim=1)
