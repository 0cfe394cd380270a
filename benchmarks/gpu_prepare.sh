#!/usr/bin/env bash
# Prepares .carry/ (ignored by git) for benchmarks/gpu_session.sh, here, after committing: the shared
# wheels and Fashion-MNIST (../shared/gpu/prepare-carry.sh), pydantic and its parts (albumentations
# 2.x needs them and the GPU machine's image lacks them: without them its per-image path failed there
# on 2026-12-04), and a shallow clone of the committed kit in .carry/repo, so each report written
# there names the commit that made it.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
bash ../shared/gpu/prepare-carry.sh
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .carry/whl pydantic==2.11.7 pydantic-core==2.33.2 annotated-types==0.7.0 typing-inspection==0.4.1
if [ -n "${NOTEBOOKS:-}" ]; then  # a Jupyter kernel for benchmarks/gpu_colab.sh's notebook step (the image has none)
  python3 -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      --platform any -d .carry/whl nbclient nbformat ipykernel jupytext
  # 10 MB the kernel runs without (IPython's completion, ipykernel's debugger import them only when there):
  # left out so that .carry stays under the 64 MiB a call carries
  rm -f .carry/whl/debugpy-*.whl .carry/whl/jedi-*.whl
fi
if [ -n "$(git status --porcelain -- era_utils benchmarks)" ]; then
  echo "warning: era_utils/ or benchmarks/ has uncommitted changes; .carry/repo holds the last commit only" >&2
fi
rm -rf .carry/repo
git clone -q --depth 1 "file://$PWD" .carry/repo
rm -rf .carry/repo/results .carry/repo/notebooks/*.ipynb  # not used there (notebooks are built from their .py)
echo ".carry/repo is commit $(git -C .carry/repo rev-parse --short HEAD); $(du -sh .carry | cut -f1) to carry."
