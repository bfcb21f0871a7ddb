"""MoCo: the momentum-contrast maths as small functions, and the module that composes them.

He et al., "Momentum Contrast for Unsupervised Visual Representation Learning", arXiv 1911.05722;
Chen et al., "Improved Baselines with Momentum Contrastive Learning", arXiv 2003.04297. Mechanics
follow the official ``moco/builder.py`` (facebookresearch/moco @ 87e36d3), see
``../shared/docs/protocols.md``:

* the key encoder starts as a copy of the query encoder and never receives gradients;
* the momentum update touches parameters only (BN buffers are not averaged) and runs before the key
  forward;
* logits = [q.k+ (N x 1), q.queue (N x K)] / T, cross-entropy with label 0;
* the queue (C x K) holds L2-normalised keys of the global batch and is a ring, ``ptr = (ptr + N) % K``;
* shuffling BN: keys are computed on the batch gathered across processes, permuted by a permutation
  broadcast from rank 0, and unshuffled after the key forward.

One documented difference: the official forward enqueues *inside* the forward, which forces it to
use ``queue.clone()`` for the negative logits; here the engine enqueues after the optimiser step,
which computes the same numbers without the copy.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mocobench import dist


@torch.no_grad()
def momentum_update_(params_k: Sequence[torch.Tensor], params_q: Sequence[torch.Tensor], m: float) -> None:
    """In place: ``k = k * m + q * (1 - m)`` for each pair (official ``_momentum_update_key_encoder``).

    Computed as ``lerp(k, q, 1 - m)`` with the fused ``_foreach`` kernel: one pass over all parameters,
    no Python loop (ResNet-18 + head on 2 CPU threads: 1.9 ms against 2.9 ms for ``_foreach_mul_`` +
    ``_foreach_add_`` and 11 ms for the official loop; ``benchmarks/step_parts.py``). Equal to the
    official formula up to float rounding (tested to 1e-6).
    """
    torch._foreach_lerp_(list(params_k), list(params_q), 1.0 - m)


def contrastive_logits(
    q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float, neg_mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """InfoNCE logits and labels (positive at column 0); ``neg_mask`` (N, K) True leaves that negative out
    (its logit is -inf: no probability, no gradient).

    Shape: q (N, C), k (N, C), queue (C, K) -> logits (N, 1 + K), labels (N,) all zero.
    """
    l_pos = torch.einsum("nc,nc->n", q, k).unsqueeze(-1)  # positive logits: N x 1
    l_neg = torch.einsum("nc,ck->nk", q, queue)  # negative logits: N x K
    if neg_mask is not None:
        l_neg = l_neg.masked_fill(neg_mask, float("-inf"))
    logits = torch.cat([l_pos, l_neg], dim=1) / temperature
    labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return logits, labels


@torch.no_grad()
def enqueue_(queue: torch.Tensor, ptr: torch.Tensor, keys: torch.Tensor) -> None:
    """Ring-buffer update in place: write ``keys`` (N, C) as columns at ``ptr``, advance ptr by N mod K.

    Shape: queue (C, K), ptr (1,) long, keys (N, C). Requires ``K % N == 0`` (checked by the
    config before training; asserted here as the official builder does).
    """
    n = keys.shape[0]
    size = queue.shape[1]
    p = int(ptr)
    if size % n != 0:
        raise ValueError(f"queue size K={size} is not divisible by the global batch size N={n}")
    if p + n > size:  # only possible when the batch size changes between steps
        raise ValueError(f"writing {n} keys at queue position {p} would overrun K={size}")
    queue[:, p : p + n] = keys.T
    ptr[0] = (p + n) % size


@torch.no_grad()
def batch_shuffle(x: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Shuffle the global batch across processes (official ``_batch_shuffle_ddp``).

    Gathers x from all ranks, draws a permutation on rank 0 (from ``generator``), broadcasts it,
    and returns this rank's slice of the permuted batch with the inverse permutation.
    On one process this is a plain in-batch permutation (the MoCo CIFAR demo's single-GPU shuffle).
    Shape: x (B, ...) -> (B, ...), idx_unshuffle (world * B,).
    """
    x_all = dist.all_gather_cat(x)
    world = x_all.shape[0] // x.shape[0]
    idx_shuffle = torch.randperm(x_all.shape[0], generator=generator).to(x.device)
    dist.broadcast_(idx_shuffle, src=0)
    idx_unshuffle = torch.argsort(idx_shuffle)
    idx_this = idx_shuffle.view(world, -1)[dist.get_rank()]
    return x_all[idx_this], idx_unshuffle


@torch.no_grad()
def batch_unshuffle(x: torch.Tensor, idx_unshuffle: torch.Tensor) -> torch.Tensor:
    """Undo :func:`batch_shuffle` (official ``_batch_unshuffle_ddp``). Shape: (B, ...) -> (B, ...)."""
    x_all = dist.all_gather_cat(x)
    world = x_all.shape[0] // x.shape[0]
    idx_this = idx_unshuffle.view(world, -1)[dist.get_rank()]
    return x_all[idx_this]


def add_mlp_head(encoder: nn.Module) -> None:
    """MoCo v2 head: replace ``fc`` (D -> dim) by Linear(D, D) -> ReLU -> fc, in place (no BN).

    Key names match the official checkpoints: ``fc.0.*`` and ``fc.2.*``.
    """
    dim_mlp = encoder.fc.weight.shape[1]
    encoder.fc = nn.Sequential(nn.Linear(dim_mlp, dim_mlp), nn.ReLU(), encoder.fc)


class MoCo(nn.Module):
    """Query/key encoders plus the negative-key queue (official ``moco.builder.MoCo``).

    Args:
        encoder_fn: builds a torchvision-style ResNet whose ``fc`` outputs ``dim`` features.
        dim: feature dimension C (128).
        queue_size: K, number of negative keys (65536).
        m: momentum of the key encoder (0.999).
        temperature: softmax temperature T (0.07 v1, 0.2 v2).
        mlp: MoCo v2 MLP head.
        mask_own_keys: keep each queued key's image index (``queue_ids``, -1: none yet) and leave a query's own
            older keys out of its negatives (not in the paper; ``mocobench pretrain --mask-own-keys``). The
            batch then carries image indices in place of labels.

    The training loop sees every method through ``inputs(batch)``, ``forward(...) -> (logits,
    labels, state)`` and ``after_step(state)`` (here: enqueue the keys after the optimiser step).
    """

    #: Where the backbone lives in the state dict (the official layout).
    backbone_prefix = "encoder_q."

    def __init__(
        self,
        encoder_fn: Callable[[], nn.Module],
        dim: int = 128,
        queue_size: int = 65536,
        m: float = 0.999,
        temperature: float = 0.07,
        mlp: bool = False,
        mask_own_keys: bool = False,
    ) -> None:
        super().__init__()
        self.m = m
        self.mask_own_keys = mask_own_keys
        self.temperature = temperature
        self.encoder_q = encoder_fn()
        if mlp:
            add_mlp_head(self.encoder_q)
        self.encoder_k = copy.deepcopy(self.encoder_q)  # key encoder starts as a copy
        for p in self.encoder_k.parameters():
            p.requires_grad = False
        self.register_buffer("queue", F.normalize(torch.randn(dim, queue_size), dim=0))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))
        if mask_own_keys:
            self.register_buffer("queue_ids", torch.full((queue_size,), -1, dtype=torch.long))

    def forward(self, im_q: torch.Tensor, im_k: torch.Tensor, *rest) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """One MoCo forward; ``rest`` is (shuffle generator,), or with ``mask_own_keys`` (image index (B,), shuffle
        generator).

        Shape: im_q, im_k (B, 3, H, W) -> logits (B, 1 + K), labels (B,), state: keys (world * B, C) gathered
        from all ranks (with ``mask_own_keys``: (keys, indices (world * B,))), for :meth:`after_step` after the
        optimiser step.
        """
        index, shuffle_generator = rest if self.mask_own_keys else (None, *rest)
        q = F.normalize(self.encoder_q(im_q), dim=1)
        with torch.no_grad():
            momentum_update_(self.encoder_k.parameters(), self.encoder_q.parameters(), self.m)
            im_k, idx_unshuffle = batch_shuffle(im_k, shuffle_generator)
            k = F.normalize(self.encoder_k(im_k), dim=1)
            k = batch_unshuffle(k, idx_unshuffle)
        own = self.queue_ids[None, :] == index[:, None] if self.mask_own_keys else None
        logits, labels = contrastive_logits(q, k.to(q.dtype), self.queue.to(q.dtype), self.temperature, own)
        keys = dist.all_gather_cat(k.to(self.queue.dtype))
        return logits, labels, (keys, dist.all_gather_cat(index)) if self.mask_own_keys else keys

    @property
    def backbone(self) -> nn.Module:
        """The query encoder (the network that transfers)."""
        return self.encoder_q

    @staticmethod
    def two_views(batch) -> tuple[torch.Tensor, torch.Tensor]:
        """((query view, key view), labels) batches: labels are ignored."""
        (im_q, im_k), _ = batch
        return im_q, im_k

    def inputs(self, batch) -> tuple[torch.Tensor, ...]:
        """:meth:`two_views`, and with ``mask_own_keys`` the images' indices (carried where labels would be)."""
        return (*self.two_views(batch), batch[1]) if self.mask_own_keys else self.two_views(batch)

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Dequeue the oldest keys and enqueue ``keys`` (world * B, C)."""
        enqueue_(self.queue, self.queue_ptr, keys)

    def after_step(self, state) -> None:
        if self.mask_own_keys:
            keys, ids = state
            p = int(self.queue_ptr)
            self.queue_ids[p : p + ids.shape[0]] = ids  # the same columns enqueue_ writes, before it moves ptr
            self.enqueue(keys)
        else:
            self.enqueue(state)
