"""The project's own error types. Every failure a user can cause maps to one of these,
so a caller (or a fuzz test) can tell "your input is bad" from "our code is broken"."""


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
