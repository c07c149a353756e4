"""`caption-train`: train a caption decoder on a Flickr8k-layout dataset, or pretrain the
synthetic demo encoder."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from edgecap.edge_runtime.errors import EdgeCaptionError


def _train_parser(parser: argparse.ArgumentParser) -> None:
    from .decoders import DECODER_KINDS, DecoderConfig
    from .encoders import ENCODERS
    from .training import TrainConfig

    d, t = DecoderConfig(), TrainConfig()
    parser.add_argument("--data", required=True, help="dataset folder in the Flickr8k layout")
    parser.add_argument(
        "--encoder",
        default=t.encoder,
        choices=list(ENCODERS),
        help=f"CNN encoder (default {t.encoder})",
    )
    parser.add_argument(
        "--weights",
        default="default",
        help="imagenet | none | FILE | default (the registry's choice)",
    )
    parser.add_argument(
        "--decoder",
        default=d.kind,
        choices=DECODER_KINDS,
        help="decoder kind (default lstm: LSTM inject)",
    )
    parser.add_argument(
        "--out", required=True, help="run directory; an existing run with the same settings resumes"
    )
    parser.add_argument("--epochs", type=int, default=t.epochs, help=f"default {t.epochs}")
    parser.add_argument(
        "--batch-size", type=int, default=t.batch_size, help=f"default {t.batch_size}"
    )
    parser.add_argument(
        "--learning-rate", type=float, default=t.learning_rate, help=f"default {t.learning_rate}"
    )
    parser.add_argument(
        "--units", type=int, default=d.units, help=f"LSTM units (default {d.units})"
    )
    parser.add_argument(
        "--embed-dim",
        type=int,
        default=d.embed_dim,
        help=f"word embedding size (default {d.embed_dim})",
    )
    parser.add_argument(
        "--min-count", type=int, default=t.min_count, help="rarer words become <unk>"
    )
    parser.add_argument("--seed", type=int, default=t.seed)
    parser.add_argument(
        "--feature-cache",
        default="",
        help="feature cache folder (default ~/.cache/edge-caption/features)",
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if argv and argv[0] == "pretrain-encoder":
        parser = argparse.ArgumentParser(
            prog="caption-train pretrain-encoder",
            description="Pretrain the synthetic demo encoder.",
        )
        parser.add_argument(
            "--data", required=True, help="a synthetic dataset (caption-data synth)"
        )
        parser.add_argument("--out", required=True, help="where to write the encoder .keras file")
        parser.add_argument(
            "--epochs", type=int, default=None, help="default: PretrainConfig.epochs"
        )
        parser.add_argument("--seed", type=int, default=0)
        args = parser.parse_args(argv[1:])
        from .pretrain_encoder import PretrainConfig, pretrain

        try:
            config = PretrainConfig(seed=args.seed)
            if args.epochs is not None:
                config.epochs = args.epochs
            result = pretrain(args.data, args.out, config)
        except EdgeCaptionError as exc:
            print(f"caption-train: error: {exc}", file=sys.stderr)
            return 2
        print(json.dumps(result, indent=1))
        return 0

    parser = argparse.ArgumentParser(
        prog="caption-train", description="Train a caption decoder (subcommand: pretrain-encoder)."
    )
    _train_parser(parser)
    args = parser.parse_args(argv)
    from .decoders import DecoderConfig
    from .training import TrainConfig, train

    config = TrainConfig(
        data=args.data,
        encoder=args.encoder,
        weights=args.weights,
        decoder=DecoderConfig(kind=args.decoder, units=args.units, embed_dim=args.embed_dim),
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        min_count=args.min_count,
        seed=args.seed,
        feature_cache=args.feature_cache,
    )
    try:
        metrics = train(config, args.out)
    except (EdgeCaptionError, FileNotFoundError, ValueError) as exc:
        print(f"caption-train: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"\ncaption-train: interrupted; rerun the same command to resume from the last checkpoint in {args.out}",
            file=sys.stderr,
        )
        return 130
    print("test split: " + ", ".join(f"{k} {v}" for k, v in metrics.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
