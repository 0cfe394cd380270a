"""Bad inputs and faults a tester found (issue 13): each gets a clear message naming the input and the
fix, never a silent wrong result or a raw traceback; the command exits 2 and `--debug` shows the trace."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from era_utils import plan as plan_module
from era_utils.analysis import confusion_matrix
from era_utils.checkpoint import read_checkpoint, restore_checkpoint, save_checkpoint
from era_utils.cli import main
from era_utils.data import FASHION_MNIST_SYSTEM_DIR
from era_utils.engine import fit
from era_utils.speed import fast_path
from era_utils.gpu_loader import GPULoader
from era_utils.gradcam import gradcam
from era_utils.kaggle import write_verification_csv
from era_utils.models import create_model
from era_utils.plots import plot_samples
from era_utils.utils import get_device

pytestmark = pytest.mark.usefixtures("one_thread")


def _run(tmp_path, *extra: str) -> list[str]:
    return ["run", "s7_lite", "--quick", "--out", str(tmp_path / "out"), "--quiet", *extra]


def _error(capsys) -> str:
    err = capsys.readouterr().err
    assert "era-utils: error:" in err and "Traceback" not in err
    return err


# ----------------------------------------------------------------------------- the command


@pytest.mark.parametrize("value", ["0", "nan", "-0.1", "inf"])
def test_lr_that_cannot_train_is_refused_at_the_command_line(value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "s10", "--lr", value])
    assert exit_info.value.code == 2 and "--lr" in capsys.readouterr().err


def test_unknown_device_is_a_message(tmp_path, capsys):
    assert main(_run(tmp_path, "--device", "nonsense")) == 2
    assert "'nonsense' is not a device name torch knows: use cuda, cuda:N, mps or cpu" in _error(capsys)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_cuda_without_a_gpu_is_a_message(tmp_path, capsys):
    assert main(_run(tmp_path, "--device", "cuda")) == 2
    err = _error(capsys)
    assert "torch sees none here" in err and "--device cpu" in err
    with pytest.raises(ValueError, match="cuda:1"):
        get_device("cuda:1")


def test_out_that_is_a_file_or_under_one_is_a_message(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    assert main(["run", "s7_lite", "--quick", "--quiet", "--out", str(blocker)]) == 2
    assert f"output folder {blocker} is a file, not a folder" in _error(capsys)
    assert main(["run", "s7_lite", "--quick", "--quiet", "--out", str(blocker / "run")]) == 2
    assert f"lies under {blocker}, which is a file" in _error(capsys)
    assert blocker.read_text() == "not a folder"


def test_out_that_cannot_be_written_is_a_message(tmp_path, capsys, monkeypatch):
    def read_only(*args, **kwargs):  # what a read-only folder gives (root ignores chmod, so simulated)
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(plan_module.tempfile, "TemporaryFile", read_only)
    assert main(_run(tmp_path)) == 2
    err = _error(capsys)
    assert "cannot write in the output folder" in err and "(Permission denied)" in err


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(ValueError, match="not a device name"):
        main(_run(tmp_path, "--device", "nonsense", "--debug"))


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 half of a zip"], ids=["empty", "truncated"])
def test_empty_or_truncated_checkpoint_is_a_message(tmp_path, capsys, content):
    out = tmp_path / "out"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(content)
    assert main(_run(tmp_path, "--resume")) == 2
    err = _error(capsys)
    assert "checkpoint.pt" in err and ("empty" in err or "truncated" in err)
    assert "weights_only=False" not in err  # the fix for a cut-short file is not to trust it more


def test_a_checkpoint_of_another_model_is_a_message(tmp_path):
    path = save_checkpoint(tmp_path / "other.pt", create_model("s7_lite", num_classes=10, in_channels=1))
    with pytest.raises(ValueError, match="written for another model or recipe.*another folder"):
        restore_checkpoint(read_checkpoint(path), create_model("custom_resnet", num_classes=10, in_channels=1))


# ----------------------------------------------------------------------------- the library


def test_fit_refuses_an_optimizer_of_another_model():
    model, other = nn.Linear(4, 3), nn.Linear(4, 3)
    loader = DataLoader(TensorDataset(torch.randn(8, 4), torch.randint(0, 3, (8,))), batch_size=4)
    with pytest.raises(ValueError, match="holds none of this Linear's parameters"):
        fit(model, loader, None, torch.optim.SGD(other.parameters(), lr=0.1), 1, verbose=False,
            path=fast_path("cpu", amp="off"))


def test_a_one_shot_iterator_keeps_the_finished_epochs():
    model = nn.Linear(4, 3)
    batches = iter([(torch.randn(4, 4), torch.randint(0, 3, (4,))) for _ in range(2)])
    with pytest.warns(UserWarning, match="one-shot iterator.*1 of 3 epochs done"):
        history = fit(model, batches, None, torch.optim.SGD(model.parameters(), lr=0.1), 3,
                      verbose=False, path=fast_path("cpu", amp="off"))
    assert len(history.train_loss) == 1  # the epoch that ran is kept


def test_nan_only_in_the_test_loss_is_warned_about():
    model = nn.Linear(4, 3)
    train = [(torch.randn(4, 4), torch.randint(0, 3, (4,)))]
    test = [(torch.full((4, 4), float("nan")), torch.randint(0, 3, (4,)))]
    with pytest.warns(UserWarning, match="the test loss is nan while the training loss is"):
        fit(model, train, test, torch.optim.SGD(model.parameters(), lr=0.1), 1, verbose=False,
            path=fast_path("cpu", amp="off"))


@pytest.mark.parametrize("value", [2.7, 0, True, "10"])
def test_create_model_wants_a_whole_number_of_classes(value):
    with pytest.raises(ValueError, match="num_classes must be a whole number >= 1"):
        create_model("s7_lite", num_classes=value)


def test_gpu_loader_refuses_float_labels_and_nan_statistics():
    images = np.zeros((4, 8, 8, 1), np.uint8)
    with pytest.raises(ValueError, match=r"whole class indices, got torch.float64 values such as \[1.5\]"):
        GPULoader(images, np.array([0.0, 1.5, 2.0, 1.0]), 2, mean=(0.5,), std=(0.25,))
    with pytest.raises(ValueError, match="mean and std must be finite"):
        GPULoader(images, [0, 1, 2, 1], 2, mean=(math.nan,), std=(0.25,))


def _cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 10)).eval()


def test_gradcam_layer_outside_the_model_or_not_a_feature_map_is_a_message():
    model, images = _cnn(), torch.randn(2, 1, 8, 8)
    with pytest.raises(ValueError, match="is not part of this Sequential"):
        gradcam(model, images, target_layer=nn.Conv2d(1, 4, 3))
    with pytest.raises(ValueError, match=r"layer 4 gives a 2-d output \(1, 10\); GradCAM needs a convolutional"):
        gradcam(model, images, target_layer="4")  # the fc layer
    assert gradcam(model, images, target_layer="0").shape == (2, 8, 8)  # a conv layer works


def test_gradcam_of_nan_images_is_a_message():
    images = torch.randn(3, 1, 8, 8)
    images[1, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"images \[1\] hold NaN"):
        gradcam(_cnn(), images, target_layer="0")


def test_plot_samples_wants_a_label_per_image():
    with pytest.raises(ValueError, match="10 images to show but only 3 labels"):
        plot_samples(np.zeros((10, 8, 8, 3), np.uint8), labels=[0, 1, 2], classes=["a", "b", "c"])


def test_confusion_matrix_refuses_labels_outside_its_classes():
    with pytest.raises(ValueError, match=r"labels hold \[5\], outside 0..2"):
        confusion_matrix([0, 1, 2], [0, 1, 5], num_classes=3)


def test_verification_csv_refuses_nan_scores(tmp_path):
    with pytest.raises(ValueError, match="1 score\\(s\\) are NaN or infinite"):
        write_verification_csv(tmp_path / "v.csv", ["a b", "c d"], [0.5, float("nan")])
    assert not (tmp_path / "v.csv").exists()



# ----------------------------------------------------------------------------- data


def test_a_data_folder_that_is_missing_or_empty_is_named_not_replaced(tmp_path, capsys):
    missing, empty = tmp_path / "nowhere", tmp_path / "empty"
    empty.mkdir()
    assert main(_run(tmp_path, "--dataset", "fashion_mnist", "--data-dir", str(missing))) == 2
    assert f"the Fashion-MNIST data folder {missing} does not exist" in _error(capsys)
    assert main(_run(tmp_path, "--dataset", "fashion_mnist", "--data-dir", str(empty))) == 2
    looked = _error(capsys).split("Looked in:")[1].split("Get it")[0]
    assert str(empty) in looked and "/usr/share/datasets" not in looked  # Debian's copy is not used instead


def test_a_subset_larger_than_the_data_says_it_uses_all(tmp_path):
    from fake_data import write_fashion_mnist

    from era_utils.loaders import load_splits

    root = write_fashion_mnist(tmp_path, n_train=120, n_test=40)
    with pytest.warns(UserWarning, match="subset 500 is more than the 120 training images of fashion_mnist: "
                                         "using all 120"):
        train, _ = load_splits("fashion_mnist", root=str(root), subset=500, test_subset=40)
    assert len(train) == 120
    with pytest.warns(UserWarning, match="test subset 100 is more than the 40 test images"):
        load_splits("fashion_mnist", root=str(root), test_subset=100)


def test_a_one_image_test_set_writes_strict_json(tmp_path):
    import json

    from fake_data import write_fashion_mnist

    root = write_fashion_mnist(tmp_path / "fm", n_train=120, n_test=40)
    out = tmp_path / "out"
    assert main(["run", "s7_lite", "--quick", "--dataset", "fashion_mnist", "--data-dir", str(root),
                 "--subset", "120", "--test-subset", "1", "--batch-size", "16", "--out", str(out),
                 "--quiet"]) == 0
    for name in ("metrics.json", "history.json"):
        json.loads((out / name).read_text(), parse_constant=lambda c: pytest.fail(f"{c} in {name}"))


def test_face_folders_name_empty_identities_and_odd_sizes(tmp_path):
    from fake_data import write_face_folders
    from PIL import Image

    from era_utils.data import FaceFolder

    faces = write_face_folders(tmp_path, n_identities=3, size=(32, 32))
    (tmp_path / "train" / "id_999").mkdir()  # an unzip cut short
    with pytest.warns(UserWarning, match=r"1 identity folder\(s\) hold no images \(id_999\)"):
        FaceFolder(tmp_path, "train")
    odd = faces.train[1][0]
    Image.new("RGB", (40, 30)).save(odd)
    with pytest.warns(UserWarning):
        folder = FaceFolder(tmp_path, "train")
    with pytest.raises(ValueError, match=f"{odd.name} is 30x40 .* but the images before it are 32x32"):
        DataLoader(folder, batch_size=8).__iter__().__next__()


def test_pairs_files_outside_root_bom_latin1_and_empty(tmp_path):
    from era_utils.data import read_pairs

    root = tmp_path / "verification"
    root.mkdir()
    for name in ("a.jpg", "b.jpg"):
        (root / name).write_bytes(b"x")
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("a.jpg ../secret.jpg 1\n")
    with pytest.raises(ValueError, match=r"line 1: '../secret.jpg' leads outside the pairs root"):
        read_pairs(pairs, root=root)
    pairs.write_text("/etc/passwd b.jpg 0\n")
    with pytest.raises(ValueError, match="'/etc/passwd' leads outside"):
        read_pairs(pairs, root=root)
    assert read_pairs(pairs, root=root, check_exists=False, outside_root=True)[0].a == Path("/etc/passwd")
    pairs.write_bytes("\ufeffa.jpg b.jpg 1\n".encode("utf-8"))  # a BOM, as Windows editors write
    assert read_pairs(pairs, root=root)[0].a == root / "a.jpg"
    pairs.write_bytes("a.jpg caf\xe9.jpg 1\n".encode("latin-1"))
    with pytest.raises(ValueError, match="is not UTF-8 text .*iconv"):
        read_pairs(pairs, root=root)
    pairs.write_text("# no pairs yet\n\n")
    with pytest.raises(ValueError, match="holds no pairs"):
        read_pairs(pairs, root=root)


@pytest.mark.skipif(not FASHION_MNIST_SYSTEM_DIR.exists(), reason="Fashion-MNIST not installed")
def test_a_model_without_mistakes_finishes_its_run(tmp_path, monkeypatch):
    import json

    from era_utils.analysis import Predictions

    monkeypatch.setattr(Predictions, "misclassified", lambda self, *args, **kwargs: [])  # a perfect model
    out = tmp_path / "out"
    assert main(["run", "s7_lite", "--quick", "--out", str(out), "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["misclassified_shown"] == 0 and (out / "misclassified.png").is_file()
    assert not (out / "gradcam.png").exists() and (out / "report.md").is_file()
