"""Converters against real detectron2: converted torchvision ResNets load through DetectionCheckpointer
with every backbone tensor equal (exactly) to the source."""

from __future__ import annotations

import pickle

import pytest
import torch
import torchvision
from helpers import TINY, run_cli

from mocobench.checkpoint import CheckpointError, read_checkpoint, strip_prefix, strip_wrappers
from mocobench.convert import detectron2_to_torchvision, read_detectron2, torchvision_to_detectron2

DEPTHS = {"resnet18": 18, "resnet34": 34, "resnet50": 50, "resnet101": 101}


@pytest.mark.parametrize("arch", list(DEPTHS))
def test_renaming_round_trips_and_drops_the_head(arch):
    sd = getattr(torchvision.models, arch)().state_dict()
    d2 = torchvision_to_detectron2(sd)
    assert not any(k.startswith("fc.") for k in d2) and "stem.conv1.norm.running_mean" in d2
    assert "res5.0.shortcut.norm.weight" in d2 and "res2.0.conv1.weight" in d2
    back = detectron2_to_torchvision(d2)
    assert back.keys() == {k for k in sd if not k.startswith("fc.")}


def test_unknown_keys_are_listed():
    sd = torchvision.models.resnet18().state_dict()
    sd["encoder_q.fc.0.weight"] = torch.zeros(1)
    sd["layer1.0.attn.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"2 keys .* not converted: \['encoder_q.fc.0.weight', 'layer1.0.attn.weight'\]"):
        torchvision_to_detectron2(sd)


def _d2_backbone(depth: int):
    from detectron2.config import get_cfg
    from detectron2.layers import ShapeSpec
    from detectron2.modeling.backbone.resnet import build_resnet_backbone

    cfg = get_cfg()
    cfg.MODEL.RESNETS.DEPTH = depth
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64 if depth < 50 else 256
    cfg.MODEL.RESNETS.STRIDE_IN_1X1 = False
    cfg.MODEL.RESNETS.NORM = "BN"
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res5"]
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    return build_resnet_backbone(cfg, ShapeSpec(channels=3))


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_converted_mocobench_checkpoint_loads_in_detectron2(synth, tmp_path, arch):
    from detectron2.checkpoint import DetectionCheckpointer

    run_cli(["pretrain", "--data", synth / "train", "--out", tmp_path / "pre", "--epochs", "1", "--max-steps", "1",
             *TINY[:1], arch, *TINY[2:]])
    ckpt = tmp_path / "pre" / "checkpoint_last.pth"
    out = tmp_path / "moco.pkl"
    run_cli(["convert", ckpt, "--to", "detectron2", "--out", out])
    with open(out, "rb") as f:
        payload = pickle.load(f)
    assert payload["__author__"] == "mocobench" and payload["matching_heuristics"] is True
    source = strip_prefix(strip_wrappers(read_checkpoint(ckpt)["state_dict"]), "encoder_q.")
    expected = torchvision_to_detectron2({k: v for k, v in source.items() if not k.startswith("fc.")})
    assert read_detectron2(out).keys() == expected.keys()

    model = _d2_backbone(DEPTHS[arch])
    DetectionCheckpointer(model).load(str(out))
    model_sd = model.state_dict()
    assert model_sd.keys() == expected.keys(), "a backbone key is missing or extra"
    for k, v in model_sd.items():
        assert torch.equal(v, expected[k]), f"{k} differs after loading"


def test_convert_to_torchvision_and_bad_suffix(synth, tmp_path):
    run_cli(["pretrain", "--data", synth / "train", "--out", tmp_path / "pre", "--epochs", "1", "--max-steps", "1", *TINY])
    ckpt = tmp_path / "pre" / "checkpoint_last.pth"
    run_cli(["convert", ckpt, "--to", "torchvision", "--out", tmp_path / "tv.pth"])
    net = torchvision.models.resnet18()
    missing, unexpected = net.load_state_dict(torch.load(tmp_path / "tv.pth"), strict=False)
    assert set(missing) == {"fc.weight", "fc.bias"} and not unexpected
    r = run_cli(["convert", ckpt, "--to", "detectron2", "--out", tmp_path / "moco.pth"], expect_ok=False)
    assert "reads converted weights from a .pkl file" in r.output
    assert not (tmp_path / "moco.pth").exists()
