"""Split BN equals plain BN applied to each contiguous chunk (tolerance 1e-5)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mocobench.pretrain.split_bn import SplitBatchNorm


def test_training_mode_equals_per_chunk_batchnorm():
    torch.manual_seed(0)
    x = torch.randn(12, 5, 4, 4) * 3 + 1
    split = SplitBatchNorm(5, num_splits=3)
    with torch.no_grad():
        split.weight.uniform_(0.5, 2)
        split.bias.uniform_(-1, 1)
    refs = [nn.BatchNorm2d(5) for _ in range(3)]
    for r in refs:
        r.load_state_dict({k: v for k, v in split.state_dict().items()})
    out = split(x)
    expected = torch.cat([r(chunk) for r, chunk in zip(refs, x.chunk(3), strict=True)])
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    running_mean = torch.stack([r.running_mean for r in refs]).mean(0)
    running_var = torch.stack([r.running_var for r in refs]).mean(0)
    torch.testing.assert_close(split.running_mean, running_mean, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(split.running_var, running_var, atol=1e-6, rtol=1e-6)


def test_channels_last_input_gives_the_same_result():
    torch.manual_seed(1)
    x = torch.randn(8, 3, 5, 5)
    a, b = SplitBatchNorm(3, 4), SplitBatchNorm(3, 4)
    torch.testing.assert_close(a(x), b(x.to(memory_format=torch.channels_last)), atol=1e-6, rtol=1e-6)


def test_eval_mode_and_state_dict_are_plain_batchnorm():
    torch.manual_seed(2)
    split, plain = SplitBatchNorm(4, 2), nn.BatchNorm2d(4)
    split(torch.randn(6, 4, 3, 3))  # move the running statistics
    assert list(split.state_dict()) == list(plain.state_dict())
    plain.load_state_dict(split.state_dict())
    split.eval(), plain.eval()
    x = torch.randn(3, 4, 3, 3)
    torch.testing.assert_close(split(x), plain(x), atol=0, rtol=0)


def test_batch_not_divisible_is_a_clear_error():
    with pytest.raises(ValueError, match="not divisible by num_splits=4"):
        SplitBatchNorm(3, 4)(torch.randn(6, 3, 2, 2))
