"""Property-based tests (hypothesis): the converters on any ResNet layout, the queue ring on any
sequence of batch sizes that divide K."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from mocobench.convert import detectron2_to_torchvision, torchvision_to_detectron2
from mocobench.pretrain.moco import enqueue_


@settings(max_examples=15, deadline=None)
@given(block=st.sampled_from([BasicBlock, Bottleneck]), layers=st.lists(st.integers(1, 4), min_size=4, max_size=4))
def test_any_resnet_layout_round_trips_through_detectron2_names(block, layers):
    sd = ResNet(block, layers, num_classes=3).state_dict()
    d2 = torchvision_to_detectron2(sd)
    assert len(d2) == len(sd) - 2  # everything but fc.weight / fc.bias
    assert all(k.startswith(("stem.", "res2.", "res3.", "res4.", "res5.")) for k in d2)
    back = detectron2_to_torchvision(d2)
    assert back.keys() == sd.keys() - {"fc.weight", "fc.bias"}
    assert all(back[k] is sd[k] for k in back)


@st.composite
def ring_cases(draw):
    k = draw(st.sampled_from([4, 6, 8, 12, 16, 24]))
    divisors = [n for n in range(1, k + 1) if k % n == 0]
    if draw(st.booleans()):  # training: one batch size, many steps
        return k, [draw(st.sampled_from(divisors))] * draw(st.integers(1, 12))
    return k, draw(st.lists(st.sampled_from(divisors), min_size=1, max_size=12))


@settings(max_examples=60, deadline=None)
@given(ring_cases())
def test_queue_ring_matches_a_list_reference(case):
    k, sizes = case
    queue, ptr = torch.zeros(2, k), torch.zeros(1, dtype=torch.long)
    ref, ref_ptr, value = [0.0] * k, 0, 0.0
    for n in sizes:
        keys = torch.arange(value + 1, value + n + 1).repeat(2, 1).T
        if ref_ptr + n > k:  # with one fixed N dividing K (training) this never happens
            with pytest.raises(ValueError, match="would overrun"):
                enqueue_(queue, ptr, keys)
            break
        enqueue_(queue, ptr, keys)
        for i in range(n):
            ref[ref_ptr + i] = value + 1 + i
        ref_ptr, value = (ref_ptr + n) % k, value + n
        assert queue[0].tolist() == ref and int(ptr) == ref_ptr
