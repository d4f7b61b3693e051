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
runs=${1:-3}
[ $# -gt 0 ] && shift
extra=("$@")
refuse() {  # refuse LINE: the one line a bad argument gets, before any work
    echo "startcount.sh: $1" >&2
    exit 2
}
[[ "$runs" =~ ^[1-9][0-9]*$ ]] || refuse "RUNS is a whole number of starts (1 or more), not '$runs'"
here=$(cd "$(dirname "$0")" && pwd)
twistd=${TWISTD:-$(command -v twistd || true)}
[ -x "$twistd" ] || refuse "no twistd: put one on PATH or set TWISTD=/path/to/twistd"
command -v valgrind >/dev/null || refuse "no valgrind (Debian: apt-get install valgrind)"
python=$(head -1 "$twistd" | sed 's/^#!//')
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
unset PYTHONDONTWRITEBYTECODE
export PYTHONHASHSEED=0 FIRST_ECHO_TWISTD="$twistd"

start() {  # start NAME [valgrind...]: runs one start; prints its count
    local name=$1 port out
    shift
    port=$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    if [ "$name" = plain ]; then
        server=(-n --pidfile= -y "$here/plain.tac")
    else
        server=(-n --pidfile= echo --port "tcp:$port:interface=127.0.0.1" ${extra[@]+"${extra[@]}"})
    fi
    if ! FIRST_ECHO_PORT=$port PLAIN_ECHO_PORT="tcp:$port:interface=127.0.0.1" \
        timeout 300 "$@" "$python" "$here/firstecho.py" "${server[@]}" \
        >"$work/server.log" 2>&1; then
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
