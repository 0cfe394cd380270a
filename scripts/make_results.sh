#!/usr/bin/env bash
# The runs behind results/: every recipe's preview (`era-utils run RECIPE --preview`: the recipe on a
# Fashion-MNIST subset for a few epochs, sized for a 2-core CPU), one after the other so each has the
# machine to itself and its time is its own. Each folder gets its figures, history.json,
# metrics.json (strict JSON) and report.md (the assignment's checklist); the checkpoint is not a
# result and is removed. Then the table for results/README.md (README.md's: --links-from .):
#   era-utils compare results/s7 results/s7_lite results/s10 results/hw2p2 results/s10_full_fmnist \
#     results/s7_full_fmnist --links-from results
set -euo pipefail
cd "$(dirname "$0")/.."
export NO_ALBUMENTATIONS_UPDATE=1 MPLBACKEND=Agg
for recipe in "${@:-s10 s7_lite s7 hw2p2}"; do
  for name in $recipe; do
    rm -rf "results/$name"
    .venv/bin/era-utils run "$name" --preview --out "results/$name" --quiet
    rm -f "results/$name/checkpoint.pt"  # weights and optimizer state: not a result (and ignored by git)
  done
done
.venv/bin/era-utils compare results/s7 results/s7_lite results/s10 results/hw2p2 results/s10_full_fmnist \
  results/s7_full_fmnist --links-from results
