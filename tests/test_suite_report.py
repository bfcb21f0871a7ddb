"""Supervised pretraining, ``mocobench suite`` (skip and resume) and ``mocobench report``."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import torchvision
from helpers import TINY, run_cli

from mocobench.checkpoint import file_sha256, load_backbone, read_checkpoint
from mocobench.pretrain.engine import train_step
from mocobench.pretrain.supervised import Supervised
from mocobench.report import (
    MISSING,
    collect,
    curve_runs,
    delta,
    draw_curves,
    formatted_pivot,
    read_tidy,
    recipes_table,
    write_report,
)
from mocobench.results import ResultsError
from mocobench.synth import SynthSpec, write_synthetic_classification
from mocobench.synth_det import SynthDetSpec, write_synthetic_detection


def test_supervised_step_matches_a_hand_written_cross_entropy_step():
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=5)
    ref = torchvision.models.resnet18(num_classes=5)
    ref.load_state_dict(net.state_dict())
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 5, (8,))
    method = Supervised(net)
    opt = torch.optim.SGD(method.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    loss, acc = train_step(method, method, method.inputs((x, y)), opt, scaler, torch.Generator())
    logits = ref(x)
    ref_loss = F.cross_entropy(logits, y)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    ref_loss.backward()
    ref_opt.step()
    assert loss == pytest.approx(ref_loss.item(), rel=1e-6)
    assert acc == pytest.approx(100.0 * (logits.argmax(1) == y).float().mean().item())
    for (n, a), b in zip(net.state_dict().items(), ref.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=n)


def test_supervised_pretraining_feeds_the_same_reader(synth, tmp_path):
    out = tmp_path / "sup"
    run_cli(["pretrain", "--data", synth / "train", "--out", out, "--method", "supervised", "--epochs", "1", *TINY])
    ckpt = read_checkpoint(out / "checkpoint_last.pth")
    assert ckpt["method"] == "supervised" and ckpt["backbone_prefix"] == "encoder."
    assert ckpt["config"]["lr"] == 0.1 and ckpt["config"]["lr_milestones"] == [30, 60]  # torchvision recipe
    assert ckpt["state_dict"]["module.encoder.fc.weight"].shape == (4, 512)  # one logit per class folder
    net, info = load_backbone(out / "checkpoint_last.pth")
    assert info.method == "supervised" and info.recipe["method"] == "supervised" and info.recipe["epochs"] == 1
    assert torch.equal(net.conv1.weight, ckpt["state_dict"]["module.encoder.conv1.weight"])
    flat = tmp_path / "flat"  # a plain folder of images: no labels
    flat.mkdir()
    for i, img in enumerate(sorted((synth / "train").rglob("*.png"))[:20]):
        (flat / f"{i}.png").write_bytes(img.read_bytes())
    r = run_cli(["pretrain", "--data", flat, "--out", tmp_path / "x", "--method", "supervised", *TINY], expect_ok=False)
    assert "not an ImageFolder tree" in r.output  # labels are required


# ------------------------------------------------------------------------------------------ report
def _results(root, pretraining, task, metrics, seed=0, config=None, runs=None, version=1, derived=None,
             checkpoint=None):
    d = root / pretraining / task
    d.mkdir(parents=True)
    rec = {"schema_version": version, "task": task, "pretraining": pretraining, "metrics": metrics, "seed": seed,
           "checkpoint": checkpoint or {"source": "random", "format": "random", "arch": "resnet18", "epoch": 0,
                                        "sha256": None},
           "config": {"data": "/x/imagenette", "k": 200, **(config or {}),
                      "derived": {**({"runs": runs} if runs else {}), **(derived or {})}}}
    (d / "results.json").write_text(json.dumps(rec))


def test_negatives_axis_is_the_papers_k_and_unused_fields_leave_the_protocol():
    """Fig. 3's x-axis: K for the queue and the bank, the batch size N for end_to_end ("K - 1 in end-to-end"),
    and simclr at its 2N - 2 negatives; a field a task names as not applying (voc_det's COCO schedule) is not
    part of its protocol or hash."""
    from mocobench.report import _swept_value, protocol

    assert _swept_value({"method": "end_to_end", "batch_size": 32, "queue_size": 65536}, "negatives") == 32
    assert _swept_value({"method": "simclr", "batch_size": 32}, "negatives") == 62
    assert _swept_value({"method": "memory_bank", "batch_size": 32, "queue_size": 256}, "negatives") == 256
    voc = {"data": "/d/VOCdevkit", "schedule": "2x", "train_sets": "07", "derived": {"unused": ["schedule"]}}
    assert protocol(voc) == {"data": "VOCdevkit", "train_sets": "07"}


def test_headlines_are_linear_best_top1_and_the_finegrained_metric_of_its_data_set(tmp_path):
    """linear: main_lincls.py's best_acc1 (top1_best), with top1_final still in the table; finegrained: the metric
    its results file names (top-1 for Cars, mean per class for Flowers, as ssl-transfer)."""
    from mocobench.report import headlines

    _results(tmp_path, "moco_v2", "linear", {"top1_best": 60.0, "top1_final": 58.0})
    _results(tmp_path / "a", "moco_v2", "finegrained", {"top1": 50.0, "mean_per_class": 45.0},
             config={"dataset": "cars"}, derived={"headline": "top1"})
    _results(tmp_path / "b", "moco_v2", "finegrained", {"top1": 50.0, "mean_per_class": 45.0},
             config={"dataset": "flowers102"}, derived={"headline": "mean_per_class"})
    df = collect([tmp_path])
    h = headlines(df)
    assert h["linear"] == "top1_best"
    assert sorted(v for k, v in h.items() if k.startswith("finegrained@")) == ["mean_per_class", "top1"]
    assert ("linear", "top1_final") in formatted_pivot(df).columns


def test_report_means_stds_deltas_and_missing_cells(tmp_path):
    runs = [{"bbox_AP": 50.0, "bbox_AP50": 70.0}, {"bbox_AP": 52.0, "bbox_AP50": 74.0}]
    _results(tmp_path, "supervised", "voc_det", {"bbox_AP": 51.0, "bbox_AP50": 72.0}, runs=runs)
    _results(tmp_path, "supervised", "knn", {"top1": 60.0, "top5": 90.0})
    _results(tmp_path, "moco_v2", "voc_det", {"bbox_AP": 53.5, "bbox_AP50": 73.0, "bbox_AP_std": 9.0})
    df = collect([tmp_path])
    assert len(df) == 2 * 2 + 2 + 2 and set(df["seed"]) == {0, 1}  # one row per seed; *_std dropped
    table = formatted_pivot(df)
    assert table.loc["supervised", ("voc_det", "bbox_AP")] == f"51.0 ± {math.sqrt(2):.1f} (n=2)"
    assert table.loc["moco_v2", ("knn", "top1")] == MISSING  # never 0
    d = delta(df)
    assert d.loc["moco_v2", ("voc_det", "bbox_AP")] == pytest.approx(2.5)
    assert d.loc["moco_v2", ("voc_det", "bbox_AP50")] == pytest.approx(1.0)
    assert pd.isna(d.loc["moco_v2", ("knn", "top1")])
    rep = write_report([tmp_path], tmp_path / "rep")
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "+2.5" in md and "k=200" in md and "data=imagenette" in md
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "color: #1a7f37" in html  # positive deltas in green
    assert (tmp_path / "rep" / "fig_detection.png").stat().st_size > 1000 and len(rep.files) >= 6
    assert pd.read_csv(tmp_path / "rep" / "report.csv").shape[0] == len(df)


def test_report_notes_become_a_section_in_markdown_and_escaped_html(tmp_path):
    _results(tmp_path, "supervised", "knn", {"top1": 60.0, "top5": 90.0})
    notes = tmp_path / "notes.txt"
    notes.write_text("- kNN separates the rows\n  by 20 points.\n\n- Detection <AP> uses `keep_classes`.\n")
    res = run_cli(["report", str(tmp_path), "--out", str(tmp_path / "rep"), "--notes", str(notes)])
    assert res.exit_code == 0, res.output
    md = (tmp_path / "rep" / "report.md").read_text()
    section = md.split("## What this can and cannot show\n\n")[1].split("\n\n")[0]
    assert section == "- kNN separates the rows by 20 points.\n- Detection <AP> uses `keep_classes`."
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "<li>Detection &lt;AP&gt; uses <code>keep_classes</code>.</li>" in html
    assert "What this can and cannot show" not in write_report([tmp_path], tmp_path / "plain").files[0].read_text()


def test_each_pretraining_keeps_one_colour_in_every_curve_panel_and_the_legend_names_all():
    """A row without kNN monitor points (v2 here) must not shift the kNN panel's colours: the committed imagenette-cpu
    figure once drew MoCo v1 orange in the kNN panel and green in the loss panel, and left v2 out of the legend."""
    def recs(loss, knn_every):
        return [{"epoch": e, "loss": loss - e / 10, "acc1": 10.0 + e} | ({"knn_top1": 30.0 + e} if knn_every and
                (e + 1) % knn_every == 0 else {}) for e in range(6)]
    fig = draw_curves({"supervised": recs(2.0, 2), "moco_v2": recs(6.0, 0), "moco_v1": recs(5.0, 3)})
    ax_loss, ax_acc, ax_knn = fig.axes
    colour = {line.get_label(): line.get_color() for line in ax_loss.lines}
    assert len(set(colour.values())) == 3
    assert {line.get_label(): line.get_color() for line in ax_acc.lines} == colour
    assert [line.get_color() for line in ax_knn.lines] == [colour["supervised"], colour["moco_v1"]]
    assert [t.get_text() for t in ax_knn.get_legend().get_texts()] == ["supervised", "moco_v2", "moco_v1"]
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_report_keeps_different_protocols_apart_and_refuses_unknown_versions(tmp_path):
    _results(tmp_path / "a", "moco_v2", "knn", {"top1": 40.0}, config={"k": 20})
    _results(tmp_path / "b", "moco_v2", "knn", {"top1": 45.0}, config={"k": 200})
    tasks = set(collect([tmp_path])["task"])
    assert len(tasks) == 2 and all(t.startswith("knn@") for t in tasks)
    _results(tmp_path / "c", "moco_v1", "knn", {"top1": 1.0}, version=99)
    with pytest.raises(ResultsError, match=r"c/moco_v1/knn/results.json has schema_version 99"):
        collect([tmp_path])
    with pytest.raises(ResultsError, match="no results.json below"):
        (tmp_path / "empty").mkdir()
        collect([tmp_path / "empty"])


# ------------------------------------------------------------------------------------------ suite
@pytest.fixture(scope="module")
def demo_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    write_synthetic_classification(root / "classification", SynthSpec(4, 16, 8, 32, 0, test_per_class=8))
    write_synthetic_detection(root, SynthDetSpec(train=6, val=4, size=96))
    return root


SUITE_FAST = ["--set", "knn.workers=0", "--set", "linear.workers=0", "--set", "voc_det.SOLVER.MAX_ITER=2",
              "--set", "voc_det.TEST.PRECISE_BN.NUM_ITER=1", "--set", "voc_det.DATALOADER.NUM_WORKERS=0",
              "--set", "linear.epochs=2", "--set", "knn.k=5"]


@pytest.mark.slow
def test_suite_runs_skips_done_pairs_and_reports(demo_data, synth, tmp_path):
    run_cli(["pretrain", "--data", synth / "train", "--out", tmp_path / "sup", "--method", "supervised",
             "--epochs", "1", *TINY])
    out = tmp_path / "suite"
    args = ["suite", f"sup={tmp_path / 'sup' / 'checkpoint_last.pth'}", "random", "--arch", "resnet18",
            "--preset", "demo", "--tasks", "knn,linear,voc_det", "--data-root", demo_data, "--out", out,
            "--baseline", "sup", *SUITE_FAST]
    run_cli(args)
    for label in ("sup", "random"):
        for task in ("knn", "linear", "voc_det"):
            assert (out / label / task / "results.json").exists(), (label, task)
    stamp = (out / "random" / "knn" / "results.json").stat().st_mtime_ns
    run_cli(args)  # everything done: skipped, report rebuilt
    assert (out / "random" / "knn" / "results.json").stat().st_mtime_ns == stamp
    md = (out / "report" / "report.md").read_text()
    assert "Difference from sup" in md and "**voc_det**" in md and "bbox_AP50" in md
    r = run_cli(["suite", "random", "--arch", "resnet18", "--preset", "demo", "--out", out, "--tasks", "knn,nope"],
                expect_ok=False)
    assert "tasks ['nope'] are not in preset 'demo'" in r.output
    r = run_cli(["suite", "random", "--preset", "demo", "--out", out, "--set", "k=5"], expect_ok=False)
    assert "expected TASK.KEY=VALUE" in r.output


def test_suites_of_two_seeds_make_one_report_cell_of_mean_and_std(demo_data, tmp_path):
    from mocobench.suite import run_suite

    sets = ("linear.workers=0", "linear.epochs=2")
    for seed in (0, 1):
        run_suite(["random"], tmp_path / f"s{seed}", "demo", ("linear",), demo_data, "resnet18", sets, seed=seed)
    recs = [json.loads((tmp_path / f"s{seed}/random/linear/results.json").read_text()) for seed in (0, 1)]
    assert [r["seed"] for r in recs] == [0, 1]
    cell = write_report([tmp_path / "s0", tmp_path / "s1"], tmp_path / "rep").pivot.loc["random", ("linear", "top1_final")]
    assert cell.endswith("(n=2)"), cell


@pytest.mark.slow
def test_killed_suite_resumes_without_redoing_finished_tasks(demo_data, tmp_path):
    """kill -9 the suite (a real subprocess) during its second task; the re-run skips the first."""
    out = tmp_path / "suite"
    cmd = [sys.executable, "-m", "mocobench.cli", "suite", "random", "--arch", "resnet18", "--preset", "demo",
           "--tasks", "knn,voc_det", "--data-root", str(demo_data), "--out", str(out), *SUITE_FAST,
           "--set", "voc_det.SOLVER.MAX_ITER=400"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    knn = out / "random" / "knn" / "results.json"
    for line in proc.stdout:  # wait until detectron2 trains (the knn task has finished by then)
        if "Starting training" in line:
            break
    proc.kill()
    proc.wait()
    assert knn.exists() and not (out / "random" / "voc_det" / "results.json").exists()
    stamp = knn.stat().st_mtime_ns
    done = subprocess.run([*cmd[:-2], "--set", "voc_det.SOLVER.MAX_ITER=2"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "knn on random: done already" in done.stdout + done.stderr
    assert knn.stat().st_mtime_ns == stamp and (out / "random" / "voc_det" / "results.json").exists()


def test_a_report_csv_is_an_input_so_a_committed_report_grows_a_second_pretraining_seed(tmp_path):
    """The first runs' folders are gone, their report.csv remains: a second pretraining seed under the same label
    joins its row (mean ± std over both checkpoints), each checkpoint gets a pretrainings row, and a report re-made
    from its own csv plus the same runs is byte-identical (no row counted twice)."""
    import shutil

    def ckpt(name, seed, sha):
        return {"source": f"runs/{name}/checkpoint_last.pth", "format": "mocobench", "arch": "resnet18", "epoch": 45,
                "sha256": sha, "recipe": {"method": "moco_v1", "epochs": 45, "queue_size": 4096, "seed": seed}}

    first, second = tmp_path / "first", tmp_path / "second"
    _results(first, "moco_v1", "knn", {"top1": 47.0}, checkpoint=ckpt("v1", 0, "aa"))
    _results(first, "random", "knn", {"top1": 33.4})
    for seed, top1 in enumerate((46.0, 48.0)):
        _results(first / f"s{seed}", "moco_v1", "linear", {"top1_best": top1}, seed=seed, checkpoint=ckpt("v1", 0, "aa"))
    write_report([first], tmp_path / "rep1", baseline="random")
    shutil.rmtree(first)
    _results(second, "moco_v1", "knn", {"top1": 45.0}, checkpoint=ckpt("v1_seed1", 1, "bb"))
    _results(second / "s0", "moco_v1", "linear", {"top1_best": 50.0}, checkpoint=ckpt("v1_seed1", 1, "bb"))

    rep = write_report([tmp_path / "rep1" / "report.csv", second], tmp_path / "rep2", baseline="random")
    assert rep.pivot.loc["moco_v1", ("knn", "top1")] == f"46.0 ± {math.sqrt(2):.1f} (n=2)"
    assert rep.pivot.loc["moco_v1", ("linear", "top1_best")] == "48.0 ± 2.0 (n=3)"
    assert rep.pivot.loc["random", ("knn", "top1")] == "33.4"
    assert rep.delta.loc["moco_v1", ("knn", "top1")] == pytest.approx(12.6)
    md = (tmp_path / "rep2" / "report.md").read_text()
    assert "pretraining seeds where it has several checkpoints" in md
    assert "runs/v1/checkpoint_last.pth" in md and "runs/v1_seed1/checkpoint_last.pth" in md
    assert set(rep.tidy["task"]) == {"knn", "linear"}  # no task@hash: the csv's and the new rows share protocols

    again = write_report([tmp_path / "rep2" / "report.csv", second], tmp_path / "rep3", baseline="random")
    assert len(again.tidy) == len(rep.tidy)
    assert (tmp_path / "rep3" / "report.csv").read_bytes() == (tmp_path / "rep2" / "report.csv").read_bytes()
    # the same runs under another spelling of their folder are the same measurements, not new seeds
    spelled = write_report([tmp_path / "rep2" / "report.csv", second.resolve() / ".." / "second"], tmp_path / "rep4",
                           baseline="random")
    assert spelled.pivot.loc["moco_v1", ("knn", "top1")] == rep.pivot.loc["moco_v1", ("knn", "top1")]
    assert len(spelled.tidy) == len(rep.tidy)


def test_a_checkpoint_pretrained_again_in_place_lends_its_curve_to_the_new_file_only(tmp_path):
    """Results of a file since overwritten by a re-run (another sha256, same path) get no curve: the metrics.jsonl
    beside it is the new run's. The new file's results get it, under one label."""
    run = tmp_path / "runs" / "sup"
    run.mkdir(parents=True)
    (run / "checkpoint_last.pth").write_bytes(b"the second pretraining")
    (run / "metrics.jsonl").write_text(json.dumps({"kind": "epoch", "epoch": 0, "loss": 2.0}) + "\n")

    def ckpt(sha):
        return {"source": str(run / "checkpoint_last.pth"), "format": "mocobench", "arch": "resnet18", "epoch": 1,
                "sha256": sha, "recipe": {"method": "supervised", "epochs": 1, "seed": 0}}

    _results(tmp_path / "r" / "a", "supervised", "knn", {"top1": 70.0}, checkpoint=ckpt("0123456789ab"))
    now = file_sha256(run / "checkpoint_last.pth")
    _results(tmp_path / "r" / "b", "supervised", "linear", {"top1_best": 60.0}, checkpoint=ckpt(now))
    df = collect([tmp_path / "r"])
    assert df.drop_duplicates(["checkpoint", "checkpoint_sha256"]).shape[0] == 2  # two files under one path
    curves = curve_runs(df)
    assert list(curves) == ["supervised (pretraining seed 0)"] and curves["supervised (pretraining seed 0)"][0][
        "loss"] == 2.0
    assert sorted(recipes_table(df)["sha256"]) == sorted(["0123456789ab", now])  # the two files' rows differ


def test_a_report_csv_keeps_hashes_as_text_and_a_foreign_csv_is_named(tmp_path):
    _results(tmp_path / "r", "random", "knn", {"top1": 33.4})
    write_report([tmp_path / "r"], tmp_path / "rep", baseline="")
    csv = tmp_path / "rep" / "report.csv"
    df = pd.read_csv(csv, dtype=str, keep_default_na=False)
    df["config_hash"] = "00012345"  # all digits: read as a number it would lose its zeros
    df["pretraining"] = "NA"  # a label pandas would read as missing by default
    df.to_csv(csv, index=False)
    assert read_tidy(csv)[["config_hash", "pretraining"]].values.tolist() == [["00012345", "NA"]]
    df["checkpoint"] = ""
    df.to_csv(tmp_path / "blank.csv", index=False)
    with pytest.raises(ResultsError, match=r"blank\.csv: line 2 has no checkpoint"):
        read_tidy(tmp_path / "blank.csv")
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ResultsError, match=r"other\.csv is not a report\.csv.*pretraining, task, metric"):
        collect([tmp_path / "other.csv"])


def test_recipes_table_shows_the_speed_settings_only_off_their_defaults():
    def row(name, **kw):
        recipe = {"method": "moco_v2", "arch": "resnet18", "epochs": 1, "amp": "none", "aug_backend": "pil", **kw}
        return {"pretraining": name, "arch": "resnet18", "checkpoint": f"{name}.pth", "checkpoint_sha256": "", "checkpoint_epoch": 1,
                "recipe": json.dumps(recipe)}

    table = recipes_table(pd.DataFrame([row("a"), row("b", amp="bf16", aug_backend="tensor")]))
    recipes = table.set_index("pretraining")["recipe"]
    assert recipes["a"] == "method=moco_v2, epochs=1"
    assert recipes["b"] == "method=moco_v2, epochs=1, amp=bf16, aug_backend=tensor"


def test_segmentation_results_get_their_table_and_figure(tmp_path):
    for label, miou in (("supervised", 40.0), ("random", 10.0)):
        _results(tmp_path / "runs", label, "voc_seg", {"mIoU": miou, "pixel_acc": 80.0, "mean_acc": 20.0})
    rep = write_report([tmp_path / "runs"], tmp_path / "report")
    md = (tmp_path / "report" / "report.md").read_text()
    assert "**voc_seg**" in md and (tmp_path / "report" / "fig_segmentation.png").exists()
    assert rep.delta.loc["random", ("voc_seg", "mIoU")] == -30.0


def test_an_optional_suite_task_without_its_data_is_skipped_not_failed(synth, tmp_path, monkeypatch):
    from mocobench import suite

    monkeypatch.setitem(suite.PRESETS, "t", (suite.TaskSpec("knn", str(synth), ("image_size=32", "workers=0", "k=5")),
                                             suite.TaskSpec("cityscapes_seg", "no-such-folder", optional=True)))
    done = suite.run_suite(["random"], tmp_path / "s", preset="t", data_root=tmp_path, arch="resnet18")
    assert [p.parent.name for p in done] == ["knn"]
    assert "cityscapes_seg on random: skipped" in (tmp_path / "s" / "suite.log").read_text()


CHECKS = """<script>window.addEventListener('load', () => {
  const right = e => e.getBoundingClientRect().right;
  const colours = [...document.querySelectorAll('td')].map(td => getComputedStyle(td).color);
  const out = {scroll: document.documentElement.scrollWidth, inner: innerWidth, h3: document.querySelectorAll('h3').length,
    imgs: [...document.images].map(i => [i.naturalWidth, i.getBoundingClientRect().width, right(i)]),
    tables: [...document.querySelectorAll('table')].map(right), external: [...document.querySelectorAll('[src]')]
      .map(e => e.getAttribute('src')).filter(s => !s.startsWith('data:')),
    green: colours.filter(c => c === 'rgb(26, 127, 55)').length, red: colours.filter(c => c === 'rgb(207, 34, 46)').length};
  const pre = document.createElement('pre'); pre.id = 'checks'; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});</script>"""


def _chromium() -> str | None:
    import shutil

    return next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)


@pytest.mark.skipif(_chromium() is None, reason="no Chromium on this machine (Debian: apt-get install chromium)")
def test_the_html_report_reads_well_in_headless_chromium_at_laptop_width(tmp_path):
    """Rendered by a real browser at 1300 px: nothing wider than the window, one table per task, the deltas
    coloured, every figure inlined, decoded and on the page, nothing fetched from elsewhere."""
    runs = tmp_path / "runs"
    tasks = {"knn": {"top1": 50.0, "top5": 80.0}, "linear": {"top1_best": 60.0, "top1_final": 59.0},
             "coco_det": {"bbox_AP": 10.0, "bbox_AP50": 20.0, "bbox_AP75": 8.0},
             "voc_det": {"bbox_AP": 11.0, "bbox_AP50": 21.0, "bbox_AP75": 9.0}, "voc_seg": {"mIoU": 30.0}}
    for label, bonus in (("supervised", 0.0), ("moco_v2", 2.0), ("random", -5.0)):
        for task, metrics in tasks.items():
            _results(runs, label, task, {k: v + bonus for k, v in metrics.items()})
    write_report([runs], tmp_path / "report")
    page = (tmp_path / "report" / "report.html").read_text()
    probe = tmp_path / "report" / "probe.html"
    probe.write_text(page.replace("</body>", CHECKS + "</body>"))
    dom = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1300,900",
                          "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    checks = json.loads(dom.split("<pre id=\"checks\">")[1].split("</pre>")[0].replace("&quot;", '"'))
    assert checks["scroll"] <= checks["inner"], "the page is wider than a 1300 px window"
    assert all(r <= checks["inner"] for r in checks["tables"]), "a table runs past the window"
    assert checks["h3"] == 2 * len(tasks)  # results and differences, one table per task
    assert checks["green"] == 11 and checks["red"] == 11  # moco_v2 +2 and random -5 in every metric
    assert len(checks["imgs"]) == 3 and all(n > 0 and w > 200 and r <= checks["inner"] for n, w, r in checks["imgs"])
    assert checks["external"] == [], "the page fetches files"


@pytest.mark.parametrize("bad", [float("nan"), "high", True, None])
def test_a_results_file_with_a_metric_that_is_not_a_finite_number_is_named(tmp_path, bad):
    _results(tmp_path / "runs", "sup", "knn", {"top1": 50.0, "top5": bad})
    with pytest.raises(ResultsError, match=r"results file .*knn/results.json: metric 'top5' is .*expected a finite"):
        write_report([tmp_path / "runs"], tmp_path / "report")


def test_a_nan_score_is_never_written_as_a_result(tmp_path):
    from mocobench.checkpoint import BackboneInfo
    from mocobench.results import write_results

    info = BackboneInfo("random", "random", "resnet18", "random", None, None)
    with pytest.raises(ResultsError, match="metric 'mIoU' is nan; expected a finite number"):
        write_results(tmp_path, "voc_seg", info, {"mIoU": float("nan")}, {}, 0, 1.0)
    assert not (tmp_path / "results.json").exists()
