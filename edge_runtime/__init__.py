"""The device runtime. numpy comes with a backend extra, not with the bare package (see
pyproject.toml), so a bare install says what to add instead of failing deep inside."""

try:
    import numpy  # noqa: F401
except ImportError:
    raise ImportError(
        "edge-caption's runtime needs numpy, which comes with a backend extra: "
        "pip install 'edge-caption[edge]' (or, with a wheel file, 'edge_caption-….whl[edge]'; "
        "[pi-legacy] on Raspberry Pi OS Bookworm where ai-edge-litert cannot be used)"
    ) from None
