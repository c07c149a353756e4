"""Training (TensorFlow/Keras): the workstation side, installed by the `train` extra."""

import sys


def no_tensorflow(tool: str, module: str = "tensorflow") -> int:
    """Say why `tool` cannot run when TensorFlow is missing, and return the exit status 2.

    The `train` extra installs tensorflow-cpu 2.21 only where it has wheels (CPython 3.10 to
    3.13; pyproject.toml's marker), so on another Python the extra installs without it."""
    python = ".".join(map(str, sys.version_info[:3]))
    print(
        f"{tool}: error: {module} is not installed (Python {python}). Training and export "
        "need the `train` extra's TensorFlow 2.21, which has wheels for Python 3.10 to 3.13: "
        "use one of those with pip install 'edge-caption[train]'",
        file=sys.stderr,
    )
    return 2
