#!/bin/bash
# What a start to first echo costs besides its user-space instructions
# (startcount.sh counts those), for echotwist and for the plain Twisted .tac
# (plain.tac): its system calls, by kind, and its minor page faults, which
# are repeatable from start to start, and the CPU time they and the
# instructions come to, which is not.  On this project's machine a system
# call or a first touch of a page costs about 2 to 3 microseconds, so a few
# hundred of either are a millisecond or two that no instruction count shows
# (docs/performance.rst, "Start and memory on the default install").
#
#   bash benchmarks/startsys.sh [RUNS] [twistd echo options...]
#
# Each start is startcount.sh's (benchmarks/firstecho.py: twistd's own run(),
# a client thread that echoes "first" once the reactor runs and then ends the
# process at once), with echotwist on loopback (twistd -n --pidfile= echo
# --port tcp:PORT:interface=127.0.0.1) and any options given after RUNS, and
# PYTHONHASHSEED fixed to 0.  RUNS (default 5) starts of each, taking turns,
# give each one's CPU time (user and system, getrusage; the least counts, the
# machine's noise only adds) and page faults (the median); then one start of
# each under strace -f -c counts its system calls (strace slows a start
# down, not what it calls).
#
# Needs strace, and twistd on PATH (or TWISTD=...): the default install's
# twistd (pip install of the checkout, no extras) measures what bench.py's
# start row measures.
set -eu
. "$(dirname "$0")/firststart.sh" strace 5 "$@"
export FIRST_ECHO_USAGE="$work/usage"

start() {  # start NAME [strace...]: runs one start, leaving $work/usage
    local name=$1
    shift
    rm -f "$work/usage"
    if ! firstStart "$name" "$@" || [ ! -s "$work/usage" ]; then
        refuse "$name did not echo its first message: $(tail -1 "$work/server.log")"
    fi
}

for name in echotwist plain; do
    start "$name"  # bytecode caches, outside the figures
done
for _ in $(seq "$runs"); do
    for name in echotwist plain; do
        # A start that fails ends the script with its own line (exit 2).
        start "$name" || exit 2
        cat "$work/usage" >>"$work/$name.usage"
    done
done
for name in echotwist plain; do
    start "$name" strace -f -c -o "$work/$name.strace" || exit 2
    # strace's table: "% time, seconds, usecs/call, calls, [errors,] syscall".
    awk '$1 ~ /^[0-9.]+$/ && $NF != "total" {print $NF, $4}' "$work/$name.strace" |
        sort >"$work/$name.calls"
done
cpu() { sort -n "$work/$1.usage" | awk 'NR == 1 {print $1}'; }
faults() { awk '{print $2}' "$work/$1.usage" | sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
calls() { awk '{n += $2} END {print n}' "$work/$1.calls"; }
for name in echotwist plain; do
    label=$name
    [ "$name" = plain ] && label="plain .tac"
    echo "$label: $(calls "$name") system calls, $(faults "$name") page faults, $(cpu "$name") ms CPU"
done
echo "system calls that differ (echotwist, plain .tac, difference):"
join -a 1 -a 2 -e 0 -o 0,1.2,2.2 "$work/echotwist.calls" "$work/plain.calls" |
    awk '$2 != $3 {print $2 - $3, $1, $2, $3}' | sort -k1,1nr -k2,2 |
    awk '{printf "  %s %d %d %+d\n", $2, $3, $4, $1}'
awk -v a="$(cpu echotwist)" -v b="$(cpu plain)" \
    -v s="$(($(calls echotwist) - $(calls plain)))" \
    -v f="$(($(faults echotwist) - $(faults plain)))" \
    'BEGIN {printf "start to first echo (least CPU of %d, median faults): echotwist %.1f ms, plain .tac %.1f ms, ratio %.3f; %+d system calls, %+d page faults\n", '"$runs"', a, b, a / b, s, f}'
