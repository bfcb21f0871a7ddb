"""Real two-process runs over gloo (no mocks): shuffling BN across processes.

A W-process run sees the global batches a one-process run with ``--bn-splits W`` sees, and its
contiguous split BN reproduces the per-process BN, so the two must agree up to rounding. In float64
the module-level run agrees to 1e-9 (measured: 2e-13); the float32 CLI run to 1e-4 relative
(BN over 2 x 2 maps of 8 images amplifies float32 rounding; a wrong shuffle is off by > 1e-2).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as tdist
import torch.multiprocessing as mp
import torchvision
from helpers import TINY, free_port
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from mocobench.checkpoint import read_checkpoint, strip_wrappers
from mocobench.pretrain.engine import train_step
from mocobench.pretrain.moco import MoCo
from mocobench.pretrain.split_bn import split_bn_resnet

pytestmark = pytest.mark.slow
STEPS, LOCAL_B, WORLD = 3, 4, 2



def _batches():
    g = torch.Generator().manual_seed(7)
    return torch.randn(STEPS, 2, WORLD * LOCAL_B, 3, 32, 32, generator=g, dtype=torch.float64)


def _run(moco: MoCo, model: nn.Module, rank: int, local_b: int):
    opt = torch.optim.SGD([p for p in moco.parameters() if p.requires_grad], lr=0.05, momentum=0.9)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    gen = torch.Generator().manual_seed(11)
    for xq, xk in _batches():
        sl = slice(rank * local_b, (rank + 1) * local_b)
        train_step(model, moco, (xq[sl], xk[sl]), opt, scaler, gen)
    return {k: v.clone() for k, v in moco.state_dict().items()}


def _moco(splits: int = 1) -> MoCo:
    torch.manual_seed(0)
    resnet = torchvision.models.resnet18
    moco = MoCo(lambda: split_bn_resnet(resnet, splits, num_classes=8) if splits > 1 else resnet(num_classes=8),
                dim=8, queue_size=48, m=0.9)
    return moco.double()


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    tdist.init_process_group("gloo", rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    moco = _moco()
    state = _run(moco, DistributedDataParallel(moco, forward_sync_buffers=False), rank, LOCAL_B)
    torch.save(state, Path(out) / f"rank{rank}.pt")
    tdist.destroy_process_group()


def test_two_gloo_processes_keep_equal_queues_and_match_split_bn(tmp_path):
    mp.start_processes(_worker, args=(free_port(), str(tmp_path)), nprocs=WORLD, start_method="spawn")
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD))
    assert int(r0["queue_ptr"]) == STEPS * WORLD * LOCAL_B % 48
    assert torch.equal(r0["queue"], r1["queue"]), "queues differ across ranks"
    torch.testing.assert_close(r0["encoder_q.fc.weight"], r1["encoder_q.fc.weight"], atol=0, rtol=0)

    moco = _moco(WORLD)
    single = _run(moco, moco, 0, WORLD * LOCAL_B)
    for k, v in r0.items():
        if "running_" in k or "num_batches" in k:
            continue  # rank 0 keeps its own BN statistics; split BN averages the chunks'
        torch.testing.assert_close(v, single[k], atol=1e-9, rtol=0, msg=f"{k} differs")
    assert not torch.equal(single["queue"][:, : STEPS * WORLD * LOCAL_B], _moco().queue[:, :24])


def test_torchrun_cli_equals_one_process_with_split_bn(synth, tmp_path):
    """The real CLI under torchrun (2 gloo processes) vs one process with --bn-splits 2."""
    common = ["pretrain", "--data", synth / "train", "--epochs", "1", "--max-steps", "3", *TINY]
    common = [str(a) for a in common]
    i = common.index("--bn-splits")
    common = common[:i] + common[i + 2 :]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ddp = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
         "-m", "mocobench.cli", *common, "--out", str(tmp_path / "ddp"), "--bn-splits", "1"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    one = subprocess.run(
        [sys.executable, "-m", "mocobench.cli", *common, "--out", str(tmp_path / "one"), "--bn-splits", "2"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert one.returncode == 0, one.stderr[-3000:]
    a = read_checkpoint(tmp_path / "ddp" / "checkpoint_last.pth")
    b = read_checkpoint(tmp_path / "one" / "checkpoint_last.pth")
    assert a["global_step"] == b["global_step"] == 3
    sa, sb = strip_wrappers(a["state_dict"]), strip_wrappers(b["state_dict"])
    for k in sa:
        if "running_" in k or "num_batches" in k:
            continue
        torch.testing.assert_close(sa[k], sb[k], atol=1e-5, rtol=1e-4, msg=f"{k} differs")


def _e2e_run(model: nn.Module, module: nn.Module, rank: int, local_b: int):
    opt = torch.optim.SGD(module.parameters(), lr=0.05, momentum=0.9)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    for xq, xk in _batches():
        sl = slice(rank * local_b, (rank + 1) * local_b)
        train_step(model, module, (xq[sl], xk[sl]), opt, scaler, torch.Generator())
    return {k: v.clone() for k, v in module.state_dict().items()}


E2E_METHODS = ("end_to_end", "simclr")


def _e2e(method: str) -> nn.Module:
    from mocobench.pretrain.mechanisms import EndToEnd, SimCLR

    torch.manual_seed(0)  # GroupNorm: no batch statistics, so W processes must equal one process exactly
    cls = EndToEnd if method == "end_to_end" else SimCLR
    return cls(lambda: torchvision.models.resnet18(num_classes=8, norm_layer=lambda c: nn.GroupNorm(4, c)),
               temperature=0.5).double()


def _e2e_worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    tdist.init_process_group("gloo", rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    for method in E2E_METHODS:
        module = _e2e(method)
        torch.save(_e2e_run(DistributedDataParallel(module), module, rank, LOCAL_B), Path(out) / f"{method}{rank}.pt")
    tdist.destroy_process_group()


def test_end_to_end_negatives_across_two_processes_give_the_one_process_gradient(tmp_path):
    mp.start_processes(_e2e_worker, args=(free_port(), str(tmp_path)), nprocs=WORLD, start_method="spawn")
    for method in E2E_METHODS:  # the paper's end-to-end and SimCLR's NT-Xent
        r0 = torch.load(tmp_path / f"{method}0.pt")
        module = _e2e(method)
        ref = _e2e_run(module, module, 0, WORLD * LOCAL_B)
        for k, v in ref.items():
            torch.testing.assert_close(r0[k], v, rtol=1e-9, atol=1e-9, msg=f"{method} {k}")
