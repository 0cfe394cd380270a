"""Images per second of HW2P2's two face loaders against the rate a ResNet-34 step consumes them, in one run.

    workers    today's CPU path: PIL decode + the recipe's torchvision augmentation per image in
               DataLoader workers (2, as on Colab), each batch then moved to the device
    device     era_utils.face_loader.FaceLoader: workers read the files' bytes only; the JPEGs are
               decoded in one call per batch on the device (nvJPEG on CUDA) and augmented there
    decode     the same, without the augmentation (decode, resize, normalise: evaluation's path)
    step       face_resnet34 (7,000 classes, HW2P2's) training steps at batch 128 on random inputs
               already on the device, in the recipe's precision: the rate the model consumes images

Data: a generated face folder of realistic JPEGs (smooth colour fields, a face-like oval, noise;
about 21 KB at 224x224, quality 95), `--images` of them over `--identities` folders. Also measured:
the CPU time per image of what the device path leaves to the workers (reading a file and looking at
its header), in this process; and on a GPU, how far its decode (nvJPEG) and augmentation are from the
CPU's for the same files and draws (the tests prove the CPU path equal to torchvision's). Prints a
markdown table and writes it with --out; --json writes the numbers, each row's `speedup_vs_workers`.

    python benchmarks/face_loader_speed.py --cpus 0,1 --out benchmarks/face_loader_speed_cpu.md \
        --json benchmarks/face_loader_speed_cpu.json
    python benchmarks/face_loader_speed.py --device cuda --cpus 0,1 --images 4096 --out OUT.md --json OUT.json
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from era_utils import face_augment  # noqa: E402
from era_utils.data import HW2P2_MEAN, HW2P2_STD, FaceFolder  # noqa: E402
from era_utils.face_loader import FaceLoader, FileReader, decode_jpegs  # noqa: E402
from era_utils.loaders import dataset_loader  # noqa: E402
from era_utils.models import create_model  # noqa: E402
from era_utils.recipes import get_recipe  # noqa: E402
from era_utils.speed import autocast, fast_path, grad_scaler, precision_name  # noqa: E402
from era_utils.transforms import HW2P2_AUGMENT, hw2p2_train_transform  # noqa: E402
from era_utils.utils import device_name, get_device  # noqa: E402

HW2P2_CLASSES = 7000


def write_faces(root: Path, images: int, identities: int, size: int, quality: int, seed: int = 0) -> float:
    """root/train/<identity>/*.jpg: `images` JPEGs like photographed faces; returns the mean file size (bytes)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    total = 0
    for k in range(images):
        identity = k % identities
        folder = root / "train" / f"id_{identity:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        background = _smooth(rng.uniform(40, 220, (5, 5, 3)), size)  # smooth colours, as out of focus
        cy, cx = 0.5 + rng.normal(0, 0.03), 0.5 + rng.normal(0, 0.03)
        oval = ((yy - cy) / 0.36) ** 2 + ((xx - cx) / 0.27) ** 2 < 1  # a face-sized oval of skin tone
        skin = np.array([200, 160, 130]) * rng.uniform(0.6, 1.1) * (0.85 + 0.15 * np.cos(6 * yy))[..., None]
        image = np.where(oval[..., None], skin, background)
        image = image + rng.normal(0, 6, image.shape)  # sensor noise: ~21 KB files, as HW2P2's
        path = folder / f"{k:06d}.jpg"
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(path, quality=quality)
        total += path.stat().st_size
    return total / images


def _smooth(grid: np.ndarray, size: int) -> np.ndarray:
    """(size, size, 3) float: `grid` (g, g, 3) upsampled bilinearly."""
    t = torch.as_tensor(grid, dtype=torch.float32).permute(2, 0, 1)[None]
    return torch.nn.functional.interpolate(t, size=(size, size), mode="bilinear", align_corners=True)[0].permute(
        1, 2, 0).numpy()


def sync(device: torch.device) -> None:
    """Wait for queued device work, so a timing covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def loader_rate(loader, device: torch.device, epochs: int, to_device: bool) -> tuple[list[float], int]:
    """(seconds per epoch, images per epoch) of iterating `loader`, each batch on `device`."""
    seconds, count = [], 0
    for _ in range(epochs):
        sync(device)
        start, count = time.perf_counter(), 0
        for images, labels in loader:
            if to_device:
                images = images.to(device, non_blocking=True)
                labels = labels.to(device, non_blocking=True)
            count += len(labels)
        sync(device)
        seconds.append(time.perf_counter() - start)
    return seconds, count


def step_rate(device: torch.device, batch: int, size: int, steps: int, compile_model: bool) -> tuple[float, str]:
    """(images per second, precision) of face_resnet34 training steps on random inputs on the device."""
    path = fast_path(device)
    amp_dtype = path.amp_dtype
    model = create_model("face_resnet34", num_classes=HW2P2_CLASSES).to(device)
    memory = torch.channels_last if path.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory)
    recipe = get_recipe("hw2p2")  # its optimizer (SGD, fused on CUDA) and loss (label smoothing)
    optimizer, _ = recipe.configure_optimizers(model, steps_per_epoch=steps + 2, fused=path.fused)
    scaler = grad_scaler(device.type, enabled=amp_dtype == torch.float16)
    criterion = recipe.criterion()
    images = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=memory)
    labels = torch.randint(0, HW2P2_CLASSES, (batch,), device=device)
    forward = torch.compile(model) if compile_model else model

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, amp_dtype):
            loss = criterion(forward(images), labels)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    for _ in range(2):  # warm-up: cuDNN's autotuner, compilation, allocator
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return batch * steps / (time.perf_counter() - start), precision_name(amp_dtype) + (
        ", torch.compile" if compile_model else ", eager") + (", channels_last" if path.channels_last else "")


def reader_cpu_ms(folder: FaceFolder, batch: int, size: int) -> float:
    """CPU milliseconds per image of the device path's worker job (read the file, look at its header,
    hand the batch over), measured in this process over every image."""
    reader = FileReader([p for p, _ in folder.samples], size)
    positions = list(range(len(folder)))
    start = time.process_time()
    for i in range(0, len(positions), batch):
        reader[positions[i:i + batch]]
    return (time.process_time() - start) * 1000 / len(positions)


def device_vs_cpu(folder: FaceFolder, device: torch.device, size: int, batch: int) -> dict | None:
    """How the device's decode and augmentation differ from the CPU's on one batch (None on the CPU):
    pixel levels of the decoded images, normalised values of the augmented ones (same draws)."""
    if device.type == "cpu":
        return None
    files = FileReader([p for p, _ in folder.samples], size)[list(range(min(batch, len(folder))))]
    if not files.encoded_rows:
        return None
    on_device = torch.stack(decode_jpegs(files.jpegs(), device)).cpu()
    on_cpu = torch.stack(decode_jpegs(files.jpegs(), torch.device("cpu")))
    levels = (on_device.int() - on_cpu.int()).abs()
    draws = face_augment.draw(HW2P2_AUGMENT, len(on_cpu), size, size, torch.Generator().manual_seed(0))
    augmented = face_augment.apply(on_cpu.to(device), draws.to(device), HW2P2_AUGMENT, HW2P2_MEAN, HW2P2_STD).cpu()
    reference = face_augment.apply(on_cpu, draws, HW2P2_AUGMENT, HW2P2_MEAN, HW2P2_STD)
    gap = (augmented - reference).abs()
    return {"images": len(on_cpu), "decode_max_levels": int(levels.max()),
            "decode_mean_levels": float(levels.float().mean()),
            "decode_share_differing": float((levels > 0).float().mean()),
            "augment_max_abs": float(gap.max()), "augment_share_differing": float((gap > 1e-4).float().mean())}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1600, help="JPEGs in the generated face folder")
    parser.add_argument("--identities", type=int, default=100, help="identity folders they are spread over")
    parser.add_argument("--size", type=int, default=224, help="image side in pixels (HW2P2: 224)")
    parser.add_argument("--quality", type=int, default=95, help="JPEG quality of the generated files")
    parser.add_argument("--batch-size", type=int, default=128, help="images per batch (HW2P2: 128)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per loader (the first includes start-up)")
    parser.add_argument("--num-workers", type=int, default=2, help="DataLoader workers (Colab has 2 vCPUs)")
    parser.add_argument("--steps", type=int, default=20, help="timed ResNet-34 steps (0: skip that row)")
    parser.add_argument("--compile", action="store_true", help="compile the ResNet-34 for its row")
    parser.add_argument("--cpus", default=None, help="run on these CPU cores only, e.g. 0,1 (as Colab's 2)")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: era_utils.get_device())")
    parser.add_argument("--data", type=Path, default=None, help="a face folder to use (default: generated)")
    parser.add_argument("--out", type=Path, default=None, help="also write the markdown report here")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    parser.add_argument("--note", default="", help="a line about the conditions (e.g. a shared machine)")
    args = parser.parse_args(argv)

    if args.cpus:  # the workers inherit it: the whole run has these cores, as a Colab runtime has 2
        os.sched_setaffinity(0, {int(c) for c in args.cpus.split(",")})
        torch.set_num_threads(len(os.sched_getaffinity(0)))
    device = get_device(args.device)
    tmp = None
    root = args.data
    bytes_per_image = None
    if root is None:
        tmp = tempfile.TemporaryDirectory(prefix="faces_")
        root = Path(tmp.name)
        bytes_per_image = write_faces(root, args.images, args.identities, args.size, args.quality)
    folder = FaceFolder(root, "train")
    n = len(folder)
    mean, std = HW2P2_MEAN, HW2P2_STD
    channels_last = fast_path(device).channels_last

    rows: list[dict] = []

    def add(name: str, detail: str, seconds: list[float], images: int) -> None:
        later = seconds[1:] or seconds
        rows.append({"path": name, "detail": detail, "epoch_1_images_per_second": images / seconds[0],
                     "images_per_second": images * len(later) / sum(later)})

    workers = dataset_loader(folder.with_transform(hw2p2_train_transform(mean, std, size=args.size)),
                             args.batch_size, shuffle=True, num_workers=args.num_workers, seed=0)
    add("workers", f"PIL + torchvision v2 per image, {args.num_workers} workers, batch to {device.type}",
        *loader_rate(workers, device, args.epochs, to_device=True))
    del workers  # stop its workers before the next row
    for name, spec in (("device", HW2P2_AUGMENT), ("decode", None)):
        loader = FaceLoader(folder, args.batch_size, spec=spec, mean=mean, std=std, size=args.size, device=device,
                            shuffle=True, seed=0, num_workers=args.num_workers, channels_last=channels_last)
        what = "decode + HW2P2 augmentation" if spec else "decode + normalise only"
        add(name, f"FaceLoader: {what} on {device.type}, {args.num_workers} workers reading files",
            *loader_rate(loader, device, args.epochs, to_device=False))
        del loader
    if args.steps:
        rate, precision = step_rate(device, args.batch_size, args.size, args.steps, args.compile)
        rows.append({"path": "step", "detail": f"face_resnet34 ({HW2P2_CLASSES} classes) training step, batch "
                     f"{args.batch_size}, {precision}", "images_per_second": rate})
    base = rows[0]["images_per_second"]
    for row in rows:
        row["speedup_vs_workers"] = row["images_per_second"] / base
    result = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": "python " + shlex.join([os.path.relpath(sys.argv[0]), *(sys.argv[1:] if argv is None else argv)]),
        "device": device_name(device),
        "cpu": platform.processor() or platform.machine(),
        "cores": len(os.sched_getaffinity(0)),
        "torch": torch.__version__,
        "commit": _commit(),
        "images": n,
        "image_size": args.size,
        "bytes_per_image": bytes_per_image,
        "batch_size": args.batch_size,
        "epochs": args.epochs,
        "reader_cpu_ms_per_image": reader_cpu_ms(folder, args.batch_size, args.size),
        "device_vs_cpu": device_vs_cpu(folder, device, args.size, args.batch_size),
        "note": args.note,
        "rows": rows,
    }
    report = render(result)
    print(report)
    if args.out is not None:
        args.out.write_text(report)
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if tmp is not None:
        tmp.cleanup()
    return result


def _commit() -> str:
    """The kit's commit, marked when the kit or this script differ from it."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=Path(__file__).parent,
                              check=True).stdout.strip()
    try:
        dirty = git("status", "--porcelain", "--", "../era_utils", Path(__file__).name)
        return git("rev-parse", "--short", "HEAD") + (" with uncommitted changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def render(result: dict) -> str:
    """The markdown report: conditions first, then one row per path."""
    size = f", {result['bytes_per_image'] / 1000:.1f} KB each" if result["bytes_per_image"] else ""
    lines = [
        "# HW2P2 face loader speed: CPU workers vs decoding and augmenting on the device",
        "",
        f"- date: {result['date']}; commit {result['commit']}",
        f"- command: `{result['command']}`",
        f"- device: {result['device']}; {result['cores']} CPU core(s) available to the run; torch {result['torch']}",
        f"- data: {result['images']} JPEGs of {result['image_size']}x{result['image_size']}{size}; batch "
        f"{result['batch_size']}; {result['epochs']} epoch(s) per loader",
        f"- the device path's work left to the CPU workers (read a file, look at its header): "
        f"{result['reader_cpu_ms_per_image']:.3f} ms of CPU time per image",
    ]
    check = result["device_vs_cpu"]
    if check:
        lines.append(f"- the device against the CPU on {check['images']} images: decode differs in "
                     f"{check['decode_share_differing']:.2%} of pixel values (mean {check['decode_mean_levels']:.3f}, "
                     f"max {check['decode_max_levels']} levels); augmentation with the same draws in "
                     f"{check['augment_share_differing']:.2%} of values "
                     f"(max {check['augment_max_abs']:.3g} normalised)")
    if result["note"]:
        lines.append(f"- note: {result['note']}")
    lines += ["", "| path | what | epoch 1 (images/s) | later epochs (images/s) | vs workers |",
              "|---|---|---:|---:|---:|"]
    for row in result["rows"]:
        first = row.get("epoch_1_images_per_second")
        lines.append(f"| {row['path']} | {row['detail']} | {f'{first:,.0f}' if first else '-'} | "
                     f"{row['images_per_second']:,.0f} | {row['speedup_vs_workers']:.2f}x |")
    lines += ["", "Epoch 1 includes starting the workers; 'later epochs' is the steady state. The step row is the",
              "rate a training step consumes images (inputs already on the device): a loader at or above it keeps",
              "training bound by the model, not by the data.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
