#!/usr/bin/env bash
# The one call a session with a lent GPU (H100/H200) makes: a drawn session has 15 minutes of device
# time in all, the machine's start included, so everything below fits one command of about 9 minutes.
#
# How to run it (in a session whose device `status` says can_start_another):
#   1. here, after committing: bash benchmarks/gpu_prepare.sh   (fills .carry/, ignored by git)
#   2. device tool `run` with  carry: [".carry"]  timeout_s: 560  and the command
#      export CARRY=$PWD/.carry; cd .carry/repo && bash benchmarks/gpu_session.sh
#   3. Under the reply's files_at: log.txt (the machine, versions, commit and every step's output),
#      face_loader_speed_gpu.md/.json, train_speed_gpu.md/.json, and one RUN.tgz per run (its folder;
#      the checkpoint left out). Then give the machine back.
#
# What it runs, most important first, each step under its own time limit so the others still run and
# the logs come back (steps that no longer fit are skipped and say so):
#   1. benchmarks/face_loader_speed.py on Colab's 2 cores (taskset -c 0,1): the 2-worker face path,
#      the device loader (nvJPEG + batched augmentation), decode only, and face_resnet34's training
#      step at batch 128; the device's decode and augmentation against the CPU's.
#   2. `era-utils run hw2p2` at full length on all of Fashion-MNIST (30 epochs; never run in full):
#      the device loader on arrays, alone on the GPU.
#   3. `era-utils run hw2p2 --dataset faces` for 2 epochs on a generated face folder with pairs files
#      (tests/fake_data.py at 224x224): FaceLoader in the whole chain on nvJPEG, verification and both
#      Kaggle CSVs. A smoke run of the path, not a result.
#   4. `era-utils run s10` at full length on Fashion-MNIST, alone (as on 2026-12-04), then
#      benchmarks/train_speed.py (custom_resnet classic vs fast, airbench94) with what time is left.
start_s=$(date +%s)
CARRY=${CARRY:-$PWD/.carry}
(cd "$CARRY/.." && bash .carry/setup.sh) || exit 1
export PYTHONPATH=/tmp/site:$PWD NO_ALBUMENTATIONS_UPDATE=1 PYTHONUNBUFFERED=1 MPLBACKEND=Agg
set -o pipefail
OUT=${OUT:-/tmp/era_utils_gpu_out}
RUNS=/tmp/runs
DATA=$CARRY/fashion-mnist
BUDGET=540  # seconds of this call the steps may use; packing and the reply need the rest
mkdir -p "$OUT" "$RUNS"
exec > >(tee "$OUT/log.txt") 2>&1  # `wait` below names its jobs: this tee never ends before the script
step() { echo; echo "=== $* ($(( $(date +%s) - start_s )) s in)"; }
left() { echo $(( BUDGET - ($(date +%s) - start_s) )); }
limit() {  # WANT: WANT seconds, or what is left if less; 0 when under 30 s are left
  local l; l=$(left); if [ "$l" -lt 30 ]; then echo 0; elif [ "$l" -lt "$1" ]; then echo "$l"; else echo "$1"; fi
}

date -Is
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv
python3 -c 'import torch, torchvision, sys; print("python", sys.version.split()[0], "torch", torch.__version__,
  "torchvision", torchvision.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(),
  torch.cuda.get_device_name(0))'
echo "cpu cores: $(nproc); kit commit: $(git rev-parse --short HEAD 2>&1)"
# Every dependency first: a missing one should name itself here, not fail a step minutes in.
python3 -c 'import albumentations, pytorch_grad_cam, torch_lr_finder, torchinfo, airbench; print("dependencies import")' \
    || echo "WARNING: a dependency is missing (above): the steps that need it will fail"

pack() {  # RUN: its folder into $OUT/RUN.tgz, without the checkpoint (weights and optimizer state)
  rm -f "$RUNS/$1/checkpoint.pt"
  [ -d "$RUNS/$1" ] && tar czf "$OUT/$1.tgz" -C "$RUNS" "$1"
}

run_kit() {  # NAME LIMIT_S ARGS...: era-utils run ARGS into $RUNS/NAME, then packed
  local name=$1 seconds=$2; shift 2
  if [ "$seconds" = 0 ]; then echo "[$name] skipped: no time left"; return 1; fi
  timeout "$seconds" python3 -m era_utils run "$@" --device cuda --out "$RUNS/$name" --quiet 2>&1 | sed "s/^/[$name] /"
  local rc=$?
  echo "[$name] exit status $rc after $(( $(date +%s) - start_s )) s"
  pack "$name"
  return $rc
}

status=0
step "1. face loader: 2 CPU workers vs the device, against face_resnet34's step (2 cores, as Colab)"
timeout "$(limit 170)" taskset -c 0,1 python3 benchmarks/face_loader_speed.py --device cuda --cpus 0,1 \
    --images 4096 --identities 200 --epochs 3 --steps 20 \
    --note "lent GPU machine, the run pinned to 2 of its cores (taskset -c 0,1) as Colab's 2 vCPUs" \
    --out "$OUT/face_loader_speed_gpu.md" --json "$OUT/face_loader_speed_gpu.json" || status=1

step "2. hw2p2, full length on Fashion-MNIST, alone"
run_kit hw2p2_full_fmnist "$(limit 200)" hw2p2 --dataset fashion_mnist --data-dir "$DATA" || status=1

step "3. hw2p2 on generated face folders with pairs files (2 epochs: the FaceLoader path end to end)"
FACES=/tmp/faces
python3 - "$FACES" <<'PY' || status=1
import sys
sys.path.insert(0, "tests")
from fake_data import make_pairs, write_face_folders, write_pairs
faces = write_face_folders(sys.argv[1], n_identities=20, n_train=40, n_dev=5, n_test=40, size=(224, 224))
write_pairs(f"{sys.argv[1]}/dev_pairs.txt", make_pairs(faces, "dev", n=200))
write_pairs(f"{sys.argv[1]}/test_pairs.txt", [p[:2] for p in make_pairs(faces, "test", n=100, seed=1)], labelled=False)
print(f"face folders: {len(faces.train)} train, {len(faces.dev)} dev, {len(faces.test)} test images at 224x224")
PY
run_kit hw2p2_faces_smoke "$(limit 120)" hw2p2 --dataset faces --data-dir "$FACES" --dev-pairs "$FACES/dev_pairs.txt" \
    --test-pairs "$FACES/test_pairs.txt" --epochs 2 --log csv || status=1

step "4. s10, full length on Fashion-MNIST, alone; then the training-speed table"
run_kit s10_full_fmnist "$(limit 150)" s10 --dataset fashion_mnist --data-dir "$DATA" || status=1
seconds=$(limit 150)
if [ "$seconds" != 0 ]; then
  timeout "$seconds" python3 benchmarks/train_speed.py --device cuda --models custom_resnet --paths classic,fast \
      --train-size 50000 --test-size 10000 --warmup-epochs 1 --epochs 3 --classic-epochs 1 --num-workers 2 \
      --peer airbench --peer-runs 1 --count-syncs \
      --note "lent GPU machine (16 cores; the classic path uses 2 DataLoader workers, as on Colab)" \
      --out "$OUT/train_speed_gpu.md" --json "$OUT/train_speed_gpu.json" || status=1
else
  echo "train_speed skipped: no time left"
fi

echo "gpu_session.sh finished with status $status after $(( $(date +%s) - start_s )) s"
exit $status
