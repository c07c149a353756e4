"""METEOR 1.5 through pycocoevalcap's wrapper around its Java jar.

METEOR needs WordNet synonyms and a paraphrase table that only the jar ships, so unlike BLEU,
ROUGE-L and CIDEr-D (`edgecap.edge_runtime.evaluation.metrics`) it is not re-implemented: it is scored on the
workstation when Java and pycocoevalcap are there, and skipped (None) rather than failing a
training run when they are not. The jar takes several seconds to load its tables, so score a whole
corpus in one call.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import subprocess
import threading
from collections.abc import Mapping, Sequence

log = logging.getLogger(__name__)


def meteor_score(
    hypotheses: Mapping[str, str], references: Mapping[str, Sequence[str]]
) -> float | None:
    """Corpus METEOR as pycocoevalcap's `Meteor`, or None (with one warning) if it can't run.

    Inputs are normalized captions, as for `caption_metrics`; `hypotheses[id]` is scored against
    `references[id]`.
    """
    if not hypotheses:
        raise ValueError("no hypotheses to score")
    gts: dict[str, list[str]] = {}
    res: dict[str, list[str]] = {}
    for key, hyp in hypotheses.items():
        refs = list(references.get(key) or [])
        if not refs:
            raise ValueError(f"no reference captions for {key!r}")
        # The jar reads one line per request with "|||" between fields; either would desync it.
        if any("\n" in s or "\r" in s or "|||" in s for s in [hyp, *refs]):
            raise ValueError(f"caption for {key!r} contains a newline or '|||'; normalize it first")
        gts[key], res[key] = refs, [hyp]

    if shutil.which("java") is None:
        log.warning("METEOR skipped: no `java` on PATH (pycocoevalcap's METEOR is a Java jar)")
        return None
    try:
        from pycocoevalcap.meteor.meteor import Meteor
    except ImportError:
        log.warning("METEOR skipped: pycocoevalcap is not installed (pip install pycocoevalcap)")
        return None

    scorer = Meteor()
    try:
        score, _ = scorer.compute_score(gts, res)
    except (ValueError, OSError) as exc:
        # A dead JVM shows up as an empty line that fails float(), or a broken pipe.
        raise RuntimeError(f"METEOR's Java process failed: {_stderr_of(scorer)}") from exc
    finally:
        _close(scorer)
    return float(score)


def _stderr_of(scorer) -> str:
    proc = scorer.meteor_p
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        return "it is still running but gave no score"
    text = proc.stderr.read().decode(errors="replace").strip()
    return f"exit code {proc.returncode}: {text[-2000:] or '(no stderr)'}"


def _close(scorer) -> None:
    """End the JVM now rather than whenever pycocoevalcap's `__del__` happens to run."""
    proc = scorer.meteor_p
    with contextlib.suppress(OSError):  # unflushed bytes to a dead JVM: nothing to save
        proc.stdin.close()
    proc.kill()
    proc.wait()
    proc.stdout.close()
    proc.stderr.close()
    # compute_score leaves its lock held if it raises, and `__del__` acquires it: a fresh lock
    # keeps garbage collection from hanging. `__del__`'s own close/kill/wait are then no-ops.
    scorer.lock = threading.Lock()
