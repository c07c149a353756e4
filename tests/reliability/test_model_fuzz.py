"""Damaged FlatBuffer tables in a bundle's model files, with the manifest's hash recomputed
(so the SHA-256 check cannot catch them): opening and captioning gives a caption or a
BundleError naming the file, never a traceback, a native crash or a hang.

The bytes changed lie outside the weight buffers (97-99% of a file, which no parser
follows): in the tables, vectors and strings that the FlatBuffer check, LiteRT's verifier
and XNNPACK's prepare read. Cases run in a subprocess (model_fuzz_worker.py), so that a
segmentation fault is a failed case rather than a dead test run; a worker that crashes
or hangs is restarted after the case that killed it.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("model_fuzz_worker.py")
CASE_TIMEOUT_S = 20  # a case takes a few hundredths of a second; far past that is a hang


def _run_cases(bundle: Path, work: Path, first: int, count: int) -> dict[str, list]:
    results: dict[str, list] = {
        "ok": [], "refused": [], "unnamed": [], "traceback": [], "crash": [], "hang": []
    }  # fmt: skip
    seed, end = first, first + count
    while seed < end:
        try:
            done = subprocess.run(
                [sys.executable, str(WORKER), str(bundle), str(work), str(seed), str(end - seed)],
                capture_output=True,
                text=True,
                timeout=60 + CASE_TIMEOUT_S * (end - seed) / 10,
                env={**os.environ, "PYTHONFAULTHANDLER": "1"},
            )
            lines, died, hung = done.stdout.splitlines(), done.returncode != 0, False
            stderr = done.stderr
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout or b""
            lines = (out.decode() if isinstance(out, bytes) else out).splitlines()
            died, hung, stderr = True, True, ""
        last = None
        for line in lines:
            kind, number, *rest = line.split(" ", 2)
            if kind == "start":
                last = int(number)
            else:
                results[kind].append((int(number), *rest))
                last = None
        if not died:
            break
        if last is None:  # died before its first case: nothing to blame, nothing to skip
            raise AssertionError(f"the fuzz worker failed to start: {stderr[-2000:]}")
        results["hang" if hung else "crash"].append((last, stderr[-2000:]))
        seed = last + 1
    return results


def _check(results: dict[str, list], count: int) -> None:
    seen = sum(len(v) for v in results.values())
    assert seen == count
    assert results["traceback"] == []
    assert results["crash"] == []
    assert results["hang"] == []
    assert results["unnamed"] == []
    assert results["refused"], "no case was refused: the mutations reach nothing"


def test_damaged_model_tables_are_refused_or_harmless(e2e, tmp_path):
    """300 seeded cases in `make test`."""
    _check(_run_cases(e2e["bundle"], tmp_path / "work", 0, 300), 300)


@pytest.mark.slow
def test_damaged_model_tables_many_more(e2e, tmp_path):
    """3,000 more cases in `make test-all`."""
    _check(_run_cases(e2e["bundle"], tmp_path / "work", 1000, 3000), 3000)
