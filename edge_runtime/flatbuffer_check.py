"""A bounds check of a .tflite file's FlatBuffer, before an interpreter reads it.

tflite_runtime 2.14 (the Raspberry Pi legacy backend) has no verifier: a truncated file
whose hash was recorded after the damage crashes the process with a segmentation fault
instead of raising. FlatBuffers are written back to front, so the tensor data sits at the
end of the file and truncation leaves references pointing past its end. Following the
model's subgraph and buffer references catches that, in well under a millisecond.

LiteRT has a verifier, but it checks only that references stay inside the file: a table
whose fields are in bounds but make no sense passes it, and some of those crash the
interpreter while it prepares the graph (an operator without its outputs vector: a
segmentation fault in allocate_tensors, found by tests/reliability/test_model_fuzz.py).
So each operator's tensor indices, and each tensor's buffer index, are checked as well.
"""

from __future__ import annotations

import struct

TFLITE_IDENTIFIER = b"TFL3"
# Field numbers of tflite::Model and tflite::Buffer in the TFLite schema.
MODEL_OPERATOR_CODES, MODEL_SUBGRAPHS, MODEL_BUFFERS = 1, 2, 4
BUFFER_DATA, BUFFER_OFFSET, BUFFER_SIZE = 0, 1, 2
# ... of tflite::SubGraph, tflite::Operator and tflite::Tensor.
SUBGRAPH_TENSORS, SUBGRAPH_INPUTS, SUBGRAPH_OUTPUTS, SUBGRAPH_OPERATORS = 0, 1, 2, 3
OPERATOR_OPCODE_INDEX, OPERATOR_INPUTS, OPERATOR_OUTPUTS, OPERATOR_OPTIONS_TYPE = 0, 1, 2, 3
TENSOR_SHAPE, TENSOR_TYPE, TENSOR_BUFFER = 0, 1, 2
# Bytes per element of each tflite::TensorType (8 for the few others: the largest).
TYPE_BYTES = {0: 4, 1: 2, 2: 4, 3: 1, 4: 8, 6: 1, 7: 2, 9: 1, 10: 8, 11: 16, 12: 8, 13: 4, 17: 1}
# A caption model's largest tensor is tens of MB (a 10,000-word output layer's weights:
# 20 MB in float32; MobileNetV2's largest activation at 224 px: 4.8 MB). A damaged shape
# asked allocate_tensors for 15 GB (fuzz seed 4658: the OOM killer, not an error), so
# sizes past these are refused before anything is allocated.
MAX_TENSOR_BYTES = 1 << 29  # 512 MiB
MAX_TOTAL_TENSOR_BYTES = 1 << 31  # 2 GiB, all tensors of one model
CODE_DEPRECATED_BUILTIN, CODE_BUILTIN = 0, 3  # tflite::OperatorCode
# The BuiltinOptions union member that each of these builtin operators reads its
# parameters from (BuiltinOperator -> BuiltinOptions, numbered as in the TFLite schema).
# The converter always writes them, and LiteRT's kernels for them crash the process when
# the member is another one or none (a SPLIT without SplitOptions: a segmentation fault
# in allocate_tensors, fuzz seed 3967). These are the operators caption-export's files
# hold; others are not checked.
BUILTIN_OPTIONS = {
    0: 11,  # ADD: AddOptions
    3: 1,  # CONV_2D: Conv2DOptions
    4: 2,  # DEPTHWISE_CONV_2D: DepthwiseConv2DOptions
    9: 8,  # FULLY_CONNECTED: FullyConnectedOptions
    18: 21,  # MUL: MulOptions
    36: 23,  # GATHER: GatherOptions
    49: 35,  # SPLIT: SplitOptions
    50: 36,  # LOG_SOFTMAX: LogSoftmaxOptions
}


class FlatBufferError(ValueError):
    pass


class _Reader:
    def __init__(self, data: bytes):
        self.data, self.size = data, len(data)

    def _unpack(self, fmt: str, at: int) -> int:
        width = struct.calcsize(fmt)
        if at < 0 or at + width > self.size:
            raise FlatBufferError(f"a reference points to byte {at}, past the end ({self.size})")
        return struct.unpack_from(fmt, self.data, at)[0]

    def target(self, at: int) -> int:
        """Where the unsigned offset stored at `at` points."""
        return at + self._unpack("<I", at)

    def field(self, table: int, number: int) -> int | None:
        """Position of a table's field, or None where the field is absent."""
        vtable = table - self._unpack("<i", table)
        vtable_size = self._unpack("<H", vtable)
        slot = 4 + 2 * number
        if slot + 2 > vtable_size:
            return None
        offset = self._unpack("<H", vtable + slot)
        return table + offset if offset else None

    def vector(self, at: int, element_size: int) -> tuple[int, int]:
        """(first element position, length) of the vector referenced at `at`."""
        start = self.target(at)
        length = self._unpack("<I", start)
        end = start + 4 + length * element_size
        if end > self.size:
            raise FlatBufferError(f"a vector ends at byte {end}, past the end ({self.size})")
        return start + 4, length

    def ints(self, table: int, number: int) -> list[int] | None:
        """A table's [int32] field (None where absent)."""
        at = self.field(table, number)
        if at is None:
            return None
        first, length = self.vector(at, 4)
        return list(struct.unpack_from(f"<{length}i", self.data, first))

    def uint(self, table: int, number: int) -> int:
        """A table's uint32 field (0, the schema's default, where absent)."""
        at = self.field(table, number)
        return 0 if at is None else self._unpack("<I", at)

    def byte(self, table: int, number: int) -> int:
        """A table's uint8 (or int8 >= 0) field; 0 where absent."""
        at = self.field(table, number)
        return 0 if at is None else self._unpack("<B", at)

    def int(self, table: int, number: int) -> int:
        """A table's int32 field; 0 where absent."""
        at = self.field(table, number)
        return 0 if at is None else self._unpack("<i", at)

    def tables(self, table: int, number: int) -> list[int]:
        at = self.field(table, number)
        if at is None:
            return []
        first, length = self.vector(at, 4)
        return [self.target(first + 4 * i) for i in range(length)]


def check_tflite_bytes(data: bytes) -> None:
    """Raise FlatBufferError if `data` is not a whole .tflite model."""
    if len(data) < 8 or data[4:8] != TFLITE_IDENTIFIER:
        raise FlatBufferError("not a TFLite model (no TFL3 identifier)")
    reader = _Reader(data)
    model = reader.target(0)
    if not reader.tables(model, MODEL_SUBGRAPHS):
        raise FlatBufferError("the model has no subgraph")
    # Each op code's builtin operator: the larger of the old int8 field and the new int32.
    builtins = [
        max(reader.byte(code, CODE_DEPRECATED_BUILTIN), reader.int(code, CODE_BUILTIN))
        for code in reader.tables(model, MODEL_OPERATOR_CODES)
    ]
    buffers = reader.tables(model, MODEL_BUFFERS)
    for number, subgraph in enumerate(reader.tables(model, MODEL_SUBGRAPHS)):
        _check_subgraph(reader, subgraph, f"subgraph {number}", builtins, len(buffers))
    for buffer in buffers:
        at = reader.field(buffer, BUFFER_DATA)
        if at is not None:
            reader.vector(at, 1)
        offset_at, size_at = reader.field(buffer, BUFFER_OFFSET), reader.field(buffer, BUFFER_SIZE)
        if offset_at is not None and size_at is not None:
            # Models over 2 GB keep tensor data after the FlatBuffer, at these positions.
            end = reader._unpack("<Q", offset_at) + reader._unpack("<Q", size_at)
            if end > reader.size:
                raise FlatBufferError(
                    f"tensor data ends at byte {end}, past the end ({reader.size})"
                )


def _check_subgraph(
    reader: _Reader, subgraph: int, where: str, builtins: list[int], buffers: int
) -> None:
    """Every index a subgraph holds points at something that exists: its tensors' buffers,
    its operators' op codes and tensors (-1, an omitted optional input, is allowed); and
    each operator of BUILTIN_OPTIONS has its own options."""
    codes = len(builtins)
    tensors = reader.tables(subgraph, SUBGRAPH_TENSORS)

    def indices(values: list[int] | None, what: str, optional: bool = False) -> None:
        for value in values or ():
            if not (-1 if optional else 0) <= value < len(tensors):
                raise FlatBufferError(
                    f"{where}: {what} names tensor {value}, but there are {len(tensors)}"
                )

    total = 0
    for number, tensor in enumerate(tensors):
        buffer = reader.uint(tensor, TENSOR_BUFFER)
        if buffer >= max(buffers, 1):
            raise FlatBufferError(
                f"{where}: tensor {number} names buffer {buffer}, but there are {buffers}"
            )
        size = TYPE_BYTES.get(reader.byte(tensor, TENSOR_TYPE), 8)
        for dim in reader.ints(tensor, TENSOR_SHAPE) or ():
            size *= max(dim, 1)  # a dynamic size (-1) counts as 1, as LiteRT allocates it
        total += size
        if size > MAX_TENSOR_BYTES or total > MAX_TOTAL_TENSOR_BYTES:
            raise FlatBufferError(
                f"{where}: tensor {number}'s shape {reader.ints(tensor, TENSOR_SHAPE)} asks for "
                f"{size:,} bytes ({total:,} for the tensors so far), more than a caption model "
                f"holds (at most {MAX_TENSOR_BYTES:,} per tensor, {MAX_TOTAL_TENSOR_BYTES:,} in all)"
            )
    indices(reader.ints(subgraph, SUBGRAPH_INPUTS), "an input")
    indices(reader.ints(subgraph, SUBGRAPH_OUTPUTS), "an output")
    for number, operator in enumerate(reader.tables(subgraph, SUBGRAPH_OPERATORS)):
        what = f"operator {number}"
        code = reader.uint(operator, OPERATOR_OPCODE_INDEX)
        if code >= codes:
            raise FlatBufferError(f"{where}: {what} names an op code past the {codes} there are")
        wanted = BUILTIN_OPTIONS.get(builtins[code])
        options = reader.byte(operator, OPERATOR_OPTIONS_TYPE)
        if wanted is not None and options != wanted:
            raise FlatBufferError(
                f"{where}: {what} (builtin operator {builtins[code]}) has options of type "
                f"{options}, not the {wanted} it reads"
            )
        indices(reader.ints(operator, OPERATOR_INPUTS), f"{what}'s input", optional=True)
        outputs = reader.ints(operator, OPERATOR_OUTPUTS)
        if not outputs:
            raise FlatBufferError(f"{where}: {what} has no outputs")
        indices(outputs, f"{what}'s output")
