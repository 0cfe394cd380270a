"""Shared test set-up: headless matplotlib, quiet albumentations, a one-thread fixture."""
import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import matplotlib  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

matplotlib.use("Agg")


@pytest.fixture
def one_thread():
    """Tiny tensors run fastest on one thread; on 2 shared cores extra OpenMP threads only contend.

    Use with `pytestmark = pytest.mark.usefixtures("one_thread")`.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
