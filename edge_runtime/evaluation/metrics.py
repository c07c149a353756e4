"""Caption metrics (BLEU-1..4, ROUGE-L, CIDEr-D) as the COCO caption evaluation code computes them.

This mirrors pycocoevalcap 1.2 (`Bleu`, `Rouge`, `Cider`) operation for operation, so that numbers
computed on a device agree with pycocoevalcap's (bit for bit on the Flickr8k splits, see
tests/evaluation/test_metrics_vs_pycocoevalcap.py) without Java, TensorFlow or pycocoevalcap itself. Its quirks are kept on purpose: e.g. CIDEr's length penalty counts bigrams,
and ROUGE-L splits on single spaces. Inputs are already-normalized text (pycocoevalcap's Java
PTBTokenizer is not run); `hypotheses[id]` is one caption, `references[id]` a non-empty list.
METEOR needs Java and lives in `edgecap.edge_runtime.evaluation.meteor`. `score_split` is the
call most callers want: it fetches a split's references and scenes itself.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np

from ..errors import DatasetError
from ..text import ends_dangling, normalize_caption
from .caption_dataset import CaptionDataset

ROUGE_BETA = 1.2  # pycocoevalcap's value, "based on discussion with Hovey"
CIDER_N = 4
CIDER_SIGMA = 6.0
ROUND = 6  # decimal places of every metrics.json; tables show fewer


def _pairs(
    hypotheses: Mapping[str, str], references: Mapping[str, Sequence[str]]
) -> list[tuple[str, Sequence[str]]]:
    # pycocoevalcap only asserts; a clear error is kinder than an AssertionError deep inside.
    if not hypotheses:
        raise ValueError("no hypotheses to score")
    pairs = []
    for key, hyp in hypotheses.items():
        refs = references.get(key)
        if not refs:
            raise ValueError(f"no reference captions for {key!r}")
        pairs.append((hyp, refs))
    return pairs


def _ngrams(words: Sequence[str], n: int) -> Counter:
    return Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def corpus_bleu(
    hypotheses: Mapping[str, str], references: Mapping[str, Sequence[str]], max_n: int = 4
) -> list[float]:
    """BLEU-1..max_n over the corpus, as pycocoevalcap's `Bleu` ("closest" reference length).

    Counts are pooled over the corpus before the geometric mean, so this is not the mean of
    per-image BLEU. The smoothing constants (1e-15 on matches, 1e-9 on totals) are pycocoevalcap's;
    they keep a corpus with no matches at ~0 instead of raising on log(0).
    """
    tiny, small = 1e-15, 1e-9
    matches = [0] * max_n
    totals = [0] * max_n
    hyp_len = ref_len = 0
    for hyp, refs in _pairs(hypotheses, references):
        hyp_words = hyp.split()
        ref_words = [r.split() for r in refs]
        hyp_len += len(hyp_words)
        # "closest": the reference length nearest the hypothesis, shorter on ties.
        ref_len += min((abs(len(r) - len(hyp_words)), len(r)) for r in ref_words)[1]
        for n in range(1, max_n + 1):
            counts = _ngrams(hyp_words, n)
            max_ref: Counter = Counter()
            for r in ref_words:
                for gram, c in _ngrams(r, n).items():
                    max_ref[gram] = max(max_ref[gram], c)
            matches[n - 1] += sum(min(c, max_ref[g]) for g, c in counts.items())
            totals[n - 1] += max(len(hyp_words) - n + 1, 0)
    # Same running product and power as bleu_scorer.compute_score, not a sum of logs, so the
    # rounding matches too.
    scores, product = [], 1.0
    for n in range(max_n):
        product *= float(matches[n] + tiny) / (totals[n] + small)
        scores.append(product ** (1.0 / (n + 1)))
    ratio = (hyp_len + tiny) / (ref_len + small)
    if ratio < 1:
        scores = [s * math.exp(1 - 1 / ratio) for s in scores]
    return scores


def mean_sentence_bleu1(
    hypotheses: Mapping[str, str], references: Mapping[str, Sequence[str]]
) -> float:
    """The seed project's measure: the mean over images of sentence-level BLEU-1, as NLTK's
    `sentence_bleu(refs, hyp, weights=(1, 0, 0, 0))` computes it (clipped unigram precision
    times the brevity penalty against the closest reference length, no smoothing).

    Unlike corpus BLEU, short captions are penalized image by image, so it is lower than
    corpus BLEU-1 for a model that often says too little.
    """
    total, count = 0.0, 0
    for hyp, refs in _pairs(hypotheses, references):
        hyp_words = hyp.split()
        count += 1
        if not hyp_words:
            continue  # NLTK scores an empty hypothesis 0
        ref_words = [r.split() for r in refs]
        max_ref: Counter = Counter()
        for r in ref_words:
            for word, c in Counter(r).items():
                max_ref[word] = max(max_ref[word], c)
        matched = sum(min(c, max_ref[w]) for w, c in Counter(hyp_words).items())
        closest = min((abs(len(r) - len(hyp_words)), len(r)) for r in ref_words)[1]
        brevity = 1.0 if len(hyp_words) > closest else math.exp(1 - closest / len(hyp_words))
        total += brevity * matched / len(hyp_words)
    return total / count


def _lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    # One DP row instead of pycocoevalcap's full table; the length is an integer either way.
    if len(a) < len(b):
        a, b = b, a
    row = [0] * (len(b) + 1)
    for x in a:
        diag = 0
        for j, y in enumerate(b, start=1):
            up = row[j]
            row[j] = diag + 1 if x == y else max(up, row[j - 1])
            diag = up
    return row[-1]


def _rouge_l_image(hyp: str, refs: Sequence[str], beta: float = ROUGE_BETA) -> float:
    # split(" ") rather than split(): pycocoevalcap does so, and it differs on "" (one token).
    cand = hyp.split(" ")
    prec, rec = [], []
    for ref in refs:
        ref_tokens = ref.split(" ")
        lcs = _lcs_length(ref_tokens, cand)
        prec.append(lcs / float(len(cand)))
        rec.append(lcs / float(len(ref_tokens)))
    # Precision and recall are maximised separately (possibly over different references).
    p, r = max(prec), max(rec)
    if p == 0 or r == 0:
        return 0.0
    return ((1 + beta**2) * p * r) / float(r + beta**2 * p)


def corpus_rouge_l(hypotheses: Mapping[str, str], references: Mapping[str, Sequence[str]]) -> float:
    """Mean per-image ROUGE-L F (beta 1.2), as pycocoevalcap's `Rouge`.

    np.mean (pairwise summation) rather than sum()/len, to round the way pycocoevalcap does.
    """
    scores = [_rouge_l_image(hyp, refs) for hyp, refs in _pairs(hypotheses, references)]
    return float(np.mean(np.array(scores)))


def _cider_counts(sentence: str, n: int) -> dict[tuple[str, ...], int]:
    # Insertion order (all unigrams, then bigrams, ...) fixes the float summation order below.
    words = sentence.split()
    counts: dict[tuple[str, ...], int] = {}
    for k in range(1, n + 1):
        for i in range(len(words) - k + 1):
            gram = tuple(words[i : i + k])
            counts[gram] = counts.get(gram, 0) + 1
    return counts


class _CiderVectors:
    """tf-idf vectors keyed by n-gram order; idf from reference document frequency."""

    def __init__(self, crefs: list[list[dict]], n: int) -> None:
        self.n = n
        self.df: Counter = Counter()
        for refs in crefs:
            self.df.update({gram for ref in refs for gram in ref})
        self.log_images = np.log(float(len(crefs)))
        self._idf: dict[tuple[str, ...], float] = {}

    def __call__(self, counts: dict) -> tuple[list[dict], list[float], int]:
        vec: list[dict] = [{} for _ in range(self.n)]
        norm = [0.0] * self.n
        length = 0
        for gram, tf in counts.items():
            idf = self._idf.get(gram)
            if idf is None:
                # An n-gram no reference has gets df 1 (log 1 = 0), i.e. the largest weight.
                idf = self._idf[gram] = self.log_images - np.log(max(1.0, self.df[gram]))
            k = len(gram) - 1
            vec[k][gram] = float(tf) * idf
            norm[k] += pow(vec[k][gram], 2)
            if k == 1:  # pycocoevalcap's "length" counts bigrams, not words; kept for parity
                length += tf
        return vec, [np.sqrt(x) for x in norm], length


def _cider_sim(hyp: tuple, ref: tuple, n: int, sigma: float) -> np.ndarray:
    (vec_h, norm_h, len_h), (vec_r, norm_r, len_r) = hyp, ref
    delta = float(len_h - len_r)
    val = np.zeros(n)
    for k in range(n):
        for gram, weight in vec_h[k].items():
            ref_weight = vec_r[k].get(gram, 0.0)
            val[k] += min(weight, ref_weight) * ref_weight  # the "-D" clipping
        if norm_h[k] != 0 and norm_r[k] != 0:
            val[k] /= norm_h[k] * norm_r[k]
        val[k] *= math.e ** (-(delta**2) / (2 * sigma**2))  # the "-D" length penalty
    return val


class CiderD:
    """CIDEr-D of single captions against a fixed set of references, with document
    frequencies from exactly those references.

    corpus_cider_d is its mean over the images scored; self-critical training
    (train/scst.py) scores every sampled caption against its image's training references
    with one instance, as the SCST paper does with the training corpus' frequencies.
    """

    def __init__(
        self,
        references: Mapping[str, Sequence[str]],
        n: int = CIDER_N,
        sigma: float = CIDER_SIGMA,
    ) -> None:
        self.n, self.sigma = n, sigma
        self._ref_counts = {
            key: [_cider_counts(r, n) for r in refs] for key, refs in references.items()
        }
        self._to_vec = _CiderVectors(list(self._ref_counts.values()), n)
        self._ref_vectors: dict[str, list[tuple]] = {}

    def score(self, key: str, hypothesis: str) -> float:
        """10 x the mean over n-gram orders and references of the clipped, length-penalized
        cosine similarity (pycocoevalcap's summation order)."""
        refs = self._ref_vectors.get(key)
        if refs is None:
            counts = self._ref_counts.get(key)
            if not counts:
                raise ValueError(f"no reference captions for {key!r}")
            refs = self._ref_vectors[key] = [self._to_vec(c) for c in counts]
        hyp_vec = self._to_vec(_cider_counts(hypothesis, self.n))
        score = np.zeros(self.n)
        for ref_vec in refs:
            score += _cider_sim(hyp_vec, ref_vec, self.n, self.sigma)
        score_avg = np.mean(score)
        score_avg /= len(refs)
        score_avg *= 10.0
        return float(score_avg)


def corpus_cider_d(
    hypotheses: Mapping[str, str],
    references: Mapping[str, Sequence[str]],
    n: int = CIDER_N,
    sigma: float = CIDER_SIGMA,
) -> float:
    """CIDEr-D as pycocoevalcap's `Cider`: mean over images of 10 x mean-over-n cosine similarity.

    Document frequencies come from the references of exactly the images scored here (as in
    pycocoevalcap), so a score depends on the corpus: compare only scores over the same split.
    A one-image corpus scores 0, since every idf is then log(1) = 0.
    """
    _pairs(hypotheses, references)  # the same clear errors as every other metric
    scorer = CiderD({key: references[key] for key in hypotheses}, n, sigma)
    scores = [scorer.score(key, hyp) for key, hyp in hypotheses.items()]
    return float(np.mean(np.array(scores)))


@dataclass(frozen=True)
class Scores:
    """One split's scores: every metric this project reports, unrounded; to_json() rounds
    them, once, for every metrics.json and table."""

    images: int
    bleu1: float
    bleu2: float
    bleu3: float
    bleu4: float
    rouge_l: float
    cider_d: float
    bleu1_sentence_mean: float  # the seed project's measure: mean sentence-level BLEU-1
    # Share of captions ending on a word no caption ends on ("... in front of a"):
    # text.DANGLING_WORDS. No n-gram metric notices them.
    dangling_endings: float
    meteor: float | None = None  # None: not asked for, or no Java / pycocoevalcap here
    scene_accuracy: float | None = None  # synthetic datasets only

    def to_json(self) -> dict[str, float | int]:
        """The scores as metrics.json holds them (ROUND places); absent metrics are left out."""
        return {
            k: v if isinstance(v, int) else round(v, ROUND)
            for k, v in asdict(self).items()
            if v is not None
        }


def dangling_share(captions: Iterable[str]) -> float:
    """The share of captions that end on a dangling word (text.ends_dangling); 0 for none."""
    flags = [ends_dangling(c) for c in captions]
    return sum(flags) / len(flags) if flags else 0.0


def references_for(dataset: CaptionDataset, ids: Sequence[str]) -> dict[str, list[str]]:
    """{image id: its normalized reference captions} for the ids, from a CaptionDataset."""
    return {i: [normalize_caption(c) for c in dataset.captions[i]] for i in ids}


def score(
    predictions: Mapping[str, str],
    references: Mapping[str, Sequence[str]],
    scenes: Mapping[str, dict] | None = None,
    meteor: bool = False,
) -> Scores:
    """Score normalized captions {image id: text} against their references: corpus BLEU-1..4,
    ROUGE-L and CIDEr-D as pycocoevalcap, the seed's mean sentence BLEU-1, METEOR when asked
    (it needs Java), and scene accuracy when a synthetic dataset's scenes are given."""
    bleu = corpus_bleu(predictions, references, max_n=4)
    meteor_value = None
    if meteor:
        from .meteor import meteor_score

        meteor_value = meteor_score(predictions, references)
    scene_value = None
    if scenes:
        from .scenes import scene_accuracy

        scene_value = scene_accuracy(predictions, scenes)
    return Scores(
        images=len(predictions),
        bleu1=float(bleu[0]),
        bleu2=float(bleu[1]),
        bleu3=float(bleu[2]),
        bleu4=float(bleu[3]),
        rouge_l=corpus_rouge_l(predictions, references),
        cider_d=corpus_cider_d(predictions, references),
        bleu1_sentence_mean=mean_sentence_bleu1(predictions, references),
        dangling_endings=dangling_share(predictions.values()),
        meteor=meteor_value,
        scene_accuracy=scene_value,
    )


def score_split(
    dataset: CaptionDataset,
    split: str,
    predictions: Mapping[str, str],
    meteor: bool = False,
) -> Scores:
    """Score captions {image id: text} of images of one split of a CaptionDataset: the
    references come from the dataset and, for a synthetic one, the scenes from its
    scenes.json, so a caller never assembles them. The ids may be any part of the split
    (e.g. its first N images); one outside the split is refused, since a caption scored
    against another split's references would still produce plausible numbers."""
    if split not in dataset.splits:
        raise DatasetError(f"unknown split {split!r}; choose one of {sorted(dataset.splits)}")
    known = set(dataset.splits[split])
    outside = [i for i in predictions if i not in known]
    if outside:
        raise DatasetError(
            f"{len(outside)} captioned images are not in the {split} split, e.g. {outside[0]}"
        )
    from .scenes import load_scenes

    return score(
        predictions,
        references_for(dataset, list(predictions)),
        load_scenes(dataset.root),
        meteor=meteor,
    )


class CaptionFace(Protocol):
    """What the scorer needs of a captioner: the device's Captioner and train's
    KerasCaptioner both have it."""

    def caption_dataset(self, dataset, ids: Sequence[str], decode: Any = None) -> list[str]: ...


def caption_split(
    captioner: CaptionFace, dataset, ids: Sequence[str], decode: Any = None
) -> dict[str, str]:
    """{image id: caption} for the ids of a CaptionDataset, through the captioner's own
    decoding with `decode` (a DecodeOptions; None: the captioner's)."""
    return dict(zip(ids, captioner.caption_dataset(dataset, ids, decode), strict=True))
