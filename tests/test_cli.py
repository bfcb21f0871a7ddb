"""End-to-end CLI runs on real images (cifar10-sub) and on the synthetic set, and option errors."""

from __future__ import annotations

import math

import pytest
import torch
import yaml
from helpers import TINY, run_cli, tb_scalars

from mocobench.checkpoint import read_checkpoint
from mocobench.metrics import read_metrics


def test_pretrain_a_few_steps_on_real_cifar10_images(shared_data, tmp_path):
    out = tmp_path / "cifar"
    run_cli(["pretrain", "--data", shared_data / "cifar10-sub" / "train", "--out", out, "--epochs", "1",
             "--max-steps", "3", *TINY])
    ckpt = read_checkpoint(out / "checkpoint_last.pth")
    assert ckpt["global_step"] == 3 and ckpt["step_in_epoch"] == 3 and ckpt["epoch"] == 0
    steps = [r for r in read_metrics(out / "metrics.jsonl") if r["kind"] == "step"]
    assert [r["global_step"] for r in steps] == [1, 2, 3]
    assert {"loss", "acc1", "lr", "images_per_s"} <= steps[0].keys()
    assert all(math.isfinite(r["loss"]) and 0.0 <= r["acc1"] <= 100.0 for r in steps)


def test_pretrain_v1_with_knn_monitor_on_the_synthetic_set(synth, tmp_path):
    out = tmp_path / "v1"
    run_cli(["pretrain", "--data", synth / "train", "--out", out, "--method", "moco_v1", "--epochs", "1", *TINY,
             "--knn-train", synth / "train", "--knn-val", synth / "val", "--knn-k", "5"])
    saved = yaml.safe_load((out / "config.yaml").read_text())
    cfg, derived = saved["config"], saved["derived"]
    assert (cfg["moco_t"], cfg["mlp"], cfg["aug"], cfg["lr_schedule"]) == (0.07, False, "v1", "step")
    assert derived["lr_scaled"] == pytest.approx(0.03 * 16 / 256) and derived["bn_splits"] == 2
    assert "versions" in saved
    epoch = [r for r in read_metrics(out / "metrics.jsonl") if r["kind"] == "epoch"][0]
    assert 0.0 <= epoch["knn_top1"] <= 100.0 and epoch["knn_k"] == 5 and epoch["knn_t"] == 0.1
    sd = read_checkpoint(out / "checkpoint_last.pth")["state_dict"]
    assert "module.encoder_q.fc.weight" in sd and "module.encoder_q.fc.0.weight" not in sd  # v1: one fc layer
    assert (out / "log.txt").read_text().count("epoch 1/1") == 1
    assert "BN: 2 group(s) per process x 1 process(es), 8 images per group" in (out / "log.txt").read_text()


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--queue-size", "100"], "--queue-size=100, --batch-size=16: expected a queue size divisible by the global batch size"),
        (["--bn-splits", "16"], "--bn-splits 16 must divide the per-process batch 16"),
        (["--knn-train", "."], "--knn-train=., --knn-val=None: expected both or neither"),
        (["--moco-m", "1.0"], "'--moco-m': 1.0 is not in the range 0<=x<1"),
    ],
)
def test_bad_options_fail_before_any_work(synth, tmp_path, extra, message):
    r = run_cli(["pretrain", "--data", synth / "train", "--out", tmp_path / "o", *TINY, *extra], expect_ok=False)
    assert message in r.output
    assert not (tmp_path / "o" / "checkpoint_last.pth").exists()


def test_unknown_arch_lists_the_choices(synth, tmp_path):
    r = run_cli(["pretrain", "--data", synth / "train", "--out", tmp_path / "o", "--arch", "vgg16"], expect_ok=False)
    assert "resnet18" in r.output and "resnet50" in r.output


def test_missing_data_folder_is_named(tmp_path):
    r = run_cli(["pretrain", "--data", tmp_path / "missing", "--out", tmp_path / "o", *TINY], expect_ok=False)
    assert f"--data={tmp_path / 'missing'}: no such folder" in r.output


def test_help_lists_every_config_option():
    out = run_cli(["pretrain", "--help"]).output
    for opt in ("--queue-size", "--moco-m", "--moco-t", "--bn-splits", "--resume", "--amp", "--channels-last",
                "--knn-train", "--lr-milestones", "--mlp / --no-mlp"):
        assert opt in out


def test_bf16_autocast_and_channels_last_run_on_the_cpu(synth, tmp_path):
    out = tmp_path / "amp"
    run_cli(["pretrain", "--data", synth / "train", "--out", out, "--epochs", "1", "--max-steps", "2", *TINY,
             "--amp", "bf16", "--channels-last"])
    ckpt = read_checkpoint(out / "checkpoint_last.pth")
    assert ckpt["state_dict"]["module.queue"].dtype.is_floating_point and ckpt["global_step"] == 2
    assert math.isfinite(read_metrics(out / "metrics.jsonl")[-1]["loss"])
    r = run_cli(["pretrain", "--data", synth / "train", "--out", tmp_path / "fp16", *TINY, "--amp", "fp16",
                 "--device", "cpu"], expect_ok=False)
    assert "--amp=fp16, --device=cpu: expected --amp bf16 on the CPU (fp16 needs CUDA)" in r.output


def test_python_m_mocobench_is_the_console_script_and_version_names_the_stack():
    import subprocess
    import sys

    import torch

    from mocobench.cli import versions

    out = subprocess.run([sys.executable, "-m", "mocobench", "--version"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == versions()
    assert out.stdout.startswith("mocobench 0.1.0 (") and f"torch {torch.__version__.split('+')[0]}" in out.stdout
    assert "torchvision" in out.stdout and "detectron2" in out.stdout
    tasks = subprocess.run([sys.executable, "-m", "mocobench", "tasks"], capture_output=True, text=True, timeout=120)
    assert tasks.returncode == 0 and tasks.stdout == run_cli(["tasks"]).output
    assert "Usage: mocobench" in subprocess.run([sys.executable, "-m", "mocobench", "--help"], capture_output=True,
                                                text=True, timeout=120).stdout


def test_pretraining_mirrors_metrics_jsonl_to_tensorboard_and_no_tensorboard_turns_it_off(synth, tmp_path):
    opts = ["pretrain", "--data", synth / "train", "--epochs", "2", *TINY, "--image-size", "32"]
    run_cli([*opts, "--out", tmp_path / "on", "--knn-train", synth / "train", "--knn-val", synth / "val", "--knn-k", "5"])
    records = read_metrics(tmp_path / "on" / "metrics.jsonl")
    got = tb_scalars(tmp_path / "on" / "tensorboard")
    steps = [r for r in records if r["kind"] == "step"]
    assert [s for s, _ in got["step/loss"]] == [r["global_step"] for r in steps]
    assert [v for _, v in got["step/loss"]] == pytest.approx([r["loss"] for r in steps], rel=1e-6)
    assert {"step/lr", "step/acc1", "step/images_per_s", "epoch/knn_top1"} <= set(got)
    run_cli([*opts, "--out", tmp_path / "off", "--no-tensorboard"])
    assert (tmp_path / "off" / "metrics.jsonl").exists() and not (tmp_path / "off" / "tensorboard").exists()


def test_pretrain_config_file_reruns_a_run_and_options_override_single_fields(synth, tmp_path):
    run_cli(["pretrain", "--data", synth / "train", "--out", tmp_path / "a", "--epochs", "1", *TINY])
    saved = tmp_path / "a" / "config.yaml"
    run_cli(["pretrain", "--config", saved, "--out", tmp_path / "b"])  # the same run again, elsewhere
    a, b = (read_checkpoint(tmp_path / d / "checkpoint_last.pth") for d in ("a", "b"))
    assert all(torch.equal(v, b["state_dict"][k]) for k, v in a["state_dict"].items())
    run_cli(["pretrain", "--config", saved, "--out", tmp_path / "c", "--queue-size", "32", "--max-steps", "1"])
    ca, cc = (yaml.safe_load((tmp_path / d / "config.yaml").read_text())["config"] for d in ("a", "c"))
    assert (cc["queue_size"], cc["max_steps"], cc["out"]) == (32, 1, str(tmp_path / "c"))
    assert {k: v for k, v in cc.items() if k not in ("queue_size", "max_steps", "out")} == {
        k: v for k, v in ca.items() if k not in ("queue_size", "max_steps", "out")}
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: many\n")
    r = run_cli(["pretrain", "--config", bad], expect_ok=False)
    assert str(bad) in r.output and "epochs='many': expected an integer >= 1" in r.output
    bad.write_text("config:\n  epoch: 3\n")
    r = run_cli(["pretrain", "--config", bad], expect_ok=False)
    assert str(bad) in r.output and "unknown key 'epoch'" in r.output and "epochs" in r.output
    bad.write_text("epochs: 1\n")
    assert "--data is required (on the command line or in --config FILE)" in run_cli(
        ["pretrain", "--config", bad], expect_ok=False).output


def test_transfer_config_file_reruns_a_results_file_and_set_wins(synth, tmp_path):
    from mocobench.results import read_results

    run_cli(["transfer", "--task", "knn", "random", "--arch", "resnet18", "--data", synth, "--out", tmp_path / "a",
             "--set", "image_size=32", "--set", "k=7", "--set", "workers=0"])
    first = tmp_path / "a" / "results.json"
    run_cli(["transfer", "--task", "knn", "random", "--arch", "resnet18", "--config", first, "--out", tmp_path / "b"])
    a, b = read_results(first), read_results(tmp_path / "b" / "results.json")
    assert a["metrics"] == b["metrics"] and b["config"]["k"] == 7
    run_cli(["transfer", "--task", "knn", "random", "--arch", "resnet18", "--config", first, "--out", tmp_path / "c",
             "--set", "k=3"])
    assert read_results(tmp_path / "c" / "results.json")["config"]["k"] == 3


def test_suite_config_file_says_what_the_comparison_is(synth, tmp_path, monkeypatch):
    from mocobench import suite

    monkeypatch.setitem(suite.PRESETS, "t", (suite.TaskSpec("knn", str(synth), ("image_size=32", "workers=0")),))
    spec = tmp_path / "suite.yaml"
    spec.write_text(yaml.safe_dump({"checkpoints": {"rnd": "random"}, "arch": "resnet18", "preset": "t",
                                    "out": str(tmp_path / "s"), "set": ["knn.k=9"], "baseline": "",
                                    "title": "random against itself"}))
    run_cli(["suite", "--config", spec])
    res = yaml.safe_load((tmp_path / "s" / "rnd" / "knn" / "results.json").read_text())
    assert res["config"]["k"] == 9
    assert (tmp_path / "s" / "report" / "report.md").read_text().startswith("# random against itself\n")
    run_cli(["suite", "--config", spec, "--out", tmp_path / "s2"])  # an option given here wins
    assert (tmp_path / "s2" / "rnd" / "knn" / "results.json").exists()
    spec.write_text("checkpoint: [random]\n")
    r = run_cli(["suite", "--config", spec], expect_ok=False)
    assert "unknown keys ['checkpoint']" in r.output and str(spec) in r.output


def test_declared_ranges_refuse_bad_values_before_any_work_everywhere(synth, tmp_path):
    """The reported cases (issue 19): a range declared once beside the field is checked for options, --set pairs
    and config files alike, and names the option, the value and what was expected."""
    r = run_cli(["pretrain", "--data", synth / "train", "--out", tmp_path / "p", "--image-size", "-3"], expect_ok=False)
    assert r.exit_code == 2 and "--image-size" in r.output and "-3 is not in the range x>=8" in r.output
    assert not (tmp_path / "p").exists()  # nothing started
    for task, pair, expected in (("knn", "k=-5", "an integer >= 1"), ("linear", "epochs=0", "an integer >= 1"),
                                 ("voc_seg", "lr=0", "a number > 0")):
        r = run_cli(["transfer", "--task", task, "random", "--arch", "resnet18", "--data", synth, "--out",
                     tmp_path / task, "--set", pair], expect_ok=False)
        assert f"{pair.split('=')[0]}='{pair.split('=')[1]}': expected {expected}" in r.output, r.output
        assert "Traceback" not in r.output and not (tmp_path / task).exists()
    bad = tmp_path / "bad.yaml"
    bad.write_text("moco_m: 1.5\n")
    r = run_cli(["pretrain", "--config", bad], expect_ok=False)
    assert str(bad) in r.output and "moco_m='1.5': expected a number >= 0 and < 1" in r.output
