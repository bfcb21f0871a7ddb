#!/usr/bin/env bash
# Create (or reuse) the virtual environment and install everything mocobench needs.
#   usage: scripts/setup_env.sh [VENV_DIR]   (default: .venv)
# torch/torchvision are pinned to the versions this project is tested with; detectron2 is used
# as-is when already importable, otherwise installed by the registry-only route described in
# the README ("Installing detectron2").
set -euo pipefail
VENV=${1:-.venv}
PY=${PYTHON:-python3}
STAMP="$VENV/.mocobench-installed"
here=$(cd "$(dirname "$0")/.." && pwd)

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating virtual environment $VENV"
  "$PY" -m venv "$VENV"
fi
VPY="$VENV/bin/python"

# Re-install only when the dependency spec changed (the stamp holds a hash of it).
spec_hash=$(cat "$here/pyproject.toml" "$here/scripts/setup_env.sh" | sha256sum | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$spec_hash" ]; then
  echo "[setup] $VENV is up to date"
  exit 0
fi

"$VPY" -m pip install -q --upgrade pip
echo "[setup] installing torch 2.14.1 / torchvision 0.29.1"
"$VPY" -m pip install -q "torch==2.14.1" "torchvision==0.29.1"

if "$VPY" -c "import detectron2" 2>/dev/null; then
  echo "[setup] using the importable detectron2: $("$VPY" -c 'import detectron2; print(detectron2.__file__)')"
else
  echo "[setup] installing detectron2 (sal-detectron2 0.7.2 wheel, pure-Python part)"
  purelib=$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  D2_DIR="$purelib/../detectron2-py"
  tmp=$(mktemp -d)
  "$VPY" -m pip download -q --no-deps --only-binary :all: --python-version 3.10 -d "$tmp" sal-detectron2==0.7.2
  whl=$(ls "$tmp"/sal_detectron2-0.7.2-*.whl)
  echo "491af0c7f79bdb2d178e46f6cb16a97c4ac968d45c41ea3f6b6435d59bbee561  $whl" | sha256sum -c --quiet
  "$VPY" -m pip install -q --no-deps --only-binary :all: --python-version 3.10 --target "$D2_DIR" --upgrade "$whl"
  rm -rf "$D2_DIR"/detectron2/_C.cpython-*.so "$D2_DIR"/tools "$tmp"
  "$VPY" -m pip install -q "fvcore>=0.1.5,<0.1.6" "iopath>=0.1.7,<0.1.10" "omegaconf>=2.1,<2.4" \
      hydra-core yacs termcolor tabulate cloudpickle matplotlib tensorboard packaging
  realpath "$D2_DIR" > "$purelib/detectron2-py.pth"
fi

echo "[setup] installing mocobench (editable) with test extras"
"$VPY" -m pip install -q -e "$here[test]"
echo "$spec_hash" > "$STAMP"
echo "[setup] done: $VENV"
