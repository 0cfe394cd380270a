#!/usr/bin/env bash
# HW2P2's losses side by side at preview size: cross-entropy (the recipe's), ArcFace, CosFace and
# cross-entropy + center loss, each for 3 seeds (`--seeds 3`: 1, 2, 3) with flip-averaged verification
# embeddings (`--tta flip`; each run scores its pairs without the flip too), one run after the other so
# each has the machine to itself. The runs go to runs/hw2p2_losses/LOSS (not committed: 12 runs of
# figures); the comparison (table, ROC curves, test-accuracy curves) to results/hw2p2_losses:
#   era-utils compare runs/hw2p2_losses/* --out results/hw2p2_losses
set -euo pipefail
cd "$(dirname "$0")/.."
export NO_ALBUMENTATIONS_UPDATE=1 MPLBACKEND=Agg
RUNS=${RUNS:-runs/hw2p2_losses}
for loss in ${LOSSES:-cross_entropy arcface cosface center}; do
  rm -rf "$RUNS/$loss"
  .venv/bin/era-utils run hw2p2 --preview --loss "$loss" --tta flip --seeds 3 --out "$RUNS/$loss" --quiet
  rm -f "$RUNS/$loss"/seed_*/checkpoint.pt  # weights: not a result
done
