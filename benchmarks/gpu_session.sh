#!/usr/bin/env bash
# The one call a session with a lent GPU (H100/H200) makes: a drawn session has 15 minutes of device
# time in all, the machine's start included, so everything below fits one command of about 9 minutes.
#
# How to run it (in a session whose device `status` says can_start_another):
#   1. here, after committing: bash benchmarks/gpu_prepare.sh   (fills .carry/, ignored by git)
#   2. device tool `run` with  carry: [".carry"]  timeout_s: 570  and the command
#      export CARRY=$PWD/.carry; cd .carry/repo && bash benchmarks/gpu_session.sh
#   3. Under the reply's files_at: log.txt (the machine, versions, commit and every step's output),
#      train_speed_gpu.md/.json, and one RUN.tgz per run (its folder; the checkpoint left out).
#      Then give the machine back.
#
# What it runs, each step under its own time limit so the others still run and the logs come back:
#   1. `era-utils run s10` at full length (24 epochs, LR range test) on all of Fashion-MNIST (60,000 /
#      10,000 images), alone on the GPU: the speed headline (results/s10_full_fmnist).
#   2. benchmarks/train_speed.py, custom_resnet (S10): classic path (albumentations, 2 DataLoader
#      workers as on Colab, fp32) vs fast path (GPULoader, compile, bf16), airbench94 as the peer,
#      50,000 synthetic CIFAR-shaped images.
#   3. Together on the one GPU (so their times are shared, not their own): s7, s7_lite and hw2p2 at
#      full length on Fashion-MNIST, and `torchrun --nproc-per-node 1 -m era_utils run s10 --preview`
#      (the process-group path with NCCL: one GPU cannot hold two NCCL ranks).
# On 2026-12-04 (H200, commit 9fc843a) steps 1 and 3 took 83 s and about 150 s (s7; s7_lite's 40
# epochs needed more than 225 s beside the others); step 2 had not run for want of pydantic.
start_s=$(date +%s)
CARRY=${CARRY:-$PWD/.carry}
(cd "$CARRY/.." && bash .carry/setup.sh) || exit 1
export PYTHONPATH=/tmp/site:$PWD NO_ALBUMENTATIONS_UPDATE=1 PYTHONUNBUFFERED=1 MPLBACKEND=Agg
set -o pipefail
OUT=${OUT:-/tmp/era_utils_gpu_out}
RUNS=/tmp/runs
DATA=$CARRY/fashion-mnist
mkdir -p "$OUT" "$RUNS"
exec > >(tee "$OUT/log.txt") 2>&1  # `wait` below names its jobs: this tee never ends before the script
step() { echo; echo "=== $* ($(( $(date +%s) - start_s )) s in)"; }

date -Is
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv
python3 -c 'import torch, sys; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda",
  torch.version.cuda, "cudnn", torch.backends.cudnn.version(), torch.cuda.get_device_name(0))'
echo "cpu cores: $(nproc); kit commit: $(git rev-parse --short HEAD 2>&1)"
# Every dependency first: a missing one should name itself here, not fail a step minutes in.
python3 -c 'import albumentations, pytorch_grad_cam, torch_lr_finder, torchinfo, airbench; print("dependencies import")' \
    || echo "WARNING: a dependency is missing (above): the steps that need it will fail"

pack() {  # RUN: its folder into $OUT/RUN.tgz, without the checkpoint (weights and optimizer state)
  rm -f "$RUNS/$1/checkpoint.pt"
  [ -d "$RUNS/$1" ] && tar czf "$OUT/$1.tgz" -C "$RUNS" "$1"
}

full_run() {  # RECIPE LIMIT_S: the recipe at full length on all of Fashion-MNIST, then packed
  timeout "$2" python3 -m era_utils run "$1" --dataset fashion_mnist --data-dir "$DATA" --device cuda \
      --out "$RUNS/$1_full_fmnist" --quiet 2>&1 | sed "s/^/[$1] /"
  local rc=$?
  echo "[$1] exit status $rc after $(( $(date +%s) - start_s )) s"
  pack "$1_full_fmnist"
  return $rc
}

status=0
step "1. s10, full length, alone"
full_run s10 150 || status=1

step "2. training speed: custom_resnet classic vs fast, airbench94"
timeout 150 python3 benchmarks/train_speed.py --device cuda --models custom_resnet --paths classic,fast \
    --train-size 50000 --test-size 10000 --warmup-epochs 1 --epochs 3 --classic-epochs 1 --num-workers 2 \
    --peer airbench --peer-runs 1 --count-syncs \
    --note "lent GPU machine (16 cores; the classic path uses 2 DataLoader workers, as on Colab)" \
    --out "$OUT/train_speed_gpu.md" --json "$OUT/train_speed_gpu.json" || status=1

step "3. s7, s7_lite, hw2p2 at full length and the NCCL process-group run, together"
left=$(( 545 - ($(date +%s) - start_s) ))  # what is left of the call, less the packing
full_run s7 "$left" & s7=$!
full_run s7_lite "$left" & s7_lite=$!
full_run hw2p2 "$left" & hw2p2=$!
timeout 120 python3 -m torch.distributed.run --standalone --nproc-per-node 1 -m era_utils run s10 --preview \
    --dataset fashion_mnist --data-dir "$DATA" --device cuda --out "$RUNS/s10_preview_torchrun" --quiet 2>&1 \
    | sed "s/^/[torchrun] /"
rc=$?; echo "[torchrun] exit status $rc after $(( $(date +%s) - start_s )) s"; [ $rc = 0 ] || status=1
pack s10_preview_torchrun
for job in "$s7" "$s7_lite" "$hw2p2"; do wait "$job" || status=1; done

echo "gpu_session.sh finished with status $status after $(( $(date +%s) - start_s )) s"
exit $status
