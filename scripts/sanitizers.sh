#!/usr/bin/env bash
# Runs the library's tests (unit tests and integration tests) under AddressSanitizer (with
# LeakSanitizer) and ThreadSanitizer, on nightly with the standard library rebuilt
# instrumented (-Zbuild-std; ThreadSanitizer needs it to see std's atomics and locks).
#
# Usage: scripts/sanitizers.sh [address] [thread]     (default: both)
# Environment: DCMEM_STRESS_OPS (default 2000 here) and PROPTEST_CASES (default 32 here) keep
# the slowed-down runs short; each sanitizer builds into its own target/san-<name> directory.
#
# Not run, and why:
# - loom_pool: a loom model, compiled only with --cfg loom (CI runs it separately);
# - the OpenCL and CUDA tests (it's backends::opencl and backends::cuda): they need the
#   `opencl`/`cuda` features and a driver, which are not built instrumented here (without the
#   features those modules are empty);
# - doctests: they exercise nothing the unit and integration tests do not, and would need
#   rustdoc's own sanitizer setup;
# - host::pinned's pinned_buffers_are_locked_page_aligned_and_zeroed and
#   exceeding_rlimit_memlock_is_a_clear_error: both sanitizers replace mlock with a no-op, so
#   memory is never locked and RLIMIT_MEMLOCK never refuses (the other pinned tests run).
# LeakSanitizer (part of the address run) skips the leaks listed in scripts/lsan.supp, which
# tests make on purpose.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

target=$(rustc +nightly -vV | sed -n 's/^host: //p')
if ! rustup +nightly component add rust-src >/dev/null 2>&1; then
  echo "sanitizers: cannot add rust-src to the nightly toolchain (needed by -Zbuild-std)" >&2
  exit 2
fi
export DCMEM_STRESS_OPS=${DCMEM_STRESS_OPS:-2000}
export PROPTEST_CASES=${PROPTEST_CASES:-32}

# Every integration test of the library except those listed above.
tests=()
for f in crates/dotcompute-memory/tests/*.rs crates/dotcompute-memory/tests/*/main.rs; do
  name=$(basename "$f" .rs)
  [ "$name" = main ] && name=$(basename "$(dirname "$f")")
  case "$name" in
    loom_pool) continue ;;
  esac
  tests+=(--test "$name")
done

# Tests that cannot pass under a sanitizer (see above).
skips=(--skip pinned_buffers_are_locked_page_aligned_and_zeroed --skip exceeding_rlimit_memlock_is_a_clear_error)

sanitizers=("$@")
[ ${#sanitizers[@]} -eq 0 ] && sanitizers=(address thread)
status=0
for san in "${sanitizers[@]}"; do
  # allocator_may_return_null: tests ask for impossible sizes and expect an error, not an abort.
  case "$san" in
    address)
      opts="ASAN_OPTIONS=detect_leaks=1:detect_stack_use_after_return=1:allocator_may_return_null=1"
      export LSAN_OPTIONS="suppressions=$(pwd)/scripts/lsan.supp:print_suppressions=0"
      ;;
    thread) opts="TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1:allocator_may_return_null=1" ;;
    *) echo "sanitizers: unknown sanitizer $san (address or thread)" >&2; exit 2 ;;
  esac
  echo "=== $san sanitizer: cargo +nightly test -Zbuild-std --target $target --no-fail-fast -p dotcompute-memory --lib ${tests[*]}"
  start=$(date +%s)
  # rustix_use_libc: rustix makes raw system calls by default, which the sanitizers do not
  # intercept; ThreadSanitizer then misses munmap and reports a new mapping at a reused address
  # (a shared buffer's header write) as racing with the old one. Through libc it sees them.
  if env "$opts" RUSTFLAGS="-Zsanitizer=$san --cfg rustix_use_libc" \
    CARGO_TARGET_DIR="target/san-$san" \
    cargo +nightly test -Zbuild-std --target "$target" --no-fail-fast -p dotcompute-memory --lib "${tests[@]}" -- "${skips[@]}"; then
    echo "=== $san sanitizer: passed ($(($(date +%s) - start))s)"
  else
    echo "=== $san sanitizer: FAILED ($(($(date +%s) - start))s)"
    status=1
  fi
done
exit $status
