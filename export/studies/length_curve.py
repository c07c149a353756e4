"""Decoder cost over caption length: the BLSTM re-reads its whole prefix every word, the
LSTM carries its state, the twoway decoder runs two LSTM decodes (left to right and right
to left), and this shows what that costs per caption.

    python export/studies/length_curve.py BUNDLE... --out DIR [--repeats 30]

For each bundle and each length T = 1 .. max caption length it times decoder_init plus T
decoder steps on one image's features (the words fed are the argmax of the step before,
with <end> masked out, so every caption runs its full T steps), and reports the median
over --repeats. A twoway bundle's time at T is both directions' init and T steps each:
every caption is decoded once per direction. Writes DIR/length_curve.json and DIR/length_curve.png.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from edgecap.edge_runtime.atomic import atomic_path, write_json_atomic
from edgecap.edge_runtime.captioner import Captioner
from edgecap.edge_runtime.decoding import TwoWayModel
from edgecap.edge_runtime.vocab import NEVER_EMITTED_IDS


def time_lengths(captioner: Captioner, features: np.ndarray, repeats: int) -> dict[int, float]:
    """{T: median ms of decoder_init + T steps (per direction for twoway)}; one pass of
    max_length steps per repeat, with the time at every T read on the way (so T and T + 1
    share their first T steps)."""
    manifest = captioner.manifest
    model = captioner.step_model
    # Every step model a caption runs: one, or a twoway bundle's two directions.
    directions = [model.forward, model.backward] if isinstance(model, TwoWayModel) else [model]
    longest = manifest.max_length
    samples: list[list[float]] = [[] for _ in range(longest)]
    for _ in range(repeats + 1):  # the first pass warms the interpreters up
        start = time.perf_counter()
        states = [steps.init(features) for steps in directions]
        tokens = [np.array([manifest.start_id], np.int32) for _ in directions]
        for t in range(longest):
            for d, steps in enumerate(directions):
                log_probs, states[d] = steps.step(tokens[d], states[d])
                log_probs = np.array(log_probs)
                log_probs[:, [*NEVER_EMITTED_IDS, manifest.end_id]] = -np.inf  # never stop early
                tokens[d] = np.argmax(log_probs, axis=-1).astype(np.int32)
            samples[t].append((time.perf_counter() - start) * 1e3)
    return {t + 1: float(np.median(s[1:])) for t, s in enumerate(samples)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="export/studies/length_curve.py", description=__doc__.split("\n")[0]
    )
    parser.add_argument("bundles", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=30, help="passes per bundle (default 30)")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    curves = {}
    for bundle in args.bundles:
        with Captioner.open(bundle) as captioner:
            image = rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)
            features = captioner.encode(image)  # [1, F]
            kind = captioner.manifest.decoder_kind
            curve = time_lengths(captioner, features, args.repeats)
        curves[str(bundle)] = {"decoder": kind, "ms_by_length": curve}
        print(
            f"{bundle} ({kind}): "
            + ", ".join(f"T={t} {ms:.2f} ms" for t, ms in curve.items() if t in (1, 5, 10, 15, 20))
        )
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "length_curve.json", {"repeats": args.repeats, "curves": curves})
    _plot(curves, args.out / "length_curve.png")
    print(f"wrote {args.out / 'length_curve.json'} and length_curve.png")
    return 0


def _plot(curves: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, curve in curves.items():
        lengths = [int(t) for t in curve["ms_by_length"]]
        ax.plot(
            lengths,
            list(curve["ms_by_length"].values()),
            marker=".",
            label=f"{curve['decoder']}: {Path(name).name}",
        )
    ax.set_xlabel("caption length (words)")
    ax.set_ylabel("decoder time per caption, median (ms)")
    ax.set_title("Decoder cost over caption length")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
