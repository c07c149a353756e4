"""`caption-train`: train a caption decoder, evaluate a run or bundle, or pretrain the
synthetic demo encoder.

    caption-train --data DIR (--config RECIPE | --encoder E --decoder D) --out RUN
    caption-train evaluate (RUN | BUNDLE) --data DIR [--split test] [--beam K] [--out DIR]
    caption-train scst RUN --out RUN2 [--epochs N] [--learning-rate LR] [--samples K]
    caption-train finetune RUN --out RUN2 [--train-blocks N] [--epochs N] [--final-split dev]
    caption-train gallery LABEL=PREDICTIONS... --data DIR --out DIR
    caption-train pretrain-encoder --data SYNTH --out FILE
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import fields

from edgecap.edge_runtime.decoding import add_decode_options, decode_options_from_args
from edgecap.edge_runtime.errors import EdgeCaptionError, interrupted
from edgecap.edge_runtime.step_models import DECODER_KINDS

from .distribute import DISTRIBUTE_CHOICES

USER_ERRORS = (EdgeCaptionError, FileNotFoundError, ValueError)


def _train_parser() -> argparse.ArgumentParser:
    from .configs import config_names
    from .decoders import DecoderConfig
    from .encoders import ENCODERS
    from .training import TrainConfig

    d, t = DecoderConfig(), TrainConfig()
    parser = argparse.ArgumentParser(
        prog="caption-train",
        description="Train a caption decoder. Other subcommands (`caption-train NAME --help`): "
        + ", ".join(SUBCOMMANDS)
        + ".",
    )
    parser.add_argument(
        "--data",
        required=True,
        help="dataset: a folder in the Flickr8k layout, a Karpathy split .json file "
        "(dataset_flickr8k.json), or a COCO folder (annotations/captions_*.json)",
    )
    parser.add_argument(
        "--out", required=True, help="run directory; rerunning with the same settings resumes"
    )
    parser.add_argument(
        "--config",
        metavar="RECIPE",
        help="a recipe's train section: a name in train/configs/ ("
        + ", ".join(config_names())
        + ") or a .json file; other flags override it",
    )
    parser.add_argument(
        "--preset",
        choices=config_names("seed-"),
        help="one of the seed's configurations (the same as --config NAME); other flags "
        "override it",
    )
    parser.add_argument(
        "--encoder",
        metavar="NAME",
        help=f"CNN encoder: {', '.join(ENCODERS)} (default {t.encoder})",
    )
    parser.add_argument(
        "--alpha",
        type=float,
        help="MobileNet width multiplier (e.g. 0.35); names the encoder's width, so "
        "--encoder mobilenet_v2 --alpha 0.35 is mobilenet_v2_035",
    )
    parser.add_argument(
        "--weights", help="imagenet | none | FILE | default (the registry's choice)"
    )
    parser.add_argument(
        "--decoder",
        choices=DECODER_KINDS,
        help="lstm (inject), merge, blstm, attend (inject plus attention over the "
        "encoder's feature map), or twoway (a left-to-right and a right-to-left LSTM, the "
        "likelier caption kept); default lstm",
    )
    parser.add_argument("--epochs", type=int, help=f"default {t.epochs}")
    parser.add_argument("--batch-size", type=int, help=f"default {t.batch_size}")
    parser.add_argument("--learning-rate", type=float, help=f"default {t.learning_rate}")
    parser.add_argument("--units", type=int, help=f"LSTM units (default {d.units})")
    parser.add_argument(
        "--embed-dim", type=int, help=f"word embedding size (default {d.embed_dim})"
    )
    parser.add_argument("--dropout", type=float, help=f"training dropout (default {d.dropout})")
    parser.add_argument(
        "--min-count", type=int, help=f"rarer words become <unk> (default {t.min_count})"
    )
    parser.add_argument(
        "--max-length",
        type=int,
        help="longest caption in words; longer training captions are cut "
        "(default: the longest training caption, at most 30)",
    )
    parser.add_argument(
        "--keep",
        choices=["dev_cider_d", "last"],
        help="which epoch's decoder the run keeps: the best greedy CIDEr-D on the dev split, "
        f"or the last (default {t.keep})",
    )
    parser.add_argument(
        "--epoch-fraction",
        type=float,
        help="share of the training examples each epoch sees, drawn afresh per epoch "
        f"(default {t.epoch_fraction}; ~0.2 keeps a BLSTM epoch affordable)",
    )
    parser.add_argument("--seed", type=int, help=f"default {t.seed}")
    parser.add_argument(
        "--feature-cache", help="feature cache folder (default ~/.cache/edge-caption/features)"
    )
    _add_final_split_and_scale_out(parser)
    return parser


def _add_final_split_and_scale_out(parser: argparse.ArgumentParser) -> None:
    """--final-split, --distribute and --devices: the same for every command that trains."""
    parser.add_argument(
        "--final-split",
        choices=["test", "dev", "none"],
        default="test",
        help="the split scored (greedy) when training ends; dev while choosing settings, so "
        "that the test split is scored once, for the final model (default test)",
    )
    parser.add_argument(
        "--distribute",
        choices=DISTRIBUTE_CHOICES,
        default="none",
        help="tf.distribute strategy: none (one device), mirrored (every local GPU, or "
        "--devices), multi-worker (the cluster in TF_CONFIG; run the same command on every "
        "worker, --out and --feature-cache on shared storage). The batch size stays the "
        "global batch (default none)",
    )
    parser.add_argument(
        "--devices",
        default="",
        help="for --distribute mirrored: comma list of TensorFlow devices, e.g. GPU:0,GPU:1 "
        "(default every GPU)",
    )


def build_config(args: argparse.Namespace):
    """TrainConfig from its defaults, then the recipe (--config or --preset), then the
    flags given; a flag's dest is the name of the field it sets (--decoder sets kind)."""
    from .configs import NOT_IN_A_RECIPE, load_config
    from .decoders import DecoderConfig
    from .training import TrainConfig

    if args.config and args.preset:
        raise ValueError("--preset NAME is --config NAME: pass one of them")
    recipe = args.config or args.preset
    train_fields = dict(load_config(recipe)["train"]) if recipe else {}
    decoder_fields = dict(train_fields.pop("decoder", {}))
    train_fields["data"] = args.data
    given = {k: v for k, v in vars(args).items() if v is not None}
    for f in fields(TrainConfig):
        if f.name not in ("data", "decoder") and f.name in given:
            train_fields[f.name] = given[f.name]
    for f in fields(DecoderConfig):
        flag = "decoder" if f.name == "kind" else f.name
        if flag in given and f.name not in NOT_IN_A_RECIPE["train.decoder"]:
            decoder_fields[f.name] = given[flag]
    if args.alpha is not None or args.encoder is not None:
        from .encoders import get_encoder_spec

        name = train_fields.get("encoder", TrainConfig.encoder)
        train_fields["encoder"] = get_encoder_spec(name, args.alpha).name
    return TrainConfig(**train_fields, decoder=DecoderConfig(**decoder_fields))


def _recipe_defaults(parser: argparse.ArgumentParser, argv: list[str], section: str) -> None:
    """--config RECIPE for a subcommand: the recipe's `section` becomes the parser's
    defaults, so that flags on the command line still win."""
    from .configs import load_config

    parser.add_argument(
        "--config",
        metavar="RECIPE",
        help=f"take the settings from a recipe's {section} section: a name in "
        "train/configs/ or a .json file; flags given here win",
    )
    # Only --config is read here: the rest is parsed, and checked, once, with its defaults.
    first = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    first.add_argument("--config")
    known, _ = first.parse_known_args(argv)
    if known.config:
        try:
            recipe = load_config(known.config)
        except ValueError as exc:
            parser.error(str(exc))
        if section not in recipe:
            parser.error(f"{known.config}: the recipe has no {section} section")
        parser.set_defaults(**recipe[section])


def _pretrain(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="caption-train pretrain-encoder", description="Pretrain the synthetic demo encoder."
    )
    parser.add_argument("--data", required=True, help="a synthetic dataset (caption-data synth)")
    parser.add_argument("--out", required=True, help="where to write the encoder .keras file")
    parser.add_argument("--epochs", type=int, default=None, help="default: PretrainConfig.epochs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    from .pretrain_encoder import PretrainConfig, pretrain

    config = PretrainConfig(seed=args.seed)
    if args.epochs is not None:
        config.epochs = args.epochs
    result = pretrain(args.data, args.out, config)
    print(json.dumps(result, indent=1))
    return 0


def _evaluate(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="caption-train evaluate",
        description="Decode a split with a run (Keras) or a bundle (TFLite) and score it.",
    )
    parser.add_argument("target", help="run directory or bundle folder")
    parser.add_argument(
        "--data",
        required=True,
        help="dataset: a folder in the Flickr8k layout, a Karpathy split .json file "
        "(dataset_flickr8k.json), or a COCO folder (annotations/captions_*.json)",
    )
    parser.add_argument("--split", default="test", help="train, dev or test (default test)")
    add_decode_options(parser, "a bundle's own, 0 for a run")
    parser.add_argument("--out", help="output folder (default TARGET/eval-SPLIT-beamK)")
    parser.add_argument("--feature-cache", help="feature cache folder for runs")
    parser.add_argument(
        "--no-meteor", action="store_true", help="skip METEOR (it starts a Java process)"
    )
    args = parser.parse_args(argv)
    decode = decode_options_from_args(parser, args)
    from .evaluate import evaluate, format_table

    metrics = evaluate(
        args.target,
        args.data,
        args.split,
        decode.beam_width,
        args.out,
        decode.length_penalty,
        args.feature_cache,
        not args.no_meteor,
    )
    print(format_table(metrics))
    return 0


def _gallery(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="caption-train gallery",
        description="An HTML page and a PNG contact sheet of test photos with their "
        "references and several models' captions (from predictions.jsonl files).",
    )
    parser.add_argument(
        "sources", nargs="+", metavar="LABEL=PREDICTIONS", help="e.g. keras=EVAL/predictions.jsonl"
    )
    parser.add_argument("--data", required=True, help="the dataset the predictions are of")
    parser.add_argument("--out", required=True, help="output folder (keep it under artifacts/)")
    parser.add_argument("--split", default="test", help="default test")
    parser.add_argument("--images", type=int, default=24, help="photos on the page (default 24)")
    args = parser.parse_args(argv)
    sources = {}
    for item in args.sources:
        label, sep, path = item.partition("=")
        if not sep or not label or not path:
            parser.error(f"{item!r}: expected LABEL=PREDICTIONS")
        sources[label] = path
    from .gallery import write_gallery

    index, sheet = write_gallery(args.data, sources, args.out, args.split, args.images)
    print(f"wrote {index} and {sheet}")
    return 0


def _add_config_options(parser: argparse.ArgumentParser, cls: type, helps: dict[str, str]) -> None:
    """One option per field of the dataclass `cls`, its default the field's: --field-name
    VALUE, or for a switch, `helps`' key "--no-field-name" turning off one that defaults to
    True, "--field-name" turning on one that defaults to False."""
    defaults = cls()
    for f in fields(cls):
        value = getattr(defaults, f.name)
        if isinstance(value, bool):
            flag = f"--{'no-' if value else ''}{f.name.replace('_', '-')}"
            parser.add_argument(flag, dest=f.name, action="store_false" if value else "store_true",
                                help=helps[flag])  # fmt: skip
            continue
        shown = f"{value:g}" if isinstance(value, float) else value
        text = helps.get(f.name, "")
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=type(value), default=value,
                            help=f"{text} (default {shown})" if text else f"default {shown}")  # fmt: skip


def _stage_command(argv: list[str], stage: str, cls: type, description: str,
                   helps: dict[str, str]) -> tuple[argparse.ArgumentParser, argparse.Namespace]:  # fmt: skip
    """The parser and arguments of a command that makes a new run from a finished one
    (`finetune`, `scst`): RUN --out RUN2, the fields of its config `cls`, --config."""
    parser = argparse.ArgumentParser(prog=f"caption-train {stage}", description=description)
    parser.add_argument("run", help="the finished run to start from (it is not changed)")
    parser.add_argument("--out", required=True, help="the new run directory")
    _add_config_options(parser, cls, helps)
    parser.add_argument("--feature-cache", help="feature cache folder (default: the parent's)")
    if stage == "finetune":
        _add_final_split_and_scale_out(parser)
    _recipe_defaults(parser, argv, stage)
    return parser, parser.parse_args(argv)


def _interrupted_stage(stage: str, out: str) -> int:
    return interrupted(f"\ncaption-train {stage}: interrupted; rerun the same command to go on "
                       f"from epoch {_epochs_done(out) + 1}")  # fmt: skip


SCST_HELP = {
    "epochs": "passes over the train images",
    "learning_rate": "Adam, constant",
    "samples": "captions sampled per image, at least 2",
    "bleu4_weight": "reward = CIDEr-D + this x the sample's BLEU-4; the kept epoch is the best "
    "on the same mix over dev (0: CIDEr-D alone)",
    "--no-end-aware": "score captions without their end token, as runs before the end-aware "
    "reward did (their greedy captions end on 'a', 'of', 'with' ... up to one in seven)",
    "max_dev_dangling": "never keep an epoch whose greedy dev captions end on a dangling word "
    "more often than this share",
    "train_blocks": "the encoder's last N blocks learn from the reward too, from the image "
    "files (-1: all of it); 0: the encoder stays frozen and its features are cached",
    "encoder_learning_rate": "the encoder's Adam rate, constant (with --train-blocks)",
    "--augment": "with --train-blocks: fine-tuning's crops, flips and colour jitter of the "
    "images (default: the images as the device sees them)",
    "ema_decay": "score on dev, keep and save a moving average of the trained weights with "
    "this decay per step, e.g. 0.999 (0: the live weights)",
    "dangling_penalty": "subtracted from the reward of a sampled caption that ends on a "
    "dangling word ('... in front of a'); 0: none",
}


def _scst(argv: list[str]) -> int:
    from .scst import ScstConfig, scst

    parser, args = _stage_command(
        argv, "scst", ScstConfig,
        "Fine-tune a finished lstm, merge, attend or twoway run on CIDEr-D with self-critical "
        "sequence training; writes a new run directory that export and evaluate take as is.",
        SCST_HELP,
    )  # fmt: skip
    if not 0.0 <= args.max_dev_dangling <= 1.0:
        parser.error("--max-dev-dangling is a share between 0 and 1")
    if not 0.0 <= args.ema_decay < 1.0:
        parser.error("--ema-decay is a decay per step in [0, 1), e.g. 0.999 (0: off)")
    if args.dangling_penalty < 0:
        parser.error("--dangling-penalty is not negative (0: none)")
    config = ScstConfig(**{f.name: getattr(args, f.name) for f in fields(ScstConfig)})
    try:
        state = scst(args.run, args.out, config, args.feature_cache)
    except KeyboardInterrupt:
        return _interrupted_stage("scst", args.out)
    for entry in state["history"]:
        print(json.dumps(entry))
    return 0


FINETUNE_HELP = {
    "epochs": "passes over the train images",
    "train_blocks": "the encoder's last N blocks learn, with the layers after them; -1: all "
    "of it, 0: none",
    "learning_rate": "the decoder's Adam peak, cosine to 0",
    "encoder_learning_rate": "the encoder's",
    "images_per_batch": "images a step sees, each with all its captions",
    "crop_area": "random crops keep at least this share of the image; 1: no crops",
    "--no-flip": "no horizontal flips (by default half the images are flipped, 'left' and "
    "'right' swapped in their captions)",
    "jitter": "brightness, contrast and saturation move by at most this; 0: none",
    "ema_decay": "score on dev, keep and save a moving average of the trained weights (the "
    "encoder's that learn and the decoder's) with this decay per step, e.g. 0.999 (0: the "
    "live weights)",
}


def _finetune(argv: list[str]) -> int:
    from .finetune import FinetuneConfig, finetune

    parser, args = _stage_command(
        argv, "finetune", FinetuneConfig,
        "Train the encoder's last blocks together with the decoder of a finished lstm or "
        "merge run, from the image files (augmented), the encoder at a lower learning rate; "
        "writes a new run directory that scst, export and evaluate take as is. Rerun the "
        "same command to resume.",
        FINETUNE_HELP,
    )  # fmt: skip
    config = FinetuneConfig(**{f.name: getattr(args, f.name) for f in fields(FinetuneConfig)})
    try:
        config.check()
    except ValueError as exc:
        parser.error(str(exc))
    devices = [d.strip() for d in args.devices.split(",") if d.strip()]
    try:
        state = finetune(args.run, args.out, config, args.final_split, args.distribute,
                         devices, args.feature_cache)  # fmt: skip
    except KeyboardInterrupt:
        return _interrupted_stage("finetune", args.out)
    for entry in state.get("history", []):
        print(json.dumps(entry))
    if state.get("metrics"):
        print(json.dumps(state["metrics"]))
    return 0


def _epochs_done(out: str) -> int:
    """The last epoch the run logged (the checkpoint may hold one more: the rerun says)."""
    from pathlib import Path

    from .checkpoint import read_history

    return max((h["epoch"] for h in read_history(Path(out) / "checkpoints")), default=0)


def _extract(argv: list[str]) -> int:
    from .extract import SPLITS, extract, parse_shard, worker_from_tf_config

    parser = argparse.ArgumentParser(
        prog="caption-train extract",
        description="Fill the feature cache before training, on one worker or many: each "
        "computes its slice of the shards (--shard I/N, or its place in TF_CONFIG) into a "
        "shared --feature-cache; training then only joins them.",
    )
    parser.add_argument("--data", required=True, help="dataset folder (or Karpathy/COCO JSON)")
    parser.add_argument("--encoder", required=True, help="registry name, e.g. mobilenet_v2")
    parser.add_argument("--weights", default="default", help="imagenet, a file, or default")
    parser.add_argument("--feature-cache", required=True, help="the cache folder training will use")
    parser.add_argument("--splits", default=",".join(SPLITS), help="default train,dev,test")
    parser.add_argument("--shard", default=None, help="I/N: this is worker I of N (from 0)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--feature-map",
        action="store_true",
        help="cache the encoder's feature map, which --decoder attend reads, not its pooled features",
    )
    args = parser.parse_args(argv)
    splits = tuple(s.strip() for s in args.splits.split(",") if s.strip())
    worker = parse_shard(args.shard) if args.shard else worker_from_tf_config()
    done = extract(args.data, args.encoder, args.weights, args.feature_cache, splits, worker,
                   args.batch_size, spatial=args.feature_map)  # fmt: skip
    for split, what in done.items():
        print(f"{split}: {what}")
    return 0


def _train(argv: list[str]) -> int:
    args = _train_parser().parse_args(argv)
    from .training import resume_hint, train

    try:
        devices = [d.strip() for d in args.devices.split(",") if d.strip()]
        metrics = train(build_config(args), args.out, final_split=args.final_split,
                        distribute=args.distribute, devices=devices)  # fmt: skip
    except KeyboardInterrupt:
        # Every write is atomic, so whatever Ctrl-C interrupted, the checkpoint on disk is
        # whole: say where a rerun will pick up rather than print Keras' traceback.
        return interrupted(f"\ncaption-train: interrupted; {resume_hint(args.out)}")
    if metrics:
        print(f"{metrics['split']} split: " + ", ".join(f"{k} {v}" for k, v in metrics.items()))
    return 0


# `caption-train --data ...` trains; a first word from here runs that instead. The help
# lists these keys, so a new subcommand cannot be left out of it.
SUBCOMMANDS = {
    "evaluate": _evaluate,
    "scst": _scst,
    "finetune": _finetune,
    "extract": _extract,
    "gallery": _gallery,
    "pretrain-encoder": _pretrain,
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    command = SUBCOMMANDS.get(argv[0]) if argv else None
    try:
        return command(argv[1:]) if command else _train(argv)
    except USER_ERRORS as exc:
        print(f"caption-train: error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        if exc.name not in ("tensorflow", "keras", "tf2onnx"):
            raise
        from edgecap.train import no_tensorflow

        return no_tensorflow("caption-train", exc.name)
    except KeyboardInterrupt:  # evaluate and pretrain-encoder write their results at the end
        return interrupted("\ncaption-train: interrupted")


if __name__ == "__main__":
    sys.exit(main())
