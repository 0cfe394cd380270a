"""Root pytest set-up: notebooks run by `pytest --nbmake notebooks/` use the quick mode.

Each notebook's parameters cell switches to a small Fashion-MNIST subset, one epoch, on the CPU
when ERA_UTILS_QUICK=1; the kernels nbmake starts inherit this process's environment. An explicit
ERA_UTILS_QUICK=0 in the environment runs the notebooks' full recipes instead.
"""
import os

os.environ.setdefault("ERA_UTILS_QUICK", "1")
