"""Writing results files so that a killed run never leaves half a file behind.

`atomic_write(path)` hands out a temporary file in the same folder and renames it over `path` only
when the block ends without an error (`os.replace` is atomic on one filesystem), so a reader sees
the old file or the new one, never a mixture. The checkpoint, figures, JSON and CSV files all go
through it.
"""
from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator

from era_utils.errors import NoSpaceError

__all__ = ["TEMP_SUFFIX", "atomic_write", "json_safe", "remove_leftover_temp_files", "write_json", "write_text"]

# Temporary files are ".<name>.<random>.era_utils.tmp" beside their target: a name no other program
# writes, so cleaning up after a killed run removes the kit's own files only, never a user's ".*.tmp".
TEMP_SUFFIX = ".era_utils.tmp"


def _permissions() -> int:
    """What a plain open() would give a new file: 0o666 less the process's umask (mkstemp gives 0o600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", **open_kwargs: Any) -> Iterator[IO]:
    """Open a temporary file beside `path` for writing; on success it replaces `path`, on an error
    it is removed and `path` is left as it was. Parent folders are created."""
    if mode not in ("w", "wb"):
        raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        os.chmod(tmp, _permissions())  # readable by others as the user's umask allows (a TA on a shared server)
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} | open_kwargs if mode == "w" else open_kwargs)) as f:
            yield f
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        if isinstance(err, OSError) and err.errno == errno.ENOSPC:
            free = shutil.disk_usage(path.parent).free
            raise NoSpaceError(errno.ENOSPC, f"the disk holding {path.parent} is full ({free / 2**20:.0f} MiB free) "
                               f"while writing {path.name}; the files written before are intact: free some space "
                               "or give another folder (--out), then carry on with --resume") from err
        raise


def remove_leftover_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files `atomic_write` left in `folder` when its process was killed
    mid-write (a clean error removes its own); returns them. Call it before a run writes there."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    leftovers = [p for p in folder.glob(f".*{TEMP_SUFFIX}") if p.is_file()]
    for path in leftovers:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    return sorted(leftovers)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` to `path` atomically; returns the path."""
    with atomic_write(path) as f:
        f.write(text)
    return Path(path)


def json_safe(obj: Any) -> Any:
    """`obj` with every NaN or infinite float replaced by None (JSON's null), through dicts, lists,
    tuples and numpy/torch scalars: what strict JSON parsers accept."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 0) == 0:
        obj = obj.item()  # numpy / torch scalar
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    """Write `obj` as strict JSON atomically: NaN and infinity become null (see `json_safe`)."""
    return write_text(path, json.dumps(json_safe(obj), indent=indent, allow_nan=False) + "\n")
