"""Image folders, the epoch sampler, seeded augmentation and the synthetic generator."""

from __future__ import annotations

import hashlib

import pytest
import torch

from mocobench.augment import TwoCrops, moco_transform
from mocobench.datasets import DataError, EpochBatchSampler, SeededImageDataset, list_images, load_rgb
from mocobench.synth import SynthSpec, write_synthetic_classification


def test_image_folder_and_plain_folder(synth, shared_data, tmp_path):
    tree = list_images(synth / "train")
    assert len(tree) == 64 and len(tree.classes) == 4 and set(tree.labels) == {0, 1, 2, 3}
    flat = list_images(synth / "train" / tree.classes[0])
    assert len(flat) == 16 and flat.labels == (-1,) * 16 and flat.classes == ()
    real = list_images(shared_data / "imagenette-sub" / "val", labelled=True)
    assert len(real) == 500 and len(real.classes) == 10


def test_folder_errors_name_the_path(synth, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "x.png").write_bytes((synth / "train" / list_images(synth / "train").classes[0] / "0000.png").read_bytes())
    with pytest.raises(DataError, match=f"class folder {tmp_path / 'b'} holds no images"):
        list_images(tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        list_images(tmp_path / "nope")
    (tmp_path / "c.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match=f"cannot decode image {tmp_path / 'c.jpg'}"):
        load_rgb(tmp_path / "c.jpg")


def test_ranks_partition_each_global_batch_in_order():
    one = EpochBatchSampler(20, 8, seed=1)
    r0, r1 = EpochBatchSampler(20, 4, seed=1, rank=0, world=2), EpochBatchSampler(20, 4, seed=1, rank=1, world=2)
    for s in (one, r0, r1):
        s.set_epoch(3)
    for full, a, b in zip(one, r0, r1, strict=True):
        assert full == a + b
    assert len(one) == 2  # drop-last: 20 // 8
    one.set_epoch(3, start_step=1)
    resumed = list(one)
    one.set_epoch(3)
    assert resumed == list(one)[1:]
    one.set_epoch(4)
    assert list(one) != resumed
    with pytest.raises(DataError, match="fewer than one global batch of 16"):
        EpochBatchSampler(10, 8, seed=0, world=2)


def test_views_are_fixed_by_the_sample_seed_and_leave_the_global_rng_alone(synth):
    ds = SeededImageDataset(list_images(synth / "train"), TwoCrops(moco_transform("v2", 24)))
    torch.manual_seed(123)
    state = torch.get_rng_state()
    (a1, a2), _ = ds[(5, 42)]
    (b1, b2), _ = ds[(5, 42)]
    (c1, _), _ = ds[(5, 43)]
    assert torch.equal(a1, b1) and torch.equal(a2, b2) and not torch.equal(a1, a2) and not torch.equal(a1, c1)
    assert a1.shape == (3, 24, 24)
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(42)  # the documented meaning of a sample seed
    r1, r2 = ds.transform(load_rgb(ds.images.paths[5]))
    assert torch.equal(r1, a1) and torch.equal(r2, a2)


def test_decode_cache_gives_the_same_views_and_respects_its_budget(synth):
    images = list_images(synth / "train")
    plain = SeededImageDataset(images, TwoCrops(moco_transform("v2", 24)))
    cached = SeededImageDataset(images, TwoCrops(moco_transform("v2", 24)))
    assert not cached.cache_decoded(0) and cached.decoded is None
    assert not cached.cache_decoded(1e-6)  # the estimate does not fit: decode every epoch
    assert cached.cache_decoded(64) and len(cached.decoded) == len(images)
    for item in [(0, 1), (3, 2), (len(images) - 1, 99)]:
        (a1, a2), la = plain[item]
        (b1, b2), lb = cached[item]
        assert torch.equal(a1, b1) and torch.equal(a2, b2) and la == lb


def test_synthetic_set_is_deterministic_and_refuses_a_non_empty_folder(tmp_path):
    spec = SynthSpec(3, 2, 1, 24, 7)

    def digest(root):
        return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(root.rglob("*.png")))).hexdigest()

    a = write_synthetic_classification(tmp_path / "a", spec)
    b = write_synthetic_classification(tmp_path / "b", spec)
    assert digest(a) == digest(b)
    assert len(list(a.rglob("*.png"))) == 3 * 3
    assert digest(write_synthetic_classification(tmp_path / "c", SynthSpec(3, 2, 1, 24, 8))) != digest(a)
    with pytest.raises(ValueError, match="not empty"):
        write_synthetic_classification(a, spec)


def test_the_partial_last_global_batch_is_split_evenly_across_ranks():
    one = EpochBatchSampler(21, 8, seed=1, drop_last=False)
    ranks = [EpochBatchSampler(21, 4, seed=1, rank=r, world=2, drop_last=False) for r in range(2)]
    for s in (one, *ranks):
        s.set_epoch(2)
    batches = list(one)
    assert [len(b) for b in batches] == [8, 8, 5]
    pieces = [list(r) for r in ranks]
    assert [len(b) for b in pieces[0]] == [4, 4, 2] and [len(b) for b in pieces[1]] == [4, 4, 3]
    for full, a, b in zip(batches, *pieces, strict=True):
        assert full == a + b
    three = [EpochBatchSampler(17, 4, seed=0, rank=r, world=4, drop_last=False) for r in range(4)]
    last = [list(r)[-1] for r in three]  # one image left for four ranks: three get none
    assert sorted(len(b) for b in last) == [0, 0, 0, 1]
