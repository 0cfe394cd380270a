"""The values a run's named settings take, in one place and without importing torch: the command's options
offer these, and the steps, loaders and losses check against the same tuples."""

__all__ = ["AMP_MODES", "LOADERS", "LOSSES", "LR_RULES", "RUN_DATASETS", "TTA_MODES"]

RUN_DATASETS = ("cifar10", "fashion_mnist", "faces")  # "faces": HW2P2's Kaggle folders, train/ dev/ test/
LOADERS = ("auto", "gpu", "workers")  # gpu: batches augmented on the device; workers: per image on CPU workers
LOSSES = ("cross_entropy", "arcface", "cosface", "center")  # HW2P2's training losses (era_utils.face_losses)
AMP_MODES = ("auto", "bf16", "fp16", "off")  # mixed precision (era_utils.speed.resolve_amp)
TTA_MODES = ("none", "flip")  # test-time augmentation of verification embeddings (era_utils.analysis)
LR_RULES = ("steepest", "valley", "minimum")  # the LR range test's rules for the max LR (era_utils.lr_finder)
