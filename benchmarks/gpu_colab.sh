#!/usr/bin/env bash
# Issue 27's one call on a lent GPU (H100/H200): the Colab run measured. A student's Colab has 2 vCPUs and
# usually a T4, which trains in fp16 with a GradScaler; every step below runs pinned to 2 cores (taskset -c 0,1).
#
# How to run it (in a session whose device `status` says can_start_another):
#   1. here, after committing: NOTEBOOKS=1 bash benchmarks/gpu_prepare.sh   (fills .carry/, ignored by git;
#      NOTEBOOKS=1 adds the Jupyter kernel's wheels for step 3)
#   2. device tool `run` with  carry: [".carry"]  timeout_s: 560  and the command
#      export CARRY=$PWD/.carry; cd .carry/repo && bash benchmarks/gpu_colab.sh
#   3. Under the reply's files_at: log.txt, colab_run_gpu.md/.json, train_speed_modes_gpu.md/.json, the
#      executed notebook and one RUN.tgz per run (its folder, the checkpoint left out). Give the machine back.
#
# A CPU dry run of every step at tiny size (what CI-less checking can do without a GPU):
#   DRY_RUN=1 bash benchmarks/gpu_colab.sh      (writes under /tmp/era_utils_colab_dry)
#
# The steps, most important first, each under its own time limit (a step that no longer fits is skipped
# and says so):
#   1. The Colab run: `era-utils run s10` at full length on Fashion-MNIST in fp16 (T4's path: GradScaler,
#      skipped steps counted) and bf16, torch.compile on and off, one after the other; the table of where
#      each run's time went and what compiling cost and saved (benchmarks/colab_run.py).
#   2. S10's training speed with CUDA graphs (compile mode reduce-overhead) and max-autotune against the
#      default, fp16 against bf16, airbench94 beside them (benchmarks/train_speed.py).
#   3. The S10 notebook executed through a Jupyter kernel at full size on Fashion-MNIST (parameters injected).
#   4. S7-lite and HW2P2 at full length on Fashion-MNIST (never finished on a GPU), with the time left.
start_s=$(date +%s)
set -o pipefail
export NO_ALBUMENTATIONS_UPDATE=1 PYTHONUNBUFFERED=1 MPLBACKEND=Agg
if [ -n "${DRY_RUN:-}" ]; then  # this machine, CPU, tiny sizes: every step's command checked, nothing measured
  DEVICE=cpu; OUT=${OUT:-/tmp/era_utils_colab_dry}; DATA=${DATA:-/usr/share/datasets/fashion-mnist}
  AMPS="bf16 off"; SIZE=(--quick --epochs 2); BUDGET=${BUDGET:-900}; PY=${PY:-.venv/bin/python}
  SPEED=(--train-size 2048 --test-size 256 --warmup-epochs 1 --epochs 1 --models custom_resnet --paths fast)
  VARIANTS=("--amp bf16" "--amp bf16 --compile-mode reduce-overhead" "--amp off")  # fp16 needs CUDA
  NB_SIZE=quick
else
  CARRY=${CARRY:-$PWD/.carry}
  (cd "$CARRY/.." && bash .carry/setup.sh) || exit 1
  export PYTHONPATH=/tmp/site:$PWD
  DEVICE=cuda; OUT=${OUT:-/tmp/era_utils_gpu_out}; DATA=$CARRY/fashion-mnist
  AMPS="fp16 bf16"; SIZE=(); BUDGET=540; PY=python3  # seconds the steps may use: packing and the reply need the rest
  SPEED=(--train-size 50000 --test-size 10000 --warmup-epochs 1 --epochs 3 --models custom_resnet --paths fast
         --peer airbench --peer-runs 1)
  VARIANTS=("--amp bf16" "--amp bf16 --compile-mode reduce-overhead" "--amp fp16" "--amp bf16 --compile-mode max-autotune")
  NB_SIZE=full
fi
RUNS=$OUT/runs
# What an earlier call left in OUT (a dry run's default OUT outlives it; a warm machine's may too) goes first:
# its runs' checkpoints would make the kit refuse to run into their folders, its speed table would grow.
rm -rf "$RUNS" "$OUT"/train_speed_modes_gpu*
mkdir -p "$OUT" "$RUNS"
exec > >(tee "$OUT/log.txt") 2>&1
step() { echo; echo "=== $* ($(( $(date +%s) - start_s )) s in)"; }
left() { echo $(( BUDGET - ($(date +%s) - start_s) )); }
limit() {  # WANT: WANT seconds, or what is left if less; 0 when under 30 s are left
  local l; l=$(left); if [ "$l" -lt 30 ]; then echo 0; elif [ "$l" -lt "$1" ]; then echo "$l"; else echo "$1"; fi
}
pack() { rm -f "$RUNS/$1/checkpoint.pt"; [ -d "$RUNS/$1" ] && tar czf "$OUT/$1.tgz" -C "$RUNS" "$1"; }
colab() {  # NAME LIMIT_S ARGS...: era-utils run ARGS on Colab's 2 cores into $RUNS/NAME, then packed
  local name=$1 seconds=$2; shift 2
  if [ "$seconds" = 0 ]; then echo "[$name] skipped: no time left"; return 1; fi
  timeout "$seconds" taskset -c 0,1 $PY -m era_utils run "$@" --dataset fashion_mnist --data-dir "$DATA" \
      --device "$DEVICE" --out "$RUNS/$name" --quiet "${SIZE[@]}" 2>&1 | sed "s/^/[$name] /"
  local rc=$?
  echo "[$name] exit status $rc after $(( $(date +%s) - start_s )) s"
  pack "$name"
  return $rc
}

date -Is
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null || echo "no GPU: ${DRY_RUN:+dry run}"
$PY -c 'import torch, sys; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda",
  torch.version.cuda, torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu")'
echo "cpu cores: $(nproc), the runs pinned to 2 of them (taskset -c 0,1); kit commit: $(git rev-parse --short HEAD)"

status=0
step "1. the Colab run: s10 at full length, $AMPS, torch.compile on and off, on 2 cores"
names=()
for amp in $AMPS; do
  for compile in on off; do
    name=s10_${amp}_compile_$compile
    colab "$name" "$(limit 150)" s10 --amp "$amp" --compile "$compile" && names+=("$RUNS/$name") || status=1
  done
done
if [ ${#names[@]} -gt 0 ]; then
  $PY benchmarks/colab_run.py "${names[@]}" --out "$OUT/colab_run_gpu.md" --json "$OUT/colab_run_gpu.json" \
      --note "Each run pinned to 2 of the machine's cores (taskset -c 0,1), as Colab's 2 vCPUs; one run at a time." \
      || status=1
fi

step "2. s10's training speed: compile modes and precisions, airbench94 beside them"
for variant in "${VARIANTS[@]}"; do
  seconds=$(limit 90)
  if [ "$seconds" = 0 ]; then echo "train_speed $variant: skipped, no time left"; continue; fi
  # shellcheck disable=SC2086  # the variant is its options
  timeout "$seconds" taskset -c 0,1 $PY benchmarks/train_speed.py --device "$DEVICE" "${SPEED[@]}" $variant \
      --note "2 cores (taskset -c 0,1); $variant" --out "$OUT/train_speed_modes_gpu.md" --append \
      --json "$OUT/train_speed_modes_gpu$(echo "$variant" | tr -c 'a-z0-9' _).json" || status=1
done

step "3. the S10 notebook through a Jupyter kernel, $NB_SIZE size on Fashion-MNIST, 2 cores"
seconds=$(limit 150)
if [ "$seconds" = 0 ]; then
  echo "notebook skipped: no time left"
elif $PY -c "import nbclient, ipykernel" 2>/dev/null; then
  timeout "$seconds" taskset -c 0,1 $PY scripts/build_notebooks.py s10_custom_resnet_one_cycle --execute \
      --size "$NB_SIZE" --param DATASET='"fashion_mnist"' --param DATA_DIR="\"$DATA\"" --param DEVICE="\"$DEVICE\"" \
      --param OUT="\"$RUNS/s10_notebook\"" --into "$OUT" || status=1
else
  echo "notebook skipped: nbclient/ipykernel not installed (NOTEBOOKS=1 bash benchmarks/gpu_prepare.sh carries them)"
fi

step "4. s7_lite and hw2p2 at full length on Fashion-MNIST, 2 cores, with the time left"
colab s7_lite_full "$(limit 200)" s7_lite || status=1
colab hw2p2_full "$(limit 200)" hw2p2 || status=1

echo "gpu_colab.sh finished with status $status after $(( $(date +%s) - start_s )) s"
exit $status
