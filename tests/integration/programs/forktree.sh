#!/bin/bash
# A fork tree: every inner process forks two subshells (one in the background, one in a pipeline), waits
# for both and passes on a status made of theirs; leaves say which node they ran on. Under rfork run each
# subshell is placed from the node its parent runs on. Usage: forktree.sh DEPTH
tree() { # depth path
    local d=$1 p=$2 here
    read -r here </proc/sys/kernel/hostname # where this process runs (a $(...) would fork)
    if [ "$d" -eq 0 ]; then
        echo "leaf $p on $here"
        return $((2#${p#r}))
    fi
    (tree $((d - 1)) "${p}0") &
    local left=$!
    (tree $((d - 1)) "${p}1") | sed 's/^/  /'
    local right=${PIPESTATUS[0]}
    wait "$left"
    local l=$?
    echo "node $p on $here: children exited $l and $right"
    return $(((l * 3 + right + 1) % 11))
}
tree "${1:-3}" r
status=$?
echo "tree exited $status"
exit "$status"
