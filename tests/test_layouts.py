"""Every checkpoint layout of ``mocobench.layouts``: a torchvision ResNet saved the way that framework saves
it, with its extra parts, reads back to identical backbone tensors (exact equality); what the reader did
is recorded; unknown keys, unsafe pickles and ambiguous stems are errors that name the problem."""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from helpers import run_cli

from mocobench.checkpoint import (
    CheckpointError,
    LoadOptions,
    load_backbone,
    read_checkpoint,
    resolve_layout,
    set_input_normalization,
)
from mocobench.layouts import LAYOUTS
from mocobench.resnet_keys import tv_to_d2


class Config:
    """Stands for a framework's config object (omegaconf, a Lightning AttributeDict...)."""


def _resnet(arch: str = "resnet18", seed: int = 0, small: int | None = None) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = getattr(torchvision.models, arch)()
    if small is not None:  # a CIFAR stem: 3x3 stride-1 conv1 with this padding, no max-pool
        net.conv1 = torch.nn.Conv2d(3, 64, 3, 1, small, bias=False)
        net.maxpool = torch.nn.Identity()
    for m in net.modules():  # non-trivial BN statistics, so a buffer that is not copied shows
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.num_batches_tracked.fill_(7)
    return net


def _backbone(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in net.state_dict().items() if not k.startswith("fc.")}


def _under(prefix: str, sd: dict) -> dict:
    return {prefix + k: v for k, v in sd.items()}


def _mlp(prefix: str, dims=(512, 64, 16), bn: bool = True) -> dict[str, torch.Tensor]:
    """A projection MLP's tensors (Linear, [BN], ReLU, Linear), as the frameworks name them."""
    out = {f"{prefix}0.weight": torch.randn(dims[1], dims[0]), f"{prefix}0.bias": torch.randn(dims[1])}
    last = 3 if bn else 2
    if bn:
        out.update({f"{prefix}1.weight": torch.ones(dims[1]), f"{prefix}1.bias": torch.zeros(dims[1]),
                    f"{prefix}1.running_mean": torch.zeros(dims[1]), f"{prefix}1.running_var": torch.ones(dims[1]),
                    f"{prefix}1.num_batches_tracked": torch.tensor(3)})
    out.update({f"{prefix}{last}.weight": torch.randn(dims[2], dims[1]), f"{prefix}{last}.bias": torch.randn(dims[2])})
    return out


def _full(net) -> dict[str, torch.Tensor]:
    """The encoder with its fc (a projection head in place of the classifier)."""
    sd = _backbone(net)
    sd.update(_mlp("fc."))
    return sd


# Each builder: net -> the object the framework saves. Sources are in mocobench/layouts.py.
BUILDERS = {
    "mocobench": lambda net: {
        "format": "mocobench", "format_version": 1, "method": "moco_v2", "backbone_prefix": "encoder_q.", "epoch": 3,
        "state_dict": {**_under("module.encoder_q.", _full(net)), **_under("module.encoder_k.", _full(_resnet())),
                       "module.queue": torch.randn(16, 32), "module.queue_ptr": torch.zeros(1, dtype=torch.long)}},
    "moco_official": lambda net: {
        "epoch": 200, "arch": "resnet18", "optimizer": {"state": {}, "param_groups": []},
        "state_dict": {**_under("module.encoder_q.", _full(net)), **_under("module.encoder_k.", _full(_resnet())),
                       "module.queue": torch.randn(16, 32), "module.queue_ptr": torch.zeros(1, dtype=torch.long)}},
    "moco_v3": lambda net: {
        "epoch": 100, "arch": "resnet18", "scaler": {"scale": 1.0},
        "state_dict": {**_under("module.base_encoder.", {**_backbone(net), **_mlp("fc.", (512, 64, 16))}),
                       **_under("module.momentum_encoder.", {**_backbone(_resnet(seed=1)), **_mlp("fc.")}),
                       **_mlp("module.predictor.", (16, 64, 16))}},
    "solo_learn": lambda net: {
        "epoch": 399, "global_step": 1000, "pytorch-lightning_version": "2.1.0", "hyper_parameters": {"lr": 0.3},
        "state_dict": {**_under("backbone.", _backbone(net)), **_under("momentum_backbone.", _backbone(_resnet(seed=2))),
                       **_mlp("projector."), **_mlp("momentum_projector."), **_mlp("predictor.", (16, 64, 16)),
                       "classifier.weight": torch.randn(10, 512), "classifier.bias": torch.zeros(10)}},
    "lightly": lambda net: {
        "epoch": 99, "global_step": 10, "pytorch-lightning_version": "2.1.0", "hyper_parameters": {"lr": 0.3},
        "state_dict": {**_under("backbone.", _backbone(net)), **_under("key_backbone.", _backbone(_resnet(seed=2))),
                       **_mlp("projection_head.layers."), **_mlp("key_projection_head.layers."),
                       "online_classifier.classification_head.weight": torch.randn(10, 512),
                       "online_classifier.classification_head.bias": torch.zeros(10)}},
    "mmselfsup": lambda net: {
        "meta": {"epoch": 200, "mmengine_version": "0.10.0"},
        "state_dict": {**_under("backbone.", _backbone(net)), **_mlp("neck.mlp."),
                       **_under("encoder_k.module.0.", _backbone(_resnet(seed=3))), **_mlp("encoder_k.module.1.mlp."),
                       "encoder_k.steps": torch.tensor(5), "queue": torch.randn(16, 32),
                       "queue_ptr": torch.zeros(1, dtype=torch.long)}},
    "vissl": lambda net: {
        "phase_idx": 10, "iteration": 1000, "type": "checkpoint",
        "classy_state_dict": {"base_model": {"model": {
            "trunk": _under("_feature_blocks.", _backbone(net)),
            "heads": _mlp("0.clf.0.", bn=False)}}}},
    "dino": lambda net: {
        "epoch": 100, "args": argparse.Namespace(arch="resnet50", lr=0.3), "dino_loss": {"center": torch.zeros(1, 16)},
        "teacher": {**_under("module.backbone.", _backbone(net)), **_mlp("module.head.mlp.", bn=False)},
        "student": {**_under("module.backbone.", _backbone(_resnet(seed=5))), **_mlp("module.head.mlp.", bn=False)}},
    "swav": lambda net: {**_under("module.", _backbone(net)), **_mlp("module.projection_head.", (512, 64, 16)),
                         "module.prototypes.weight": torch.randn(30, 16)},
    "pycontrast": lambda net: {
        "epoch": 200, "contrast": {"memory": torch.randn(8, 16)},
        "model": {**_under("module.encoder.", _backbone(net)), **_mlp("module.head.", bn=False),
                  "module.head_jig.fc1.weight": torch.randn(4, 4)},
        "model_ema": {**_under("encoder.", _backbone(_resnet(seed=6))), **_mlp("head.", bn=False)}},
    "barlowtwins": lambda net: {
        "epoch": 1000, "model": {**_under("module.backbone.", _backbone(net)), **_mlp("module.projector."),
                                 "module.bn.running_mean": torch.zeros(16), "module.bn.running_var": torch.ones(16),
                                 "module.bn.num_batches_tracked": torch.tensor(9)}},
    "torchvision": lambda net: net.state_dict(),
}


def _save(obj, path: Path, layout: str) -> Path:
    if layout == "detectron2":
        with open(path, "wb") as f:
            pickle.dump(obj, f)
    else:
        torch.save(obj, path)
    return path


def _d2_pickle(net) -> dict:
    """What facebookresearch/moco detection/convert-pretrain-to-detectron2.py writes for a MoCo v2 encoder:
    every key renamed, the MLP head included as stem.fc.* (the official script keeps it)."""
    model = {tv_to_d2(k): v.numpy() for k, v in _backbone(net).items()}
    model.update({"stem." + k: v.numpy() for k, v in _mlp("fc.", bn=False).items()})
    return {"model": model, "__author__": "MOCO", "matching_heuristics": True}


BUILDERS["detectron2"] = _d2_pickle


BUILDERS["simclr_converted"] = lambda net: {"state_dict": net.state_dict()}


#: What each builder's file holds besides the backbone, by part (tensors per part).
DROPPED = {
    "mocobench": {"encoder_k": 129, "encoder_q.fc": 9, "queue": 1, "queue_ptr": 1},
    "moco_official": {"encoder_k": 129, "encoder_q.fc": 9, "queue": 1, "queue_ptr": 1},
    "moco_v3": {"base_encoder.fc": 9, "momentum_encoder": 129, "predictor": 9},
    "solo_learn": {"classifier": 2, "momentum_backbone": 120, "momentum_projector": 9, "predictor": 9, "projector": 9},
    "lightly": {"key_backbone": 120, "key_projection_head": 9, "online_classifier": 2, "projection_head": 9},
    "mmselfsup": {"encoder_k": 130, "neck": 9, "queue": 1, "queue_ptr": 1},
    "vissl": {"classy_state_dict.base_model.model.heads": 4},
    "dino": {"dino_loss": 1, "head": 4, "student": 124},
    "swav": {"projection_head": 9, "prototypes": 1},
    "pycontrast": {"contrast": 1, "head": 4, "head_jig": 1, "model_ema": 124},
    "barlowtwins": {"bn": 3, "projector": 9},
    "detectron2": {"stem.fc": 4},
    "simclr_converted": {"fc": 2},
    "torchvision": {"fc": 2},
}


def test_every_layout_has_a_builder():
    assert {layout.name for layout in LAYOUTS} - {"caffe2_msra"} == set(BUILDERS)


@pytest.mark.parametrize("layout", sorted(BUILDERS))
def test_layout_loads_identical_backbone_tensors(tmp_path, layout):
    net = _resnet(seed=11)
    path = _save(BUILDERS[layout](net), tmp_path / f"{layout}.ckpt", layout)
    named = LoadOptions(format="simclr_converted") if layout == "simclr_converted" else None  # its structure is torchvision's
    got, info = load_backbone(path, options=named)
    assert info.format == layout
    ref = _backbone(net)
    assert got.state_dict().keys() == ref.keys()
    for k, v in ref.items():
        assert torch.equal(got.state_dict()[k], v), k
    assert info.tensors == len(ref) and info.arch == "resnet18" and info.stem == "standard"
    assert info.dropped == DROPPED[layout]
    x = torch.randn(2, 3, 32, 32)
    net.fc = torch.nn.Identity()
    assert torch.equal(got.eval()(x), net.eval()(x))
    forced, finfo = load_backbone(path, options=LoadOptions(format=layout))  # --format reads the same file
    assert finfo.format == layout and torch.equal(forced.conv1.weight, ref["conv1.weight"])


def test_dropped_parts_are_listed(tmp_path):
    path = _save(BUILDERS["solo_learn"](_resnet()), tmp_path / "solo.ckpt", "solo_learn")
    _, info = load_backbone(path)
    assert (info.prefix, info.container) == ("backbone.", "state_dict")
    assert info.dropped == {"classifier": 2, "momentum_backbone": 120, "momentum_projector": 9, "predictor": 9,
                            "projector": 9}


def test_an_unknown_extra_key_is_an_error_that_names_it(tmp_path):
    obj = BUILDERS["solo_learn"](_resnet())
    obj["state_dict"]["adapter.weight"] = torch.zeros(3)
    path = _save(obj, tmp_path / "solo.ckpt", "solo_learn")
    with pytest.raises(CheckpointError, match=r"solo_learn layout \(backbone under 'state_dict:backbone.', 120 tensors\)"
                       r" but holds 1 keys that layout does not save: \['adapter.weight'\]. Nothing was loaded"):
        load_backbone(path)
    _, info = load_backbone(path, options=LoadOptions(prefix="backbone."))  # the way out the message gives
    assert info.format == "prefix" and info.dropped["adapter"] == 1


def test_a_key_under_the_backbone_that_is_not_resnet_is_an_error(tmp_path):
    obj = BUILDERS["moco_v3"](_resnet())
    obj["state_dict"]["module.base_encoder.layer1.0.attn.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError, match=r"'base_encoder.layer1.0.attn.weight'"):
        load_backbone(_save(obj, tmp_path / "v3.pth", "moco_v3"))


def test_prefix_reads_a_made_up_layout(tmp_path):
    net = _resnet(seed=4)
    obj = {"weights": 1, "model": {**_under("net.trunk.", _backbone(net)), **_mlp("net.neck."), "ema.step": torch.tensor(4)}}
    path = _save(obj, tmp_path / "custom.pt", "")
    with pytest.raises(CheckpointError, match="not any known layout"):
        load_backbone(path)
    got, info = load_backbone(path, options=LoadOptions(prefix="net.trunk."))
    assert (info.format, info.prefix, info.container) == ("prefix", "net.trunk.", "model")
    assert info.dropped == {"ema": 1, "net": 9}
    assert torch.equal(got.layer4[1].bn2.running_var, net.layer4[1].bn2.running_var)
    with pytest.raises(CheckpointError, match="no key 'trunk.conv1.weight'"):
        load_backbone(path, options=LoadOptions(prefix="trunk."))


def test_dino_teacher_is_the_default_and_student_is_named(tmp_path):
    teacher = _resnet(seed=11)
    path = _save(BUILDERS["dino"](teacher), tmp_path / "dino_full.pth", "dino")
    got, info = load_backbone(path)
    assert info.part == "teacher" and torch.equal(got.conv1.weight, teacher.conv1.weight)
    got, info = load_backbone(path, options=LoadOptions(part="student"))
    assert info.part == "student" and torch.equal(got.conv1.weight, _resnet(seed=5).conv1.weight)
    with pytest.raises(CheckpointError, match="--part query: layout dino has parts teacher, student"):
        load_backbone(path, options=LoadOptions(format="dino", part="query"))


def test_moco_key_encoder_is_a_part(tmp_path):
    path = _save(BUILDERS["moco_official"](_resnet(seed=11)), tmp_path / "moco.pth.tar", "moco_official")
    got, info = load_backbone(path, options=LoadOptions(part="key"))
    assert (info.format, info.part, info.prefix) == ("moco_official", "key", "encoder_k.")
    assert torch.equal(got.conv1.weight, _resnet().conv1.weight)


def test_old_solo_learn_files_keep_the_backbone_under_encoder(tmp_path):
    net = _resnet(seed=11)
    obj = BUILDERS["solo_learn"](net)
    obj["state_dict"] = {("encoder." + k[len("backbone."):] if k.startswith("backbone.") else k): v
                         for k, v in obj["state_dict"].items()}
    got, info = load_backbone(_save(obj, tmp_path / "old.ckpt", "solo_learn"))
    assert (info.format, info.prefix) == ("solo_learn", "encoder.")
    assert torch.equal(got.layer1[0].conv1.weight, net.layer1[0].conv1.weight)


def test_small_image_stems_are_named_never_guessed(tmp_path):
    net = _resnet(seed=11, small=2)  # solo-learn's CIFAR stem: padding 2
    path = _save(BUILDERS["solo_learn"](net), tmp_path / "cifar.ckpt", "solo_learn")
    got, info = load_backbone(path)
    assert info.stem == "small_pad2" and isinstance(got.maxpool, torch.nn.Identity)
    net.fc = torch.nn.Identity()
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(got.eval()(x), net.eval()(x))
    flat = _save(net.state_dict(), tmp_path / "cifar_flat.pth", "torchvision")  # a flat file does not say
    with pytest.raises(CheckpointError, match="small-image stem .* --stem small or --stem small_pad2"):
        load_backbone(flat)
    _, info = load_backbone(flat, options=LoadOptions(stem="small_pad2"))
    assert info.stem == "small_pad2"
    out = tmp_path / "cifar.pkl"
    result = run_cli(["convert", str(path), "--to", "detectron2", "--out", str(out)], expect_ok=False)
    assert result.exit_code != 0 and "small-image stem" in result.output and not out.exists()


def test_detectron2_pickle_with_an_object_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    path = tmp_path / "evil.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": {"stem.conv1.weight": np.zeros((64, 3, 7, 7), np.float32)}, "x": Payload()}, f)
    with pytest.raises(CheckpointError, match=r"asks for pathlib.*touch.*refused \(nothing in the file was run\)"):
        load_backbone(path)
    assert not marker.exists()


def test_msra_caffe2_weights_are_refused_with_the_reason(tmp_path):
    path = tmp_path / "R-50.pkl"
    with open(path, "wb") as f:
        pickle.dump({"blobs": {"conv1_w": np.zeros((64, 3, 7, 7), np.float32), "res_conv1_bn_s": np.ones(64, np.float32),
                               "res2_0_branch2a_w": np.zeros((64, 64, 1, 1), np.float32)}}, f)
    with pytest.raises(CheckpointError, match="caffe2_msra.*BGR inputs in 0-255 and put the stride in the 1x1 conv"):
        load_backbone(path)


def test_a_torch_file_that_needs_full_unpickling_is_refused(tmp_path):
    path = tmp_path / "lightning.ckpt"
    obj = BUILDERS["solo_learn"](_resnet())
    obj["hyper_parameters"] = {"cfg": Config()}  # an arbitrary class: not loadable with weights_only
    torch.save(obj, path)
    with pytest.raises(CheckpointError, match="needs full unpickling .* never unpickles untrusted objects"):
        read_checkpoint(path)


class _RunsCode:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_a_torch_file_that_would_run_code_is_refused_without_the_advice_to_load_it(tmp_path):
    """Issue 19: torch's own message says to retry with weights_only=False, which would run the payload."""
    path, marker = tmp_path / "evil.pth", tmp_path / "pwned"
    obj = BUILDERS["torchvision"](_resnet())
    obj["extra"] = _RunsCode(str(marker))
    torch.save(obj, path)
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(path)
    message = str(err.value)
    assert "refused: it asks for posix.system, which runs code" in message and "nothing in it was run" in message
    assert "Do not open this file with torch.load(weights_only=False)" in message
    assert "python -c" not in message and not marker.exists()


def test_legacy_torch_files_load(tmp_path):
    net = _resnet(seed=11)  # the 2020 MoCo releases predate torch's zip format
    path = tmp_path / "moco_v2_800ep_pretrain.pth.tar"
    torch.save(BUILDERS["moco_official"](net), path, _use_new_zipfile_serialization=False)
    got, info = load_backbone(path)
    assert info.format == "moco_official" and torch.equal(got.layer2[0].downsample[1].running_mean,
                                                          net.layer2[0].downsample[1].running_mean)


def test_flat_files_name_the_method_only_from_a_classifier(tmp_path):
    net = _resnet()
    _, info = load_backbone(_save(net.state_dict(), tmp_path / "sup.pth", "torchvision"))
    assert info.method == "supervised" and info.dropped == {"fc": 2}
    _, info = load_backbone(_save(_backbone(net), tmp_path / "barlow.pth", "torchvision"))
    assert info.method == "unknown" and info.dropped == {}


@pytest.mark.parametrize("normalize", ["none", "swav", "cifar"])
def test_input_normalisation_reaches_every_path_through_the_network(normalize):
    """The tasks feed ImageNet-normalised images; a backbone trained on another normalisation must see its own,
    through forward and through resnet_features (which calls the layers one by one), padding included."""
    from mocobench.evaluators.features import resnet_features
    from mocobench.layouts import NORMALIZATIONS

    ref = _resnet(seed=11).eval()
    ref.fc = torch.nn.Identity()
    net = set_input_normalization(__import__("copy").deepcopy(ref), normalize)
    rgb = torch.rand(2, 3, 40, 40, dtype=torch.float64).float()
    tensor = lambda v: torch.tensor(v).view(1, 3, 1, 1)  # noqa: E731
    imagenet = (rgb - tensor(NORMALIZATIONS["imagenet"][0])) / tensor(NORMALIZATIONS["imagenet"][1])
    own = (rgb - tensor(NORMALIZATIONS[normalize][0])) / tensor(NORMALIZATIONS[normalize][1])
    with torch.no_grad():
        torch.testing.assert_close(net(imagenet), ref(own), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(resnet_features(net, imagenet), resnet_features(ref, own), atol=1e-5, rtol=1e-5)
        assert not torch.allclose(resnet_features(ref, imagenet), resnet_features(ref, own), atol=1e-3)


def test_lightly_backbone_that_is_the_ema_network_is_flagged_and_the_online_one_named(tmp_path, caplog):
    online, ema = _resnet(seed=11), _resnet(seed=12)
    obj = {"state_dict": {**_under("backbone.", _backbone(ema)), **_under("student_backbone.", _backbone(online)),
                          **_mlp("projection_head."), **_mlp("student_projection_head.")}}
    path = _save(obj, tmp_path / "lightly_dino.ckpt", "lightly")
    got, info = load_backbone(path)
    assert info.part == "backbone" and torch.equal(got.conv1.weight, ema.conv1.weight)
    assert "'backbone' is the EMA (teacher) network; --part student" in caplog.text
    got, info = load_backbone(path, options=LoadOptions(part="student"))
    assert info.part == "student" and torch.equal(got.conv1.weight, online.conv1.weight)


def test_openselfsup_saves_the_backbone_twice_and_either_copy_reads(tmp_path):
    net = _resnet(seed=11)
    obj = {"meta": {"epoch": 200}, "state_dict": {
        **_under("backbone.", _backbone(net)), **_under("encoder_q.0.", _backbone(net)), **_mlp("encoder_q.1.mlp."),
        **_under("encoder_k.0.", _backbone(_resnet(seed=3))), **_mlp("encoder_k.1.mlp."),
        "queue": torch.randn(16, 32), "queue_ptr": torch.zeros(1, dtype=torch.long)}}
    got, info = load_backbone(_save(obj, tmp_path / "openselfsup.pth", ""))
    assert (info.format, info.prefix) == ("mmselfsup", "backbone.")
    assert info.dropped == {"encoder_k": 129, "encoder_q": 129, "queue": 1, "queue_ptr": 1}
    del obj["state_dict"]["backbone.conv1.weight"]  # no backbone.* stem: the encoder_q.0 copy is read
    obj["state_dict"] = {k: v for k, v in obj["state_dict"].items() if not k.startswith("backbone.")}
    got, info = load_backbone(_save(obj, tmp_path / "openselfsup_q.pth", ""))
    assert (info.format, info.prefix) == ("mmselfsup", "encoder_q.0.")
    assert torch.equal(got.layer3[0].downsample[0].weight, net.layer3[0].downsample[0].weight)


def test_pycontrast_ema_copy_is_a_part(tmp_path):
    path = _save(BUILDERS["pycontrast"](_resnet(seed=11)), tmp_path / "InfoMin_800.pth", "pycontrast")
    got, info = load_backbone(path, options=LoadOptions(part="ema"))
    assert (info.container, info.prefix, info.part) == ("model_ema", "encoder.", "ema")
    assert torch.equal(got.conv1.weight, _resnet(seed=6).conv1.weight)


def test_part_and_stem_options_that_do_not_apply_are_errors(tmp_path):
    path = _save(_resnet().state_dict(), tmp_path / "r18.pth", "torchvision")
    with pytest.raises(CheckpointError, match="--part student: layout torchvision has one backbone, no parts"):
        load_backbone(path, options=LoadOptions(format="torchvision", part="student"))
    with pytest.raises(CheckpointError, match="--stem small: checkpoint .* has a standard 7x7 conv1"):
        load_backbone(path, options=LoadOptions(stem="small"))
    with pytest.raises(CheckpointError, match=r"is not layout mocobench \(it has 'state_dict:encoder_q.conv1.weight' or .* and a top-level format='mocobench'\)"):
        resolve_layout(read_checkpoint(path), LoadOptions(format="mocobench"))


def test_cli_reads_a_foreign_layout_and_records_what_it_did(synth, tmp_path):
    net = _resnet(seed=11)
    path = _save(BUILDERS["swav"](net), tmp_path / "swav_800ep_pretrain.pth.tar", "swav")
    out = tmp_path / "knn"
    knn = ["--task", "knn", "--data", synth, "--set", "image_size=32", "--set", "workers=0", "--set", "k=5"]
    run_cli(["transfer", path, *knn, "--out", out])
    rec = __import__("json").loads((out / "results.json").read_text())
    ck = rec["checkpoint"]
    assert (ck["format"], ck["prefix"], ck["tensors"], ck["stem"], ck["normalize"]) == ("swav", "", 120, "standard", "swav")
    assert ck["dropped"] == {"projection_head": 9, "prototypes": 1}
    assert rec["config"]["derived"]["normalize"] == "swav (the checkpoint)"
    run_cli(["transfer", path, *knn, "--out", tmp_path / "knn_imagenet", "--set", "normalize=imagenet"])
    rec2 = __import__("json").loads((tmp_path / "knn_imagenet" / "results.json").read_text())
    assert rec2["config"]["derived"]["normalize"] == "imagenet (--set normalize)"
    assert rec2["checkpoint"]["normalize"] == "imagenet"
    r = run_cli(["transfer", path, *knn, "--out", tmp_path / "bad", "--set", "normalize=bgr"], expect_ok=False)
    assert "--set normalize=bgr: expected one of imagenet, swav, cifar, none" in r.output
    r = run_cli(["transfer", path, *knn, "--out", tmp_path / "bad", "--format", "dino"], expect_ok=False)
    assert "is not layout dino" in r.output


def test_detection_refuses_a_small_stem_and_maps_the_normalisation_to_pixel_stats(tmp_path):
    from mocobench.evaluators.detection import pixel_stats

    assert pixel_stats("imagenet") == []
    assert pixel_stats("none") == ["MODEL.PIXEL_MEAN", "[0.0, 0.0, 0.0]", "MODEL.PIXEL_STD", "[255.0, 255.0, 255.0]"]
    assert pixel_stats("swav")[3] == "[58.14, 57.12, 57.375]"  # 255 x (0.228, 0.224, 0.225)
    path = _save(BUILDERS["solo_learn"](_resnet(small=2)), tmp_path / "cifar.ckpt", "solo_learn")
    r = run_cli(["transfer", path, "--task", "voc_det", "--data", tmp_path, "--out", tmp_path / "det"], expect_ok=False)
    assert "small-image stem (small_pad2" in r.output and "detection cannot use it" in r.output


def test_readme_tables_are_the_data():
    from mocobench.layouts import layouts_markdown
    from mocobench.zoo import catalogue_markdown

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for name, table in (("layouts", layouts_markdown()), ("catalogue", catalogue_markdown())):
        block = readme.split(f"<!-- {name}:begin -->\n")[1].split(f"\n<!-- {name}:end -->")[0]
        assert block == table, f"README {name} table is stale: paste {name}_markdown() between the markers"


@pytest.mark.parametrize("protocol", [2, 4])
def test_detectron2_pickles_of_either_protocol_read(tmp_path, protocol):
    net = _resnet(seed=11)  # protocol 2 is what Python 2 era detectron2 files and `pickle.dump(..., 2)` write
    path = tmp_path / "moco.pkl"
    with open(path, "wb") as f:
        pickle.dump(_d2_pickle(net), f, protocol=protocol)
    got, info = load_backbone(path)
    assert info.format == "detectron2" and info.dropped == {"stem.fc": 4}
    assert torch.equal(got.layer4[1].bn2.weight, net.layer4[1].bn2.weight)


def test_layouts_that_would_read_a_file_differently_are_not_chosen_by_table_order(tmp_path):
    net = _resnet(small=1)  # an mmpretrain ResNet_CIFAR classifier: backbone.* and head.fc.*
    obj = {"state_dict": {**_under("backbone.", _backbone(net)), "head.fc.weight": torch.randn(10, 512),
                          "head.fc.bias": torch.zeros(10)}}
    path = _save(obj, tmp_path / "cifar_cls.pth", "")
    with pytest.raises(CheckpointError, match=r"fits several layouts that would read it differently: solo_learn "
                       r"\(stem small_pad2, inputs cifar\), mmselfsup \(stem small, inputs imagenet\).*--format"):
        load_backbone(path)
    _, info = load_backbone(path, options=LoadOptions(format="mmselfsup"))
    assert (info.stem, info.normalize) == ("small", "imagenet")
    obj["state_dict"].update(_under("backbone.", _backbone(_resnet())))  # a standard stem: both read it alike
    _, info = load_backbone(_save(obj, tmp_path / "in1k_cls.pth", ""))
    assert info.format == "solo_learn" and info.stem == "standard"


def test_prefix_never_drops_a_key_inside_the_resnet(tmp_path):
    sd = _resnet().state_dict()
    sd["layer1.0.se.fc1.weight"] = torch.zeros(4, 64)  # an SE-ResNet: not the torchvision network
    sd["projection_head.0.weight"] = torch.zeros(4, 4)
    path = _save(sd, tmp_path / "se.pth", "")
    with pytest.raises(CheckpointError, match=r"1 keys inside the ResNet under '' are not torchvision ResNet keys.*"
                       r"layer1.0.se.fc1.weight"):
        load_backbone(path, options=LoadOptions(prefix=""))
    del sd["layer1.0.se.fc1.weight"]
    _, info = load_backbone(_save(sd, tmp_path / "ok.pth", ""), options=LoadOptions(prefix=""))
    assert info.dropped == {"fc": 2, "projection_head": 1}
    with pytest.raises(CheckpointError, match="does not combine with --format or --part"):
        load_backbone(path, options=LoadOptions(prefix="", part="teacher"))


def test_only_a_bare_state_dict_with_a_classifier_is_called_supervised(tmp_path):
    probe = {"epoch": 100, "best_acc1": 67.7, "state_dict": _under("module.", _resnet().state_dict())}
    _, info = load_backbone(_save(probe, tmp_path / "linear-100ep.pth.tar", ""))  # MoCo's main_lincls.py output
    assert (info.format, info.method, info.container) == ("torchvision", "unknown", "state_dict")


def test_widened_resnets_and_compiled_submodules(tmp_path):
    sd = _resnet().state_dict()
    sd["conv1.weight"] = torch.zeros(128, 3, 7, 7)  # SimCLR 2x widens the stem too
    with pytest.raises(CheckpointError, match=r"key names of a resnet18 but other shapes .*conv1.weight \(128, 3, 7, 7\)"):
        load_backbone(_save(sd, tmp_path / "wide.pth", ""))
    net = _resnet(seed=11)
    obj = {"state_dict": {**_under("backbone._orig_mod.", _backbone(net)), **_mlp("projector.")}}
    got, info = load_backbone(_save(obj, tmp_path / "compiled.ckpt", ""))  # torch.compile(self.backbone)
    assert info.format == "solo_learn" and torch.equal(got.conv1.weight, net.conv1.weight)


def test_msra_weights_in_their_flat_python2_form_are_refused(tmp_path):
    path = tmp_path / "R-50.pkl"  # detectron2's MSRA file: a flat dict, written by Python 2 (protocol 2)
    with open(path, "wb") as f:
        pickle.dump({"conv1_w": np.zeros((64, 3, 7, 7), np.float32), "res2_0_branch2a_w": np.zeros(1, np.float32)},
                    f, protocol=2)
    with pytest.raises(CheckpointError, match="caffe2_msra"):
        load_backbone(path)


def test_a_swav_file_without_its_heads_is_a_plain_torchvision_file(tmp_path):
    net = _resnet()  # SwAV's backbone keys alone are torchvision's: no swav std without swav parts
    _, info = load_backbone(_save(_under("module.", _backbone(net)), tmp_path / "r.pth", ""))
    assert (info.format, info.normalize) == ("torchvision", "imagenet")
