#!/usr/bin/env bash
# The second command of a session with a lent GPU: real Fashion-MNIST training, for results/ and #8.
#
# How to run it (after benchmarks/gpu_session.sh, same preparation):
#   device tool `run` with  command: bash benchmarks/gpu_accuracy.sh
#                           carry:   [".carry"]   timeout_s: 600
# What comes back under the reply's files_at:
#   s10_gpu.tgz               `era-utils run s10` on full Fashion-MNIST, 24 epochs, with the LR range
#                             test: every figure, history.json, metrics.json (for results/s10_gpu)
#   fast_path_accuracy_gpu.md/.json, fast_path_accuracy_log.txt
#                             the S10 recipe, fast path vs classic path, full Fashion-MNIST, 24 epochs,
#                             seeds 0 and 1, a fixed max LR (benchmarks/fast_path_accuracy.py); the
#                             report is rewritten after every run, so a time limit keeps what finished
#   s10_log.txt, gpu.txt
# Estimated: 2 min for the recipe run (about 1 of them compiling), 2-3 min per seed of the comparison
# (the classic path uses 12 DataLoader workers here to finish in time; its numbers do not depend on it).
bash .carry/setup.sh && export PYTHONPATH=/tmp/site:$PWD NO_ALBUMENTATIONS_UPDATE=1 PYTHONUNBUFFERED=1 || exit 1
set -o pipefail
OUT=${OUT:-/tmp/era_utils_gpu_out}
mkdir -p "$OUT"
DATA=.carry/fashion-mnist
{ date -Is; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; nproc; } 2>&1 | tee "$OUT/gpu.txt"

status=0
timeout 200 python3 -m era_utils.cli run s10 --dataset fashion_mnist --data-dir "$DATA" --device cuda \
    --out /tmp/s10_gpu 2>&1 | tee "$OUT/s10_log.txt" || status=$?
rm -f /tmp/s10_gpu/checkpoint.pt  # 78 MB of weights and optimizer state: not a result
tar czf "$OUT/s10_gpu.tgz" -C /tmp s10_gpu

timeout 360 python3 benchmarks/fast_path_accuracy.py --device cuda --data-dir "$DATA" --epochs 24 \
    --seeds 0,1 --lr 1e-3 --classic-workers 12 --runs-dir /tmp/fast_path_accuracy \
    --note "lent GPU machine; the classic path's 12 workers only shorten the run" \
    --out "$OUT/fast_path_accuracy_gpu.md" --json "$OUT/fast_path_accuracy_gpu.json" \
    2>&1 | tee "$OUT/fast_path_accuracy_log.txt" || status=$?

echo "gpu_accuracy.sh finished with status $status at $(date -Is)"
exit $status
