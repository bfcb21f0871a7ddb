"""The checkpoint reader: official MoCo files (with and without ``module.``), torchvision state
dicts, mocobench files, ``random``; atomic writes; clear errors."""

from __future__ import annotations

import pickle

import pytest
import torch
import torchvision
from helpers import TINY, run_cli

from mocobench.checkpoint import (
    CheckpointError,
    atomic_save,
    detect_format,
    infer_resnet_arch,
    load_backbone,
    read_checkpoint,
)
from mocobench.pretrain.moco import MoCo


def _official_checkpoint(arch="resnet18", prefix="module."):
    """What facebookresearch/moco main_moco.py saves (v2 head), built from its builder's layout."""
    torch.manual_seed(3)
    moco = MoCo(lambda: getattr(torchvision.models, arch)(num_classes=128), dim=128, queue_size=256, mlp=True)
    opt = torch.optim.SGD(moco.parameters(), lr=0.03, momentum=0.9, weight_decay=1e-4)
    sd = {prefix + k: v for k, v in moco.state_dict().items()}
    return {"epoch": 200, "arch": arch, "state_dict": sd, "optimizer": opt.state_dict()}, moco


@pytest.mark.parametrize("prefix", ["module.", ""])
def test_official_moco_checkpoint_loads_the_query_encoder(tmp_path, prefix):
    obj, moco = _official_checkpoint(prefix=prefix)
    path = tmp_path / "moco_v2_200ep.pth.tar"
    torch.save(obj, path)
    net, info = load_backbone(path)
    assert (info.format, info.arch, info.epoch, info.method) == ("moco_official", "resnet18", 200, "moco")
    ref = {k: v for k, v in moco.encoder_q.state_dict().items() if not k.startswith("fc.")}
    got = net.state_dict()
    assert ref.keys() == got.keys()
    for k in ref:
        assert torch.equal(ref[k], got[k]), k
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 512)


def test_torchvision_state_dict_is_the_supervised_format(tmp_path):
    torch.manual_seed(0)
    ref = torchvision.models.resnet50()
    path = tmp_path / "resnet50-supervised.pth"
    torch.save(ref.state_dict(), path)
    net, info = load_backbone(path)
    assert (info.format, info.arch, info.method) == ("torchvision", "resnet50", "supervised")
    assert torch.equal(net.layer4[2].conv3.weight, ref.layer4[2].conv3.weight)


def test_mocobench_checkpoint_and_random(synth, tmp_path):
    out = tmp_path / "run"
    run_cli(["pretrain", "--data", synth / "train", "--out", out, "--epochs", "1", "--max-steps", "1", *TINY])
    net, info = load_backbone(out / "checkpoint_last.pth")
    assert (info.format, info.method, info.arch) == ("mocobench", "moco_v2", "resnet18")
    sd = read_checkpoint(out / "checkpoint_last.pth")["state_dict"]
    assert torch.equal(net.conv1.weight, sd["module.encoder_q.conv1.weight"])
    r1, _ = load_backbone("random", arch="resnet18", seed=1)
    r2, info = load_backbone("random", arch="resnet18", seed=1)
    assert info.method == "random" and torch.equal(r1.conv1.weight, r2.conv1.weight)


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(CheckpointError, match="first keys seen: \\['foo'\\]"):
        detect_format({"foo": 1})
    obj, _ = _official_checkpoint()
    path = tmp_path / "c.pth"
    torch.save(obj, path)
    with pytest.raises(CheckpointError, match="holds a resnet18, but resnet50 was asked for"):
        load_backbone(path, arch="resnet50")
    sd = torchvision.models.resnet18().state_dict()
    sd.pop("layer1.0.bn1.running_mean")
    torch.save(sd, tmp_path / "broken.pth")
    with pytest.raises(CheckpointError, match="missing keys \\['layer1.0.bn1.running_mean'\\]"):
        load_backbone(tmp_path / "broken.pth")
    sd["layer1.0.bn1.running_mean"] = torch.zeros(64)
    sd["extra.weight"] = torch.zeros(1)
    torch.save(sd, tmp_path / "broken.pth")
    with pytest.raises(CheckpointError, match="torchvision layout .* 1 keys that layout does not save: \\['extra.weight'\\]"):
        load_backbone(tmp_path / "broken.pth")
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="c.pth cannot be read"):
        load_backbone(path)
    with pytest.raises(CheckpointError, match="needs an architecture"):
        load_backbone("random")


@pytest.mark.parametrize("arch", ["resnet18", "resnet34", "resnet50", "resnet101"])
def test_architecture_is_inferred_from_keys(arch):
    assert infer_resnet_arch(getattr(torchvision.models, arch)().state_dict()) == arch


def test_atomic_save_keeps_the_old_file_when_a_write_fails(tmp_path):
    path = tmp_path / "ckpt.pth"
    atomic_save({"a": torch.ones(2)}, path)
    with pytest.raises((AttributeError, pickle.PicklingError, TypeError)):
        atomic_save({"a": torch.zeros(2), "bad": lambda: 0}, path)  # lambdas cannot be pickled
    assert torch.equal(read_checkpoint(path)["a"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pth"]
