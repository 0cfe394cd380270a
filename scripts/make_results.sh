#!/usr/bin/env bash
# The runs behind results/: every recipe's preview (`era-utils run RECIPE --preview`: the recipe on a
# Fashion-MNIST subset for a few epochs, sized for a 2-core CPU), one after the other so each has the
# machine to itself and its time is its own. Each folder gets its figures, history.json,
# metrics.json (strict JSON) and report.md (the assignment's checklist); the checkpoint is not a
# result and is removed. Then the table for README.md and results/README.md:
#   python scripts/results_table.py results
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
.venv/bin/python scripts/results_table.py results
