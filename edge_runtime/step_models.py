"""Step models per decoder kind, over any backend: the state bookkeeping that evaluation
(Keras) and the device (TFLite, ONNX) share, so that both decode with the same code.

A backend supplies two callables that take and return named numpy arrays:
`init_fn(features=...)` and `step_fn(**inputs)`. The names are the manifest's.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .decoding import TwoWayModel

NamedArrays = dict[str, np.ndarray]
InitFn = Callable[..., NamedArrays]
StepFn = Callable[..., NamedArrays]

DECODER_KINDS = ("lstm", "merge", "blstm", "attend", "twoway")
# Kinds whose encoder gives a feature map [B, P, F] (P spatial positions), not a vector [B, F].
SPATIAL_KINDS = ("attend",)

# The second pair of model roles a twoway bundle has: the right-to-left LSTM's init and step,
# with the same tensor names as the left-to-right pair (decoder_init, decoder_step).
BACKWARD_ROLES = {"decoder_init": "decoder_init_backward", "decoder_step": "decoder_step_backward"}
_LSTM_TENSORS = {
    "decoder_init": {"inputs": ["features"], "outputs": ["h", "c"]},
    "decoder_step": {"inputs": ["token", "h", "c"], "outputs": ["log_probs", "h_next", "c_next"]},
}

# Tensor names of decoder_init and decoder_step per decoder kind (the manifest's contract),
# and of decoder_init_backward and decoder_step_backward for twoway.
DECODER_TENSORS: dict[str, dict[str, dict[str, list[str]]]] = {
    # Show and Tell: the image sets the LSTM's initial state.
    "lstm": _LSTM_TENSORS,
    # The image embedding joins the LSTM output at every step; the state still carries.
    "merge": {
        "decoder_init": {"inputs": ["features"], "outputs": ["h", "c", "image_embedding"]},
        "decoder_step": {
            "inputs": ["token", "h", "c", "image_embedding"],
            "outputs": ["log_probs", "h_next", "c_next"],
        },
    },
    # A bidirectional LSTM re-reads the whole prefix every step: no state to carry.
    # image_embedding [B, 4U] is the initial (h, c) of both directions, set by the image.
    "blstm": {
        "decoder_init": {"inputs": ["features"], "outputs": ["image_embedding"]},
        "decoder_step": {"inputs": ["prefix", "image_embedding"], "outputs": ["log_probs"]},
    },
    # Show and Tell's inject, plus attention over the encoder's feature map after each word
    # (the LSTM output is the query). memory [B, P, U] is the projected map, set once.
    "attend": {
        "decoder_init": {"inputs": ["features"], "outputs": ["h", "c", "memory"]},
        "decoder_step": {
            "inputs": ["token", "h", "c", "memory"],
            "outputs": ["log_probs", "h_next", "c_next"],
        },
    },
    # Wang et al. 2016: two inject LSTMs, one generating the caption left to right and one
    # right to left; each pair is an lstm's, and the likelier of the two captions is kept.
    "twoway": {
        **_LSTM_TENSORS,
        **{BACKWARD_ROLES[role]: names for role, names in _LSTM_TENSORS.items()},
    },
}


class RecurrentStepModel:
    """LSTM inject, merge and attend: state (h, c[, image_embedding or memory]) goes in and
    comes back out."""

    def __init__(self, kind: str, init_fn: InitFn, step_fn: StepFn):
        self.state_names = tuple(DECODER_TENSORS[kind]["decoder_init"]["outputs"])
        self.init_fn, self.step_fn = init_fn, step_fn
        step = DECODER_TENSORS[kind]["decoder_step"]
        assert step["inputs"] == ["token", *self.state_names]  # run(token, *state) below
        # A backend that offers it (TFLite) runs the step positionally, without dicts.
        positional = getattr(step_fn, "positional", None)
        self._run = positional(step["inputs"], step["outputs"]) if positional else None

    def init(self, features: np.ndarray) -> tuple[np.ndarray, ...]:
        out = self.init_fn(features=np.asarray(features, dtype=np.float32))
        return tuple(out[name] for name in self.state_names)

    def step(self, tokens: np.ndarray, state: tuple[np.ndarray, ...]):
        tokens = np.asarray(tokens, dtype=np.int32)
        # The image embedding (merge) and the attention memory do not change between steps.
        if self._run is not None:
            log_probs, h, c = self._run(tokens, *state)
            return log_probs, (h, c, *state[2:])
        out = self.step_fn(token=tokens, **dict(zip(self.state_names, state, strict=True)))
        return out["log_probs"], (out["h_next"], out["c_next"], *state[2:])


class PrefixStepModel:
    """BLSTM: the state is the prefix so far; every step re-reads all of it (O(T^2) per caption)."""

    def __init__(self, init_fn: InitFn, step_fn: StepFn, prefix_length: int):
        self.init_fn, self.step_fn = init_fn, step_fn
        self.prefix_length = prefix_length

    def init(self, features: np.ndarray) -> tuple[np.ndarray, ...]:
        embedding = self.init_fn(features=np.asarray(features, dtype=np.float32))["image_embedding"]
        batch = embedding.shape[0]
        prefix = np.zeros((batch, self.prefix_length), dtype=np.int32)  # [B, L], 0 = padding
        length = np.zeros((batch,), dtype=np.int32)
        return (prefix, length, embedding)

    def step(self, tokens: np.ndarray, state: tuple[np.ndarray, ...]):
        prefix, length, embedding = state
        if int(length.max()) >= self.prefix_length:
            raise ValueError(
                f"prefix is full ({self.prefix_length} tokens); raise max_length at export"
            )
        prefix = prefix.copy()
        prefix[np.arange(len(tokens)), length] = tokens
        out = self.step_fn(prefix=prefix, image_embedding=embedding)
        return out["log_probs"], (prefix, length + 1, embedding)


def decoder_roles(kind: str) -> tuple[str, ...]:
    """The decoder's model roles of a kind: decoder_init, decoder_step (and for twoway the
    backward pair after them)."""
    return tuple(DECODER_TENSORS[kind])


def make_step_model(
    kind: str,
    init_fn: InitFn,
    step_fn: StepFn,
    prefix_length: int | None = None,
    backward: tuple[InitFn, StepFn] | None = None,
):
    """The decoding.StepModel for a decoder kind, over a backend's init and step callables;
    for twoway, a decoding.TwoWayModel over those (left to right) and `backward`'s (the
    init and step of decoder_init_backward and decoder_step_backward)."""
    if kind == "twoway":
        if backward is None:
            raise ValueError("a twoway step model needs the backward init and step too")
        return TwoWayModel(
            RecurrentStepModel("lstm", init_fn, step_fn), RecurrentStepModel("lstm", *backward)
        )
    if kind in ("lstm", "merge", "attend"):
        return RecurrentStepModel(kind, init_fn, step_fn)
    if kind == "blstm":
        if not prefix_length:
            raise ValueError("a BLSTM step model needs its prefix length")
        return PrefixStepModel(init_fn, step_fn, prefix_length)
    raise ValueError(f"unknown decoder kind {kind!r}; this runtime knows {DECODER_KINDS}")
