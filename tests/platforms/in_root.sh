#!/bin/bash
# Runs INSIDE a Debian root (chroot), started by tests/platforms/debian_root.sh:
#   /edgecap  the stage: dist/*.whl, tests/, pyproject.toml, e2e/, bundle/ (optional),
#             demo-bundle/ (optional), images.txt (paths relative to /shared); results go
#             to /edgecap/out/
#   /shared   the shared data, read-only
# Usage: in_root.sh EXTRA TEST_FILE...   (EXTRA: edge or pi-legacy)
#        in_root.sh nosys EXTRA          (the installed venv, in a root without /sys)
#
# Installs the built wheel with [EXTRA] into /opt/edgecap-EXTRA on the root's python3
# (binary wheels only; the download size is the wheelhouse's, and what pip fetched in all,
# discarded backtracking wheels included, is read from its log), runs the runtime tests
# from the copied tests folder with the installed package (not a checkout), and captions
# the listed images with bundle/ (or the built-in model) and demo-bundle/. Writes
# /edgecap/out/root.json; if the install fails, root.json says so with pip's errors and
# the script exits with status 3 (an image the package does not support).
set -euo pipefail
if [ "$1" = nosys ]; then
    # Without /sys, XNNPACK's CPU detection fails on ARM: the runtime must say so (one
    # warning line) and still caption. What the venv reports goes to out/nosys.json.
    venv=/opt/edgecap-$2
    out=/edgecap/out
    set +e
    "$venv/bin/edge_caption" info --json >"$out/nosys-info.json" 2>"$out/nosys-info.err"
    info_rc=$?
    set -e
    python3 - "$out" "$info_rc" >"$out/nosys.json" <<'PY'
import json, sys
from pathlib import Path
out, rc = Path(sys.argv[1]), int(sys.argv[2])
err = (out / "nosys-info.err").read_text(errors="replace").splitlines()
info = json.loads((out / "nosys-info.json").read_text() or "{}") if rc == 0 else {}
print(json.dumps({
    "exit_status": rc,
    "delegates": (info.get("runtime") or {}).get("delegates"),
    "warnings": [line for line in err if "fast CPU path is off" in line],
    "stderr_lines": len(err),
}, indent=2))
PY
    exit 0
fi
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
    if ! run "$out/pip-download.log" "$venv/bin/pip" download --only-binary=:all: \
        -d "$wheelhouse" "$wheel[$extra]"; then
        # Not installable here: the record says what pip said, and the run ends.
        python3 - "$out" "$extra" "$(basename "$wheel")" "$start" >"$out/root.json" <<'PY'
import json, os, platform, sys, time
from pathlib import Path
out, extra, wheel, start = Path(sys.argv[1]), sys.argv[2], sys.argv[3], float(sys.argv[4])
log = (out / "pip-download.log").read_text(errors="replace").splitlines()
errors = [l.strip() for l in log if l.startswith("ERROR:") or "requires a different Python" in l]
print(json.dumps({
    "extra": extra,
    "facts": {"python": platform.python_version(), "machine": platform.machine(),
              "glibc": "-".join(platform.libc_ver()), "emulated_cpu": os.environ.get("QEMU_CPU")},
    "install": {"ok": False, "seconds": round(time.time() - start, 1),
                "command": f"pip install --only-binary=:all: '{wheel}[{extra}]'",
                "errors": list(dict.fromkeys(errors))[:6]},
}, indent=2))
PY
        rm -rf "$venv" "$wheelhouse"
        log "not installable: $(grep -m1 '^ERROR:' "$out/pip-download.log" || true)"
        exit 3
    fi
    cp "$out/pip-download.log" "$venv/pip-download.log"
    log "pip install from the wheelhouse"
    run "$out/pip-install.log" "$venv/bin/pip" install --no-index --find-links "$wheelhouse" \
        "$wheel[$extra]"
    seconds=$(python3 -c "import time; print(round(time.time() - $start, 1))")
    # The test tools are not the runtime's: installed apart and not counted.
    log "pip install the test tools"
    run "$out/pip-test-tools.log" "$venv/bin/pip" install --only-binary=:all: \
        "pytest>=8.0" "pytest-timeout>=2.3" "hypothesis>=6.100"
    python3 - "$wheelhouse" "$seconds" "$(basename "$wheel")" "$extra" "$venv/pip-download.log" \
        >"$venv/install.json" <<'PY'
import json, re, sys
from pathlib import Path
wheelhouse, seconds, own, extra, log = sys.argv[1:6]
wheelhouse = Path(wheelhouse)
wheels = sorted(p for p in wheelhouse.iterdir() if p.suffix == ".whl" and p.name != own)
# Every wheel pip fetched (downloaded, or taken from its cache), kept or not: a project with
# more than one is one pip backtracked through.
# (Metadata-only fetches, "NAME.whl.metadata", are not wheels.)
fetched, units = {}, {"bytes": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9}
pattern = r"(?:Downloading|Using cached) (?:\S*/)?([^/\s]+\.whl) \(([\d.]+) (bytes|kB|MB|GB)\)"
for m in re.finditer(pattern, Path(log).read_text()):
    fetched[m.group(1)] = float(m.group(2)) * units[m.group(3)]
projects = {}
for name in fetched:
    projects.setdefault(name.split("-")[0].lower(), set()).add(name.split("-")[1])
print(json.dumps({
    "ok": True,
    "seconds": float(seconds),
    "command": f"pip install --only-binary=:all: '{own}[{extra}]'",
    "download_bytes": sum(p.stat().st_size for p in wheels),
    "wheels": {p.name: p.stat().st_size for p in wheels},
    "fetched_wheels": len(fetched),
    "fetched_bytes": round(sum(fetched.values())),
    "backtracked": {k: sorted(v) for k, v in projects.items() if len(v) > 1},
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
    "glibc": "-".join(platform.libc_ver()),
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
if [ -d "$stage/demo-bundle" ]; then
    log "captioning $(wc -l <"$stage/images.txt") images with the demo bundle"
    "$venv/bin/python" -I "$stage/tests/platforms/caption_images.py" --base /shared \
        --list "$stage/images.txt" --bundle "$stage/demo-bundle" --out "$out/captions-demo.jsonl"
fi

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
                 "delegates": meta.get("delegates"), "versions": meta["versions"]},
}, indent=2))
PY
log "done (pytest exit status $pytest_rc)"
exit "$pytest_rc"
