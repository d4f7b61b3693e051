#!/bin/bash
# User-space instructions from exec to first echo, counted by valgrind's
# callgrind, for echotwist and for the plain Twisted .tac (plain.tac):
# bench.py's "start to first echo" row without the machine's noise.  Each
# server runs in a Python that runs twistd's own run() (nothing of twistd's
# changed), and once twistd has started the application and its reactor
# runs, a client thread of that process connects to the server's port on
# 127.0.0.1, sends "first", reads it back and ends the process at once
# (os._exit), so neither the log reading nor a shutdown is counted
# (benchmarks/firstecho.py; startsys.sh counts the same starts' system
# calls, page faults and CPU time).
#
#   bash benchmarks/startcount.sh [RUNS] [twistd echo options...]
#
# RUNS (default 3) starts of each, taking turns; the median of each counts.
# echotwist runs as typed but on loopback (twistd -n --pidfile= echo --port
# tcp:PORT:interface=127.0.0.1) with any options given after RUNS.  Counts
# are repeatable to about 0.1% with PYTHONHASHSEED fixed (it is, to 0: set
# and dict order changes what a start does by a few million instructions);
# the modules' bytecode caches must exist, as a pip install writes them, so
# one start of each runs first outside callgrind (with byte-code writing on)
# to write what an editable checkout lacks.
#
# Needs valgrind, and twistd on PATH (or TWISTD=...): the default install's
# twistd (pip install of the checkout, no extras) measures what bench.py's
# row measures.
set -eu
. "$(dirname "$0")/firststart.sh" valgrind 3 "$@"

start() {  # start NAME [valgrind...]: runs one start; prints its count
    local name=$1
    shift
    if ! firstStart "$name" "$@"; then
        refuse "$name did not echo its first message: $(grep -v '^==' "$work/server.log" | tail -1)"
    fi
    awk '/Collected :/ {print $NF}' "$work/server.log"
}

for name in echotwist plain; do
    start "$name" >/dev/null  # bytecode caches, outside the count
done
ours=()
plain=()
for _ in $(seq "$runs"); do
    # A start that fails ends the script with its own line (exit 2).
    count=$(start echotwist valgrind --tool=callgrind --callgrind-out-file=/dev/null) || exit 2
    ours+=("$count")
    count=$(start plain valgrind --tool=callgrind --callgrind-out-file=/dev/null) || exit 2
    plain+=("$count")
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
m1=$(median "${ours[@]}")
m2=$(median "${plain[@]}")
echo "echotwist: ${ours[*]}"
echo "plain .tac: ${plain[*]}"
awk -v a="$m1" -v b="$m2" 'BEGIN {printf "start to first echo, user-space instructions (median of %d): echotwist %.1f M, plain .tac %.1f M, ratio %.3f\n", '"$runs"', a / 1e6, b / 1e6, a / b}'
