#!/usr/bin/env bash
# The preview sizes a recipe did not take, over seeds 1-5 (`--seeds 5`), so results/README's sizing table shows
# each choice's spread rather than one seed's run: each alternative is the recipe's preview with one thing
# changed, in the precision this CPU picks, one run after the other. The chosen previews themselves are
# scripts/preview_seeds.sh's. Runs go to runs/sizing_seeds/NAME (not committed), the comparison to
# results/sizing_seeds. NAMES chooses a part, e.g. NAMES="s10_batch128 hw2p2_lr0.02".
set -euo pipefail
cd "$(dirname "$0")/.."
export NO_ALBUMENTATIONS_UPDATE=1 MPLBACKEND=Agg
RUNS=${RUNS:-runs/sizing_seeds}
declare -A ALTERNATIVES=(  # name: recipe and what differs from its preview
  [s10_batch128]="s10 --batch-size 128"      # the preview's batch 64 doubled: half the optimizer steps
  [s10_steepest]="s10 --lr-rule steepest"    # max LR at the range test's steepest descent, not a tenth of its minimum
  [hw2p2_lr0.02]="hw2p2 --lr 0.02"           # four times the preview's LR 0.005
  [hw2p2_lr0.1]="hw2p2 --lr 0.1"             # the full recipe's LR
  [hw2p2_12000x4]="hw2p2 --subset 12000 --epochs 4 --restart-epochs 4"  # more images, an epoch more, one cycle
  [s7_6000x4]="s7 --subset 6000"             # 6,000 training images instead of 10,000
  [s7_lite_16000x3]="s7_lite --epochs 3"     # 3 epochs instead of 4
  [s7_lite_8000x4]="s7_lite --subset 8000"   # 8,000 training images instead of 16,000
)
ORDER="s10_batch128 hw2p2_lr0.02 s7_6000x4 s7_lite_16000x3 hw2p2_lr0.1 s7_lite_8000x4 s10_steepest hw2p2_12000x4"
for name in ${NAMES:-$ORDER}; do
  [ -n "${ALTERNATIVES[$name]:-}" ] || { echo "sizing_seeds.sh: no alternative called $name (the names: $ORDER)" >&2; exit 2; }
  read -r recipe args <<< "${ALTERNATIVES[$name]}"
  rm -rf "${RUNS:?}/$name"
  # shellcheck disable=SC2086  # args are the alternative's options, split on purpose
  .venv/bin/era-utils run "$recipe" --preview --seeds 5 $args --out "$RUNS/$name" --quiet
  rm -f "$RUNS/$name"/seed_*/checkpoint.pt  # weights: not a result
done
.venv/bin/era-utils compare "$RUNS"/* --out results/sizing_seeds --title "Preview sizes not taken, over seeds 1-5"
