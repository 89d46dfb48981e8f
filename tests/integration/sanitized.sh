#!/usr/bin/env bash
# The conformance programs on a real 3-node cluster with the sanitizer builds of rfork's C side
# (librfork/Makefile `sanitize`): the preload library with UBSan, rfork-standin and rfork-nsinit with
# AddressSanitizer and UBSan. Each program runs under plain fork and under `rfork run` (children moved to
# the other nodes); their outputs must match, as in run.sh, and no sanitizer may report anything.
#
# usage: RFORK_PREFIX=PREFIX bash tests/integration/sanitized.sh     (root; `make sanitize-test` does it)
# PREFIX is an installation whose lib/librfork.so and libexec/rfork helpers are the sanitizer builds.
# The reports go to build/sanitize-logs: a directory every node sees (their /tmp, /dev/shm and /run are
# their own). Prints one line per test and closes with "N passed, N failed".
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PREFIX=${RFORK_PREFIX:-}
RFORK=$PREFIX/bin/rfork
T=$ROOT/build/tests
LOGS=$ROOT/build/sanitize-logs
WORK=$ROOT/build/sanitize-run
PASS=0
FAIL=0
FAILED=()

if [ -z "$PREFIX" ] || [ ! -x "$RFORK" ]; then
    echo "give the sanitizer installation: RFORK_PREFIX=PREFIX (make sanitize-test makes one)" >&2
    exit 2
fi
if [ "$(id -u)" != 0 ]; then
    echo "the sanitizer suite needs root (a local cluster, CRIU)" >&2
    exit 2
fi
# Refuse plain builds: they would pass without checking anything.
grep -q UBSAN_OPTIONS "$PREFIX/lib/librfork.so" || { echo "$PREFIX/lib/librfork.so is not a sanitizer build" >&2; exit 2; }
for h in rfork-standin rfork-nsinit; do
    grep -q ASAN_OPTIONS "$PREFIX/libexec/rfork/$h" || { echo "$PREFIX/libexec/rfork/$h is not a sanitizer build" >&2; exit 2; }
done

# Descriptors inherited from whoever started this (a lock file, a jobserver) would follow every program
# and its children: a file CRIU cannot find on the node keeps a child home.
for fd in /proc/$$/fd/*; do
    fd=${fd##*/}
    [ "$fd" -gt 2 ] 2>/dev/null && eval "exec $fd>&-" 2>/dev/null
done

rm -rf "$LOGS" "$WORK"
mkdir -p "$LOGS" "$WORK"
# Every report ends the process (halt_on_error) and goes to a file here, whatever became of its stderr.
# Programs keep their own signal behaviour (the stand-in must die by the signal its child died of).
# No LeakSanitizer here: it cannot stop the world in rfork-nsinit's outer process (it unshared its PID
# namespace, whose init is gone by then: LSan's tracer cannot be created and it aborts with "fatal
# error"), and the stand-in and the namespace init end by _exit or a signal, never running it. The C unit
# tests (make -C librfork sanitize-check) run it.
SIGNALS=handle_segv=0:handle_sigbus=0:handle_sigfpe=0:handle_sigill=0:handle_abort=0
export ASAN_OPTIONS="halt_on_error=1:abort_on_error=0:exitcode=86:detect_leaks=0:log_path=$LOGS/asan:$SIGNALS"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:exitcode=86:log_path=$LOGS/ubsan:$SIGNALS"

teardown() { "$RFORK" cluster down >/dev/null 2>&1 || true; }
trap teardown EXIT

# shellcheck source=tests/integration/lib.sh
. "$ROOT/tests/integration/lib.sh"
SETTLE_TENTHS=100 # stand-ins and namespace inits write their reports as they end
reports() { # the sanitizer reports written since the last call, as one line; moved aside
    local found=""
    for f in "$LOGS"/asan.* "$LOGS"/ubsan.*; do
        [ -e "$f" ] || continue
        found+="$(basename "$f"): $(grep -m1 -E 'ERROR|runtime error|SUMMARY' "$f" | cut -c1-200); "
        mkdir -p "$LOGS/seen" && mv "$f" "$LOGS/seen/"
    done
    echo "$found"
}

echo "starting a 3-node cluster"
cluster_up 3

# The reports can be written from inside a node: a UBSan program with a known fault must leave one.
cat >"$WORK/canary.c" <<'C'
#include <limits.h>
int main(int argc, char **argv) { (void)argv; return (INT_MAX - 1 + argc + 1) == 0; }
C
cc -fsanitize=undefined -o "$WORK/canary" "$WORK/canary.c"
on node2 "$WORK/canary" >/dev/null 2>&1
canary=$(ls "$LOGS"/ubsan.* 2>/dev/null | wc -l)
rm -f "$LOGS"/ubsan.*
result "sanitizer reports from inside a node reach $LOGS" "$([ "$canary" -ge 1 ] && echo 0 || echo 1)" \
    "the canary's report is missing: nothing below could be trusted"

conformance() { # name [stdin-file [args...]]
    local name=$1
    conformance_pair "$@"
    grep -qE 'runtime error|Sanitizer' "$WORK/$name.rfork.err" "$WORK/$name.plain.err" && why+="a sanitizer spoke on stderr; "
    local rep; rep=$(reports)
    [ -z "$rep" ] || why+="sanitizer reports: $rep"
    result "sanitized/$name" "$([ -z "$why" ] && echo 0 || echo 1)" "$why"
}

printf 'hello remote child\nsecond line\n' >"$WORK/stdin.txt"
for prog in exit_status kill_by_signal signals stop_cont pipes unclosed_ends sigchld fork_exec many; do conformance "$prog"; done
conformance stdio "$WORK/stdin.txt"
conformance slow_reader /dev/null 12 # flow control both ways: three windows' worth each way
conformance big_memory               # post-copy

# Anything reported outside a test's own window (a daemon's helpers ending late).
settle 100
rep=$(reports)
result "no other sanitizer report" "$([ -z "$rep" ] && echo 0 || echo 1)" "$rep"

echo "$PASS passed, $FAIL failed"
[ "$FAIL" = 0 ]
