#!/usr/bin/env bash
# The runs behind results/: every recipe on the full Fashion-MNIST (60k train / 10k test) on this
# repository's CPU-only development machine (2 cores), with epochs cut to fit a working session.
# bf16 autocast is asked for explicitly: this CPU has native bf16 (about 2.5x faster than fp32,
# benchmarks/train_step_speed_cpu.md). Each run's own command, device and wall time are in its
# metrics.json; results/README.md collects them.
set -euo pipefail
cd "$(dirname "$0")/.."
export NO_ALBUMENTATIONS_UPDATE=1 MPLBACKEND=Agg
run() { .venv/bin/era-utils run "$@" --dataset fashion_mnist --device cpu --amp bf16 --quiet; }
run s7_lite --epochs 6 --out results/s7_lite
run hw2p2 --epochs 3 --out results/hw2p2
run s10 --epochs 2 --out results/s10
run s7 --epochs 1 --out results/s7
