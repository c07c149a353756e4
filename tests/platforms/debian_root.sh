#!/bin/bash
# Prove the runtime on other Debian releases and on arm64 (QEMU user-mode emulation), from
# the BUILT WHEEL, in Debian roots made with debootstrap. Needs root, debootstrap, and for
# arm64 qemu-user-static with binfmt-support (apt-get install qemu-user-static
# binfmt-support debootstrap). The Makefile's test-debian13 and test-arm64 call it.
#
#   debian_root.sh prepare            the e2e folder, the image list and the x86 captions
#   debian_root.sh run NAME EXTRA     NAME: debianNN-ARCH, NN 11, 12 or 13, ARCH amd64,
#                                     arm64 or armhf (e.g. debian12-arm64)
#                                     EXTRA: edge or pi-legacy
#   debian_root.sh summary NAME-EXTRA...
#
# Settings (environment; the Makefile passes them):
#   ROOTS     where the roots, the .deb cache and the pip cache live (outside the repo);
#             a finished root is reused, a half-made one is made again
#   WHEEL     the built wheel (make dist)
#   BUNDLE    the bundle folder to caption with; empty: the package's built-in model
#   DEMO_BUNDLE  a second bundle to caption the same images with (make demo's), or empty
#   SHARED    the shared data folder (data/imagenet_check, data/flickr8k-224,
#             data/flickr8k-originals, data/flickr8k)
#   PLATFORMS results folder (artifacts/platforms); PYTHON the host venv's python
#   PI_PYTHON the host's pi-legacy venv's python (tflite-runtime 2.14), where there is one:
#             pi-legacy roots are compared with its captions too (same backend, x86)
#   MIRROR    the Debian mirror; N_TEST the number of Flickr8k test photos (200)
#   ARM_CPU   the core QEMU emulates for arm64 roots: cortex-a76 (Raspberry Pi 5, the
#             default), cortex-a72 (Pi 4) or cortex-a53 (Pi 3, Zero 2); armhf roots run
#             on QEMU's default 32-bit ARM core
#
# A root whose Python cannot install the wheel with [EXTRA] from binary wheels (too old a
# Python, no wheel for the machine) is a result too: its result.json has install.ok false
# and pip's errors, and `run` exits with status 3.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
ROOTS=${ROOTS:-$HOME/.cache/edgecap-roots}
PLATFORMS=${PLATFORMS:-$REPO/artifacts/platforms}
SHARED=${SHARED:-$REPO/../shared}
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
N_TEST=${N_TEST:-200}
BUNDLE=${BUNDLE:-}
DEMO_BUNDLE=${DEMO_BUNDLE:-}
ARM_CPU=${ARM_CPU:-cortex-a76}
E2E=$PLATFORMS/e2e
X86=$PLATFORMS/x86-host
X86_LEGACY=$PLATFORMS/x86-pi-legacy
PI_PYTHON=${PI_PYTHON:-}

log() { echo "[$(date +%H:%M:%S)] $*"; }
die() {
    echo "debian_root.sh: $*" >&2
    exit 2
}
abspath() { (cd "$(dirname "$1")" && echo "$(pwd)/$(basename "$1")"); }

# The runtime tests: the folder tests/edge_runtime/ (what the pi-legacy job runs too).
RUNTIME_TESTS=tests/edge_runtime

prepare() {
    [ -x "$PYTHON" ] || die "no host python at $PYTHON; run 'make install'"
    [ -d "$SHARED/data/imagenet_check" ] && [ -f "$SHARED/data/flickr8k-224/Flickr_8k.testImages.txt" ] &&
        [ -d "$SHARED/data/flickr8k-originals" ] ||
        die "no check photos, Flickr8k (224 px copy) or Flickr8k originals under SHARED=$SHARED"
    mkdir -p "$PLATFORMS" "$X86"
    # The runtime tests' small pipeline, built once on x86 (TensorFlow) and reused.
    "$PYTHON" "$REPO/tests/platforms/build_e2e.py" "$E2E"
    # The check photos, then the first N_TEST of the sorted Flickr8k test split.
    {
        (cd "$SHARED" && ls data/imagenet_check/*.jpg)
        # sed, not head: head's early exit would kill sort with SIGPIPE (pipefail: exit 141).
        sort "$SHARED/data/flickr8k-224/Flickr_8k.testImages.txt" | sed -n "1,${N_TEST}p" |
            sed 's|^|data/flickr8k-224/Flicker8k_Dataset/|'
        # Full-size test photos: the device resizes these (OpenCV's area rule), as it does
        # a user's photos; the 224 px copy above skips that step.
        (cd "$SHARED" && ls data/flickr8k-originals/*.jpg)
    } >"$PLATFORMS/images.txt"
    local bundle_args=()
    [ -n "$BUNDLE" ] && bundle_args=(--bundle "$BUNDLE")
    [ -z "$DEMO_BUNDLE" ] || [ -f "$DEMO_BUNDLE/manifest.json" ] || die "no bundle at DEMO_BUNDLE=$DEMO_BUNDLE"
    log "x86 captions (host venv) of $(wc -l <"$PLATFORMS/images.txt") images, bundle: ${BUNDLE:-built-in}"
    "$PYTHON" "$REPO/tests/platforms/caption_images.py" --base "$SHARED" \
        --list "$PLATFORMS/images.txt" "${bundle_args[@]}" --out "$X86/captions.jsonl"
    rm -f "$X86/captions-demo.jsonl"
    if [ -n "$DEMO_BUNDLE" ]; then
        log "x86 captions (host venv) with the demo bundle $DEMO_BUNDLE"
        "$PYTHON" "$REPO/tests/platforms/caption_images.py" --base "$SHARED" \
            --list "$PLATFORMS/images.txt" --bundle "$DEMO_BUNDLE" --out "$X86/captions-demo.jsonl"
    fi
    rm -rf "$X86_LEGACY"
    if [ -n "$PI_PYTHON" ] && [ -x "$PI_PYTHON" ]; then
        log "x86 captions with tflite-runtime ($PI_PYTHON)"
        "$PI_PYTHON" -I "$REPO/tests/platforms/caption_images.py" --base "$SHARED" \
            --list "$PLATFORMS/images.txt" "${bundle_args[@]}" --out "$X86_LEGACY/captions.jsonl"
        [ -z "$DEMO_BUNDLE" ] || "$PI_PYTHON" -I "$REPO/tests/platforms/caption_images.py" \
            --base "$SHARED" --list "$PLATFORMS/images.txt" --bundle "$DEMO_BUNDLE" \
            --out "$X86_LEGACY/captions-demo.jsonl"
    fi
}

# The Debian root NAME (debianNN-ARCH) under ROOTS, made once with debootstrap.
ensure_root() {
    local name=$1 suite=$2 arch=$3 root=$ROOTS/$1
    if [ -f "$root/.edgecap-root" ]; then
        log "reusing $root"
        return
    fi
    command -v debootstrap >/dev/null || die "debootstrap not found: apt-get install debootstrap"
    local partial=$root.partial
    grep -q " $partial[ /]" /proc/mounts && die "$partial has mounts left; unmount them first"
    rm -rf "$partial"
    mkdir -p "$ROOTS/debs"
    log "debootstrap $suite $arch into $partial (minutes; under emulation for arm64)"
    local start=$SECONDS
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        --arch="$arch" --cache-dir="$ROOTS/debs" "$suite" "$partial" "$MIRROR" \
        >"$ROOTS/$name.debootstrap.log" 2>&1 ||
        { tail -n 30 "$ROOTS/$name.debootstrap.log" >&2; die "debootstrap failed (log: $ROOTS/$name.debootstrap.log)"; }
    echo "$((SECONDS - start))" >"$partial/.edgecap-root"
    mv "$partial" "$root"
    log "$root made in $((SECONDS - start)) s"
}

# arm64 and armhf on an x86 host: the kernel must hand aarch64 (arm) binaries to
# qemu-aarch64-static (qemu-arm-static). With binfmt's F flag the interpreter is opened at
# registration, so the root needs no copy of it.
ensure_binfmt() {
    local arch=$1 host qemu
    host=$(dpkg --print-architecture)
    [ "$arch" = "$host" ] && return
    case $arch in
    arm64) qemu=qemu-aarch64 ;;
    armhf) qemu=qemu-arm ;;
    *) die "only arm64 and armhf are emulated here, not $arch" ;;
    esac
    local entry=/proc/sys/fs/binfmt_misc/$qemu
    if [ ! -f "$entry" ]; then
        [ -f /proc/sys/fs/binfmt_misc/register ] ||
            mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null || true
        command -v update-binfmts >/dev/null && update-binfmts --enable $qemu 2>/dev/null || true
    fi
    [ -f "$entry" ] && grep -q enabled "$entry" ||
        die "binfmt_misc has no enabled $qemu entry: apt-get install qemu-user-static binfmt-support, then update-binfmts --enable $qemu"
    [ ! -d "$ROOTS/$2" ] || grep -q "flags: .*F" "$entry" || [ -x "$ROOTS/$2/usr/bin/$qemu-static" ] ||
        cp "/usr/bin/$qemu-static" "$ROOTS/$2/usr/bin/"
}

# An arm64 /proc/cpuinfo for the emulated core, one entry per CPU the host's /sys lists.
# QEMU 7.2's user mode passes the x86 host's /proc/cpuinfo through to aarch64 programs:
# cpuinfo (XNNPACK's CPU detection) then finds CPUs in /sys but no ARM core, and LiteRT
# crashes (SIGSEGV) opening any model; without /sys it runs without XNNPACK. The features
# XNNPACK picks its kernels by come from the HWCAPs QEMU gives the core (QEMU_CPU).
arm_cpuinfo() {
    local part variant revision features n i
    case $1 in
    cortex-a76) part=0xd0b variant=0x4 revision=1
        features="fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp" ;;
    cortex-a72) part=0xd08 variant=0x0 revision=3 features="fp asimd evtstrm crc32 cpuid" ;;
    cortex-a53) part=0xd03 variant=0x0 revision=4 features="fp asimd evtstrm crc32 cpuid" ;;
    *) die "ARM_CPU is cortex-a76, cortex-a72 or cortex-a53, not $1" ;;
    esac
    n=$(find /sys/devices/system/cpu -maxdepth 1 -name 'cpu[0-9]*' | wc -l)
    for ((i = 0; i < n; i++)); do
        printf 'processor\t: %d\nBogoMIPS\t: 108.00\nFeatures\t: %s\nCPU implementer\t: 0x41\n' "$i" "$features"
        printf 'CPU architecture: 8\nCPU variant\t: %s\nCPU part\t: %s\nCPU revision\t: %s\n\n' "$variant" "$part" "$revision"
    done
}

MOUNTED=()
unmount_all() {
    local i
    for ((i = ${#MOUNTED[@]} - 1; i >= 0; i--)); do
        umount -R "${MOUNTED[i]}" 2>/dev/null || umount -l "${MOUNTED[i]}" 2>/dev/null || true
    done
    MOUNTED=()
}
bind() { # bind SOURCE TARGET [ro]
    mkdir -p "$2"
    mount --bind "$1" "$2"
    MOUNTED+=("$2")
    mount --make-rslave "$2" # unmounting it never reaches the host's mounts
    [ "${3:-}" = ro ] && mount -o remount,bind,ro "$2"
    return 0
}

run_root() {
    local name=$1 extra=$2
    [ "$extra" = edge ] || [ "$extra" = pi-legacy ] || die "EXTRA is edge or pi-legacy, not $extra"
    local release=${name%%-*} arch=${name#*-} suite
    case $release in
    debian11) suite=bullseye ;;
    debian12) suite=bookworm ;;
    debian13) suite=trixie ;;
    *) die "unknown release $release (debian11, debian12, debian13)" ;;
    esac
    [ "$(id -u)" = 0 ] || die "debootstrap and chroot need root"
    [ -n "${WHEEL:-}" ] && [ -f "$WHEEL" ] || die "no wheel at WHEEL=${WHEEL:-}; run 'make dist'"
    [ -f "$E2E/bundle-int8/manifest.json" ] && [ -f "$PLATFORMS/images.txt" ] &&
        [ -f "$X86/captions.jsonl" ] || die "run 'debian_root.sh prepare' first"
    [ -z "$BUNDLE" ] || [ -f "$BUNDLE/manifest.json" ] || die "no bundle at BUNDLE=$BUNDLE"
    [ -z "$DEMO_BUNDLE" ] || [ -f "$X86/captions-demo.jsonl" ] ||
        die "no x86 captions of DEMO_BUNDLE=$DEMO_BUNDLE; run 'debian_root.sh prepare' with it first"

    local total_start=$SECONDS
    ensure_binfmt "$arch" "$name"
    ensure_root "$name" "$suite" "$arch"
    local root=$ROOTS/$name out=$PLATFORMS/$name-$extra
    # The stage: what the root sees at /edgecap, copied fresh (never the checkout itself).
    rm -rf "$out"
    mkdir -p "$out/dist" "$out/out"
    cp "$WHEEL" "$out/dist/"
    cp -r "$REPO/tests" "$out/tests"
    find "$out/tests" -name __pycache__ -prune -exec rm -rf {} +
    cp "$REPO/pyproject.toml" "$out/"  # pytest's settings only; no package is importable
    cp -r "$E2E" "$out/e2e"
    [ -n "$BUNDLE" ] && cp -r "$BUNDLE" "$out/bundle"
    [ -n "$DEMO_BUNDLE" ] && cp -r "$DEMO_BUNDLE" "$out/demo-bundle"
    cp "$PLATFORMS/images.txt" "$out/"

    trap unmount_all EXIT
    mkdir -p "$ROOTS/pip-cache"
    mkdir -p "$root/proc" && mount -t proc proc "$root/proc" && MOUNTED+=("$root/proc")
    local emulated=()
    if [ "$arch" = arm64 ] && [ "$arch" != "$(dpkg --print-architecture)" ]; then
        arm_cpuinfo "$ARM_CPU" >"$ROOTS/cpuinfo-$ARM_CPU"
        mount --bind "$ROOTS/cpuinfo-$ARM_CPU" "$root/proc/cpuinfo" && MOUNTED+=("$root/proc/cpuinfo")
        emulated=(QEMU_CPU="$ARM_CPU") # every aarch64 program started in the root inherits it
    fi
    bind /sys "$root/sys" ro # without /sys LiteRT's CPU detection fails and XNNPACK is off
    mkdir -p "$root/dev" && mount --rbind /dev "$root/dev" && MOUNTED+=("$root/dev")
    mount --make-rslave "$root/dev"
    bind "$out" "$root/edgecap"
    bind "$(abspath "$SHARED")" "$root/shared" ro
    bind "$ROOTS/pip-cache" "$root/root/.cache/pip"
    cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
    # pip in the root trusts what the host trusts (a proxy's CA, where there is one).
    local ca=${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}
    [ -f "$ca" ] && cp "$ca" "$root/etc/edgecap-host-ca.pem"

    log "$name ($arch${emulated:+, QEMU ${ARM_CPU}}) [$extra]: in the root"
    local rc=0 env=(/usr/bin/env -i HOME=/root LANG=C.UTF-8 "${emulated[@]}"
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
        PIP_CERT=/etc/edgecap-host-ca.pem PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=180
        ${http_proxy:+http_proxy=$http_proxy} ${https_proxy:+https_proxy=$https_proxy}
        ${no_proxy:+no_proxy=$no_proxy})
    chroot "$root" "${env[@]}" bash /edgecap/tests/platforms/in_root.sh "$extra" "$RUNTIME_TESTS" || rc=$?
    if [ "$rc" != 3 ] && [ "$arch" = arm64 ] && [ -f "$out/out/root.json" ]; then
        # The same venv with /sys hidden, as some containers do: XNNPACK's CPU detection
        # fails there, and the runtime must say so in one warning line.
        log "$name [$extra]: without /sys"
        umount -R "$root/sys"
        chroot "$root" "${env[@]}" bash /edgecap/tests/platforms/in_root.sh nosys "$extra" || rc=$?
    fi
    unmount_all
    trap - EXIT
    [ -f "$out/out/root.json" ] || die "$name [$extra]: the root wrote no results (exit status $rc)"
    if [ "$rc" = 3 ]; then
        "$PYTHON" - "$out" "$name" "$((SECONDS - total_start))" <<'PY'
import json, sys
from pathlib import Path
out, name, seconds = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
result = json.loads((out / "out" / "root.json").read_text())
result.update(root=name, seconds=seconds)
(out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
PY
        log "$name [$extra]: does not install ($((SECONDS - total_start)) s); results in $out"
        return 3
    fi

    log "$name [$extra]: captions against x86"
    local which
    for which in "" -demo; do
        [ -f "$out/out/captions$which.jsonl" ] || continue
        "$PYTHON" "$REPO/tests/platforms/compare_captions.py" "$X86/captions$which.jsonl" \
            "$out/out/captions$which.jsonl" --flickr8k "$SHARED/data/flickr8k" --out "$out/compare$which.json"
        if [ "$extra" = pi-legacy ] && [ -f "$X86_LEGACY/captions$which.jsonl" ]; then
            log "$name [$extra]: captions against x86's with the same backend (tflite-runtime)"
            "$PYTHON" "$REPO/tests/platforms/compare_captions.py" "$X86_LEGACY/captions$which.jsonl" \
                "$out/out/captions$which.jsonl" --flickr8k "$SHARED/data/flickr8k" \
                --out "$out/compare-same-backend$which.json"
        fi
    done
    "$PYTHON" - "$out" "$name" "$root" "$((SECONDS - total_start))" <<'PY'
import json, sys
from pathlib import Path
out, name, root, seconds = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
result = json.loads((out / "out" / "root.json").read_text())
result.update(root=name, seconds=seconds, compare=json.loads((out / "compare.json").read_text()))
for key, file in (("compare_same_backend", "compare-same-backend.json"),
                  ("compare_demo", "compare-demo.json"),
                  ("compare_demo_same_backend", "compare-same-backend-demo.json"),
                  ("without_sys", "out/nosys.json")):
    if (out / file).is_file():
        result[key] = json.loads((out / file).read_text())
result["debootstrap_seconds"] = int((root / ".edgecap-root").read_text().strip() or 0)
(out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
PY
    log "$name [$extra]: $((SECONDS - total_start)) s; results in $out"
    return "$rc"
}

case ${1:-} in
prepare) prepare ;;
run)
    [ $# = 3 ] || die "usage: debian_root.sh run NAME EXTRA"
    run_root "$2" "$3"
    ;;
summary)
    shift
    "$PYTHON" "$REPO/tests/platforms/summary.py" "${@/#/$PLATFORMS/}"
    ;;
*) die "usage: debian_root.sh prepare | run NAME EXTRA | summary NAME-EXTRA..." ;;
esac
