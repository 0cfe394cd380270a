#!/usr/bin/env bash
# Does the fast path change what the model learns, at full length on a GPU? (For a session with
# device time beyond benchmarks/gpu_session.sh's one call: about 6 minutes.)
#
# How to run it (same preparation as benchmarks/gpu_session.sh):
#   device tool `run` with  command: bash benchmarks/gpu_accuracy.sh
#                           carry:   [".carry"]   timeout_s: 600
# What comes back under the reply's files_at:
#   fast_path_accuracy_gpu.md/.json, fast_path_accuracy_log.txt
#                             the S10 recipe, fast path vs classic path, full Fashion-MNIST, 24 epochs,
#                             seeds 0 and 1, a fixed max LR (benchmarks/fast_path_accuracy.py); the
#                             report is rewritten after every run, so a time limit keeps what finished
#   gpu.txt
# Estimated: 2-3 min per seed (the classic path uses 12 DataLoader workers here to finish in time; its
# numbers do not depend on it).
bash .carry/setup.sh && export PYTHONPATH=/tmp/site:$PWD NO_ALBUMENTATIONS_UPDATE=1 PYTHONUNBUFFERED=1 || exit 1
set -o pipefail
OUT=${OUT:-/tmp/era_utils_gpu_out}
mkdir -p "$OUT"
DATA=.carry/fashion-mnist
{ date -Is; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; nproc; } 2>&1 | tee "$OUT/gpu.txt"

status=0
timeout 360 python3 benchmarks/fast_path_accuracy.py --device cuda --data-dir "$DATA" --epochs 24 \
    --seeds 0,1 --lr 1e-3 --classic-workers 12 --runs-dir /tmp/fast_path_accuracy \
    --note "lent GPU machine; the classic path's 12 workers only shorten the run" \
    --out "$OUT/fast_path_accuracy_gpu.md" --json "$OUT/fast_path_accuracy_gpu.json" \
    2>&1 | tee "$OUT/fast_path_accuracy_log.txt" || status=$?

echo "gpu_accuracy.sh finished with status $status at $(date -Is)"
exit $status
