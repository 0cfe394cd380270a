"""load_splits and make_loaders: the one place that picks the subset and the loader path; augment_examples
and inputs_at: a loader's augmentation shown, and its inputs fetched back by position."""
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

    tr, te = make_loaders(train, test, S10_AUGMENT, mean, std, 16, loader="workers", num_workers=0)
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
    kw = dict(loader="workers", num_workers=0)
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


def test_the_old_loader_name_is_refused_with_the_choices(cifar):
    train, test = cifar
    with pytest.raises(ValueError, match="'auto', 'gpu', 'workers'"):
        make_loaders(train, test, S10_AUGMENT, (0.5,) * 3, (0.25,) * 3, 8, loader="albumentations")


@pytest.mark.parametrize("path", ["gpu", "workers"])
def test_inputs_at_gives_back_what_the_test_loader_yielded(cifar, path):
    train, test = cifar
    mean, std = (0.5,) * 3, (0.25,) * 3
    _, te = make_loaders(train, test, S10_AUGMENT, mean, std, 8, loader=path, device="cpu", num_workers=0)
    assert loaders.can_fetch_inputs(te)
    seen = torch.cat([x for x, _ in te])  # (N, C, H, W) in the loader's order
    index = [0, 7, 8, 19]
    assert torch.allclose(loaders.inputs_at(te, index), seen[index], atol=1e-6)


def test_inputs_at_refuses_a_shuffled_or_augmenting_loader(cifar):
    train, test = cifar
    mean, std = (0.5,) * 3, (0.25,) * 3
    for path in ("gpu", "workers"):
        tr, _ = make_loaders(train, test, S10_AUGMENT, mean, std, 8, loader=path, device="cpu", num_workers=0)
        assert not loaders.can_fetch_inputs(tr)
        with pytest.raises(ValueError, match="shuffle"):
            loaders.inputs_at(tr, [0])
    with pytest.raises(TypeError, match="keep_inputs"):
        loaders.inputs_at([(torch.zeros(1, 3, 2, 2), torch.zeros(1))], [0])


def test_augment_examples_runs_each_paths_own_augmentation(cifar):
    train, test = cifar
    mean, std = (0.5,) * 3, (0.25,) * 3
    for path in ("gpu", "workers"):
        tr, _ = make_loaders(train, test, S10_AUGMENT, mean, std, 8, loader=path, device="cpu", num_workers=0)
        out = loaders.augment_examples(tr, train.images, n=4, rows=3)
        assert out.shape == (3, 4, 3, 32, 32) and out.dtype == torch.float32
        assert not torch.equal(out[0], out[1])  # each row a fresh draw
    hw = hw2p2_train_transform(mean, std, size=None)
    tr, _ = make_loaders(train, test, hw, mean, std, 8, num_workers=0)
    assert loaders.augment_examples(tr, train.images, n=2, rows=1).shape == (1, 2, 3, 32, 32)


def test_an_augmentation_preview_leaves_the_global_random_states_alone():
    """The notebook draws the preview before building the model, era-utils run after: both must build
    the same initial weights, so the preview (per-image transforms draw from the global RNGs) keeps them."""
    import random

    from era_utils.transforms import HW2P2_AUGMENT, hw2p2_train_transform

    images = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    transform = hw2p2_train_transform((0.5,) * 3, (0.25,) * 3, size=32, spec=HW2P2_AUGMENT)
    torch.manual_seed(4), np.random.seed(4), random.seed(4)
    expected = torch.rand(3), np.random.rand(), random.random()
    torch.manual_seed(4), np.random.seed(4), random.seed(4)
    shown = loaders.augment_examples(transform, images)
    assert shown.shape == (2, 5, 3, 32, 32) and not torch.equal(shown[0], shown[1])  # it did draw
    after = torch.rand(3), np.random.rand(), random.random()
    assert torch.equal(after[0], expected[0]) and after[1:] == expected[1:]
