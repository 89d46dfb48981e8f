#!/usr/bin/env bash
# make demo: a 3-node cluster on this machine, a sample program whose forked workers run on the other
# nodes, where each ran and how long each phase of each remote fork took; then the cluster goes away.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RFORK=$ROOT/build/bin/rfork
PROGRAM=${1:-$ROOT/build/examples/workers}
trap '"$RFORK" cluster down >/dev/null 2>&1 || true' EXIT

echo "== rfork cluster up --nodes 3"
"$RFORK" cluster up --nodes 3
echo
echo "== rfork nodes (as node1 sees them)"
"$RFORK" cluster exec node1 -- "$RFORK" nodes
echo
echo "== on node1: rfork run --policy spread -- $(basename "$PROGRAM")"
"$RFORK" cluster exec node1 -- "$RFORK" run --policy spread -- "$PROGRAM"
echo
echo "== phases of each remote fork (rfork ps --recent, milliseconds)"
"$RFORK" cluster exec node1 -- "$RFORK" ps --recent
echo
echo "== rfork cluster down"
