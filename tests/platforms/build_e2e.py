"""Build, once, the small e2e pipeline that the runtime tests use (tests/conftest.py's `e2e`
fixture: synthetic scenes -> demo encoder features -> LSTM -> int8 TFLite bundle) into a
folder, so that an environment without TensorFlow (a Debian root) can run those tests on it
through EDGECAP_PREBUILT_E2E.

    python tests/platforms/build_e2e.py artifacts/platforms/e2e

A folder that already holds a finished pipeline is kept as it is. Needs the `train` extra.
"""

import argparse
import shutil
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def finished(root: Path) -> bool:
    return (root / "run" / "metrics.json").is_file() and (
        root / "bundle-int8" / "manifest.json"
    ).is_file()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder to write (kept if already finished)")
    args = parser.parse_args(argv)
    if finished(args.out):
        print(f"{args.out}: already built")
        return 0
    sys.path.insert(0, str(TESTS))
    from conftest import build_e2e

    partial = args.out.with_name(args.out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    build_e2e(partial)
    shutil.rmtree(partial / "features", ignore_errors=True)  # training's cache only
    shutil.rmtree(args.out, ignore_errors=True)
    partial.rename(args.out)
    print(f"{args.out}: built")
    return 0


if __name__ == "__main__":
    sys.exit(main())
