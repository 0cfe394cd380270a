#!/usr/bin/env bash
# The runs behind results/: every recipe on the full Fashion-MNIST (60k train / 10k test) on this
# repository's CPU-only development machine (2 cores). 1 to 4 epochs each: a full recipe is hours on
# this CPU (DESIGN.md), so these show the whole pipeline on real data, not the recipes' accuracy.
# Two lanes run side by side, one thread each (as fast as one 2-thread run, and simpler to share).
# bf16 autocast is asked for explicitly: this CPU has native bf16 (about 2x faster than fp32,
# benchmarks/train_step_speed_cpu.md). Each run's command, device and times are in its
# metrics.json; results/README.md collects them.
set -euo pipefail
cd "$(dirname "$0")/.."
export NO_ALBUMENTATIONS_UPDATE=1 MPLBACKEND=Agg OMP_NUM_THREADS=1
run() { .venv/bin/era-utils run "$@" --dataset fashion_mnist --device cpu --amp bf16 --quiet; }
(run s7_lite --epochs 2 --out results/s7_lite && run s7 --epochs 1 --out results/s7) &
lane1=$!
(run hw2p2 --epochs 4 --out results/hw2p2 && run s10 --epochs 1 --out results/s10) &
lane2=$!
wait $lane1 && wait $lane2
