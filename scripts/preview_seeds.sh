#!/usr/bin/env bash
# The previews over seeds 1-5 (`--seeds 5`), as a student who changes the seed would see them: each recipe's
# preview in the precision this CPU picks (bf16 where it runs bf16 natively) and in fp32 (`--amp off`, the path
# of CPUs without native bf16), one run after the other. The runs go to runs/preview_seeds/RECIPE_PRECISION
# (not committed: figures of every seed); the comparison (mean, spread and range of each) to
# results/preview_seeds:
#   era-utils compare runs/preview_seeds/* --out results/preview_seeds
# RECIPES and PRECISIONS choose a part, e.g. RECIPES=s10 PRECISIONS="auto off" (the default).
# ISA=avx2 runs them with AVX-512 turned off in torch's kernels (ATEN_CPU_CAPABILITY=avx2, ONEDNN_MAX_CPU_ISA=AVX2):
# on a CPU that has AVX-512, a stand-in for one that has not (each run's device name says so); folders end in _avx2.
set -euo pipefail
cd "$(dirname "$0")/.."
export NO_ALBUMENTATIONS_UPDATE=1 MPLBACKEND=Agg
RUNS=${RUNS:-runs/preview_seeds}
capped=""
if [ -n "${ISA:-}" ]; then
  export ATEN_CPU_CAPABILITY=$ISA ONEDNN_MAX_CPU_ISA=${ISA^^}
  capped=_$ISA
fi
for recipe in ${RECIPES:-s10}; do
  for amp in ${PRECISIONS:-auto off}; do
    name=$recipe$([ "$amp" = off ] && echo _fp32 || true)$capped  # the table names the precision of each
    rm -rf "$RUNS/$name"
    args=(--preview --seeds 5 --out "$RUNS/$name" --quiet)
    [ "$amp" = off ] && args+=(--amp off)
    .venv/bin/era-utils run "$recipe" "${args[@]}"
    rm -f "$RUNS/$name"/seed_*/checkpoint.pt  # weights: not a result
  done
done
.venv/bin/era-utils compare "$RUNS"/* --out results/preview_seeds --title "Previews over seeds 1-5"
