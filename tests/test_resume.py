"""Exact resume: 2 epochs in one run == 1 epoch + resume + 1 epoch, bit for bit (CPU, fixed seed),
also when stopped mid-epoch and with a different number of data workers."""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import TINY, run_cli

from mocobench.checkpoint import load_backbone, read_checkpoint
from mocobench.pretrain.config import ConfigError, PretrainConfig
from mocobench.pretrain.engine import check_resumable


def _pretrain(data, out, *extra):
    return run_cli(["pretrain", "--data", data / "train", "--out", out, "--epochs", "2", *TINY, *extra])


def _assert_same_run(a, b):
    ca, cb = read_checkpoint(a / "checkpoint_last.pth"), read_checkpoint(b / "checkpoint_last.pth")
    assert ca["epoch"] == cb["epoch"] == 2 and ca["global_step"] == cb["global_step"] == 8
    assert ca["state_dict"].keys() == cb["state_dict"].keys()
    for k, v in ca["state_dict"].items():
        assert torch.equal(v, cb["state_dict"][k]), f"{k} differs after resume"
    for pid, st in ca["optimizer"]["state"].items():
        assert torch.equal(st["momentum_buffer"], cb["optimizer"]["state"][pid]["momentum_buffer"])
    la = [json.loads(x) for x in (a / "metrics.jsonl").read_text().splitlines()]
    lb = [json.loads(x) for x in (b / "metrics.jsonl").read_text().splitlines()]
    steps = [r["global_step"] for r in lb if r["kind"] == "step"]
    assert steps == list(range(1, 9)), "metrics.jsonl must hold each step once after a resume"
    assert [r["loss"] for r in la if r["kind"] == "step"] == [r["loss"] for r in lb if r["kind"] == "step"]


@pytest.fixture(scope="module")
def reference(synth, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    _pretrain(synth, out)
    return out


@pytest.mark.parametrize("stop_at,workers", [(4, "0"), (3, "2")], ids=["epoch-boundary", "mid-epoch-2-workers"])
def test_interrupted_and_resumed_run_equals_the_uninterrupted_one(synth, reference, tmp_path, stop_at, workers):
    out = tmp_path / "run"
    _pretrain(synth, out, "--max-steps", stop_at, "--workers", workers)
    mid = read_checkpoint(out / "checkpoint_last.pth")
    assert mid["global_step"] == stop_at
    result = _pretrain(synth, out, "--resume", "auto", "--workers", workers)
    assert "resumed" in result.output or (out / "log.txt").read_text().count("resumed") == 1
    _assert_same_run(reference, out)


def test_checkpoint_has_the_official_layout_and_our_fields(reference):
    ckpt = read_checkpoint(reference / "checkpoint_last.pth")
    assert {"epoch", "arch", "state_dict", "optimizer"} <= ckpt.keys()
    sd = ckpt["state_dict"]
    assert {"module.queue", "module.queue_ptr", "module.encoder_q.conv1.weight", "module.encoder_k.fc.2.weight"} <= sd.keys()
    assert all(k.startswith(("module.encoder_q.", "module.encoder_k.", "module.queue")) for k in sd)
    assert ckpt["format"] == "mocobench" and ckpt["format_version"] == 1 and ckpt["method"] == "moco_v2"
    assert ckpt["config"]["moco_t"] == 0.2 and ckpt["config"]["mlp"] is True
    assert {"shuffle", "torch", "numpy", "python"} <= ckpt["rng"].keys()
    assert (reference / "checkpoint_0002.pth").exists()
    assert not list(reference.glob(".*tmp*")), "temporary checkpoint files left behind"


def test_resume_errors_are_explicit(synth, reference, tmp_path):
    r = run_cli(["pretrain", "--data", synth / "train", "--out", reference, "--epochs", "2", *TINY], expect_ok=False)
    assert "already holds a run" in r.output and "--resume auto" in r.output
    r = run_cli(["pretrain", "--data", synth / "train", "--out", tmp_path / "x", *TINY, "--resume", tmp_path / "nope.pth"],
                expect_ok=False)
    assert "nope.pth: expected 'auto' or an existing checkpoint file" in r.output
    bad = tmp_path / "bad.pth"
    bad.write_bytes((reference / "checkpoint_last.pth").read_bytes()[:5000])
    r = run_cli(["pretrain", "--data", synth / "train", "--out", tmp_path / "y", *TINY, "--resume", bad], expect_ok=False)
    assert "bad.pth cannot be read" in r.output
    r = run_cli(["pretrain", "--data", synth / "train", "--out", reference, "--epochs", "3", *TINY,
                 "--queue-size", "128", "--resume", "auto"], expect_ok=False)
    assert "queue_size: checkpoint 64 vs now 128" in r.output
    official = tmp_path / "official.pth"
    ckpt = read_checkpoint(reference / "checkpoint_last.pth")
    torch.save({k: ckpt[k] for k in ("epoch", "arch", "state_dict", "optimizer")}, official)
    r = run_cli(["pretrain", "--data", synth / "train", "--out", tmp_path / "z", *TINY, "--resume", official],
                expect_ok=False)
    assert "a moco_official checkpoint has no training state to continue" in r.output


def test_resume_auto_without_a_checkpoint_starts_fresh_and_says_so(synth, tmp_path, caplog):
    out = tmp_path / "fresh"
    _pretrain(synth, out, "--max-steps", "1", "--resume", "auto")
    assert read_checkpoint(out / "checkpoint_last.pth")["global_step"] == 1
    assert "no " in (out / "log.txt").read_text() and "starting a fresh run" in (out / "log.txt").read_text()


def test_non_finite_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(synth, tmp_path):
    out = tmp_path / "nan"
    _pretrain(synth, out, "--max-steps", "4")  # one good epoch
    good = (out / "checkpoint_last.pth").read_bytes()
    r = run_cli(["pretrain", "--data", synth / "train", "--out", out, "--epochs", "2", *TINY, "--resume", "auto",
                 "--lr", "1e30"], expect_ok=False)
    assert "loss is nan" in r.output or "loss is inf" in r.output
    assert "at epoch 2, step 2 of 4 (global step 6)" in r.output and "resume from it with a lower --lr" in r.output
    assert (out / "checkpoint_last.pth").read_bytes() == good


def test_sigterm_stops_after_the_step_and_the_resumed_run_is_exact(synth, tmp_path):
    """A real process gets SIGTERM mid-epoch: it saves a resumable checkpoint; resuming gives the
    weights of an uninterrupted run, bit for bit."""
    opts = ["--data", synth / "train", "--epochs", "2", *TINY, "--image-size", "64"]
    run_cli(["pretrain", *opts, "--out", tmp_path / "ref"])
    out = tmp_path / "sig"
    proc = subprocess.Popen([sys.executable, "-m", "mocobench.cli", "pretrain", *map(str, opts), "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    metrics = out / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 2:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 1, output
    assert "interrupted by SIGTERM" in output and "--resume auto" in output
    assert 2 <= read_checkpoint(out / "checkpoint_last.pth")["global_step"] < 8
    run_cli(["pretrain", *opts, "--out", out, "--resume", "auto"])
    _assert_same_run(tmp_path / "ref", out)


def _popen_pretrain(opts, out, prelude=""):
    code = f"{prelude}\nfrom mocobench.cli import main\nmain()"
    return subprocess.Popen([sys.executable, "-c", code, "pretrain", *map(str, opts), "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_kill_9_mid_epoch_resumes_from_the_last_complete_checkpoint(synth, tmp_path):
    opts = ["--data", synth / "train", "--epochs", "2", *TINY, "--image-size", "64"]
    run_cli(["pretrain", *opts, "--out", tmp_path / "ref"])
    out = tmp_path / "killed"
    proc = _popen_pretrain(opts, out)
    metrics = out / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:  # wait for step 6 (epoch 2 under way)
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 7:
            break
        time.sleep(0.01)
    proc.kill()
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert read_checkpoint(out / "checkpoint_last.pth")["global_step"] == 4  # the epoch-1 checkpoint, intact
    run_cli(["pretrain", *opts, "--out", out, "--resume", "auto"])
    _assert_same_run(tmp_path / "ref", out)


def test_kill_9_while_writing_a_checkpoint_never_corrupts_it(synth, reference, tmp_path):
    """The process dies (SIGKILL) half-way through writing its second checkpoint file."""
    prelude = (
        "import os, signal\n"
        "import mocobench.checkpoint as c\n"
        "real, calls = c.atomic_write, []\n"
        "def dying(path, write):\n"
        "    calls.append(path)\n"
        "    if len(calls) < 2:\n"
        "        return real(path, write)\n"
        "    def half(f):\n"
        "        write(f); f.truncate(f.tell() // 2); f.flush(); os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return real(path, half)\n"
        "c.atomic_write = dying\n"
    )
    opts = ["--data", synth / "train", "--epochs", "2", *TINY]
    out = tmp_path / "run"
    proc = _popen_pretrain(opts, out, prelude)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == -signal.SIGKILL, output
    assert list(out.glob(".checkpoint_last.pth.tmp.*")), "the half-written temporary file should be there"
    assert read_checkpoint(out / "checkpoint_last.pth")["global_step"] == 4  # the previous one, complete
    run_cli(["pretrain", *opts, "--out", out, "--resume", "auto"])
    assert not list(out.glob(".*tmp*")), "stale temporaries are removed on resume"
    _assert_same_run(reference, out)


def test_detect_anomaly_is_switched_on_for_the_run(synth, tmp_path):
    out = tmp_path / "anomaly"
    _pretrain(synth, out, "--max-steps", "1", "--detect-anomaly")
    assert read_checkpoint(out / "checkpoint_last.pth")["config"]["detect_anomaly"] is True
    assert not torch.is_anomaly_enabled()  # restored afterwards


def test_a_checkpoint_from_before_a_new_option_still_resumes(synth, reference, tmp_path):
    """Fields added to the config later count as their defaults when resuming an older run."""
    out = tmp_path / "old"
    out.mkdir()
    ckpt = read_checkpoint(reference / "checkpoint_last.pth")
    del ckpt["config"]["bank_momentum"], ckpt["config"]["detect_anomaly"]
    torch.save(ckpt, out / "checkpoint_last.pth")
    run_cli(["pretrain", "--data", synth / "train", "--out", out, "--epochs", "3", *TINY, "--resume", "auto"])
    assert read_checkpoint(out / "checkpoint_last.pth")["epoch"] == 3
    r = run_cli(["pretrain", "--data", synth / "train", "--out", out, "--epochs", "4", *TINY, "--resume", "auto",
                 "--bank-momentum", "0.9"], expect_ok=False)
    assert "bank_momentum: checkpoint 0.5 vs now 0.9" in r.output


def test_bn_splits_compares_by_the_splits_used_and_monitor_settings_may_change(reference):
    """Unset --bn-splits is 8 on one process: an explicit 8 resumes it, 4 does not. The splits used are
    recorded (bn_groups); a checkpoint from before that record, under torchrun, had one group per process."""
    payload = read_checkpoint(reference / "checkpoint_last.pth")
    assert payload["bn_groups"] == {"splits_per_process": 2, "processes": 1}
    assert load_backbone(reference / "checkpoint_last.pth")[1].recipe["bn_splits"] == 2
    del payload["bn_groups"]
    payload["config"]["bn_splits"] = None
    cfg = PretrainConfig(**{k: v for k, v in payload["config"].items() if k in PretrainConfig.__dataclass_fields__})
    check_resumable(payload, dataclasses.replace(cfg, bn_splits=8), Path("x.pth"), world=1)
    # the kNN monitor and the decode cache do not change the training: adding them on resume is fine
    check_resumable(payload, dataclasses.replace(cfg, knn_train="a", knn_val="b", knn_k=20, decode_cache_mib=0),
                    Path("x.pth"), world=1)
    with pytest.raises(ConfigError, match="bn_splits: checkpoint 8 vs now 4"):
        check_resumable(payload, dataclasses.replace(cfg, bn_splits=4), Path("x.pth"), world=1)
    with pytest.raises(ConfigError, match="bn_splits: checkpoint 1 vs now 4"):  # old 2-process run, new default
        check_resumable(payload, dataclasses.replace(cfg, bn_splits=None), Path("x.pth"), world=2)
    check_resumable(payload, dataclasses.replace(cfg, bn_splits=1), Path("x.pth"), world=2)
    payload["bn_groups"] = {"splits_per_process": 4, "processes": 2}
    check_resumable(payload, dataclasses.replace(cfg, bn_splits=4), Path("x.pth"), world=2)
