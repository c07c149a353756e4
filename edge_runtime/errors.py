"""The project's own error types. Every failure a user can cause maps to one of these,
so a caller (or a fuzz test) can tell "your input is bad" from "our code is broken"."""

from __future__ import annotations

import errno
import os


class EdgeCaptionError(Exception):
    """Base class for every error this toolkit raises on purpose."""


class BundleError(EdgeCaptionError):
    """A model bundle is missing, truncated, tampered with, or inconsistent."""


class ImageError(EdgeCaptionError):
    """An input image cannot be read or decoded."""


class DatasetError(EdgeCaptionError):
    """A dataset folder is missing files or has malformed annotations."""


class SourceError(EdgeCaptionError):
    """A video file or camera cannot be opened or stopped delivering frames."""


class BackendError(EdgeCaptionError):
    """The requested inference backend or accelerator is not available."""


class DiskFullError(EdgeCaptionError):
    """The disk (or the user's quota) filled up while a file was being written.

    Every write in this toolkit goes to a temporary file that is renamed over the target
    only when complete, so the previous version of that file is still in place."""


def is_disk_full(exc: BaseException) -> bool:
    """True for an OSError that says the disk or the user's quota is full."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1))


def disk_full(path: str | os.PathLike, exc: OSError, advice: str) -> DiskFullError:
    """A DiskFullError that names the file that could not be written and what to do next."""
    return DiskFullError(
        f"{path}: cannot write it: the disk is full ({exc.strerror or exc}); the previous "
        f"{os.path.basename(path)}, if there was one, is kept. Free some space, then {advice}"
    )
