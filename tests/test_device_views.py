"""``--aug-device`` (views decoded, cropped and augmented on the training device) against the tensor backend and
the PIL pipeline: the same draws from the same seeds, crops within 1/255, batch independence, pretraining
with exact resume, and files that cannot be decoded named. CPU only: the device is ``cpu`` here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TINY, run_cli
from PIL import Image

from mocobench import batch_augment as B
from mocobench.augment import IMAGENET_MEAN, IMAGENET_STD, eval_transform, moco_transform
from mocobench.datasets import (
    DataError,
    ImageDataset,
    SeededImageDataset,
    list_images,
    load_rgb,
    read_encoded,
)
from mocobench.device_views import CollateFiles, DeviceEval, DeviceViews, FileImage, FileViews, collate_images
from mocobench.pretrain.config import ConfigError, PretrainConfig
from mocobench.results import read_results

CPU = torch.device("cpu")
V2 = moco_transform("v2", 32).transforms
MEAN, STD = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """Real files of every kind the path treats apart, 2 classes: RGB and grey JPEGs (decoded on the device),
    a CMYK JPEG, an RGB PNG and a 16-bit grey PNG (decoded in the worker); sizes differ."""
    root = tmp_path_factory.mktemp("files") / "train"
    rng = np.random.default_rng(0)
    for c in range(2):
        (root / f"c{c}").mkdir(parents=True)
    for i in range(12):
        h, w = 40 + 7 * i, 90 - 3 * i
        y, x = np.mgrid[0:h, 0:w]
        img = np.stack([(x * 255 // w), (y * 255 // h), rng.integers(0, 255, (h, w))], -1).astype(np.uint8)
        im, folder = Image.fromarray(img), root / f"c{i % 2}"
        kind = i % 6
        if kind in (0, 1, 2):
            im.save(folder / f"{i}.jpg", quality=90)
        elif kind == 3:
            im.convert("L").save(folder / f"{i}.jpg", quality=90)
        elif kind == 4:
            im.convert("CMYK").save(folder / f"{i}.jpg", quality=90)
        else:
            Image.fromarray(img[..., 0].astype(np.uint16) * 257).save(folder / f"{i}.png")
    return root


def _datasets(root: Path, views: int = 2):
    images = list_images(root)
    return (images, SeededImageDataset(images, FileViews(V2, views), read_encoded),
            SeededImageDataset(images, B.TensorViews("v2", 32, views)))


def test_the_draws_are_the_tensor_backends_and_the_crops_within_one_level(files):
    images, device_path, tensor_path = _datasets(files)
    views = DeviceViews(V2, CPU)
    for index in range(len(images)):
        item = (index, 1000 + index)
        state = torch.get_rng_state()
        (source, boxes, params, name), label = device_path[item]
        assert torch.equal(torch.get_rng_state(), state), "the worker's RNG is restored"
        (crops, want_params), want_label = tensor_path[item]
        assert name == str(images.paths[index]) and label == want_label
        assert torch.equal(params, want_params), "the same seed must draw the same photometric row"
        # the same crop box: the RNG drew it from the header's size as RandomResizedCrop does from the pixels
        torch.manual_seed(1000 + index)
        for view in range(2):
            box, _ = B.draw_params(moco_transform("v2", 32).transforms, load_rgb(images.paths[index]))
            assert tuple(boxes[view].tolist()) == box
        ours, _ = views.decode_and_crop(CollateFiles()([device_path[item]])[0])
        diff = (ours.int() - crops.int()).abs()
        assert diff.max() <= 1, (images.paths[index], diff.max())  # PIL's fixed-point resize rounds differently
        kind = (source.dim(), Image.open(images.paths[index]).mode)
        assert kind in ((1, "RGB"), (1, "L"), (3, "CMYK"), (3, "I;16")), kind  # what travels undecoded


def test_views_stay_within_the_tensor_backends_distance_from_pil(files):
    images, device_path, _ = _datasets(files, views=1)
    pil, views = moco_transform("v2", 32), DeviceViews(V2, CPU)
    diffs = []
    for index in range(len(images)):
        torch.manual_seed(7 + index)
        want = pil(load_rgb(images.paths[index])) * STD + MEAN
        got, _ = views(CollateFiles()([device_path[(index, 7 + index)]]))
        diffs.append((got[0] * STD + MEAN - want).abs().mean().item() * 255)
    # the tensor backend's bound (tests/test_batch_augment.py: max 3.5, mean 1.8) plus the resize's one level
    assert max(diffs) < 4.5 and sum(diffs) / len(diffs) < 2.8, diffs


@pytest.mark.parametrize("aug", ["v1", "v2"])
def test_on_real_jpegs_the_views_are_as_far_from_pil_as_the_tensor_backends(shared_data, aug):
    paths = list_images(shared_data / "imagenette-sub" / "val").paths[::25]  # 20 real images, 10 classes
    ops = moco_transform(aug, 64).transforms
    pil, file_views, views = moco_transform(aug, 64), FileViews(ops, 1), DeviceViews(ops, CPU)
    diffs = []
    for seed, path in enumerate(paths):
        torch.manual_seed(seed)
        want = pil(load_rgb(path)) * STD + MEAN
        torch.manual_seed(seed)
        got, _ = views(CollateFiles()([(file_views(read_encoded(path)), 0)]))
        diffs.append((got[0] * STD + MEAN - want).abs().mean().item() * 255)
    # measured: median 1.34 / 1.23 (v2 / v1), max 1.77 / 2.07, as the tensor backend's to 0.01: the bounds of
    # tests/test_batch_augment.py
    assert max(diffs) < 3.5 and sum(diffs) / len(diffs) < 1.8, diffs


def test_a_view_does_not_depend_on_its_batch(files):
    images, device_path, _ = _datasets(files)
    views = DeviceViews(V2, CPU)
    items = [device_path[(i, 50 + i)] for i in range(len(images))]
    together, labels = views(CollateFiles()(items))
    assert labels.tolist() == list(images.labels)
    for i, item in enumerate(items):
        alone, _ = views(CollateFiles()([item]))
        for v in range(2):
            torch.testing.assert_close(alone[v][0], together[v][i], atol=1e-5, rtol=0)


def test_a_file_truncated_after_its_header_is_named(files, tmp_path):
    images, _, _ = _datasets(files)
    jpeg = next(p for p in images.paths if p.suffix == ".jpg" and Image.open(p).mode == "RGB")
    bad = tmp_path / "bad.jpg"
    data = jpeg.read_bytes()
    bad.write_bytes(data[: len(data) * 2 // 3])  # the header parses; the scan data is cut
    item = (FileViews(V2)(read_encoded(bad)), 0)
    good = (FileViews(V2)(read_encoded(jpeg)), 0)
    with pytest.raises(DataError, match=f"cannot decode image {bad}"):
        DeviceViews(V2, CPU)(CollateFiles()([good, item]))
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(DataError, match="cannot decode image .*empty.jpg"):
        read_encoded(tmp_path / "empty.jpg")


def test_the_device_path_needs_the_tensor_backend_and_the_training_device():
    with pytest.raises(ConfigError, match="expected --aug-backend tensor with --aug-device"):
        PretrainConfig(data=".", out="o", aug_device="cpu").resolved().validate()
    with pytest.raises(ConfigError, match="--aug-device cuda only when training on CUDA"):
        PretrainConfig(data=".", out="o", aug_device="cuda", aug_backend="tensor", device="cpu").resolved().validate()


def test_pretraining_with_views_on_the_device_resumes_exactly(files, tmp_path):
    def run(out, *extra):
        run_cli(["pretrain", "--data", files, "--out", out, "--epochs", "2", *TINY, "--batch-size", "4",
                 "--queue-size", "8", "--aug-backend", "tensor", "--aug-device", "cpu", "--device", "cpu", *extra])
        return [json.loads(x)["loss"] for x in (out / "metrics.jsonl").read_text().splitlines()
                if json.loads(x)["kind"] == "step"]

    whole = run(tmp_path / "a")
    assert len(whole) == 6 and all(np.isfinite(whole))
    run(tmp_path / "b", "--max-steps", "2", "--workers", "2")
    assert run(tmp_path / "b", "--resume", "auto") == whole  # stopped mid-epoch, other worker count
    run_cli(["pretrain", "--data", files, "--out", tmp_path / "c", "--epochs", "1", *TINY, "--batch-size", "4",
             "--aug-backend", "tensor", "--aug-device", "cpu", "--method", "memory_bank", "--queue-size", "8",
             "--max-steps", "1"])


def test_the_test_transform_on_the_device_is_pils_within_one_level(files):
    images = list_images(files)
    transform = eval_transform(24)
    ds = ImageDataset(images, FileImage(), read_encoded)
    got, labels = DeviceEval(transform.transforms, CPU)(collate_images([ds[i] for i in range(len(ds))]))
    assert labels.tolist() == list(images.labels)
    for i, path in enumerate(images.paths):
        want = transform(load_rgb(path))
        diff = ((got[i] - want) * STD * 255).abs()
        assert diff.max() < 1 + 1e-3, (path, diff.max())  # the resize's rounding; sizes 90x40 to 13x117


@pytest.fixture(scope="module")
def jpeg_folder(synth, tmp_path_factory) -> Path:
    """The synthetic classification set (train and val) as JPEG files."""
    root = tmp_path_factory.mktemp("jpeg")
    for png in synth.rglob("*.png"):
        out = root / png.relative_to(synth).with_suffix(".jpg")
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.open(png).convert("RGB").save(out, quality=95)
    return root


def test_the_linear_protocol_on_the_device_trains_as_in_the_loader(jpeg_folder, tmp_path):
    base = ["transfer", "random", "--task", "linear", "--arch", "resnet18", "--data", jpeg_folder, "--set",
            "image_size=32",
            "--set", "batch_size=32", "--set", "workers=0", "--set", "epochs=2", "--set", "device=cpu"]
    run_cli([*base, "--out", tmp_path / "loader"])
    run_cli([*base, "--out", tmp_path / "device", "--set", "aug_device=cpu"])
    loader, device = (read_results(tmp_path / d / "results.json") for d in ("loader", "device"))
    assert device["config"]["aug_device"] == "cpu"
    # the same crops and flips from the same seeds; pixels within a rounding step: the same curve within 1%
    for a, b in zip(loader["config"]["derived"]["history"], device["config"]["derived"]["history"], strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-2)
    r = run_cli([*base, "--out", tmp_path / "bad", "--set", "aug_device=cuda"], expect_ok=False)
    assert "aug_device cuda only when the task runs on CUDA" in r.output


def test_frozen_features_made_on_the_device_are_the_loaders_within_rounding(jpeg_folder, tmp_path):
    from mocobench.checkpoint import load_backbone
    from mocobench.evaluators.features import FeatureKey, eval_set, frozen_features

    net, _ = load_backbone("random", arch="resnet18", seed=0)
    images = list_images(jpeg_folder / "val")
    got = {}
    for where in ("loader", "cpu"):
        ds, described, on_device = eval_set(images, 32, where, CPU)
        assert described.endswith("on the device") == (where == "cpu")  # separate feature-cache entries
        key = FeatureKey("random:resnet18:0", "imagenet", "backbone", described, "", "fp32")
        got[where] = frozen_features(net.eval(), ds, key, CPU, 8, 0, on_device=on_device)
    assert torch.equal(got["loader"][1], got["cpu"][1])
    # measured: 0.3% of the largest feature (mean |feature| 0.26, max 3.6); another crop or resize is far off
    a, b = got["loader"][0], got["cpu"][0]
    assert (a - b).abs().max() < 0.01 * a.abs().max(), ((a - b).abs().max(), a.abs().max())
    r = run_cli(["transfer", "random", "--task", "knn", "--arch", "resnet18", "--data", jpeg_folder, "--out",
                 tmp_path / "knn", "--set", "image_size=32", "--set", "k=5", "--set", "workers=0",
                 "--set", "aug_device=cpu", "--set", "device=cpu"])
    assert read_results(tmp_path / "knn" / "results.json")["config"]["aug_device"] == "cpu", r.output
