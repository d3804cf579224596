#!/usr/bin/env bash
# Builds, on this machine, everything scripts/gpu-check.sh runs, into gpu-bundle/: for a GPU
# machine with no Rust toolchain or no network to fetch crates. cudarc loads the driver at run
# time, so the CUDA build needs no CUDA here. Carry gpu-bundle/ to the GPU machine beside the
# checkout; gpu-check.sh uses it when it is there.
#   gpu-bundle/conformance, gpu-bundle/it   the test binaries (feature cuda), stripped
#   gpu-bundle/cuda_saxpy                   the example
#   gpu-bundle/dcmem                        the CLI (release, feature cuda)
#   gpu-bundle/COMMIT                       the commit built (and "+changes" if the tree had any)
# Usage: scripts/gpu-bundle.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
out=gpu-bundle
limit_mib=60   # what a machine's copy of ignored paths may take is bounded (64 MiB on ours)

# executables FEATURE-ARGS...: cargo's built executables for the given build, one per line.
executables() {
  "$@" --message-format=json | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        print(m["target"]["name"], m["executable"])'
}

rm -rf "$out"
mkdir -p "$out"
{
  executables cargo test -p dotcompute-memory --features cuda --no-run --test conformance --test it
  executables cargo build -p dotcompute-memory --features cuda --example cuda_saxpy
  executables cargo build --release -p dcmem --features cuda --bin dcmem
} | while read -r name path; do
  strip -o "$out/$name" "$path"
done
for name in conformance it cuda_saxpy dcmem; do
  [ -x "$out/$name" ] || { echo "gpu-bundle: $name was not built" >&2; exit 1; }
done
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
[ -z "$(git status --porcelain 2>/dev/null)" ] || commit="$commit+changes"
echo "$commit" >"$out/COMMIT"
size_mib=$(( $(du -sk "$out" | cut -f1) / 1024 ))
if [ "$size_mib" -gt "$limit_mib" ]; then
  echo "gpu-bundle: $size_mib MiB, over the $limit_mib MiB a GPU machine's copy may carry" >&2
  exit 1
fi
echo "gpu-bundle: $out/ ($size_mib MiB, commit $commit): carry it with the checkout, then run scripts/gpu-check.sh"
