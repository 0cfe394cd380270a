"""Every setting of a run, declared once: its name (`plan_run`'s keyword), type, default, help, its option of
`era-utils run` and its notebook parameter, and where it applies (the recipe's field it overrides, the
resume check). The command's options (`add_run_options`), `run_command`, the checks of a value given from
Python (`RunSettings`), the plan's "as a command" row and the resume check are all read from here: a new
setting is one `setting(...)` line below plus the code that uses it.

Torch-free, so that `era-utils --help` starts quickly.
"""
from __future__ import annotations

import argparse
import math
import numbers
import os
import shlex
from dataclasses import dataclass, field, fields
from typing import Any, Optional, Sequence, Union

from era_utils.choices import AMP_MODES, LOADERS, LOSSES, LR_RULES, RUN_DATASETS, TTA_MODES

__all__ = ["SIZES", "RunSettings", "Setting", "add_run_options", "declared", "from_args", "path_placeholders",
           "machine_path", "run_command", "shareable_command", "where"]

SIZES = ("full", "preview", "quick")


# ----------------------------------------------------------------------------- the kinds of value


class Kind:
    """What values a setting takes: `parse` reads the command line's text, `check` a value given from Python;
    each says what was expected. The base kind takes any value (the code that uses it checks it)."""

    choices: Optional[tuple] = None

    def parse(self, text: str) -> Any:
        return text

    def text(self, value: Any) -> str:
        """`value` as the command line writes it."""
        return str(value)

    def check(self, value: Any, where: str) -> None:
        return None


class Whole(Kind):
    """A whole number from `low` (to `high`)."""

    def __init__(self, low: int, high: Optional[int] = None, words: str = "", high_words: str = "") -> None:
        self.low, self.high = low, high
        self.words = words or ("a positive integer" if low == 1 else f"a whole number, {low} or more")
        self.high_words = high_words or f"a whole number from {low} to {high}"

    def parse(self, text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {self.words}, got {text!r}") from None
        if value < self.low:
            raise argparse.ArgumentTypeError(f"expected {self.words}, got {value}")
        if self.high is not None and value > self.high:
            raise argparse.ArgumentTypeError(f"expected {self.high_words}, got {value}")
        return value

    def check(self, value: Any, where: str) -> None:
        whole = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        if not whole or value < self.low or (self.high is not None and value > self.high):
            bound = f"from {self.low} to {self.high}" if self.high is not None else f"{self.low} or more"
            raise ValueError(f"{where} must be a whole number {bound}, got {value!r}")


class Number(Kind):
    """A finite number above `low` (or from it, `low_open=False`) and below `high`."""

    def __init__(self, low: float, high: float = math.inf, low_open: bool = True) -> None:
        self.low, self.high, self.low_open = low, high, low_open
        self.words = ("a positive number" if (low, high, low_open) == (0, math.inf, True)
                      else f"a number from {low:g}" + (" (not itself)" if low_open else "") + f" to below {high:g}")

    def _inside(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        return math.isfinite(value) and above and value < self.high  # nan compares False: refused

    def parse(self, text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {self.words}, got {text!r}") from None
        if not self._inside(value):
            raise argparse.ArgumentTypeError(f"expected {self.words.replace('a positive', 'a positive, finite')}, "
                                             f"got {text}")
        return value

    def check(self, value: Any, where: str) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not self._inside(float(value)):
            raise ValueError(f"{where} must be {self.words}, got {value!r}")


class Choice(Kind):
    """One of `choices`."""

    def __init__(self, choices: tuple, why: str = "") -> None:
        self.choices, self.why = choices, why

    def check(self, value: Any, where: str) -> None:
        if value not in self.choices:
            name = where.split(" (")[0]  # "dataset must be one of ...": the message the tests and users know
            raise ValueError(f"{name} must be one of {self.choices}{self.why}, got {value!r}")


class FilePath(Kind):
    """A file or folder: a str or an os.PathLike. A report records a machine's absolute path as `placeholder`."""

    def __init__(self, placeholder: str) -> None:
        self.placeholder = placeholder

    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, (str, os.PathLike)):
            raise ValueError(f"{where} must be a path (a str or pathlib.Path), got {value!r}")


class Switch(Kind):
    """True or False; on the command line a flag without a value (`flag_sets` is what the flag sets it to)."""

    def __init__(self, flag_sets: bool = True) -> None:
        self.flag_sets = flag_sets

    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, bool):
            raise ValueError(f"{where} must be True or False, got {value!r}")


class Compile(Kind):
    """torch.compile of the training pass: True, False or one of torch.compile's modes ("on"/"off" on the
    command line)."""

    MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")

    def parse(self, text: str) -> Union[bool, str]:
        if text not in ("on", "off", *self.MODES):
            raise argparse.ArgumentTypeError(f"expected on, off or a torch.compile mode ({', '.join(self.MODES)}), "
                                             f"got {text!r}")
        return {"on": True, "off": False}.get(text, text)

    def text(self, value: Any) -> str:
        return ("on" if value else "off") if isinstance(value, bool) else str(value)

    def check(self, value: Any, where: str) -> None:
        if not (isinstance(value, bool) or value in self.MODES):
            raise ValueError(f"{where} must be True, False or a torch.compile mode {self.MODES}, got {value!r}")


# ----------------------------------------------------------------------------- the declaration


@dataclass(frozen=True)
class Setting:
    """How one run setting is given and where it applies."""

    kind: Kind
    help: str
    flag: Optional[str] = None  # its option of `era-utils run` (None: from Python only)
    notebook: Optional[str] = None  # its parameter in the notebooks (None: not one)
    recipe: bool = False  # overrides the recipe's field of the same name
    resume: Optional[str] = None  # its key in a checkpoint's settings: a resumed run must have it as the run that
    # wrote the checkpoint had it (the value the plan resolved)
    metavar: Optional[str] = None


def setting(default: Any, kind: Kind, help: str, **how: Any) -> Any:
    """A RunSettings field: its default and its declaration (`Setting`)."""
    return field(default=default, metadata={"setting": Setting(kind, help, **how)})


@dataclass(frozen=True)
class RunSettings:
    """A run's settings as given (None: the recipe's, or the size's, or the kit's default); `plan_run` resolves
    them into a RunPlan. Each value is checked here, once, with a message naming the setting and its option."""

    dataset: Optional[str] = setting(
        None, Choice(RUN_DATASETS), "dataset (default: the recipe's: cifar10; faces for hw2p2, from --data-dir)",
        flag="--dataset", notebook="DATASET", resume="dataset")
    data_dir: Optional[Union[str, os.PathLike]] = setting(
        None, FilePath("DATA"), "folder with the dataset (default: ./data for CIFAR-10; Debian's "
        "/usr/share/datasets/fashion-mnist for Fashion-MNIST; HW2P2's unzipped Kaggle folder with train/ dev/ test/ "
        "for faces)", flag="--data-dir", notebook="DATA_DIR")
    download: bool = setting(False, Switch(), "download the dataset if missing (Colab)", flag="--download",
                             notebook="DOWNLOAD")
    epochs: Optional[int] = setting(None, Whole(1), "override the recipe's epochs", flag="--epochs",
                                    notebook="EPOCHS", recipe=True)
    batch_size: Optional[int] = setting(None, Whole(1), "override the recipe's batch size", flag="--batch-size",
                                        recipe=True)
    lr: Optional[float] = setting(None, Number(0), "override the recipe's (peak) learning rate; turns the LR range "
                                  "test off", flag="--lr", recipe=True)
    lr_finder_method: Optional[str] = setting(
        None, Choice(LR_RULES, " (the LR range test's rules for the max LR)"), "the LR range test's rule for the "
        "max LR: minimum (a tenth of the LR at the smoothed loss's minimum; s10's), steepest (the steepest descent "
        "before it) or valley (fastai's); for recipes that run the range test (s10)", flag="--lr-rule",
        recipe=True)
    restart_epochs: Optional[int] = setting(
        None, Whole(1), "cosine annealing with warm restarts: the first cycle's length in epochs (T_0; hw2p2 10, its "
        "preview 3), each next cycle twice as long", flag="--restart-epochs", recipe=True)
    label_smoothing: Optional[float] = setting(
        None, Number(0, 1, low_open=False), "override the recipe's label smoothing of the cross-entropy (0 to below "
        "1; hw2p2 0.2, the others 0): the target spreads that much of its weight over the other classes",
        flag="--label-smoothing", recipe=True)
    loss: Optional[str] = setting(
        None, Choice(LOSSES), "training loss (default: the recipe's, cross_entropy): arcface or cosface (a margin "
        "head on L2-normalised embeddings, s 64 and m 0.5 / 0.35 as in the papers), or center (cross-entropy + center "
        "loss); for HW2P2's verification", flag="--loss", notebook="LOSS", recipe=True)
    tta: Optional[str] = setting(
        None, Choice(TTA_MODES, " (flip: average each verification embedding with its mirror image's)"),
        "hw2p2: flip averages each verification embedding with its mirror image's (default none)", flag="--tta",
        notebook="TTA", recipe=True)
    subset: Optional[int] = setting(None, Whole(1), "train on N images (stratified) and test on max(1000, N/5)",
                                    flag="--subset", notebook="SUBSET", resume="subset")
    test_subset: Optional[int] = setting(None, Whole(1), "test on N images", flag="--test-subset",
                                         notebook="TEST_SUBSET", resume="test_subset")
    loader: str = setting(
        "auto", Choice(LOADERS), "gpu: batched augmentation on the device (the data there; HW2P2's face JPEGs "
        "decoded there); workers: per image on CPU workers (albumentations, or HW2P2's torchvision pipeline); auto: "
        "gpu on the fast path, but HW2P2 on a CPU reads with workers, faster there (default)", flag="--loader",
        notebook="LOADER", resume="loader")
    fast: bool = setting(
        True, Switch(flag_sets=False), "turn the fast path off: per-image augmentation on CPU workers, fp32, eager "
        "(the fast path: data on the device, bf16/fp16, channels_last, torch.compile and fused optimizer on CUDA)",
        flag="--classic")
    amp: Optional[str] = setting(
        None, Choice(AMP_MODES), "mixed precision (default: bf16 or fp16 on CUDA, bf16 on a CPU that runs it "
        "natively, fp32 on other CPUs): auto (bf16/fp16 on CUDA, fp32 elsewhere), bf16, fp16, off", flag="--amp",
        resume="precision")
    compile: Optional[Union[bool, str]] = setting(
        None, Compile(), "torch.compile of the training pass: on, off or a torch.compile mode (reduce-overhead: CUDA "
        "graphs; max-autotune); default: on for CUDA with Triton, off elsewhere", flag="--compile",
        metavar="on|off|MODE")
    num_workers: Optional[int] = setting(
        None, Whole(0), "CPU worker processes: the workers loader's, or those reading HW2P2's face files for the gpu "
        "loader (default 2; 0 with --quick)", flag="--workers", notebook="NUM_WORKERS", resume="num_workers",
        metavar="N")
    device: Optional[str] = setting(None, Kind(), "cuda, cuda:1, mps or cpu (default: the best available)",
                                    flag="--device", notebook="DEVICE")
    seed: Optional[int] = setting(None, Whole(0, 2**32 - 1, high_words=f"a seed from 0 to {2**32 - 1}"),
                                  f"override the recipe's seed (0 to {2**32 - 1})", flag="--seed", recipe=True)
    out: Optional[Union[str, os.PathLike]] = setting(None, FilePath("OUT"), "output folder (default: runs/RECIPE)",
                                                     flag="--out", notebook="OUT")
    resume: bool = setting(False, Switch(), "continue from OUT/checkpoint.pt (written at most once a minute, and at "
                           "the end)", flag="--resume", notebook="RESUME")
    verbose: bool = setting(True, Switch(flag_sets=False), "no progress bars", flag="--quiet")
    checkpoints: bool = setting(True, Switch(), "keep a checkpoint in OUT (off for speed measurements)")
    verification_pairs: Optional[int] = setting(None, Whole(1), "HW2P2's stand-in: pairs drawn from the test images "
                                                "(default the size's, else 4000)")
    dev_pairs: Optional[Union[str, os.PathLike]] = setting(
        None, FilePath("DEV_PAIRS"), "faces: the labelled verification pairs file (a b label per line)",
        flag="--dev-pairs", notebook="DEV_PAIRS")
    test_pairs: Optional[Union[str, os.PathLike]] = setting(
        None, FilePath("TEST_PAIRS"), "faces: the unlabelled verification pairs file (a b per line)",
        flag="--test-pairs", notebook="TEST_PAIRS")
    pairs_root: Optional[Union[str, os.PathLike]] = setting(
        None, FilePath("PAIRS_ROOT"), "faces: the folder the pairs files' paths are relative to",
        flag="--pairs-root", notebook="PAIRS_ROOT")
    log: Optional[str] = setting(
        None, Kind(), "also log to csv (OUT/log.csv), tensorboard (OUT/tensorboard/) and/or wandb (a W&B run; "
        "WANDB_MODE=offline keeps it in OUT/wandb/), comma-separated: e.g. --log csv,tensorboard", flag="--log",
        notebook="LOG", metavar="LOGGERS")
    processes: Optional[int] = setting(
        None, Whole(1), "train in N processes with DistributedDataParallel, one per GPU (--device cpu: N processes "
        "sharing the CPU), started by torch's launcher (torchrun); the recipe's batch is split over them. Kaggle's two "
        "T4s: --nproc 2. Default 1; started by torchrun, torchrun's count", flag="--nproc", notebook="NPROC",
        metavar="N")
    sync_batchnorm: bool = setting(False, Switch(), "with --nproc on GPUs: BatchNorm statistics over every process's "
                                   "images (SyncBatchNorm)", flag="--sync-batchnorm")

    def __post_init__(self) -> None:
        for name, spec in declared():
            value = getattr(self, name)
            if value is not None:
                spec.kind.check(value, where(name))

    @classmethod
    def given(cls, settings: dict[str, Any]) -> "RunSettings":
        """RunSettings from keyword settings, an unknown name refused with the list of known ones."""
        names = [name for name, _ in declared()]
        unknown = [name for name in settings if name not in names]
        if unknown:
            raise TypeError(f"plan_run has no setting {unknown[0]!r}; the settings are: {', '.join(names)}")
        return cls(**settings)

    def changed(self) -> dict[str, Any]:
        """The settings given a value other than their default, in the declaration's order."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) != f.default}

    def recipe_changes(self) -> dict[str, Any]:
        """The recipe's fields this run overrides (`lr` also turns the LR range test off)."""
        changes = {name: getattr(self, name) for name, spec in declared()
                   if spec.recipe and getattr(self, name) is not None}
        return changes | ({"use_lr_finder": False} if self.lr is not None else {})


def declared() -> list[tuple[str, Setting]]:
    """(name, Setting) of every run setting, in the declaration's order (the order of `--help`)."""
    return [(f.name, f.metadata["setting"]) for f in fields(RunSettings)]


def where(name: str) -> str:
    """How a message names setting `name`: "num_workers (--workers, NUM_WORKERS in a notebook)"."""
    spec = dict(declared())[name]
    places = [spec.flag or "Python only"] + ([f"{spec.notebook} in a notebook"] if spec.notebook else [])
    return f"{name} ({', '.join(places)})"


# ----------------------------------------------------------------------------- the command line


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """`era-utils run`'s options, one per declared setting with a flag; each option's dest is its setting's name."""
    for name, spec in declared():
        if spec.flag is None:
            continue
        if isinstance(spec.kind, Switch):
            parser.add_argument(spec.flag, dest=name, action="store_true" if spec.kind.flag_sets else "store_false",
                                help=spec.help)
            continue
        default = next(f.default for f in fields(RunSettings) if f.name == name)
        metavar = None if spec.kind.choices else spec.metavar or spec.flag.lstrip("-").upper().replace("-", "_")
        parser.add_argument(spec.flag, dest=name, type=spec.kind.parse, choices=spec.kind.choices, default=default,
                            metavar=metavar, help=spec.help)


def from_args(args: argparse.Namespace, **overrides: Any) -> RunSettings:
    """The RunSettings an `era-utils run` command line gave (its parsed `args`), with `overrides`."""
    return RunSettings(**{name: getattr(args, name) for name, spec in declared() if spec.flag} | overrides)


def path_placeholders() -> dict[str, str]:
    """{option: placeholder} of the path options: how a recorded command names a machine's own folder."""
    return {spec.flag: spec.kind.placeholder for _, spec in declared() if isinstance(spec.kind, FilePath) and spec.flag}


def run_command(recipe: str, *, size: str = "full", **settings: Any) -> list[str]:
    """The `era-utils run` command line of the run `plan_run(recipe, size=size, **settings)` plans (the same
    names; a setting left at its default is left out)."""
    if size not in SIZES:
        raise ValueError(f"size must be 'full', 'preview' or 'quick', got {size!r}")
    specs = dict(declared())
    takes = [name for name, spec in specs.items() if spec.flag]
    for name in settings:
        if name not in takes:
            raise TypeError(f"era-utils run has no option for {name!r}; it takes: {', '.join(takes)}")
    argv = ["era-utils", "run", recipe] + ([] if size == "full" else [f"--{size}"])
    for name, value in RunSettings(**settings).changed().items():
        flag = specs[name].flag
        argv += [flag] if isinstance(specs[name].kind, Switch) else [flag, specs[name].kind.text(value)]
    return argv


def shareable_command(argv: Sequence[str]) -> str:
    """`era-utils ARGV` as reports and metrics.json record it: an absolute (or ~) path given to a path
    option becomes that option's placeholder (`--data-dir DATA`, `--out OUT`, ...), so a committed
    report names no folder of the machine that made it; everything else as typed."""
    shown, argv, placeholders = [], list(argv), path_placeholders()
    for i, arg in enumerate(argv):
        option, equals, value = arg.partition("=")
        if equals and option in placeholders and machine_path(value):
            arg = f"{option}={placeholders[option]}"
        elif i and argv[i - 1] in placeholders and machine_path(arg):
            arg = placeholders[argv[i - 1]]
        shown.append(arg)
    return "era-utils " + shlex.join(shown)


def machine_path(value: str) -> bool:
    """Is `value` a path of this machine's own (absolute, or under ~)?"""
    return value.startswith(("/", "~")) or (len(value) > 2 and value[1:3] in (":\\", ":/"))  # POSIX, ~, C:\
