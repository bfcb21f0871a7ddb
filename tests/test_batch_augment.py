"""``--aug-backend tensor`` against the PIL pipeline (same draws, same crop, pixels within ~1.5/255), its
ops against torchvision and hand-written references, and pretraining with it (exact resume included)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from helpers import TINY, run_cli
from torchvision import transforms as T
from torchvision.transforms import functional as TF

from mocobench import batch_augment as B
from mocobench.augment import IMAGENET_MEAN, IMAGENET_STD, moco_transform
from mocobench.checkpoint import load_backbone
from mocobench.datasets import list_images, load_rgb
from mocobench.pretrain.config import ConfigError, PretrainConfig

MEAN, STD = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)


@pytest.mark.parametrize("aug", ["v1", "v2"])
def test_tensor_views_draw_as_the_pil_pipeline_and_stay_within_rounding(shared_data, aug):
    paths = list_images(shared_data / "imagenette-sub" / "val").paths[::25]  # 20 real images, 10 classes
    pil, views, augment = moco_transform(aug, 64), B.TensorViews(aug, 64, views=1), B.BatchAugment(moco_transform(aug, 64).transforms)
    crop = T.RandomResizedCrop(64, scale=(0.2, 1.0))
    diffs = []
    for seed, path in enumerate(paths):
        img = load_rgb(path)
        torch.manual_seed(seed)
        want = pil(img) * STD + MEAN
        state = torch.get_rng_state()
        torch.manual_seed(seed)
        crops, params = views(img)
        assert torch.equal(torch.get_rng_state(), state), "the tensor backend must consume the RNG as the PIL one"
        torch.manual_seed(seed)
        assert torch.equal(crops[0], TF.pil_to_tensor(crop(img))), "the crop must be the PIL crop, bit for bit"
        got = augment(crops, params)[0] * STD + MEAN
        diffs.append((got - want).abs().mean().item() * 255)
    # measured: median 1.3, max 2.6 levels of 255 (8-bit rounding between PIL's ops, PIL's box blur)
    assert max(diffs) < 3.5 and sum(diffs) / len(diffs) < 1.8, diffs


def test_jitter_ops_match_torchvision_per_image():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 3, 20, 24, generator=g)
    x[0] = x[0, :1]  # a grey image: hue is undefined there and must stay put
    f = torch.rand(6, generator=g) * 0.8 + 0.6
    h = torch.rand(6, generator=g) - 0.5
    for i in range(6):
        torch.testing.assert_close(B.adjust_hue(x[i : i + 1], h[i : i + 1])[0], TF.adjust_hue(x[i], h[i].item()),
                                   atol=1e-5, rtol=0)
        # torchvision's tensor grey level weighs red 0.2989, PIL (and this module) 0.299
        for ours, theirs in [(B.adjust_brightness_, TF.adjust_brightness), (B.adjust_contrast_, TF.adjust_contrast),
                             (B.adjust_saturation_, TF.adjust_saturation)]:
            torch.testing.assert_close(ours(x[i : i + 1].clone(), f[i : i + 1])[0], theirs(x[i], f[i].item()),
                                       atol=1e-4, rtol=0)


def test_blur_is_a_gaussian_with_replicated_edges_per_image():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, 3, 17, 15, generator=g)
    sigma = torch.tensor([0.1, 0.9, 2.0])
    got = B.gaussian_blur(x, sigma, radius=6)
    t = torch.arange(-6, 7, dtype=torch.float32)
    for i in range(3):
        k = torch.exp(-0.5 * (t / sigma[i]) ** 2)
        k2 = torch.outer(k, k) / k.sum() ** 2  # the 2-D kernel, direct (not separable) reference
        ref = F.conv2d(F.pad(x[i : i + 1], (6, 6, 6, 6), mode="replicate"), k2.expand(3, 1, 13, 13), groups=3)
        torch.testing.assert_close(got[i], ref[0], atol=1e-5, rtol=0)
        inner = TF.gaussian_blur(x[i], [13, 13], [sigma[i].item()] * 2)[:, 6:-6, 6:-6]  # reflect edges differ
        torch.testing.assert_close(got[i, :, 6:-6, 6:-6], inner, atol=1e-5, rtol=0)


def test_a_view_does_not_depend_on_its_batch(synth):
    img = load_rgb(list_images(synth / "train").paths[0])
    views, augment = B.TensorViews("v2", 24, views=2), B.BatchAugment(moco_transform("v2", 24).transforms)
    items = []
    for seed in range(20):  # 40 views: several chunks, every stage drawn by some
        torch.manual_seed(seed)
        items.append(views(img))
    crops, params = torch.cat([c for c, _ in items]), torch.cat([p for _, p in items])
    assert params[:, B.BLUR].any() and params[:, B.GRAY].any() and params[:, B.FLIP].any()
    whole = augment(crops, params)
    alone = torch.cat([augment(crops[i : i + 1], params[i : i + 1]) for i in range(len(crops))])
    torch.testing.assert_close(whole, alone, atol=1e-6, rtol=0)


def test_collate_returns_what_the_pil_pipeline_collates(synth):
    img = load_rgb(list_images(synth / "train").paths[0])
    for views, method in [(2, "moco_v2"), (1, "memory_bank")]:
        collate = B.CollateViews("v2", 24)
        tv = B.TensorViews("v2", 24, views)
        x, labels = collate([(tv(img), 3), (tv(img), 1), (tv(img), 2)])
        assert labels.tolist() == [3, 1, 2]
        if views == 2:
            assert isinstance(x, list) and len(x) == 2 and x[0].shape == (3, 3, 24, 24)
            assert not torch.equal(x[0], x[1])
        else:
            assert isinstance(x, torch.Tensor) and x.shape == (3, 3, 24, 24), method


def test_supervised_refuses_the_tensor_backend():
    cfg = PretrainConfig(data=".", out="o", method="supervised", aug_backend="tensor").resolved()
    with pytest.raises(ConfigError, match="--aug-backend=tensor, --method=supervised: expected --aug-backend pil"):
        cfg.validate()


def test_pretraining_with_the_tensor_backend_resumes_exactly(synth, tmp_path):
    def run(out, *extra):
        run_cli(["pretrain", "--data", synth / "train", "--out", out, "--epochs", "2", *TINY, "--aug-backend",
                 "tensor", *extra])
        return [json.loads(x)["loss"] for x in (out / "metrics.jsonl").read_text().splitlines()
                if json.loads(x)["kind"] == "step"]

    whole = run(tmp_path / "a")
    run(tmp_path / "b", "--max-steps", "3", "--workers", "2")
    assert run(tmp_path / "b", "--resume", "auto") == whole  # stopped mid-epoch, other worker count
    assert load_backbone(tmp_path / "b" / "checkpoint_last.pth")[1].recipe["aug_backend"] == "tensor"  # in reports
    run_cli(["pretrain", "--data", synth / "train", "--out", tmp_path / "c", "--epochs", "1", *TINY,
             "--aug-backend", "tensor", "--method", "memory_bank", "--queue-size", "32", "--max-steps", "1"])
