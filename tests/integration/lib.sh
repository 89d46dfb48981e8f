# Shared by the integration scripts (sourced): RFORK, T and WORK are set by the caller, and PASS, FAIL
# and FAILED count results.

on() { local node=$1; shift; timeout -s KILL 60 "$RFORK" cluster exec "$node" -- "$@"; }

settle() { # [tenths of a second, default 50]: waits for stand-ins, inits and post-copy transfers to end
    for _ in $(seq "${1:-50}"); do
        [ -z "$(pgrep -f 'rfork-(standin|nsinit)|criu (lazy-pages|dump)')" ] && return
        sleep 0.1
    done
}

result() { # name, ok(0/1), detail
    if [ "$2" = 0 ]; then
        PASS=$((PASS + 1)); echo "ok    $1"
    else
        FAIL=$((FAIL + 1)); FAILED+=("$1"); echo "FAIL  $1: $3"
    fi
}

# A conformance program under plain fork and under `rfork run` on node1 (stdin opened inside the node, as
# a program started there would have it); sets `why` to what differs, empty when they agree and a child
# ran remotely with none falling back. conformance_pair NAME [STDIN [ARGS...]]
conformance_pair() {
    local name=$1 input=${2:-/dev/null}
    shift 2 2>/dev/null || shift $#
    on node1 bash -c 'exec "$0" "${@:2}" <"$1"' "$T/$name" "$input" "$@" >"$WORK/$name.plain" 2>"$WORK/$name.plain.err"
    local plain_rc=$?
    on node1 bash -c 'exec "$0" run -- "$1" "${@:3}" <"$2"' "$RFORK" "$T/$name" "$input" "$@" \
        >"$WORK/$name.rfork" 2>"$WORK/$name.rfork.err"
    local rfork_rc=$?
    settle "${SETTLE_TENTHS:-50}"
    why=""
    [ "$plain_rc" = "$rfork_rc" ] || why+="exit $rfork_rc under rfork, $plain_rc plain (stderr: $(tail -4 "$WORK/$name.rfork.err" | tr '\n' ' ')); "
    cmp -s "$WORK/$name.plain" "$WORK/$name.rfork" || why+="output differs: $(diff "$WORK/$name.plain" "$WORK/$name.rfork" | head -5 | tr '\n' ' '); "
    grep -q 'runs on node[23]' "$WORK/$name.rfork.err" || why+="no child ran remotely ($(head -3 "$WORK/$name.rfork.err" | tr '\n' ' ')); "
    grep -q 'runs locally' "$WORK/$name.rfork.err" && why+="a child fell back: $(grep -m1 'runs locally' "$WORK/$name.rfork.err"); "
}

cluster_up() { # N: a fresh N-node cluster sharing this checkout; on failure the run ends as one failed test
    "$RFORK" cluster down >/dev/null 2>&1
    if ! "$RFORK" cluster up --nodes "$1" --share "$ROOT" >"$WORK/up.log" 2>&1; then
        cat "$WORK/up.log"; echo "0 passed, 1 failed"; exit 1
    fi
}
