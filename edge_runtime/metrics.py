"""Corpus BLEU-1..4 as the COCO caption evaluation code computes it ("closest" reference
length for the brevity penalty, counts clipped per n-gram). Inputs are normalized text."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence


def _ngrams(words: Sequence[str], n: int) -> Counter:
    return Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def corpus_bleu(
    hypotheses: Mapping[str, str], references: Mapping[str, Sequence[str]], max_n: int = 4
) -> list[float]:
    """BLEU-1..max_n over the corpus; `hypotheses[id]` is scored against `references[id]`."""
    if not hypotheses:
        raise ValueError("no hypotheses to score")
    tiny, small = 1e-9, 1e-15  # the smoothing constants of pycocoevalcap's bleu_scorer
    matches = [0.0] * max_n
    totals = [0.0] * max_n
    hyp_len = ref_len = 0
    for key, hyp in hypotheses.items():
        hyp_words = hyp.split()
        refs = [r.split() for r in references[key]]
        hyp_len += len(hyp_words)
        # "closest": the reference length nearest the hypothesis, shorter on ties.
        ref_len += min((abs(len(r) - len(hyp_words)), len(r)) for r in refs)[1]
        for n in range(1, max_n + 1):
            counts = _ngrams(hyp_words, n)
            max_ref: Counter = Counter()
            for r in refs:
                for gram, c in _ngrams(r, n).items():
                    max_ref[gram] = max(max_ref[gram], c)
            matches[n - 1] += sum(min(c, max_ref[g]) for g, c in counts.items())
            totals[n - 1] += max(len(hyp_words) - n + 1, 0)
    ratio = (hyp_len + tiny) / (ref_len + small)
    brevity = 1.0 if ratio >= 1 else math.exp(1 - 1 / ratio)
    scores, log_sum = [], 0.0
    for n in range(max_n):
        log_sum += math.log((matches[n] + tiny) / (totals[n] + small))
        scores.append(brevity * math.exp(log_sum / (n + 1)))
    return scores
