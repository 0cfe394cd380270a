"""One run per output folder: a lock held for the run's life, so two runs cannot overwrite each other.

`hold(folder)` takes an exclusive `fcntl.flock` on `folder/.era_utils.lock` and writes who holds it
(process, host, start time, command). The operating system releases the lock when the process ends,
however it ends (kill -9 included), so a lock left by a killed run is recognised as stale: the file is
there, but nobody holds it. A second run into the folder meanwhile is refused, naming the first. The
process that holds a folder may take it again (a notebook that runs its cells twice); `release`
gives it up (the end of a run).
"""
from __future__ import annotations

import json
import os
import socket
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Optional

__all__ = ["LOCK_NAME", "FolderInUseError", "hold", "release"]

LOCK_NAME = ".era_utils.lock"
_held: dict[Path, IO] = {}  # folders this process holds -> their open lock file (closing it releases)


class FolderInUseError(ValueError):
    """Another live run writes to this output folder."""


def _holder_text(info: dict) -> str:
    who = f"process {info.get('pid', '?')} on {info.get('host', '?')}, started {info.get('started', '?')}"
    return who + (f" (`{info['command']}`)" if info.get("command") else "")


def hold(folder: str | os.PathLike, command: Optional[str] = None) -> Optional[dict]:
    """Lock `folder` for this process's run; returns what a stale lock said (a run that was killed),
    else None. Raises FolderInUseError if another live process holds it."""
    folder = Path(folder).resolve()
    if folder in _held:
        return None
    try:
        import fcntl
    except ImportError:  # Windows: no flock; the kit's runs there are not guarded against each other
        return None
    folder.mkdir(parents=True, exist_ok=True)
    lock = open(folder / LOCK_NAME, "a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:  # held by a live process
        lock.seek(0)
        info = _read(lock.read())
        lock.close()
        raise FolderInUseError(
            f"the output folder {folder} is in use by another run: {_holder_text(info)}. Two runs in one folder "
            "would overwrite each other's files: wait for that run to finish, or give this one another folder "
            "(--out, OUT in a notebook).") from None
    except OSError:  # a filesystem without locks (some network drives): the run goes on unguarded
        lock.close()
        return None
    lock.seek(0)
    stale = _read(lock.read())
    lock.seek(0)
    lock.truncate()
    lock.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                           "started": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
                           "command": command or " ".join(sys.argv)}) + "\n")
    lock.flush()
    _held[folder] = lock
    return stale or None


def release(folder: str | os.PathLike) -> None:
    """Give up this process's lock on `folder` (nothing if it holds none); the file stays, empty and unlocked."""
    lock = _held.pop(Path(folder).resolve(), None)
    if lock is not None:
        lock.truncate(0)  # released cleanly: no holder left to call stale
        lock.close()  # closing the file releases the flock


def _read(text: str) -> dict:
    try:
        info = json.loads(text)
    except ValueError:
        return {}
    return info if isinstance(info, dict) else {}
