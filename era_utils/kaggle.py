"""Kaggle CSVs for HW2P2's two competitions: writing the submissions, and reading one back.

    write_classification_csv("classification.csv", test_ids, preds.preds, classes)   # id,label
    write_verification_csv("verification.csv", ids_for_pairs(test_pairs), scores)    # Id,Category
    read_submission("verification.csv")                                              # a check

The headers are those of the competitions' sample submissions; ids are the image file names
(classification) or the pairs file's "a b" line (verification).
"""
from __future__ import annotations

import csv
import math
import os
import shutil
import subprocess
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np
import torch

from era_utils.data import pair_paths
from era_utils.files import atomic_write
from era_utils.utils import colab_secret

__all__ = [
    "CLASSIFICATION_HEADER",
    "VERIFICATION_HEADER",
    "Submission",
    "download_competition",
    "ids_for_pairs",
    "read_submission",
    "write_classification_csv",
    "write_verification_csv",
]

PathLike = Union[str, "os.PathLike[str]"]

# The headers HW2P2's two Kaggle competitions expect (their sample submissions).
CLASSIFICATION_HEADER = ("id", "label")
VERIFICATION_HEADER = ("Id", "Category")



def _relative(path: Path, root: Path | None) -> str:
    if root is not None:
        try:
            return path.relative_to(root).as_posix()
        except ValueError:
            pass
    return path.as_posix()


def ids_for_pairs(pairs: Sequence[Any], root: PathLike | None = None) -> list[str]:
    """Kaggle ids of pairs: the two paths of the pairs-file line, `"a b"`.

    A `data.Pair` carries them as written in the file (`pair_id`); for plain `(a, b)` tuples
    the paths are made relative to `root` (the folder they were joined to) when given.
    """
    root_path = Path(root) if root is not None else None
    ids = []
    for pair in pairs:
        written = getattr(pair, "pair_id", "")
        if written:
            ids.append(written)
            continue
        a, b = pair_paths(pair)
        ids.append(f"{_relative(a, root_path)} {_relative(b, root_path)}")
    return ids


def _as_list(values: Any, what: str) -> list:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    if isinstance(values, np.ndarray):
        if values.ndim != 1:
            hint = " (logits? pass logits.argmax(1))" if values.ndim == 2 and what == "labels" else ""
            raise ValueError(f"{what} must be 1-D, one per row; got shape {values.shape}{hint}")
        return values.tolist()
    return list(values)


def _check_lengths(ids: list, values: list, what: str) -> None:
    if len(ids) != len(values):
        raise ValueError(
            f"{len(ids)} ids but {len(values)} {what}: each CSV row needs one id and one value "
            "(did the loader drop the last batch, or shuffle?)"
        )


def _open_csv(path: PathLike) -> Any:
    return atomic_write(path, "w", newline="")  # newline="": the csv module ends its own lines


def write_classification_csv(
    path: PathLike,
    ids: Sequence[Any],
    labels: Any,
    classes: Sequence[str] | None = None,
) -> Path:
    """Kaggle classification CSV: header `id,label`, one row per test image.

    `ids` are image paths or file names (written as the file name: `test/0001.jpg` -> `0001.jpg`);
    `labels` are predicted class indices, written as `classes[index]` (the identity folder
    names, e.g. `FaceFolder(...).classes`) when `classes` is given, else as the indices.
    """
    id_list = [os.path.basename(os.fspath(i)) if isinstance(i, (str, os.PathLike)) else str(i) for i in ids]
    label_list = _as_list(labels, "labels")
    _check_lengths(id_list, label_list, "labels")
    if classes is not None:
        classes = list(classes)
        bad = [v for v in label_list if not (isinstance(v, (int, np.integer)) and 0 <= v < len(classes))]
        if bad:
            raise ValueError(
                f"labels must be class indices in [0, {len(classes)}) to map through classes; found {bad[:5]}"
            )
        label_list = [classes[v] for v in label_list]
    path = Path(path)
    with _open_csv(path) as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(CLASSIFICATION_HEADER)
        writer.writerows(zip(id_list, label_list))
    return path


def write_verification_csv(
    path: PathLike,
    pair_ids: Sequence[Any],
    scores: Any,
    *,
    precision: int = 6,
) -> Path:
    """Kaggle verification CSV: header `Id,Category`, one row per pair: its id and its similarity score.

    Use `ids_for_pairs(pairs, root)` for the ids HW2P2 expects (the pairs file's `a b` line).
    """
    id_list = [str(i) for i in pair_ids]
    score_list = [float(s) for s in _as_list(scores, "scores")]
    _check_lengths(id_list, score_list, "scores")
    bad = [i for i, score in zip(id_list, score_list) if not math.isfinite(score)]
    if bad:
        raise ValueError(f"{len(bad)} score(s) are NaN or infinite (pairs {bad[:3]}{' ...' if len(bad) > 3 else ''}); "
                         "Kaggle would reject the file. The model's embeddings were not finite: check the "
                         "checkpoint and the input normalisation.")
    path = Path(path)
    with _open_csv(path) as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(VERIFICATION_HEADER)
        writer.writerows((i, f"{s:.{precision}f}") for i, s in zip(id_list, score_list))
    return path


@dataclass
class Submission:
    """A Kaggle CSV read back: which competition its header belongs to, and its rows."""

    kind: str  # "classification" (id,label) or "verification" (Id,Category)
    ids: list[str]
    values: list[str]  # labels as written, or scores as text (see `scores`)

    def scores(self) -> np.ndarray:
        """The verification scores as float64 (a ValueError names the first row that is not a number)."""
        out = np.empty(len(self.values))
        for row, text in enumerate(self.values, start=2):  # row 1 is the header
            try:
                out[row - 2] = float(text)
            except ValueError:
                raise ValueError(f"row {row}: score {text!r} is not a number") from None
        return out


def read_submission(path: PathLike) -> Submission:
    """Read a submission written here (or by hand) and check its shape: a known header, two columns
    on every row, no empty or repeated id. Errors name the file and the row."""
    path = Path(path)
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise ValueError(f"{path} is empty: a submission starts with its header")
    kinds = {CLASSIFICATION_HEADER: "classification", VERIFICATION_HEADER: "verification"}
    header = tuple(rows[0])
    if header not in kinds:
        raise ValueError(f"{path}: header {','.join(header)!r} is neither {','.join(CLASSIFICATION_HEADER)!r} "
                         f"(classification) nor {','.join(VERIFICATION_HEADER)!r} (verification)")
    seen: set[str] = set()
    for number, row in enumerate(rows[1:], start=2):
        if len(row) != 2 or not row[0]:
            raise ValueError(f"{path}, row {number}: expected two columns, an id and a value; got {row!r}")
        if row[0] in seen:
            raise ValueError(f"{path}, row {number}: id {row[0]!r} appears twice")
        seen.add(row[0])
    return Submission(kinds[header], [r[0] for r in rows[1:]], [r[1] for r in rows[1:]])


# --------------------------------------------------------------------------- downloading the data


def download_competition(competitions: str | Sequence[str], dest: PathLike, *, cli: str = "kaggle") -> Path:
    """Download Kaggle competitions' data (one name or several) with the Kaggle CLI into `dest` and
    unzip it there.

    The credentials never appear in code: KAGGLE_USERNAME and KAGGLE_KEY from the environment, else
    from Colab's Secrets (same names), else the CLI's own ~/.kaggle/kaggle.json. The competition's
    rules must have been accepted on kaggle.com (the CLI answers 403 otherwise). Returns `dest`.
    """
    exe = shutil.which(cli)
    if exe is None:
        raise FileNotFoundError(f"the Kaggle CLI ({cli!r}) is not installed: pip install kaggle")
    env = dict(os.environ)
    for name in ("KAGGLE_USERNAME", "KAGGLE_KEY"):
        if not env.get(name) and (secret := colab_secret(name)):
            env[name] = secret
    has_file = (Path(env.get("KAGGLE_CONFIG_DIR", Path.home() / ".kaggle")) / "kaggle.json").is_file()
    if not (env.get("KAGGLE_USERNAME") and env.get("KAGGLE_KEY")) and not has_file:
        raise ValueError(
            "no Kaggle credentials: set KAGGLE_USERNAME and KAGGLE_KEY in the environment or, in Colab, as "
            "Secrets (the key icon on the left; allow this notebook access). Never write the key in a notebook.")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for competition in [competitions] if isinstance(competitions, str) else competitions:
        done = subprocess.run([exe, "competitions", "download", "-c", competition, "-p", str(dest)], env=env,
                              capture_output=True, text=True)
        if done.returncode:
            said = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise RuntimeError(f"the Kaggle CLI could not download {competition!r} (exit {done.returncode}): "
                               f"{' '.join(said)}. Check the name and that you accepted its rules on kaggle.com.")
    for archive in sorted(dest.glob("*.zip")):
        with zipfile.ZipFile(archive) as z:
            z.extractall(dest)
        archive.unlink()  # the images are what is needed; the archive would double the disk used
    return dest
