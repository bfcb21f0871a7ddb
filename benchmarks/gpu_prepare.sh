#!/usr/bin/env bash
# Fill what benchmarks/gpu_checks.sh needs on the device machine, which reaches no network: real images in
# .gpudata/ and wheels in .whl/ (both untracked and not ignored, so they travel with the working tree; keep
# them under the device tool's 64 MiB). Run it here, before the first `run`:
#   bash benchmarks/gpu_prepare.sh [../shared/data]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
DATA=$(cd "${1:-$here/../shared/data}" && pwd)
PY="$here/.venv/bin/python"
cd "$here"
mkdir -p .gpudata .whl/d2
# cifar10-sub whole; imagenette-half: the first 150 images of each imagenette-sub/train class (~20 MB)
[ -d .gpudata/cifar10-sub ] || cp -r "$DATA/cifar10-sub" .gpudata/
if [ ! -d .gpudata/imagenette-half ]; then
  for cls in "$DATA"/imagenette-sub/train/*/; do
    name=$(basename "$cls"); mkdir -p ".gpudata/imagenette-half/train/$name"
    ls "$cls" | head -150 | while read -r f; do cp "$cls/$f" ".gpudata/imagenette-half/train/$name/"; done
  done
fi
# voc_det on CUDA: the real VOC-layout images (VOC2007 from coco-mini's photos)
[ -d .gpudata/voc-from-coco ] || cp -r "$DATA/voc-from-coco" .gpudata/
# the peer (its dependencies are in the device image)
[ -n "$(ls .whl/lightly-1.6.0-*.whl 2>/dev/null)" ] || "$PY" -m pip download -q --no-deps -d .whl "lightly==1.6.0"
# detectron2's pure-Python route (README "Installing detectron2"): the sal-detectron2 wheel, unpacked there without
# its compiled _C, and the pure-Python packages it imports; pycocotools for both Python versions the image may run
if [ -z "$(ls .whl/d2/*.whl 2>/dev/null)" ]; then
  "$PY" -m pip download -q --no-deps --only-binary :all: --python-version 3.10 -d .whl/d2 sal-detectron2==0.7.2
  "$PY" -m pip download -q --no-deps -d .whl/d2 "fvcore>=0.1.5,<0.1.6" "iopath>=0.1.7,<0.1.10" "omegaconf>=2.1,<2.4" \
    hydra-core antlr4-python3-runtime==4.9.3 yacs termcolor tabulate portalocker
  for v in 3.11 3.12; do
    "$PY" -m pip download -q --no-deps --only-binary :all: --python-version "$v" -d .whl/d2 pycocotools
  done
fi
du -sh .gpudata .whl
