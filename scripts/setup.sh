#!/usr/bin/env bash
# Sets up a fresh machine for development: a venv in .venv with the kit (editable), its dev
# extras and the pinned torch/torchvision pair from constraints.txt, plus Debian's
# Fashion-MNIST. Safe to run again: it skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
export NO_ALBUMENTATIONS_UPDATE=1

if [ ! -d /usr/share/datasets/fashion-mnist ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist
  else
    echo "Fashion-MNIST missing: run 'sudo apt-get install dataset-fashion-mnist' (or pass --data-dir)." >&2
    exit 1
  fi
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -c constraints.txt -e ".[dev]"
# The pair must import together (the CPU torch some machines have on disk has no matching torchvision).
.venv/bin/python -c "import torch, torchvision, pytorch_grad_cam, albumentations, torch_lr_finder, torchinfo; print('torch', torch.__version__, '| torchvision', torchvision.__version__)"
