"""`caption-train` with fault-injection points, for the kill tests (not a test module).

    python train_driver.py ARGS...        the same as `caption-train ARGS...`

Environment:
    EDGECAP_TEST_SHARD_SIZE=N   feature shards of N images instead of 256, so that a tiny
                                dataset has several shards to be killed between.
    EDGECAP_TEST_PAUSE=WHERE:N  stop at one point and sleep until killed, after writing
                                the file named by EDGECAP_TEST_PAUSED, where WHERE is:
        shard:N        before the N-th feature shard (from 0, train split first) is
                       computed: shards 0..N-1 are on disk
        epoch:N        after epoch N's checkpoint (last.keras, then state.json) is written
        last-keras:N   in the middle of the N-th last.keras write of this process: half of
                       the new file is in its temporary file, not yet renamed into place
        state-json:N   after epoch N's last.keras is in place, before its state.json

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
    from edgecap.train import features, training

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
        real_callback = training._checkpoint_callback

        def checkpoint_callback(run):
            callback = real_callback(run)
            original = callback.on_epoch_end

            def on_epoch_end(epoch, logs=None):
                original(epoch, logs)
                if epoch + 1 == n:
                    _pause()

            callback.on_epoch_end = on_epoch_end
            return callback

        training._checkpoint_callback = checkpoint_callback
    elif where == "last-keras":
        import keras

        real_save, saves = keras.Model.save, [0]

        def save(self, filepath, *args, **kwargs):
            real_save(self, filepath, *args, **kwargs)
            tmp = Path(filepath)
            if tmp.name.startswith(".last.keras."):  # atomic_path's temporary file
                saves[0] += 1
                if saves[0] == n:
                    tmp.write_bytes(tmp.read_bytes()[: tmp.stat().st_size // 2])
                    _pause()

        keras.Model.save = save
    elif where == "state-json":
        real_write = training.write_json_atomic

        def write_json_atomic(target, obj):
            if Path(target).name == "state.json" and obj.get("epochs_done") == n:
                _pause()
            real_write(target, obj)

        training.write_json_atomic = write_json_atomic
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
