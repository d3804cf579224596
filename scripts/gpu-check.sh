#!/usr/bin/env bash
# The whole CUDA verification, for a machine with an NVIDIA GPU and driver, in under 8 minutes:
#   driver       libcuda present and a GPU listed (fails at once without them)
#   build        the CUDA test binaries, the example and dcmem (release), built once up front;
#                or, where gpu-bundle/ is there (scripts/gpu-bundle.sh, for a GPU machine with
#                no Rust toolchain or no network), those binaries checked and used instead
#   conformance  the conformance suite's cuda:: cases, DCMEM_REQUIRE_CUDA=1
#   backend      tests/it/backends/cuda.rs except the kernel and peer tests, DCMEM_REQUIRE_CUDA=1
#   peer         peer copies between the first two GPUs (direct where cuDeviceCanAccessPeer says
#                so, else staged through pinned host memory); on one GPU, between two backends
#                on that device; prints each route and its bandwidth
#   expandable   expandable segments through cuMemAddressReserve/cuMemCreate/cuMemMap
#   kernels      tests/it/backends/cuda.rs kernel_* (saxpy PTX on device views), DCMEM_REQUIRE_CUDA=1
#   example      the cuda_saxpy example
#   bench        dcmem bench --backend cuda --json
# Every step runs (after the driver check) even if an earlier one failed; each has a time limit,
# and steps that would start past the overall budget are not run and count as failed. Prints one
# summary table (step, result, seconds); exits non-zero if any step failed. Logs, the bench JSON
# and the summary go to $OUT when it is set, else to a new temporary directory (printed).
# Usage: scripts/gpu-check.sh
set -u
cd "$(dirname "$0")/.." || exit 2

BUDGET=${GPU_CHECK_BUDGET_S:-460}   # seconds for everything (the last kill adds <= 10): under 8 minutes
if [ -n "${OUT:-}" ]; then
  dest=$OUT
else
  dest=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX") || exit 2
fi
mkdir -p "$dest/logs" || exit 2
start_all=$SECONDS
steps=() results=() times=()
failed=0

# step NAME LIMIT_S COMMAND...: runs COMMAND with output in logs/NAME.log, under LIMIT_S seconds
# or what is left of the budget, whichever is less (a function of this script runs without a
# limit); records result and seconds, and shows the end of the log of a failed step.
step() {
  local name=$1 limit=$2
  shift 2
  local left=$((BUDGET - (SECONDS - start_all)))
  local log="$dest/logs/$name.log" rc t0=$SECONDS result
  if [ "$left" -lt 10 ]; then
    result="FAIL (not run: the ${BUDGET}s budget is spent)"
    rc=125
  else
    [ "$limit" -gt "$left" ] && limit=$left
    echo "== $name (limit ${limit}s): $*" | tee "$log" >&2
    if [ "$(type -t "$1")" = function ]; then
      "$@" >>"$log" 2>&1   # this script's own quick checks
    else
      timeout --kill-after=10 "$limit" "$@" >>"$log" 2>&1
    fi
    rc=$?
    case $rc in
      0) result=ok ;;
      124|137) result="FAIL (timed out after ${limit}s)" ;;
      *) result="FAIL (exit $rc)" ;;
    esac
  fi
  [ "$rc" -ne 0 ] && failed=$((failed + 1)) && { tail -n +2 "$log" 2>/dev/null | tail -n 15 | sed "s/^/   $name| /" >&2; }
  steps+=("$name") results+=("$result") times+=($((SECONDS - t0)))
  return "$rc"
}

summary() {
  {
    printf '%-12s %-44s %8s\n' step result seconds
    local i
    for i in "${!steps[@]}"; do
      printf '%-12s %-44s %8s\n' "${steps[$i]}" "${results[$i]}" "${times[$i]}"
    done
    printf '%-12s %-44s %8s\n' total "$([ "$failed" -eq 0 ] && echo ok || echo "$failed failed")" \
      $((SECONDS - start_all))
  } | tee "$dest/summary.txt"
  echo "logs, bench JSON and summary: $dest"
}

driver_check() {
  local found=""
  if ldconfig -p 2>/dev/null | grep -q 'libcuda\.so'; then
    found=ldconfig
  else
    local dir
    IFS=: read -r -a dirs <<<"${LD_LIBRARY_PATH:-}"
    for dir in "${dirs[@]}" /usr/lib/x86_64-linux-gnu /usr/lib64 /usr/lib/wsl/lib; do
      if [ -n "$dir" ] && compgen -G "$dir/libcuda.so*" >/dev/null; then
        found=$dir
        break
      fi
    done
  fi
  if [ -z "$found" ]; then
    echo "no NVIDIA driver: libcuda.so is not installed (not in the ldconfig cache or LD_LIBRARY_PATH);" \
      "run this on a machine with an NVIDIA GPU and its driver" >&2
    return 1
  fi
  if command -v nvidia-smi >/dev/null; then
    if ! nvidia-smi -L; then
      echo "the NVIDIA driver is installed but nvidia-smi lists no usable GPU" >&2
      return 1
    fi
  fi
  echo "libcuda found ($found)"
}

if ! step driver 30 driver_check; then
  echo "gpu-check: $(tail -n 1 "$dest/logs/driver.log"); nothing else was run" >&2
  for s in build conformance backend peer expandable kernels example bench; do
    steps+=("$s") results+=("not run") times+=(0)
  done
  summary
  exit 1
fi

export CARGO_TERM_COLOR=never
export DCMEM_REQUIRE_CUDA=1
bundle=gpu-bundle
bundle_check() {
  local name
  for name in conformance it cuda_saxpy dcmem; do
    [ -x "$bundle/$name" ] || { echo "$bundle/$name is missing: run scripts/gpu-bundle.sh again" >&2; return 1; }
  done
  echo "using $bundle/ built from commit $(cat "$bundle/COMMIT" 2>/dev/null || echo unknown)" \
    "(this checkout: $(git rev-parse --short HEAD 2>/dev/null || echo unknown))"
}
if [ -d "$bundle" ]; then
  step build 10 bundle_check
  conformance=("$bundle/conformance") it=("$bundle/it")
  example=("$bundle/cuda_saxpy") dcmem=("$bundle/dcmem")
elif command -v cargo >/dev/null; then
  step build 300 bash -c '
    set -e
    cargo test -p dotcompute-memory --features cuda --no-run --test conformance --test it
    cargo build -p dotcompute-memory --features cuda --example cuda_saxpy
    cargo build --release -p dcmem --features cuda'
  cargo_test=(cargo test -p dotcompute-memory --features cuda)
  conformance=("${cargo_test[@]}" --test conformance --) it=("${cargo_test[@]}" --test it --)
  example=(cargo run -p dotcompute-memory --features cuda --example cuda_saxpy)
  dcmem=(cargo run --release -p dcmem --features cuda --)
else
  no_toolchain() {
    echo "no cargo here and no gpu-bundle/: run scripts/gpu-bundle.sh on a machine with Rust and carry gpu-bundle/" >&2
    return 1
  }
  step build 10 no_toolchain
  conformance=(false) it=(false) example=(false) dcmem=(false)
fi
step conformance 120 "${conformance[@]}" cuda::
step backend 90 "${it[@]}" backends::cuda:: --skip backends::cuda::kernel_ --skip backends::cuda::peer_ \
  --skip backends::cuda::expandable_
step peer 60 "${it[@]}" backends::cuda::peer_ --nocapture
step expandable 60 "${it[@]}" backends::cuda::expandable_ --nocapture
step kernels 90 "${it[@]}" backends::cuda::kernel_
step example 60 "${example[@]}"
# The JSON goes to its own file (stdout); the log gets stderr.
step bench 150 bash -c '"${@:2}" bench --backend cuda --json >"$1"' bench "$dest/bench-cuda.json" "${dcmem[@]}"
if [ -s "$dest/bench-cuda.json" ]; then
  echo "bench JSON: $dest/bench-cuda.json ($(wc -c <"$dest/bench-cuda.json") bytes)" >&2
fi

summary
[ "$failed" -eq 0 ]
