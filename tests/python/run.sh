#!/usr/bin/env bash
# The DLPack hand-off against a real consumer and producer: builds the dlpack-harness library,
# installs NumPy if it is missing, and runs test_dlpack.py (PyTorch too where it is installed).
# Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/../.."

cargo build -q -p dlpack-harness
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
case "$(uname -s)" in
  Darwin) lib="$target_dir/debug/libdlpack_harness.dylib" ;;
  *) lib="$target_dir/debug/libdlpack_harness.so" ;;
esac
[ -f "$lib" ] || { echo "tests/python/run.sh: the harness library $lib was not built" >&2; exit 1; }

if ! python3 -c 'import numpy' 2>/dev/null; then
  echo "tests/python/run.sh: installing numpy" >&2
  python3 -m pip install -q numpy
fi

DLPACK_HARNESS="$lib" python3 tests/python/test_dlpack.py
