"""Shared fixtures: the real data folder (``MOCOBENCH_DATA``, default ``../shared/data``), a tiny
synthetic ImageFolder, a helper that runs the CLI in-process, and an HTTP server on 127.0.0.1."""

from __future__ import annotations

import http.server
import os
import threading
from pathlib import Path

import pytest
import torch

from mocobench.synth import SynthSpec, write_synthetic_classification

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MOCOBENCH_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not DATA.is_dir():
        pytest.skip(f"real test data not found at {DATA} (set MOCOBENCH_DATA)")
    return DATA


@pytest.fixture(scope="session")
def synth(tmp_path_factory) -> Path:
    """4 classes x (16 train + 8 val) images of 32 px."""
    root = tmp_path_factory.mktemp("synth")
    return write_synthetic_classification(root / "data", SynthSpec(4, 16, 8, 32, 0))


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder; answers ``Range: bytes=N-`` with 206 (the stdlib handler ignores Range)."""

    ranges: list[str] = []
    fail_after: int | None = None  # close the connection after this many body bytes (an interrupted download)

    def do_GET(self):  # noqa: N802 - http.server's naming
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        rng = self.headers.get("Range")
        start = int(rng.removeprefix("bytes=").rstrip("-")) if rng else 0
        type(self).ranges.append(rng)
        body = data[start:]
        self.send_response(206 if rng else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.fail_after is not None:
            self.wfile.write(body[: self.fail_after])
            type(self).fail_after = None
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    RangeHandler.ranges, RangeHandler.fail_after = [], None
    handler = lambda *a, **k: RangeHandler(*a, directory=str(served), **k)  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
