#!/usr/bin/env bash
# The one call a session with a lent GPU (H100/H200) makes: a drawn session has 15 minutes of device
# time in all, the machine's start included, so everything below fits one command of about 9 minutes.
#
# How to run it (in a session whose device `status` says can_start_another):
#   1. here, from the project's root, after committing: bash ../shared/gpu/prepare-carry.sh
#      (wheels and Fashion-MNIST into .carry/, ignored by git), then
#      rm -rf .carry/repo && git clone -q --depth 1 "file://$PWD" .carry/repo
#      (the committed kit with its git history, so each report names the commit that made it)
#   2. device tool `run` with  carry: [".carry"]  timeout_s: 570  and the command
#      export CARRY=$PWD/.carry; cd .carry/repo && bash benchmarks/gpu_session.sh
#   3. Under the reply's files_at: gpu.txt (machine, versions, commit), log.txt (every step's
#      output), runs.tgz (each run's folder, checkpoints left out), train_speed_gpu.md/.json.
#
# What it runs, each step under its own time limit so the others still run and the logs come back:
#   1. `era-utils run s10` at full length (24 epochs, LR range test) on all of Fashion-MNIST (60,000 /
#      10,000 images), alone on the GPU: the speed headline (results/s10_full_fmnist).
#   2. benchmarks/train_speed.py, custom_resnet (S10): classic path (albumentations, 2 DataLoader
#      workers as on Colab, fp32) vs fast path (GPULoader, compile, bf16), airbench94 as the peer,
#      50,000 synthetic CIFAR-shaped images.
#   3. Together on the one GPU (their times are shared, not their own): the full-length s7, s7_lite
#      and hw2p2 on Fashion-MNIST, and `torchrun --nproc-per-node 1 -m era_utils run s10 --preview`
#      (the process-group path with NCCL: one GPU cannot hold two NCCL ranks).
bash_start=$(date +%s)
CARRY=${CARRY:-$PWD/.carry}
(cd "$CARRY/.." && bash .carry/setup.sh) || exit 1
export PYTHONPATH=/tmp/site:$PWD NO_ALBUMENTATIONS_UPDATE=1 PYTHONUNBUFFERED=1 MPLBACKEND=Agg
set -o pipefail
OUT=${OUT:-/tmp/era_utils_gpu_out}
RUNS=/tmp/runs
DATA=$CARRY/fashion-mnist
mkdir -p "$OUT" "$RUNS"
exec > >(tee "$OUT/log.txt") 2>&1
step() { echo; echo "=== $* ($(( $(date +%s) - bash_start )) s in)"; }

{ date -Is; nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv
  python3 -c 'import torch, sys; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda,
  "cudnn", torch.backends.cudnn.version(), torch.cuda.get_device_name(0))'
  echo "cpu cores: $(nproc)"; echo "kit commit: $(git rev-parse --short HEAD 2>&1)"; } 2>&1 | tee "$OUT/gpu.txt"

full_run() {  # RECIPE LIMIT_S: the recipe at full length on all of Fashion-MNIST
  timeout "$2" python3 -m era_utils run "$1" --dataset fashion_mnist --data-dir "$DATA" --device cuda \
      --out "$RUNS/$1_full_fmnist" --quiet 2>&1 | sed "s/^/[$1] /"
  local rc=$?; echo "[$1] exit status $rc"; return $rc
}

status=0
step "1. s10, full length, alone"
full_run s10 150 || status=1

step "2. training speed: custom_resnet classic vs fast, airbench94"
timeout 130 python3 benchmarks/train_speed.py --device cuda --models custom_resnet --paths classic,fast \
    --train-size 50000 --test-size 10000 --warmup-epochs 1 --epochs 3 --classic-epochs 1 --num-workers 2 \
    --peer airbench --peer-runs 1 --count-syncs \
    --note "lent GPU machine (16 cores; the classic path uses 2 DataLoader workers, as on Colab)" \
    --out "$OUT/train_speed_gpu.md" --json "$OUT/train_speed_gpu.json" || status=1

step "3. s7, s7_lite, hw2p2 at full length and the NCCL process-group run, together"
full_run s7 225 & full_run s7_lite 225 & full_run hw2p2 225 &
timeout 120 python3 -m torch.distributed.run --standalone --nproc-per-node 1 -m era_utils run s10 --preview \
    --dataset fashion_mnist --data-dir "$DATA" --device cuda --out "$RUNS/s10_preview_torchrun" --quiet 2>&1 \
    | sed "s/^/[torchrun] /"
echo "[torchrun] exit status $?"
wait

step "packing"
find "$RUNS" -name checkpoint.pt -delete  # weights and optimizer state: not a result
tar czf "$OUT/runs.tgz" -C "$RUNS" .
ls -R "$RUNS" | head -80
echo "gpu_session.sh finished with status $status after $(( $(date +%s) - bash_start )) s"
exit $status
