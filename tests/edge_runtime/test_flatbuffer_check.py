"""The .tflite bounds check that stands in for the verifier tflite_runtime 2.14 lacks."""

import struct

import pytest

from edgecap.edge_runtime import flatbuffer_check as fb
from edgecap.edge_runtime.atomic import sha256_file
from edgecap.edge_runtime.bundle import RuntimeOptions
from edgecap.edge_runtime.captioner import Captioner
from edgecap.edge_runtime.errors import BundleError
from edgecap.edge_runtime.flatbuffer_check import FlatBufferError, check_tflite_bytes

ROLES = ("encoder", "decoder_init", "decoder_step")


@pytest.mark.parametrize("role", ROLES)
def test_whole_models_pass_and_every_truncation_is_caught(e2e, role):
    data = (e2e["bundle"] / f"{role}.tflite").read_bytes()
    check_tflite_bytes(data)
    # The last few bytes are alignment and the first small objects written, which neither
    # interpreter needs to stay in bounds (they load, or raise ValueError: measured for
    # every cut of the last 300 bytes, none crashed); everything before is checked.
    cuts = sorted({*range(8, len(data) - 16, max(1, len(data) // 200)), len(data) - 16})
    missed = []
    for cut in cuts:
        try:
            check_tflite_bytes(data[:cut])
        except FlatBufferError:
            continue
        missed.append(cut)
    assert not missed, f"truncations at {missed} of {len(data)} bytes were not caught"


def test_not_a_tflite_file():
    with pytest.raises(FlatBufferError, match="not a TFLite model"):
        check_tflite_bytes(b'{"format_version": 1}')


def test_truncated_file_with_a_matching_hash_is_refused_by_every_tflite_backend(e2e, tmp_path):
    import json
    import shutil

    bundle = tmp_path / "bundle"
    shutil.copytree(e2e["bundle"], bundle)
    step = bundle / "decoder_step.tflite"
    step.write_bytes(step.read_bytes()[:-5000])
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["models"]["decoder_step"]["sha256"] = sha256_file(step)
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError) as error:
        Captioner.open(bundle, RuntimeOptions(backend="auto"))
    assert str(error.value).startswith(f"{step}: cannot load this TFLite model (")
    assert str(error.value).endswith("the file is corrupt or truncated, export the bundle again")


def _operator_vtable_slot(data: bytes, operator: int, field: int) -> int:
    """Byte position of subgraph 0's operator `operator`'s vtable entry for `field`."""
    reader = fb._Reader(data)
    subgraph = reader.tables(reader.target(0), fb.MODEL_SUBGRAPHS)[0]
    table = reader.tables(subgraph, fb.SUBGRAPH_OPERATORS)[operator]
    vtable = table - struct.unpack_from("<i", data, table)[0]
    return vtable + 4 + 2 * field


@pytest.mark.parametrize("role", ROLES)
def test_an_operator_without_outputs_is_refused(e2e, role):
    """LiteRT's verifier let this through and allocate_tensors then crashed the process
    (a segmentation fault: fuzz seed 2147 of tests/reliability/test_model_fuzz.py)."""
    data = bytearray((e2e["bundle"] / f"{role}.tflite").read_bytes())
    slot = _operator_vtable_slot(bytes(data), 0, fb.OPERATOR_OUTPUTS)
    data[slot : slot + 2] = b"\0\0"  # the field is now absent
    with pytest.raises(FlatBufferError, match=r"subgraph 0: operator \d+ has no outputs"):
        check_tflite_bytes(bytes(data))


def test_an_operator_naming_a_tensor_that_does_not_exist_is_refused(e2e):
    data = bytearray((e2e["bundle"] / "decoder_step.tflite").read_bytes())
    reader = fb._Reader(bytes(data))
    subgraph = reader.tables(reader.target(0), fb.MODEL_SUBGRAPHS)[0]
    operator = reader.tables(subgraph, fb.SUBGRAPH_OPERATORS)[0]
    first, _ = reader.vector(reader.field(operator, fb.OPERATOR_OUTPUTS), 4)
    struct.pack_into("<i", data, first, 1 << 20)
    with pytest.raises(FlatBufferError, match=r"operator 0's output names tensor 1048576"):
        check_tflite_bytes(bytes(data))


def test_an_operator_with_another_options_type_is_refused(e2e):
    """A SPLIT whose options were not SplitOptions passed LiteRT's verifier and crashed the
    process in allocate_tensors (fuzz seed 3967)."""
    data = bytearray((e2e["bundle"] / "decoder_step.tflite").read_bytes())
    reader = fb._Reader(bytes(data))
    model = reader.target(0)
    builtins = [
        max(reader.byte(c, fb.CODE_DEPRECATED_BUILTIN), reader.int(c, fb.CODE_BUILTIN))
        for c in reader.tables(model, fb.MODEL_OPERATOR_CODES)
    ]
    subgraph = reader.tables(model, fb.MODEL_SUBGRAPHS)[0]
    splits = [
        op
        for op in reader.tables(subgraph, fb.SUBGRAPH_OPERATORS)
        if builtins[reader.uint(op, fb.OPERATOR_OPCODE_INDEX)] == 49  # SPLIT: the LSTM gates
    ]
    assert splits
    data[reader.field(splits[0], fb.OPERATOR_OPTIONS_TYPE)] = 0  # NONE
    with pytest.raises(FlatBufferError, match=r"\(builtin operator 49\) has options of type 0"):
        check_tflite_bytes(bytes(data))


def test_a_tensor_shape_asking_for_gigabytes_is_refused(e2e):
    """A damaged shape ([14811137, 256] for decoder_init's features) passed every check and
    made allocate_tensors ask for 15 GB: the OOM killer, not an error (fuzz seed 4658)."""
    data = bytearray((e2e["bundle"] / "decoder_init.tflite").read_bytes())
    reader = fb._Reader(bytes(data))
    subgraph = reader.tables(reader.target(0), fb.MODEL_SUBGRAPHS)[0]
    tensor = reader.tables(subgraph, fb.SUBGRAPH_TENSORS)[0]
    first, _ = reader.vector(reader.field(tensor, fb.TENSOR_SHAPE), 4)
    struct.pack_into("<i", data, first, 14811137)
    with pytest.raises(
        FlatBufferError, match=r"tensor 0's shape \[14811137, .*more than a caption"
    ):
        check_tflite_bytes(bytes(data))
