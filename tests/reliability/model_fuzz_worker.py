"""Opens a bundle whose model files' FlatBuffer tables are damaged, case after case, for
test_model_fuzz.py (not a test module).

    python model_fuzz_worker.py BUNDLE WORK FIRST COUNT

Case `seed` (FIRST .. FIRST+COUNT-1) copies BUNDLE's files into WORK, changes 1-4 bytes
of one model file outside its weight buffers (the tables, vectors and strings that
parsers follow), recomputes that file's SHA-256 in the manifest, then opens the bundle
and captions a small image. Each case prints `start SEED` before it runs and one result
line after it:

    ok SEED                      opened and captioned (the bytes changed nothing that matters)
    refused SEED                 a BundleError that names the damaged file
    unnamed SEED <message>       a BundleError that does not name it
    traceback SEED <type: msg>   any other exception: a bug

A native crash or a hang leaves `start SEED` as the last line: the parent knows the case.
"""

from __future__ import annotations

import faulthandler
import json
import resource
import shutil
import sys
from pathlib import Path

import numpy as np

from edgecap.edge_runtime.atomic import sha256_file
from edgecap.edge_runtime.captioner import Captioner
from edgecap.edge_runtime.decoding import DecodeOptions
from edgecap.edge_runtime.errors import BundleError
from edgecap.edge_runtime.flatbuffer_check import BUFFER_DATA, MODEL_BUFFERS, _Reader

BEAM = DecodeOptions(beam_width=3)
MEMORY_LIMIT = 4 << 30  # bytes of address space
ROLES = ("encoder", "encoder", "decoder_init", "decoder_step")  # the encoder twice as often


def weight_spans(data: bytes) -> list[tuple[int, int]]:
    """[start, end) of every buffer's bytes: the weights, which no parser follows."""
    reader = _Reader(data)
    model = reader.target(0)
    spans = []
    for buffer in reader.tables(model, MODEL_BUFFERS):
        at = reader.field(buffer, BUFFER_DATA)
        if at is not None:
            first, length = reader.vector(at, 1)
            spans.append((first, first + length))
    return spans


def table_positions(data: bytes) -> np.ndarray:
    """Every byte position outside the weight buffers."""
    outside = np.ones(len(data), dtype=bool)
    for start, end in weight_spans(data):
        outside[start:end] = False
    return np.flatnonzero(outside)


def mutate(data: bytes, positions: np.ndarray, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    out = bytearray(data)
    for _ in range(int(rng.integers(1, 5))):
        at = int(positions[rng.integers(len(positions))])
        how = int(rng.integers(4))
        if how == 0:
            out[at] ^= 1 << int(rng.integers(8))  # one bit
        elif how == 1:
            out[at] = int(rng.integers(256))  # any byte
        else:
            out[at] = 0x00 if how == 2 else 0xFF  # the extremes a length or offset can take
    return bytes(out)


def main(argv: list[str]) -> int:
    faulthandler.enable()  # a native crash prints its stack to stderr
    # A damaged shape can ask for gigabytes (seed 4658 once asked for 15 GB, and the OOM
    # killer took the worker, and could have taken anything else on the machine): past
    # this address-space limit an allocation fails inside the worker instead.
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    bundle, work, first, count = Path(argv[0]), Path(argv[1]), int(argv[2]), int(argv[3])
    manifest = json.loads((bundle / "manifest.json").read_text())
    originals = {
        role: (bundle / manifest["models"][role]["file"]).read_bytes() for role in set(ROLES)
    }
    positions = {role: table_positions(data) for role, data in originals.items()}
    image = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    for seed in range(first, first + count):
        role = ROLES[seed % len(ROLES)]
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(bundle, work)
        target = work / manifest["models"][role]["file"]
        target.write_bytes(mutate(originals[role], positions[role], seed))
        edited = json.loads((work / "manifest.json").read_text())
        edited["models"][role]["sha256"] = sha256_file(target)
        (work / "manifest.json").write_text(json.dumps(edited))
        print(f"start {seed}", flush=True)
        try:
            with Captioner.open(work) as captioner:
                captioner.caption(image)
                captioner.caption(image, decode=BEAM)  # the step at a batch of beams
        except BundleError as exc:
            named = str(exc).startswith(str(target))
            print(f"refused {seed}" if named else f"unnamed {seed} {exc}", flush=True)
        except Exception as exc:  # what the test is looking for
            print(f"traceback {seed} {type(exc).__name__}: {exc}".replace("\n", " "), flush=True)
        else:
            print(f"ok {seed}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
