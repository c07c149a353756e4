"""Self-critical sequence training (Rennie et al. 2017): fine-tune a trained run on CIDEr-D.

Cross-entropy training teaches the decoder the next word of a reference; users judge
whole captions. SCST samples `samples` captions per training image from the decoder,
scores each against the image's training references with CIDEr-D (document frequencies
from the training references, as in the paper), and raises the log-probability of the
captions that beat the mean of the other samples of the same image (the "new SCST"
baseline, which needs no greedy decode).

The result is an ordinary run directory (same encoder, vocabulary and architecture, new
decoder weights), so export, evaluation and the device runtime take it unchanged. With
`train_blocks`, the reward trains the encoder's last blocks too, from the image files
(scst_encoder.py), and the run keeps its own encoder.
Resumable per epoch like caption-train; the kept decoder is the best epoch on dev
CIDEr-D (greedy), and the parent itself when no epoch beats it.

A twoway run (Wang et al.'s two LSTMs, one reading left to right and one right to left)
trains both directions at once: each samples its own captions for the same images, the
backward ones are read back in word order before they are scored, and each sample's
baseline is the mean of its own direction's other samples (each direction is a policy of
its own, and the device keeps whichever caption is likelier).

The reward sees where a caption ends: the end token is scored as a word, in the sampled
caption and in the references alike (as ruotianluo's self-critical.pytorch does). Without
it, "a man stands in front of a" loses nothing against "... of a building" that CIDEr-D
notices, and the policy learns to stop on a dangling "a" (one caption in seven did).

    RUN/config.json   the parent's, plus "scst": these settings and the parent's path
    RUN/checkpoints/  checkpoint.py's: last.npz (with optimizer), best.npz, history.jsonl
                      (epoch 0 is the parent)
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edgecap.edge_runtime.atomic import write_json_atomic
from edgecap.edge_runtime.evaluation.metrics import CiderD, corpus_bleu, references_for, score_split
from edgecap.edge_runtime.text import ends_dangling
from edgecap.edge_runtime.vocab import NEVER_EMITTED_IDS

from .checkpoint import TrainingCheckpoint
from .decoders import BACKWARD_PREFIX
from .finetune import mirrored_text
from .runs import RunError, load_run, saved_stage

log = logging.getLogger(__name__)
# The BLSTM re-reads its whole prefix at every word: it has no stepwise sampler.
SCST_KINDS = ("lstm", "merge", "attend", "twoway")


@dataclass
class ScstConfig:
    epochs: int = 5  # passes over the train images
    learning_rate: float = 5e-5  # Adam, constant: SCST moves a trained decoder a little
    samples: int = 5  # captions sampled per image; each one's baseline is the others' mean reward
    images_per_batch: int = 64  # a step sees images_per_batch x samples captions
    seed: int = 0
    # reward = CIDEr-D + bleu4_weight x the sample's own BLEU-4; the kept epoch is the best
    # on the same mix over dev. 0: CIDEr-D alone (Rennie et al.).
    bleu4_weight: float = 0.0
    # Score the end token as a word (CaptionReward). Runs made before it existed did not.
    end_aware: bool = True
    # An epoch whose greedy dev captions end dangling more often than this is never kept,
    # however it scores: BLEU-4 and CIDEr-D barely notice "... in front of a".
    max_dev_dangling: float = 0.005
    # The encoder's last N blocks learn from the reward too, from the image files
    # (scst_encoder.py); 0: the encoder stays frozen and the features are cached.
    train_blocks: int = 0
    # Adam, constant; read only with train_blocks. 5e-6 and the device's pixels gained on
    # Flickr8k dev where 2e-5 and augmented images lost (docs/flickr8k.md, se1 and se2).
    encoder_learning_rate: float = 5e-6
    # With train_blocks: finetune's crops, flips and colour jitter of the images (False:
    # the images as the device sees them, as the cached features are).
    augment: bool = False
    # Score, keep and save a moving average of the trained weights (weight_average.py)
    # instead of the live ones; 0: off. The samples still come from the live weights.
    ema_decay: float = 0.0
    # Subtracted from the reward of a sampled caption that ends on a dangling word
    # (text.DANGLING_WORDS: "... in front of a"). The end-aware reward makes such an ending
    # cost only the n-grams it fails to match, which long SCST runs learn to pay for
    # "standing in front of a" (1% of dev captions after 24 epochs); 0: no penalty.
    dangling_penalty: float = 0.0

    def to_json(self) -> dict:
        return asdict(self)


def _sampler(
    model, kind: str, start_id: int, end_id: int, pad_id: int, steps: int, ban, prefix: str = ""
):
    """tf.function(features [N, F] or [N, P, F], seed [2]) -> sampled tokens [N, steps],
    <pad> after <end>. The same math as decoders.DecoderStepFunctions, over the model's live
    variables, so it samples from the weights being trained. `prefix` names the layers of
    one direction of a twoway model (whose every direction is lstm's math; the embedding is
    shared); a backward direction's tokens are its caption's words last to first."""
    import tensorflow as tf

    if kind == "twoway":
        kind = "lstm"
    embeddings = model.get_layer("embedding").embeddings
    cell = model.get_layer(f"{prefix}lstm").cell
    logits_layer = model.get_layer(f"{prefix}logits")
    hidden_layer = model.get_layer("hidden") if kind in ("merge", "attend") else None

    def first_state(features):
        """(h, c, what each step also reads: merge's image embedding, attend's memory)."""
        if kind in ("lstm", "attend"):
            pooled = tf.reduce_mean(features, axis=1) if kind == "attend" else features
            h = model.get_layer(f"{prefix}init_h")(pooled)
            c = model.get_layer(f"{prefix}init_c")(pooled)
            if kind == "lstm":
                return h, c, tf.zeros_like(h)
            return h, c, model.get_layer("attention_memory")(features)  # [N, P, U]
        image = model.get_layer("image_embedding")(features)  # [N, U]
        zeros = tf.zeros_like(image)
        return zeros, zeros, image

    def output(h, extra):
        if kind == "lstm":
            return h
        if kind == "merge":
            return hidden_layer(h + extra)
        query = model.get_layer("attention_query")(h)  # [N, U]
        weights = tf.nn.softmax(tf.reduce_sum(extra * query[:, None, :], axis=2))  # [N, P]
        context = tf.reduce_sum(extra * weights[:, :, None], axis=1)  # [N, U]
        return hidden_layer(tf.concat([h, context], axis=1))

    @tf.function(reduce_retracing=True)
    def sample(features, seed):
        h, c, extra = first_state(features)
        count = tf.shape(features)[0]
        token = tf.fill([count], start_id)
        done = tf.zeros([count], tf.bool)
        out = tf.TensorArray(tf.int32, size=steps)
        for t in tf.range(steps):
            x = tf.gather(embeddings, token)  # [N, E]
            z = tf.matmul(x, cell.kernel) + tf.matmul(h, cell.recurrent_kernel) + cell.bias
            i, f, g, o = tf.split(z, 4, axis=1)  # Keras gate order; each [N, U]
            c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
            h = tf.sigmoid(o) * tf.tanh(c)
            logits = logits_layer(output(h, extra)) + ban  # [N, V]
            drawn = tf.random.stateless_categorical(logits, 1, seed=seed + t)[:, 0]
            token = tf.where(done, pad_id, tf.cast(drawn, tf.int32))
            out = out.write(t, token)
            done = done | tf.equal(token, end_id)
        return tf.transpose(out.stack())  # [steps, N] -> [N, steps]

    return sample


def policy_loss(model, features, inputs, targets, advantages, ban):
    """The policy-gradient loss of sampled captions: minus each token's log-probability
    times its caption's advantage, over the words and <end> (advantages [N, T]; twoway: a
    row holds one caption of each direction, each with its own)."""
    import tensorflow as tf

    valid = tf.cast(tf.not_equal(targets, 0), tf.float32)  # [N, T]: words and the <end>
    logits = model({"features": features, "tokens": inputs}, training=False)  # [N, T, V]
    log_probs = tf.nn.log_softmax(logits + ban)
    chosen = tf.gather(log_probs, targets, batch_dims=2)  # [N, T]
    return -tf.reduce_sum(advantages * chosen * valid) / tf.reduce_sum(valid)


def _train_step(model, ban):
    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def step(features, inputs, targets, advantages):
        with tf.GradientTape() as tape:
            loss = policy_loss(model, features, inputs, targets, advantages, ban)
        variables = model.trainable_variables
        model.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
        return loss

    return step


class CachedFeatures:
    """The images of each step as features extracted once by the frozen encoder."""

    checkpointed: dict = {}  # nothing of its own to checkpoint or keep
    kept: tuple[str, ...] = ()

    def __init__(self, train: np.ndarray, dev: np.ndarray, config: ScstConfig, train_step):
        self.train, self.dev, self.config, self.step = train, dev, config, train_step

    def dev_features(self) -> np.ndarray:
        return self.dev

    def batches(self, epoch: int):
        """(image indices [B], features [B, F], flipped (None), features [B*K, F]) per step."""
        config = self.config
        order = np.random.default_rng([config.seed, epoch]).permutation(len(self.train))
        for start in range(0, len(order), config.images_per_batch):
            batch = order[start : start + config.images_per_batch]
            features = self.train[batch]  # [B, F]
            yield batch, features, None, np.repeat(features, config.samples, axis=0)  # [B*K, F]

    def save(self, out: Path) -> None:
        pass  # the encoder did not change: the run keeps the parent's copy


class CaptionReward:
    """A sampled caption's reward against its image's references: CIDEr-D (document
    frequencies from all the references given) plus bleu4_weight x its own BLEU-4.

    With end_aware, the end token is one more word at the end of every reference and of
    every caption that ended (a caption cut at the length limit gets none), so the n-grams
    "of a <end>" and "a <end>" find no reference and the dangling ending costs reward.
    A caption that ended on a dangling word loses dangling_penalty besides.
    """

    def __init__(
        self,
        references: dict[str, list[str]],
        end_word: str,
        bleu4_weight: float = 0.0,
        end_aware: bool = True,
        dangling_penalty: float = 0.0,
    ) -> None:
        self.dangling_penalty = dangling_penalty
        self.suffix = f" {end_word}" if end_aware else ""
        self.references = {k: [r + self.suffix for r in refs] for k, refs in references.items()}
        self.cider = CiderD(self.references)
        self.bleu4_weight = bleu4_weight

    def __call__(self, key: str, caption: str, ended: bool = True) -> float:
        text = caption + self.suffix if ended else caption
        value = self.cider.score(key, text)
        if self.bleu4_weight:
            value += self.bleu4_weight * corpus_bleu({key: text}, {key: self.references[key]})[3]
        if ended and self.dangling_penalty and ends_dangling(caption):
            value -= self.dangling_penalty
        return value


def _in_word_order(text: str, direction: int) -> str:
    """A sampled caption's words as a reader reads them: a backward sample (direction 1)
    draws the last word first."""
    return " ".join(reversed(text.split())) if direction else text


def _advantages(rewards: np.ndarray) -> np.ndarray:
    """rewards [B, K] -> [B * K]: each reward minus the mean of its image's other samples."""
    count = rewards.shape[1]
    others = (rewards.sum(axis=1, keepdims=True) - rewards) / (count - 1)  # [B, K]
    return (rewards - others).reshape(-1).astype(np.float32)  # [B, K] -> [B*K]


def _prepare_run(parent, out: Path, config: ScstConfig) -> None:
    """The new run directory: the parent's vocabulary and encoder, its config plus ours."""
    out.mkdir(parents=True, exist_ok=True)
    settings = {**config.to_json(), "parent": str(parent.path.resolve())}
    config_file = out / "config.json"
    # Runs made before the reward mix, the end-aware reward and the learning encoder
    # trained without them.
    older = {"bleu4_weight": 0.0, "end_aware": False, "max_dev_dangling": 1.0,
             "train_blocks": 0, "encoder_learning_rate": ScstConfig.encoder_learning_rate,
             "augment": False, "ema_decay": 0.0, "dangling_penalty": 0.0}  # fmt: skip
    resumed = saved_stage(out, "scst", settings, defaults=older)
    if resumed is not None:
        saved, written = resumed
        if settings["epochs"] > saved["epochs"]:  # more epochs: go on from the last one
            write_json_atomic(config_file, {**written, "scst": {**saved, **settings}})
        return
    for name in ("vocab.json", "encoder.keras"):
        shutil.copyfile(parent.path / name, out / name)
    write_json_atomic(config_file, {**parent.config_json, "scst": settings})


def _scst_step(
    batch: np.ndarray,
    features: np.ndarray,
    flipped: np.ndarray | None,
    step_input,
    seed: list[int],
    train_ids: list[str],
    samplers: list,
    reward: CaptionReward,
    train_step,
    vocab,
    config: ScstConfig,
) -> float:
    """One SCST step on a batch of training images (their indices, features [B, F], which
    of them were flipped): `config.samples` captions sampled per image and direction, each
    rewarded against its references, then one policy-gradient step on `step_input` (the
    features or the pixels, as the source's train step reads them). Returns the batch's
    mean reward."""
    import tensorflow as tf

    repeated = np.repeat(features, config.samples, axis=0)  # [B, F] -> [B*K, F]
    images = np.repeat(batch, config.samples)
    mirrored = (
        np.zeros(len(images), bool) if flipped is None else np.repeat(flipped, config.samples)
    )
    drawn, rewards = [], []
    for direction, sample in enumerate(samplers):
        direction_seed = [seed[0], seed[1] + direction * 7919]
        tokens = sample(tf.constant(repeated), tf.constant(direction_seed, tf.int32)).numpy()
        ended = (tokens == vocab.end_id).any(axis=1)  # [B*K]: not cut at the limit
        captions = [_in_word_order(vocab.decode(row), direction) for row in tokens]
        # A flipped image's caption is scored as one of the image its references describe.
        captions = [mirrored_text(c) if m else c for c, m in zip(captions, mirrored, strict=True)]
        drawn.append(tokens)  # [B*K, steps]
        rewards.append(np.array(
            [reward(train_ids[i], text, stop)
             for i, text, stop in zip(images, captions, ended, strict=True)]
        ).reshape(len(batch), config.samples))  # fmt: skip  # [B*K] -> [B, K]
    length = max(int((t != vocab.pad_id).sum(axis=1).max()) for t in drawn)
    targets = [t[:, :length] for t in drawn]  # each [B*K, T]: no column of padding alone
    inputs = [
        np.concatenate([np.full((len(t), 1), vocab.start_id, np.int32), t[:, :-1]], axis=1)
        for t in targets
    ]  # each [B*K, T]: teacher forcing on the sampled caption
    advantages = [np.repeat(_advantages(r)[:, None], length, axis=1) for r in rewards]
    # twoway's model reads [B*K, 2T]: the forward captions, then the backward ones.
    train_step(tf.constant(step_input), tf.constant(np.concatenate(inputs, axis=1)),
               tf.constant(np.concatenate(targets, axis=1)),
               tf.constant(np.concatenate(advantages, axis=1)))  # fmt: skip
    return float(np.mean(rewards))


def scst(
    parent_dir: str | Path,
    out_dir: str | Path,
    config: ScstConfig,
    feature_cache: str | None = None,
    progress: bool = True,
) -> dict:
    """Fine-tune the run at parent_dir with SCST into out_dir; returns the dev history."""
    import keras
    import tensorflow as tf
    from tqdm import tqdm

    from edgecap.edge_runtime.evaluation.datasets import load_dataset

    from .keras_captioner import caption_cached
    from .scst_encoder import LearningEncoder
    from .training import _save_keras_atomic
    from .weight_average import WeightAverage, scores_with_average

    if config.samples < 2:
        raise ValueError("--samples must be at least 2: each sample's baseline is the others' mean")
    if config.train_blocks < -1 or config.encoder_learning_rate < 0:
        raise ValueError("--train-blocks is a count of blocks (-1: the whole encoder) and "
                         "--encoder-learning-rate is not negative")  # fmt: skip
    parent = load_run(parent_dir)
    kind = parent.decoder_config.kind
    if kind not in SCST_KINDS:
        raise RunError(
            f"{parent.path}: a {kind} decoder; SCST fine-tunes {' or '.join(SCST_KINDS)} runs"
        )
    out = Path(out_dir)
    _prepare_run(parent, out, config)
    dataset = load_dataset(parent.config.data)
    vocab, decoder_config = parent.vocab, parent.decoder_config
    reward = CaptionReward(
        references_for(dataset, dataset.splits["train"]),
        vocab.tokens[vocab.end_id],
        config.bleu4_weight,
        config.end_aware,
        config.dangling_penalty,
    )

    def objective(scores: dict) -> float:
        """What the kept epoch maximizes on dev; -inf for an epoch that may not be kept."""
        if "dev_cider_d" not in scores:  # an epoch recovered without its dev scores
            return -np.inf
        if scores.get("dev_dangling_endings", 0.0) > config.max_dev_dangling:
            return -np.inf
        return scores["dev_cider_d"] + config.bleu4_weight * scores["dev_bleu4"]

    ban = np.zeros(len(vocab), np.float32)
    ban[list(NEVER_EMITTED_IDS)] = -1e9  # the same ids the runtime's search never picks
    ban = tf.constant(ban)
    train_ids, dev_ids = dataset.splits["train"], dataset.splits["dev"]
    model = keras.models.load_model(parent.path / "decoder.keras", safe_mode=True, compile=False)
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate, clipnorm=5.0))
    model.optimizer.build(model.trainable_variables)
    if config.train_blocks:
        source = LearningEncoder(parent, dataset, config, model, ban)
        log.info("scst: %d encoder layers learn (%s ... %s)", len(source.learning),
                 source.learning[:1], source.learning[-1:])  # fmt: skip
    else:
        source = CachedFeatures(*_cached_features(parent, dataset, feature_cache, progress),
                                config, _train_step(model, ban))  # fmt: skip

    trained = [model, *(source.checkpointed[name] for name in source.kept)]
    average = (
        WeightAverage(trained, config.ema_decay, model.optimizer.iterations)
        if config.ema_decay
        else None
    )

    def scores_now(prefix: str) -> dict:
        predictions = caption_cached(model, decoder_config, vocab, source.dev_features(), dev_ids)
        scores = score_split(dataset, "dev", predictions)
        return {f"{prefix}dev_bleu4": scores.bleu4, f"{prefix}dev_cider_d": scores.cider_d,
                f"{prefix}dev_dangling_endings": scores.dangling_endings}  # fmt: skip

    def dev_scores() -> dict:
        return scores_with_average(average, scores_now)

    steps_per_epoch = math.ceil(len(train_ids) / config.images_per_batch)
    checkpoint = TrainingCheckpoint(
        out / "checkpoints",
        {"model": model, "optimizer": model.optimizer, **source.checkpointed,
         **({"average": average} if average else {})},
        kept=["average"] if average else ["model", *source.kept],
        optimizer="optimizer", steps_per_epoch=steps_per_epoch, objective=objective,
    )  # fmt: skip
    # The parent's dev scores are epoch 0's, taken before any checkpoint is restored.
    done = checkpoint.resume(baseline=lambda: {"parent": True, **dev_scores()},
                             rescore=dev_scores)  # fmt: skip
    if done:
        log.info("resuming %s after epoch %d of %d", out, done, config.epochs)
    else:
        log.info("parent on dev: %s", checkpoint.history[0])

    steps = decoder_config.max_length + 1  # words and the <end>
    # One sampler per direction (twoway: left to right, then right to left).
    prefixes = ("", BACKWARD_PREFIX) if kind == "twoway" else ("",)
    samplers = [
        _sampler(model, kind, vocab.start_id, vocab.end_id, vocab.pad_id, steps, ban, prefix)
        for prefix in prefixes
    ]
    for epoch in range(done, config.epochs):
        start = time.perf_counter()
        mean_rewards = []
        bar = tqdm(source.batches(epoch), total=steps_per_epoch,
                   desc=f"scst epoch {epoch + 1}/{config.epochs}", disable=not progress)  # fmt: skip
        for number, (batch, features, flipped, step_input) in enumerate(bar):
            seed = [config.seed * 100003 + epoch, number * 1009]
            mean_rewards.append(_scst_step(batch, features, flipped, step_input, seed, train_ids,
                                           samplers, reward, source.step, vocab, config))  # fmt: skip
            if average is not None:
                average.update()
            bar.set_postfix(reward=f"{np.mean(mean_rewards[-20:]):.3f}")
        entry = checkpoint.end_epoch(
            {"epoch": epoch + 1, "seconds": round(time.perf_counter() - start, 1),
             "train_reward": round(float(np.mean(mean_rewards)), 4), **dev_scores()}
        )  # fmt: skip
        log.info("scst epoch %d: %s", epoch + 1, entry)

    kept = checkpoint.restore_best()
    if kept is None:  # no epoch beat the parent on dev: its decoder (and encoder) stay
        model = keras.models.load_model(parent.path / "decoder.keras", safe_mode=True,
                                        compile=False)  # fmt: skip
    else:
        if average is not None:  # best.npz holds the kept epoch's average
            average.copy_to_models()
        source.save(out)
    _save_keras_atomic(model, out / "decoder.keras")
    log.info("kept %s as %s", f"epoch {kept['epoch']}" if kept else "the parent",
             out / "decoder.keras")  # fmt: skip
    return {"epochs_done": checkpoint.epochs_done, "history": checkpoint.history}


def _cached_features(parent, dataset, feature_cache: str | None, progress: bool):
    """The train and dev features of the parent's frozen encoder, from the cache or
    extracted into it: ([N_train, F], [N_dev, F])."""
    from .encoders import get_encoder_spec
    from .features import extract_features
    from .keras_captioner import feature_cache_weights

    spec = get_encoder_spec(parent.config.encoder.name)
    weights = feature_cache_weights(parent, spec)
    cache = feature_cache or parent.config.train.feature_cache or None
    return tuple(
        extract_features(
            dataset,
            split,
            spec,
            weights,
            parent.encoder,
            cache,
            progress=progress,
            prep=parent.preprocessing,
        )  # fmt: skip
        for split in ("train", "dev")
    )
