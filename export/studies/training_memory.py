"""Peak resident memory and time of training, each case one `caption-train` in its own
process (its peak is the kernel's ru_maxrss for that child: nothing else is counted).

    python export/studies/training_memory.py --flickr8k DIR --weights V2.h5 --out DIR
    caption-bench render training-memory DIR/training-memory.json --into README.md

A study, not part of the installed package (make bench-training runs it from the checkout).

Cases (one epoch each, `--final-split none`, a fresh feature cache per case unless "warm"):
- Flickr8k LSTM 512, cold cache: MobileNetV2 feature extraction of 8,000 photos, then one
  epoch, in one process (what a first `caption-train` does);
- Flickr8k LSTM 512 and BLSTM 256 (`--epoch-fraction 0.2`), warm cache: training alone;
- synthetic data with 10,000 and 100,000 training captions (2,666 and 26,660 images),
  LSTM 128, to show that memory does not grow with the captions.
Like every benchmark here it imports no training code: the cases are console commands.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from edgecap.benchmarks.tables import markdown_table

LSTM = ["--decoder", "lstm", "--units", "512", "--embed-dim", "512", "--min-count", "5"]
BLSTM = ["--decoder", "blstm", "--units", "256", "--embed-dim", "256", "--min-count", "5",
         "--epoch-fraction", "0.2", "--batch-size", "512"]  # fmt: skip
# The synthetic cases measure growth with the captions, not the model: a small LSTM keeps
# an epoch of 100,000 captions to minutes on 2 cores.
SMALL_LSTM = ["--decoder", "lstm", "--units", "128", "--embed-dim", "64"]
ONE_EPOCH = ["--epochs", "1", "--keep", "last", "--final-split", "none"]


@dataclass(frozen=True)
class Case:
    name: str
    data: str  # "flickr8k" or "synthetic:IMAGES"
    flags: tuple[str, ...]
    cache: str  # "cold": a new feature cache; "warm": the one a cold case filled


@dataclass
class Measured:
    case: str
    captions: int  # training captions
    peak_rss_gb: float
    seconds: float
    exit_code: int


CASES = (
    Case("Flickr8k LSTM, cold cache (extraction + 1 epoch)", "flickr8k", tuple(LSTM), "cold"),
    Case("Flickr8k LSTM, warm cache (1 epoch)", "flickr8k", tuple(LSTM), "warm"),
    Case("Flickr8k BLSTM, warm cache (1 epoch of 0.2)", "flickr8k", tuple(BLSTM), "warm"),
    Case("synthetic, 10,000 captions (1 epoch)", "synthetic:2666", tuple(SMALL_LSTM), "cold"),
    Case("synthetic, 100,000 captions (1 epoch)", "synthetic:26660", tuple(SMALL_LSTM), "cold"),
)


def _bin(name: str) -> str:
    local = Path(sys.executable).with_name(name)
    return str(local) if local.exists() else name


def _peak_of(command: list[str], log: Path) -> tuple[float, float, int]:
    """(peak RSS in GB, seconds, exit code) of one command run to its end."""
    start = time.perf_counter()
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_maxrss / 1e6, time.perf_counter() - start, process.returncode  # KB -> GB


def _training_captions(data: Path) -> int:
    ids = set((data / "Flickr_8k.trainImages.txt").read_text().split())
    lines = (data / "Flickr8k.token.txt").read_text().splitlines()
    return sum(1 for line in lines if line.split("#")[0] in ids)


def run(flickr8k: Path, weights: Path, out: Path, names: list[str] | None = None) -> list[Measured]:
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for index, case in enumerate(CASES):
        if names and case.name not in names and str(index) not in names:
            continue
        work = out / f"case-{index}"
        if case.data == "flickr8k":
            data, encoder = flickr8k, ["--encoder", "mobilenet_v2", "--weights", str(weights)]
            cache = out / "cache-flickr8k"
        else:
            images = int(case.data.split(":")[1])
            data, encoder = out / f"synthetic-{images}", ["--encoder", "mobilenet_synth"]
            cache = out / f"cache-synthetic-{images}"
            if not (data / "Flickr8k.token.txt").exists():
                subprocess.run([_bin("caption-data"), "synth", str(data), "--images", str(images)],
                               check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        if case.cache == "cold":
            shutil.rmtree(cache, ignore_errors=True)
        elif not cache.exists():
            raise SystemExit(
                f"{case.name}: needs the cache a cold Flickr8k case fills ({cache}); run case 0 first"
            )
        shutil.rmtree(work, ignore_errors=True)  # a run folder left from before would resume
        command = [_bin("caption-train"), "--data", str(data), *encoder, *case.flags, *ONE_EPOCH,
                   "--feature-cache", str(cache), "--out", str(work / "run")]  # fmt: skip
        work.mkdir(parents=True, exist_ok=True)
        print(f"{case.name}: {' '.join(command)}", flush=True)
        peak, seconds, code = _peak_of(command, work / "log.txt")
        row = Measured(case.name, _training_captions(data), round(peak, 2), round(seconds, 1), code)
        print(f"  peak {row.peak_rss_gb} GB, {row.seconds} s, exit {code}", flush=True)
        results.append(row)
    return results


def training_memory_table(rows: list[dict]) -> str:
    """The README's table: the cases that finished."""
    header = ["case", "training captions", "peak RSS", "seconds"]
    body = [[r["case"], f"{r['captions']:,}", f"{r['peak_rss_gb']:.2f} GB", f"{r['seconds']:.0f}"]
            for r in rows if r["exit_code"] == 0]  # fmt: skip
    return markdown_table(header, body)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="export/studies/training_memory.py",
                                     description=__doc__.split("\n")[0])  # fmt: skip
    parser.add_argument("--flickr8k", type=Path, required=True, help="Flickr8k-layout folder")
    parser.add_argument("--weights", type=Path, required=True, help="MobileNetV2 α=1.0 .h5")
    parser.add_argument("--out", type=Path, default=Path("artifacts/bench/training-memory"))
    parser.add_argument("--cases", default="", help="comma list of case numbers (default all)")
    args = parser.parse_args(argv)
    for path in (args.flickr8k, args.weights):
        if not path.exists():
            parser.error(f"{path}: not found")
    names = [c for c in args.cases.split(",") if c] or None
    rows = run(args.flickr8k, args.weights, args.out, names)
    from edgecap.benchmarks.fingerprint import fingerprint
    from edgecap.edge_runtime.atomic import write_json_atomic
    from edgecap.edge_runtime.schema import to_json

    result_file = args.out / "training-memory.json"
    previous = json.loads(result_file.read_text())["rows"] if result_file.exists() else []
    merged = {r["case"]: r for r in previous} | {r.case: asdict(r) for r in rows}
    ordered = [merged[c.name] for c in CASES if c.name in merged]
    write_json_atomic(result_file, {"machine": to_json(fingerprint()), "rows": ordered})
    print(training_memory_table(ordered))
    return 0


if __name__ == "__main__":
    sys.exit(main())
