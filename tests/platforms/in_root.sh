#!/bin/bash
# Runs INSIDE a Debian root (chroot), started by tests/platforms/debian_root.sh:
#   /edgecap  the stage: dist/*.whl, tests/, pyproject.toml, e2e/, bundle/ (optional),
#             images.txt (paths relative to /shared); results go to /edgecap/out/
#   /shared   the shared data, read-only
# Usage: in_root.sh EXTRA TEST_FILE...   (EXTRA: edge or pi-legacy)
#
# Installs the built wheel with [EXTRA] into /opt/edgecap-EXTRA on the root's python3
# (binary wheels only; the download size is the wheelhouse's), runs the runtime tests
# from the copied tests folder with the installed package (not a checkout), and captions
# the listed images. Writes /edgecap/out/root.json.
set -euo pipefail
extra=$1
shift
stage=/edgecap
out=$stage/out
venv=/opt/edgecap-$extra
wheelhouse=/opt/wheelhouse-$extra
mkdir -p "$out"
wheel=$(ls "$stage"/dist/*.whl)
export PYTHONDONTWRITEBYTECODE=1

log() { echo "[$(date +%H:%M:%S) in-root $extra] $*"; }
# run LOGFILE COMMAND...: the command's output goes to LOGFILE; its tail is shown on failure.
run() {
    local logfile=$1
    shift
    if ! "$@" >"$logfile" 2>&1; then
        echo "FAILED: $*" >&2
        tail -n 40 "$logfile" >&2
        return 1
    fi
}

# The venv is kept between runs while the wheel asks for the same dependencies (its
# METADATA's Requires-Dist and Requires-Python): a new build of the same dependencies is
# reinstalled alone (--no-deps), as the Makefile's pi-legacy venv does.
deps_key=$(python3 - "$wheel" <<'PY'
import hashlib, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
    lines = z.read(meta).decode().split("\n\n")[0].splitlines()
keep = sorted(l for l in lines if l.startswith(("Requires-Dist:", "Requires-Python:")))
print(hashlib.sha256("\n".join(keep).encode()).hexdigest()[:16])
PY
)
wheel_sha=$(sha256sum "$wheel" | cut -c1-16)
if [ -f "$venv/.edgecap-deps-$deps_key" ] && [ -f "$venv/install.json" ]; then
    if [ -f "$venv/.edgecap-wheel-$wheel_sha" ]; then
        log "reusing $venv (same wheel $wheel_sha)"
        venv_state=reused
    else
        log "reusing $venv (same dependencies); reinstalling the new build of the wheel alone"
        run "$out/pip-reinstall.log" "$venv/bin/pip" install --no-deps --force-reinstall "$wheel"
        rm -f "$venv"/.edgecap-wheel-*
        touch "$venv/.edgecap-wheel-$wheel_sha"
        venv_state="reused, wheel reinstalled"
    fi
else
    venv_state=new
    rm -rf "$venv" "$wheelhouse"
    log "python3 -m venv $venv ($(python3 --version))"
    python3 -m venv "$venv"
    start=$(date +%s.%N)
    # What a device downloads: the runtime's wheels for this root's Python and machine.
    log "pip download '$(basename "$wheel")[$extra]' (binary wheels only)"
    run "$out/pip-download.log" "$venv/bin/pip" download --only-binary=:all: -d "$wheelhouse" "$wheel[$extra]"
    log "pip install from the wheelhouse"
    run "$out/pip-install.log" "$venv/bin/pip" install --no-index --find-links "$wheelhouse" "$wheel[$extra]"
    seconds=$(python3 -c "import time; print(round(time.time() - $start, 1))")
    # The test tools are not the runtime's: installed apart and not counted.
    log "pip install the test tools"
    run "$out/pip-test-tools.log" "$venv/bin/pip" install --only-binary=:all: \
        "pytest>=8.0" "pytest-timeout>=2.3" "hypothesis>=6.100"
    python3 - "$wheelhouse" "$seconds" "$(basename "$wheel")" >"$venv/install.json" <<'PY'
import json, sys
from pathlib import Path
wheelhouse, seconds, own = Path(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
wheels = sorted(p for p in wheelhouse.iterdir() if p.suffix == ".whl" and p.name != own)
print(json.dumps({
    "seconds": seconds,
    "download_bytes": sum(p.stat().st_size for p in wheels),
    "wheels": {p.name: p.stat().st_size for p in wheels},
}))
PY
    touch "$venv/.edgecap-deps-$deps_key" "$venv/.edgecap-wheel-$wheel_sha"
fi
cp "$venv/install.json" "$out/install.json"
"$venv/bin/pip" list --format=freeze >"$out/pip-freeze.txt" 2>/dev/null

# Isolated (-I): what is imported is what the venv installed, never a checkout.
log "facts"
"$venv/bin/python" -I - >"$out/facts.json" <<'PY'
import importlib.util, json, os, platform, sys
import edgecap.edge_runtime as rt
file = rt.__file__
if f"{sys.prefix}/lib/" not in file or "site-packages" not in file:
    sys.exit(f"edgecap.edge_runtime comes from {file}, not the venv's site-packages")
print(json.dumps({
    "python": platform.python_version(),
    "machine": platform.machine(),
    "emulated_cpu": os.environ.get("QEMU_CPU"),
    "edgecap_file": file,
    "tensorflow": importlib.util.find_spec("tensorflow") is not None,
}))
PY
run "$out/cli-version.log" "$venv/bin/edge_caption" --version

log "runtime tests: $*"
cd "$stage"
test_start=$(date +%s.%N)
set +e
EDGECAP_PREBUILT_E2E=$stage/e2e EDGECAP_SHARED=/shared EDGECAP_FLICKR8K=/shared/data/flickr8k \
    "$venv/bin/python" -m pytest -q -p no:cacheprovider --junitxml="$out/pytest.xml" "$@" \
    >"$out/pytest.log" 2>&1
pytest_rc=$?
set -e
test_seconds=$(python3 -c "import time; print(round(time.time() - $test_start, 1))")
tail -n 3 "$out/pytest.log"
[ "$pytest_rc" = 0 ] || tail -n 60 "$out/pytest.log" >&2

log "captioning $(wc -l <"$stage/images.txt") images"
bundle_args=()
[ -d "$stage/bundle" ] && bundle_args=(--bundle "$stage/bundle")
caption_start=$(date +%s.%N)
"$venv/bin/python" -I "$stage/tests/platforms/caption_images.py" --base /shared \
    --list "$stage/images.txt" "${bundle_args[@]}" --out "$out/captions.jsonl"
caption_seconds=$(python3 -c "import time; print(round(time.time() - $caption_start, 1))")

python3 - "$out" "$extra" "$pytest_rc" "$test_seconds" "$caption_seconds" "$venv_state" >"$out/root.json" <<'PY'
import json, sys
import xml.etree.ElementTree as ET
from pathlib import Path
out, extra, rc, test_seconds, caption_seconds, venv_state = sys.argv[1:]
out = Path(out)
suite = ET.parse(out / "pytest.xml").getroot()
suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
n = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
meta = json.loads((out / "captions.meta.json").read_text())
print(json.dumps({
    "extra": extra,
    "facts": json.loads((out / "facts.json").read_text()),
    "install": json.loads((out / "install.json").read_text()),
    "venv": venv_state,
    "tests": {
        "exit_status": int(rc),
        "passed": n["tests"] - n["failures"] - n["errors"] - n["skipped"],
        "failed": n["failures"] + n["errors"],
        "skipped": n["skipped"],
        "seconds": float(test_seconds),
    },
    "captions": {"seconds": float(caption_seconds), "backends": meta["backends"],
                 "versions": meta["versions"]},
}, indent=2))
PY
log "done (pytest exit status $pytest_rc)"
exit "$pytest_rc"
