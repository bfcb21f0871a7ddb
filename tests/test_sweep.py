"""``mocobench sweep``: each point is a normal run; finished points are skipped; the report plots the sweep."""

from __future__ import annotations

import pytest
from helpers import TINY, run_cli

from mocobench.checkpoint import read_checkpoint
from mocobench.pretrain.config import PretrainConfig
from mocobench.results import read_results
from mocobench.sweep import SweepError, point_config, point_label, sweep_points


def test_mechanism_points_share_the_base_recipe():
    """Fig. 3 varies only the mechanism: an end_to_end point of a moco_v2 sweep keeps moco_v2's T, head,
    augmentation and schedule (its own default is the v1 recipe); explicit base fields win everywhere."""
    base = PretrainConfig(data="d", out="o", method="moco_v2", batch_size=64, queue_size=256)
    e2e = point_config(base, "x", {"method": "end_to_end", "batch_size": 32}).resolved()
    assert (e2e.method, e2e.moco_t, e2e.mlp, e2e.aug, e2e.lr_schedule) == ("end_to_end", 0.2, True, "v2", "cosine")
    assert PretrainConfig(data="d", out="o", method="end_to_end").resolved().moco_t == 0.07
    v1 = PretrainConfig(data="d", out="o", moco_t=0.07, mlp=False, aug="v1", lr_schedule="step")
    bank = point_config(v1, "x", {"method": "memory_bank", "queue_size": 256}).resolved()
    assert (bank.moco_t, bank.mlp, bank.aug, bank.lr_schedule) == (0.07, False, "v1", "step")


def test_sweep_points_are_the_papers_values():
    assert [p["moco_m"] for p in sweep_points("momentum")] == [0.0, 0.9, 0.99, 0.999, 0.9999]
    assert {p["method"] for p in sweep_points("negatives")} == {"moco_v2", "memory_bank", "end_to_end"}
    assert point_label({"method": "moco_v2", "queue_size": 256}) == "method=moco_v2,queue_size=256"
    with pytest.raises(SweepError, match="unknown sweep 'lr'; choose one of momentum, negatives, shuffle_bn"):
        sweep_points("lr")
    with pytest.raises(SweepError, match=r"points \['moco_m=0.5'\] are not in sweep 'momentum'"):
        sweep_points("momentum", ("moco_m=0.5",))


def test_shuffle_bn_sweep_runs_points_skips_them_again_and_plots(synth, tmp_path):
    out = tmp_path / "sweep"
    args = ["sweep", "shuffle_bn", "--data", synth / "train", "--out", out, "--knn-data", synth,
            "--knn-set", "image_size=32", "--knn-set", "workers=0", "--knn-set", "k=5", "--epochs", "2",
            *[a for a in TINY if a not in ("--bn-splits", "2")], "--knn-train", synth / "train",
            "--knn-val", synth / "val", "--knn-k", "5"]
    run_cli(args)
    for splits in (8, 1):
        ckpt = read_checkpoint(out / f"bn_splits={splits}" / "checkpoint_last.pth")
        assert ckpt["config"]["bn_splits"] == splits and ckpt["epoch"] == 2
        assert read_results(out / f"bn_splits={splits}" / "knn" / "results.json")["pretraining"] == f"bn_splits={splits}"
    stamp = (out / "bn_splits=1" / "knn" / "results.json").stat().st_mtime_ns
    run_cli(args)  # finished points are skipped
    assert (out / "bn_splits=1" / "knn" / "results.json").stat().st_mtime_ns == stamp
    report = out / "report"
    assert (report / "fig_sweep_bn_splits_knn.png").stat().st_size > 1000
    assert (report / "fig_pretraining_curves.png").exists()
    assert "bn_splits=8" in (report / "report.md").read_text()


def test_a_point_or_knn_setting_that_cannot_work_is_refused_before_the_first_point(synth, tmp_path):
    """A bad --knn-set or a point whose settings break a rule must not surface after hours of pretraining."""
    base = ["--data", synth / "train", "--out", tmp_path / "sw", "--knn-data", synth, "--epochs", "1", *TINY]
    r = run_cli(["sweep", "momentum", *base, "--knn-set", "k=0"], expect_ok=False)
    assert r.exit_code == 1 and "--knn-set: k='0': expected an integer >= 1" in r.output, r.output
    r = run_cli(["sweep", "negatives", *base, "--batch-size", "96"], expect_ok=False)
    assert "point method=moco_v2,queue_size=256: --queue-size=256, --batch-size=96: expected a queue size" in r.output
    r = run_cli(["sweep", "momentum", *base, "--knn-set", "k=500"], expect_ok=False)  # 64 bank images
    assert "--knn-set: --set k=500 is larger than the kNN bank" in r.output, r.output
    assert not (tmp_path / "sw").exists()
    r = run_cli(["sweep", "nope", *base], expect_ok=False)
    assert r.exit_code == 2 and "'nope' is not one of 'momentum', 'negatives', 'shuffle_bn'" in r.output, r.output
