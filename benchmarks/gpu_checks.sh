#!/usr/bin/env bash
# GPU checks and benchmarks, for a session lent a CUDA machine (the `device` tool); CI never runs this.
# Data travels in .gpudata/ (cifar10-sub, 150 images per class of imagenette-sub/train, voc-from-coco), the
# peer's wheel in .whl/ (lightly 1.6.0; the machine's image has its dependencies), detectron2's pure-Python
# route in .whl/d2/: `bash benchmarks/gpu_prepare.sh` fills both. Results land in
# benchmarks/results/*_gpu.* and are copied to $OUT.
#   usage: bash benchmarks/gpu_checks.sh smoke|step|augdev|cost|features|seg|det|amp ...
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu-out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . >/dev/null || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
D=.gpudata
for part in "$@"; do
  case $part in
  smoke)  # each GPU path once, on real images: AMP fp16 (scaler) and bf16, channels_last, compile, NCCL + resume
    common="--data $D/cifar10-sub/train --arch resnet18 --image-size 32 --batch-size 64 --queue-size 4096 --workers 4 --device cuda --epochs 2 --log-every 5"
    mocobench pretrain $common --out /tmp/s-fp16 --amp fp16 --channels-last --max-steps 20 2>&1 | grep -v "it/s" | tail -3
    # torch 2.11 + CUDA 13 on an H100: a fake-kernel error (first try), then no step in 9 minutes (second)
    timeout 300 mocobench pretrain $common --out /tmp/s-bf16 --amp bf16 --compile --max-steps 20 > "$OUT/compile.log" 2>&1; echo "compile rc $?"
    torchrun --nproc_per_node 1 -m mocobench.cli pretrain $common --out /tmp/s-ddp --amp bf16 --max-steps 20 2>&1 | grep -v "it/s" | tail -3
    torchrun --nproc_per_node 1 -m mocobench.cli pretrain $common --out /tmp/s-ddp --amp bf16 --max-steps 40 \
      --knn-train $D/cifar10-sub/train --knn-val $D/cifar10-sub/test > "$OUT/ddp_resume.log" 2>&1; echo "ddp resume rc $?"
    grep -i "resum\|knn\|done" "$OUT/ddp_resume.log" | grep -v "it/s" | tail -4
    mocobench pretrain $common --out /tmp/s-sup --method supervised --amp bf16 --max-steps 20 2>&1 | grep -v "it/s" | tail -2
    mocobench transfer --task knn /tmp/s-ddp/checkpoint_last.pth --out /tmp/s-knn --set data=$D/cifar10-sub --set device=cuda 2>&1 | tail -2
    ;;
  step)
    python3 benchmarks/pretrain_step.py --device cuda --arch resnet50 --size 224 --batch 128 --queue 65536 --m 0.999 \
      --workers 12 --rounds 2 --steps 15 --data $D/imagenette-half/train --name pretrain_step_gpu \
      --variants "lightly fp32,lightly bf16,mocobench fp32,mocobench bf16,mocobench bf16+channels_last,mocobench bf16 tensor-aug,mocobench bf16 device-aug,mocobench bf16+channels_last device-aug" 2>&1 | grep -v "it/s" | tail -24
    ;;
  augdev)  # issue 18: --aug-device cuda end to end (pretraining with resume, kNN and the faithful linear protocol)
    common="--data $D/imagenette-half/train --arch resnet50 --image-size 224 --batch-size 128 --queue-size 65536 --moco-m 0.999 --workers 12 --device cuda --amp bf16 --channels-last --aug-backend tensor --aug-device cuda --log-every 5"
    mocobench pretrain $common --out /tmp/a-dev --epochs 2 --max-steps 12 2>&1 | grep -v "it/s" | tail -3
    mocobench pretrain $common --out /tmp/a-dev --epochs 2 --max-steps 24 2>&1 | grep -E "resumed|epoch 1/2:" | tail -2
    for where in loader cuda; do
      /usr/bin/time -f "knn aug_device=$where %e s" mocobench transfer --task knn /tmp/a-dev/checkpoint_last.pth \
        --out /tmp/a-knn-$where --overwrite --set data=$D/cifar10-sub --set device=cuda --set workers=12 \
        --set aug_device=$where 2>&1 | grep -E "images/s|top1" | tail -3
      /usr/bin/time -f "linear aug_device=$where %e s" mocobench transfer --task linear /tmp/a-dev/checkpoint_last.pth \
        --out /tmp/a-lin-$where --overwrite --set data=$D/cifar10-sub --set device=cuda --set workers=12 \
        --set epochs=2 --set aug_device=$where 2>&1 | grep -E "linear epoch|images/s" | tail -3
    done
    ;;
  det)  # detectron2 on CUDA for the first time: voc_det with SyncBN (one process), a few iterations
    for w in .whl/d2/*; do
      case $w in *sal_detectron2*) python3 -m zipfile -e "$w" /tmp/site && rm -f /tmp/site/detectron2/_C.*.so ;;
        *) python3 -m pip install -q --no-index --no-deps --no-build-isolation --target /tmp/site "$w" 2>/dev/null ;; esac
    done
    python3 -c "import detectron2, fvcore, pycocotools; print('detectron2', detectron2.__version__)" || exit 1
    for norm in SyncBN BN; do
      /usr/bin/time -f "voc_det $norm %e s" mocobench transfer --task voc_det random --arch resnet50 \
        --data $D/voc-from-coco --out /tmp/d-$norm --overwrite --set device=cuda --set norm=$norm \
        --set train_sets=07 --set SOLVER.MAX_ITER=40 2>&1 | grep -iE "iter: 39|AP50|error" | tail -3
    done
    ;;
  cost)
    python3 benchmarks/mechanism_cost.py --device cuda --arch resnet50 --size 224 --batches 32,256 --steps 5 --name mechanism_cost_gpu 2>&1 | tail -13
    ;;
  features)  # the frozen-feature path on CUDA: NCCL knn/linear (1 process; torchrun), bf16 extraction, rates
    ck=/tmp/s-ddp/checkpoint_last.pth  # from `smoke`
    for amp in fp32 bf16; do
      /usr/bin/time -f "knn $amp %e s" mocobench transfer --task knn $ck --out /tmp/f-knn-$amp --overwrite \
        --set data=$D/cifar10-sub --set device=cuda --set workers=12 --set amp=$amp 2>&1 | grep -E "img|images/s|top1|knn " | tail -4
    done
    torchrun --nproc_per_node 1 -m mocobench.cli transfer --task linear $ck --out /tmp/f-lin --overwrite \
      --set data=$D/cifar10-sub --set device=cuda --set workers=12 --set epochs=2 2>&1 | grep -E "linear|images/s" | tail -4
    ;;
  seg)  # the paper's VOC setting (ResNet-50, crop 513, batch 16, stride 16): s/iteration in fp32 and bf16 (x1000 =
        # the time per 1k iterations; compute-bound: the crop size fixes the work), and the sharded eval under torchrun
    mocobench data synth /tmp/synth --what segmentation > /dev/null 2>&1
    for amp in fp32 bf16; do
      mocobench transfer --task voc_seg random --arch resnet50 --data /tmp/synth/segmentation --out /tmp/seg-$amp \
        --set device=cuda --set iterations=60 --set workers=8 --set log_every=20 --set amp=$amp 2>&1 | grep -E "it 60/|mIoU" | tail -2
    done
    torchrun --nproc_per_node 1 -m mocobench.cli transfer --task voc_seg random --arch resnet50 \
      --data /tmp/synth/segmentation --out /tmp/seg-ddp --set device=cuda --set iterations=20 --set workers=8 2>&1 | grep -E "it 20/|mIoU" | tail -2
    ;;
  amp)
    python3 benchmarks/amp_accuracy.py --data $D --runs /tmp/amp --device cuda --seeds 0,1 --workers 6 --name amp_accuracy_gpu 2>&1 | grep -v "it/s" | tail -8
    ;;
  esac
  cp benchmarks/results/*_gpu.* "$OUT"/ 2>/dev/null
done
exit 0
