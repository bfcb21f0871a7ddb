"""``mocobench data fetch`` against a real HTTP server on 127.0.0.1 that honours Range requests."""

from __future__ import annotations

import hashlib
import io
import random
import tarfile
from pathlib import Path

import pytest
from conftest import RangeHandler
from helpers import run_cli

from mocobench.fetch import FetchError, Resource, download, fetch_resources


def _archive(folder: Path) -> tuple[str, str]:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        noise = random.Random(0).randbytes(300_000)  # incompressible: the archive stays ~300 kB
        for name, text in (("set/train/a/1.txt", noise), ("set/val/a/2.txt", b"y" * 1000)):
            info = tarfile.TarInfo(name)
            info.size = len(text)
            t.addfile(info, io.BytesIO(text))
    (folder / "set.tgz").write_bytes(buf.getvalue())
    return "set.tgz", hashlib.md5(buf.getvalue()).hexdigest()


def test_fetch_downloads_verifies_and_extracts_once(server, tmp_path):
    served, base = server
    name, md5 = _archive(served)
    res = (Resource(f"{base}/{name}", md5, "sub"),)
    fetch_resources(res, tmp_path / "root")
    assert (tmp_path / "root" / "sub" / "set" / "train" / "a" / "1.txt").stat().st_size == 300_000
    assert (tmp_path / "root" / "sub" / ".set.tgz.extracted").exists()
    n = len(RangeHandler.ranges)
    fetch_resources(res, tmp_path / "root")  # finished: nothing is downloaded again
    assert len(RangeHandler.ranges) == n


def test_an_interrupted_download_resumes_with_a_range_request(server, tmp_path):
    served, base = server
    name, md5 = _archive(served)
    dest = tmp_path / "dl" / name
    RangeHandler.fail_after = 200_000  # the server hangs up after 200 kB
    with pytest.raises(FetchError):
        download(f"{base}/{name}", dest, md5)
    part = dest.with_name(name + ".part")
    kept = part.stat().st_size
    assert 0 < kept <= 200_000 < (served / name).stat().st_size and not dest.exists()
    download(f"{base}/{name}", dest, md5)
    assert RangeHandler.ranges[-1] == f"bytes={kept}-"
    assert dest.read_bytes() == (served / name).read_bytes() and not part.exists()


def test_a_bad_checksum_or_missing_file_is_an_error_and_leaves_nothing(server, tmp_path):
    served, base = server
    name, _ = _archive(served)
    dest = tmp_path / "dl" / name
    with pytest.raises(FetchError, match=f"{name} from .*: checksum [0-9a-f]{{32}} is not the expected 0{{32}}"):
        download(f"{base}/{name}", dest, "0" * 32)
    assert not dest.exists() and not dest.with_name(name + ".part").exists()
    with pytest.raises(FetchError, match="answered HTTP 404"):
        download(f"{base}/nope.tgz", tmp_path / "dl" / "nope.tgz", "0" * 32)


def test_cli_names_the_known_data_sets_and_uses_a_mirror(server, tmp_path):
    r = run_cli(["data", "fetch", "imagenet-22k", "--root", tmp_path], expect_ok=False)
    assert "unknown data set 'imagenet-22k'; choose one of imagenette, imagenette-320, voc2007" in r.output
    _, base = server  # the mirror serves no imagenette2.tgz: the URL built from --mirror is named
    r = run_cli(["data", "fetch", "imagenette", "--root", tmp_path, "--mirror", base], expect_ok=False)
    assert f"GET {base}/imagenette2.tgz answered HTTP 404" in r.output


@pytest.mark.parametrize("kind", ["tgz", "zip"])
def test_an_archive_that_unpacks_past_the_limit_is_refused_before_writing(tmp_path, kind):
    """A decompression bomb in small: 64 MiB of zeros packs into ~64 KiB; with a 16 MiB limit nothing is written."""
    import zipfile

    from mocobench.fetch import extract

    zeros = b"\0" * (64 << 20)
    archive = tmp_path / f"bomb.{kind}"
    if kind == "tgz":
        with tarfile.open(archive, "w:gz") as t:
            info = tarfile.TarInfo("zeros.bin")
            info.size = len(zeros)
            t.addfile(info, io.BytesIO(zeros))
    else:
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("zeros.bin", zeros)
    assert archive.stat().st_size < 1 << 20
    into = tmp_path / "out"
    into.mkdir()
    with pytest.raises(FetchError, match=r"would unpack to 0.06 GiB, more than the limit of 0.02 GiB.*nothing was"):
        extract(archive, into, max_unpacked=16 << 20)
    assert list(into.iterdir()) == []
    extract(archive, into, max_unpacked=128 << 20)  # under the limit: extracted as before
    assert (into / "zeros.bin").stat().st_size == 64 << 20
