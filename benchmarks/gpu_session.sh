#!/usr/bin/env bash
# The one command a session with a lent GPU (H100/H200) runs to measure the kit's training speed.
#
# How to run it (from the project's root, in a session whose device `status` says can_start_another):
#   1. bash ../shared/gpu/prepare-carry.sh          # once, here: wheels (albumentations, airbench, ...)
#                                                   # and Fashion-MNIST into .carry/ (ignored by git)
#   2. device tool `run` with  command: bash benchmarks/gpu_session.sh
#                              carry:   [".carry"]   timeout_s: 600
#   3. The logs and tables come back under the reply's files_at: train_speed_gpu.md/.json (the table for
#      benchmarks/RESULTS.md), train_speed_log.txt, loader_speed_gpu.md, loader_speed_log.txt, gpu.txt.
#   4. Then a second call, the same way: bash benchmarks/gpu_accuracy.sh (the full S10 recipe on
#      Fashion-MNIST for results/, and the fast-vs-classic accuracy comparison).
#
# What it runs (about 6-8 minutes on an H100; each step has its own time limit so the logs always
# come back): benchmarks/train_speed.py for custom_resnet (S10) and resnet18 (S7), classic and fast
# paths, airbench94 as the peer, on 50,000 + 10,000 synthetic CIFAR-shaped images (1 warm-up epoch,
# then 3 timed epochs on the fast path and 1 on the classic path, which runs albumentations in 2
# DataLoader workers as on Colab and is the slow one); then benchmarks/loader_speed.py on 50,000 images.
bash .carry/setup.sh && export PYTHONPATH=/tmp/site:$PWD NO_ALBUMENTATIONS_UPDATE=1 PYTHONUNBUFFERED=1 || exit 1
set -o pipefail
OUT=${OUT:-/tmp/era_utils_gpu_out}
mkdir -p "$OUT"

{ date -Is; nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,power.limit --format=csv
  python3 -c 'import torch, sys; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda,
  "cudnn", torch.backends.cudnn.version(), torch.cuda.get_device_name(0))'
  python3 -c 'import airbench, albumentations; print("airbench ok, albumentations", albumentations.__version__)'
  nproc; } 2>&1 | tee "$OUT/gpu.txt"

status=0
timeout 450 python3 benchmarks/train_speed.py --device cuda --models custom_resnet,resnet18 --paths classic,fast \
    --train-size 50000 --test-size 10000 --warmup-epochs 1 --epochs 3 --classic-epochs 1 --num-workers 2 \
    --peer airbench --peer-runs 2 --count-syncs \
    --note "lent GPU machine (16 cores; the classic path still uses 2 DataLoader workers, as on Colab)" \
    --out "$OUT/train_speed_gpu.md" --json "$OUT/train_speed_gpu.json" 2>&1 | tee "$OUT/train_speed_log.txt" || status=$?

timeout 100 python3 benchmarks/loader_speed.py --device cuda --n 50000 --epochs 3 \
    --note "lent GPU machine, 2 DataLoader workers" \
    --out "$OUT/loader_speed_gpu.md" 2>&1 | tee "$OUT/loader_speed_log.txt" || status=$?

echo "gpu_session.sh finished with status $status at $(date -Is)"
exit $status
