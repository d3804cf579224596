#!/usr/bin/env bash
# The long checks: the cargo-fuzz targets (random operation sequences against a reference
# model; the shared-memory header parser), the multi-threaded stress test, and the sanitizers.
#
# Usage:
#   scripts/long-checks.sh          full run: `ops` fuzzed for DURATION seconds (default 1800),
#                                   `shared_header` for HEADER_DURATION (default 300), stress
#                                   with STRESS_OPS operations per thread (default 1000000),
#                                   then scripts/sanitizers.sh (address and thread)
#   scripts/long-checks.sh --ci     short run for CI: both fuzz targets 60 s at once (one per
#                                   core), stress with 100000 operations per thread, no
#                                   sanitizers
#
# Needs the nightly toolchain and cargo-fuzz (installed with `cargo install cargo-fuzz --locked`
# when missing). Fuzz corpora and crash artifacts go to crates/dotcompute-memory/fuzz/{corpus,
# artifacts}/<target>; logs to target/long-checks/. Prints a summary with the libFuzzer run
# counts (its `#N`) and the stress operations done; exits non-zero if anything failed.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
export CARGO_TERM_COLOR=never

ci=0
for arg in "$@"; do
  case "$arg" in
    --ci) ci=1 ;;
    *) echo "usage: $0 [--ci]" >&2; exit 2 ;;
  esac
done
if [ $ci = 1 ]; then
  DURATION=${DURATION:-60}
  HEADER_DURATION=${HEADER_DURATION:-60}
  STRESS_OPS=${STRESS_OPS:-100000}
else
  DURATION=${DURATION:-1800}
  HEADER_DURATION=${HEADER_DURATION:-300}
  STRESS_OPS=${STRESS_OPS:-1000000}
fi

logs=$root/target/long-checks
mkdir -p "$logs"
start=$(date +%s)
summary=()
failed=0
note() { summary+=("$(printf '%-34s %s' "$1" "$2")"); }
elapsed() { echo "$(($(date +%s) - $1))s"; }

# ---- fuzz targets ----
fuzz_dir=crates/dotcompute-memory
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "=== installing cargo-fuzz"
  cargo install cargo-fuzz --locked >"$logs/cargo-fuzz-install.log" 2>&1 || {
    echo "cargo-fuzz could not be installed; see $logs/cargo-fuzz-install.log" >&2
    exit 2
  }
fi
echo "=== building the fuzz targets ($(elapsed "$start"))"
t=$(date +%s)
if (cd "$fuzz_dir" && cargo +nightly fuzz build) >"$logs/fuzz-build.log" 2>&1; then
  note "fuzz build" "ok ($(elapsed "$t"))"
  fuzz_built=1
else
  tail -30 "$logs/fuzz-build.log"
  note "fuzz build" "FAILED ($(elapsed "$t")), see $logs/fuzz-build.log"
  failed=1
  fuzz_built=0
fi

# Runs one target for $2 seconds in the background; its log is $logs/fuzz-<target>.log.
fuzz() {
  local target=$1 seconds=$2
  (cd "$fuzz_dir" && cargo +nightly fuzz run "$target" -- \
    -max_total_time="$seconds" -timeout=30 -print_final_stats=1) >"$logs/fuzz-$target.log" 2>&1
}

# libFuzzer's run count: the last `#N` it printed.
runs() { grep -aoE '^#[0-9]+' "$1" | tail -1 | tr -d '#'; }

fuzz_result() {
  local target=$1 status=$2 t=$3 log=$logs/fuzz-$1.log n
  n=$(runs "$log")
  if [ "$status" = 0 ]; then
    note "fuzz $target" "ok: ${n:-0} runs ($(elapsed "$t"))"
  else
    failed=1
    local what
    what=$(grep -aA1 "panicked at" "$log" | sed -n 2p | cut -c1-200)
    [ -n "$what" ] || what=$(grep -aE "^SUMMARY|^==[0-9]+==ERROR" "$log" | head -1)
    note "fuzz $target" "FAILED after ${n:-0} runs ($(elapsed "$t")): ${what:-see log}"
    grep -aA1 "panicked at" "$log" | head -4
    grep -aE "cargo fuzz run .*artifacts" "$log" | head -1 | sed -E "s|^\s*cargo fuzz|reproduce (in $fuzz_dir): cargo +nightly fuzz|"
    echo "full log: $log"
  fi
}

if [ $fuzz_built = 1 ]; then
  t=$(date +%s)
  if [ $ci = 1 ]; then
    echo "=== fuzzing ops and shared_header for ${DURATION}s / ${HEADER_DURATION}s at once ($(elapsed "$start"))"
    fuzz ops "$DURATION" &
    ops_pid=$!
    fuzz shared_header "$HEADER_DURATION" &
    header_pid=$!
    wait $ops_pid
    ops_status=$?
    wait $header_pid
    header_status=$?
    fuzz_result ops $ops_status "$t"
    fuzz_result shared_header $header_status "$t"
  else
    echo "=== fuzzing ops for ${DURATION}s ($(elapsed "$start"))"
    fuzz ops "$DURATION"
    fuzz_result ops $? "$t"
    t=$(date +%s)
    echo "=== fuzzing shared_header for ${HEADER_DURATION}s ($(elapsed "$start"))"
    fuzz shared_header "$HEADER_DURATION"
    fuzz_result shared_header $? "$t"
  fi
fi

# ---- stress ----
# The same cargo flags as scripts/test.sh, so that after it (as in CI) nothing is rebuilt.
echo "=== stress: $STRESS_OPS operations per thread ($(elapsed "$start"))"
t=$(date +%s)
if DCMEM_STRESS_OPS=$STRESS_OPS cargo test --workspace --all-features --test it -- stress:: --nocapture \
  >"$logs/stress.log" 2>&1; then
  done_ops=$(grep -aoE 'stress [a-z]+: [0-9]+ operations' "$logs/stress.log" | awk '{s += $3} END {print s + 0}')
  note "stress (cpu + sim, 4 threads)" "ok: $done_ops operations ($(elapsed "$t"))"
else
  tail -30 "$logs/stress.log"
  note "stress (cpu + sim, 4 threads)" "FAILED ($(elapsed "$t")), see $logs/stress.log"
  failed=1
fi

# ---- sanitizers ----
if [ $ci = 0 ]; then
  echo "=== sanitizers ($(elapsed "$start"))"
  t=$(date +%s)
  if scripts/sanitizers.sh >"$logs/sanitizers.log" 2>&1; then
    note "sanitizers (address, thread)" "ok ($(elapsed "$t"))"
  else
    grep -aE "^=== |^SUMMARY|WARNING: ThreadSanitizer|ERROR: AddressSanitizer|ERROR: LeakSanitizer" \
      "$logs/sanitizers.log" | head -20
    note "sanitizers (address, thread)" "FAILED ($(elapsed "$t")), see $logs/sanitizers.log"
    failed=1
  fi
fi

echo
echo "=== summary ($(elapsed "$start") in all)"
printf '%s\n' "${summary[@]}"
exit $failed
