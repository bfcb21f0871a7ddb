"""``mocobench zoo``: the catalogue's entries are complete and readable by the one reader; ``zoo fetch``
against a real HTTP server on 127.0.0.1 (resume, checksum mismatch, a pinned checksum where none is
published); ``zoo:NAME`` in transfer and suite, with the published number next to the measured one."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
import torchvision
from conftest import RangeHandler
from helpers import run_cli

from mocobench import zoo
from mocobench.layouts import BY_NAME
from mocobench.report import collect, reproduction


def test_every_entry_names_its_layout_licence_and_sources():
    names = [e.name for e in zoo.CATALOGUE]
    assert len(set(names)) == len(names)
    for e in zoo.CATALOGUE:
        assert e.layout in BY_NAME and e.url.startswith("https://") and e.licence and e.arch == "resnet50", e.name
        assert e.part is None or e.part in BY_NAME[e.layout].parts, e.name
        assert all(p.source and p.value > 0 for p in e.published), e.name
        if e.checksum:
            algorithm, _, digest = e.checksum.partition(":")
            assert algorithm in ("md5", "sha256") and len(digest) >= 8, e.name
    assert {"moco_v1_200ep", "moco_v2_200ep", "moco_v2_800ep", "torchvision_r50", "moco_v3_r50_1000ep", "dino_r50",
            "swav_800ep", "barlowtwins_r50"} <= set(names)
    paths = {zoo.entry_path(e, "/z") for e in zoo.CATALOGUE}  # barlowtwins and vicreg both publish resnet50.pth
    assert len(paths) == len(names)
    # torchvision's file names carry the first 8 hex digits of the file's sha256
    assert zoo.ENTRIES["torchvision_r50"].checksum == "sha256:" + zoo.ENTRIES["torchvision_r50"].filename.split("-")[1][:8]


def test_zoo_list_prints_every_entry():
    out = run_cli(["zoo", "list"]).output
    for e in zoo.CATALOGUE:
        assert f"{e.name}: " in out and e.url in out
    assert "published linear top1_best: 71.1" in out and "inputs: swav" in out


@pytest.fixture
def entry(server, monkeypatch):
    """A catalogue entry served by the local server: a MoCo checkpoint in the official layout."""
    served, base = server
    torch.manual_seed(0)
    net = torchvision.models.resnet18()
    sd = {f"module.encoder_q.{k}": v for k, v in net.state_dict().items()}
    sd.update({"module.queue": torch.randn(128, 64), "module.queue_ptr": torch.zeros(1, dtype=torch.long)})
    torch.save({"epoch": 200, "arch": "resnet18", "state_dict": sd}, served / "tiny_moco.pth.tar")
    data = (served / "tiny_moco.pth.tar").read_bytes()
    e = zoo.ZooEntry("tiny_moco", "https://example.invalid/tiny_moco.pth.tar", "moco_official", "resnet18", "moco_v2",
                     200, "CC-BY-NC 4.0", "sha256:" + hashlib.sha256(data).hexdigest()[:8],
                     (zoo.Published("knn", "top1", 50.0, "made up for the test"),))
    monkeypatch.setitem(zoo.ENTRIES, e.name, e)
    return e, base, data, served


def test_fetch_resumes_and_verifies(entry, tmp_path):
    e, base, data, _ = entry
    RangeHandler.fail_after = 1 << 20  # the first connection breaks after 1 MiB
    r = run_cli(["zoo", "fetch", e.name, "--root", tmp_path / "zoo", "--mirror", base], expect_ok=False)
    assert "run the same command again to resume" in r.output
    partial = (tmp_path / "zoo" / "tiny_moco" / "tiny_moco.pth.tar.part").stat().st_size
    assert 0 < partial <= 1 << 20
    r = run_cli(["zoo", "fetch", e.name, "--root", tmp_path / "zoo", "--mirror", base])
    assert RangeHandler.ranges[-1] == f"bytes={partial}-" and "verified against the published sha256:" in r.output
    assert (tmp_path / "zoo" / "tiny_moco" / "tiny_moco.pth.tar").read_bytes() == data


def test_fetch_deletes_a_download_whose_checksum_differs(entry, tmp_path, monkeypatch):
    e, base, _, _ = entry
    monkeypatch.setitem(zoo.ENTRIES, e.name, zoo.ZooEntry(**{**e.__dict__, "checksum": "sha256:00000000"}))
    r = run_cli(["zoo", "fetch", e.name, "--root", tmp_path, "--mirror", base], expect_ok=False)
    assert "is not the expected sha256:00000000; the download was deleted" in r.output
    assert not list((tmp_path / "tiny_moco").iterdir())


def test_without_a_published_checksum_the_first_download_is_pinned(entry, tmp_path, monkeypatch):
    e, base, data, served = entry
    monkeypatch.setitem(zoo.ENTRIES, e.name, zoo.ZooEntry(**{**e.__dict__, "checksum": None}))
    r = run_cli(["zoo", "fetch", e.name, "--root", tmp_path / "zoo", "--mirror", base])
    assert "UNVERIFIED" in r.output
    lock = json.loads((tmp_path / "zoo" / zoo.LOCK_FILE).read_text())
    assert lock == {"tiny_moco": hashlib.sha256(data).hexdigest()}
    (tmp_path / "zoo" / "tiny_moco" / "tiny_moco.pth.tar").unlink()
    r = run_cli(["zoo", "fetch", e.name, "--root", tmp_path / "zoo", "--mirror", base])
    assert "matches the sha256 pinned" in r.output
    (served / "tiny_moco.pth.tar").write_bytes(data[:-10] + b"0123456789")  # the server now serves another file
    (tmp_path / "zoo" / "tiny_moco" / "tiny_moco.pth.tar").unlink()
    r = run_cli(["zoo", "fetch", e.name, "--root", tmp_path / "zoo", "--mirror", base], expect_ok=False)
    assert "is not the expected sha256:" in r.output and "pinned in" in r.output


def test_unknown_entries_are_named(tmp_path):
    r = run_cli(["zoo", "fetch", "moco_v9", "--root", tmp_path], expect_ok=False)
    assert "unknown zoo entry 'moco_v9'" in r.output
    r = run_cli(["suite", "zoo:moco_v9", "--out", tmp_path / "s"], expect_ok=False)
    assert "unknown zoo entry 'moco_v9'" in r.output


@pytest.mark.slow
def test_zoo_name_in_the_suite_gives_the_published_column(entry, synth, tmp_path, monkeypatch):
    e, base, _, _ = entry
    run_cli(["zoo", "fetch", e.name, "--root", tmp_path / "zoo", "--mirror", base])
    monkeypatch.setenv("MOCOBENCH_ZOO", str(tmp_path / "zoo"))
    out = tmp_path / "suite"
    run_cli(["suite", f"zoo:{e.name}", "random", "--arch", "resnet18", "--preset", "demo", "--tasks", "knn",
             "--data-root", synth.parent, "--set", "knn.data=" + str(synth), "--set", "knn.workers=0",
             "--set", "knn.k=5", "--set", "knn.image_size=32", "--out", out])
    rec = json.loads((out / "tiny_moco" / "knn" / "results.json").read_text())
    assert rec["checkpoint"]["zoo"] == "tiny_moco" and rec["checkpoint"]["format"] == "moco_official"
    assert rec["checkpoint"]["dropped"] == {"encoder_q.fc": 2, "queue": 1, "queue_ptr": 1} and rec["pretraining"] == "tiny_moco"
    assert rec["checkpoint"]["tensors"] == 120 and rec["checkpoint"]["normalize"] == "imagenet"
    repro = reproduction(collect([out]))
    assert list(repro["pretraining"]) == ["tiny_moco"] and repro["published"].iloc[0] == 50.0
    assert repro["measured"].iloc[0] == rec["metrics"]["top1"]
    report = (out / "report" / "report.md").read_text()
    assert "## Published numbers" in report and "made up for the test" in report
