"""The values a run's named settings take, in one place and without importing torch: the command's options
offer these, and the steps, loaders and losses check against the same tuples."""

__all__ = ["LOADERS", "LOSSES", "RUN_DATASETS"]

RUN_DATASETS = ("cifar10", "fashion_mnist", "faces")  # "faces": HW2P2's Kaggle folders, train/ dev/ test/
LOADERS = ("auto", "gpu", "workers")  # gpu: batches augmented on the device; workers: per image on CPU workers
LOSSES = ("cross_entropy", "arcface", "cosface", "center")  # HW2P2's training losses (era_utils.face_losses)
