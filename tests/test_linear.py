"""The linear protocol: one SGD step against a hand computation, the frozen-backbone check, both
modes end to end, and exact resume of the faithful mode."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
import torch
import torch.nn.functional as F
from helpers import run_cli, tb_scalars

from mocobench.evaluators.linear import LinearConfig, _assert_frozen, milestones, new_classifier, sgd_epoch
from mocobench.metrics import read_metrics
from mocobench.results import read_results


def test_one_sgd_step_matches_a_hand_computed_gradient():
    torch.manual_seed(0)
    x, y = torch.randn(5, 4, dtype=torch.float64), torch.tensor([0, 2, 1, 2, 0])
    fc = new_classifier(4, 3).double()
    w0, b0 = fc.weight.detach().clone(), fc.bias.detach().clone()
    opt = torch.optim.SGD(fc.parameters(), lr=0.5, momentum=0.9, weight_decay=0.0)
    loss = sgd_epoch(fc, iter([(x, y)]), opt)
    p = torch.softmax(x @ w0.T + b0, dim=1)
    onehot = F.one_hot(y, 3).double()
    grad_w, grad_b = (p - onehot).T @ x / 5, (p - onehot).mean(0)  # d CE / d (W, b)
    torch.testing.assert_close(fc.weight.detach(), w0 - 0.5 * grad_w, atol=1e-12, rtol=0)
    torch.testing.assert_close(fc.bias.detach(), b0 - 0.5 * grad_b, atol=1e-12, rtol=0)
    assert loss == pytest.approx(-torch.log(p[torch.arange(5), y]).mean().item())


def test_classifier_init_and_default_schedule_follow_main_lincls():
    torch.manual_seed(0)
    fc = new_classifier(2048, 1000)
    assert torch.all(fc.bias == 0) and abs(fc.weight.std().item() - 0.01) < 1e-3
    cfg = LinearConfig()
    assert (cfg.lr, cfg.momentum, cfg.weight_decay, cfg.batch_size, cfg.epochs) == (30.0, 0.9, 0.0, 256, 100)
    assert milestones(cfg) == (60, 80) and milestones(LinearConfig(epochs=10)) == (6, 8)


def test_a_changed_backbone_is_caught():
    net = torch.nn.Linear(2, 2)
    ref = {k: v.clone() for k, v in net.state_dict().items()}
    _assert_frozen(net, ref)
    with torch.no_grad():
        net.weight[0, 0] += 1
    with pytest.raises(RuntimeError, match="frozen backbone tensor weight changed"):
        _assert_frozen(net, ref)


LIN = ["--task", "linear", "--set", "image_size=32", "--set", "workers=0", "--set", "batch_size=32", "--set", "lr=1.0"]


@pytest.mark.parametrize("mode", ["faithful", "cached"])
def test_both_modes_end_to_end(synth, tmp_path, mode):
    out = tmp_path / mode
    run_cli(["transfer", "random", "--arch", "resnet18", "--data", synth, "--out", out, *LIN, "--set", "epochs=3",
             "--set", f"mode={mode}", "--set", "cached_views=2"])
    res = read_results(out / "results.json")
    m = res["metrics"]
    assert 0 <= m["top1_final"] <= m["top1_best"] <= 100 and 1 <= m["best_epoch"] <= 3
    assert res["config"]["derived"]["lr_scaled"] == pytest.approx(32 / 256)
    assert len(res["config"]["derived"]["history"]) == 3


def test_faithful_mode_resumes_exactly(synth, tmp_path):
    base = ["transfer", "random", "--arch", "resnet18", "--data", synth, *LIN, "--set", "epochs=3"]
    run_cli([*base, "--out", tmp_path / "full"])
    run_cli([*base, "--out", tmp_path / "cut", "--set", "stop_at=1"])
    assert not (tmp_path / "cut" / "results.json").exists()
    run_cli([*base, "--out", tmp_path / "cut"])
    full, cut = (read_results(tmp_path / d / "results.json") for d in ("full", "cut"))
    assert full["metrics"] == cut["metrics"]
    assert full["config"]["derived"]["history"] == cut["config"]["derived"]["history"]
    # the per-epoch curve in metrics.jsonl and TensorBoard: once per epoch, the same after the resume
    assert read_metrics(tmp_path / "cut" / "metrics.jsonl") == read_metrics(tmp_path / "full" / "metrics.jsonl")
    assert [s for s, _ in tb_scalars(tmp_path / "full" / "tensorboard")["linear/top1"]] == [1, 2, 3]
    run_cli([*base, "--out", tmp_path / "quiet", "--set", "epochs=1", "--no-tensorboard"])
    assert not (tmp_path / "quiet" / "tensorboard").exists()
    r = run_cli([*base, "--out", tmp_path / "cut", "--overwrite", "--set", "lr=2.0"], expect_ok=False)
    assert "written with other settings (lr)" in r.output


def test_kill_9_during_the_linear_protocol_resumes_exactly(synth, tmp_path):
    base = ["transfer", "random", "--arch", "resnet18", "--data", synth, *LIN, "--set", "epochs=6",
            "--set", "image_size=64"]
    run_cli([*base, "--out", tmp_path / "full"])
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "mocobench.cli", *map(str, base), "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and not (out / "linear_last.pth").exists():
        time.sleep(0.005)
    proc.kill()
    proc.wait()
    assert proc.returncode == -signal.SIGKILL and not (out / "results.json").exists()
    run_cli([*base, "--out", out])
    full, resumed = (read_results(tmp_path / d / "results.json") for d in ("full", "killed"))
    assert full["metrics"] == resumed["metrics"]
    assert full["config"]["derived"]["history"] == resumed["config"]["derived"]["history"]
