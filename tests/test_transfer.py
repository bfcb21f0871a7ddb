"""The task registry, ``mocobench transfer`` and the results format."""

from __future__ import annotations

import json

import pytest
from helpers import TINY, run_cli

from mocobench.evaluators.registry import TaskError, get_task, tasks
from mocobench.results import SCHEMA_VERSION, ResultsError, read_results


def test_registry_lists_tasks_and_names_the_valid_ones():
    assert "knn" in tasks()
    with pytest.raises(TaskError, match="unknown task 'nope'; valid tasks: .*knn"):
        get_task("nope")
    assert "knn:" in run_cli(["tasks"]).output


def test_knn_transfer_of_a_pretrained_checkpoint_on_real_images(shared_data, synth, tmp_path):
    run_cli(["pretrain", "--data", synth / "train", "--out", tmp_path / "pre", "--epochs", "1", "--max-steps", "1", *TINY])
    out = tmp_path / "knn"
    args = ["transfer", tmp_path / "pre" / "checkpoint_last.pth", "--task", "knn", "--data", shared_data / "cifar10-sub",
            "--out", out, "--set", "image_size=32", "--set", "workers=0", "--set", "k=20"]
    run_cli(args)
    res = read_results(out / "results.json")
    assert res["task"] == "knn" and res["pretraining"] == "moco_v2" and res["schema_version"] == SCHEMA_VERSION
    assert res["checkpoint"]["format"] == "mocobench" and len(res["checkpoint"]["sha256"]) == 12
    assert res["config"]["k"] == 20 and res["config"]["t"] == 0.07 and res["config"]["val_split"] == ""
    assert 0 <= res["metrics"]["top1"] <= res["metrics"]["top5"] <= 100
    assert {"torch", "torchvision", "mocobench"} <= res["versions"].keys() and res["time_s"] > 0
    r = run_cli(args, expect_ok=False)
    assert "exists; pass --overwrite" in r.output
    run_cli([*args, "--overwrite", "--pretraining", "my-moco"])
    assert read_results(out / "results.json")["pretraining"] == "my-moco"


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--set", "k=abc"], "k='abc'"),
        (["--set", "kk=3"], "unknown key 'kk'; valid keys: data, train_split"),
        (["--set", "k"], "'k' is not KEY=VALUE"),
    ],
)
def test_bad_overrides_are_named(synth, tmp_path, extra, message):
    r = run_cli(["transfer", "random", "--arch", "resnet18", "--task", "knn", "--data", synth, "--out", tmp_path / "o",
                 *extra], expect_ok=False)
    assert message in r.output


def test_task_and_checkpoint_errors(synth, tmp_path):
    r = run_cli(["transfer", "random", "--task", "knn", "--data", synth, "--out", tmp_path / "a"], expect_ok=False)
    assert "needs an architecture" in r.output
    r = run_cli(["transfer", "random", "--arch", "resnet18", "--task", "lin", "--data", synth, "--out", tmp_path / "b"],
                expect_ok=False)
    assert ("valid tasks: cityscapes_seg, coco_det, coco_instseg, fewshot, finegrained, knn, linear, voc07_svm, "
            "voc_det, voc_seg") in r.output
    r = run_cli(["transfer", "random", "--arch", "resnet18", "--task", "knn", "--out", tmp_path / "c"], expect_ok=False)
    assert "needs data" in r.output
    r = run_cli(["transfer", "random", "--arch", "resnet18", "--task", "knn", "--data", synth / "train",
                 "--out", tmp_path / "d"], expect_ok=False)
    assert "has none of the splits train" in r.output


def test_results_of_another_schema_version_are_refused(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"schema_version": 99}))
    with pytest.raises(ResultsError, match="schema_version 99"):
        read_results(path)


def test_a_corrupt_jpeg_and_a_wrong_architecture_are_named(synth, tmp_path):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(synth, root)
    bad = next((root / "val").iterdir()) / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    r = run_cli(["transfer", "random", "--arch", "resnet18", "--task", "knn", "--data", root, "--out", tmp_path / "a",
                 "--set", "workers=0", "--set", "image_size=32", "--set", "k=5"], expect_ok=False)
    assert f"cannot decode image {bad}" in r.output
    run_cli(["pretrain", "--data", synth / "train", "--out", tmp_path / "pre", "--epochs", "1", "--max-steps", "1", *TINY])
    r = run_cli(["transfer", tmp_path / "pre" / "checkpoint_last.pth", "--arch", "resnet50", "--task", "knn",
                 "--data", synth, "--out", tmp_path / "b"], expect_ok=False)
    assert "holds a resnet18, but resnet50 was asked for" in r.output
