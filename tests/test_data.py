"""Tests for era_utils.data: CIFAR-10 in its real pickled layout, Fashion-MNIST IDX (real Debian
files when installed), mean/std, face folders, pairs files, stratified subsets."""
from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from fake_data import (
    MARKER_PIXELS,
    cifar_like_images,
    make_pairs,
    write_cifar10,
    write_face_folders,
    write_fashion_mnist,
    write_idx,
    write_pairs,
)

from era_utils import data
from era_utils.data import (
    CIFAR10_CLASSES,
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    FaceFolder,
    ImageArrays,
    compute_mean_std,
    dataset_stats,
    load_cifar10,
    load_dataset,
    load_fashion_mnist,
    read_idx,
    read_pairs,
)

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
needs_debian = pytest.mark.skipif(
    not (DEBIAN_DIR / "train-images-idx3-ubyte.gz").is_file(),
    reason="real Fashion-MNIST absent: `apt-get install dataset-fashion-mnist` (CI installs it)",
)


# ----------------------------------------------------------------------------------------------
# CIFAR-10
# ----------------------------------------------------------------------------------------------

def test_fake_cifar_pickles_have_the_real_layout(tmp_path):
    write_cifar10(tmp_path, n_train=12, n_test=4)
    folder = tmp_path / "cifar-10-batches-py"
    with open(folder / "data_batch_1", "rb") as f:
        batch = pickle.load(f, encoding="bytes")  # the CIFAR website's way: bytes keys
    assert set(batch) == {b"data", b"labels", b"batch_label", b"filenames"}
    assert batch[b"data"].dtype == np.uint8 and batch[b"data"].shape[1] == 3072
    row = batch[b"data"][0]  # image 0: R plane, G plane, B plane, each 32x32 row-major
    assert (row[0], row[1024], row[2048]) == MARKER_PIXELS[(0, 0)]
    assert (row[1], row[1024 + 1], row[2048 + 1]) == MARKER_PIXELS[(0, 1)]
    assert (row[32], row[1024 + 32], row[2048 + 32]) == MARKER_PIXELS[(1, 0)]
    with open(folder / "batches.meta", "rb") as f:
        meta = pickle.load(f, encoding="latin1")  # torchvision's way: str keys
    assert meta["label_names"] == CIFAR10_CLASSES


def test_load_cifar10_shapes_dtype_and_rgb_order(tmp_path):
    train = cifar_like_images(23, seed=3)
    test = cifar_like_images(7, seed=4)
    train[0][5, 10, 20] = (201, 102, 3)  # a known pixel: row 10, col 20 of image 5
    write_cifar10(tmp_path, train=train, test=test)

    got = load_cifar10(tmp_path, train=True)
    assert got.images.shape == (23, 32, 32, 3) and got.images.dtype == np.uint8
    assert got.labels.dtype == np.int64 and got.classes == CIFAR10_CLASSES
    assert tuple(got.images[5, 10, 20]) == (201, 102, 3)
    np.testing.assert_array_equal(got.images, train[0])
    np.testing.assert_array_equal(got.labels, train[1])

    got_test = load_dataset("cifar10", root=tmp_path, train=False)
    np.testing.assert_array_equal(got_test.images, test[0])
    assert len(got_test) == 7


def test_default_fake_cifar_carries_marker_pixels(tmp_path):
    got = load_cifar10(write_cifar10(tmp_path, n_train=10, n_test=3), train=False)
    for (r, c), rgb in MARKER_PIXELS.items():
        assert tuple(got.images[0, r, c]) == rgb


def test_missing_cifar_folder_says_where_and_how(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_cifar10(tmp_path / "nowhere", download=False)
    msg = str(err.value)
    assert str((tmp_path / "nowhere" / "cifar-10-batches-py").resolve()) in msg
    assert "download=True" in msg


def test_corrupt_cifar_batch_names_the_file(tmp_path):
    write_cifar10(tmp_path, n_train=10, n_test=2)
    batch = tmp_path / "cifar-10-batches-py" / "test_batch"
    good = batch.read_bytes()
    batch.write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="cifar-10-batches-py/test_batch is not a readable CIFAR-10 batch"):
        load_cifar10(tmp_path, train=False)
    batch.write_bytes(good[: len(good) // 2])  # truncated: a download cut short
    with pytest.raises(ValueError, match="test_batch is not a readable CIFAR-10 batch.*download=True"):
        load_cifar10(tmp_path, train=False)
    batch.write_bytes(pickle.dumps({"data": [1, 2, 3], "labels": [0]}))  # a dict, but not of images
    with pytest.raises(ValueError, match="not uint8 rows of 3072 pixels"):
        load_cifar10(tmp_path, train=False)


@pytest.mark.parametrize("protocol", [2, 4])
def test_a_cifar_batch_re_pickled_by_python3_still_loads(tmp_path, protocol):
    write_cifar10(tmp_path, n_train=10, n_test=3)
    batch = tmp_path / "cifar-10-batches-py" / "test_batch"
    expected = load_cifar10(tmp_path, train=False)
    entry = {"batch_label": "testing batch 1 of 1", "labels": expected.labels.tolist(),
             "data": expected.images.transpose(0, 3, 1, 2).reshape(3, 3072), "filenames": ["a", "b", "c"]}
    batch.write_bytes(pickle.dumps(entry, protocol=protocol))  # protocol 2 writes numpy's bytes via codecs
    got = load_cifar10(tmp_path, train=False)
    assert np.array_equal(got.images, expected.images) and np.array_equal(got.labels, expected.labels)


class _Payload:
    """Unpickling this calls os.system: what a crafted 'CIFAR batch' would do to a user's machine."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_cifar_batch_runs_nothing(tmp_path):
    write_cifar10(tmp_path, n_train=10, n_test=2)
    marker = tmp_path / "pwned"
    crafted = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1], b"payload": _Payload(marker)}
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps(crafted, protocol=2))
    pickle.loads(pickle.dumps(crafted, protocol=2))  # the payload is real: plain pickle runs it
    assert marker.exists()
    marker.unlink()
    with pytest.raises(ValueError, match="asks for (posix|nt|os).system.*nothing in it was run"):
        load_cifar10(tmp_path, train=False)
    assert not marker.exists()
    (tmp_path / "cifar-10-batches-py" / "batches.meta").write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(ValueError, match="batches.meta"):
        load_cifar10(tmp_path, train=True)
    assert not marker.exists()


def test_load_dataset_rejects_unknown_names_and_bad_options(tmp_path):
    with pytest.raises(ValueError, match="cifar10.*fashion_mnist"):
        load_dataset("mnist")
    with pytest.raises(ValueError, match="channels"):
        load_dataset("cifar10", root=tmp_path, channels=1)
    with pytest.raises(ValueError, match="32x32"):
        load_dataset("cifar10", root=tmp_path, size=28)


# ----------------------------------------------------------------------------------------------
# IDX / Fashion-MNIST
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("gz", [True, False])
def test_idx_round_trip_and_fake_fashion_mnist(tmp_path, gz):
    write_fashion_mnist(tmp_path, n_train=30, n_test=10, gz=gz)
    arr = load_fashion_mnist(tmp_path, train=False)
    assert arr.images.shape == (10, 28, 28, 1) and arr.images.dtype == np.uint8
    np.testing.assert_array_equal(arr.labels, np.arange(10) % 10)
    x = np.arange(24, dtype=">i4").reshape(2, 3, 4)
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "x.idx", x)), x)


def test_truncated_idx_names_the_file(tmp_path):
    write_fashion_mnist(tmp_path, n_train=20, n_test=10, gz=False)
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])  # cut the last 100 pixels
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte.*truncated"):
        load_fashion_mnist(tmp_path, train=False)


def test_truncated_gzip_and_bad_magic_name_the_file(tmp_path):
    good = gzip.compress(bytes([0, 0, 8, 1, 0, 0, 0, 5, 1, 2, 3, 4, 5]))
    cut = tmp_path / "cut.gz"
    cut.write_bytes(good[:-6])
    with pytest.raises(ValueError, match="cut.gz.*gzip"):
        read_idx(cut)
    bad = tmp_path / "bad-magic"
    bad.write_bytes(b"\x12\x34\x08\x01" + bytes(8))
    with pytest.raises(ValueError, match="bad-magic.*magic number"):
        read_idx(bad)


def test_fashion_mnist_missing_lists_the_folders_looked_in(tmp_path, monkeypatch):
    system = tmp_path / "system"
    monkeypatch.setattr(data, "FASHION_MNIST_SYSTEM_DIR", system)
    with pytest.raises(FileNotFoundError) as err:
        load_fashion_mnist()  # no folder given: Debian's copy is where it looks
    assert str(system.resolve()) in str(err.value)
    assert "apt-get install dataset-fashion-mnist" in str(err.value) and "download=True" in str(err.value)
    (tmp_path / "mine").mkdir()  # a folder given: it alone is looked in, never Debian's copy instead
    with pytest.raises(FileNotFoundError) as err:
        load_fashion_mnist(tmp_path / "mine")
    msg = str(err.value)
    for folder in (tmp_path / "mine", tmp_path / "mine" / "FashionMNIST" / "raw"):
        assert str(folder.resolve()) in msg
    assert str(system.resolve()) not in msg.split("Get it")[0]


@pytest.fixture(scope="module")
def fmnist_train():
    return load_fashion_mnist(train=True)


@needs_debian
def test_real_fashion_mnist_splits(fmnist_train):
    test = load_fashion_mnist(train=False)
    assert fmnist_train.images.shape == (60000, 28, 28, 1) and test.images.shape == (10000, 28, 28, 1)
    assert fmnist_train.images.dtype == np.uint8
    assert fmnist_train.labels.min() == 0 and fmnist_train.labels.max() == 9
    assert np.bincount(fmnist_train.labels).tolist() == [6000] * 10
    assert np.bincount(test.labels).tolist() == [1000] * 10
    assert fmnist_train.classes[0] == "T-shirt/top"


@needs_debian
def test_real_fashion_mnist_padding_resize_and_channels(fmnist_train):
    padded = load_dataset("fashion_mnist", train=False, size=32)  # default: 2 px of zeros each side
    plain = load_fashion_mnist(train=False)
    assert padded.images.shape == (10000, 32, 32, 1)
    np.testing.assert_array_equal(padded.images[:, 2:30, 2:30], plain.images)
    border = padded.images.copy()
    border[:, 2:30, 2:30] = 0
    assert not border.any()
    rgb = load_dataset("fashion_mnist", train=False, size=32, channels=3)
    assert rgb.images.shape == (10000, 32, 32, 3)
    assert (rgb.images == rgb.images[..., :1]).all()
    resized = load_fashion_mnist(train=False, size=32, resize="resize")
    assert resized.images.shape == (10000, 32, 32, 1) and resized.images.dtype == np.uint8


@needs_debian
def test_fashion_mnist_constants_match_the_pixels(fmnist_train):
    mean, std = compute_mean_std(fmnist_train.images)
    assert np.round(mean, 4).tolist() == list(FASHION_MNIST_MEAN)
    assert np.round(std, 4).tolist() == list(FASHION_MNIST_STD)
    # The padded variant's stored stats are what its pixels give (zeros lower both).
    padded = np.pad(fmnist_train.images, ((0, 0), (2, 2), (2, 2), (0, 0)))
    mean32, std32 = compute_mean_std(padded)
    assert dataset_stats("fashion_mnist", size=32) == (tuple(np.round(mean32, 4)), tuple(np.round(std32, 4)))
    assert dataset_stats("fashion_mnist", size=28) == (FASHION_MNIST_MEAN, FASHION_MNIST_STD)


# ----------------------------------------------------------------------------------------------
# Mean / std
# ----------------------------------------------------------------------------------------------

def test_mean_std_matches_brute_force_across_chunks():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(37, 8, 8, 3), dtype=np.uint8)
    images[..., 2] //= 4  # channels with different statistics
    x = images.astype(np.float64) / 255
    want_mean, want_std = x.mean(axis=(0, 1, 2)), x.std(axis=(0, 1, 2))
    mean, std = compute_mean_std(images, max_chunk_bytes=5 * 8 * 8 * 3 * 8)  # chunks of 5 images
    np.testing.assert_allclose(mean, want_mean, rtol=1e-12)
    np.testing.assert_allclose(std, want_std, rtol=1e-12)
    # The same from an iterable of (image, label), as a Dataset yields, and from gray (N, H, W).
    it_mean, it_std = compute_mean_std((img, 0) for img in images)
    np.testing.assert_allclose(it_mean, want_mean, rtol=1e-12)
    np.testing.assert_allclose(it_std, want_std, rtol=1e-12)
    g_mean, g_std = compute_mean_std(images[..., 0])
    assert len(g_mean) == 1 and np.isclose(g_std[0], x[..., 0].std())


def test_mean_std_is_not_the_mean_of_per_image_stds():
    # Each image a flat grey: every per-image std is 0, yet the pixels of the set vary a lot.
    levels = np.array([0, 64, 128, 255], dtype=np.uint8)
    images = np.broadcast_to(levels[:, None, None, None], (4, 4, 4, 1)).copy()
    mean, std = compute_mean_std(images)
    per_image = (images.astype(np.float64) / 255).std(axis=(1, 2, 3)).mean()
    assert per_image == 0
    assert np.isclose(std[0], (levels / 255).std()) and std[0] > 0.3
    assert np.isclose(mean[0], (levels / 255).mean())


def test_dataset_stats():
    assert dataset_stats("cifar10") == (data.CIFAR10_MEAN, data.CIFAR10_STD)
    mean, std = dataset_stats("fashion-mnist", size=32, channels=3)
    assert len(mean) == 3 and mean[0] == mean[2] and mean[0] < FASHION_MNIST_MEAN[0]
    with pytest.raises(ValueError, match="valid names"):
        dataset_stats("imagenet")


# ----------------------------------------------------------------------------------------------
# Stratified subsets
# ----------------------------------------------------------------------------------------------

def test_subset_is_stratified_deterministic_and_bounded():
    labels = np.repeat(np.arange(4), [40, 30, 20, 10])
    arr = ImageArrays(np.arange(100, dtype=np.uint8).reshape(100, 1, 1, 1), labels, ["a", "b", "c", "d"])
    sub = arr.subset(50, seed=1)
    assert len(sub) == 50 and np.bincount(sub.labels).tolist() == [20, 15, 10, 5]
    idx = sub.images.ravel().astype(int)
    assert (np.diff(idx) > 0).all()  # original order kept
    np.testing.assert_array_equal(labels[idx], sub.labels)  # images and labels stay together
    np.testing.assert_array_equal(arr.subset(50, seed=1).images, sub.images)
    assert not np.array_equal(arr.subset(50, seed=2).images, sub.images)
    assert np.bincount(arr.subset(7).labels, minlength=4).sum() == 7
    with pytest.raises(ValueError, match="only 100 images"):
        arr.subset(101)


# ----------------------------------------------------------------------------------------------
# Face folders and pairs
# ----------------------------------------------------------------------------------------------

@pytest.fixture()
def faces(tmp_path):
    return write_face_folders(tmp_path / "faces", n_identities=3, n_train=2, n_dev=2, n_test=3)


def test_face_folder_train_dev_test(faces):
    train = FaceFolder(faces.root, "train")
    assert len(train) == 6 and train.classes == faces.identities
    image, label = train[3]
    assert image.dtype == np.uint8 and image.shape == (32, 32, 3) and label == 1
    assert train.targets == [lab for _, lab in faces.train]

    # dev labels follow train's identities even when dev lacks some of them
    for p, lab in faces.dev:
        if lab == 0:
            p.unlink()
    (faces.root / "dev" / faces.identities[0]).rmdir()
    dev = FaceFolder(faces.root, "dev")
    assert dev.classes == faces.identities and sorted(set(dev.targets)) == [1, 2]

    test = FaceFolder(faces.root, "test", transform=lambda img: img.mean())
    assert len(test) == 3 and test.targets == [-1, -1, -1]
    assert test.ids == ["000000.jpg", "000001.jpg", "000002.jpg"]
    assert isinstance(test[0][0], float)


def test_face_folder_errors(faces, tmp_path):
    with pytest.raises(FileNotFoundError, match="val"):
        FaceFolder(faces.root, "val")
    with pytest.raises(ValueError, match="expected 64x64"):
        FaceFolder(faces.root, "train", expected_size=(64, 64))[0]
    bad = faces.root / "train" / faces.identities[0] / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    train = FaceFolder(faces.root, "train")
    index = [p.name for p, _ in train.samples].index("broken.jpg")
    with pytest.raises(OSError, match="broken.jpg"):
        train[index]


def test_face_folder_torchvision_transform(faces):
    import torch
    from torchvision.transforms import v2

    tf = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])
    x, _ = FaceFolder(faces.root, "train", transform=tf)[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32


def test_read_pairs_good_file(faces):
    written = make_pairs(faces, "dev", n=6)
    path = write_pairs(faces.root / "verification_pairs_val.txt", written)
    pairs = read_pairs(path)
    assert [p.label for p in pairs] == [lab for _, _, lab in written]
    assert pairs[0].a == faces.root / written[0][0] and pairs[0].a.is_file()
    assert pairs[0].pair_id == f"{written[0][0]} {written[0][1]}"
    # Unlabelled (test) pairs, inferred from the first line; blank lines are skipped.
    unl = faces.root / "sub" / "verification_pairs_test.txt"
    write_pairs(unl, [(a, b) for a, b, _ in written], labelled=False)
    unl.write_text(unl.read_text() + "\n\n")
    got = read_pairs(unl, root=faces.root)
    assert len(got) == 6 and all(p.label is None for p in got)


def test_read_pairs_errors(faces, tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.txt"):
        read_pairs(tmp_path / "nothere.txt")
    a, b, _ = make_pairs(faces, "dev", n=1)[0]
    path = tmp_path / "pairs.txt"
    path.write_text(f"{a} {b} 1\n{a} {b}\n")
    with pytest.raises(ValueError, match=r"pairs.txt, line 2: 2 columns, expected 3"):
        read_pairs(path, root=faces.root)
    path.write_text(f"{a} {b} 1\n{a} {b} 2\n")
    with pytest.raises(ValueError, match=r"line 2: label '2' is not 0 or 1"):
        read_pairs(path, root=faces.root)
    path.write_text(f"{a} {b} 1\n{a} gone/x.jpg 0\n")
    with pytest.raises(FileNotFoundError, match=r"(?s)1 of 3 images are missing.*gone/x.jpg"):
        read_pairs(path, root=faces.root)
    assert len(read_pairs(path, root=faces.root, check_exists=False)) == 2
