"""The one frozen-feature path: sharded extraction and kNN over real gloo processes equal one process; the
feature cache is hit, reused across process counts, and never read for a changed key."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as tdist
import torch.multiprocessing as mp
import torch.nn.functional as F
import torchvision
from helpers import free_port

from mocobench.augment import eval_transform
from mocobench.datasets import ImageDataset, list_images
from mocobench.evaluators.features import FeatureCache, FeatureKey, dataset_identity, frozen_features, shard
from mocobench.evaluators.knn import knn_scores, sharded_knn_scores


def _bank():
    g = torch.Generator().manual_seed(0)
    bank = F.normalize(torch.randn(103, 16, generator=g, dtype=torch.float64), dim=1)
    queries = F.normalize(torch.randn(37, 16, generator=g, dtype=torch.float64), dim=1)
    return bank, torch.randint(0, 5, (103,), generator=g), queries


def _sharded_worker(rank: int, world: int, port: int, k: int, out: str) -> None:
    tdist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    bank, labels, queries = _bank()
    mine = shard(len(bank), rank, world)
    scores = sharded_knn_scores(queries, bank[mine.start:mine.stop], labels[mine.start:mine.stop], 5, k, 0.07, 8)
    torch.save(scores, f"{out}/scores{rank}.pt")
    tdist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("k", [10, 60])  # 60 > a shard's 51 rows: the padded merge
def test_sharded_knn_gives_the_one_process_neighbours(tmp_path, k):
    mp.spawn(_sharded_worker, args=(2, free_port(), k, str(tmp_path)), nprocs=2, join=True)
    bank, labels, queries = _bank()
    ref = knn_scores(queries, bank, labels, 5, k, 0.07, chunk_size=8)
    for rank in range(2):
        got = torch.load(tmp_path / f"scores{rank}.pt")
        torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)  # float64: the same sums in the same order
        assert torch.equal(got.argmax(1), ref.argmax(1))


def test_shards_cover_every_row_once():
    for n in (0, 1, 7, 103):
        for world in (1, 2, 3, 8):
            rows = [i for r in range(world) for i in shard(n, r, world)]
            assert rows == list(range(n))


class _Counting(torch.nn.Module):
    """A ResNet-18 whose conv1 counts the images it sees (to show that a cache hit runs nothing)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = torchvision.models.resnet18()
        self.seen = 0
        self.net.conv1.register_forward_pre_hook(lambda m, a: setattr(self, "seen", self.seen + len(a[0])))

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.net, name)


def _key(ds, **kw) -> FeatureKey:
    base = dict(checkpoint="abc", normalize="imagenet", features="backbone", transform=repr(ds.transform),
                images=dataset_identity(ds), precision="fp32")
    return FeatureKey(**{**base, **kw})


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_a_cache_hit_runs_nothing_and_returns_the_same_features(synth, tmp_path, dtype):
    ds = ImageDataset(list_images(synth / "val", labelled=True), eval_transform(32))
    net, cache, dev = _Counting(), FeatureCache(tmp_path / "cache", dtype), torch.device("cpu")
    f1, y1 = frozen_features(net, ds, _key(ds), dev, 8, 0, cache)
    assert net.seen == len(ds)
    f2, y2 = frozen_features(net, ds, _key(ds), dev, 8, 0, cache)
    assert net.seen == len(ds)  # nothing extracted the second time
    assert torch.equal(f1, f2) and torch.equal(y1, y2) and f1.dtype == torch.float32
    meta = json.loads((cache.entry(_key(ds)) / "meta.json").read_text())
    assert meta["rows"] == len(ds) and meta["dtype"] == dtype and meta["key"]["checkpoint"] == "abc"


def test_a_changed_key_is_never_read(synth, tmp_path):
    ds = ImageDataset(list_images(synth / "val", labelled=True), eval_transform(32))
    net, cache, dev = _Counting(), FeatureCache(tmp_path / "cache"), torch.device("cpu")
    frozen_features(net, ds, _key(ds), dev, 8, 0, cache)
    for change in ({"checkpoint": "abd"}, {"normalize": "none"}, {"features": "head"}, {"precision": "bf16"},
                   {"transform": repr(eval_transform(48))}):
        assert cache.read(_key(ds, **change), range(len(ds))) is None, change
    assert FeatureCache(tmp_path / "cache", "float16").read(_key(ds), range(len(ds))) is None  # another dtype
    meta_path = cache.entry(_key(ds)) / "meta.json"  # an entry whose stored key differs (a hash collision)
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "key": {**meta["key"], "images": "other"}}))
    assert cache.read(_key(ds), range(len(ds))) is None
    img = ds.images.paths[0]  # an image rewritten in place changes the key
    before = dataset_identity(ds)
    os.utime(img, ns=(img.stat().st_atime_ns, img.stat().st_mtime_ns + 10**9))
    assert dataset_identity(ds) != before


@pytest.mark.slow
def test_torchrun_knn_equals_one_process_and_the_cache_serves_either(synth, tmp_path):
    args = ["transfer", "random", "--arch", "resnet18", "--task", "knn", "--data", str(synth), "--set", "image_size=32",
            "--set", "workers=0", "--set", "k=5", "--set", "batch_size=8"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          str(free_port()), "-m", "mocobench.cli", *args, "--out", str(tmp_path / "two"),
                          "--feature-cache", str(tmp_path / "cache2")], capture_output=True, text=True, env=env,
                         timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run([sys.executable, "-m", "mocobench.cli", *args, "--out", str(tmp_path / "one"),
                          "--feature-cache", str(tmp_path / "cache1")], capture_output=True, text=True, env=env,
                         timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    r2 = json.loads((tmp_path / "two" / "results.json").read_text())
    r1 = json.loads((tmp_path / "one" / "results.json").read_text())
    assert r2["metrics"] == r1["metrics"] and r2["config"]["derived"]["processes"] == 2
    # the two-process cache, read by one process: a hit, the same numbers
    again = subprocess.run([sys.executable, "-m", "mocobench.cli", *args, "--out", str(tmp_path / "again"),
                            "--feature-cache", str(tmp_path / "cache2")], capture_output=True, text=True, env=env,
                           timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("feature cache hit") == 2 and "miss" not in again.stderr
    assert json.loads((tmp_path / "again" / "results.json").read_text())["metrics"] == r1["metrics"]


def _cli(args, env, nproc=1):
    launch = ([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port",
               str(free_port()), "-m", "mocobench.cli"] if nproc > 1 else [sys.executable, "-m", "mocobench.cli"])
    r = subprocess.run([*launch, *map(str, args)], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


@pytest.mark.slow
def test_torchrun_linear_trains_the_one_process_classifier_and_resumes(synth, tmp_path):
    """Faithful mode, 2 epochs, global batch 12 over 2 gloo processes (64 images: a partial last batch of 4)
    against one process; then a 2-process run stopped after epoch 1 and resumed."""
    args = ["transfer", "random", "--arch", "resnet18", "--task", "linear", "--data", synth, "--set", "image_size=32",
            "--set", "workers=0", "--set", "epochs=2", "--set", "batch_size=12", "--set", "lr=3.0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    _cli([*args, "--out", tmp_path / "one"], env)
    _cli([*args, "--out", tmp_path / "two"], env, nproc=2)
    _cli([*args, "--out", tmp_path / "stopped", "--set", "stop_at=1"], env, nproc=2)
    assert not (tmp_path / "stopped" / "results.json").exists()
    _cli([*args, "--out", tmp_path / "stopped"], env, nproc=2)
    one = json.loads((tmp_path / "one" / "results.json").read_text())
    fc_one = torch.load(tmp_path / "one" / "linear_last.pth", weights_only=True)["fc"]
    for run in ("two", "stopped"):
        rec = json.loads((tmp_path / run / "results.json").read_text())
        assert rec["config"]["derived"]["processes"] == 2
        for k, v in one["metrics"].items():
            assert abs(rec["metrics"][k] - v) <= 1e-5, (run, k)
        for h1, h2 in zip(one["config"]["derived"]["history"], rec["config"]["derived"]["history"], strict=True):
            assert abs(h1["loss"] - h2["loss"]) <= 1e-5 * max(1.0, abs(h1["loss"])), run
        fc = torch.load(tmp_path / run / "linear_last.pth", weights_only=True)["fc"]
        for k in fc_one:
            torch.testing.assert_close(fc[k], fc_one[k], atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_torchrun_finegrained_selects_the_one_process_c_and_score(shared_data, tmp_path):
    """Real Flowers images (flowers102-sub): two gloo processes extract half of each split each."""
    args = ["transfer", "random", "--arch", "resnet18", "--task", "finegrained", "--data",
            shared_data / "flowers102-sub", "--set", "image_size=32", "--set", "workers=0", "--set", "grid_size=6",
            "--set", "batch_size=64"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    _cli([*args, "--out", tmp_path / "one"], env)
    _cli([*args, "--out", tmp_path / "two"], env, nproc=2)
    one = json.loads((tmp_path / "one" / "results.json").read_text())
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    assert two["config"]["derived"]["processes"] == 2
    assert two["config"]["derived"]["C_chosen"] == one["config"]["derived"]["C_chosen"]
    for k, v in one["metrics"].items():
        assert abs(two["metrics"][k] - v) <= 1e-6, k


@pytest.mark.slow
def test_suite_under_torchrun_and_one_cache_per_checkpoint(synth, tmp_path):
    """knn and cached linear read the same splits under the same transform: the suite decodes them once per
    checkpoint (linear's features are cache hits); under torchrun the same suite gives the same numbers."""
    args = ["suite", "random", "--arch", "resnet18", "--preset", "demo", "--tasks", "knn,linear", "--data-root",
            synth.parent, "--set", f"knn.data={synth}", "--set", f"linear.data={synth}", "--set", "knn.image_size=32",
            "--set", "linear.image_size=32", "--set", "knn.workers=0", "--set", "linear.workers=0",
            "--set", "linear.epochs=2", "--set", "knn.k=5", "--set", "linear.batch_size=16"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    _cli([*args, "--out", tmp_path / "one"], env)
    log = (tmp_path / "one" / "random" / "linear" / "log.txt").read_text()
    assert "linear val: feature cache hit" in log and "linear train: feature cache hit" in log
    assert len(list((tmp_path / "one" / "random" / "feature_cache").glob("*/meta.json"))) == 2  # train, val
    _cli([*args, "--out", tmp_path / "two"], env, nproc=2)
    for task in ("knn", "linear"):
        one = json.loads((tmp_path / "one" / "random" / task / "results.json").read_text())["metrics"]
        two = json.loads((tmp_path / "two" / "random" / task / "results.json").read_text())["metrics"]
        assert all(abs(one[k] - two[k]) <= 1e-5 for k in one), task
    assert (tmp_path / "two" / "report" / "report.md").exists()


@pytest.mark.slow
def test_torchrun_voc07_svm_and_fewshot_equal_one_process(shared_data, tmp_path):
    """voc07_svm splits the classes across the processes, fewshot shards the features: same numbers."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    svm = ["transfer", "random", "--arch", "resnet18", "--task", "voc07_svm", "--data", shared_data / "voc-from-coco",
           "--set", "image_size=64", "--set", "pool=global", "--set", "workers=0", "--set", "costs=0.1,1.0",
           "--set", "low_shot=true", "--set", "low_shot_k=1,2", "--set", "low_shot_samples=2"]
    few = ["transfer", "random", "--arch", "resnet18", "--task", "fewshot", "--data", shared_data / "cifar10-sub",
           "--set", "image_size=32", "--set", "workers=0", "--set", "shots=1,5", "--set", "episodes=50"]
    for name, args in (("svm", svm), ("few", few)):
        _cli([*args, "--out", tmp_path / f"{name}1"], env)
        _cli([*args, "--out", tmp_path / f"{name}2"], env, nproc=2)
        one = json.loads((tmp_path / f"{name}1" / "results.json").read_text())
        two = json.loads((tmp_path / f"{name}2" / "results.json").read_text())
        for k, v in one["metrics"].items():
            assert abs(two["metrics"][k] - v) <= 1e-6, (name, k)
    d1 = json.loads((tmp_path / "svm1" / "results.json").read_text())["config"]["derived"]
    d2 = json.loads((tmp_path / "svm2" / "results.json").read_text())["config"]["derived"]
    assert d1["cost_per_class"] == d2["cost_per_class"]


def test_the_key_names_the_network_read_from_the_file(synth):
    import dataclasses
    from types import SimpleNamespace

    from mocobench.checkpoint import BackboneInfo
    from mocobench.evaluators.features import feature_key

    ds = ImageDataset(list_images(synth / "val", labelled=True), eval_transform(32))
    info = BackboneInfo("dino.pth", "dino", "resnet50", "dino", 100, "0123456789ab", part="teacher",
                        prefix="backbone.", container="teacher")
    keys = {feature_key(SimpleNamespace(info=i, seed=0), "backbone", ds.transform, ds, "fp32").digest()
            for i in (info, dataclasses.replace(info, part="student", container="student"),
                      dataclasses.replace(info, stem="small"), dataclasses.replace(info, normalize="none"),
                      dataclasses.replace(info, sha256="0123456789ac"))}
    assert len(keys) == 5


def test_an_empty_bank_block_has_no_candidates():
    from mocobench.evaluators.knn import knn_topk

    sim, lab = knn_topk(torch.randn(3, 4), torch.empty(0, 4), torch.empty(0, dtype=torch.long), k=5)
    assert sim.shape == (3, 0) and lab.shape == (3, 0)
