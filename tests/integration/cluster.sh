#!/usr/bin/env bash
# The cluster as a whole: nodes with CPUs and memory of their own, load measured per node and told to
# peers, links cut for a while and for good, automatic balancing. Real namespace nodes, real CRIU, real
# TCP. Needs root; nothing here skips. Prints one line per test and closes with "N passed, N failed".
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${RFORK_PREFIX:-$ROOT/build}/bin
T=$ROOT/build/tests
RFORK=$BIN/rfork
mkdir -p "$ROOT/build"
WORK=$(mktemp -d "$ROOT/build/cl.XXXXXX")
PASS=0
FAIL=0
FAILED=()

if [ "$(id -u)" != 0 ]; then
    echo "the cluster tests need root (namespaces, cgroups, CRIU): run 'sudo make test'" >&2
    exit 2
fi
for need in criu ip nsenter python3; do
    command -v "$need" >/dev/null || { echo "missing '$need': run 'make setup'" >&2; exit 2; }
done
[ -d /sys/fs/cgroup/cpuset ] || [ -f /sys/fs/cgroup/cgroup.controllers ] || {
    echo "no cgroup cpuset controller is mounted (v1 /sys/fs/cgroup/cpuset or cgroup v2): nodes need one" >&2
    exit 2
}

teardown() {
    "$RFORK" cluster down >/dev/null 2>&1 || true
    ip -n rfork-hub link set rfk2 up 2>/dev/null || true
    rm -rf "$WORK"
}
trap teardown EXIT

# shellcheck source=tests/integration/lib.sh
. "$ROOT/tests/integration/lib.sh"
daemon_pid() { python3 -c "import json;print([x['daemonPID'] for x in json.load(open('/run/rfork-cluster/cluster.json'))['nodes'] if x['name']=='$1'][0])"; }
# A field of one node's row in `rfork nodes --json` as NODE sees it: nodes_field NODE ROW FIELD
nodes_field() {
    on "$1" "$RFORK" nodes --json | python3 -c "
import json, sys
row = [r for r in json.load(sys.stdin) if r['name'] == '$2'][0]
load = row.get('load')
print('none' if load is None else load['$3'])"
}
verdict() { [ -z "$why" ] && echo 0 || echo 1; }
# A metric's value as NODE's rforkd serves it (Prometheus text at 127.0.0.1:9420/metrics), 0 if absent:
# metric NODE 'NAME{LABELS}'
metric() {
    on "$1" python3 -c '
import sys, urllib.request
text = urllib.request.urlopen("http://127.0.0.1:9420/metrics", timeout=5).read().decode()
values = [float(l.split()[-1]) for l in text.splitlines() if l.split(" ")[0] == sys.argv[1]]
print(int(sum(values)))' "$2"
}

# --- each node has CPUs and memory of its own, and what it runs or restores stays in them ---
"$RFORK" cluster down >/dev/null 2>&1
if ! "$RFORK" cluster up --nodes 2 --cpus-per-node 1 --memory-per-node 768M --share "$ROOT" >"$WORK/up.log" 2>&1; then
    cat "$WORK/up.log"; echo "0 passed, 1 failed"; exit 1
fi
why=""
# A node's cpuset: v1's, or v2's where the cpuset controller is there (at /sys/fs/cgroup or, beside v1
# hierarchies, at /sys/fs/cgroup/unified).
node_cpus() { on "$1" sh -c 'for f in /sys/fs/cgroup/cpuset/cpuset.cpus /sys/fs/cgroup/cpuset.cpus /sys/fs/cgroup/unified/cpuset.cpus; do [ -f "$f" ] && exec cat "$f"; done'; }
n1=$(node_cpus node1)
n2=$(node_cpus node2)
[ "$(nproc)" -ge 2 ] && [ "$n1" = "$n2" ] && why+="node1 and node2 share CPU $n1 on a machine with $(nproc); "
[ "$(on node1 nproc)" = 1 ] || why+="a command on node1 may use $(on node1 nproc) CPUs; "
mem=$(on node1 cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || on node1 cat /sys/fs/cgroup/memory.max)
[ "$mem" = $((768 << 20)) ] || why+="node1's memory limit is $mem; "
grep -q "rfork-node1" "/proc/$(daemon_pid node1)/cgroup" || why+="node1's rforkd is not in its cgroup; "
# A child moved to node2 runs in node2's cgroups, with node2's CPU.
on node1 "$RFORK" run --node node2 -- bash -c '(sleep 3; exit 4) & wait $!; echo "child $?"' >"$WORK/cg.out" 2>"$WORK/cg.err" &
run=$!
child=""
for _ in $(seq 50); do child=$(pgrep -f '^sleep 3$' | head -n 1); [ -n "$child" ] && break; sleep 0.1; done
if [ -z "$child" ]; then
    why+="the child did not start ($(cat "$WORK/cg.err")); "
else
    grep -qE '(cpuset|^0:):/rfork-node2$' "/proc/$child/cgroup" || why+="the child on node2 is in $(grep -E 'cpuset|^0:' "/proc/$child/cgroup" | tr '\n' ' '); "
    [ "$(taskset -pc "$child" | sed 's/.*: //')" = "$n2" ] || why+="the child may run on CPUs $(taskset -pc "$child"), node2 has $n2; "
fi
wait "$run"
grep -q '^child 4$' "$WORK/cg.out" || why+="exit status lost: $(cat "$WORK/cg.out" "$WORK/cg.err"); "
result "resources/each node has its own CPU and memory; a moved child uses its new node's" "$(verdict)" "$why"

# --- a node's load is its own, its peers hear it, and what they heard ages out ---
why=""
on node1 timeout 8 sh -c 'while :; do :; done' &
b1=$!
on node1 timeout 8 sh -c 'while :; do :; done' &
b2=$!
sleep 5
q1=$(nodes_field node2 node1 runQueue)
q2=$(nodes_field node2 node2 runQueue)
self1=$(nodes_field node1 node1 runQueue)
wait_pressure=$(nodes_field node1 node1 cpuPressure)
python3 -c "import sys; sys.exit(0 if $q1 >= 1.5 and $self1 >= 1.5 else 1)" || why+="node1 runs 2 busy loops on 1 CPU, its run queue is $self1 (node2 hears $q1); "
python3 -c "import sys; sys.exit(0 if $q2 < 0.5 else 1)" || why+="idle node2's run queue is $q2; "
python3 -c "import sys; sys.exit(0 if $wait_pressure > 10 else 1)" || why+="node1's CPU wait is $wait_pressure%; "
wait "$b1" "$b2"
# A daemon that says nothing for 4 s (stopped): its peers stop trusting its load, then hear it again.
kill -STOP "$(daemon_pid node1)"
sleep 4.5
stale=$(nodes_field node2 node1 runQueue)
kill -CONT "$(daemon_pid node1)"
sleep 1.5
fresh=$(nodes_field node2 node1 runQueue)
[ "$stale" = none ] || why+="node1 silent for 4 s, node2 still shows its load ($stale); "
[ "$fresh" != none ] || why+="node1 speaks again, node2 does not show its load; "
on node2 "$RFORK" nodes >"$WORK/nodes.txt"
grep -qE '^node1 +up ' "$WORK/nodes.txt" || why+="rfork nodes: $(tr '\n' '|' <"$WORK/nodes.txt"); "
result "load/a node's run queue and CPU wait are its own, told to peers each second, and age out" "$(verdict)" "$why"

# --- a 5 s cut during a 48 MiB stream: it only delays the stream ---
why=""
head -c $((48 << 20)) /dev/urandom >"$WORK/blob"
want=$(sha256sum <"$WORK/blob" | cut -d' ' -f1)
cat >"$WORK/writer.py" <<'EOF'
import sys, time
with open(sys.argv[1], "rb") as f:
    while chunk := f.read(1 << 20):
        sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()
        time.sleep(0.08)
EOF
on node1 bash -c '"$0" run --node node2 -- bash -c "(exec python3 $1 $2); echo status \$? >&2" | sha256sum >"$3"' \
    "$RFORK" "$WORK/writer.py" "$WORK/blob" "$WORK/stream.sum" 2>"$WORK/stream.err" &
run=$!
sleep 1.2
ip -n rfork-hub link set rfk2 down
sleep 5
ip -n rfork-hub link set rfk2 up
wait "$run"
got=$(cut -d' ' -f1 <"$WORK/stream.sum")
[ "$got" = "$want" ] || why+="the stream arrived changed ($(wc -c <"$WORK/blob") bytes sent; sum $got); "
grep -q '^status 0$' "$WORK/stream.err" || why+="the writer ended: $(tr '\n' ' ' <"$WORK/stream.err"); "
grep -q 'declared dead\|given up' /run/rfork-cluster/node*.log && why+="a node was declared dead; "
result "links/a 5 s cut during a 48 MiB stream only delays it: every byte arrives, in order" "$(verdict)" "$why"

# --- the connection between node1 and node2 is reset twice (ss -K) while 48 MiB go to a child on node2
# and come back: the link resumes on a new connection each time, no byte lost, repeated or reordered ---
why=""
cat >"$WORK/relay.py" <<'EOF'
import sys, time
while chunk := sys.stdin.buffer.read(1 << 20):
    sys.stdout.buffer.write(chunk)
    sys.stdout.buffer.flush()
    time.sleep(0.08)
EOF
resumed() { cat /run/rfork-cluster/node1.log /run/rfork-cluster/node2.log | grep -c 'resumed'; }
before=$(resumed)
on node1 bash -c '"$0" run --node node2 -- bash -c "(exec python3 $1); echo status \$? >&2" <"$2" | sha256sum >"$3"' \
    "$RFORK" "$WORK/relay.py" "$WORK/blob" "$WORK/reset.sum" 2>"$WORK/reset.err" &
run=$!
sleep 1.2
ip netns exec rfork-node1 ss -K dst 10.250.0.2 >/dev/null 2>&1
sleep 1.3
ip netns exec rfork-node1 ss -K dst 10.250.0.2 >/dev/null 2>&1
wait "$run"
got=$(cut -d' ' -f1 <"$WORK/reset.sum")
[ "$got" = "$want" ] || why+="the stream came back changed (sum $got); "
grep -q '^status 0$' "$WORK/reset.err" || why+="the child ended: $(tr '\n' ' ' <"$WORK/reset.err"); "
after=$(resumed)
[ $((after - before)) -ge 2 ] || why+="the links resumed $((after - before)) times; "
grep -q 'given up\|declared dead' /run/rfork-cluster/node*.log && why+="a link was given up: $(grep -h 'given up' /run/rfork-cluster/node*.log | head -2 | tr '\n' ' '); "
echo "      (the links resumed $((after - before)) times)"
# The metrics say so too.
[ "$(metric node1 rfork_link_resumptions_total)" -ge 2 ] || why+="node1's metrics count $(metric node1 rfork_link_resumptions_total) resumptions; "
[ "$(metric node1 'rfork_relayed_bytes_total{direction="received"}')" -ge $((48 << 20)) ] || why+="node1 counts $(metric node1 'rfork_relayed_bytes_total{direction="received"}') bytes received; "
[ "$(metric node1 rfork_peers_up)" = 1 ] || why+="node1's metrics say $(metric node1 rfork_peers_up) peers up; "
result "links/two connection resets during a 48 MiB round trip through node2: the link resumes, every byte arrives in order" \
    "$(verdict)" "$why"

# --- a node cut off for longer than peerTimeout (10 s): the parent hears SIGKILL in time, node2 ends the
# child by itself (no copy left when the link returns), and nothing hangs ---
# long_cut NAME CUT UNCUT: a child on node2 sleeps; CUT cuts node2 off (in some way), for longer than
# peerTimeout, then UNCUT heals it. Appends to why.
long_cut() {
    local mark run cut told
    settle
    mark="1000.$((RANDOM + 1000))"
    rm -f "$WORK/longcut.out"
    on node1 "$RFORK" run --node node2 -- bash -c \
        '(exec sleep "$1") & c=$!; echo started >"$0"; wait $c; echo "status $? $(date +%s.%N)" >>"$0"' \
        "$WORK/longcut.out" "$mark" 2>"$WORK/longcut.err" &
    run=$!
    for _ in $(seq 50); do grep -q started "$WORK/longcut.out" 2>/dev/null && break; sleep 0.1; done
    sleep 1
    cut=$(date +%s.%N)
    eval "$1" || why+="could not cut: $1; "
    for _ in $(seq 180); do grep -q '^status' "$WORK/longcut.out" 2>/dev/null && break; sleep 0.1; done
    # By the time the parent hears, node2 has ended the child itself (fencing; the link is still down).
    [ -z "$(pgrep -f "^sleep $mark$")" ] || why+="node2 still ran the child when its parent was told it was killed; "
    eval "$2"
    wait "$run"
    told=$(awk '/^status/{print $3}' "$WORK/longcut.out")
    grep -q '^status 137 ' "$WORK/longcut.out" || why+="the parent saw: $(cat "$WORK/longcut.out"); "
    [ -n "$told" ] && python3 -c "import sys; sys.exit(0 if $told - $cut <= 12 else 1)" \
        || why+="the parent was told $(python3 -c "print(round(${told:-0} - $cut, 1))") s after the cut (peerTimeout 10 s + 2); "
    sleep 3
    [ -z "$(pgrep -f "^sleep $mark$")" ] || why+="an orphan runs after the link returned; "
    settle
    [ -z "$(pgrep -f 'rfork-(standin|nsinit)')" ] || why+="left: $(pgrep -fa 'rfork-(standin|nsinit)' | tr '\n' ' '); "
    [ -n "$told" ] && echo "      (parent told $(python3 -c "print(round($told - $cut, 2))") s after the cut)"
    [ "$(metric node1 rfork_links_given_up_total)" -ge 1 ] || why+="node1's metrics count no link given up; "
    [ "$(on node1 "$RFORK" run --node node2 -- bash -c '(exec hostname)' 2>&1)" = node2 ] || why+="no fork to node2 after the cut; "
}
why=""
long_cut "ip -n rfork-hub link set rfk2 down" "ip -n rfork-hub link set rfk2 up"
result "failure/node2 cut off for longer than peerTimeout: parent sees SIGKILL within 12 s, node2 ends the child, no orphan" \
    "$(verdict)" "$why"

# --- packets lost one way only (a filter drops what one node receives from the other): TCP then
# delivers nothing new either way (its acknowledgements are lost), so both daemons stop hearing each
# other at the cut. A 5 s cut of the way a 48 MiB stream takes only delays it; a longer one, either way,
# ends the child on node2 before its parent on node1 hears SIGKILL, within peerTimeout + 2 s, as a cut
# of both ways does ---
one_way() { # on|off NODE FROM: drops (or lets through again) what NODE receives from node FROM
    if [ "$1" = on ]; then
        ip netns exec "rfork-$2" nft add table inet rforkcut &&
            ip netns exec "rfork-$2" nft "add chain inet rforkcut in { type filter hook input priority 0; }" &&
            ip netns exec "rfork-$2" nft add rule inet rforkcut in ip saddr "10.250.0.${3#node}" drop
    else
        ip netns exec "rfork-$2" nft delete table inet rforkcut
    fi
}
command -v nft >/dev/null || { echo "missing 'nft' (the one-way cuts need it): run 'make setup'" >&2; exit 2; }
why=""
settle
resumed_before=$(resumed)
dead() { cat /run/rfork-cluster/node*.log | grep 'declared dead\|given up'; }
dead_before=$(dead | wc -l)
on node1 bash -c '"$0" run --node node2 -- bash -c "(exec python3 $1 $2); echo status \$? >&2" | sha256sum >"$3"' \
    "$RFORK" "$WORK/writer.py" "$WORK/blob" "$WORK/oneway.sum" 2>"$WORK/oneway.err" &
run=$!
sleep 1.2
one_way on node1 node2 || why+="could not drop node2's packets at node1; "
sleep 5
one_way off node1
wait "$run"
got=$(cut -d' ' -f1 <"$WORK/oneway.sum")
[ "$got" = "$want" ] || why+="the stream arrived changed (sum $got); "
grep -q '^status 0$' "$WORK/oneway.err" || why+="the writer ended: $(tr '\n' ' ' <"$WORK/oneway.err"); "
[ "$(dead | wc -l)" = "$dead_before" ] || why+="a node was declared dead: $(dead | tail -n +$((dead_before + 1)) | head -2 | tr '\n' ' '); "
echo "      (the links resumed $(($(resumed) - resumed_before)) times)"
result "links/a 5 s one-way cut (node2's packets to node1 dropped) during a 48 MiB stream from node2 only delays it" \
    "$(verdict)" "$why"

for way in "node1 node2" "node2 node1"; do
    set -- $way # drop at $1 what $2 sends
    why=""
    long_cut "one_way on $1 $2" "one_way off $1"
    result "failure/a one-way cut ($1 drops what $2 sends) longer than peerTimeout: node2 ends the child before its parent sees SIGKILL, within 12 s" \
        "$(verdict)" "$why"
done
# --- automatic balancing: two nodes of one CPU each; four CPU-bound workers started on node1 ---
"$RFORK" cluster down >/dev/null 2>&1
if ! "$RFORK" cluster up --nodes 2 --cpus-per-node 1 --share "$ROOT" >"$WORK/up2.log" 2>&1; then
    cat "$WORK/up2.log"; echo "$PASS passed, $((FAIL + 1)) failed"; exit 1
fi
cc -O1 -Wall -o "$WORK/spin" "$ROOT/tests/integration/programs/spin.c"
# About 5 s of CPU each (calibrated on node1's CPU): 20 s for the four on one CPU. (With 4 s, the 3 s
# a process stays before it may move weigh more: ratios 0.62 to 0.70 were measured.)
rounds=$(( $(on node1 "$WORK/spin" calibrate) * 5 ))
workers() { # label, extra rfork run options...: runs the four workers on node1, prints elapsed seconds
    local label=$1; shift
    local t0; t0=$(date +%s.%N)
    on node1 "$RFORK" run "$@" -- bash -c 'for i in 1 2 3 4; do "$0" "$1" "w$i" & done; wait' "$WORK/spin" "$rounds" \
        >"$WORK/$label.out" 2>"$WORK/$label.err"
    python3 -c "print(round($(date +%s.%N) - $t0, 2))"
}
why=""
pinned=$(workers pinned --policy local --pin)
# While the balanced run goes, rfork top on node2 shows what came from node1 (a view every 0.5 s).
( for _ in $(seq 24); do sleep 0.5; on node2 "$RFORK" top --json; echo; done >"$WORK/top.json" 2>&1 ) &
topper=$!
balanced=$(workers balanced --policy local)
wait "$topper"
ratio=$(python3 -c "print(round($balanced / $pinned, 2))")
[ "$(grep -c ' end ' "$WORK/pinned.out")" = 4 ] || why+="pinned run: $(tr '\n' ' ' <"$WORK/pinned.out" "$WORK/pinned.err"); "
[ "$(grep -c ' end ' "$WORK/balanced.out")" = 4 ] || why+="balanced run: $(tr '\n' ' ' <"$WORK/balanced.out" "$WORK/balanced.err"); "
grep -q 'end node2' "$WORK/pinned.out" && why+="a pinned worker moved; "
moved=$(grep -c 'end node2' "$WORK/balanced.out")
[ "$moved" -ge 1 ] && [ "$moved" -le 2 ] || why+="$moved workers ended on node2 (want 1 or 2: $(tr '\n' ' ' <"$WORK/balanced.out")); "
python3 -c "import sys; sys.exit(0 if $balanced <= 0.75 * $pinned else 1)" || why+="balanced $balanced s vs pinned $pinned s (ratio $ratio > 0.75); "
python3 - "$WORK/top.json" <<'EOF' || why+="rfork top on node2: $(head -c 300 "$WORK/top.json"); "
import json, sys
views = [json.loads(line) for line in open(sys.argv[1]) if line.startswith("{")]
rows = [p for top in views for p in top["processes"] if p.get("home") == "node1"]
assert rows and all(p["moves"] == 1 and not p["pinned"] for p in rows), rows
assert any(p["cpu"] > 0.5 for p in rows), rows
EOF
grep -h 'balancing: moving' /run/rfork-cluster/node*.log >"$WORK/moves.log"
[ "$(metric node1 rfork_balancer_moves_total)" = "$moved" ] || why+="node1's metrics count $(metric node1 rfork_balancer_moves_total) balancing moves; "
[ "$(metric node1 rfork_migration_freeze_seconds_count)" -ge "$moved" ] || why+="node1's freeze histogram counts $(metric node1 rfork_migration_freeze_seconds_count); "
echo "      (four workers of ~5 s CPU on node1: pinned $pinned s, balanced $balanced s, ratio $ratio; $moved moved)"
result "balance/four CPU-bound workers on one of two 1-CPU nodes: spread by migration, done in <= 0.75x the pinned time" \
    "$(verdict)" "$why"

# --- a parallel build whose jobs all start on node1 ends up spread ---
why=""
mkdir -p "$WORK/build"
{
    printf 'all:'; for j in 1 2 3 4 5 6; do printf ' j%s' "$j"; done; printf '\n'
    for j in 1 2 3 4 5 6; do printf 'j%s:\n\t@%s %s j%s >%s/j%s.out\n' "$j" "$WORK/spin" "$((rounds / 2))" "$j" "$WORK/build" "$j"; done
} >"$WORK/build/Makefile"
on node1 "$RFORK" run --policy local -- make -s -j6 -C "$WORK/build" >"$WORK/make.out" 2>&1 || why+="make failed: $(tail -3 "$WORK/make.out"); "
cat "$WORK"/build/j*.out >"$WORK/jobs.out" 2>/dev/null
[ "$(grep -c ' end ' "$WORK/jobs.out")" = 6 ] || why+="jobs: $(tr '\n' ' ' <"$WORK/jobs.out"); "
grep -q 'start node1 end node2' "$WORK/jobs.out" || why+="no job moved to node2: $(tr '\n' ' ' <"$WORK/jobs.out"); "
grep -q 'start node2' "$WORK/jobs.out" && why+="a job started on node2 (--policy local); "
settle
[ -z "$(pgrep -f 'rfork-(standin|nsinit)')" ] || why+="left: $(pgrep -fa 'rfork-(standin|nsinit)' | tr '\n' ' '); "
result "balance/a parallel build (make -j6) started on node1 ends up spread over both nodes ($(grep -c 'end node2' "$WORK/jobs.out") of 6 jobs ended on node2)" "$(verdict)" "$why"

# --- membership from a real etcd: the daemons' configurations list no peers; each registers under a
# lease and finds the others there; a daemon that stops answering leaves when its lease ends, and comes
# back when it runs again ---
"$RFORK" cluster down >/dev/null 2>&1
if ! "$RFORK" cluster up --nodes 3 --etcd --share "$ROOT" >"$WORK/up3.log" 2>&1; then
    cat "$WORK/up3.log"; echo "$PASS passed, $((FAIL + 1)) failed"; exit 1
fi
why=""
peers_up() { # NODE: the names of the peers NODE's rforkd has up, sorted
    on "$1" "$RFORK" nodes --json | python3 -c 'import json,sys; print(" ".join(sorted(r["name"] for r in json.load(sys.stdin) if r["state"] == "up")))'
}
python3 -c "import json,sys; sys.exit(0 if json.load(open('/run/rfork-cluster/node1.json'))['peers'] == [] else 1)" \
    || why+="node1's configuration lists peers; "
for n in node1 node2 node3; do
    [ "$(peers_up "$n" | wc -w)" = 2 ] || why+="$n sees up: $(peers_up "$n"); "
done
[ "$(on node1 "$RFORK" run --node node3 -- bash -c '(exec hostname)' 2>&1)" = node3 ] || why+="no fork to node3; "
# node3's rforkd stops answering (SIGSTOP): its lease (peerTimeout, 10 s) ends and the others drop it.
kill -STOP "$(daemon_pid node3)"
t0=$(date +%s.%N)
gone=""
for _ in $(seq 160); do
    if on node1 "$RFORK" nodes --json | grep -q '"node3"'; then sleep 0.1; else gone=$(python3 -c "print(round($(date +%s.%N) - $t0, 1))"); break; fi
done
[ -n "$gone" ] || why+="node1 still knows node3 16 s after its rforkd stopped; "
grep -q 'node3 left etcd' /run/rfork-cluster/node1.log || why+="node1 did not say node3 left; "
kill -CONT "$(daemon_pid node3)"
back=""
for _ in $(seq 150); do
    [ "$(peers_up node1 | wc -w)" = 2 ] && [ "$(peers_up node3 | wc -w)" = 2 ] && { back=yes; break; }
    sleep 0.1
done
[ -n "$back" ] || why+="node3 did not come back: node1 sees $(peers_up node1), node3 sees $(peers_up node3); "
[ "$(on node2 "$RFORK" run --node node3 -- bash -c '(exec hostname)' 2>&1)" = node3 ] || why+="no fork to node3 once it is back; "
echo "      (node3 left node1's list ${gone:-?} s after its rforkd stopped: its lease ended)"
# node3's record in etcd names another port (same lease): node1 follows it, finds nothing listening
# there and gives node3 up; named back, node3 is linked again.
set_node3_port() { # PORT: rewrites node3's record in etcd, keeping its lease
    on node1 python3 -c 'import base64, json, sys, urllib.request
url, port = sys.argv[1], int(sys.argv[2])
def post(path, body):
    request = urllib.request.Request(url + path, json.dumps(body).encode(), {"Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(request, timeout=5))
key = base64.b64encode(b"/rfork/nodes/node3").decode()
kv = post("/v3/kv/range", {"key": key})["kvs"][0]
record = json.loads(base64.b64decode(kv["value"]))
record["port"] = port
post("/v3/kv/put", {"key": key, "value": base64.b64encode(json.dumps(record).encode()).decode(), "lease": kv["lease"]})' \
        "$(python3 -c "import json; print(json.load(open('/run/rfork-cluster/cluster.json'))['etcdURL'])")" "$1"
}
set_node3_port 7999 || why+="could not rewrite node3's record; "
moved=""
for _ in $(seq 50); do
    peers_up node1 | grep -qw node3 || { moved=yes; break; }
    sleep 0.1
done
[ -n "$moved" ] || why+="node1 still has node3 up 5 s after its record named port 7999; "
grep -q 'membership: node3 moved to .*:7999' /run/rfork-cluster/node1.log || why+="node1 did not say node3 moved; "
set_node3_port 7420 || why+="could not rewrite node3's record back; "
back=""
for _ in $(seq 50); do
    peers_up node1 | grep -qw node3 && { back=yes; break; }
    sleep 0.1
done
[ -n "$back" ] || why+="node1 did not link to node3 again at its own port; "
[ "$(on node1 "$RFORK" run --node node3 -- bash -c '(exec hostname)' 2>&1)" = node3 ] || why+="no fork to node3 after it moved back; "
result "membership/etcd: nodes find each other under leases; a stopped daemon leaves when its lease ends and comes back; a new address is followed" \
    "$(verdict)" "$why"

# --- links on demand: each node tells one peer its load each second (fanout 1) and closes a link unused for
# 2 s, in agreement with the peer; a link opens again when something is sent on it, and a session keeps it ---
"$RFORK" cluster down >/dev/null 2>&1
if ! "$RFORK" cluster up --nodes 3 --link-fanout 1 --link-idle 2 --share "$ROOT" >"$WORK/up4.log" 2>&1; then
    cat "$WORK/up4.log"; echo "$PASS passed, $((FAIL + 1)) failed"; exit 1
fi
why=""
node_states() { # NODE: "peer:state:load-known ..." as NODE's rforkd sees its peers
    on "$1" "$RFORK" nodes --json | python3 -c 'import json,sys; print(" ".join("%s:%s:%s" % (r["name"], r["state"], "yes" if r.get("load") else "no") for r in json.load(sys.stdin) if r["state"] != "self"))'
}
sleep 3
idle_seen=0; unknown=""; samples=0
for k in $(seq 24); do
    st=$(node_states node1)
    samples=$k
    echo "$st" | grep -q ':idle:' && idle_seen=$((idle_seen + 1))
    echo "$st" | grep -q ':no' && unknown+="[$st] "
    [ "$k" -ge 8 ] && [ "$idle_seen" -gt 0 ] && break
    sleep 0.5
done
[ "$idle_seen" -gt 0 ] || why+="node1 never had an idle link (fanout 1, 2 peers); "
[ -z "$unknown" ] || why+="node1 lost a peer's load: $unknown; "
forks=""
for n in node2 node3 node2 node3; do forks+="$(on node1 "$RFORK" run --node "$n" -- bash -c '(exec hostname)' 2>&1) "; sleep 0.7; done
[ "$forks" = "node2 node3 node2 node3 " ] || why+="forks over links opened on demand ran on: $forks; "
# The closes are counted from the moment the child has said it runs (the link may close for want of
# use before the fork reaches node3, if starting 'rfork run' takes long), to its end.
on node1 "$RFORK" run --node node3 -- bash -c '(echo started; sleep 4; hostname; exit 3)' >"$WORK/session.out" 2>&1 &
session=$!
for _ in $(seq 100); do grep -q started "$WORK/session.out" && break; sleep 0.1; done
before=$(grep -c 'link to node3 closed' /run/rfork-cluster/node1.log)
wait "$session"; rc=$?
after=$(grep -c 'link to node3 closed' /run/rfork-cluster/node1.log)
out=$(tr '\n' ' ' <"$WORK/session.out")
[ "$rc" = 3 ] && [ "$out" = "started node3 " ] || why+="a 4 s child on node3 said '$out', exit $rc; "
[ "$before" = "$after" ] || why+="the link to node3 closed while a child ran there; "
closed=$(metric node1 rfork_links_closed_idle_total)
[ "${closed:-0}" -ge 1 ] || why+="node1 closed no idle link; "
for n in node1 node2 node3; do
    [ "$(metric "$n" rfork_links_given_up_total)" = 0 ] || why+="$n gave up a link: $(grep 'given up' /run/rfork-cluster/$n.log | head -1); "
done
echo "      (node1 closed $closed idle links; an idle link was seen in $idle_seen of $samples samples)"
result "links/made on demand: one peer told each second, unused links closed by agreement and opened again by forks; a session keeps its link" \
    "$(verdict)" "$why"

"$RFORK" cluster down >/dev/null 2>&1

echo
[ "$FAIL" = 0 ] || printf 'failed: %s\n' "${FAILED[@]}"
echo "$PASS passed, $FAIL failed"
[ "$FAIL" = 0 ]
