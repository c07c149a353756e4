"""Running the console scripts in a fresh process, as a user would."""

import subprocess
import sys


def edge_caption(*args, check: bool = False) -> subprocess.CompletedProcess:
    """`edge_caption ARGS...`; paths and numbers are converted to strings."""
    command = [sys.executable, "-m", "edgecap.edge_runtime.cli", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, check=check)
