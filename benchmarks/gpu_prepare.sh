#!/usr/bin/env bash
# Prepares .carry/ (ignored by git) for benchmarks/gpu_session.sh or gpu_colab.sh, here, after committing:
# what the lent GPU machine (Python 3.12 with its own torch, torchvision, matplotlib and opencv; no network)
# lacks: Python 3.12 wheels of the kit's other dependencies, pydantic and its parts (albumentations 2.x
# needs them: without them its per-image path failed there on 2026-12-04), Fashion-MNIST's four files,
# .carry/setup.sh that installs the wheels into /tmp/site there, and a shallow clone of the committed kit
# in .carry/repo, so each report written there names the commit that made it. NOTEBOOKS=1 adds a Jupyter
# kernel (gpu_colab.sh's notebook step). All of it must stay under the 64 MiB a call carries.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
grep -qx '/.carry/' .git/info/exclude 2>/dev/null || echo '/.carry/' >> .git/info/exclude
mkdir -p .carry/whl .carry/fashion-mnist
download=(python3 -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp
          --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64
          --platform manylinux2014_x86_64 -d .carry/whl)
"${download[@]}" --no-deps albumentations==2.0.8 albucore==0.0.24 simsimd stringzilla torch-lr-finder==0.2.2 \
    torchinfo==1.8.0 ttach pytorch-metric-learning \
    pydantic==2.11.7 pydantic-core==2.33.2 annotated-types==0.7.0 typing-inspection==0.4.1
python3 -m pip wheel -q --no-deps -w .carry/whl grad-cam==1.5.7 airbench==0.1.8  # source-only releases
if [ -n "${NOTEBOOKS:-}" ]; then
  "${download[@]}" --platform any nbclient nbformat ipykernel jupytext
  # 10 MB the kernel runs without (IPython's completion, ipykernel's debugger import them only when there)
  rm -f .carry/whl/debugpy-*.whl .carry/whl/jedi-*.whl
fi
if [ ! -d /usr/share/datasets/fashion-mnist ]; then apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; fi
cp /usr/share/datasets/fashion-mnist/*.gz .carry/fashion-mnist/
cat > .carry/setup.sh <<'SH'
# On the GPU machine: install the carried wheels into /tmp/site (nothing else is reachable there).
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .carry/whl/*.whl
SH
if [ -n "$(git status --porcelain -- era_utils benchmarks)" ]; then
  echo "warning: era_utils/ or benchmarks/ has uncommitted changes; .carry/repo holds the last commit only" >&2
fi
rm -rf .carry/repo
git clone -q --depth 1 "file://$PWD" .carry/repo
rm -rf .carry/repo/results .carry/repo/notebooks/*.ipynb  # not used there (notebooks are built from their .py)
echo ".carry/repo is commit $(git -C .carry/repo rev-parse --short HEAD); $(du -sh .carry | cut -f1) to carry."
