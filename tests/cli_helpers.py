"""Running the console scripts in a fresh process, as a user would."""

import shutil
import subprocess
import sys
from pathlib import Path


def edge_caption(*args, check: bool = False) -> subprocess.CompletedProcess:
    """`edge_caption ARGS...`; paths and numbers are converted to strings."""
    command = [sys.executable, "-m", "edgecap.edge_runtime.cli", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, check=check)


def copy_with_half_a_file(bundle: Path, into: Path, name: str) -> Path:
    """A copy of `bundle` under `into` whose file `name` is cut to half its bytes (a
    truncated download): the copy's folder."""
    copy = into / "bundle"
    shutil.copytree(bundle, copy)
    data = (copy / name).read_bytes()
    (copy / name).write_bytes(data[: len(data) // 2])
    return copy
