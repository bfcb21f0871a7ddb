"""Recipes, derived values, the lr schedule and the augmentation pipelines against protocols.md."""

from __future__ import annotations

import math

import pytest
from torchvision import transforms as T

from mocobench.augment import RandomGaussianBlur, moco_transform
from mocobench.pretrain.config import ConfigError, PretrainConfig
from mocobench.schedule import lr_at_epoch


def test_defaults_are_the_published_recipes():
    v1 = PretrainConfig(data=".", out="o", method="moco_v1").resolved()
    v2 = PretrainConfig(data=".", out="o").resolved()
    for c in (v1, v2):
        assert (c.arch, c.batch_size, c.lr, c.queue_size, c.dim, c.moco_m, c.weight_decay, c.momentum, c.epochs) == (
            "resnet50", 256, 0.03, 65536, 128, 0.999, 1e-4, 0.9, 200)
    assert (v1.moco_t, v1.mlp, v1.aug, v1.lr_schedule, v1.lr_milestones) == (0.07, False, "v1", "step", (120, 160))
    assert (v2.moco_t, v2.mlp, v2.aug, v2.lr_schedule) == (0.2, True, "v2", "cosine")
    assert PretrainConfig(data=".", out="o", moco_t=0.5).resolved().moco_t == 0.5  # explicit beats recipe
    sup = PretrainConfig(data=".", out="o", method="supervised", queue_size=1000).resolved()  # torchvision recipe
    assert (sup.lr, sup.epochs, sup.lr_schedule, sup.lr_milestones, sup.bn_splits) == (0.1, 90, "step", (30, 60), 1)
    sup.validate()  # the queue size plays no part


def test_derived_values_are_computed_not_stored():
    c = PretrainConfig(data=".", out="o", batch_size=64, queue_size=4096).resolved()
    assert c.scaled_lr() == pytest.approx(0.0075) and c.lr == 0.03
    assert c.effective_bn_splits(1) == 8 and c.bn_splits is None
    assert c.per_process_batch(4) == 16
    with pytest.raises(ConfigError, match="--batch-size 64 must be divisible by the 3 processes"):
        c.validate(world=3)
    assert PretrainConfig.from_dict(c.resolved().to_dict()) == c.resolved()


def test_default_bn_groups_are_the_papers_eight_whatever_the_processes():
    """The paper's BN batch: 8 groups of the global batch (8 GPUs x 32 images at 256). Before, any torchrun run
    got one group per process (256/W images); now W processes split 8/W ways, as near as the batch allows."""
    c = PretrainConfig(data=".", out="o", batch_size=256, queue_size=4096).resolved()
    per_group = {w: c.per_process_batch(w) // c.effective_bn_splits(w) for w in (1, 2, 4, 8, 16)}
    assert {w: c.effective_bn_splits(w) for w in (1, 2, 4, 8, 16)} == {1: 8, 2: 4, 4: 2, 8: 1, 16: 1}
    assert per_group == {1: 32, 2: 32, 4: 32, 8: 32, 16: 16}
    small = PretrainConfig(data=".", out="o", batch_size=12, queue_size=4092).resolved()
    assert small.effective_bn_splits(1) == 6 and small.effective_bn_splits(2) == 3  # the largest split that fits
    small.validate(world=2)
    assert PretrainConfig(data=".", out="o", batch_size=256, bn_splits=1).effective_bn_splits(2) == 1  # explicit


def test_lr_schedules_match_main_moco():
    assert lr_at_epoch(0.03, 0, 200, "cosine") == 0.03
    assert lr_at_epoch(0.03, 100, 200, "cosine") == pytest.approx(0.015)
    assert lr_at_epoch(0.03, 150, 200, "cosine") == pytest.approx(0.03 * 0.5 * (1 + math.cos(math.pi * 0.75)))
    assert [lr_at_epoch(0.03, e, 200, "step", (120, 160)) for e in (119, 120, 160)] == pytest.approx(
        [0.03, 0.003, 0.0003])


def _ops(t):
    return t.transforms


def test_augmentations_match_the_official_pipelines():
    v1, v2 = _ops(moco_transform("v1", 224)), _ops(moco_transform("v2", 224))
    assert v1[0].scale == (0.2, 1.0) and v1[0].size == (224, 224)
    assert isinstance(v1[1], T.RandomGrayscale) and v1[1].p == 0.2
    assert isinstance(v1[2], T.ColorJitter) and v1[2].hue == (-0.4, 0.4) and v1[2].brightness == (0.6, 1.4)
    assert v2[1].p == 0.8 and v2[1].transforms[0].hue == (-0.1, 0.1) and v2[1].transforms[0].saturation == (0.6, 1.4)
    assert isinstance(v2[2], T.RandomGrayscale) and v2[2].p == 0.2
    assert v2[3].p == 0.5 and isinstance(v2[3].transforms[0], RandomGaussianBlur)
    assert v2[3].transforms[0].sigma == (0.1, 2.0)
    assert isinstance(v2[4], T.RandomHorizontalFlip) and isinstance(v2[-1], T.Normalize)
    with pytest.raises(ValueError, match="expected 'v1' or 'v2'"):
        moco_transform("v3")
