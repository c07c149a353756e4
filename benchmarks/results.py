"""The table of evaluation rows (train/eval_table.py makes them from `caption-train
evaluate` outputs): `caption-bench render flickr8k` puts the committed record's into the
README, and `python -m edgecap.train.eval_table` prints the same table.
"""

from __future__ import annotations

from .tables import markdown_table

# The columns that say what was evaluated (each a row's key, titled by it), then the scores.
IDENTITY = ("encoder", "decoder", "training", "model", "beam")
COLUMNS = (
    ("BLEU-1", "bleu1"),
    ("BLEU-2", "bleu2"),
    ("BLEU-3", "bleu3"),
    ("BLEU-4", "bleu4"),
    ("ROUGE-L", "rouge_l"),
    ("CIDEr-D", "cider_d"),
    ("METEOR", "meteor"),
    ("sent. BLEU-1", "bleu1_sentence_mean"),
    ("scene acc.", "scene_accuracy"),
    # Captions ending on "a", "of", "with" ...: what the n-gram scores do not see.
    ("dangling endings", "dangling_endings"),
)
# A bundle's row against the Keras run it came from, at the same beam width.
VERSUS_KERAS = (
    ("Δ BLEU-4", "d_bleu4"),
    ("Δ CIDEr-D", "d_cider_d"),
    ("identical to Keras", "identical_to_keras"),
)


def _cell(key: str, value: float) -> str:
    return f"{value:.1%}" if key == "dangling_endings" else f"{value:.3f}"


def evaluation_markdown(evaluations: list[dict]) -> str:
    """The table of evaluation rows: the columns any row has, the Keras deltas where known."""
    present = [(title, key) for title, key in COLUMNS if any(key in r for r in evaluations)]
    versus = [(t, k) for t, k in VERSUS_KERAS if any(k in r for r in evaluations)]
    header = [*IDENTITY, *(t for t, _ in present + versus), "train time"]
    table = []
    for r in evaluations:
        cells = [str(r[k]) for k in IDENTITY]
        cells += [_cell(k, r[k]) if k in r else "" for _, k in present]
        cells += [
            f"{r[k]:+.3f}" if k.startswith("d_") and k in r else f"{r[k]:.3f}" if k in r else ""
            for _, k in versus
        ]
        seconds = r.get("train_seconds")
        cells.append(f"{seconds / 60:.1f} min" if seconds is not None else "")
        table.append(cells)
    return markdown_table(header, table, text_columns=len(IDENTITY))
