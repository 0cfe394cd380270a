"""FaceLoader: HW2P2's face files read by workers, decoded and augmented in batches on the device (the CPU
here): its images against the per-image CPU pipeline, and its bookkeeping (order, shards, resume, labels,
files it cannot decode on the device, files that are broken)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from fake_data import DiesInEpoch, face_image, write_face_folders

from era_utils import distributed, face_augment
from era_utils.data import FaceFolder
from era_utils.checkpoint import Checkpointing
from era_utils.engine import fit
from era_utils.speed import fast_path
from era_utils.face_loader import FaceLoader, FileReader, jpeg_header, on_device
from era_utils.loaders import augment_examples, can_fetch_inputs, dataset_loader, inputs_at
from era_utils.schedules import make_optimizer, one_cycle
from era_utils.transforms import HW2P2_AUGMENT, hw2p2_test_transform, hw2p2_train_transform

SIZE = 32  # the fake faces' side: HW2P2's are 224, the code is the same
MEAN, STD = (0.5, 0.45, 0.4), (0.25, 0.25, 0.25)


@pytest.fixture
def faces(tmp_path):
    return write_face_folders(tmp_path / "faces", n_identities=3, n_train=7, n_dev=2, n_test=4, size=(SIZE, SIZE))


def loader_for(folder, batch_size=4, **kw) -> FaceLoader:
    kw = {"mean": MEAN, "std": STD, "size": SIZE, "device": "cpu", "num_workers": 0, **kw}
    return FaceLoader(folder, batch_size, **kw)


def cpu_pipeline(folder: FaceFolder, size: int = SIZE) -> torch.Tensor:
    """The workers path's test images, in order: PIL, torchvision's resize and normalise, image by image."""
    loader = dataset_loader(folder.with_transform(hw2p2_test_transform(MEAN, STD, size=size)), 64, shuffle=False,
                            num_workers=0)
    return torch.cat([x for x, _ in loader])


def test_evaluation_batches_equal_the_cpu_pipeline_in_order(faces):
    folder = FaceFolder(faces.root, "dev")
    loader = loader_for(folder, batch_size=4)
    batches = list(loader)
    assert [len(x) for x, _ in batches] == [4, 2] and len(loader) == 2
    images = torch.cat([x for x, _ in batches])
    labels = torch.cat([y for _, y in batches])
    torch.testing.assert_close(images, cpu_pipeline(folder), rtol=0, atol=1e-6)  # libjpeg-turbo both sides
    assert labels.tolist() == folder.targets and labels.dtype == torch.int64
    assert can_fetch_inputs(loader)
    torch.testing.assert_close(inputs_at(loader, [5, 0]), images[[5, 0]], rtol=0, atol=0)


def test_training_batches_are_the_decoded_files_augmented_with_the_loader_s_draws(faces):
    folder = FaceFolder(faces.root, "train")
    loader = loader_for(folder, batch_size=8, spec=HW2P2_AUGMENT, shuffle=True, seed=3)
    images, labels = next(iter(loader))
    # the same epoch again, by hand: the order, then one batch of draws, from one generator
    g = torch.Generator().manual_seed(3)
    order = torch.randperm(len(folder), generator=g)[:8]
    draws = face_augment.draw(HW2P2_AUGMENT, 8, SIZE, SIZE, g)
    decoded = torch.stack([torch.from_numpy(np.array(Image.open(folder.samples[i][0]).convert("RGB"))).permute(2, 0, 1)
                           for i in order.tolist()])
    torch.testing.assert_close(images, face_augment.apply(decoded, draws, HW2P2_AUGMENT, MEAN, STD), rtol=0, atol=0)
    assert labels.tolist() == [folder.targets[i] for i in order.tolist()]


def test_order_covers_every_file_each_epoch_and_workers_change_nothing(faces):
    folder = FaceFolder(faces.root, "train")  # 21 images

    def epochs(num_workers, seed=0, n=3):
        loader = loader_for(folder, batch_size=5, spec=HW2P2_AUGMENT, shuffle=True, seed=seed, num_workers=num_workers)
        return [[b for b in loader] for _ in range(n)]

    by_main, by_workers = epochs(0), epochs(2)
    orders = []
    for epoch_main, epoch_workers in zip(by_main, by_workers):
        for (x0, y0), (x2, y2) in zip(epoch_main, epoch_workers):
            assert torch.equal(x0, x2) and torch.equal(y0, y2)  # reading in workers draws nothing
        labels = torch.cat([y for _, y in epoch_main]).tolist()
        assert sorted(labels) == sorted(folder.targets)
        orders.append(labels)
    assert orders[0] != orders[1]  # a new order every epoch
    assert not torch.equal(by_main[0][0][0], epochs(0, seed=1, n=1)[0][0][0])  # the seed decides


def test_drop_last_and_shards_share_one_order(faces):
    folder = FaceFolder(faces.root, "train")  # 21 images, labels by identity: position = the file list
    whole = loader_for(folder, batch_size=4, shuffle=True, seed=5)
    ranks = [loader_for(folder, batch_size=2, spec=HW2P2_AUGMENT, shuffle=True, seed=5, shard=(r, 2)) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == 6  # 11 images each (one repeated), batches of 2
    g = torch.Generator().manual_seed(5)
    for _ in range(2):  # each epoch: the one-process order, dealt out to the ranks in turn
        order = torch.randperm(21, generator=g)
        for rank, loader in enumerate(ranks):
            labels = torch.cat([y for _, y in loader]).tolist()
            assert labels == [folder.targets[i] for i in distributed.shard(order, rank, 2).tolist()]
        next(iter(whole))  # keep the one-process loader's generator in step (its order only: no draws)
    assert len(loader_for(folder, batch_size=4, drop_last=True)) == 5
    assert [len(y) for _, y in loader_for(folder, batch_size=4, drop_last=True)] == [4] * 5
    with pytest.raises(ValueError, match="leaves no batch"):
        loader_for(folder, batch_size=32, drop_last=True)


def _run(tmp_path, name: str, init_seed: int, faces_root, dies_in_epoch: int | None = None, resume: bool = True):
    """Train a tiny model on the face loader for 4 epochs, built afresh as a new session would."""
    torch.manual_seed(init_seed)
    train = loader_for(FaceFolder(faces_root, "train"), batch_size=7, spec=HW2P2_AUGMENT, shuffle=True, seed=11)
    test = loader_for(FaceFolder(faces_root, "dev"), batch_size=6)
    if dies_in_epoch is not None:
        test = DiesInEpoch(test, dies_in_epoch)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * SIZE * SIZE, 16), nn.BatchNorm1d(16), nn.ReLU(),
                          nn.Dropout(0.2), nn.Linear(16, 3))
    opt = make_optimizer("sgd", model.parameters(), lr=0.05, nesterov=True, weight_decay=5e-4)
    sched = one_cycle(opt, max_lr=0.05, epochs=4, steps_per_epoch=len(train), peak_epoch=1)
    history = fit(model, train, test, opt, 4, scheduler=sched, verbose=False,
                  path=fast_path("cpu", amp="off"),
                  checkpoint=Checkpointing(tmp_path / name, resume=resume))
    return history, model


def test_a_killed_run_resumes_on_the_same_images(tmp_path, faces):
    straight, straight_model = _run(tmp_path, "a.pt", 0, faces.root, resume=False)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, "b.pt", 0, faces.root, dies_in_epoch=3)
    resumed, resumed_model = _run(tmp_path, "b.pt", 123, faces.root)
    for name in ("train_loss", "train_acc", "test_loss", "test_acc", "lrs"):
        assert getattr(resumed, name) == getattr(straight, name), name
    for a, b in zip(straight_model.state_dict().values(), resumed_model.state_dict().values()):
        assert torch.equal(a, b)


# ----------------------------------------------------------------------------- files the device cannot take


def test_jpeg_headers_are_read_from_the_markers(tmp_path):
    rgb = face_image(0, np.random.default_rng(0), (24, 40))
    cases = {"baseline": (dict(), 0xC0, 3), "progressive": (dict(progressive=True), 0xC2, 3)}
    for name, (kw, marker, components) in cases.items():
        path = tmp_path / f"{name}.jpg"
        Image.fromarray(rgb).save(path, quality=90, **kw)
        assert jpeg_header(path.read_bytes()) == (marker, 24, 40, components)
    Image.fromarray(rgb[..., 0]).save(tmp_path / "gray.jpg")
    assert jpeg_header((tmp_path / "gray.jpg").read_bytes())[3] == 1
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg")
    assert jpeg_header((tmp_path / "cmyk.jpg").read_bytes())[3] == 4
    Image.fromarray(rgb).save(tmp_path / "image.png")
    assert jpeg_header((tmp_path / "image.png").read_bytes()) is None
    assert jpeg_header(b"\xff\xd8 not really a jpeg") is None and jpeg_header(b"") is None
    whole = (tmp_path / "baseline.jpg").read_bytes()
    assert not on_device(whole, 24) and not on_device(whole, 40)  # 24x40: not square
    square = tmp_path / "square.jpg"
    Image.fromarray(rgb[:, :24]).save(square, quality=90)
    assert on_device(square.read_bytes(), 24) and not on_device(square.read_bytes()[:-200], 24)  # cut short


def test_pngs_gray_cmyk_progressive_and_odd_sizes_join_the_batch_decoded_on_the_cpu(faces):
    rng = np.random.default_rng(1)
    folder_path = faces.root / "dev" / faces.identities[0]
    Image.fromarray(face_image(0, rng, (SIZE, SIZE))).save(folder_path / "a_png.png")
    Image.fromarray(face_image(0, rng, (SIZE, SIZE))[..., 1]).save(folder_path / "b_gray.jpg")
    Image.fromarray(face_image(0, rng, (SIZE, SIZE))).convert("CMYK").save(folder_path / "c_cmyk.jpg")
    Image.fromarray(face_image(0, rng, (SIZE, SIZE))).save(folder_path / "d_progressive.jpg", progressive=True)
    Image.fromarray(face_image(0, rng, (48, 40))).save(folder_path / "e_big.jpg", quality=95)
    folder = FaceFolder(faces.root, "dev")
    odd = {"a_png.png", "b_gray.jpg", "c_cmyk.jpg", "d_progressive.jpg", "e_big.jpg"}
    files = FileReader([p for p, _ in folder.samples], SIZE)[list(range(len(folder)))]
    assert {folder.samples[i][0].name for i in files.decoded_rows} == odd  # decoded by the worker
    assert len(files.encoded_rows) == len(folder) - len(odd)  # the rest left to the device
    images = torch.cat([x for x, _ in loader_for(folder, batch_size=4)])
    torch.testing.assert_close(images, cpu_pipeline(folder), rtol=0, atol=1e-6)


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("damage", ["not a jpeg", "cut short", "scrambled"])
def test_a_broken_file_is_named(faces, damage, num_workers):
    folder_path = faces.root / "train" / faces.identities[1]
    good = faces.train[0][0].read_bytes()
    data = {"not a jpeg": b"\xff\xd8 not really a jpeg",
            "cut short": good[: len(good) // 2],
            "scrambled": good[:400] + bytes(np.random.default_rng(0).integers(0, 256, 600, dtype=np.uint8))
            + good[1000:]}[damage]
    (folder_path / "broken.jpg").write_bytes(data)
    loader = loader_for(FaceFolder(faces.root, "train"), batch_size=32, num_workers=num_workers)
    with pytest.raises(OSError, match="broken.jpg"):
        next(iter(loader))


def test_bad_arguments_say_what_is_expected(faces):
    folder = FaceFolder(faces.root, "dev")
    with pytest.raises(ValueError, match="at least one image"):
        loader_for([], batch_size=4)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        loader_for(folder, batch_size=0)
    with pytest.raises(TypeError, match="FaceAugmentSpec"):
        loader_for(folder, spec="flip")
    with pytest.raises(ValueError, match="num_workers"):
        loader_for(folder, num_workers=-1)
    with pytest.raises(ValueError, match="3 channel"):
        loader_for(folder, mean=(0.5,), std=(0.25,))
    with pytest.raises(IndexError, match=r"positions must be in \[0, 6\)"):
        loader_for(folder).inputs_at([6])


def test_augmentation_preview_and_paths_without_labels(faces):
    folder = FaceFolder(faces.root, "train")
    loader = loader_for(folder, spec=HW2P2_AUGMENT, shuffle=True, seed=0)
    raw = np.stack([np.array(Image.open(p).convert("RGB")) for p, _ in folder.samples[:3]])
    rows = augment_examples(loader, raw, n=3, rows=2)
    assert rows.shape == (2, 3, 3, SIZE, SIZE) and not torch.equal(rows[0], rows[1])
    bigger = np.repeat(np.repeat(raw, 2, axis=1), 2, axis=2)  # another size is resized first
    assert loader.augment(bigger).shape == (3, 3, SIZE, SIZE)
    paths = [p for p, _ in faces.test]
    images, labels = next(iter(loader_for(paths, batch_size=8)))
    assert images.shape == (4, 3, SIZE, SIZE) and labels.tolist() == [-1] * 4
    # the CPU pipeline's training transform draws from the same distributions (test_face_augment);
    # here only that both paths give the model inputs of one shape and scale
    cpu = hw2p2_train_transform(MEAN, STD, size=SIZE)(Image.open(paths[0]))
    assert cpu.shape == images[0].shape and abs(float(cpu.mean()) - float(images.mean())) < 1.5
