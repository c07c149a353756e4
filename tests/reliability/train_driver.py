"""`caption-train` with fault-injection points, for the kill tests (not a test module).

    python train_driver.py ARGS...        the same as `caption-train ARGS...`

Environment:
    EDGECAP_TEST_SHARD_SIZE=N   feature shards of N images instead of 256, so that a tiny
                                dataset has several shards to be killed between.
    EDGECAP_TEST_PAUSE=WHERE:N  stop at one point and sleep until killed, after writing
                                the file named by EDGECAP_TEST_PAUSED, where WHERE is:
        shard:N        before the N-th feature shard (from 0, train split first) is
                       computed: shards 0..N-1 are on disk
        epoch:N        after epoch N's checkpoint (last.npz, then its history line) is written
        last-npz:N     in the middle of the N-th last.npz write of this process: half of
                       the new file is in its temporary file, not yet renamed into place
        history:N      after epoch N's last.npz is in place, before its history line

The pauses make each kill land at one known point, however slow the machine, so the
tests never race the trainer. Without EDGECAP_TEST_PAUSE this is plain caption-train.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path


def _pause() -> None:
    Path(os.environ["EDGECAP_TEST_PAUSED"]).write_text("paused\n")
    while True:  # until the test sends SIGKILL or SIGINT
        time.sleep(0.1)


def _install() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: interruptions
    from interruptions import append_acting_before_history_line, fit_callback_acting_after_epoch

    from edgecap.train import checkpoint, features, training

    if os.environ.get("EDGECAP_TEST_SHARD_SIZE"):
        features.SHARD_SIZE = int(os.environ["EDGECAP_TEST_SHARD_SIZE"])
    where, _, n = os.environ.get("EDGECAP_TEST_PAUSE", "").partition(":")
    if not where:
        return
    n = int(n)
    if where == "shard":
        real_compute, calls = features._compute, [0]

        def compute(*args, **kwargs):
            if calls[0] == n:
                _pause()
            calls[0] += 1
            return real_compute(*args, **kwargs)

        features._compute = compute
    elif where == "epoch":
        training._checkpoint_callback = fit_callback_acting_after_epoch(n, _pause)
    elif where == "last-npz":
        real_savez, saves = checkpoint.np.savez, [0]

        def savez(file, *args, **kwargs):
            real_savez(file, *args, **kwargs)
            tmp = Path(file)
            if tmp.name.startswith(".last.npz."):  # atomic_path's temporary file
                saves[0] += 1
                if saves[0] == n:
                    tmp.write_bytes(tmp.read_bytes()[: tmp.stat().st_size // 2])
                    _pause()

        checkpoint.np.savez = savez
    elif where == "history":
        checkpoint.TrainingCheckpoint._append = append_acting_before_history_line(n, _pause)
    else:
        raise SystemExit(f"train_driver: unknown pause point {where!r}")


if __name__ == "__main__":
    # A process started in the background by a non-interactive shell inherits SIGINT as
    # ignored, and Python then never raises KeyboardInterrupt; a terminal's Ctrl-C is what
    # the tests mean to send, whatever shell launched pytest.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    _install()
    from edgecap.train.cli_train import main

    sys.exit(main(sys.argv[1:]))
