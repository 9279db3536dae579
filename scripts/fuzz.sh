#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a while and reports what libFuzzer did.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]      (default 60)
#
# Each target starts from its committed corpus (fuzz/corpus/<target>), copied to a
# temporary directory so new entries do not land in the repository. One allocation over
# 256 MiB is a crash (fuzz/src/alloc.rs; libFuzzer's -malloc_limit_mb too when a
# sanitizer is on) and so is an RSS over 1 GB. Prints, per
# target, the executions libFuzzer reported (`stat::number_of_executed_units`) and the
# executions per second. Exits 1 if any target crashed (its input is written to
# fuzz/artifacts/<target>/, reproduce with `cargo +nightly fuzz run <target> <file>`), 2 if
# a run was interrupted from outside without a crash, else 0. Inputs slower than 10 s are
# written as fuzz/artifacts/<target>/slow-unit-* and named, but are not failures.
#
# Environment:
#   FUZZ_TARGETS="a b"     only these targets (default: all, from `cargo fuzz list`)
#   FUZZ_KEEP_CORPUS=1     fuzz in fuzz/corpus/<target> itself, keeping new entries
#   FUZZ_TIMEOUT=30        seconds one input may take before it counts as a hang
#   FUZZ_ARGS="..."        more libFuzzer flags
#   FUZZ_TOOLCHAIN=nightly the toolchain for `cargo +TOOLCHAIN fuzz`
#   FUZZ_SANITIZER=none    `cargo fuzz --sanitizer`: none (default: the code under test is
#                          safe Rust, and AddressSanitizer makes hub_session 5x slower),
#                          or address, memory, thread, leak
#
# libFuzzer's output of each target is kept in ~/.cache/kuzu-sync/fuzz-target/fuzz-logs/.
#
# The fuzz crate is standalone (it builds the engine and protocol crates, never Kuzu's
# C++) and uses its own target dir, ~/.cache/kuzu-sync/fuzz-target: the workspace's one is
# left alone.
set -euo pipefail
cd "$(dirname "$0")/.."

SECS="${1:-60}"
if ! [[ "$SECS" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $0 [SECONDS_PER_TARGET]  (a positive integer, got '$SECS')" >&2
  exit 2
fi
TOOLCHAIN="${FUZZ_TOOLCHAIN:-nightly}"
TIMEOUT="${FUZZ_TIMEOUT:-30}"
KEEP="${FUZZ_KEEP_CORPUS:-0}"
SANITIZER="${FUZZ_SANITIZER:-none}"
read -r -a EXTRA <<<"${FUZZ_ARGS:-}"

# Never build into the workspace's shared target dir (scripts/env.sh exports it).
unset CARGO_TARGET_DIR
# Kept outside the clone (like the workspace's, see scripts/env.sh), one per sanitizer
# (they are built with different flags): the first build takes 3-14 minutes on 2 cores,
# later ones a minute.
TARGET_DIR="${FUZZ_TARGET_DIR:-$HOME/.cache/kuzu-sync/fuzz-target}"
if [ "$SANITIZER" != address ]; then TARGET_DIR="$TARGET_DIR-$SANITIZER"; fi

if ! cargo "+$TOOLCHAIN" fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked
fi

if [ -n "${FUZZ_TARGETS:-}" ]; then
  read -r -a TARGETS <<<"$FUZZ_TARGETS"
else
  mapfile -t TARGETS < <(cargo "+$TOOLCHAIN" fuzz list)
fi
if [ "${#TARGETS[@]}" -eq 0 ]; then
  echo "no fuzz targets found" >&2
  exit 2
fi

echo "== building ${TARGETS[*]} (release, debug assertions, sanitizer: $SANITIZER)" >&2
for t in "${TARGETS[@]}"; do
  cargo "+$TOOLCHAIN" fuzz build --sanitizer "$SANITIZER" --target-dir "$TARGET_DIR" "$t"
done

WORK="$(mktemp -d "${TMPDIR:-/tmp}/kuzu-sync-fuzz.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
# libFuzzer's output, kept after the run.
LOGS="$TARGET_DIR/fuzz-logs"
mkdir -p "$LOGS"

failed=0
summary=()
for t in "${TARGETS[@]}"; do
  seeds="fuzz/corpus/$t"
  mkdir -p "$seeds"
  if [ "$KEEP" = 1 ]; then
    corpus="$seeds"
  else
    corpus="$WORK/corpus-$t"
    mkdir -p "$corpus"
    cp -R "$seeds/." "$corpus/"
  fi
  mkdir -p "fuzz/artifacts/$t"
  log="$LOGS/$t.log"
  echo "== $t: ${SECS}s from $(find "$seeds" -type f | wc -l) seeds" >&2
  rc=0
  cargo "+$TOOLCHAIN" fuzz run --sanitizer "$SANITIZER" --target-dir "$TARGET_DIR" "$t" "$corpus" -- \
    -max_total_time="$SECS" \
    -malloc_limit_mb=256 \
    -rss_limit_mb=1024 \
    -timeout="$TIMEOUT" \
    -print_final_stats=1 \
    ${EXTRA[@]+"${EXTRA[@]}"} >"$log" 2>&1 || rc=$?

  execs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | tail -n 1 | grep -o '[0-9]*$' || true)"
  per_sec="$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | tail -n 1 | grep -o '[0-9]*$' || true)"
  # Crash, OOM, timeout and leak inputs; libFuzzer also writes slow-unit-* files, which
  # are not failures.
  artifact="$(grep -o 'Test unit written to [^ ]*' "$log" | sed 's/^Test unit written to //' \
    | grep -E '/(crash|oom|timeout|leak)-[^/]*$' | tail -n 1 || true)"
  slow="$(grep -o 'Test unit written to [^ ]*/slow-unit-[^ ]*' "$log" | tail -n 1 | sed 's/^Test unit written to //' || true)"
  if [ "$rc" -eq 0 ]; then
    status="ok"
  elif [ -z "$artifact" ] && grep -q 'libFuzzer: run interrupted' "$log"; then
    # Stopped by a signal from outside before its time was up: no crash, but not a
    # complete run either.
    status="INTERRUPTED (no crash found)"
    [ "$failed" -eq 1 ] || failed=2
  else
    failed=1
    reason="$(grep -m 1 -E '^==[0-9]+== ?ERROR: |^==kuzu-sync-fuzz== ERROR|^thread .* panicked|^check failed|ERROR: libFuzzer' "$log" || true)"
    status="CRASH (exit $rc)${artifact:+: $artifact}"
    echo "-- $t failed; last lines of its log:" >&2
    grep -v -E '^#[0-9]|NEW_FUNC' "$log" | tail -n 40 >&2 || true
    if [ -n "$reason" ]; then echo "-- $t: $reason" >&2; fi
  fi
  if [ -n "$slow" ]; then
    status="$status; slowest input: $slow"
  fi
  line="$(printf '%-16s executions %-10s exec/s %-8s %s' "$t" "${execs:-?}" "${per_sec:-?}" "$status")"
  echo "$line" >&2
  summary+=("$line")
done

echo
echo "== fuzz summary (${SECS}s per target; logs in $LOGS)"
printf '%s\n' "${summary[@]}"
exit "$failed"
