"""Small-data pretraining levers (issue 20): the small-image stem as a first-class variant, and the option that
leaves a query's own older keys out of its negatives. Real pretraining runs on the synthetic set, read back
through the one reader."""

from __future__ import annotations

import torch
from helpers import TINY, run_cli
from test_resume import _assert_same_run

from mocobench.checkpoint import load_backbone, read_checkpoint
from mocobench.results import read_results


def test_a_small_stem_run_is_recorded_rebuilt_by_the_reader_and_refused_by_detection(synth, tmp_path):
    out = tmp_path / "small"
    run_cli(["pretrain", "--data", synth / "train", "--out", out, *TINY, "--epochs", "1", "--stem", "small",
             "--mask-own-keys"])
    ckpt = read_checkpoint(out / "checkpoint_last.pth")
    assert ckpt["config"]["stem"] == "small" and ckpt["config"]["mask_own_keys"] is True
    sd = {k.removeprefix("module."): v for k, v in ckpt["state_dict"].items()}
    assert sd["encoder_q.conv1.weight"].shape == (64, 3, 3, 3) and "queue_ids" in sd
    assert sorted(sd["queue_ids"].tolist()) == list(range(64))  # one epoch of 64 images filled the 64-key queue
    net, info = load_backbone(out / "checkpoint_last.pth")
    assert info.stem == "small" and isinstance(net.maxpool, torch.nn.Identity) and net.conv1.stride == (1, 1)
    with torch.no_grad():  # the encoder's weights, unchanged by the reader
        torch.testing.assert_close(net.conv1.weight, sd["encoder_q.conv1.weight"], atol=0, rtol=0)
    run_cli(["transfer", "--task", "knn", out / "checkpoint_last.pth", "--data", synth, "--out", tmp_path / "knn",
             "--set", "k=5", "--set", "workers=0", "--set", "image_size=32"])
    assert read_results(tmp_path / "knn" / "results.json")["checkpoint"]["stem"] == "small"
    r = run_cli(["convert", out / "checkpoint_last.pth", "--to", "detectron2", "--out", tmp_path / "d2.pkl"],
                expect_ok=False)
    assert "small-image stem" in r.output and not (tmp_path / "d2.pkl").exists(), r.output
    for task, said in (("voc_seg", "the FCN protocol needs the standard 7x7 stride-2 stem"),
                       ("voc_det", "detectron2's ResNet stem is 7x7 stride 2")):
        r = run_cli(["transfer", "--task", task, out / "checkpoint_last.pth", "--data", synth, "--out",
                     tmp_path / task], expect_ok=False)
        assert "small-image stem (small" in r.output and said in r.output, r.output
    r = run_cli(["transfer", "--task", "knn", out / "checkpoint_last.pth", "--stem", "small_pad2", "--data", synth,
                 "--out", tmp_path / "k2", "--set", "k=5"], expect_ok=False)
    assert "records the stem it was trained with, small" in r.output, r.output


def test_mask_own_keys_is_moco_only_and_resumes_exactly(synth, tmp_path):
    r = run_cli(["pretrain", "--data", synth / "train", "--out", tmp_path / "sup", *TINY, "--method", "supervised",
                 "--mask-own-keys"], expect_ok=False)
    assert "--mask-own-keys=True, --method=supervised: expected --mask-own-keys with a MoCo method" in r.output
    opts = ["--data", synth / "train", *TINY, "--image-size", "32", "--mask-own-keys", "--stem", "small"]
    run_cli(["pretrain", *opts, "--epochs", "2", "--out", tmp_path / "ref"])
    run_cli(["pretrain", *opts, "--epochs", "1", "--out", tmp_path / "cut"])
    run_cli(["pretrain", *opts, "--epochs", "2", "--out", tmp_path / "cut", "--resume", "auto"])
    _assert_same_run(tmp_path / "ref", tmp_path / "cut")
