"""load_splits and make_loaders: the one place that picks the subset and the loader path."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from fake_data import write_cifar10

from era_utils.gpu_loader import GPULoader
from era_utils import loaders
from era_utils.loaders import load_splits, make_loaders
from era_utils.transforms import S10_AUGMENT, hw2p2_train_transform


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    root = write_cifar10(tmp_path_factory.mktemp("cifar"), n_train=50, n_test=20)
    return load_splits("cifar10", root=str(root))


def test_load_splits_subsets_are_stratified_and_test_follows(tmp_path):
    root = write_cifar10(tmp_path, n_train=50, n_test=20)
    train, test = load_splits("cifar10", root=str(root), subset=20, test_subset=10, seed=1)
    assert len(train) == 20 and len(test) == 10
    assert np.bincount(train.labels, minlength=10).tolist() == [2] * 10  # 2 per class
    full_train, full_test = load_splits("cifar10", root=str(root), subset=30)
    assert len(full_train) == 30 and len(full_test) == 20  # max(1000, 30 // 5) > 20 test images: all kept


def test_spec_gives_the_gpu_loader_and_callables_the_worker_path(cifar):
    train, test = cifar
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    tr, te = make_loaders(train, test, S10_AUGMENT, mean, std, 16, device="cpu", seed=0)
    assert isinstance(tr, GPULoader) and isinstance(te, GPULoader)
    assert te.spec.is_identity and len(tr) == 4  # 50 images / 16, last batch kept
    images, labels = next(iter(tr))
    assert images.shape == (16, 3, 32, 32) and labels.dtype == torch.int64

    tr, te = make_loaders(train, test, S10_AUGMENT, mean, std, 16, loader="albumentations", num_workers=0)
    assert isinstance(tr, torch.utils.data.DataLoader)
    images, _ = next(iter(te))
    assert images.shape == (16, 3, 32, 32)

    hw = hw2p2_train_transform(mean, std, size=None)
    tr, _ = make_loaders(train, test, hw, mean, std, 8, num_workers=0)
    assert isinstance(tr, torch.utils.data.DataLoader)
    assert next(iter(tr))[0].shape == (8, 3, 32, 32)


def test_drop_last_auto_is_on_for_cuda_only_with_a_full_batch(cifar, monkeypatch):
    train, test = cifar  # 50 training images
    mean, std = (0.5,) * 3, (0.25,) * 3
    tr, _ = make_loaders(train, test, S10_AUGMENT, mean, std, 16, device="cpu", drop_last=True)
    assert len(tr) == 3  # the short last batch of 2 is dropped
    kw = dict(loader="albumentations", num_workers=0)
    assert not make_loaders(train, test, S10_AUGMENT, mean, std, 16, device="cpu", **kw)[0].drop_last
    monkeypatch.setattr(loaders, "get_device", lambda device=None: torch.device("cuda"))
    assert make_loaders(train, test, S10_AUGMENT, mean, std, 16, **kw)[0].drop_last  # compiled on CUDA
    assert not make_loaders(train, test, S10_AUGMENT, mean, std, 64, **kw)[0].drop_last  # < 1 batch
    assert not make_loaders(train, test, S10_AUGMENT, mean, std, 16, drop_last=False, **kw)[0].drop_last


def test_bad_choices_are_named(cifar):
    train, test = cifar
    mean, std = (0.5,) * 3, (0.25,) * 3
    with pytest.raises(ValueError, match="loader must be one of"):
        make_loaders(train, test, S10_AUGMENT, mean, std, 8, loader="tpu")
    with pytest.raises(ValueError, match="CPU workers"):
        make_loaders(train, test, hw2p2_train_transform(mean, std, size=None), mean, std, 8, loader="gpu")
    with pytest.raises(TypeError, match="AugmentSpec or a callable"):
        make_loaders(train, test, "s10", mean, std, 8)
    with pytest.raises(ValueError, match="drop_last must be True, False or 'auto'"):
        make_loaders(train, test, S10_AUGMENT, mean, std, 8, drop_last="yes")
