"""The project's own error types. Every failure a user can cause maps to one of these,
so a caller (or a fuzz test) can tell "your input is bad" from "our code is broken"."""

from __future__ import annotations

import errno
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


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


class WriteError(EdgeCaptionError):
    """A file could not be written: the disk is full, or the folder is not writable.

    Every write in this toolkit goes to a temporary file that is renamed over the target
    only when complete, so the previous version of that file is still in place."""


class DiskFullError(WriteError):
    """The disk (or the user's quota) filled up while a file was being written."""


# errno -> (what happened, what to do), for the write failures a user can fix.
_WRITE_FAILURES = {
    errno.ENOSPC: ("the disk is full", "Free some space"),
    getattr(errno, "EDQUOT", -1): ("the disk quota is full", "Free some space"),
    errno.EACCES: ("permission denied", "Make the folder writable, or write somewhere else"),
    errno.EPERM: ("not permitted", "Make the folder writable, or write somewhere else"),
    errno.EROFS: ("the file system is read-only", "Write somewhere else"),
}


INTERRUPTED = 130  # the shell's status for a command stopped by Ctrl-C (128 + SIGINT)


def interrupted(message: str) -> int:
    """Print a CLI's Ctrl-C message and return INTERRUPTED, ignoring any later SIGINT.

    Once the interrupt is handled the process only has to shut down, and a second SIGINT
    then (a user's second Ctrl-C, or one a native library caught and re-raised) would
    kill it with the signal instead of the status 130 and the message that say what was
    kept (seen once in CI while TensorFlow was loading)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    print(message, file=sys.stderr)
    return INTERRUPTED


def is_disk_full(exc: BaseException) -> bool:
    """True for an OSError that says the disk or the user's quota is full."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1))


def is_write_failure(exc: BaseException) -> bool:
    """True for an OSError a user fixes by freeing space or choosing a writable place."""
    return isinstance(exc, OSError) and exc.errno in _WRITE_FAILURES


def write_failure_reason(exc: OSError) -> tuple[str, str]:
    """(what happened, what to do) for a write failure, e.g. ("the disk is full", "Free
    some space")."""
    return _WRITE_FAILURES[exc.errno]


def write_failure(path: str | os.PathLike, exc: OSError, advice: str) -> WriteError:
    """The WriteError (a DiskFullError for a full disk) that names the file that could not
    be written, says that its previous version is kept, and what to do next."""
    what, fix = write_failure_reason(exc)
    kind = DiskFullError if is_disk_full(exc) else WriteError
    return kind(
        f"{path}: cannot write it: {what} ({exc.strerror or exc}); the previous "
        f"{os.path.basename(path)}, if there was one, is kept. {fix}, then {advice}"
    )


@contextmanager
def named_write_failures(
    path: str | os.PathLike, advice: str | Callable[[], str]
) -> Iterator[None]:
    """Turn a full disk or an unwritable folder while writing `path` into a WriteError that
    names it. `advice` (or what it returns, computed only on failure) says how to go on.

    The atomic write has already deleted its temporary file and left the previous `path`
    in place, so the message can say that nothing was lost.
    """
    try:
        yield
    except OSError as exc:
        if not is_write_failure(exc):
            raise
        raise write_failure(path, exc, advice() if callable(advice) else advice) from exc
