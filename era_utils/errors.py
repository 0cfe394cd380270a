"""Errors a user's data or machine can cause, which `era-utils` shows as a message, not a traceback.

They live here, apart from the modules that raise them, so that the command can name them without
importing torch (its start-up stays quick)."""
from __future__ import annotations

__all__ = ["BadImageError", "NoSpaceError"]


class BadImageError(OSError):
    """An image file that cannot be read (corrupt, cut short, empty, too large, a link that loops); names it."""


class NoSpaceError(OSError):
    """The disk filled up while the kit wrote a file (the files written before are intact)."""
