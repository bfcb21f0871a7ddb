"""Split BN equals plain BN applied to each group of samples; the groups of a split-BN ResNet are
the contiguous chunks of its batch (tolerance 1e-5; 1e-9 in float64)."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from mocobench.pretrain.split_bn import SplitBatchNorm, deinterleave, interleave, split_bn_resnet


def test_training_mode_equals_per_group_batchnorm():
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
    expected = torch.empty_like(x)
    for j, r in enumerate(refs):  # group j: samples j, j + 3, j + 6, ...
        expected[j::3] = r(x[j::3])
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


def test_interleave_round_trip_and_order():
    x = torch.arange(12).view(6, 2)
    y = interleave(x, 3)
    assert y[:, 0].tolist() == [0, 4, 8, 2, 6, 10]  # row i*3 + j is row i of chunk j (chunks of 2 rows)
    assert torch.equal(deinterleave(y, 3), x)
    img = torch.randn(6, 3, 4, 4).to(memory_format=torch.channels_last)
    assert interleave(img, 2).is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("channels_last", [False, True])
def test_split_bn_resnet_equals_plain_bn_on_each_contiguous_chunk(channels_last):
    """What W processes with plain BN compute on their local batches (float64)."""
    torch.manual_seed(3)
    net = split_bn_resnet(torchvision.models.resnet18, 4, num_classes=6).double()
    ref = torchvision.models.resnet18(num_classes=6).double()
    ref.load_state_dict(net.state_dict())
    x = torch.randn(8, 3, 32, 32, dtype=torch.float64)
    if channels_last:
        net, x = net.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)
    expected = torch.cat([ref(chunk) for chunk in x.chunk(4)])
    torch.testing.assert_close(net(x), expected, atol=1e-9, rtol=0)
    net.eval()
    assert net(x[:3]).shape == (3, 6)  # eval: plain BN, any batch size
