#!/usr/bin/env bash
# The project's test command: installs what the tests need (PoCL, a real OpenCL driver on the
# CPU, so the OpenCL backend's tests run for real), then runs every test of every crate.
# Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
[ -e /etc/OpenCL/vendors/pocl.icd ] || need_pkgs+=(pocl-opencl-icd)
ldconfig -p 2>/dev/null | grep -q 'libOpenCL.so.1' || need_pkgs+=(ocl-icd-opencl-dev)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "scripts/test.sh: installing ${need_pkgs[*]} (OpenCL driver for the opencl backend tests)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq pocl-opencl-icd ocl-icd-opencl-dev clinfo >/dev/null
  else
    echo "scripts/test.sh: ${need_pkgs[*]} missing and cannot install (need root + apt-get); OpenCL tests will skip with a reason" >&2
  fi
fi

exec cargo test --workspace --all-features "$@"
