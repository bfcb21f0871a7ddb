#!/usr/bin/env bash
# The benchmarks' own environment: the project's .venv plus the peer implementation (lightly 1.6.0),
# which is never a dependency of mocobench. .venv-bench sees .venv's packages through a .pth file, so
# torch is not installed twice.
#   usage: bash benchmarks/setup_bench_env.sh   (after `make setup`)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
BENCH=${BENCH_VENV:-$here/.venv-bench}
base_site=$("$here/.venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
if [ ! -x "$BENCH/bin/python" ]; then
  python3 -m venv "$BENCH"
fi
site=$("$BENCH/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
# addsitedir also runs .venv's own .pth files (the editable mocobench, detectron2).
echo "import site; site.addsitedir('$base_site')" > "$site/mocobench-base.pth"
"$BENCH/bin/python" -m pip install -q "lightly==1.6.0"
(cd / && "$BENCH/bin/python" -c "import torch, lightly, mocobench; print('bench env: torch', torch.__version__, 'lightly', lightly.__version__)")
