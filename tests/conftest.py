"""Shared test set-up: headless matplotlib and quiet albumentations."""
import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import matplotlib  # noqa: E402

matplotlib.use("Agg")
