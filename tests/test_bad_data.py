"""Bad image files and bad COCO annotations: a clear error naming the file, or a counted skip."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
from helpers import TINY, run_cli
from PIL import Image

from mocobench.datasets import DataError, list_images, load_rgb


@pytest.fixture
def messy(synth, tmp_path):
    """Class ``a``: 4 good PNGs, a truncated JPEG, a zero-byte JPEG, grayscale / CMYK / 16-bit images and
    a README; class ``b``: 7 good PNGs (16 images with an image extension in all)."""
    root = tmp_path / "messy"
    good = sorted((synth / "train").rglob("*.png"))
    for cls, n in (("a", 4), ("b", 7)):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            shutil.copy(good[i], root / cls / f"good{i}.png")
    Image.open(good[0]).convert("RGB").save(root / "a" / "full.jpg", quality=90)
    data = (root / "a" / "full.jpg").read_bytes()
    (root / "a" / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (root / "a" / "full.jpg").unlink()
    (root / "a" / "empty.jpg").write_bytes(b"")
    Image.open(good[1]).convert("L").save(root / "a" / "gray.png")
    Image.new("CMYK", (32, 32), (0, 255, 0, 0)).save(root / "a" / "cmyk.jpg")
    Image.fromarray(np.array([[0, 32768], [65535, 65535]], dtype=np.uint16)).save(root / "a" / "deep.png")
    (root / "a" / "README.txt").write_text("not an image")
    return root


def test_odd_but_valid_images_decode_to_8_bit_rgb(messy):
    assert load_rgb(messy / "a" / "gray.png").mode == "RGB"
    assert load_rgb(messy / "a" / "cmyk.jpg").getpixel((0, 0)) == (255, 0, 255)
    deep = np.asarray(load_rgb(messy / "a" / "deep.png"))
    assert deep.shape == (2, 2, 3) and deep[0, 1, 0] == 128 and deep[1, 0, 0] == 255  # scaled, not clipped


def test_bad_files_are_named_or_skipped_with_a_count(messy, caplog):
    for name in ("truncated.jpg", "empty.jpg"):
        with pytest.raises(DataError, match=f"cannot decode image {messy / 'a' / name}.*--on-bad-image skip"):
            load_rgb(messy / "a" / name)
    with caplog.at_level(logging.INFO):
        listed = list_images(messy)
    assert len(listed) == 16 and "left out 1 files without an image extension" in caplog.text  # README.txt
    with caplog.at_level(logging.WARNING):
        kept = list_images(messy, on_bad_image="skip")
    assert len(kept) == 14 and kept.classes == ("a", "b")
    assert not any(p.name in ("truncated.jpg", "empty.jpg") for p in kept.paths)
    assert "left out 2 of 16 images" in caplog.text and "truncated.jpg" in caplog.text
    with pytest.raises(DataError, match="--on-bad-image must be error or skip"):
        list_images(messy, on_bad_image="ignore")


def test_pretraining_stops_on_a_bad_image_or_skips_it(messy, tmp_path):
    base = ["pretrain", "--data", messy, "--epochs", "1", *TINY]  # batch 16: one step reads every image
    r = run_cli([*base, "--out", tmp_path / "err"], expect_ok=False)
    assert "cannot decode image" in r.output and "messy/a/" in r.output
    r = run_cli([*base, "--out", tmp_path / "skip", "--on-bad-image", "skip", "--batch-size", "8",
                 "--queue-size", "64", "--bn-splits", "2"])
    assert (tmp_path / "skip" / "checkpoint_last.pth").exists()
    r = run_cli(["pretrain", "--data", messy / "b", "--out", tmp_path / "small", *TINY], expect_ok=False)
    assert "fewer than one global batch of 16" in r.output  # 7 images


def _coco(tmp_path, shared_data, change):
    src = shared_data / "coco-mini" / "annotations" / "instances_val2017.json"
    data = json.loads(src.read_text())
    change(data)
    out = tmp_path / "ann.json"
    out.write_text(json.dumps(data))
    return out


def test_bad_coco_annotations_are_named_or_counted(shared_data, tmp_path, caplog):
    from mocobench.transfer.detection import register_coco

    images = shared_data / "coco-mini" / "val2017"

    def unknown_category(d):
        d["annotations"][0]["category_id"] = 999

    def degenerate_and_outside(d):
        d["annotations"][0]["bbox"][2] = 0.0
        im = next(i for i in d["images"] if i["id"] == d["annotations"][1]["image_id"])
        d["annotations"][1]["bbox"][0] = im["width"] - 1.0

    first = json.loads((shared_data / "coco-mini" / "annotations" / "instances_val2017.json").read_text())["annotations"][0]
    with pytest.raises(DataError, match=f"annotation {first['id']} has category_id 999, which is not among"):
        register_coco("mb_bad", _coco(tmp_path, shared_data, unknown_category), images)
    with caplog.at_level(logging.WARNING):
        register_coco("mb_bad", _coco(tmp_path, shared_data, degenerate_and_outside), images)
    assert "1 boxes of zero area and 1 boxes reaching outside their image" in caplog.text


@pytest.mark.parametrize("side", [(10000, 9000), (15000, 15000)])  # 1x-2x PIL's limit (it only warns), and past 2x
def test_a_decompression_bomb_is_refused_by_name_without_decoding_it(tmp_path, side):
    from PIL import Image

    from mocobench.datasets import load_rgb

    path = tmp_path / "bomb.png"
    Image.new("1", side).save(path)  # a few kB on disk, 270-675 MB as RGB
    assert path.stat().st_size < 1 << 20
    with pytest.raises(DataError, match=r"cannot decode image .*bomb.png: DecompressionBomb"):
        load_rgb(path)


def test_a_symlink_loop_in_a_data_folder_is_named_and_a_linked_data_set_still_works(tmp_path):
    import os

    from PIL import Image

    from mocobench.datasets import list_images

    elsewhere = tmp_path / "store" / "a"
    elsewhere.mkdir(parents=True)
    (tmp_path / "data" / "b").mkdir(parents=True)
    for folder in (elsewhere, tmp_path / "data" / "b"):
        Image.new("RGB", (8, 8)).save(folder / "0.png")
    os.symlink(elsewhere, tmp_path / "data" / "a")  # a class folder linked from elsewhere: followed
    assert len(list_images(tmp_path / "data", labelled=True)) == 2
    os.symlink(elsewhere, elsewhere / "loop")
    with pytest.raises(DataError, match=r"data/a/loop is .*data/a again \(a symbolic link loop"):
        list_images(tmp_path / "data", labelled=True)


def test_a_file_name_that_is_not_utf8_is_listed_decoded_and_logged(tmp_path, caplog):
    import logging
    import os

    from PIL import Image

    from mocobench.datasets import list_images, load_rgb

    (tmp_path / "data" / "c").mkdir(parents=True)
    raw = os.fsencode(tmp_path / "data" / "c") + b"/caf\xe9.png"  # Latin-1 bytes: not valid UTF-8
    Image.new("RGB", (8, 8), (200, 0, 0)).save(raw.decode(errors="surrogateescape"))
    images = list_images(tmp_path / "data", labelled=True)
    assert len(images) == 1 and load_rgb(images.paths[0]).getpixel((0, 0)) == (200, 0, 0)
    with caplog.at_level(logging.INFO):
        logging.getLogger("mocobench").info("read %s", images.paths[0])  # logging such a name does not raise
    assert "caf" in caplog.text


def _demo_knn(synth, tmp_path) -> list:
    """Suite options that pass every check but the output folder's: the demo preset's knn on ``synth``."""
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    if not (root / "classification").exists():
        (root / "classification").symlink_to(synth)
    return ["--preset", "demo", "--tasks", "knn", "--data-root", root, "--set", "knn.k=5"]


def test_an_output_folder_that_cannot_be_written_fails_before_any_work(synth, tmp_path):
    """--out under a regular file (as a read-only folder would, which root cannot be given here): one line naming
    the folder, for pretrain, transfer and suite, and nothing started."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    for args in (["pretrain", "--data", synth / "train", *TINY, "--out", blocker / "run"],
                 ["transfer", "--task", "knn", "random", "--arch", "resnet18", "--data", synth, "--out", blocker / "knn"],
                 ["suite", "random", "--arch", "resnet18", *_demo_knn(synth, tmp_path), "--out", blocker / "suite"]):
        r = run_cli(args, expect_ok=False)
        assert "Traceback" not in r.output and f"cannot write to the output folder {blocker}/" in r.output, r.output
        assert "Not a directory" in r.output


def _mount_tmpfs(where, options: str) -> None:
    """Mount a tmpfs at ``where`` with ``options``, or skip where this machine does not allow it (no root)."""
    import subprocess

    where.mkdir(exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip() or r.returncode}")


def test_a_read_only_output_folder_fails_before_any_work(synth, tmp_path):
    """A genuinely read-only file system (a tmpfs mounted ro: even root cannot write there, unlike a chmod'ed
    folder) fails pretrain, transfer and suite before any work, naming the folder."""
    import subprocess

    where = tmp_path / "ro"
    _mount_tmpfs(where, "ro,size=1m")
    try:
        for args in (["pretrain", "--data", synth / "train", *TINY, "--out", where / "run"],
                     ["transfer", "--task", "knn", "random", "--arch", "resnet18", "--data", synth, "--out", where],
                     ["suite", "random", "--arch", "resnet18", *_demo_knn(synth, tmp_path), "--out", where / "suite"]):
            r = run_cli(args, expect_ok=False)
            assert "Traceback" not in r.output and "cannot write to the output folder" in r.output, r.output
            assert "Read-only file system" in r.output and str(where) in r.output, r.output
        assert not any(where.iterdir())
    finally:
        subprocess.run(["umount", "--lazy", str(where)], check=False)


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MiB tmpfs (skipped where this machine does not allow mounting one, e.g. without root)."""
    import subprocess

    where = tmp_path / "disk"
    _mount_tmpfs(where, "size=3m")
    yield where
    subprocess.run(["umount", "--lazy", str(where)], check=False)  # lazy: an open log file must not keep it mounted


def test_a_full_disk_names_the_file_and_the_free_space_and_keeps_the_previous_file(small_disk):
    from mocobench.atomic import OutputFolderError, atomic_write

    target = small_disk / "features.bin"
    atomic_write(target, lambda f: f.write(b"x" * 100_000))
    with pytest.raises(OutputFolderError, match=r"no space left to write .*features.bin \(\d+\.\d MiB free on its "
                                                r"disk\); the previous file is intact"):
        atomic_write(target, lambda f: f.write(b"y" * (5 << 20)))
    assert target.read_bytes() == b"x" * 100_000
    assert [p.name for p in small_disk.iterdir()] == ["features.bin"]  # no temporary left behind


def test_pretraining_onto_a_full_disk_stops_with_one_line_and_runs_once_there_is_room(synth, small_disk):
    import subprocess

    args = ["pretrain", "--data", synth / "train", *TINY, "--epochs", "1", "--max-steps", "2", "--out", small_disk / "r"]
    r = run_cli(args, expect_ok=False)
    assert "no space left to write" in r.output and "checkpoint_last.pth" in r.output and "Traceback" not in r.output
    assert not list((small_disk / "r").glob("*.pth")) and not list((small_disk / "r").glob(".*tmp*"))
    subprocess.run(["mount", "-o", "remount,size=200m", str(small_disk)], check=True)
    run_cli(args)  # the same command, with room: it runs
    assert (small_disk / "r" / "checkpoint_last.pth").exists()
