#!/usr/bin/env bash
# rfork's integration suite: a real 3-node cluster on this machine (network, mount and UTS namespaces),
# real CRIU, real TCP with mutual TLS. Needs root; nothing here skips.
# Prints one line per test and closes with "N passed, N failed".
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${RFORK_PREFIX:-$ROOT/build}/bin
T=$ROOT/build/tests
RFORK=$BIN/rfork
# On the shared file system: each node has its own /tmp, /dev/shm and /run.
mkdir -p "$ROOT/build"
WORK=$(mktemp -d "$ROOT/build/it.XXXXXX")
P=$ROOT/tests/integration/programs
PASS=0
FAIL=0
FAILED=()

if [ "$(id -u)" != 0 ]; then
    echo "integration tests need root (network and mount namespaces, CRIU): run 'sudo make test'" >&2
    exit 2
fi
for need in criu ip nsenter openssl; do
    command -v "$need" >/dev/null || { echo "missing '$need': run 'make setup'" >&2; exit 2; }
done

uffd_restore=""  # set while a test has changed /dev/userfaultfd and vm.unprivileged_userfaultfd
teardown() {
    [ -n "$uffd_restore" ] && eval "$uffd_restore"
    "$RFORK" cluster down >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap teardown EXIT

# shellcheck source=tests/integration/lib.sh
. "$ROOT/tests/integration/lib.sh"
daemon_pid() { python3 -c "import json;print([x['daemonPID'] for x in json.load(open('/run/rfork-cluster/cluster.json'))['nodes'] if x['name']=='$1'][0])"; }

# Leftovers after a test: stand-ins, namespace inits, images. Prints what it finds.
leftovers() {
    local found=""
    for p in $(pgrep -f 'rfork-(standin|nsinit)|criu (lazy-pages|dump)' || true); do found+=" process $p ($(tr '\0' ' ' </proc/$p/cmdline 2>/dev/null))"; done
    for n in node1 node2 node3; do
        kill -0 "$(daemon_pid "$n")" 2>/dev/null || continue
        local imgs
        imgs=$(on "$n" ls /run/rfork/images 2>/dev/null)
        [ -n "$imgs" ] && found+=" images on $n: $imgs"
    done
    echo "$found"
}

echo "starting a 3-node cluster"
cluster_up 3

# --- conformance: each program under plain fork and under rfork run must print the same ---
conformance() { # name [stdin-file]
    conformance_pair "$1" "${2:-/dev/null}"
    local left; left=$(leftovers)
    [ -z "$left" ] || why+="left behind:$left; "
    result "conformance/$1" "$([ -z "$why" ] && echo 0 || echo 1)" "$why"
}

printf 'hello remote child\nsecond line\n' >"$WORK/stdin.txt"
for prog in exit_status kill_by_signal signals stop_cont pipes unclosed_ends sigchld fork_exec many; do conformance "$prog"; done
conformance stdio "$WORK/stdin.txt"

# --- the nodes are separate machines where it matters: /tmp, /dev/shm and /run are each node's own ---
why=""
for d in /tmp /dev/shm /run; do
    on node1 sh -c "echo node1 >$d/rfork-it-mark" || why+="cannot write $d on node1; "
    on node2 test -e "$d/rfork-it-mark" && why+="node2 sees node1's $d; "
    [ -e "$d/rfork-it-mark" ] && why+="the host sees node1's $d; "
    [ "$(on node1 cat "$d/rfork-it-mark")" = node1 ] || why+="node1 lost its own $d file; "
    on node1 rm -f "$d/rfork-it-mark"
done
on node2 test -S /run/rfork/rforkd.sock || why+="node2 has no daemon socket in its own /run; "
# System V IPC too: a key made on node1 finds nothing on node2, as on another machine.
count_segments() { on "$1" ipcs -m | grep -c '^0x'; }
before1=$(count_segments node1); before2=$(count_segments node2); beforehost=$(ipcs -m | grep -c '^0x')
shmid=$(on node1 ipcmk -M 4096 | grep -o '[0-9]*$')
if [ -z "$shmid" ]; then why+="ipcmk failed on node1; "; else
    [ "$(count_segments node1)" = $((before1 + 1)) ] || why+="node1 does not see its own segment; "
    [ "$(count_segments node2)" = "$before2" ] || why+="node2 sees node1's System V segment; "
    [ "$(ipcs -m | grep -c '^0x')" = "$beforehost" ] || why+="the host sees node1's System V segment; "
    on node1 ipcrm -m "$shmid"
fi
result "cluster/each node has its own /tmp, /dev/shm, /run and System V IPC" "$([ -z "$why" ] && echo 0 || echo 1)" "$why"

# --- shared memory never diverges: shared anonymous memory follows a child coherently; what cannot be
# kept coherent yet keeps the child home, with its line ---
cc -O2 -o "$WORK/pingpong" "$P/shared_pingpong.c"
# Shared anonymous memory, memfds, unlinked /dev/shm files (what shm_open + shm_unlink, sem_open and
# multiprocessing make) and System V segments only the parent attaches and no key finds (librfork moves
# them into a memfd before the fork) follow the child.
for kind in anon memfd memfd2 posix sysv; do
    on node1 "$WORK/pingpong" "$kind" >"$WORK/pp.plain" 2>/dev/null
    on node1 "$RFORK" run --node node2 -- "$WORK/pingpong" "$kind" >"$WORK/pp.out" 2>"$WORK/pp.err"
    rc=$?
    settle
    why=""
    [ "$rc" = 0 ] || why+="exit $rc; "
    cmp -s "$WORK/pp.plain" "$WORK/pp.out" || why+="output differs: $(cat "$WORK/pp.out"); "
    grep -q 'child runs on node2' "$WORK/pp.err" || why+="the child did not run on node2; "
    grep -q '^rfork: ' "$WORK/pp.err" && why+="unexpected: $(tr '\n' ' ' <"$WORK/pp.err"); "
    result "shared memory/$kind: a child on node2 hands a counter back and forth with its parent 1000 times" \
        "$([ -z "$why" ] && echo 0 || echo 1)" "$why"
done

# Names are each node's own: away from its job's home, an open by name (shm_open, sem_open, a System V
# key) says so in one line per call; making a new object (O_EXCL, IPC_PRIVATE) does not, nor does any
# open at home.
cc -O2 -o "$WORK/named_open" "$P/named_open.c"
why=""
out=$(on node1 "$RFORK" run --node node2 -- "$WORK/named_open" open 2>"$WORK/named.err")
[ "$out" = done ] || why+="away, by name: '$out' $(tr '\n' ' ' <"$WORK/named.err"); "
grep -q '^child runs on node2$' "$WORK/named.err" || why+="the child did not run on node2: $(tr '\n' ' ' <"$WORK/named.err"); "
for call in sem_open shm_open shmget; do
    [ "$(grep -c "^rfork: $call of .* on this node: this process runs away from its job's home node" "$WORK/named.err")" = 1 ] ||
        why+="no single line for $call away from home: $(tr '\n' ' ' <"$WORK/named.err"); "
done
out=$(on node1 "$RFORK" run --node node2 -- "$WORK/named_open" new 2>"$WORK/named.err")
[ "$out" = done ] || why+="away, new objects: '$out'; "
grep -q '^rfork: ' "$WORK/named.err" && why+="a line for new objects: $(tr '\n' ' ' <"$WORK/named.err"); "
out=$(on node1 "$RFORK" run --policy local -- "$WORK/named_open" open 2>"$WORK/named.err")
[ "$out" = done ] || why+="at home: '$out'; "
grep -q '^child runs on node1$' "$WORK/named.err" || why+="the child did not stay on node1: $(tr '\n' ' ' <"$WORK/named.err"); "
grep -q '^rfork: ' "$WORK/named.err" && why+="a line at home: $(tr '\n' ' ' <"$WORK/named.err"); "
settle
result "shared memory/names are each node's own: an open by name away from home says so, once per call; new objects and opens at home say nothing" \
    "$([ -z "$why" ] && echo 0 || echo 1)" "$why"

# Memory a remote child maps once it runs there (not brought from its home) is managed by the node
# running it, as a home manages its own: that child's own child goes on to another node (spread places
# it from there), and the two stay coherent.
for kind in anon sysv; do
    on node1 "$WORK/pingpong" "$kind" >"$WORK/pp.plain" 2>/dev/null
    on node1 "$RFORK" run --policy spread -- bash -c "\"$WORK/pingpong\" $kind; true" >"$WORK/pp.out" 2>"$WORK/pp.err"
    rc=$?
    settle
    why=""
    [ "$rc" = 0 ] || why+="exit $rc; "
    cmp -s "$WORK/pp.plain" "$WORK/pp.out" || why+="output differs: $(cat "$WORK/pp.out"); "
    pnode=$(sed -n 's/^parent runs on //p' "$WORK/pp.err")
    cnode=$(sed -n 's/^child runs on //p' "$WORK/pp.err")
    [ -n "$pnode" ] && [ "$pnode" != node1 ] || why+="the program did not run on another node: $(tr '\n' ' ' <"$WORK/pp.err"); "
    [ -n "$cnode" ] && [ "$cnode" != "$pnode" ] || why+="its child stayed with it: $(tr '\n' ' ' <"$WORK/pp.err"); "
    grep -q '^rfork: ' "$WORK/pp.err" && why+="unexpected: $(grep '^rfork: ' "$WORK/pp.err" | head -1); "
    result "shared memory/$kind mapped by a remote child ($pnode): its own child goes on to $cnode, coherent" \
        "$([ -z "$why" ] && echo 0 || echo 1)" "$why"
done

# Another user (uid 65534) with the kernel's default vm.unprivileged_userfaultfd=0 (set for this test and
# put back): without access to /dev/userfaultfd the child stays home, its line saying what to grant; with
# the device's group made the user's, librfork takes its userfaultfd from there and the child moves.
uffd_restore="chown $(stat -c '%u:%g' /dev/userfaultfd) /dev/userfaultfd; chmod $(stat -c '%a' /dev/userfaultfd) /dev/userfaultfd"
uffd_restore+="; echo $(cat /proc/sys/vm/unprivileged_userfaultfd) >/proc/sys/vm/unprivileged_userfaultfd"
echo 0 >/proc/sys/vm/unprivileged_userfaultfd
chmod 755 "$WORK"
for access in none group; do
    [ "$access" = group ] && chgrp 65534 /dev/userfaultfd && chmod 660 /dev/userfaultfd
    on node1 setpriv --reuid=65534 --regid=65534 --clear-groups "$RFORK" run --node node2 -- "$WORK/pingpong" anon \
        >"$WORK/pp.out" 2>"$WORK/pp.err"
    rc=$?
    settle
    why=""
    [ "$rc" = 0 ] || why+="exit $rc; "
    on node1 "$WORK/pingpong" anon 2>/dev/null | cmp -s - "$WORK/pp.out" || why+="output differs: $(cat "$WORK/pp.out"); "
    if [ "$access" = none ]; then
        grep -q 'child runs on node1' "$WORK/pp.err" || why+="the child did not stay on node1: $(tr '\n' ' ' <"$WORK/pp.err"); "
        grep -q '^rfork: .*read and write access to /dev/userfaultfd' "$WORK/pp.err" || why+="no line: $(tr '\n' ' ' <"$WORK/pp.err"); "
    else
        grep -q 'child runs on node2' "$WORK/pp.err" || why+="the child did not run on node2: $(tr '\n' ' ' <"$WORK/pp.err"); "
        grep -q '^rfork: ' "$WORK/pp.err" && why+="unexpected: $(tr '\n' ' ' <"$WORK/pp.err"); "
    fi
    result "shared memory/another user, /dev/userfaultfd access $access: the child $([ "$access" = none ] && echo "stays home with the line" || echo "moves, coherent")" \
        "$([ -z "$why" ] && echo 0 || echo 1)" "$why"
done
eval "$uffd_restore"
uffd_restore=""

# A System V segment holding a process-shared mutex and counters, used by 3 children on other nodes
# (each attaches it again there, and so does the parent once they moved): made with IPC_PRIVATE (removed
# at the end, or before the forks), it follows them, coherent; made with a key another process could
# shmget, it keeps them home, each with its line. No segment is left.
cc -O2 -o "$WORK/sysv_shm" "$P/sysv_shm.c" -lpthread
segments() { on node1 ipcs -m | grep -c '^0x'; }
segments_before=$(segments)
for mode in private removed key; do
    why=""
    plain=$(on node1 "$WORK/sysv_shm" "$mode" 2>/dev/null)
    out=$(on node1 "$RFORK" run --policy spread -- "$WORK/sysv_shm" "$mode" 2>"$WORK/sysv.err"); rc=$?
    settle
    [ "$rc" = 0 ] || why+="exit $rc; "
    [ "$out" = "$plain" ] || why+="output '$(echo "$out" | tr '\n' '|')' where plain gave '$(echo "$plain" | tr '\n' '|')'; "
    [[ "$plain" == *"counter 60000 atomic 60000"* ]] || why+="plain run: '$(echo "$plain" | tr '\n' '|')'; "
    away=$(grep -c -e 'child runs on node2' -e 'child runs on node3' "$WORK/sysv.err")
    lines=$(grep -c '^rfork: ' "$WORK/sysv.err")
    if [ "$mode" = key ]; then
        [ "$away" = 0 ] || why+="$away children left node1; "
        [ "$(grep -c '^rfork: the child shares memory with processes that stay here (System V shared memory segment (key 0x' "$WORK/sysv.err")" = 3 ] \
            || why+="expected 3 lines naming the segment: $(tr '\n' ' ' <"$WORK/sysv.err"); "
    else
        [ "$away" -ge 2 ] || why+="only $away children ran on node2 or node3; "
        [ "$lines" = 0 ] || why+="unexpected: $(tr '\n' ' ' <"$WORK/sysv.err"); "
    fi
    [ "$(segments)" = "$segments_before" ] || why+="$(( $(segments) - segments_before )) segments left on node1; "
    case $mode in
        private) what="made with IPC_PRIVATE: 3 children on other nodes share its mutex and counters, attached again there and at home" ;;
        removed) what="removed before the forks: 3 children on other nodes share its mutex and counters, attached again there and at home" ;;
        key) what="with a key another process could use: the children stay home, each with its line" ;;
    esac
    result "shared memory/System V segment $what" "$([ -z "$why" ] && echo 0 || echo 1)" "$why"
done

# A descriptor of memory shared across nodes would read one node's copy: once the memory is shared, the
# parent's and the remote child's descriptors of it are O_PATH (read fails with EBADF, fstat works), and
# the mapping carries what the child wrote.
cc -O2 -o "$WORK/shm_descriptors" "$P/shm_descriptors.c"
on node1 "$RFORK" run --node node2 -- "$WORK/shm_descriptors" >"$WORK/desc.out" 2>"$WORK/desc.err"
rc=$?
settle
why=""
[ "$rc" = 0 ] || why+="exit $rc; "
[ "$(grep -c 'child runs on node2' "$WORK/desc.err")" = 2 ] || why+="the children did not both run on node2: $(tr '\n' ' ' <"$WORK/desc.err"); "
printf 'child: read Bad file descriptor, fstat ok size 8192, mapped 1\nsecond child: fstat ok, mapped 42\nparent: read Bad file descriptor, mapped 43\n' |
    cmp -s - "$WORK/desc.out" || why+="got: $(tr '\n' ' ' <"$WORK/desc.out"); "
result "shared memory/descriptors of memory shared across nodes fail read(2) on both nodes instead of reading a stale copy; a child forked holding one moves too" \
    "$([ -z "$why" ] && echo 0 || echo 1)" "$why"

# Processes on three nodes read, write and add atomically in random order; the invariants of sequential
# consistency hold in each (no lost add, no read going back in time, message passing), and the results
# equal the plain run's.
cc -O2 -o "$WORK/shm_stress" "$P/shm_stress.c"
for kind in anon memfd posix; do
    on node1 "$WORK/shm_stress" 6 3000 "$kind" >"$WORK/stress.plain" 2>/dev/null
    on node1 "$RFORK" run -- "$WORK/shm_stress" 6 3000 "$kind" >"$WORK/stress.out" 2>"$WORK/stress.err"
    rc=$?
    settle
    why=""
    [ "$rc" = 0 ] || why+="exit $rc: $(grep -v 'runs on' "$WORK/stress.err" | head -3 | tr '\n' ' '); "
    cmp -s "$WORK/stress.plain" "$WORK/stress.out" || why+="output differs: $(diff "$WORK/stress.plain" "$WORK/stress.out" | head -3 | tr '\n' ' '); "
    [ "$(grep -c 'runs on node2' "$WORK/stress.err")" -ge 1 ] && [ "$(grep -c 'runs on node3' "$WORK/stress.err")" -ge 1 ] ||
        why+="processes did not spread to node2 and node3: $(grep 'runs on' "$WORK/stress.err" | tr '\n' ' '); "
    grep -q '^rfork: ' "$WORK/stress.err" && why+="unexpected: $(grep '^rfork: ' "$WORK/stress.err" | head -2 | tr '\n' ' '); "
    result "shared memory/$kind: 6 processes on 3 nodes, 18000 random reads, writes and atomic adds stay sequentially consistent ($(head -1 "$WORK/stress.out"))" \
        "$([ -z "$why" ] && echo 0 || echo 1)" "$why"
done
# Process-shared semaphores, a mutex and a condition variable in shared anonymous memory, then named
# semaphores (sem_open, unlinked at once), then semaphores between two processes that block every
# signal, with waiters and wakers on different nodes: futex wakes cross nodes (rforkd interrupts sleepers
# whose page changed, and wakes those it cannot interrupt through its own mapping of the memory).
cc -O2 -pthread -o "$WORK/shm_sync" "$P/shm_sync.c"
on node1 "$WORK/shm_sync" >"$WORK/sync.plain" 2>/dev/null
t0=$(date +%s.%N)
on node1 "$RFORK" run -- "$WORK/shm_sync" >"$WORK/sync.out" 2>"$WORK/sync.err"
rc=$?
t1=$(date +%s.%N)
settle
why=""
[ "$rc" = 0 ] || why+="exit $rc: $(grep -v 'runs on' "$WORK/sync.err" | head -3 | tr '\n' ' '); "
cmp -s "$WORK/sync.plain" "$WORK/sync.out" || why+="output differs: $(diff "$WORK/sync.plain" "$WORK/sync.out" | head -4 | tr '\n' ' '); "
[ "$(grep -c 'runs on node[23]' "$WORK/sync.err")" -ge 3 ] || why+="too few processes ran elsewhere: $(grep 'runs on' "$WORK/sync.err" | tr '\n' ' '); "
grep -q '^named semaphore child runs on node[23]$' "$WORK/sync.err" || why+="the named semaphores' child did not run elsewhere: $(grep 'named' "$WORK/sync.err"); "
grep -q '^blocked-signals child runs on node[23]$' "$WORK/sync.err" || why+="the child that blocks every signal did not run elsewhere: $(grep 'blocked' "$WORK/sync.err"); "
grep -q '^rfork: ' "$WORK/sync.err" && why+="unexpected: $(grep '^rfork: ' "$WORK/sync.err" | head -2 | tr '\n' ' '); "
result "shared memory/process-shared semaphores (unnamed and named, and with every signal blocked), a mutex and a condition variable work across nodes ($(grep -c 'runs on node[23]' "$WORK/sync.err") of 7 children elsewhere, $(awk "BEGIN {printf \"%.1f\", $t1 - $t0}") s)" \
    "$([ -z "$why" ] && echo 0 || echo 1)" "$why"

# A grandparent that forked no remote child itself (its child is kept here with rfork_local) still reads
# what its remote grandchild wrote: every local process that maps the memory is watched.
cc -O2 -o "$WORK/shm_generations" "$P/shm_generations.c" -ldl
on node1 "$RFORK" run -- "$WORK/shm_generations" >"$WORK/gen.out" 2>"$WORK/gen.err"
rc=$?
settle
why=""
[ "$rc" = 0 ] || why+="exit $rc: $(tr '\n' ' ' <"$WORK/gen.out"); "
grep -q 'grandchild runs on node[23]' "$WORK/gen.err" || why+="the grandchild did not run elsewhere: $(tr '\n' ' ' <"$WORK/gen.err"); "
[ "$(grep -c '^page [0-7]: 10[0-7]$' "$WORK/gen.out")" = 8 ] || why+="read: $(tr '\n' ' ' <"$WORK/gen.out"); "
result "shared memory/anon: a grandparent kept home reads what its remote grandchild wrote" \
    "$([ -z "$why" ] && echo 0 || echo 1)" "$why"

# Nothing is left behind: once the processes are gone, no daemon holds a userfaultfd or a memory object.
sleep 2.5
left=""
for pid in $("$RFORK" cluster status 2>/dev/null | awk '$3 == "up" {print $4}'); do
    n=$(ls -l "/proc/$pid/fd" 2>/dev/null | grep -c -e 'userfaultfd' -e 'memfd:' -e '/dev/zero' -e '/dev/shm/')
    [ "$n" = 0 ] || left+="rforkd $pid holds $n; "
done
result "shared memory/nothing left behind: no userfaultfd or shared memory object held once the processes ended" \
    "$([ -z "$left" ] && echo 0 || echo 1)" "$left"

for kind in sysvkey named file; do
    on node1 "$WORK/pingpong" "$kind" "$WORK/pingpong.$kind.plain.map" >"$WORK/pp.plain" 2>/dev/null
    on node1 "$RFORK" run --node node2 -- "$WORK/pingpong" "$kind" "$WORK/pingpong.$kind.map" >"$WORK/pp.out" 2>"$WORK/pp.err"
    rc=$?
    settle
    why=""
    [ "$rc" = 0 ] || why+="exit $rc; "
    cmp -s "$WORK/pp.plain" "$WORK/pp.out" || why+="output differs: $(cat "$WORK/pp.out"); "
    grep -q 'child runs on node1' "$WORK/pp.err" || why+="the child did not stay home; "
    [ "$(grep -c '^rfork: ' "$WORK/pp.err")" = 1 ] || why+="expected one rfork: line: $(tr '\n' ' ' <"$WORK/pp.err"); "
    grep -Eq '^rfork: the child shares memory with processes that stay here \((shared anonymous|System V|POSIX shared memory /dev/shm/rfork-pingpong|a writable shared mapping of /).* at 0x[0-9a-f]+-0x[0-9a-f]+\), which cannot follow it to another node yet; child [0-9]+ runs locally$' "$WORK/pp.err" \
        || why+="reason not given: $(tr '\n' ' ' <"$WORK/pp.err"); "
    result "shared memory/$kind: the child stays home and says why" "$([ -z "$why" ] && echo 0 || echo 1)" "$why"
done
# Read-only shared mappings of ordinary files (program text, locale archives) do not hold a child back.
cat >"$WORK/romap.c" <<'C'
#include <fcntl.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>
int main(int argc, char **argv) {
    int fd = open(argv[1], O_RDONLY);
    const char *m = mmap(NULL, 4096, PROT_READ, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) return 2;
    pid_t p = fork();
    if (p == 0) { char h[64]; gethostname(h, 64); fprintf(stderr, "child runs on %s\n", h); printf("child read %.5s\n", m); fflush(stdout); _exit(0); }
    int st; waitpid(p, &st, 0); return WEXITSTATUS(st);
}
C
cc -o "$WORK/romap" "$WORK/romap.c" && printf 'table' >"$WORK/romap.dat"
out=$(on node1 "$RFORK" run --node node2 -- "$WORK/romap" "$WORK/romap.dat" 2>&1)
settle
result "shared memory/a read-only shared file mapping still moves" \
    "$(echo "$out" | grep -q 'child runs on node2' && echo "$out" | grep -q 'child read table' && ! echo "$out" | grep -q 'rfork:' && echo 0 || echo 1)" \
    "got: $(echo "$out" | tr '\n' ' ')"
# posix_spawn takes the same path: a spawned child that inherits a shared mapping stays home too.
cat >"$WORK/spawnshm.c" <<'C'
#include <spawn.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/wait.h>
extern char **environ;
int main(void) {
    volatile int *m = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    *m = 7;
    pid_t p; char *argv[] = {"hostname", NULL};
    if (posix_spawn(&p, "/bin/hostname", NULL, NULL, argv, environ)) return 2;
    int st; waitpid(p, &st, 0); printf("spawned exit %d\n", WEXITSTATUS(st)); return 0;
}
C
cc -o "$WORK/spawnshm" "$WORK/spawnshm.c"
out=$(on node1 "$RFORK" run --node node2 -- "$WORK/spawnshm" 2>&1)
settle
# The spawned child holds the mapping until its exec: it moves with it (kept coherent), then execs there.
result "shared memory/posix_spawn from a process with shared anonymous memory: the spawned program runs on node2" \
    "$(echo "$out" | grep -q 'spawned exit 0' && echo "$out" | grep -qx 'node2' && ! echo "$out" | grep -q '^rfork:' && echo 0 || echo 1)" \
    "got: $(echo "$out" | tr '\n' ' ')"

# --- Python multiprocessing (fork start method): right every time, with the workers of every kind on
# other nodes (their locks, Value/Array arenas and queues are memory kept coherent; the Manager's socket is
# reached across nodes) ---
on node1 python3 "$P/multiprocessing_check.py" >"$WORK/mp.plain" 2>"$WORK/mp.plain.err"
mp_bad=0; mp_why=""; mp_lines=0
mp_kinds="plain_Process Pool Value/Array Queue ProcessPoolExecutor Manager"
declare -A mp_moved=()
for i in $(seq 20); do
    rm -f "$WORK/mp.where"
    MP_WHERE="$WORK/mp.where" timeout -s KILL 120 "$RFORK" cluster exec node1 -- "$RFORK" run --policy spread -- \
        python3 "$P/multiprocessing_check.py" >"$WORK/mp.out" 2>"$WORK/mp.err"
    rc=$?
    for k in $mp_kinds; do
        grep -q "^${k/_/ } elsewhere$" "$WORK/mp.where" 2>/dev/null && mp_moved[$k]=$((${mp_moved[$k]:-0} + 1))
    done
    grep -q '^rfork: ' "$WORK/mp.err" && mp_lines=$((mp_lines + 1))
    if [ "$rc" != 0 ] || ! cmp -s "$WORK/mp.plain" "$WORK/mp.out"; then
        mp_bad=$((mp_bad + 1))
        mp_why="run $i: exit $rc, $(diff "$WORK/mp.plain" "$WORK/mp.out" | head -4 | tr '\n' ' ') $(tail -2 "$WORK/mp.err" | tr '\n' ' ')"
    fi
done
settle
why=""; moved=""
[ -s "$WORK/mp.plain" ] && [ "$(wc -l <"$WORK/mp.plain")" = 7 ] || why+="the plain run failed: $(cat "$WORK/mp.plain" "$WORK/mp.plain.err" | tail -3 | tr '\n' ' '); "
[ "$mp_bad" = 0 ] || why+="$mp_bad of 20 runs wrong or hung, last: $mp_why; "
for k in $mp_kinds; do
    moved+="${k/_/ } ${mp_moved[$k]:-0}/20, "
    [ "${mp_moved[$k]:-0}" = 20 ] || why+="${k/_/ }: processes ran elsewhere in only ${mp_moved[$k]:-0} of 20 runs; "
done
[ "$mp_lines" = 0 ] || why+="$mp_lines runs printed an rfork: line: $(grep '^rfork: ' "$WORK/mp.err" | head -1); "
relayed=0
for n in node1 node2 node3; do
    c=$(on "$n" python3 -c "import urllib.request as u; print(sum(float(l.split()[1]) for l in u.urlopen('http://127.0.0.1:9420/metrics').read().decode().splitlines() if l.startswith('rfork_unix_streams_relayed_total')))" 2>/dev/null)
    c=${c:-0}; relayed=$((relayed + ${c%.*}))
done
[ "$relayed" -gt 0 ] || why+="no connection to the Manager was relayed across nodes; "
left=$(leftovers)
[ -z "$left" ] || why+="left behind:$left; "
result "python/multiprocessing right in 20 of 20 runs, workers elsewhere (${moved%, }; $relayed Manager connections across nodes)" "$([ -z "$why" ] && echo 0 || echo 1)" "$why"

# --- an AF_UNIX server on node1, bound after the fork, reached by its client on node2 through rforkd: 32 MiB
# to a slow reader arrive whole, and flow control holds the client back (it cannot finish sending long
# before the server has read: at most a window and the sockets' buffers are on the way); then a request
# the client half-closes (shutdown(SHUT_WR)) still gets its answer ---
on node1 "$RFORK" run --node node2 -- python3 "$P/unix_relay.py" 32 0.02 >"$WORK/relay.out" 2>"$WORK/relay.err"
rc=$?
settle
why=""
[ "$rc" = 0 ] || why+="exit $rc: $(tail -2 "$WORK/relay.err" | tr '\n' ' '); "
grep -q '^client runs on node2$' "$WORK/relay.err" || why+="the client did not run on node2: $(tr '\n' ' ' <"$WORK/relay.err"); "
grep -q '^server got 32 MiB, client agrees$' "$WORK/relay.out" || why+="got: $(tr '\n' ' ' <"$WORK/relay.out"); "
grep -q "^server's descriptor: refused (EOPNOTSUPP)$" "$WORK/relay.out" || why+="a descriptor from the server was not refused; "
grep -q '^rfork: descriptors cannot be passed through a connection to another node$' "$WORK/relay.err" || why+="no line for the refused descriptor; "
sent=$(sed -n 's/^client sent in \([0-9.]*\) s$/\1/p' "$WORK/relay.err"); read=$(sed -n 's/^server read in \([0-9.]*\) s$/\1/p' "$WORK/relay.err")
awk -v s="${sent:-0}" -v r="${read:-0}" 'BEGIN { exit !(r > 0 && s >= r / 2) }' ||
    why+="the client sent in ${sent:-?} s while the server read for ${read:-?} s: nothing held it back; "
result "unix sockets/a client on node2 reaches a server bound on node1 after the fork: 32 MiB to a slow reader, whole, the sender held back, then a half-closed request answered, the server refused to send a descriptor (sent in ${sent:-?} s, read in ${read:-?} s)" \
    "$([ -z "$why" ] && echo 0 || echo 1)" "$why"

# --- a remote child's clocks agree with its parent's ---
cc -o "$WORK/clocks" "$P/clocks.c"
on node1 "$RFORK" run --node node2 -- "$WORK/clocks" >"$WORK/clocks.out" 2>"$WORK/clocks.err"
settle
why=""
grep -q 'child runs on node2' "$WORK/clocks.err" || why+="the child did not run on node2: $(tr '\n' ' ' <"$WORK/clocks.err"); "
read -r mono boot < <(sed -n 's/^monotonic \(-\?[0-9]*\) us, boottime \(-\?[0-9]*\) us$/\1 \2/p' "$WORK/clocks.out")
[ -n "${mono:-}" ] && [ "${mono#-}" -lt 3000 ] && [ "${boot#-}" -lt 3000 ] || why+="clocks apart: $(cat "$WORK/clocks.out"); "
result "clocks/a remote child's CLOCK_MONOTONIC and CLOCK_BOOTTIME agree with its parent's ($(tr -d '\n' <"$WORK/clocks.out"))" \
    "$([ -z "$why" ] && echo 0 || echo 1)" "$why"

# --- nested forks: a remote child's forks are placed from its node, at every depth ---
# The tree (tests/integration/programs/forktree.sh) forks subshells in the background and in pipelines,
# waits for them and combines their exit statuses; plain and under rfork run it must print the same
# lines (in some order) and end with the same status, and its processes must have run on every node.
on node1 bash "$P/forktree.sh" 3 >"$WORK/forktree.plain.out" 2>&1
plain_rc=$?
sed 's/ on node[0-9]*$//; s/ on node[0-9]*:/:/' "$WORK/forktree.plain.out" | sort >"$WORK/forktree.plain"
on node1 "$RFORK" run --policy spread -- bash "$P/forktree.sh" 3 >"$WORK/forktree.out" 2>"$WORK/forktree.err"
rc=$?
settle
why=""
[ "$rc" = "$plain_rc" ] || why+="exit $rc under rfork, $plain_rc plain; "
sed 's/ on node[0-9]*$//; s/ on node[0-9]*:/:/' "$WORK/forktree.out" | sort | cmp -s - "$WORK/forktree.plain" ||
    why+="output differs: $(sed 's/ on node[0-9]*$//; s/ on node[0-9]*:/:/' "$WORK/forktree.out" | sort | diff - "$WORK/forktree.plain" | head -4 | tr '\n' ' '); "
for n in node1 node2 node3; do
    grep -q "^ *leaf r... on $n$" "$WORK/forktree.out" || why+="no great-grandchild ran on $n; "
done
grep -Eq "^ *node r.. on node[23]:" "$WORK/forktree.out" || why+="no grandchild ran away from node1; "
[ -s "$WORK/forktree.err" ] && why+="stderr: $(head -3 "$WORK/forktree.err" | tr '\n' ' '); "
result "nested/a fork tree of depth 3 spreads over all nodes, output and exit status as plain ($(grep -c ' on node2' "$WORK/forktree.out") lines from node2, $(grep -c ' on node3' "$WORK/forktree.out") from node3)" \
    "$([ -z "$why" ] && echo 0 || echo 1)" "$why"

# stdin and signals through two hops: a grandchild placed from node2 reads the job's input and is signalled
out=$(printf 'a\nb\n' | on node1 "$RFORK" run --policy spread -- bash -c '
    (read -r x; echo "child got $x"
     (read -r y; echo "grandchild got $y")
     (sleep 30) & s=$!; sleep 0.3; kill -TERM $s; wait $s; echo "sleeper status $?"
     exit 9); echo "child status $?"' 2>&1)
settle
expected=$'child got a\ngrandchild got b\nsleeper status 143\nchild status 9'
[ "$out" = "$expected" ] && why="" || why="got: $(echo "$out" | tr '\n' '|')"
result "nested/a grandchild reads the job's stdin, its signal and exit status pass through two nodes" \
    "$([ -z "$why" ] && echo 0 || echo 1)" "$why"

# --- nested forks of a child told to run on node2 stay there, quietly, even without RFORK_REMOTE ---
out=$(on node1 "$RFORK" run --node node2 -- bash -c 'env -u RFORK_REMOTE bash -c "(hostname); (hostname); /bin/true"; echo done' 2>&1)
settle
why=""
[ "$(echo "$out" | grep -c '^node2$')" = 2 ] || why+="the nested children did not run on node2; "
echo "$out" | grep -q '^done$' || why+="no end; "
echo "$out" | grep -q 'rfork:' && why+="a line was printed: $(echo "$out" | grep 'rfork:' | head -2 | tr '\n' ' '); "
result "nested/forks inside a child sent to node2 (rfork run --node node2) stay there without a line" "$([ -z "$why" ] && echo 0 || echo 1)" "$why"

# --- every subcommand answers --help; after -- it is the program's argument ---
why=""
for sub in "run" "migrate" "checkpoint" "restart" "nodes" "ps" "top" "keys" "bench" "query" "cluster" "cluster up" "cluster down" "cluster status" "cluster exec"; do
    # shellcheck disable=SC2086
    out=$("$RFORK" $sub --help 2>&1) || why+="'rfork $sub --help' failed: $(echo "$out" | head -1); "
    echo "$out" | grep -q '^USAGE:' || why+="'rfork $sub --help' printed no usage; "
done
out=$("$RFORK" run --policy local -- --help 2>&1); rc=$?
[ "$rc" != 0 ] && echo "$out" | grep -q -- "cannot run --help" || why+="'rfork run -- --help' did not try to run --help: $out; "
result "cli/--help for every subcommand" "$([ -z "$why" ] && echo 0 || echo 1)" "$why"

# --- migration: a running process moves to another node while it talks through pipes ---
cc -pthread -o "$WORK/talker" "$P/talker.c"
start_talker() { # PREFIX THREADS [parent|-] [MIB]: the talker under rfork run on node1 (with "parent", as the
    # child of a shell that prints its exit status and ends with it; with MIB, holding that much memory,
    # moved without post-copy), its stdin on fd 7; sets talkjob, tpid
    rm -f "$WORK/talk.in" "$1.out"; mkfifo "$WORK/talk.in"
    local job=("$WORK/talker" "$2" "${4:-0}") run=(--policy local)
    [ -n "${4:-}" ] && run+=(--post-copy never)
    [ "${3:-}" = parent ] && job=(bash -c '"$0" "$@"; s=$?; echo "child exited $s"; exit $s' "${job[@]}")
    ( on node1 "$RFORK" run "${run[@]}" -- "${job[@]}" < <(exec cat "$WORK/talk.in") 2>"$1.err" \
        | cat >"$1.out"; echo "${PIPESTATUS[0]}" >"$1.rc" ) &
    talkjob=$!
    exec 7>"$WORK/talk.in"
    for _ in $(seq 200); do grep -q '^tick 20 ' "$1.out" 2>/dev/null && break; sleep 0.05; done
    tpid=$(sed -n 's/^pid //p' "$1.out" | head -n 1)
}
finish_talker() { # [SIGNAL]: one more line, the signal if given, then "exit 7"; waits for it to end
    sleep 0.3
    echo after >&7
    [ -n "${1:-}" ] && [ -n "$tpid" ] && [ "$tpid" -gt 1 ] && kill "-$1" "$tpid"
    sleep 0.3
    echo "exit 7" >&7
    exec 7>&-
    wait "$talkjob"
    settle
}
migrate_talker() { # name, extra threads
    local mrc gap
    start_talker "$WORK/talk" "$2"
    echo hello >&7
    sleep 0.2
    on node1 "$RFORK" migrate "${tpid:-0}" node2 >"$WORK/mig.out" 2>"$WORK/mig.err"
    mrc=$?
    finish_talker USR1
    why=""
    [ "$mrc" = 0 ] || why+="migrate exit $mrc: $(tr '\n' ' ' <"$WORK/mig.err"); "
    grep -Eq "^process $tpid runs on node2; frozen [0-9.]+ ms" "$WORK/mig.out" || why+="migrate said: $(cat "$WORK/mig.out"); "
    [ "$(cat "$WORK/talk.rc")" = 7 ] || why+="exit status $(cat "$WORK/talk.rc") ($(tail -2 "$WORK/talk.err" | tr '\n' ' ')); "
    grep -q '^echo hello node1$' "$WORK/talk.out" || why+="no answer from node1 before the move; "
    grep -q '^echo after node2$' "$WORK/talk.out" || why+="no answer from node2 after the move; "
    grep -q '^signal USR1 node2$' "$WORK/talk.out" || why+="the signal did not reach it on node2; "
    # Every numbered line once, in order, per thread: nothing lost, repeated or reordered by the move.
    gap=$(awk '/^tick /{ if ($2 != n) { print "tick " n " expected, got " $2; exit } n++ }
               /^thread /{ if ($3 != t[$2] + 0) { print "thread " $2 ": " t[$2] + 0 " expected, got " $3; exit } t[$2]++; seen[$2] = 1 }
               END { if (length(seen) != '"$2"') print length(seen) " threads printed, expected '"$2"'" }' "$WORK/talk.out")
    [ -z "$gap" ] || why+="output lost, repeated or reordered: $gap; "
    # Per thread (a line formatted just before the move may reach the pipe after another thread's first
    # line from node2): each one's lines come from node1, then from node2 only.
    awk '$1 == "tick" || $1 == "thread" { k = $1 == "tick" ? "tick" : "thread " $2
            if ($NF == "node2") { moved[k] = 1; m = 1 } else if (moved[k]) bad = 1 }
         END { exit !m || bad }' "$WORK/talk.out" || why+="output did not move to node2 for good; "
    grep -q 'rfork:' "$WORK/talk.err" && why+="the process said: $(grep rfork: "$WORK/talk.err" | head -1); "
    left=$(leftovers)
    [ -z "$left" ] || why+="left behind:$left; "
    result "migrate/$1 ($(head -c 60 "$WORK/mig.out" | tr -d '\n'))" "$([ -z "$why" ] && echo 0 || echo 1)" "$why"
}
migrate_talker "a running process moves with its pipes, output, signals and exit status" 0
migrate_talker "a process with 3 more threads moves, every thread at rest during the move" 3

# --- moving again: a child moved home -> node2 -> node3 -> home while it talks to its parent ---
# Each move after the first is made by the node running it (the command asks the home node, which
# passes the request on); the process keeps its PID, pipes, signals and exit status all the way.
start_talker "$WORK/route" 2 parent
route=""; mrcs=""
for n in node2 node3 node1; do
    echo "hello $n" >&7
    sleep 0.2
    out=$(on node1 "$RFORK" migrate "${tpid:-0}" "$n" 2>&1); mrcs+="$?"
    route+="$out; "
    [ "$n" = node3 ] && ps3=$(on node1 "$RFORK" ps 2>&1) && ps3node2=$(on node2 "$RFORK" ps 2>&1)
    sleep 0.3
done
refused=$(on node1 "$RFORK" migrate "${tpid:-0}" node1 2>&1); rrc=$?
finish_talker USR1
why=""
[ "$mrcs" = 000 ] || why+="migrate exits $mrcs: $route"
for n in node2 node3 node1; do
    echo "$route" | grep -Eq "process $tpid runs on $n; frozen [0-9.]+ ms" || why+="no move to $n ($route); "
done
[ "$rrc" = 1 ] && echo "$refused" | grep -q "^rfork: process $tpid already runs on node1" ||
    why+="a move to where it runs said: [$refused] (exit $rrc, tpid $tpid); "
[ "$(cat "$WORK/route.rc")" = 7 ] || why+="exit status $(cat "$WORK/route.rc") ($(tail -2 "$WORK/route.err" | tr '\n' ' ')); "
grep -q '^child exited 7$' "$WORK/route.out" || why+="the parent did not see exit status 7; "
for answer in "hello node2 node1" "hello node3 node2" "hello node1 node3" "after node1"; do
    grep -q "^echo $answer$" "$WORK/route.out" || why+="no 'echo $answer'; "
done
grep -q '^signal USR1 node1$' "$WORK/route.out" || why+="the signal did not reach it back home; "
hops=$(awk '/^tick /{print $3}' "$WORK/route.out" | uniq | tr '\n' ' ')
[ "$hops" = "node1 node2 node3 node1 " ] || why+="it ran on: $hops; "
gap=$(awk '/^tick /{ if ($2 != n) { print "tick " n " expected, got " $2; exit } n++ }
           /^thread /{ if ($3 != t[$2] + 0) { print "thread " $2 ": " t[$2] + 0 " expected, got " $3; exit } t[$2]++ }' "$WORK/route.out")
[ -z "$gap" ] || why+="output lost, repeated or reordered: $gap; "
echo "$ps3" | grep -Eq "^$tpid +0 +home +node3 \(via node2\) +running" || why+="rfork ps on node1 said: $(echo "$ps3" | tr '\n' '|'); "
echo "$ps3node2" | grep -Eq "^$tpid +0 +hosted +node1 \(moved on to node3\) +passing" || why+="rfork ps on node2 said: $(echo "$ps3node2" | tr '\n' '|'); "
grep -q 'rfork:' "$WORK/route.err" && why+="the process said: $(grep rfork: "$WORK/route.err" | head -1); "
left=$(leftovers)
[ -z "$left" ] || why+="left behind:$left; "
result "migrate/a child with 2 more threads moved home -> node2 -> node3 -> home while it talks to its parent ($(echo "$route" | grep -o 'frozen [0-9.]* ms' | tr '\n' ' '))" \
    "$([ -z "$why" ] && echo 0 || echo 1)" "$why"

# --- on a terminal, a large move shows its phases as they come; the answer ends it. The second move,
# which node1 passes on to node2 (the node running it), shows node2's phases the same way ---
start_talker "$WORK/big" 0 - 256
on node1 script -qec "$RFORK migrate ${tpid:-0} node2" /dev/null >"$WORK/big.mig" 2>&1; brc=$?
on node1 script -qec "$RFORK migrate ${tpid:-0} node3" /dev/null >"$WORK/big3.mig" 2>&1; brc3=$?
finish_talker
why=""
[ "$brc" = 0 ] && [ "$brc3" = 0 ] || why+="exit $brc, then $brc3; "
lines=0
for n in node2 node3; do
    mig=$WORK/big.mig; [ "$n" = node3 ] && mig=$WORK/big3.mig
    tr '\r' '\n' <"$mig" | sed 's/\x1b\[K//g' >"$WORK/big.lines"
    for phase in "asking process $tpid to stop" "stopped; saving it" "saved in [0-9]+ ms; sending 2[0-9][0-9]\.[0-9] MiB to $n" "sent [0-9]+ of 2[0-9][0-9] MiB to $n" "restoring on $n"; do
        grep -Eq "^rfork: moving $tpid to $n: $phase" "$WORK/big.lines" || why+="no '$phase' in the move to $n; "
    done
    grep -Eq "^process $tpid runs on $n; frozen [0-9.]+ ms" "$WORK/big.lines" || why+="no answer from the move to $n: $(tail -2 "$WORK/big.lines" | tr '\n' ' '); "
    lines=$((lines + $(grep -c '^rfork: moving' "$WORK/big.lines")))
done
grep -q "^rfork: moving $tpid to node3: it runs on node2: asking node2 to move it on" "$WORK/big.lines" || why+="the passed-on move did not say so; "
[ "$(cat "$WORK/big.rc")" = 7 ] || why+="the process ended with $(cat "$WORK/big.rc"); "
result "migrate/a 256 MiB move shows its phases on a terminal, also when moved on from node2 ($lines lines)" "$([ -z "$why" ] && echo 0 || echo 1)" "$why"

# --- draining a node: rfork migrate --all --from node2, asked on node1, moves the 4 workers node2 runs off it at once ---
cc -o "$WORK/ticker" "$P/ticker.c"
# Each ticker is waited for by its PID: once, here, bash's `wait -n` returned 127 ("no child to wait
# for") in place of one ticker's status.
on node1 "$RFORK" run --node node2 -- bash -c 'pids=(); for k in 1 2 3 4; do "$0" $k 5000 & pids+=($!); done
    s=0; for p in "${pids[@]}"; do wait "$p"; s=$((s + $?)); done; echo "sum $s"' "$WORK/ticker" >"$WORK/drain.out" 2>"$WORK/drain.err" &
drainjob=$!
for _ in $(seq 200); do
    [ "$(grep -Ec '^ticker [1-4] 20 node2$' "$WORK/drain.out" 2>/dev/null)" = 4 ] && break; sleep 0.05
done
notroot=$(on node2 setpriv --reuid=65534 --regid=65534 --clear-groups "$RFORK" migrate --all --from node2 2>&1); nrc=$?
unknown=$(on node1 "$RFORK" migrate --all --from node9 2>&1); urc=$?
# Asked on node1: node1 asks node2, which moves them (to node1 or node3) and answers through node1.
on node1 "$RFORK" migrate --all --from node2 >"$WORK/drain.mig" 2>&1; drc=$?
wait "$drainjob"
settle
why=""
[ "$drc" = 0 ] || why+="migrate --all exit $drc: $(tr '\n' ' ' <"$WORK/drain.mig"); "
grep -Eq '^moved 4 of 4 processes off node2; median freeze [0-9.]+ ms$' "$WORK/drain.mig" || why+="it said: $(tr '\n' ' ' <"$WORK/drain.mig"); "
[ "$(grep -Ec '^process [0-9]+ \(home node1\) runs on node[13]; frozen' "$WORK/drain.mig")" = 4 ] || why+="not 4 moves to node1/node3; "
grep -q '^sum 10$' "$WORK/drain.out" || why+="the parent summed: $(grep '^sum' "$WORK/drain.out" || echo nothing) ($(head -3 "$WORK/drain.err" | tr '\n' ' ')); "
for k in 1 2 3 4; do
    gap=$(awk -v k=$k '$1 == "ticker" && $2 == k { if ($3 != n) { print "ticker " k ": " n " expected, got " $3; exit } n++ }' "$WORK/drain.out")
    [ -z "$gap" ] || why+="$gap; "
    hops=$(awk -v k=$k '$1 == "ticker" && $2 == k {print $4}' "$WORK/drain.out" | uniq | tr '\n' ' ')
    echo "$hops" | grep -Eq '^node2 node[13] $' || why+="ticker $k ran on: $hops; "
done
[ "$nrc" = 1 ] && echo "$notroot" | grep -q 'only root' || why+="a user was not refused: $notroot; "
[ "$urc" = 1 ] && echo "$unknown" | grep -q "unknown node 'node9'" || why+="--from node9 said: $unknown; "
result "migrate/--all --from node2, asked on node1, moves its 4 workers off at once, nothing lost ($(tail -1 "$WORK/drain.mig"))" \
    "$([ -z "$why" ] && echo 0 || echo 1)" "$why"

# --- moving a process that shares memory: it goes, and its memory stays coherent with its parent's ---
# A child and its parent take turns on a counter in shared anonymous memory; the child is moved
# mid-game (from home, where the memory becomes shared across nodes at the move; and from node2, by the
# node running it, to node3). No add may be lost, the child must see itself on the new node, and its
# exit status must arrive.
cc -O2 -o "$WORK/shm_migrate" "$P/shm_migrate.c"
shm_move() { # name, run-args, target
    rm -f "$WORK/mig.pid"
    ( on node1 "$RFORK" run $2 -- "$WORK/shm_migrate" "$WORK/mig.pid" 2000 >"$WORK/sm.out" 2>"$WORK/sm.err"
      echo "$?" >"$WORK/sm.rc" ) &
    local smjob=$! cpid=""
    for _ in $(seq 100); do [ -s "$WORK/mig.pid" ] && break; sleep 0.05; done
    cpid=$(cat "$WORK/mig.pid" 2>/dev/null)
    sleep 0.5
    local out; out=$(on node1 "$RFORK" migrate "${cpid:-0}" "$3" 2>&1); local mrc=$?
    wait "$smjob"
    settle
    why=""
    [ "$mrc" = 0 ] || why+="migrate exit $mrc: $out; "
    echo "$out" | grep -Eq "^process $cpid runs on $3; frozen [0-9.]+ ms" || why+="migrate said: $out; "
    grep -q "^child moved to $3$" "$WORK/sm.err" || why+="the child did not see itself on $3: $(tr '\n' ' ' <"$WORK/sm.err"); "
    grep -q '^counter right, child exit 0$' "$WORK/sm.out" || why+="got: $(tr '\n' ' ' <"$WORK/sm.out"); "
    [ "$(cat "$WORK/sm.rc")" = 0 ] || why+="exit $(cat "$WORK/sm.rc"); "
    grep -q '^rfork: ' "$WORK/sm.err" && why+="unexpected: $(grep '^rfork: ' "$WORK/sm.err" | head -1); "
    result "migrate/$1 ($out)" "$([ -z "$why" ] && echo 0 || echo 1)" "$why"
}
shm_move "a child sharing memory with its parent moves home -> node2, the memory stays coherent" "--policy local" node2
shm_move "a child sharing memory with its parent moves node2 -> node3, the memory stays coherent" "--node node2" node3

# --- moving a process with three threads and a System V segment: a segment no other process can find
# or attaches becomes a memfd as the process moves (librfork, every other thread parked), so the
# process goes node1 -> node2 -> node3 with both threads' counters intact, and a new shmat on node3
# sees them; a segment with a key keeps the process home, with one line naming it. None is left after.
cc -O2 -o "$WORK/sysv_migrate" "$P/sysv_migrate.c" -lpthread
sysv_move() { # mode, seconds, targets...
    local mode=$1 secs=$2 n; spid=""; shift 2
    rm -f "$WORK/sv.pid"
    : >"$WORK/sv.mig"
    ( on node1 "$RFORK" run --policy local -- "$WORK/sysv_migrate" "$WORK/sv.pid" "$mode" "$secs" \
        >"$WORK/sv.out" 2>"$WORK/sv.err"; echo "$?" >"$WORK/sv.rc" ) &
    local job=$!
    for _ in $(seq 100); do [ -s "$WORK/sv.pid" ] && break; sleep 0.05; done
    spid=$(cat "$WORK/sv.pid" 2>/dev/null)
    sleep 0.3
    for n in "$@"; do
        on node1 "$RFORK" migrate "${spid:-0}" "$n" >>"$WORK/sv.mig" 2>&1
        echo "exit $?" >>"$WORK/sv.mig"
    done
    wait "$job"
    settle
    why=""
    [ "$(cat "$WORK/sv.rc")" = 0 ] || why+="exit $(cat "$WORK/sv.rc"): $(tr '\n' ' ' <"$WORK/sv.err"); "
    [ "$(segments)" = "$segments_before" ] || why+="segments left: $(on node1 ipcs -m | tr '\n' ' '); "
}
sysv_move private 60 node2 node3
grep -Eq "^process $spid runs on node2; frozen [0-9.]+ ms" "$WORK/sv.mig" &&
    grep -Eq "^process $spid runs on node3; frozen [0-9.]+ ms" "$WORK/sv.mig" &&
    [ "$(grep -c '^exit 0$' "$WORK/sv.mig")" = 2 ] || why+="migrate said: $(tr '\n' ' ' <"$WORK/sv.mig"); "
grep -q '^segment right on node3, second attach agrees, size 8192$' "$WORK/sv.out" || why+="got: $(tr '\n' ' ' <"$WORK/sv.out"); "
grep -q '^rfork: ' "$WORK/sv.err" && why+="unexpected: $(grep '^rfork: ' "$WORK/sv.err" | head -1); "
result "migrate/a process with threads and a private System V segment moves node1 -> node2 -> node3, the segment coherent" \
    "$([ -z "$why" ] && echo 0 || echo 1)" "$why"
sysv_move key 3 node2
grep -q '^exit 1$' "$WORK/sv.mig" && grep -Eq '^rfork: .*System V shared memory segment \(key 0x' "$WORK/sv.mig" ||
    why+="migrate said: $(tr '\n' ' ' <"$WORK/sv.mig"); "
grep -q '^stayed on node1$' "$WORK/sv.out" || why+="got: $(tr '\n' ' ' <"$WORK/sv.out"); "
result "migrate/refused: a System V segment with a key stays home, with the reason" \
    "$([ -z "$why" ] && echo 0 || echo 1)" "$why"

# Refusals: one line each, exit 1, the process keeps running where it is.
migrate_refused() { # name, expected-reason-regexp, migrate-args...
    local name=$1 reason=$2; shift 2
    local out rc
    out=$(on node1 "$@" 2>&1); rc=$?
    result "migrate/refused: $name" "$([ "$rc" = 1 ] && echo "$out" | grep -Eq "^rfork: .*($reason)" && echo 0 || echo 1)" \
        "exit $rc: $out"
}
on node1 "$RFORK" run --policy local -- python3 -c 'import socket, time; s = socket.socket(); time.sleep(20)' &
shmjob=$!
on node1 sleep 20 &
plainjob=$!
for _ in $(seq 100); do
    shmpid=$(pgrep -f '^[^ ]*python3 -c import socket' | head -n 1); plainpid=$(pgrep -f '^sleep 20$' | head -n 1)
    [ -n "$shmpid" ] && [ -n "$plainpid" ] && break; sleep 0.05
done
sleep 0.3
migrate_refused "a socket" "socket" "$RFORK" migrate "${shmpid:-0}" node2
migrate_refused "not under rfork run" "was not started under 'rfork run'" "$RFORK" migrate "${plainpid:-0}" node2
migrate_refused "another user's process" "belongs to another user" \
    setpriv --reuid=65534 --regid=65534 --clear-groups "$RFORK" migrate "${shmpid:-0}" node2
migrate_refused "unknown node" "unknown node 'node9'" "$RFORK" migrate "${shmpid:-0}" node9
migrate_refused "no such process" "no process 999999" "$RFORK" migrate 999999 node2
[ -n "$shmpid" ] && kill -0 "$shmpid" 2>/dev/null || result "migrate/a refused process keeps running" 1 "process ${shmpid:-?} is gone"
for p in ${shmpid:-} ${plainpid:-}; do [ "$p" -gt 1 ] && kill "$p" 2>/dev/null; done

# --- a process moves with its descendants: a shell and the two workers it waits for go to node2 together,
# then on to node3 (moved again from inside node2's namespace, where CRIU's stop must not reach its home) ---
on node1 "$RFORK" run --policy local -- bash -c 'echo "pid $$"; "$0" 1 4000 & p1=$!; "$0" 2 4500 & p2=$!; wait $p1; a=$?; wait $p2; b=$?
    read -r h </proc/sys/kernel/hostname; echo "parent on $h: children exited $a and $b"; exit $((a + b))' \
    "$WORK/ticker" >"$WORK/tree.out" 2>"$WORK/tree.err" &
treejob=$!
for _ in $(seq 200); do
    [ "$(grep -Ec '^ticker [12] 20 node1$' "$WORK/tree.out" 2>/dev/null)" = 2 ] && break; sleep 0.05
done
bpid=$(sed -n 's/^pid //p' "$WORK/tree.out" | head -n 1)
mrc=""
: >"$WORK/tree.mig"
for n in node2 node3; do
    on node1 "$RFORK" migrate "${bpid:-0}" "$n" >>"$WORK/tree.mig" 2>&1; mrc+="$?"
    sleep 0.5
done
wait "$treejob"; rc=$?
settle
why=""
[ "$mrc" = 00 ] && grep -Eq "^process $bpid runs on node3; frozen [0-9.]+ ms" "$WORK/tree.mig" || why+="migrate (exits $mrc) said: $(tr '\n' ' ' <"$WORK/tree.mig"); "
[ "$rc" = 3 ] || why+="the job ended with $rc ($(tail -2 "$WORK/tree.err" | tr '\n' ' ')); "
grep -q '^parent on node3: children exited 1 and 2$' "$WORK/tree.out" || why+="the parent said: $(grep '^parent' "$WORK/tree.out" || echo nothing); "
for k in 1 2; do
    gap=$(awk -v k=$k '$1 == "ticker" && $2 == k { if ($3 != n) { print "ticker " k ": " n " expected, got " $3; exit } n++ }' "$WORK/tree.out")
    [ -z "$gap" ] || why+="$gap; "
    hops=$(awk -v k=$k '$1 == "ticker" && $2 == k {print $4}' "$WORK/tree.out" | uniq | tr '\n' ' ')
    [ "$hops" = "node1 node2 node3 " ] || why+="ticker $k ran on: $hops; "
done
[ -s "$WORK/tree.err" ] && why+="stderr: $(head -2 "$WORK/tree.err" | tr '\n' ' '); "
left=$(leftovers); [ -z "$left" ] || why+="left behind:$left; "
[ -z "$(pgrep -f "$WORK/ticker")" ] || why+="a ticker still runs; "
result "migrate/a shell moves with the two workers it waits for, to node2 then node3: same exit statuses, no line lost or doubled ($(grep -o 'frozen [0-9.]* ms' "$WORK/tree.mig" | tr '\n' ' '))" \
    "$([ -z "$why" ] && echo 0 || echo 1)" "$why"

# A parent holding one end of a pipe and its child the other is refused (its channel would cut the pair).
on node1 "$RFORK" run --policy local -- python3 -c '
import os, sys, time
r, w = os.pipe()
if os.fork() == 0:
    os.close(w); os.read(r, 1); os._exit(0)
os.close(r); print("pid", os.getpid(), flush=True); time.sleep(8); os.write(w, b"x"); os.wait()' >"$WORK/pair.out" 2>&1 &
pairjob=$!
for _ in $(seq 100); do grep -q '^pid ' "$WORK/pair.out" 2>/dev/null && break; sleep 0.05; done
ppid_=$(sed -n 's/^pid //p' "$WORK/pair.out" | head -n 1)
migrate_refused "a parent and its child on the two ends of a pipe" "two ends of a pipe" "$RFORK" migrate "${ppid_:-0}" node2
[ -n "$ppid_" ] && [ "$ppid_" -gt 1 ] && kill "$ppid_" 2>/dev/null
wait "$pairjob" 2>/dev/null
wait "$shmjob" "$plainjob" 2>/dev/null
settle

# --- checkpoint and restart: a two-process job joined by a pipe, saved midway, restarted on other nodes ---
cc -o "$WORK/pipejob" "$P/pipejob.c"
on node1 "$WORK/pipejob" >"$WORK/job.plain" 2>/dev/null
expected=$(tail -n 1 "$WORK/job.plain")
wait_pid() { # FILE: waits up to 5 s for a "pid N" line in FILE; sets jpid
    jpid=""
    for _ in $(seq 100); do jpid=$(sed -n 's/^pid //p' "$1" 2>/dev/null); [ -n "$jpid" ] && return; sleep 0.05; done
}
ends_soon() { # PID: the background job PID ends within 5 s of its checkpoint, or why says it did not
    for _ in $(seq 50); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
    why+="the job did not end within 5 s of its checkpoint; "
}
start_job() { # PREFIX: the job under rfork run on node1, in the background; sets jobbg and jpid
    ( on node1 "$RFORK" run --policy local -- "$WORK/pipejob" 2>"$1.err" | cat >"$1.out"; echo "${PIPESTATUS[0]}" >"$1.rc" ) &
    jobbg=$!
    wait_pid "$1.out"
    sleep 0.5
}
restarts() { # DIR NODE...: restarts DIR on each node; appends to why
    local dir=$1 n out rc; shift
    for n in "$@"; do
        out=$(on node1 "$RFORK" restart "$dir" --node "$n" 2>"$WORK/rs.err"); rc=$?
        [ "$rc" = 0 ] && [ "$(echo "$out" | tail -n 1)" = "$expected" ] \
            || why+="restart on $n: exit $rc, '$(echo "$out" | tail -n 1)' $(tr '\n' ' ' <"$WORK/rs.err"); "
        grep -q "job ends on $n" "$WORK/rs.err" || why+="the job did not end on $n; "
    done
}
start_job "$WORK/job"
on node1 "$RFORK" checkpoint "${jpid:-0}" "$WORK/ck" >"$WORK/ck.out" 2>&1
crc=$?
wait "$jobbg"
settle
why=""
[ "$crc" = 0 ] && grep -q "^saved the job of process $jpid to $WORK/ck (.* MiB); frozen [0-9.]* ms; it has ended$" "$WORK/ck.out" \
    || why+="checkpoint said: $(cat "$WORK/ck.out"); "
[ "$(cat "$WORK/job.rc")" = 137 ] || why+="the job was not ended (exit $(cat "$WORK/job.rc")); "
grep -q '^sum' "$WORK/job.out" && why+="the job had finished before its checkpoint; "
restarts "$WORK/ck" node2 node3 node1
settle
left=$(leftovers)
[ -z "$left" ] || why+="left behind:$left; "
result "checkpoint/a job with a pipe: saved midway and ended, restarted on node2, node3 and node1 (where it was saved), same result" \
    "$([ -z "$why" ] && echo 0 || echo 1)" "$why"

# --leave-running: the job goes on to its end; the checkpoint restarts to the same end; a second
# checkpoint into the same directory replaces the first. A staging directory a crash left mid-dump (its
# images/ root's, as while CRIU writes in place) is cleared first; the images are the owner's alone.
start_job "$WORK/job2"
mkdir -p "$WORK/ck.rfork-staging-$jpid/images" && chmod 700 "$WORK/ck.rfork-staging-$jpid/images"
echo stale >"$WORK/ck.rfork-staging-$jpid/images/pages-9.img"
on node1 "$RFORK" checkpoint --leave-running "${jpid:-0}" "$WORK/ck" >"$WORK/ck2.out" 2>&1
crc=$?
wait "$jobbg"
settle
why=""
[ "$crc" = 0 ] && grep -q 'it runs on$' "$WORK/ck2.out" || why+="checkpoint said: $(cat "$WORK/ck2.out"); "
[ "$(cat "$WORK/job2.rc")" = 0 ] && [ "$(tail -n 1 "$WORK/job2.out")" = "$expected" ] \
    || why+="the job left running ended with $(cat "$WORK/job2.rc"): $(tail -n 1 "$WORK/job2.out"); "
grep -q "\"pid\" : $jpid," "$WORK/ck/manifest.json" || why+="the directory was not replaced; "
ls -d "$WORK"/ck.rfork-* 2>/dev/null | grep -q . && why+="a staging directory is left: $(ls -d "$WORK"/ck.rfork-*); "
[ -e "$WORK/ck/images/pages-9.img" ] && why+="the stale image a crash left is in the checkpoint; "
[ "$(stat -c %a "$WORK/ck/images")" = 700 ] && [ "$(stat -c %a "$WORK/ck/images/"*.img | sort -u)" = 600 ] ||
    why+="images others can read: $(stat -c '%n %a' "$WORK/ck/images" "$WORK/ck/images/"*.img | head -3 | tr '\n' ' '); "
restarts "$WORK/ck" node2
result "checkpoint/--leave-running: the job goes on, its checkpoint replaces the last (and a crash's leftover), and restarts to the same end" \
    "$([ -z "$why" ] && echo 0 || echo 1)" "$why"

# A job whose child runs on node2 (the default placement): its two parts are cut at one consistent cut
# (the bytes on their way through the stand-in included), saved and ended; restarted on node3, its child
# goes back to node2, and the sum is the plain run's. Then the same left running: it goes on to its end,
# and its checkpoint restarts to the same end.
start_spread() { # PREFIX: the job with its child on node2, in the background; sets jobbg and jpid
    ( on node1 "$RFORK" run --node node2 -- "$WORK/pipejob" 2>"$1.err" | cat >"$1.out"; echo "${PIPESTATUS[0]}" >"$1.rc" ) &
    jobbg=$!
    wait_pid "$1.out"
    sleep 0.7
}
start_spread "$WORK/job4"
out=$(on node1 "$RFORK" checkpoint "${jpid:-0}" "$WORK/ck4" 2>&1); crc=$?
wait "$jobbg"
settle
why=""
[ "$crc" = 0 ] && echo "$out" | grep -q "^saved the job of process $jpid to $WORK/ck4 (.*); frozen [0-9.]* ms; it has ended$" \
    || why+="checkpoint said (exit $crc): $out; "
[ "$(cat "$WORK/job4.rc")" = 137 ] || why+="the job was not ended (exit $(cat "$WORK/job4.rc")); "
grep -q '^sum' "$WORK/job4.out" && why+="the job had finished before its checkpoint; "
python3 -c "import json,sys; m=json.load(open(sys.argv[1])); p=m['parts']; assert m['version']==2 and len(p)==1 and p[0]['node']=='node2', m" \
    "$WORK/ck4/manifest.json" 2>/dev/null || why+="the manifest does not list the part on node2; "
restarts "$WORK/ck4" node3 node1
settle
left=$(leftovers)
[ -z "$left" ] || why+="left behind:$left; "
result "checkpoint/a job spread over two nodes: one cut of both parts, ended, restarted on node3 and node1 to the plain result" \
    "$([ -z "$why" ] && echo 0 || echo 1)" "$why"

start_spread "$WORK/job5"
out=$(on node1 "$RFORK" checkpoint --leave-running "${jpid:-0}" "$WORK/ck5" 2>&1); crc=$?
wait "$jobbg"
settle
why=""
[ "$crc" = 0 ] && echo "$out" | grep -q 'it runs on$' || why+="checkpoint said (exit $crc): $out; "
[ "$(cat "$WORK/job5.rc")" = 0 ] && [ "$(tail -n 1 "$WORK/job5.out")" = "$expected" ] \
    || why+="the job left running ended with $(cat "$WORK/job5.rc"): $(tail -n 1 "$WORK/job5.out"); "
grep -q 'rfork:' "$WORK/job5.err" && why+="the job said: $(grep -m1 rfork: "$WORK/job5.err"); "
restarts "$WORK/ck5" node2
settle
left=$(leftovers)
[ -z "$left" ] || why+="left behind:$left; "
result "checkpoint/a job spread over two nodes, left running: it goes on to its end, and restarts to the same end" \
    "$([ -z "$why" ] && echo 0 || echo 1)" "$why"

# Four workers on node2 and node3, each fed numbers through its own pipe a few ahead of its answers, all
# answering through one shared pipe: bytes are always on their way both ways. Cut at four moments, ended
# or left running; each checkpoint restarts (on node3, and its workers where they ran) to the plain sum.
# 6000 numbers a worker (about 10 s): the suite's debug daemons relaying the job keep both CPUs busy at
# nice -20, and the checkpoint command then takes seconds to start; with 3000 (about 5 s) the job had
# ended before the later cuts reached it.
cc -o "$WORK/spreadjob" "$P/spreadjob.c"
spread_expected=$(on node1 "$WORK/spreadjob" 6000 2>/dev/null | tail -n 1)
why=""
for cut in 0.4:end 0.9:run 1.4:end 1.9:run; do
    delay=${cut%:*}; mode=${cut#*:}
    rm -f "$WORK/sj.out" "$WORK/sj.rc"  # else the last job's "pid" line could be read for this one's
    ( on node1 "$RFORK" run -- "$WORK/spreadjob" 6000 2>"$WORK/sj.err" | cat >"$WORK/sj.out"; echo "${PIPESTATUS[0]}" >"$WORK/sj.rc" ) &
    jobbg=$!
    wait_pid "$WORK/sj.out"
    sleep "$delay"
    rm -rf "$WORK/ck6"
    out=$(on node1 "$RFORK" checkpoint $([ "$mode" = run ] && echo --leave-running) "${jpid:-0}" "$WORK/ck6" 2>&1); crc=$?
    wait "$jobbg"
    [ "$crc" = 0 ] || {
        why+="cut at $delay s ($mode): checkpoint said (exit $crc): $out (the job: exit $(cat "$WORK/sj.rc"), '$(tail -n 2 "$WORK/sj.out" | tr '\n' '|')' $(tail -n 3 "$WORK/sj.err" | tr '\n' ' ')); "
        settle; continue
    }
    nodes=$(python3 -c "import json,sys; print(' '.join(sorted({p['node'] for p in json.load(open(sys.argv[1]))['parts']})))" "$WORK/ck6/manifest.json" 2>/dev/null)
    [ "$nodes" = "node2 node3" ] || why+="cut at $delay s: the parts were on '$nodes'; "
    if [ "$mode" = run ]; then
        [ "$(cat "$WORK/sj.rc")" = 0 ] && [ "$(tail -n 1 "$WORK/sj.out")" = "$spread_expected" ] \
            || why+="cut at $delay s, left running: exit $(cat "$WORK/sj.rc"), '$(tail -n 1 "$WORK/sj.out")'; "
    else
        [ "$(cat "$WORK/sj.rc")" = 137 ] || why+="cut at $delay s: the job was not ended (exit $(cat "$WORK/sj.rc")); "
    fi
    got=$(on node1 "$RFORK" restart "$WORK/ck6" --node node3 2>"$WORK/rs6.err" | tail -n 1)
    [ "$got" = "$spread_expected" ] || why+="cut at $delay s ($mode), restarted: '$got' $(tr '\n' ' ' <"$WORK/rs6.err"); "
    settle
done
left=$(leftovers)
[ -z "$left" ] || why+="left behind:$left; "
result "checkpoint/four workers on node2 and node3, bytes on their way both ways: cut at four moments, ended or left running, each restarts to the plain sum" \
    "$([ -z "$why" ] && echo 0 || echo 1)" "$why"

# Helpers for the jobs below, each cut once per mode. cut_job PREFIX DELAY MODE DIR RUN...: starts
# "rfork run RUN..." on node1 in the background, waits for its "pid" line and DELAY s, runs $before_cut
# if set, checkpoints the job into DIR (left running when MODE is run) and waits for it; sets jpid, out,
# crc. cut_ended PREFIX MODE EXPECTED LABEL: the job was ended (137), or, left running, ended with 0 and
# the last line EXPECTED; else why says so. restarted_to DIR NODE EXPECTED LABEL [sort]: its restart on
# NODE ends with the line EXPECTED (with "sort", prints EXPECTED once sorted, lines joined with '|').
cut_job() {
    local prefix=$1 delay=$2 mode=$3 dir=$4 bg; shift 4
    rm -f "$prefix.out" "$prefix.rc"
    rm -rf "$dir"
    ( on node1 "$RFORK" run "$@" 2>"$prefix.err" | cat >"$prefix.out"; echo "${PIPESTATUS[0]}" >"$prefix.rc" ) &
    bg=$!
    wait_pid "$prefix.out"
    sleep "$delay"
    [ -n "${before_cut:-}" ] && eval "$before_cut"
    out=$(on node1 "$RFORK" checkpoint $([ "$mode" = run ] && echo --leave-running) "${jpid:-0}" "$dir" 2>&1); crc=$?
    wait "$bg"
}
cut_ended() {
    if [ "$2" = run ]; then
        [ "$(cat "$1.rc")" = 0 ] && [ "$(tail -n 1 "$1.out")" = "$3" ] \
            || why+="$4, left running: exit $(cat "$1.rc"), '$(tail -n 1 "$1.out")'; "
    else
        [ "$(cat "$1.rc")" = 137 ] || why+="$4: the job was not ended (exit $(cat "$1.rc")); "
    fi
}
restarted_to() {
    local got
    if [ "${5:-}" = sort ]; then
        got=$(on node1 "$RFORK" restart "$1" --node "$2" 2>"$1.rs.err" | sort | tr '\n' '|')
    else
        got=$(on node1 "$RFORK" restart "$1" --node "$2" 2>"$1.rs.err" | tail -n 1)
    fi
    [ -n "$3" ] && [ "$got" = "$3" ] || why+="$4, restarted: '$got' (plain '$3') $(tr '\n' ' ' <"$1.rs.err"); "
}
parts_of() { # DIR: the manifest's version and its parts' nodes, each with those of its own parts ("3 node2>node3")
    python3 -c "import json,sys; m=json.load(open(sys.argv[1])); print(m['version'], ' '.join(p['node'] + '>' + ','.join(q['node'] for q in p.get('parts') or []) for p in m.get('parts') or []))" "$1/manifest.json" 2>&1
}

# Children that ended and wait to be reaped (zombies; every job's session leader is outside its PID
# namespace, which CRIU refused for a zombie): saved at home (--policy local) and spread (the zombies are
# stand-ins, the sleeper a part on another node), ended or left running; each restart reaps the same
# exit statuses, the signal included.
cc -o "$WORK/zombiejob" "$P/zombiejob.c"
zj_expected=$(on node1 "$WORK/zombiejob" 2>/dev/null | tail -n 1)
why=""
before_cut='zombies=$(for c in $(cat /proc/"${jpid:-0}"/task/*/children 2>/dev/null); do sed -n "s/^State:\tZ.*/Z/p" /proc/"$c"/status; done | wc -l)'
for run in local:end spread:end spread:run; do
    place=${run%:*}; mode=${run#*:}
    cut_job "$WORK/zj" 1.2 "$mode" "$WORK/ck11" $([ "$place" = local ] && echo --policy local) -- "$WORK/zombiejob"
    [ "$zombies" = 3 ] || why+="$place: $zombies zombies at the cut, not 3; "
    [ "$crc" = 0 ] || { why+="$place ($mode): checkpoint said (exit $crc): $out; "; settle; continue; }
    cut_ended "$WORK/zj" "$mode" "$zj_expected" "$place"
    restarted_to "$WORK/ck11" node2 "$zj_expected" "$place ($mode)"
    settle
done
before_cut=""
left=$(leftovers)
[ -z "$left" ] || why+="left behind:$left; "
result "checkpoint/a job with 3 children ended and not yet reaped (one by a signal), at home or spread, ended or left running: the restart reaps the same statuses" \
    "$([ -z "$why" ] && echo 0 || echo 1)" "$why"

# A job three processes deep, each on another node (its child's own fork is placed from the child's
# node: a part of a part), bytes on their way at every level: one cut of all three, ended or left
# running; the restart brings each level back where it ran and ends with the plain sum.
cc -o "$WORK/nestjob" "$P/nestjob.c"
nj_expected=$(on node1 "$WORK/nestjob" 2>/dev/null | tail -n 1)
why=""
for mode in end run; do
    cut_job "$WORK/nj" 1.2 "$mode" "$WORK/ck10" -- "$WORK/nestjob"
    [ "$crc" = 0 ] || { why+="$mode: checkpoint said (exit $crc): $out; "; settle; continue; }
    nested=$(parts_of "$WORK/ck10")
    echo "$nested" | grep -Eq '^3 node[0-9]>node[0-9]$' || why+="$mode: the manifest does not hold a part of a part: $nested; "
    cut_ended "$WORK/nj" "$mode" "$nj_expected" "$mode"
    restarted_to "$WORK/ck10" node3 "$nj_expected" "$mode"
    settle
done
left=$(leftovers)
[ -z "$left" ] || why+="left behind:$left; "
result "checkpoint/a job three deep, each level on another node: one cut of the part of a part too, ended or left running, restarts to the plain sum" \
    "$([ -z "$why" ] && echo 0 || echo 1)" "$why"

# A job whose child was placed on node2 and then moved on to node3 (rfork migrate, as the balancer
# would): node2 cuts the stand-in it keeps for the child, with the child on node3 as its part. Ended or
# left running, each checkpoint restarts the route as it was to the plain sum.
why=""
before_cut='cpid=$(cat /proc/"${jpid:-0}"/task/*/children 2>/dev/null | tr " " "\n" | grep -m1 .)
    mout=$(on node1 "$RFORK" migrate "${cpid:-0}" node3 2>&1) || why+="$mode: the move to node3 said: $mout; "'
for mode in end run; do
    cut_job "$WORK/job13" 0.7 "$mode" "$WORK/ck13" --node node2 -- "$WORK/pipejob"
    [ "$crc" = 0 ] || { why+="$mode: checkpoint said (exit $crc): $out; "; settle; continue; }
    route=$(parts_of "$WORK/ck13")
    [ "$route" = "3 node2>node3" ] || why+="$mode: the manifest's parts: $route; "
    cut_ended "$WORK/job13" "$mode" "$expected" "$mode"
    restarts "$WORK/ck13" node1
    settle
done
before_cut=""
left=$(leftovers)
[ -z "$left" ] || why+="left behind:$left; "
result "checkpoint/a child moved on from node2 to node3 is cut there through the stand-in it left, ended or left running, and restarts to the plain result" \
    "$([ -z "$why" ] && echo 0 || echo 1)" "$why"

# A part that ends while it is being cut (its pipe is full, so its node waits for it; it ends first):
# it is no part any more, its stand-in is saved as it ends, and the restart reaps its status.
qj_expected=$(on node1 python3 "$P/quitjob.py" 2>/dev/null | tail -n 1)
why=""
cut_job "$WORK/qj" 0.3 end "$WORK/ck14" --node node2 -- python3 "$P/quitjob.py"
if [ "$crc" = 0 ]; then
    [ "$(parts_of "$WORK/ck14")" = "1 " ] || why+="the manifest's parts: $(parts_of "$WORK/ck14"); "
    cut_ended "$WORK/qj" end "" "the job"
    restarted_to "$WORK/ck14" node3 "$qj_expected" "the job"
else
    why+="checkpoint said (exit $crc): $out; "
fi
settle
left=$(leftovers)
[ -z "$left" ] || why+="left behind:$left; "
result "checkpoint/a part that ends while it is cut is saved as it ends, and the restart reaps its status" \
    "$([ -z "$why" ] && echo 0 || echo 1)" "$why"

# A shell job that forks all the time (workers on other nodes whose own forks are placed from there):
# a cut waits for the forks in flight to land and keeps new ones where they start until it is taken, so
# it is saved whenever it is asked, ended or left running, and each checkpoint restarts to the plain output.
fj_expected=$(on node1 sh "$P/forkingjob.sh" 2>/dev/null | grep -v '^pid ' | sort | tr '\n' '|')
why=""
for cut in 1.1:end 1.4:run 1.7:end 2.0:run; do
    delay=${cut%:*}; mode=${cut#*:}
    cut_job "$WORK/fj" "$delay" "$mode" "$WORK/ck12" -- sh "$P/forkingjob.sh"
    [ "$crc" = 0 ] || { why+="cut at $delay s ($mode): checkpoint said (exit $crc): $out; "; settle; continue; }
    if [ "$mode" = run ]; then
        [ "$(cat "$WORK/fj.rc")" = 0 ] && [ "$(grep -v '^pid ' "$WORK/fj.out" | sort | tr '\n' '|')" = "$fj_expected" ] \
            || why+="cut at $delay s, left running: exit $(cat "$WORK/fj.rc"), '$(tr '\n' '|' <"$WORK/fj.out")'; "
    else
        cut_ended "$WORK/fj" end "" "cut at $delay s"
    fi
    restarted_to "$WORK/ck12" node2 "$fj_expected" "cut at $delay s ($mode)" sort
    settle
done
left=$(leftovers)
[ -z "$left" ] || why+="left behind:$left; "
result "checkpoint/a shell job forking all the time on three nodes is saved whenever asked (4 moments, ended or left running) and restarts to the plain output" \
    "$([ -z "$why" ] && echo 0 || echo 1)" "$why"

# A recursive make of a small C project (a library of 24 files in three directories, each built by its
# own make, -j3, compilers placed on every node; each object takes a quarter of a second more, so that
# the build lasts about 3 s) is saved mid-build and ended; restarted on node1, the
# build goes on where it stopped and its program prints what the plain build's prints.
make_project() { # DIR: writes the project
    local d f
    for d in a b c; do
        mkdir -p "$1/$d"
        for f in 1 2 3 4 5 6 7 8; do
            printf 'long %s%s(long x) { long s = x; for (int i = 0; i < %s; i++) s = s * 31 + i; return s %% 1000003; }\n' \
                "$d" "$f" "$f$f" >"$1/$d/$d$f.c"
        done
        printf 'OBJS := $(patsubst %%.c,%%.o,$(wildcard *.c))\nall: $(OBJS)\n%%.o: %%.c\n\tcc -O2 -c -o $@ $< && sleep 0.25\n' >"$1/$d/Makefile"
    done
    {
        printf '#include <stdio.h>\n'
        for d in a b c; do for f in 1 2 3 4 5 6 7 8; do printf 'long %s%s(long);\n' "$d" "$f"; done; done
        printf 'int main(void) { long t = 0;\n'
        for d in a b c; do for f in 1 2 3 4 5 6 7 8; do printf ' t = t * 7 + %s%s(%s);\n' "$d" "$f" "$f"; done; done
        printf ' printf("checksum %%ld\\n", t); return 0; }\n'
    } >"$1/main.c"
    printf 'all: prog\n\t./prog\nsub-a sub-b sub-c:\n\t$(MAKE) -C $(@:sub-%%=%%)\nprog: main.c sub-a sub-b sub-c\n\tcc -O2 -o prog main.c */*.o\n.PHONY: all sub-a sub-b sub-c\n' >"$1/Makefile"
}
why=""
make_project "$WORK/proj-plain"
mk_expected=$(on node1 make -s --no-print-directory -j3 -C "$WORK/proj-plain" 2>&1 | tail -n 1)
make_project "$WORK/proj"
cut_job "$WORK/mk" 1.2 end "$WORK/ck16" -- sh -c 'echo "pid $$"; exec make -s --no-print-directory -j3 -C "$0"' "$WORK/proj"
if [ "$crc" = 0 ]; then
    built=$(ls "$WORK"/proj/*/*.o 2>/dev/null | wc -l)
    [ "$built" -lt 24 ] || why+="the build had ended before it was cut ($built of 24 objects); "
    cut_ended "$WORK/mk" end "" "the build"
    restarted_to "$WORK/ck16" node1 "$mk_expected" "the build"
    [ "$(ls "$WORK"/proj/*/*.o 2>/dev/null | wc -l)" = 24 ] || why+="after the restart, $(ls "$WORK"/proj/*/*.o | wc -l) of 24 objects; "
    echo "      (cut with $built of 24 objects built; parts: $(parts_of "$WORK/ck16"))"
else
    why+="checkpoint said (exit $crc): $out; "
fi
case "$mk_expected" in "checksum "*) ;; *) why+="the plain build printed '$mk_expected'; " ;; esac
settle
left=$(leftovers)
[ -z "$left" ] || why+="left behind:$left; "
result "checkpoint/a recursive make of a C project on three nodes, saved mid-build and restarted, finishes to the plain build's program output" \
    "$([ -z "$why" ] && echo 0 || echo 1)" "$why"

# The parent sent its child on node2 all its numbers and closed the pipe; saved while the child still
# reads them, and restarted, the child still sees end of file after the last one and ends.
cc -o "$WORK/eofjob" "$P/eofjob.c"
eof_expected=$(on node1 "$WORK/eofjob" 2>/dev/null | tail -n 2 | tr '\n' '|')
why=""
cut_job "$WORK/eof" 0.6 end "$WORK/ck8" --node node2 -- "$WORK/eofjob"
settle
[ "$crc" = 0 ] || why+="checkpoint said (exit $crc): $out; "
grep -q '"ended" : true' "$WORK/ck8/manifest.json" 2>/dev/null || why+="no channel of the part is marked ended; "
got=$(on node1 "$RFORK" restart "$WORK/ck8" --node node3 2>"$WORK/rs8.err" | tail -n 2 | tr '\n' '|')
[ "$got" = "$eof_expected" ] || why+="restarted: '$got' (plain '$eof_expected') $(tr '\n' ' ' <"$WORK/rs8.err"); "
settle
left=$(leftovers)
[ -z "$left" ] || why+="left behind:$left; "
result "checkpoint/a part saved after its input ended still reads end of file after a restart, and ends" \
    "$([ -z "$why" ] && echo 0 || echo 1)" "$why"

# A shell pipeline: seq and a slow reader, each on another node, joined by a pipe through their stand-ins
# here, which is full; the cut still comes at once (a stand-in queues what its part wrote instead of
# blocking on the full pipe, and echoes its marker), and the job restarts to the plain sum.
pl_expected=$(on node1 sh "$P/pipeline.sh" 2>/dev/null | tail -n 1)
why=""
cut_job "$WORK/pl" 1.5 end "$WORK/ck9" -- sh "$P/pipeline.sh"
settle
[ "$crc" = 0 ] || why+="checkpoint said (exit $crc): $out; "
restarted_to "$WORK/ck9" node2 "$pl_expected" "the pipeline"
settle
left=$(leftovers)
[ -z "$left" ] || why+="left behind:$left; "
result "checkpoint/a shell pipeline of two parts joined through a full pipe here is cut at once and restarts to the plain sum" \
    "$([ -z "$why" ] && echo 0 || echo 1)" "$why"

# A part that does not read what was sent to it (2 MB wait for it, its pipe is full): its input cannot
# be put in its pipe for the cut, so the job is not saved, says why, and goes on; nothing is written.
why=""
( on node1 "$RFORK" run -- python3 "$P/fullpipe.py" 2>"$WORK/full.err" | cat >"$WORK/full.out"
    echo "${PIPESTATUS[0]}" >"$WORK/full.rc" ) &
jobbg=$!
wait_pid "$WORK/full.out"
sleep 1.5
out=$(on node1 "$RFORK" checkpoint --leave-running "${jpid:-0}" "$WORK/ck7" 2>&1); crc=$?
[ "$crc" = 1 ] && echo "$out" | grep -q "on node[23]: it does not read what was sent to it (its pipe is full), so that input cannot be saved with it; the job keeps running" \
    || why+="checkpoint said (exit $crc): $out; "
[ -e "$WORK/ck7" ] && why+="a directory was written; "
wait "$jobbg"
settle
[ "$(cat "$WORK/full.rc")" = 0 ] && [ "$(tail -n 1 "$WORK/full.out")" = 2000000 ] \
    || why+="the job ended with $(cat "$WORK/full.rc"): '$(tail -n 1 "$WORK/full.out")'; "
left=$(leftovers)
[ -z "$left" ] || why+="left behind:$left; "
result "checkpoint/a part whose input pipe is full is not saved: one line says why, the job goes on to its end" \
    "$([ -z "$why" ] && echo 0 || echo 1)" "$why"

# --checkpoint-every: the job is saved every second, left running; lost with its node (killed here), it
# restarts from the last good checkpoint to the same result. With no --policy, the job stays on its node
# (local placement, pinned).
( on node1 "$RFORK" run --checkpoint-every 1s --checkpoint-dir "$WORK/ckp" -- "$WORK/pipejob" \
    2>"$WORK/job3.err" | cat >"$WORK/job3.out" ) &
jobbg=$!
wait_pid "$WORK/job3.out"
for _ in $(seq 50); do [ -e "$WORK/ckp/manifest.json" ] && break; sleep 0.1; done
first=$(sed -n 's/.*"controlSocketInode" : \([0-9]*\).*/\1/p' "$WORK/ckp/manifest.json" 2>/dev/null)
sleep 1.2
second=$(sed -n 's/.*"controlSocketInode" : \([0-9]*\).*/\1/p' "$WORK/ckp/manifest.json" 2>/dev/null)
[ -n "$jpid" ] && [ "$jpid" -gt 1 ] && kill -KILL "$jpid"
wait "$jobbg"
settle
why=""
[ -n "$first" ] || why+="no checkpoint within 5 s; "
[ -n "$second" ] && [ "$second" != "$first" ] || why+="the checkpoint was not renewed ($first, $second); "
grep -q '^sum' "$WORK/job3.out" && why+="the job had finished before it was lost; "
grep -q 'rfork:' "$WORK/job3.err" && why+="the job said: $(grep -m1 rfork: "$WORK/job3.err"); "
restarts "$WORK/ckp" node3
# With --node node2 its child runs there (pinned), and every checkpoint takes both parts.
( on node1 "$RFORK" run --node node2 --checkpoint-every 1s --checkpoint-dir "$WORK/ckx" -- "$WORK/pipejob" \
    2>"$WORK/job3x.err" | cat >"$WORK/job3x.out" ) &
jobbg=$!
wait_pid "$WORK/job3x.out"
for _ in $(seq 50); do [ -e "$WORK/ckx/manifest.json" ] && break; sleep 0.1; done
sleep 0.3
[ -n "$jpid" ] && [ "$jpid" -gt 1 ] && kill -KILL "$jpid"
wait "$jobbg"
settle
python3 -c "import json,sys; p=json.load(open(sys.argv[1]))['parts']; assert [x['node'] for x in p]==['node2'], p" \
    "$WORK/ckx/manifest.json" 2>/dev/null || why+="--node node2: no checkpoint with its part on node2; "
restarts "$WORK/ckx" node3
result "checkpoint/--checkpoint-every keeps the job where it starts and the last good checkpoint (with its part on node2 too); the lost job restarts from it" \
    "$([ -z "$why" ] && echo 0 || echo 1)" "$why"

# A job whose processes share memory (shared anonymous memory with a process-shared mutex, a named
# semaphore unlinked at once) is saved with it, left running and ended, and restarts to the plain result
# on other nodes, its memory shared again between the restored processes. One worker alone is refused:
# its parent, outside that job, maps the memory too. Python's multiprocessing (Pool, Value, Lock) the same.
cc -O2 -pthread -o "$WORK/shmjob" "$P/shmjob.c"
on node1 "$WORK/shmjob" >"$WORK/shmjob.plain" 2>/dev/null
pipejob_expected=$expected
expected=$(tail -n 1 "$WORK/shmjob.plain")
shm_job() { # PREFIX COMMAND...: under rfork run --policy local on node1, in the background; sets jobbg and jpid
    local prefix=$1; shift
    ( on node1 "$RFORK" run --policy local -- "$@" 2>"$prefix.err" | cat >"$prefix.out"; echo "${PIPESTATUS[0]}" >"$prefix.rc" ) &
    jobbg=$!
    wait_pid "$prefix.out"
    sleep 0.8
}
why=""
shm_job "$WORK/sj" "$WORK/shmjob"
worker=$(sed -n 's/^worker //p' "$WORK/sj.out" | head -n 1)
out=$(on node1 "$RFORK" checkpoint --leave-running "${worker:-0}" "$WORK/ckw" 2>&1); crc=$?
[ "$crc" = 1 ] && echo "$out" | grep -Eq "^rfork: process [0-9]+, which is not part of the job, shares memory with its process $worker; a checkpoint would save one side of it only$" \
    || why+="one worker alone: exit $crc, $out; "
[ -e "$WORK/ckw" ] && why+="a directory was written for the worker; "
out=$(on node1 "$RFORK" checkpoint --leave-running "${jpid:-0}" "$WORK/cks" 2>&1); crc=$?
[ "$crc" = 0 ] && echo "$out" | grep -q 'it runs on$' || why+="checkpoint left running said: $out; "
wait "$jobbg"
[ "$(cat "$WORK/sj.rc")" = 0 ] && [ "$(tail -n 1 "$WORK/sj.out")" = "$expected" ] \
    || why+="the job left running ended with $(cat "$WORK/sj.rc"): $(tail -n 1 "$WORK/sj.out"); "
grep -q 'rfork:' "$WORK/sj.err" && why+="the job said: $(grep -m1 rfork: "$WORK/sj.err"); "
restarts "$WORK/cks" node2
shm_job "$WORK/sj2" "$WORK/shmjob"
out=$(on node1 "$RFORK" checkpoint "${jpid:-0}" "$WORK/cks2" 2>&1); crc=$?
ends_soon "$jobbg"
wait "$jobbg"
[ "$crc" = 0 ] && echo "$out" | grep -q 'it has ended$' || why+="checkpoint said: $out; "
[ "$(cat "$WORK/sj2.rc")" = 137 ] || why+="the saved job was not ended (exit $(cat "$WORK/sj2.rc")); "
grep -q '^sum' "$WORK/sj2.out" && why+="the job had finished before its checkpoint; "
restarts "$WORK/cks2" node3 node1
settle
left=$(leftovers)
[ -z "$left" ] || why+="left behind:$left; "
result "checkpoint/a job whose processes share memory (a mutex, a named semaphore) is saved with it, left running and ended, and restarts on node2, node3 and node1 to the plain result; one worker alone is refused" \
    "$([ -z "$why" ] && echo 0 || echo 1)" "$why"

why=""
on node1 python3 "$P/mp_checkpoint.py" >"$WORK/mpc.plain" 2>/dev/null
expected=$(tail -n 1 "$WORK/mpc.plain")
shm_job "$WORK/mpc" python3 "$P/mp_checkpoint.py"
out=$(on node1 "$RFORK" checkpoint "${jpid:-0}" "$WORK/ckm" 2>&1); crc=$?
ends_soon "$jobbg"
wait "$jobbg"
[ "$crc" = 0 ] && echo "$out" | grep -q 'it has ended$' || why+="checkpoint said: $out; "
[ "$(cat "$WORK/mpc.rc")" = 137 ] || why+="the saved job was not ended (exit $(cat "$WORK/mpc.rc")); "
grep -q '^sum' "$WORK/mpc.out" && why+="the job had finished before its checkpoint; "
restarts "$WORK/ckm" node2
settle
left=$(leftovers)
[ -z "$left" ] || why+="left behind:$left; "
result "checkpoint/Python multiprocessing (Pool, Value, Lock) saved midway and ended restarts on node2 to the plain result" \
    "$([ -z "$why" ] && echo 0 || echo 1)" "$why"
expected=$pipejob_expected

# A restarted job runs on another node, below its restart command (which became its stand-in): the home
# passes its checkpoint on to that node, which takes the cut and sends the images back. Saved left running
# (the job goes on to its end) and saved and ended (exit 137); each checkpoint restarts to the same end.
standin_of() { # PID: the rfork-standin below PID
    local p q
    for p in $(pgrep -x rfork-standin); do
        q=$p
        while [ "${q:-1}" -gt 1 ]; do
            q=$(awk '/^PPid:/{print $2}' "/proc/$q/status" 2>/dev/null)
            [ "$q" = "$1" ] && { echo "$p"; return; }
        done
    done
}
restarted_job() { # DIR NODE PREFIX: restarts DIR on NODE in the background; sets rbg and rs (its stand-in)
    ( on node1 "$RFORK" restart "$1" --node "$2" >"$3.out" 2>"$3.err"; echo "$?" >"$3.rc" ) &
    rbg=$!
    rs=""
    for _ in $(seq 50); do rs=$(standin_of "$rbg"); [ -n "$rs" ] && break; sleep 0.1; done
    sleep 0.5
}
why=""
restarted_job "$WORK/ck" node2 "$WORK/rj1"
out=$(on node1 "$RFORK" checkpoint --leave-running "${rs:-0}" "$WORK/ckr1" 2>&1); crc=$?
wait "$rbg"
[ "$crc" = 0 ] && echo "$out" | grep -q "^saved the job of process $rs to $WORK/ckr1 (.* MiB); frozen [0-9.]* ms; it runs on$" \
    || why+="the restarted job on node2 was not saved: $out; "
[ "$(cat "$WORK/rj1.rc")" = 0 ] && [ "$(tail -n 1 "$WORK/rj1.out")" = "$expected" ] || why+="the job left running ended with $(cat "$WORK/rj1.rc"): $(tail -n 1 "$WORK/rj1.out"); "
restarted_job "$WORK/ckr1" node3 "$WORK/rj2"
out=$(on node1 "$RFORK" checkpoint "${rs:-0}" "$WORK/ckr2" 2>&1); crc=$?
ends_soon "$rbg"
wait "$rbg"
[ "$crc" = 0 ] && echo "$out" | grep -q "^saved the job of process $rs to $WORK/ckr2 (.* MiB); frozen [0-9.]* ms; it has ended$" \
    || why+="the restarted job on node3 was not saved: $out; "
[ "$(cat "$WORK/rj2.rc")" = 137 ] || why+="the saved job on node3 was not ended (exit $(cat "$WORK/rj2.rc")); "
settle
restarts "$WORK/ckr2" node1
settle
left=$(leftovers)
[ -z "$left" ] || why+="left behind:$left; "
result "checkpoint/a restarted job is saved again from the node running it, left running or ended, and restarts to the same end" \
    "$([ -z "$why" ] && echo 0 || echo 1)" "$why"

# The job spread over two nodes, restarted on node3 (its child back on node2), is saved again by node3
# with its part on node2, ended, and restarts on node1 to the same end.
why=""
restarted_job "$WORK/ck4" node3 "$WORK/rj3"
out=$(on node1 "$RFORK" checkpoint "${rs:-0}" "$WORK/ckr3" 2>&1); crc=$?
ends_soon "$rbg"
wait "$rbg"
[ "$crc" = 0 ] && echo "$out" | grep -q "^saved the job of process $rs to $WORK/ckr3 (.* MiB); frozen [0-9.]* ms; it has ended$" \
    || why+="the restarted spread job was not saved: $out; "
[ "$(cat "$WORK/rj3.rc")" = 137 ] || why+="the saved job on node3 was not ended (exit $(cat "$WORK/rj3.rc")); "
python3 -c "import json,sys; m=json.load(open(sys.argv[1])); assert m['node']=='node3' and [p['node'] for p in m['parts']]==['node2'], m" \
    "$WORK/ckr3/manifest.json" 2>/dev/null || why+="the manifest does not say node3 with a part on node2; "
settle
restarts "$WORK/ckr3" node1
settle
left=$(leftovers)
[ -z "$left" ] || why+="left behind:$left; "
result "checkpoint/a spread job restarted on node3 is saved again there with its part on node2, and restarts to the same end" \
    "$([ -z "$why" ] && echo 0 || echo 1)" "$why"

# A process moved twice (node1 -> node2 -> node3) is saved from where it runs: node2, which keeps its
# stand-in, passes the home's request on to node3 and relays the images, the result and the home's commit.
# Saved left running (it goes on to its end on node3) and saved and ended; each restarts to the same end.
cat >"$WORK/countjob.py" <<'PY'
import os, socket, sys, time
print("pid", os.getpid(), flush=True)
s = 0
for i in range(100):
    s += i * i
    time.sleep(0.05)
print("sum", s, flush=True)
print("job ends on", socket.gethostname(), file=sys.stderr, flush=True)
PY
on node1 python3 "$WORK/countjob.py" >"$WORK/count.plain" 2>/dev/null
pipejob_expected=$expected
expected=$(tail -n 1 "$WORK/count.plain")
why=""
for mode in --leave-running ended; do
    ( on node1 "$RFORK" run --policy local -- python3 "$WORK/countjob.py" 2>"$WORK/cj.err" | cat >"$WORK/cj.out"; echo "${PIPESTATUS[0]}" >"$WORK/cj.rc" ) &
    jobbg=$!
    wait_pid "$WORK/cj.out"
    for n in node2 node3; do
        out=$(on node1 "$RFORK" migrate "${jpid:-0}" "$n" 2>&1) || why+="$mode: the move to $n failed: $out; "
    done
    if [ "$mode" = ended ]; then
        out=$(on node1 "$RFORK" checkpoint "${jpid:-0}" "$WORK/ckt2" 2>&1); crc=$?
        ends_soon "$jobbg"
        wait "$jobbg"
        [ "$crc" = 0 ] && echo "$out" | grep -q "^saved the job of process $jpid to $WORK/ckt2 (.* MiB); frozen [0-9.]* ms; it has ended$" \
            || why+="ended: checkpoint said (exit $crc): $out; "
        [ "$(cat "$WORK/cj.rc")" = 137 ] || why+="the saved job was not ended (exit $(cat "$WORK/cj.rc")); "
        grep -q '^sum' "$WORK/cj.out" && why+="the job had finished before its checkpoint; "
    else
        out=$(on node1 "$RFORK" checkpoint --leave-running "${jpid:-0}" "$WORK/ckt1" 2>&1); crc=$?
        wait "$jobbg"
        [ "$crc" = 0 ] && echo "$out" | grep -q "^saved the job of process $jpid to $WORK/ckt1 (.* MiB); frozen [0-9.]* ms; it runs on$" \
            || why+="left running: checkpoint said (exit $crc): $out; "
        [ "$(cat "$WORK/cj.rc")" = 0 ] && [ "$(tail -n 1 "$WORK/cj.out")" = "$expected" ] \
            || why+="the job left running ended with $(cat "$WORK/cj.rc"): $(tail -n 1 "$WORK/cj.out"); "
        grep -q 'job ends on node3' "$WORK/cj.err" || why+="the job did not end on node3: $(tr '\n' ' ' <"$WORK/cj.err"); "
    fi
    settle
done
restarts "$WORK/ckt1" node2
restarts "$WORK/ckt2" node1
settle
left=$(leftovers)
[ -z "$left" ] || why+="left behind:$left; "
expected=$pipejob_expected
result "checkpoint/a process moved twice is saved from node3 through node2, left running or ended, and restarts to the same end" \
    "$([ -z "$why" ] && echo 0 || echo 1)" "$why"

# Damaged, truncated or foreign directories: one line, exit 1, nothing started.
restart_refused() { # name, dir, expected-line-regexp
    local out rc
    out=$(on node1 "$RFORK" restart "$2" --node node2 2>&1); rc=$?
    settle
    local left; left=$(leftovers)
    result "checkpoint/restart refuses $1" \
        "$([ "$rc" = 1 ] && [ "$(echo "$out" | wc -l)" = 1 ] && echo "$out" | grep -Eq "^rfork: .*($3)" && [ -z "$left" ] && echo 0 || echo 1)" \
        "exit $rc: $out ${left:+left behind:$left}"
}
cp -r "$WORK/ck" "$WORK/ck-bad"
big=$(ls -S "$WORK/ck-bad/images" | head -n 1)
printf '\377' | dd of="$WORK/ck-bad/images/$big" bs=1 seek=100 conv=notrunc 2>/dev/null
restart_refused "a damaged image" "$WORK/ck-bad" "is damaged: $big does not match its checksum"
cp -r "$WORK/ck" "$WORK/ck-short"
truncate -s 10 "$WORK/ck-short/images/$big"
restart_refused "a truncated image" "$WORK/ck-short" "is damaged: $big has 10 bytes"
mkdir -p "$WORK/not-a-checkpoint"
restart_refused "a foreign directory" "$WORK/not-a-checkpoint" "is not an rfork checkpoint"
out=$(on node1 setpriv --reuid=65534 --regid=65534 --clear-groups "$RFORK" checkpoint 1 "$WORK/x" 2>&1)
result "checkpoint/another user's process is refused" "$(echo "$out" | grep -q '^rfork: process 1 belongs to another user$' && echo 0 || echo 1)" "$out"

# A user's checkpoint is written and read as that user: not where they cannot write, never through a
# link they planted, and a checkpoint they changed (here: its owner) is refused.
NOBODY=(setpriv --reuid=65534 --regid=65534 --clear-groups)
root_controlled() { # PATH: it and every directory above it are root's and writable by nobody else
    local p=$1
    while :; do
        [ "$(stat -c %u "$p")" = 0 ] && [ $(( 0$(stat -c %a "$p") & 022 )) = 0 ] || return 1
        [ "$p" = / ] && return 0
        p=$(dirname "$p")
    done
}
chmod 755 "$WORK" "$WORK/pipejob"
mine=$WORK/nobody; mkdir -p "$mine"; chown 65534:65534 "$mine"
( on node1 "${NOBODY[@]}" "$RFORK" run --policy local -- "$WORK/pipejob" 2>/dev/null | cat >"$WORK/nb.out" ) &
jobbg=$!
wait_pid "$WORK/nb.out"
sleep 0.3
why=""
# (From a checkout below /tmp the job itself is refused first: its program could be replaced.)
root_controlled "$WORK/pipejob" && refusal='Permission denied' || refusal='which a restart would reopen by path'
out=$(on node1 "${NOBODY[@]}" "$RFORK" checkpoint --leave-running "${jpid:-0}" "$WORK/root-owned-ck" 2>&1)
echo "$out" | grep -q "^rfork: .*$refusal" || why+="a checkpoint where nobody cannot write: $out; "
[ -e "$WORK/root-owned-ck" ] && why+="it was written there anyway; "
ln -s /etc "$mine/ck.rfork-staging-$jpid"
out=$(on node1 "${NOBODY[@]}" "$RFORK" checkpoint --leave-running "${jpid:-0}" "$mine/ck" 2>&1)
echo "$out" | grep -q '^rfork: ' || why+="a planted staging link was used: $out; "
[ "$(stat -c %U /etc)" = root ] && [ ! -e /etc/images ] && [ ! -e /etc/manifest.json ] || why+="/etc was touched; "
rm -f "$mine/ck.rfork-staging-$jpid"
out=$(on node1 "${NOBODY[@]}" "$RFORK" checkpoint --leave-running "${jpid:-0}" "$mine/ck" 2>&1)
if root_controlled "$WORK/pipejob"; then
    echo "$out" | grep -q '^saved the job' || why+="nobody's own checkpoint failed: $out; "
    [ "$(stat -c %U "$mine/ck" "$mine/ck/images" "$mine/ck/manifest.json" | sort -u)" = nobody ] || why+="the checkpoint is not nobody's: $(stat -c '%n %U' "$mine/ck"/*); "
else
    # This checkout lies below a directory others can write (/tmp): the job's program could be replaced.
    echo "$out" | grep -q "^rfork: process $jpid holds $WORK/pipejob (a mapping), which a restart would reopen by path" \
        || why+="a job whose program others could replace was not refused: $out; "
    mkdir -p "$mine/ck/images"  # an unsigned stand-in for the forged-manifest check below
    printf '{"channels" : [], "controlSocketInode" : 1, "created" : "-", "files" : [], "format" : "rfork-checkpoint",\n "node" : "node1", "pid" : 2, "uid" : 65534, "version" : 1}\n' >"$mine/ck/manifest.json"
fi
wait "$jobbg"
settle
[ "$(tail -n 1 "$WORK/nb.out")" = "$expected" ] || why+="nobody's job ended with: $(tail -n 1 "$WORK/nb.out"); "
cp -r "$mine/ck" "$mine/ck-forged" && chown -R 65534:65534 "$mine/ck-forged"
sed -i 's/"uid" : 65534/"uid" : 0/' "$mine/ck-forged/manifest.json"
out=$(on node1 "$RFORK" restart "$mine/ck-forged" --node node2 2>&1)
echo "$out" | grep -q 'its signature does not match' || why+="a forged manifest was not refused: $out; "
out=$(on node1 "${NOBODY[@]}" "$RFORK" restart "$WORK/ck" --node node2 2>&1)
echo "$out" | grep -q '^rfork: .*Permission denied\|another user' || why+="nobody restarted root's checkpoint: $out; "
settle
left=$(leftovers)
[ -z "$left" ] || why+="left behind:$left; "
result "checkpoint/written and read as its owner: no foreign directory, no planted link, no forged manifest" \
    "$([ -z "$why" ] && echo 0 || echo 1)" "$why"

# A user's job that holds a file the user could replace before a restart (which CRIU does as root) is
# not saved: the restart would open whatever stands at that path then.
echo data >"$mine/held"; chown 65534:65534 "$mine/held"
( on node1 "${NOBODY[@]}" "$RFORK" run --policy local -- bash -c 'exec 3<"$0"; echo "pid $$"; sleep 3' "$mine/held" \
    2>/dev/null | cat >"$WORK/held.out" ) &
jobbg=$!
wait_pid "$WORK/held.out"
out=$(on node1 "${NOBODY[@]}" "$RFORK" checkpoint "${jpid:-0}" "$mine/ck-held" 2>&1)
wait "$jobbg"
settle
result "checkpoint/a user's job holding a file they could replace is not saved" \
    "$(echo "$out" | grep -q "^rfork: process $jpid holds $mine/held (descriptor 3), which a restart would reopen by path" && [ ! -e "$mine/ck-held" ] && echo 0 || echo 1)" \
    "$out"

# --- flow control: a fast writer and a slow reader, both ways; the daemons must not hold the bytes ---
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
home_pid=$(daemon_pid node1); target_pid=$(daemon_pid node2)
home_base=$(rss_kib "$home_pid"); target_base=$(rss_kib "$target_pid")
on node1 "$T/slow_reader" 256 >"$WORK/slow.plain" 2>/dev/null
on node1 "$RFORK" run --node node2 -- "$T/slow_reader" 256 >"$WORK/slow.rfork" 2>"$WORK/slow.err" &
job=$!
home_peak=0; target_peak=0
while kill -0 "$job" 2>/dev/null; do
    h=$(rss_kib "$home_pid"); t=$(rss_kib "$target_pid")
    [ "${h:-0}" -gt "$home_peak" ] && home_peak=$h
    [ "${t:-0}" -gt "$target_peak" ] && target_peak=$t
    sleep 0.1
done
wait "$job"; rc=$?
settle
home_growth=$(( (home_peak - home_base) / 1024 )); target_growth=$(( (target_peak - target_base) / 1024 ))
why=""
[ "$rc" = 0 ] || why+="exit $rc ($(tail -2 "$WORK/slow.err" | tr '\n' ' ')); "
cmp -s "$WORK/slow.plain" "$WORK/slow.rfork" || why+="output differs: $(diff "$WORK/slow.plain" "$WORK/slow.rfork" | head -4 | tr '\n' ' '); "
grep -q 'runs on node2' "$WORK/slow.err" || why+="the child did not run on node2; "
# 256 MiB pass each way; a window is 4 MiB a channel. Without flow control the daemons held it all.
[ "$home_growth" -lt 64 ] || why+="home rforkd grew by $home_growth MiB; "
[ "$target_growth" -lt 64 ] || why+="target rforkd grew by $target_growth MiB; "
left=$(leftovers)
[ -z "$left" ] || why+="left behind:$left; "
result "flow control/256 MiB to a slow reader both ways (rforkd grew $home_growth / $target_growth MiB)" "$([ -z "$why" ] && echo 0 || echo 1)" "$why"

# --- a pipe the child held both ends of (a lazy channel) is read ahead once the stand-in holds the only
# read end (the parent closed its own); while the parent still holds one, only the child's reads are made ---
ahead() { grep -c 'is read ahead: its stand-in holds' /run/rfork-cluster/node1.log 2>/dev/null || true; }
why=""
before=$(ahead)
out=$(on node1 "$RFORK" run --node node2 -- "$BIN/../libexec/rfork/rfork-forkbench" pipe 64 2>"$WORK/ahead.err")
rc=$?
[ "$rc" = 0 ] || why+="forkbench pipe exited $rc ($(tail -2 "$WORK/ahead.err" | tr '\n' ' ')); "
[[ "$out" == *throughput_mib_s* ]] || why+="no result line: $out; "
[ "$(ahead)" -gt "$before" ] || why+="node1 logged no channel read ahead; "
before=$(ahead)
on node1 "$T/unclosed_ends" >"$WORK/unclosed.plain" 2>/dev/null
on node1 "$RFORK" run --node node2 -- "$T/unclosed_ends" >"$WORK/unclosed.rfork" 2>"$WORK/unclosed.err" ||
    why+="unclosed_ends exited $? under rfork run; "
cmp -s "$WORK/unclosed.plain" "$WORK/unclosed.rfork" ||
    why+="unclosed_ends differs: $(diff "$WORK/unclosed.plain" "$WORK/unclosed.rfork" | head -4 | tr '\n' ' '); "
grep -q 'runs on node2' "$WORK/unclosed.err" || why+="unclosed_ends ran no child on node2; "
[ "$(ahead)" = "$before" ] || why+="a channel whose pipe the parent still reads was read ahead; "
result "pipes/read ahead once the stand-in holds the only read end, not while the parent holds one" "$([ -z "$why" ] && echo 0 || echo 1)" "$why"

# --- a read end the parent keeps while its remote child holds it too: the stand-in reads only as the
# child reads, or waits to read in poll, select or epoll (blocking or not), so the parent's own reads get
# every byte of its input (a child that never reads took it all before: a Pool's workers close stdin) ---
why=""
for mode in stdin-fork stdin-pool poll select epoll nonblock-select nonblock-epoll; do
    input=(); case $mode in stdin-*) input=(seq 1 200000) ;; *) input=(true) ;; esac
    plain=$(on node1 sh -c '"$@" | python3 '"$P"'/shared_input.py '"$mode" _ "${input[@]}" 2>/dev/null)
    out=$(on node1 sh -c '"$@" | timeout 60 '"$RFORK"' run --node node2 -- python3 '"$P"'/shared_input.py '"$mode"         _ "${input[@]}" 2>"$WORK/shin.err"); rc=$?
    [ "$rc" = 0 ] && [ "$out" = "$plain" ] || why+="$mode: exit $rc, '$(echo "$out" | tr '\n' '|')' where plain gave '$(echo "$plain" | tr '\n' '|')' $(tail -2 "$WORK/shin.err" | tr '\n' ' '); "
    grep -q 'runs on node2' "$WORK/shin.err" || why+="$mode: no child ran on node2; "
done
settle
left=$(leftovers)
[ -z "$left" ] || why+="left behind:$left; "
result "pipes/a parent and its remote child holding one read end: the parent reads all its input, the child all it waits for (poll, select, epoll)" \
    "$([ -z "$why" ] && echo 0 || echo 1)" "$why"

# --- what a remote child costs its home node: its stand-in's own memory (PSS), for 4 sleeping children.
# librfork is preloaded into the stand-in as into every process under rfork run: 1 MiB of zeroed
# thread-local storage in it once made every process and thread 1 MiB larger, and every fork slower ---
why=""
on node1 bash -c 'sleep 6 | exec "$0" run --node node2 -- "$1" children 4' "$RFORK" "$BIN/../libexec/rfork/rfork-forkbench" \
    >"$WORK/children.txt" 2>"$WORK/children.err" &
job=$!
for _ in $(seq 100); do [ "$(wc -l <"$WORK/children.txt")" -ge 4 ] && break; sleep 0.1; done
worst=0
for p in $(cat "$WORK/children.txt"); do
    kib=$(awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup" 2>/dev/null)
    grep -q rfork-standin "/proc/$p/cmdline" 2>/dev/null || why+="process $p is not a stand-in; "
    [ "${kib:-0}" -gt "$worst" ] && worst=$kib
done
[ "$(wc -l <"$WORK/children.txt")" = 4 ] || why+="the children did not start ($(head -2 "$WORK/children.err" | tr '\n' ' ')); "
[ "$worst" -gt 0 ] && [ "$worst" -le 512 ] || why+="a stand-in's PSS is $worst KiB (at most 512 expected); "
wait "$job" || why+="the job exited $?; "   # its stdin ends after 6 s: it ends its children
settle
result "memory/a remote child's stand-in costs its home $worst KiB (PSS), not a frame of thread-local storage" "$([ -z "$why" ] && echo 0 || echo 1)" "$why"

# --- post-copy: a child with 96 MiB runs before its memory arrives, and sees all of it ---
conformance big_memory
last=$(on node1 "$RFORK" ps --recent --json | python3 -c 'import json,sys; r=json.load(sys.stdin); print(r[-1].get("postCopy", False) if r else "none")')
result "postcopy/a big child moves post-copy" "$([ "$last" = True ] && echo 0 || echo 1)" "the last remote fork was not post-copy ($last)"

# A big child that execs at once (a pre-fork server, make): it needs none of its pages; nothing waits.
cat >"$WORK/bigexec.c" <<'C'
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>
int main(void) {
    size_t n = 96 << 20;
    char *m = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    memset(m, 1, n);
    pid_t p = fork();
    if (p == 0) {
        char h[64]; gethostname(h, 64); fprintf(stderr, "child runs on %s\n", h);
        execl("/bin/sh", "sh", "-c", "exit 5", (char *)0);
        _exit(99);
    }
    int st; waitpid(p, &st, 0); printf("child exited %d\n", WEXITSTATUS(st)); return 0;
}
C
cc -o "$WORK/bigexec" "$WORK/bigexec.c"
out=$(on node1 "$RFORK" run --node node2 --post-copy always -- "$WORK/bigexec" 2>&1)
settle
why=""
echo "$out" | grep -q 'child runs on node2' || why+="did not run on node2: $out; "
echo "$out" | grep -q 'child exited 5' || why+="wrong status: $out; "
left=$(leftovers)
[ -z "$left" ] || why+="left behind:$left; "
result "postcopy/a big child that execs at once" "$([ -z "$why" ] && echo 0 || echo 1)" "$why"

# The memory source dies mid-transfer (the home's page server is killed while the link crawls at
# 20 Mbit/s): the child is ended cleanly, its parent sees SIGKILL, nothing hangs or stays behind.
slow_postcopy() { # OUT-PREFIX: node1 -> node2 at 20 Mbit/s, 96 MiB post-copy; returns once it runs there
    on node1 tc qdisc replace dev eth0 root tbf rate 20mbit burst 32kb latency 400ms
    local restored; restored=$(grep -c 'restored child' /run/rfork-cluster/node2.log)
    placed=$(grep -c 'runs on node2' /run/rfork-cluster/node1.log)
    on node1 "$RFORK" run --node node2 -- "$T/big_memory" 96 early >"$1.out" 2>"$1.err" &
    job=$!
    # The child's output reaches its parent only once every page has arrived; the target's log says sooner.
    for _ in $(seq 150); do [ "$(grep -c 'restored child' /run/rfork-cluster/node2.log)" -gt "$restored" ] && break; sleep 0.1; done
    sleep 1
}
# Whether the child of a slow_postcopy ran on node2: it says so, or (its first pages may still be on the
# way over the crawling link: each fault waits behind a background chunk) the home daemon reported it
# restored and running there. Adds to $why.
ran_remotely() { # OUT-PREFIX
    grep -q 'child runs on node2' "$1.err" ||
        [ "$(grep -c 'runs on node2' /run/rfork-cluster/node1.log)" -gt "$placed" ] ||
        why+="the child never ran remotely ($(tr '\n' ' ' <"$1.err")); "
}
# Breaks a slow post-copy transfer by killing one process (SIGKILL: no failure report); the child must be
# ended, its parent told (SIGKILL), no missing page read as zeros, nothing left. Sets $why.
break_postcopy() { # OUT-PREFIX PGREP-PATTERN
    slow_postcopy "$1"
    local victim; victim=$(pgrep -f "$2" | head -n 1)
    [ -n "$victim" ] && kill -KILL "$victim"
    wait "$job"
    on node1 tc qdisc del dev eth0 root
    settle
    why=""
    ran_remotely "$1"
    [ -n "$victim" ] || why+="no process matching '$2' to kill; "
    grep -q 'child: killed by signal 9' "$1.out" || why+="parent saw: $(tr '\n' ' ' <"$1.out"); "
    grep -Eq 'own writes: (yes|no)$' "$1.out" && why+="the child ran on without its pages: $(grep 'own writes' "$1.out"); "
    local left; left=$(leftovers)
    [ -z "$left" ] || why+="left behind:$left; "
}
break_postcopy "$WORK/pc" 'criu dump .*--lazy-pages'
result "postcopy/the memory source dies mid-transfer: child ended, parent told" "$([ -z "$why" ] && echo 0 || echo 1)" "$why"

# The target's lazy-pages daemon crashes: the child is ended at once and its home told.
break_postcopy "$WORK/lp" 'criu lazy-pages'
result "postcopy/the target's lazy-pages crashes mid-transfer: child ended, parent told" "$([ -z "$why" ] && echo 0 || echo 1)" "$why"

# --- a terminal: the parent's stdio is a pty (script(1)); the remote child writes to it ---
cat >"$WORK/tty.c" <<'C'
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>
int main(void) {
    pid_t p = fork();
    if (p == 0) {
        char h[64], b[16]; gethostname(h, 64);
        ssize_t n = read(0, b, sizeof b);
        printf("child on %s: stdout is a terminal: %s, reading the terminal gives %zd\n", h, isatty(1) ? "yes" : "no", n);
        _exit(3);
    }
    int st; waitpid(p, &st, 0); printf("child exited %d\n", WEXITSTATUS(st)); return 0;
}
C
cc -o "$WORK/tty" "$WORK/tty.c"
timeout -s KILL 30 script -qec "$RFORK cluster exec node1 -- $RFORK run --node node2 -- $WORK/tty" /dev/null </dev/null | tr -d '\r' >"$WORK/tty.out"
settle
expected=$(printf 'child on node2: stdout is a terminal: yes, reading the terminal gives 0\nchild exited 3')
result "terminal/remote child writes to the parent's terminal" "$([ "$(cat "$WORK/tty.out")" = "$expected" ] && echo 0 || echo 1)" \
    "got: $(tr '\n' '|' <"$WORK/tty.out")"

# --- spread: children land on both other nodes ---
on node1 "$RFORK" run --policy spread -- "$T/many" >/dev/null 2>"$WORK/spread.err"
settle
n2=$(grep -c 'runs on node2' "$WORK/spread.err"); n3=$(grep -c 'runs on node3' "$WORK/spread.err")
result "placement/spread uses every other node" "$([ "$n2" -ge 2 ] && [ "$n3" -ge 2 ] && echo 0 || echo 1)" "node2=$n2 node3=$n3"

on node1 "$RFORK" run --node node3 -- "$T/many" >/dev/null 2>"$WORK/node3.err"
settle
n3=$(grep -c 'runs on node3' "$WORK/node3.err")
result "placement/--node puts every child there" "$([ "$n3" = 6 ] && echo 0 || echo 1)" "node3=$n3 of 6"

on node1 "$RFORK" run --policy local -- "$T/many" >/dev/null 2>"$WORK/local.err"
n1=$(grep -c 'runs on node1' "$WORK/local.err")
result "placement/--policy local keeps children home" "$([ "$n1" = 6 ] && ! grep -q rfork: "$WORK/local.err" && echo 0 || echo 1)" "node1=$n1"

# --- shell: subshells and pipelines (bash forks for both) ---
script='x=$( (hostname; echo sub) | tr a-z A-Z ); echo "$x" | sort; (exit 3); echo "status $?"; echo a b c | (read p q r; echo "$r$q$p")'
on node1 bash -c "$script" >"$WORK/sh.plain" 2>&1
on node1 "$RFORK" run -- bash -c "$script" >"$WORK/sh.rfork" 2>"$WORK/sh.err"
settle
sed -i 's/NODE[0-9]/NODEX/' "$WORK/sh.plain" "$WORK/sh.rfork"
why=""
cmp -s "$WORK/sh.plain" "$WORK/sh.rfork" || why="output differs: $(diff "$WORK/sh.plain" "$WORK/sh.rfork" | tr '\n' ' ')"
grep -q 'runs locally' "$WORK/sh.err" && why+=" fallback: $(head -2 "$WORK/sh.err")"
result "shell/subshells and pipelines" "$([ -z "$why" ] && echo 0 || echo 1)" "$why"

# --- parallel make: compile jobs on other nodes, same program ---
cp -r "$ROOT/tests/fixtures/cproject" "$WORK/plain" && cp -r "$ROOT/tests/fixtures/cproject" "$WORK/remote"
on node1 make -s -C "$WORK/plain" >/dev/null 2>&1
on node1 "$RFORK" run --policy spread -- make -s -j4 -C "$WORK/remote" >"$WORK/make.out" 2>"$WORK/make.err"
make_rc=$?
settle
remote_jobs=$(cat "$WORK"/remote/*.o.node 2>/dev/null | grep -c 'node[23]')
why=""
[ "$make_rc" = 0 ] || why+="make exit $make_rc: $(tail -3 "$WORK/make.err" | tr '\n' ' '); "
[ "$remote_jobs" = 7 ] || why+="only $remote_jobs of 7 compile jobs ran on other nodes; "
grep -q . "$WORK/make.err" && why+="make said: $(head -3 "$WORK/make.err" | tr '\n' ' '); "
[ "$("$WORK/plain/app")" = "$("$WORK/remote/app" 2>&1)" ] || why+="programs differ; "
cmp -s "$WORK/plain/app" "$WORK/remote/app" || why+="binaries differ; "
result "make/-j4 compiles on other nodes, same program" "$([ -z "$why" ] && echo 0 || echo 1)" "$why"

# --- fallbacks: the child runs locally and one line says why ---
fallback() { # name, expected-reason-regexp, rfork-run-args...
    local name=$1 reason=$2; shift 2
    on node1 "$RFORK" run "$@" -- "$T/exit_status" >"$WORK/fb.out" 2>"$WORK/fb.err"
    settle
    local why=""
    cmp -s "$WORK/exit_status.plain" "$WORK/fb.out" || why+="output differs: $(cat "$WORK/fb.out" | tr '\n' ' '); "
    grep -q 'runs on node1' "$WORK/fb.err" || why+="child did not run on node1; "
    [ "$(grep -c '^rfork: ' "$WORK/fb.err")" = 1 ] || why+="expected one rfork: line, got: $(grep '^rfork:' "$WORK/fb.err" | tr '\n' ' '); "
    grep -Eq "^rfork: .*($reason)" "$WORK/fb.err" || why+="reason not given: $(cat "$WORK/fb.err" | tr '\n' ' '); "
    result "fallback/$name" "$([ -z "$why" ] && echo 0 || echo 1)" "$why"
}
fallback "unknown node" "unknown node 'node9'" --node node9
fallback "no daemon" "cannot reach rforkd" --socket /run/rfork/nowhere.sock

# The child holds a socket connected outside its process tree: it cannot move (sockets come later).
cat >"$WORK/ext.c" <<'C'
#include <stdio.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>
int main(void) {
    int l = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX, .sun_path = "\0rfork-it-ext"};
    if (bind(l, (struct sockaddr *)&a, sizeof a) || listen(l, 1)) return 1;
    int c = socket(AF_UNIX, SOCK_STREAM, 0);
    if (connect(c, (struct sockaddr *)&a, sizeof a)) return 1;
    int s = accept(l, 0, 0);
    pid_t p = fork();
    if (p == 0) { char h[64]; gethostname(h, 64); fprintf(stderr, "child runs on %s\n", h); (void)write(c, "x", 1); _exit(4); }
    char x; (void)read(s, &x, 1); int st; waitpid(p, &st, 0); printf("child sent %c, exit %d\n", x, WEXITSTATUS(st)); return 0;
}
C
cc -o "$WORK/ext" "$WORK/ext.c"
on node1 "$RFORK" run -- "$WORK/ext" >"$WORK/ext.out" 2>"$WORK/ext.err"
settle
why=""
grep -q 'child sent x, exit 4' "$WORK/ext.out" || why+="wrong result: $(cat "$WORK/ext.out"); "
grep -q '^rfork: the child holds a socket (descriptor [0-9]*, socket:\[[0-9]*\]), which rfork cannot move yet; child [0-9]* runs locally$' "$WORK/ext.err" \
    || why+="no line saying why: $(cat "$WORK/ext.err" | tr '\n' ' '); "
grep -q 'runs on node1' "$WORK/ext.err" || why+="child did not run locally; "
result "fallback/a child holding a socket stays local" "$([ -z "$why" ] && echo 0 || echo 1)" "$why"

# CRIU itself refuses: the child holds an io_uring, which CRIU cannot checkpoint.
cat >"$WORK/uring.c" <<'C'
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
int main(void) {
    unsigned char params[120];
    memset(params, 0, sizeof params);
    if (syscall(425 /* io_uring_setup */, 4, params) < 0) { perror("io_uring_setup"); return 2; }
    pid_t p = fork();
    if (p == 0) { char h[64]; gethostname(h, 64); fprintf(stderr, "child runs on %s\n", h); _exit(6); }
    int st; waitpid(p, &st, 0); printf("child exit %d\n", WEXITSTATUS(st)); return 0;
}
C
cc -o "$WORK/uring" "$WORK/uring.c"
on node1 "$RFORK" run -- "$WORK/uring" >"$WORK/uring.out" 2>"$WORK/uring.err"
settle
why=""
grep -q 'child exit 6' "$WORK/uring.out" || why+="wrong result: $(cat "$WORK/uring.out" "$WORK/uring.err" | tr '\n' ' '); "
grep -Eq '^rfork: criu dump failed: .+; child [0-9]+ runs locally$' "$WORK/uring.err" || why+="no line saying why: $(tr '\n' ' ' <"$WORK/uring.err"); "
grep -q 'runs on node1' "$WORK/uring.err" || why+="child did not run locally; "
result "fallback/CRIU refuses the child" "$([ -z "$why" ] && echo 0 || echo 1)" "$why"

cat >"$WORK/sleeper_short.c" <<'C'
#include <sys/wait.h>
#include <unistd.h>
int main(void) { pid_t p = fork(); if (p == 0) { sleep(2); _exit(0); } int st; waitpid(p, &st, 0); return 0; }
C
cc -o "$WORK/sleeper_short" "$WORK/sleeper_short.c"

# --- security: a peer without the cluster's credentials is refused ---
"$RFORK" keys --dir "$WORK/otherkeys" intruder >/dev/null
before=$(grep -c 'refused peer' /run/rfork-cluster/node1.log 2>/dev/null || true)
out=$(on node2 timeout 5 openssl s_client -connect 10.250.0.1:7420 -tls1_3 -cert "$WORK/otherkeys/intruder.pem" \
      -key "$WORK/otherkeys/intruder.key" -CAfile "$WORK/otherkeys/ca.pem" </dev/null 2>&1)
sleep 0.3
after=$(grep -c 'refused peer' /run/rfork-cluster/node1.log 2>/dev/null || true)
why=""
[ "$after" -gt "$before" ] || why+="node1 logged no 'refused peer' line; "
echo "$out" | grep -q 'Verify return code: 0' && why+="intruder verified node1's certificate against its own CA; "
result "security/peer with foreign certificate is refused" "$([ -z "$why" ] && echo 0 || echo 1)" "$why"

before=$(grep -c 'refused peer' /run/rfork-cluster/node1.log 2>/dev/null || true)
on node2 timeout 5 openssl s_client -connect 10.250.0.1:7420 -tls1_3 </dev/null >/dev/null 2>&1
sleep 0.3
after=$(grep -c 'refused peer' /run/rfork-cluster/node1.log 2>/dev/null || true)
result "security/peer without a certificate is refused" "$([ "$after" -gt "$before" ] && echo 0 || echo 1)" "no log line"

# --- security: a local process cannot ask to move another process ---
answer=$(on node1 python3 -c '
import socket, struct, sys
s = socket.socket(socket.AF_UNIX); s.connect("/run/rfork/rforkd.sock")
body = b"\x01" + b"pid 1\nuid 0\nsock 1\npolicy spread\nnode -\nt0 0\n"
s.sendall(struct.pack("<I", len(body)) + body)
n = struct.unpack("<I", s.recv(4))[0]; print(s.recv(n)[1:].decode())')
result "security/a request for another PID is refused" \
    "$([ "$answer" = "Lplacement refused: PID 1 is not the caller" ] && echo 0 || echo 1)" "answer: $answer"

# --- another user: the child moves with that user's credentials; ps shows a user only their own ---
cat >"$WORK/whoami.c" <<'C'
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>
int main(void) {
    pid_t p = fork();
    if (p == 0) { char h[64]; gethostname(h, 64); printf("child on %s as uid %d\n", h, (int)geteuid()); fflush(stdout); _exit(5); }
    int st; waitpid(p, &st, 0); printf("parent uid %d, child exit %d\n", (int)getuid(), WEXITSTATUS(st)); return 0;
}
C
cc -o "$WORK/whoami" "$WORK/whoami.c" && chmod 755 "$WORK" "$WORK/whoami"
on node1 setpriv --reuid=65534 --regid=65534 --clear-groups "$RFORK" run --node node2 -- "$WORK/whoami" >"$WORK/user.out" 2>&1
settle
result "security/a user's child runs remotely as that user" \
    "$([ "$(cat "$WORK/user.out")" = "$(printf 'child on node2 as uid 65534\nparent uid 65534, child exit 5')" ] && echo 0 || echo 1)" \
    "got: $(tr '\n' '|' <"$WORK/user.out")"
on node1 "$RFORK" run --node node2 -- "$WORK/sleeper_short" >/dev/null 2>&1 &
bgjob=$!
for _ in $(seq 100); do on node1 "$RFORK" ps --json 2>/dev/null | grep -q '"home"' && break; sleep 0.1; done
mine=$(on node1 "$RFORK" ps --json)
theirs=$(on node1 setpriv --reuid=65534 --regid=65534 --clear-groups "$RFORK" ps --json)
wait "$bgjob"
settle
result "security/ps shows a user only their own processes" \
    "$(echo "$mine" | grep -q '"uid":0' && [ "$theirs" = "[]" ] && echo 0 || echo 1)" "root saw: $mine; nobody saw: $theirs"

# --- a dead node: a fork and a migration to it are under way when it dies; both stay home ---
# (First, for the last test of this section, a checkpoint of a job whose child runs on node3.)
cut_job "$WORK/job15" 0.7 end "$WORK/ck15" --node node3 -- "$WORK/pipejob"
ck15=$out ck15rc=$crc
settle
start_talker "$WORK/talkd" 0
node3pid=$(daemon_pid node3)
kill -STOP "$node3pid"
on node1 "$RFORK" run --node node3 -- "$T/exit_status" >"$WORK/dead.out" 2>"$WORK/dead.err" &
forkjob=$!
on node1 "$RFORK" migrate "${tpid:-0}" node3 >"$WORK/migd.out" 2>&1 &
migjob=$!
sleep 1; kill -KILL "$node3pid"
wait "$forkjob"
wait "$migjob"; mrc=$?
finish_talker
why=""
[ "$mrc" = 1 ] || why+="migrate exit $mrc; "
grep -Eq '^rfork: (lost the link to node3 during the move|node node3 refused it).*; it keeps running here$' "$WORK/migd.out" \
    || why+="migrate said: $(tr '\n' ' ' <"$WORK/migd.out"); "
[ "$(cat "$WORK/talkd.rc")" = 7 ] || why+="the process ended with $(cat "$WORK/talkd.rc"); "
grep -q '^echo after node1$' "$WORK/talkd.out" || why+="it did not go on at home; "
grep -q ' node3$' "$WORK/talkd.out" && why+="it ran on node3; "
gap=$(awk '/^tick /{ if ($2 != n) { print "tick " n " expected, got " $2; exit } n++ }' "$WORK/talkd.out")
[ -z "$gap" ] || why+="output lost, repeated or reordered: $gap; "
result "migrate/the target dies during the move: the process goes on at home, the command says why" \
    "$([ -z "$why" ] && echo 0 || echo 1)" "$why"
why=""
cmp -s "$WORK/exit_status.plain" "$WORK/dead.out" || why+="output differs: $(cat "$WORK/dead.out" | tr '\n' ' '); "
grep -q 'runs on node1' "$WORK/dead.err" || why+="child did not run locally: $(cat "$WORK/dead.err" | tr '\n' ' '); "
result "fallback/target node dies during the fork" "$([ -z "$why" ] && echo 0 || echo 1)" "$why"
fallback "dead node" "not reachable" --node node3
# The job saved while its child ran on node3, restarted now that node3 is dead: the child is restored on
# a node that is up, and the job ends with the plain sum.
why=""
[ "$ck15rc" = 0 ] || why+="checkpoint said (exit $ck15rc): $ck15; "
restarted_to "$WORK/ck15" node1 "$(tail -n 1 "$WORK/job.plain")" "restart on node1"
result "checkpoint/a job saved with its child on node3 restarts after node3 died, its child on a node that is up" \
    "$([ -z "$why" ] && echo 0 || echo 1)" "$why"

# --- rforkd on SIGTERM: what it hosts is ended and reported; the parent sees SIGKILL ---
cat >"$WORK/sleeper.c" <<'C'
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>
int main(void) {
    pid_t p = fork();
    if (p == 0) { char h[64]; gethostname(h, 64); fprintf(stderr, "child runs on %s\n", h); sleep(60); _exit(0); }
    int st; waitpid(p, &st, 0);
    if (WIFSIGNALED(st)) printf("child killed by signal %d\n", WTERMSIG(st)); else printf("child exited %d\n", WEXITSTATUS(st));
    return 0;
}
C
cc -o "$WORK/sleeper" "$WORK/sleeper.c"
node2pid=$(daemon_pid node2)
on node1 "$RFORK" run --node node2 -- "$WORK/sleeper" >"$WORK/term.out" 2>"$WORK/term.err" &
job=$!
for _ in $(seq 100); do on node2 "$RFORK" ps --json 2>/dev/null | grep -q '"role":"hosted","seconds":[0-9.]*,"state":"running"' && break; sleep 0.1; done
kill -TERM "$node2pid"
wait "$job"
settle
why=""
grep -q 'child killed by signal 9' "$WORK/term.out" || why+="parent saw: $(cat "$WORK/term.out" "$WORK/term.err" | tr '\n' ' '); "
grep -q 'shutdown: remote child .* is ended' /run/rfork-cluster/node2.log || why+="node2 did not report the child it ended; "
for _ in $(seq 50); do kill -0 "$node2pid" 2>/dev/null || break; sleep 0.1; done
kill -0 "$node2pid" 2>/dev/null && why+="rforkd on node2 did not exit; "
[ -z "$(pgrep -f rfork-nsinit)" ] || why+="an rfork-nsinit is left; "
result "shutdown/SIGTERM ends hosted children and says so" "$([ -z "$why" ] && echo 0 || echo 1)" "$why"

left=$(leftovers)
result "cleanup/no stand-in, init or image left" "$([ -z "$left" ] && echo 0 || echo 1)" "$left"

"$RFORK" cluster down >/dev/null 2>&1
leftns=$(ls /run/netns 2>/dev/null | grep -E '^rfork-' || true)
result "cleanup/cluster down removes namespaces and state" \
    "$([ -z "$leftns" ] && [ ! -e /run/rfork-cluster ] && echo 0 || echo 1)" "left: $leftns $(ls /run/rfork-cluster 2>/dev/null)"

# --- post-copy, on a fresh 2-node cluster: the home node dies mid-transfer (its rforkd is killed): the target ends the child at
# once rather than leave it waiting for pages that cannot come; its lazy-pages goes after it ---
"$RFORK" cluster up --nodes 2 --share "$ROOT" >"$WORK/up2.log" 2>&1 || echo "cluster up failed: $(tail -n 3 "$WORK/up2.log")"
node1pid=$(daemon_pid node1)
slow_postcopy "$WORK/hd"
kill -KILL "$node1pid"
wait "$job"
settle
why=""
ran_remotely "$WORK/hd"
grep -q 'own writes: yes' "$WORK/hd.out" && why+="the child finished without its memory source; "
grep -q 'child: killed by signal 9' "$WORK/hd.out" || why+="parent saw: $(tr '\n' ' ' <"$WORK/hd.out"); "
[ -z "$(pgrep -f 'big_memory|criu lazy-pages')" ] || why+="left running: $(pgrep -fa 'big_memory|criu lazy-pages' | tr '\n' ' '); "
grep -q 'lost home node node1' /run/rfork-cluster/node2.log || why+="node2 did not say it lost node1; "
"$RFORK" cluster down >/dev/null 2>&1
leftns=$(ls /run/netns 2>/dev/null | grep -E '^rfork-' || true)
[ -z "$leftns" ] || why+="namespaces left: $leftns; "
result "postcopy/the home node dies mid-transfer: child ended, nothing hangs" "$([ -z "$why" ] && echo 0 || echo 1)" "$why"

# --- a container: the session leader lives in an ancestor PID namespace (the child sees its session
# as 0, as under `unshare --pid` or many CI runners); the child still moves ---
cat >"$WORK/pidns.sh" <<SH
set -u
awk '{ if (\$6 != 0) print "session leader is visible: sid", \$6 }' /proc/self/stat
"$RFORK" cluster up --nodes 2 --share "$ROOT" >"$WORK/pidns-up.log" 2>&1 || { echo "cluster up failed: \$(tail -n 3 "$WORK/pidns-up.log")"; exit 1; }
timeout -s KILL 60 "$RFORK" cluster exec node1 -- "$RFORK" run --node node2 -- "$T/exit_status"
"$RFORK" cluster down
SH
timeout -s KILL 120 unshare --pid --fork --kill-child --mount-proc bash "$WORK/pidns.sh" >"$WORK/pidns.out" 2>&1
why=""
grep -q 'child runs on node2' "$WORK/pidns.out" || why+="the child did not run on node2; "
grep -q 'child: exited 42' "$WORK/pidns.out" || why+="wrong exit status; "
grep -qE 'rfork:|session leader is visible|cluster up failed' "$WORK/pidns.out" && why+="$(grep -E 'rfork:|visible|failed' "$WORK/pidns.out" | head -n 2 | tr '\n' ' ')"
leftns=$(ls /run/netns 2>/dev/null | grep -E '^rfork-' || true)
[ -z "$leftns" ] && [ ! -e /run/rfork-cluster ] || why+="left: $leftns $(ls /run/rfork-cluster 2>/dev/null); "
result "container/session leader outside the PID namespace" "$([ -z "$why" ] && echo 0 || echo 1)" "$why"

# --- the migration protocol at its failure points, on a fresh 3-node cluster: before the copy runs on the
# target, the process goes on at home (frozen meanwhile) and the command says why; after, the copy is the
# process, and losing it (or its home) is reported to its parent as SIGKILL, with nothing left running ---
cluster_up 3
ticks_in_order() { awk '/^tick /{ if ($2 != n) { print "tick " n " expected, got " $2; exit } n++ }' "$1"; }
# A move of a 384 MiB process (no post-copy) to node2 is caught while node2's CRIU restores it: that
# CRIU, or the namespace's init it runs in, is killed.
fail_restore() { # name, what to kill: criu|nsinit, the reason expected (a regexp)
    start_talker "$WORK/fr" 0 parent 384
    echo hello >&7
    on node1 "$RFORK" migrate "${tpid:-0}" node2 >"$WORK/fr.mig" 2>&1 &
    local mig=$! restorer="" mrc
    # CRIU itself: the one whose parent is rfork-nsinit. CRIU's own children carry its command line until
    # they become the restored tasks, and the oldest by start time is not always CRIU (same clock tick,
    # wrapped PIDs): killing one of those made CRIU fail instead of being killed.
    for _ in $(seq 1000); do
        for p in $(pgrep -f '^[^ ]*criu restore'); do
            [ "$(ps -o comm= -p "$(ps -o ppid= -p "$p" | tr -d ' ')" 2>/dev/null)" = rfork-nsinit ] && { restorer=$p; break; }
        done
        [ -n "$restorer" ] && break; sleep 0.01
    done
    if [ "$2" = criu ]; then
        [ -n "$restorer" ] && [ "$restorer" -gt 1 ] && kill -STOP "$restorer" && kill -KILL "$restorer"
    else
        for p in $(pgrep -f 'rfork-nsinit'); do [ "$p" -gt 1 ] && kill -KILL "$p"; done
    fi
    wait "$mig"; mrc=$?
    finish_talker
    why=""
    [ -n "$restorer" ] || why+="no criu restore was seen; "
    [ "$mrc" = 1 ] || why+="migrate exit $mrc: $(tr '\n' ' ' <"$WORK/fr.mig"); "
    grep -Eq "^rfork: ($3).*; it keeps running here$" "$WORK/fr.mig" || why+="migrate said: $(tr '\n' ' ' <"$WORK/fr.mig"); "
    [ "$(cat "$WORK/fr.rc")" = 7 ] && grep -q '^child exited 7$' "$WORK/fr.out" || why+="the process ended with $(cat "$WORK/fr.rc"); "
    grep -q '^echo after node1$' "$WORK/fr.out" || why+="it did not go on at home; "
    grep -q ' node2$' "$WORK/fr.out" && why+="it ran on node2; "
    gap=$(ticks_in_order "$WORK/fr.out"); [ -z "$gap" ] || why+="output lost, repeated or reordered: $gap; "
    left=$(leftovers); [ -z "$left" ] || why+="left behind:$left; "
    result "migrate/failure: $1 ($(head -c 120 "$WORK/fr.mig" | tr -d '\n'))" "$([ -z "$why" ] && echo 0 || echo 1)" "$why"
}
fail_restore "the target's CRIU restore is killed: the process goes on at home" criu \
    "restore on node2 failed: criu restore was killed by signal 9"
fail_restore "the target's namespace init is killed during the restore: the process goes on at home" nsinit \
    "restore on node2 failed: rfork-nsinit on node2 ended before the restore"

# After the hand-over: the node running the process dies (its rforkd is killed), then, on a fresh
# cluster, the home node's rforkd dies. Either way the parent sees SIGKILL and no copy survives.
fail_after() { # name, node whose rforkd dies, the nodes it is moved to first (in order)
    start_talker "$WORK/fa" 0 parent
    local victim t0 t1 n
    : >"$WORK/fa.mig"
    for n in "${@:3}"; do on node1 "$RFORK" migrate "${tpid:-0}" "$n" >>"$WORK/fa.mig" 2>&1; done
    victim=$(daemon_pid "$2")
    t0=$(date +%s%N)
    [ -n "$victim" ] && [ "$victim" -gt 1 ] && kill -KILL "$victim"
    wait "$talkjob"; t1=$(date +%s%N)
    exec 7>&-
    settle
    why=""
    [ "$(grep -c "^process $tpid runs on" "$WORK/fa.mig")" = $(($# - 2)) ] || why+="the moves said: $(tr '\n' ' ' <"$WORK/fa.mig"); "
    grep -q '^child exited 137$' "$WORK/fa.out" || why+="the parent saw: $(grep '^child' "$WORK/fa.out" || echo nothing); "
    [ -z "$(pgrep -f "$WORK/talker")" ] || why+="a copy still runs: $(pgrep -fa "$WORK/talker" | tr '\n' ' '); "
    [ -z "$(pgrep -f 'rfork-(standin|nsinit)')" ] || why+="left: $(pgrep -fa 'rfork-(standin|nsinit)' | tr '\n' ' '); "
    result "migrate/failure: $1 (parent told in $(((t1 - t0) / 1000000)) ms)" "$([ -z "$why" ] && echo 0 || echo 1)" "$why"
}
fail_after "the node running a moved process dies: its parent sees SIGKILL at once" node2 node2
cluster_up 3
fail_after "a node on a moved-again process's route dies (moved to node2, then node3; node2 dies): SIGKILL, no copy left" \
    node2 node2 node3
cluster_up 3
fail_after "the home node's rforkd dies after the hand-over: the moved copy is ended, the parent sees SIGKILL" node1 node2
# Before the hand-over, the home's rforkd dies while it sends a 384 MiB process to node2: the process's
# call to rforkd ends, so it goes on at home, and node2 keeps no copy; the command says it lost rforkd.
cluster_up 3
start_talker "$WORK/fh" 0 parent 384
echo hello >&7
on node1 "$RFORK" migrate "${tpid:-0}" node2 >"$WORK/fh.mig" 2>&1 &
fhmig=$!
node2pid=$(daemon_pid node2)
for _ in $(seq 1000); do
    [ -n "$(ls "/proc/$node2pid/root/run/rfork/images" 2>/dev/null)" ] && break; sleep 0.01
done
arrived=$(ls "/proc/$node2pid/root/run/rfork/images" 2>/dev/null)
node1pid=$(daemon_pid node1)
[ -n "$node1pid" ] && [ "$node1pid" -gt 1 ] && kill -KILL "$node1pid"
wait "$fhmig"; mrc=$?
finish_talker
why=""
[ -n "$arrived" ] || why+="the images never reached node2; "
[ "$mrc" = 1 ] && grep -q 'rforkd closed the connection without answering' "$WORK/fh.mig" || why+="migrate (exit $mrc) said: $(tr '\n' ' ' <"$WORK/fh.mig"); "
[ "$(cat "$WORK/fh.rc")" = 7 ] && grep -q '^child exited 7$' "$WORK/fh.out" || why+="the process ended with $(cat "$WORK/fh.rc"); "
grep -q '^echo after node1$' "$WORK/fh.out" || why+="it did not go on at home; "
grep -q ' node2$' "$WORK/fh.out" && why+="it ran on node2; "
gap=$(ticks_in_order "$WORK/fh.out"); [ -z "$gap" ] || why+="output lost, repeated or reordered: $gap; "
for _ in $(seq 50); do [ -z "$(ls "/proc/$node2pid/root/run/rfork/images" 2>/dev/null)" ] && break; sleep 0.1; done
[ -z "$(ls "/proc/$node2pid/root/run/rfork/images" 2>/dev/null)" ] || why+="node2 kept images: $(ls "/proc/$node2pid/root/run/rfork/images"); "
[ -z "$(pgrep -f 'rfork-(standin|nsinit)')" ] || why+="left: $(pgrep -fa 'rfork-(standin|nsinit)' | tr '\n' ' '); "
result "migrate/failure: the home's rforkd dies during the transfer: the process goes on at home, node2 keeps nothing" \
    "$([ -z "$why" ] && echo 0 || echo 1)" "$why"
"$RFORK" cluster down >/dev/null 2>&1

echo
[ "$FAIL" = 0 ] || printf 'failed: %s\n' "${FAILED[@]}"
echo "$PASS passed, $FAIL failed"
[ "$FAIL" = 0 ]
