"""Layer swaps change speed, never values: the channels_last max-pool against nn.MaxPool2d."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from mocobench.layers import MaxPool2dNHWC, fast_maxpool


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_nhwc_maxpool_equals_maxpool_with_ties_forward_and_backward(dtype):
    g = torch.Generator().manual_seed(0)
    # rounded, rectified values: most windows hold ties (zeros and equal positives)
    x = (torch.randn(4, 8, 17, 16, generator=g) * 2).round().relu().to(dtype)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = nn.MaxPool2d(3, 2, 1)(a), MaxPool2dNHWC(3, 2, 1)(b)
    assert yb.is_contiguous() and torch.equal(ya, yb)
    grad = torch.randn(ya.shape, generator=g).to(dtype)
    ya.backward(grad)
    yb.backward(grad)
    assert torch.equal(a.grad, b.grad)


def test_fast_maxpool_keeps_the_resnet_and_its_state_dict():
    torch.manual_seed(0)
    plain = torchvision.models.resnet18()
    fast = fast_maxpool(torchvision.models.resnet18())
    fast.load_state_dict(plain.state_dict())  # strict: the same keys
    assert isinstance(fast.maxpool, MaxPool2dNHWC) and fast.maxpool.kernel_size == 3
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(fast.eval()(x), plain.eval()(x), rtol=0, atol=0)
