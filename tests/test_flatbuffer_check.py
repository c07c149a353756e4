"""The .tflite bounds check that stands in for the verifier tflite_runtime 2.14 lacks."""

import pytest

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
