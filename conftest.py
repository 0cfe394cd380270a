"""Root pytest set-up: notebooks run by `pytest --nbmake notebooks/` are CI's quick smoke run.

Each notebook's parameters cell reads its SIZE from ERA_UTILS_SIZE ("quick": a few hundred
Fashion-MNIST images, one epoch, the CPU); the kernels nbmake starts inherit this process's
environment. An explicit ERA_UTILS_SIZE=preview (or full) in the environment runs that size instead.
"""
import os

os.environ.setdefault("ERA_UTILS_SIZE", "quick")
