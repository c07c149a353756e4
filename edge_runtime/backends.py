"""Inference backends behind one small interface: named inputs in, named outputs out.

TFLite bundles: LiteRT (`ai_edge_litert`) is the default. `tflite_runtime` is accepted as
a fallback for older Raspberry Pi OS images and says so when it loads. Quantized inputs
and outputs are converted here with the tensor's own scale and zero point, so callers
always see float32.

ONNX bundles: onnxruntime, with a list of execution providers (CPU by default).

Every backend library is imported inside its class, so importing this module needs only
numpy, and a device installs just the backend its bundle format needs.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import io
import logging
import os
import re
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import BackendError, BundleError
from .flatbuffer_check import FlatBufferError, check_tflite_bytes

log = logging.getLogger(__name__)


@dataclass
class NativeLog:
    """What quiet_native_logs caught: the lines (filled when the block ends), and whether
    the load failed (set by the block, or by an exception leaving it)."""

    lines: list[str] = field(default_factory=list)
    failed: bool = False


# File descriptors 1 and 2 belong to the whole process: one quiet block at a time may point
# them elsewhere. Re-entrant, so that a block inside a block (a LiteRT call that loads while
# a quiet close runs) does not deadlock its own thread.
_NATIVE_LOG_LOCK = threading.RLock()
# What LiteRT's and glog's loggers write: "INFO: ...", "WARNING: ...", "I1204 12:00:00 ...",
# and cpuinfo's (XNNPACK's CPU detection): "Error in cpuinfo: failed to parse ...".
_NATIVE_LINE = re.compile(
    rb"^(?:(?:INFO|WARNING|ERROR|VERBOSE|DEBUG|FATAL): |[IWEF]\d{4} "
    rb"|(?:Error|Warning|Fatal error|Info|Debug) in cpuinfo: )"
)
# cpuinfo's complaints, kept for the process: cpuinfo runs once (the first XNNPACK delegate
# made), so the models loaded after it never see its lines again.
_CPUINFO_COMPLAINTS: list[str] = []


@contextlib.contextmanager
def quiet_native_logs(show: bool = False) -> Iterator[NativeLog]:
    """Keep LiteRT's own log lines off the terminal while a model loads or is freed, unless
    `show`.

    LiteRT's C++ loggers write straight to file descriptors 2 and (its GPU accelerator's
    "INFO: Loaded OpenCL library with dlopen.") 1, with no Python switch, so both are
    pointed at temporary files for the duration: a plain run prints captions only. The
    lines go to this module's logger at DEBUG (`edge_caption --verbose` shows them as they
    come). If the load failed, every line that is not INFO (warnings, errors: the reason
    LiteRT gives) goes to stderr as it came.

    Thread-safe: fds 1 and 2 are the process's, so blocks run one at a time (a lock), and
    each restores the fds it saved before the next saves them. Without the lock, two
    threads opening models at once could each save the other's temporary file as "the
    terminal" and leave it there, and every later print vanished. What another thread
    writes to fd 1 or 2 during a block (a caption line, a log message) is not a LiteRT
    line: it is written back to its own fd when the block ends, late but not lost.
    """
    with _NATIVE_LOG_LOCK:
        native = NativeLog()
        if show:  # as they come, but on stderr: stdout carries captions only, even then
            sys.stdout.flush()
            saved_stdout = os.dup(1)
            os.dup2(2, 1)
            try:
                yield native
            finally:
                os.dup2(saved_stdout, 1)
                os.close(saved_stdout)
            return
        sys.stdout.flush()
        sys.stderr.flush()
        saved = {fd: os.dup(fd) for fd in (1, 2)}
        with tempfile.TemporaryFile() as out_sink, tempfile.TemporaryFile() as err_sink:
            sinks = {1: out_sink, 2: err_sink}
            for fd, sink in sinks.items():
                os.dup2(sink.fileno(), fd)
            try:
                yield native
            except BaseException:
                native.failed = True
                raise
            finally:
                # Python's own buffers first, so that what they hold lands in the sinks.
                with contextlib.suppress(OSError, ValueError):
                    sys.stdout.flush()
                    sys.stderr.flush()
                for fd, copy in saved.items():
                    os.dup2(copy, fd)
                    os.close(copy)
                for fd, sink in sinks.items():
                    sink.seek(0)
                    _sort_captured(fd, sink.read(), native)


def _sort_captured(fd: int, data: bytes, native: NativeLog) -> None:
    """LiteRT's lines to the log (or, after a failed load, its warnings and errors to
    stderr); anything else, which another thread wrote meanwhile, back to `fd` as it was.

    On fd 2 a line that follows one of LiteRT's is taken as its continuation (the GPU
    delegate lists the ops it lacks one per line, unprefixed); fd 1 gets only the OpenCL
    INFO line from LiteRT, so every other line there is someone else's caption."""
    other = bytearray()
    follows_native = False
    for raw in data.splitlines(keepends=True):
        follows_native = bool(_NATIVE_LINE.match(raw)) or (fd == 2 and follows_native)
        if not follows_native:
            other += raw
            continue
        line = raw.decode(errors="replace").rstrip("\r\n")
        native.lines.append(line)
        if " in cpuinfo: " in line and not line.startswith(("Info", "Debug")):
            _CPUINFO_COMPLAINTS.append(line)
        if native.failed and not _is_info(line):
            print(line, file=sys.stderr)
        else:
            log.debug("%s", line)
    view = memoryview(bytes(other))
    with contextlib.suppress(OSError):  # e.g. a closed pipe: nothing to give it back to
        while view:
            view = view[os.write(fd, view) :]


def _is_info(line: str) -> bool:
    """LiteRT's "INFO: ..." lines, and glog's "I1204 12:00:00.000 ..." ones (WebGPU)."""
    return line.startswith("INFO: ") or (line[:1] == "I" and line[1:5].isdigit())


# What `delegate` says of a model (TFLiteModel, LiteRtCompiledModel; None for ONNX).
XNNPACK, NO_DELEGATE = "xnnpack", "none"
# The op name the TFLite interpreter gives a node that a delegate took over; the Interpreter
# path applies no delegate but its default one, XNNPACK.
_DELEGATE_NODE = "DELEGATE"


def _has_delegate_node(interpreter) -> bool | None:
    """Whether a delegate took part of the interpreter's graph (after allocate_tensors,
    where the default delegate is applied); None where the wrapper has no node calls."""
    wrapper = getattr(interpreter, "_interpreter", None)
    if wrapper is None or not hasattr(wrapper, "NumNodes") or not hasattr(wrapper, "NodeName"):
        return None
    return any(wrapper.NodeName(i) == _DELEGATE_NODE for i in range(wrapper.NumNodes()))


def _delegate_of(has_node: bool | None, native: NativeLog) -> str:
    """'xnnpack' if the XNNPACK delegate runs part of the model, else 'none'.

    Read from the graph: the Interpreter path applies no delegate but its default one,
    XNNPACK. LiteRT's "Created TensorFlow Lite XNNPACK delegate for CPU." is logged once per
    process, so a second model cannot be judged by it: it is the fallback only where the
    wrapper has no node calls."""
    if has_node is None:
        has_node = any("XNNPACK delegate" in line for line in native.lines)
    return XNNPACK if has_node else NO_DELEGATE


def _has_float_tensors(interpreter) -> bool:
    try:
        return any(t["dtype"] == np.float32 for t in interpreter.get_tensor_details())
    except (ValueError, RuntimeError):  # a tensor without details: take it as float
        return True


def no_xnnpack_reason(model: TFLiteModel) -> str:
    """Why `model` runs without XNNPACK, and what to do, as one clause for the warning."""
    if not model.default_delegates:
        return "it was turned off (--no-xnnpack / RuntimeOptions(xnnpack=False))"
    if _CPUINFO_COMPLAINTS:
        return (
            f"the CPU detection XNNPACK needs failed ({_CPUINFO_COMPLAINTS[0]!r}): "
            "/sys/devices/system/cpu is hidden or unreadable here; a container or chroot "
            "without /sys does this, so give the process a read-only /sys"
        )
    if model.backend_name == "tflite_runtime" and not model.has_float_tensors:
        return (
            f"tflite_runtime {_version('tflite-runtime')} applies XNNPACK only to models with "
            "float tensors, and this one is integer-only; ai-edge-litert (the [edge] extra) "
            "runs it on XNNPACK"
        )
    return (
        f"{model.backend_name} {_version(_DISTRIBUTIONS[model.backend_name])} did not apply "
        "it; check that /sys/devices/system/cpu is readable (containers may hide /sys) and "
        "that the wheel is the official one for this CPU (--verbose shows LiteRT's log)"
    )


_DISTRIBUTIONS = {"ai_edge_litert": "ai-edge-litert", "tflite_runtime": "tflite-runtime"}


def no_xnnpack_warning(models: dict[str, TFLiteModel]) -> str | None:
    """The one warning line for the TFLite models (by role) that run without XNNPACK, or
    None when every one has it."""
    slow = [m for m in models.values() if m.delegate == NO_DELEGATE]
    if not slow:
        return None
    reasons: dict[str, list[str]] = {}
    for model in slow:
        reasons.setdefault(no_xnnpack_reason(model), []).append(model.path.name)
    why = "; ".join(f"{', '.join(files)}: {reason}" for reason, files in reasons.items())
    return (
        "warning: the fast CPU path is off: XNNPACK, the TFLite delegate that runs models on the CPU's "
        f"SIMD units, is not in use ({why}). Captions are slower and may differ slightly "
        "from those of machines where it runs"
    )


def _load_interpreter_class(backend: str):
    if backend in ("litert", "auto"):
        try:
            from ai_edge_litert.interpreter import Interpreter

            return Interpreter, "ai_edge_litert"
        except ImportError:
            if backend == "litert":
                raise BackendError(
                    "backend 'litert' needs the ai-edge-litert package: pip install ai-edge-litert "
                    "(the wheel's [edge] extra installs it)"
                ) from None
    try:
        from tflite_runtime.interpreter import Interpreter
    except ImportError:
        raise BackendError(
            "no TFLite interpreter found: pip install ai-edge-litert (the wheel's [edge] extra "
            "installs it), or on older Raspberry Pi OS tflite-runtime==2.14.0 (its [pi-legacy] "
            "extra)"
        ) from None
    log.warning("ai_edge_litert is not installed; using the tflite_runtime fallback")
    return Interpreter, "tflite_runtime"


class _NamedModel:
    """What the Captioner checks against the manifest: the model's own tensor names."""

    _inputs: dict
    _outputs: dict | list

    @property
    def input_names(self) -> list[str]:
        return list(self._inputs)

    @property
    def output_names(self) -> list[str]:
        return list(self._outputs)

    def tensor_shapes(self) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
        """(inputs, outputs): each tensor's shape as the file declares it, -1 where dynamic."""
        raise NotImplementedError


def _check_structure(path: Path) -> None:
    """Refuse a damaged .tflite file before an interpreter without a verifier crashes on it."""
    try:
        check_tflite_bytes(path.read_bytes())
    except FlatBufferError as exc:
        raise BundleError(
            f"{path}: cannot load this TFLite model ({exc}); the file is corrupt or truncated, "
            "export the bundle again"
        ) from None


class _TFLiteDetails(_NamedModel):
    def tensor_shapes(self) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
        def shapes(details: dict) -> dict[str, list[int]]:
            return {
                n: [int(d) for d in t.get("shape_signature", t["shape"])]
                for n, t in details.items()
            }

        return shapes(self._inputs), shapes(self._outputs)


class TFLiteModel(_TFLiteDetails):
    """One .tflite file run through its 'serving_default' signature.

    Calls go to the interpreter's tensors directly, not through the signature runner: the
    runner resizes and reallocates every input on every call, which cost a decoder step
    3-4x its own invoke. Here the tensor indices are resolved once and tensors are
    reallocated only when an input's shape changes (a beam search's batch of beams).

    Thread-safe: an interpreter has one set of tensors, so a lock makes each call's
    set_tensor / invoke / get_tensor one step (get_tensor copies, so what a call returns
    is its own). Two threads share the model one call at a time; the encoder and the
    decoder of one bundle are separate models with separate locks, so they overlap.
    docs/benchmarks.md ("Threads") measured this against one interpreter per thread.
    """

    def __init__(
        self,
        path: str | Path,
        backend: str = "auto",
        num_threads: int | None = None,
        show_logs: bool = False,
        default_delegates: bool = True,
    ):
        interpreter_class, self.backend_name = _load_interpreter_class(backend)
        self.path = Path(path)
        self.default_delegates = default_delegates
        self._lock = threading.Lock()
        _check_structure(self.path)
        with quiet_native_logs(show_logs) as native:
            self._load(interpreter_class, num_threads)
        self.delegate = _delegate_of(self._has_delegate_node, native)
        """'xnnpack' where the XNNPACK delegate runs part of the graph, 'none' where the
        interpreter's built-in kernels run all of it (no_xnnpack_reason says why)."""

    @functools.cached_property
    def has_float_tensors(self) -> bool:
        """Whether any tensor is float32 (older TFLite builds apply XNNPACK only then)."""
        return _has_float_tensors(self._interpreter)

    def _load(self, interpreter_class, num_threads: int | None) -> None:
        # Every step reads the file's tables (tensor names, details, XNNPACK's prepare in
        # allocate_tensors), and a damaged table that both verifiers let through fails in
        # any of them, as whatever LiteRT raises (RuntimeError "unsupported zero-point
        # value", "failed to create XNNPACK runtime", UnicodeDecodeError on a tensor name):
        # a bad file, named, not a crash of ours (tests/reliability/test_model_fuzz.py).
        try:
            self._read(interpreter_class, num_threads)
        except BundleError:
            raise
        except Exception as exc:
            raise _load_failure(self.path, exc) from None

    def _read(self, interpreter_class, num_threads: int | None) -> None:
        options = {}
        if not self.default_delegates:  # the built-in kernels alone: no XNNPACK
            resolvers = sys.modules[interpreter_class.__module__].OpResolverType
            options["experimental_op_resolver_type"] = resolvers.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        self._interpreter = interpreter_class(
            model_path=str(self.path), num_threads=num_threads, **options
        )
        runner = self._interpreter.get_signature_runner("serving_default")
        self._inputs = runner.get_input_details()
        self._outputs = runner.get_output_details()
        # Each signature tensor's (index, dtype, scale, zero point), and each input's shape now.
        self._feed = {name: _tensor_io(d) for name, d in self._inputs.items()}
        self._fetch = {name: _tensor_io(d) for name, d in self._outputs.items()}
        self._shapes = {d["index"]: tuple(d["shape"]) for d in self._inputs.values()}
        # The runner holds the interpreter's internals, which the interpreter's own calls
        # refuse to run beside: only its tensor details are kept.
        del runner
        # The interpreter's tensor calls address the main subgraph, where caption-export
        # puts the one signature a bundle's file has.
        if set(self._shapes) != {d["index"] for d in self._interpreter.get_input_details()}:
            raise BundleError(
                f"{self.path}: its 'serving_default' signature is not the model's main "
                "graph; this is not a file caption-export wrote, export the bundle again"
            )
        self._interpreter.allocate_tensors()
        self._has_delegate_node = _has_delegate_node(self._interpreter)

    def __call__(self, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        interpreter = self._interpreter
        values = {}
        for name, value in inputs.items():
            io = self._feed[name]
            values[io[0]] = _quantize(value, io)
        with self._lock:
            try:
                resized = False
                for index, value in values.items():
                    if value.shape != self._shapes[index]:
                        interpreter.resize_tensor_input(index, value.shape)
                        self._shapes[index] = value.shape
                        resized = True
                if resized:
                    interpreter.allocate_tensors()
                for index, value in values.items():
                    interpreter.set_tensor(index, value)
                interpreter.invoke()
                outputs = {name: interpreter.get_tensor(io[0]) for name, io in self._fetch.items()}
            # A kernel refusing the file's data (e.g. at a new shape), or tensors that a
            # damaged file left without memory ("Tensor data is null"): the file's fault.
            except (RuntimeError, ValueError) as exc:
                raise _run_failure(self.path, exc) from None
        return {name: _dequantize(outputs[name], io) for name, io in self._fetch.items()}

    def positional(
        self, inputs: Sequence[str], outputs: Sequence[str]
    ) -> Callable[..., tuple[np.ndarray, ...]]:
        """`run(*values) -> outputs`, both in the orders given: __call__ for a recurrent
        decoder's hot loop (3 or 4 inputs, 3 outputs), with every lookup done here once.

        Between two steps XNNPACK's worker thread spins only briefly before it sleeps, and
        waking it costs more than the step itself: the Python of __call__'s dicts was
        enough to miss the spin, and even a loop over the inputs cost a third of the step,
        so the calls are written out (the figures: docs/benchmarks.md, "Figures behind the runtime's choices"). A new
        batch (a beam's) or a quantized tensor, or another arity, takes __call__'s path.
        """
        quantized = any(self._feed[n][2] for n in inputs) or any(self._fetch[n][2] for n in outputs)
        if quantized or len(inputs) not in (3, 4) or len(outputs) != 3:
            return lambda *values: self._by_name(inputs, outputs, values)
        first, second, third, *fourth = (self._feed[name][0] for name in inputs)
        extra = fourth[0] if fourth else None
        out1, out2, out3 = (self._fetch[name][0] for name in outputs)
        shapes, interpreter, lock = self._shapes, self._interpreter, self._lock
        set_tensor, get_tensor, invoke = (
            interpreter.set_tensor, interpreter.get_tensor, interpreter.invoke
        )  # fmt: skip

        def run(*values: np.ndarray) -> tuple[np.ndarray, ...]:
            # The shape is compared under the lock: another thread may resize in between.
            with lock:
                if values[0].shape == shapes[first]:  # every input shares the batch
                    try:
                        set_tensor(first, values[0])
                        set_tensor(second, values[1])
                        set_tensor(third, values[2])
                        if extra is not None:
                            set_tensor(extra, values[3])
                        invoke()
                        return get_tensor(out1), get_tensor(out2), get_tensor(out3)
                    except (RuntimeError, ValueError) as exc:  # as in __call__
                        raise _run_failure(self.path, exc) from None
            return self._by_name(inputs, outputs, values)

        return run

    def _by_name(self, inputs: Sequence[str], outputs: Sequence[str], values) -> tuple:
        out = self(**dict(zip(inputs, values, strict=True)))
        return tuple(out[name] for name in outputs)


def _load_failure(path: Path, exc: BaseException) -> BundleError:
    return BundleError(
        f"{path}: cannot load this TFLite model ({exc}); the file is corrupt or truncated, "
        "export the bundle again"
    )


def _run_failure(path: Path, exc: BaseException) -> BundleError:
    """A model that loaded but whose kernels refuse its own data when it runs: the file's
    fault (damaged or hand-made), named, rather than a traceback."""
    return BundleError(
        f"{path}: the model failed to run ({exc}); the file is corrupt, export the bundle again"
    )


def _tensor_io(detail: dict) -> tuple[int, np.dtype, float, int]:
    """(index, dtype, scale, zero point) of a tensor; scale 0 unless it is int8/uint8 quantized."""
    dtype = detail["dtype"]
    scale, zero_point = detail["quantization"]
    if dtype not in (np.int8, np.uint8):
        scale = 0.0
    return detail["index"], dtype, float(scale), int(zero_point)


def _quantize(value: np.ndarray, io: tuple) -> np.ndarray:
    """A float input as the tensor's dtype, with its own scale and zero point if quantized."""
    _, dtype, scale, zero_point = io
    if scale:
        info = np.iinfo(dtype)
        value = np.clip(np.round(value / scale + zero_point), info.min, info.max)
    return np.asarray(value, dtype=dtype)


def _dequantize(value: np.ndarray, io: tuple) -> np.ndarray:
    """An output as float32 if it is quantized; as it is otherwise."""
    _, _, scale, zero_point = io
    if scale:
        value = (value.astype(np.float32) - zero_point) * np.float32(scale)
    return value


UNSUPPORTED_ON_GPU = "not supported by GPU delegate"  # as LiteRT's log says it


@functools.cache
def _quiet_at_exit() -> None:
    """Drop what LiteRT logs as the process ends: its shared environment is destroyed
    after Python is done ("DestroyAccelerator: ... GPU WebGPU"), past any block to catch
    it in. Registered once, by the first quiet CompiledModel, so that atexit runs it
    after the handlers registered later."""

    def drop() -> None:
        sys.stderr.flush()
        os.dup2(os.open(os.devnull, os.O_WRONLY), 2)

    atexit.register(drop)


class LiteRtCompiledModel(_TFLiteDetails):
    """One .tflite file run through LiteRT's CompiledModel API on a hardware accelerator.

    This is the GPU path of the `ai_edge_litert` wheel (its WebGPU/OpenCL accelerator).
    The model is compiled for the GPU alone, with no CPU fallback: if the GPU cannot take
    every op, or there is no usable GPU, loading fails and says so, rather than running on
    the CPU under a GPU label. `accelerator="cpu"` exists so that tests can check this
    code path against the Interpreter on machines without a GPU.
    """

    SIGNATURE = "serving_default"

    def __init__(self, path: str | Path, accelerator: str = "gpu", show_logs: bool = False):
        self.path = Path(path)
        try:
            from ai_edge_litert.compiled_model import CompiledModel
            from ai_edge_litert.hardware_accelerator import HardwareAccelerator
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise BackendError(
                "accelerator 'gpu' for a TFLite bundle needs ai-edge-litert with its "
                "CompiledModel API (pip install ai-edge-litert); tflite_runtime has no "
                "GPU path"
            ) from None
        flag = {"gpu": HardwareAccelerator.GPU, "cpu": HardwareAccelerator.CPU}[accelerator]
        _check_structure(self.path)
        # The Interpreter reads the quantization parameters, which CompiledModel does not report.
        try:
            with quiet_native_logs(show_logs):  # made and freed here: both may log
                runner = Interpreter(model_path=str(self.path)).get_signature_runner(self.SIGNATURE)
                self._inputs = runner.get_input_details()
                self._outputs = runner.get_output_details()
                del runner
        except (ValueError, RuntimeError) as exc:
            raise BundleError(
                f"{self.path}: cannot load this TFLite model ({exc}); the file is corrupt or truncated"
            ) from None
        self._feed = {name: _tensor_io(d) for name, d in self._inputs.items()}
        self._fetch = {name: _tensor_io(d) for name, d in self._outputs.items()}
        tried = (
            f"tried ai_edge_litert {_version('ai-edge-litert')} CompiledModel with "
            f"HardwareAccelerator.{flag.name}"
        )
        self._show_logs = show_logs
        if not show_logs:
            _quiet_at_exit()
        # One quiet block for the compile and, on failure, for freeing what it built: LiteRT
        # logs as its accelerators are destroyed, which happens when the exception is.
        with quiet_native_logs(show_logs) as native:
            try:
                self._model = CompiledModel.from_file(str(self.path), hardware_accel=flag)
                native.failed = accelerator == "gpu" and not self._model.is_fully_accelerated()
            except RuntimeError:  # LiteRT logs its reason (e.g. "No adapters found") instead
                native.failed = True
            if native.failed:
                self.__dict__.pop("_model", None)
        if native.failed and any(UNSUPPORTED_ON_GPU in line for line in native.lines):
            raise BackendError(
                f"{self.path.name}: some of its operations do not run on LiteRT's GPU delegate "
                f"({tried}; LiteRT's log above lists them), and the GPU path has no CPU "
                "fallback. Run this model on the CPU: without --accelerate-decoder for a "
                "decoder, with --accelerator cpu for an encoder"
            )
        if native.failed:
            raise BackendError(
                f"{self.path.name}: LiteRT could not compile it for the {accelerator.upper()} "
                f"({tried}; LiteRT's log above says why). The GPU path needs a GPU driver "
                "(Vulkan or OpenCL) visible to this process; without one, use --accelerator cpu"
            )
        self.backend_name = f"ai_edge_litert CompiledModel ({accelerator.upper()})"
        self.delegate = accelerator  # the accelerator it was compiled for: 'gpu' (or 'cpu')
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._buffers: tuple[dict, dict] | None = None  # (input, output) buffers by name
        # One set of buffers and shapes per model: calls from several threads take turns.
        self._lock = threading.Lock()

    def close(self) -> None:
        """Free the compiled model now, its accelerators' log lines kept quiet."""
        with self._lock, quiet_native_logs(self._show_logs):
            self._buffers = None  # they hold the model, and the model its accelerators
            self.__dict__.pop("_model", None)

    def __call__(self, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        with self._lock:
            return self._call(inputs)

    def _call(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        signature = self.SIGNATURE
        feed = {name: _quantize(value, self._feed[name]) for name, value in inputs.items()}
        resized = False
        for name, value in feed.items():
            if self._shapes.get(name, tuple(self._inputs[name]["shape"])) != value.shape:
                # A batch of beams: the step's batch dimension is dynamic.
                self._model.resize_input_tensor_by_name(signature, name, value.shape)
                resized = True
            self._shapes[name] = value.shape
        fresh = resized or self._buffers is None
        # Buffers are made once per shape, not per call: creating them costs time, and on the
        # GPU logs a warning each time (an int8 encoder: 4 lines a call). The first run logs
        # too: it creates LiteRT's environment.
        with quiet_native_logs(self._show_logs) if fresh else contextlib.nullcontext():
            if fresh:
                self._buffers = (
                    {n: self._model.create_input_buffer_by_name(signature, n) for n in feed},
                    {
                        n: self._model.create_output_buffer_by_name(signature, n)
                        for n in self._outputs
                    },
                )
            input_buffers, output_buffers = self._buffers
            for name, value in feed.items():
                input_buffers[name].write(np.ascontiguousarray(value))
            self._model.run_by_name(signature, input_buffers, output_buffers)
        details = self._model.get_output_tensor_details(signature)
        out = {}
        for name, buffer in output_buffers.items():
            shape = tuple(details[name]["shape"])
            dtype = self._outputs[name]["dtype"]
            value = buffer.read(int(np.prod(shape)), dtype).reshape(shape)  # flat -> tensor shape
            out[name] = _dequantize(value, self._fetch[name])
        return out


def _version(distribution: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return "(version unknown)"


def _load_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise BackendError(
            "backend 'onnx' needs the onnxruntime package: pip install onnxruntime "
            "(the wheel's [edge] extra installs it)"
        ) from None
    return onnxruntime


# onnxruntime providers that put work on an accelerator, in order of preference.
# TensorRT is left to an explicit --providers: onnxruntime-gpu lists it whether or not
# TensorRT's own libraries are installed, and it builds an engine for every model at load.
ONNX_ACCELERATOR_PROVIDERS = (
    "CUDAExecutionProvider",
    "ROCMExecutionProvider",
    "OpenVINOExecutionProvider",
    "CoreMLExecutionProvider",
    "DmlExecutionProvider",
)


def onnx_accelerator_providers() -> list[str]:
    """[the best accelerator provider this onnxruntime has, CPU] for the GPU path.

    CPU stays second so that the few ops an accelerator lacks still run; the first
    provider must be the accelerator, which OnnxModel checks after loading.
    """
    ort = _load_onnxruntime()
    available = ort.get_available_providers()
    found = [p for p in ONNX_ACCELERATOR_PROVIDERS if p in available]
    if not found:
        raise BackendError(
            f"accelerator 'gpu': onnxruntime {ort.__version__} on this machine has none of "
            f"{', '.join(ONNX_ACCELERATOR_PROVIDERS)} (it has {', '.join(available)}). "
            "Install the build for your hardware (onnxruntime-gpu for CUDA, "
            "onnxruntime-openvino, onnxruntime-directml), or use --accelerator cpu"
        )
    return [found[0], "CPUExecutionProvider"]


_CUDA_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")
_preload_report: list[str] = []  # what onnxruntime.preload_dlls printed; it runs once


def _preload_cuda_libraries(ort) -> str:
    """Load CUDA and cuDNN for onnxruntime-gpu's CUDA provider, once per process.

    The provider links them by name, with no search path of its own; installed from pip
    (`onnxruntime-gpu[cuda,cudnn]`) they sit in site-packages/nvidia, where only
    `onnxruntime.preload_dlls()` finds them. It prints what it could not load: that text
    is returned ('' when all loaded) for the error raised if the provider then fails.
    """
    if not _preload_report and hasattr(ort, "preload_dlls"):
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            try:
                ort.preload_dlls()
            except Exception as exc:  # a broken install must surface as the load error below
                print(exc)
        _preload_report.append(" ".join(printed.getvalue().split()))
    return _preload_report[0] if _preload_report else ""


# ONNX tensor types the bundle uses, as numpy dtypes (onnxruntime wants exact dtypes).
_ONNX_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
}


class OnnxModel(_NamedModel):
    """One .onnx file run in an onnxruntime InferenceSession; the same interface as TFLiteModel.

    onnxruntime is imported here, not at module import, so a LiteRT-only device never
    needs it. `providers` is onnxruntime's ordered preference list (default: CPU only, the
    one provider every onnxruntime build has); a provider this build lacks is an error
    rather than onnxruntime's silent fallback, so a benchmark never measures the wrong one.
    """

    def __init__(
        self,
        path: str | Path,
        providers: list[str] | None = None,
        num_threads: int | None = None,
        spin: bool = False,
    ):
        ort = _load_onnxruntime()
        self.path = Path(path)
        providers = list(providers) if providers else ["CPUExecutionProvider"]
        available = ort.get_available_providers()
        missing = [p for p in providers if p not in available]
        if missing:
            raise BackendError(
                f"{self.path.name}: onnxruntime {ort.__version__} on this machine has no "
                f"{', '.join(missing)}; choose providers among {', '.join(available)} "
                "(or install the onnxruntime build that ships the one you want)"
            )
        preload_report = (
            _preload_cuda_libraries(ort) if any(p in _CUDA_PROVIDERS for p in providers) else ""
        )
        options = ort.SessionOptions()
        if num_threads:
            options.intra_op_num_threads = num_threads
        options.log_severity_level = 3  # errors only; warnings would go to the device's stderr
        # A caption runs three sessions one after another, each with its own intra-op thread
        # pool. Spinning threads of the idle sessions steal the cores of the busy one, which
        # made the tail latency many times the median. `spin` is for the decoder step alone,
        # called a dozen times in a row: waking its threads each time cost more than the
        # step (the figures: docs/benchmarks.md, "Figures behind the runtime's choices").
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        try:
            self._session = ort.InferenceSession(
                str(self.path), sess_options=options, providers=providers
            )
        except Exception as exc:  # onnxruntime's own exception classes derive from Exception
            raise BundleError(
                f"{self.path}: cannot load this ONNX model ({exc}); the file is corrupt or "
                "truncated, or needs a newer onnxruntime"
            ) from None
        active = self._session.get_providers()
        if active[0] != providers[0]:
            # onnxruntime drops a provider whose libraries fail to load with only a warning.
            raise BackendError(
                f"{self.path.name}: onnxruntime was asked for {providers[0]} but runs on "
                f"{active[0]}; the provider's libraries (e.g. CUDA, cuDNN) did not load. "
                "Fix the install, or choose providers that work here"
                + (f" (onnxruntime.preload_dlls: {preload_report})" if preload_report else "")
            )
        self.backend_name = f"onnxruntime {ort.__version__} ({active[0]})"
        self.delegate = None  # a TFLite notion: onnxruntime has providers (`providers`)
        self._inputs = {i.name: i for i in self._session.get_inputs()}
        self._outputs = [o.name for o in self._session.get_outputs()]

    def tensor_shapes(self) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
        def shapes(args) -> dict[str, list[int]]:
            # onnxruntime names a dynamic dimension with a string or None
            return {a.name: [d if isinstance(d, int) else -1 for d in a.shape] for a in args}

        return shapes(self._session.get_inputs()), shapes(self._session.get_outputs())

    @property
    def providers(self) -> list[str]:
        """The providers the session really uses, in order."""
        return list(self._session.get_providers())

    def __call__(self, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        # No lock: InferenceSession.run is thread-safe (each call has its own inputs and
        # outputs), and this object keeps no state between calls.
        feed = {}
        for name, value in inputs.items():
            dtype = _ONNX_DTYPES.get(self._inputs[name].type)
            feed[name] = np.asarray(value, dtype=dtype)
        try:
            values = self._session.run(self._outputs, feed)
        except Exception as exc:
            if not type(exc).__module__.startswith("onnxruntime"):
                raise
            # onnxruntime's own error (a kernel refusing the file's data): the file's fault.
            raise _run_failure(self.path, exc) from None
        return dict(zip(self._outputs, values, strict=True))
