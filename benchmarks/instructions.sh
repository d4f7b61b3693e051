#!/bin/bash
# User-space instructions per message of the command as typed, counted by
# valgrind's callgrind (repeatable whatever else the machine is doing, unlike
# CPU time): the server runs under callgrind, the benchmark's C client drives
# SIZE-byte messages on CONNS connections for 2 s and then for 8 s, and the
# difference of the two runs' totals over the difference of their messages
# leaves start-up and shutdown out.  Loopback only; every wait is bounded.
#
#   bash benchmarks/instructions.sh 1024 10 [twistd echo options...]
#   bash benchmarks/instructions.sh udp 1024 10 [twistd echo options...]
#   bash benchmarks/instructions.sh tls 1024 10 [twistd echo options...]
#   bash benchmarks/instructions.sh tls handshakes 4 [twistd echo options...]
#
# With "udp" first it counts per UDP datagram: the server listens on
# --udp udp:PORT:interface=127.0.0.1 at --udp-rate 0 (the load comes from
# one address), and cudp.c's load mode drives CONNS flows, one datagram in
# flight each.
#
# With "tls handshakes CLIENTS" it counts per new TLS connection: tlsload's
# handshakes mode, CLIENTS threads each connecting, handshaking (no session
# reuse), echoing 64 bytes and closing.  For TLS, PEER=plain counts a plain
# Twisted echo on listenSSL (plain.tac) and PEER=uvloop (or asyncio) the
# Protocol echo of peers.py, under the same count, instead of echotwist.
# For UDP, PEER=plain counts plain.tac's five-line DatagramProtocol echo.
# For TCP and UDP, PEER=floor counts peers.py's pure-Python floor (an epoll
# loop of os.read/os.write, or recvfrom/sendto, no framework), and
# PEER=uvloop or asyncio peers.py's echo on that loop.
#
# Needs valgrind, a C compiler and twistd on PATH (or TWISTD=...).
set -eu
transport=tcp
if [ "${1:-}" = udp ] || [ "${1:-}" = tls ]; then
    transport=$1
    shift
fi
size=${1:?SIZE}; conns=${2:?CONNS}; shift 2
extra=("$@")
peer=${PEER:-echotwist}
refuse() {  # refuse LINE: the one line a bad PEER gets, before any work
    echo "instructions.sh: $1" >&2
    exit 2
}
case "$peer" in
    echotwist | uvloop | asyncio) ;;
    plain) [ "$transport" != tcp ] || refuse "PEER=plain is for udp and tls" ;;
    floor) [ "$transport" != tls ] || refuse "PEER=floor is for tcp and udp" ;;
    *) refuse "PEER is echotwist, plain, floor, uvloop or asyncio, not '$peer'" ;;
esac
here=$(cd "$(dirname "$0")" && pwd)
twistd=${TWISTD:-$(command -v twistd || true)}
if [ ! -x "$twistd" ]; then
    # Every server runs on twistd's Python (the peers too): say so, rather
    # than let set -e end the run without a word.
    echo "instructions.sh: no twistd: put one on PATH or set TWISTD=/path/to/twistd" >&2
    exit 2
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [ "$transport" = udp ]; then
    cc -O2 -o "$work/cudp" "$here/cudp.c"
elif [ "$transport" = tls ]; then
    cc -O2 -o "$work/tlsload" "$here/tlsload.c" -lssl -lcrypto -lpthread
    openssl req -x509 -newkey rsa:2048 -nodes -keyout "$work/key.pem" \
        -out "$work/cert.pem" -days 2 -subj /CN=localhost 2>/dev/null
else
    cc -O2 -o "$work/loadgen" "$here/loadgen.c"
fi

run() {  # run SECONDS: prints "messages instructions"
    local port pid out i listen
    if [ "$transport" = udp ]; then
        port=$(python3 -c 'import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
        listen=(--udp "udp:$port:interface=127.0.0.1" --udp-rate 0)
    elif [ "$transport" = tls ]; then
        port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
        listen=(--port "ssl:$port:interface=127.0.0.1:privateKey=$work/key.pem:certKey=$work/cert.pem"
            --max-connections 0 --max-per-source 0
            --tls-handshake-rate 0 --tls-handshakes-per-source 0)
        if [ "$peer" = plain ]; then
            export PLAIN_ECHO_PORT="ssl:$port:interface=127.0.0.1:privateKey=$work/key.pem:certKey=$work/cert.pem"
        fi
    else
        port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
        listen=(--port "tcp:$port:interface=127.0.0.1" --max-connections 0 --max-per-source 0)
    fi
    python=$(head -1 "$twistd" | sed 's/^#!//')
    if [ "$transport" = tls ] && [ "$peer" = plain ]; then
        server=("$python" "$twistd" -n --pidfile= -y "$here/plain.tac")
        ready="starting on $port"
    elif [ "$transport" = udp ] && [ "$peer" = plain ]; then
        # plain.tac's DatagramProtocol echo binds a port of its own.
        export PLAIN_ECHO_UDP=1
        server=("$python" "$twistd" -n --pidfile= -y "$here/plain.tac")
        ready="starting on [0-9]"
    elif [ "$transport" = tls ] && [ "$peer" != echotwist ]; then
        # peers.py binds a port of its own and prints it.
        server=("$python" "$here/peers.py" "$peer" tls "$work/cert.pem" "$work/key.pem")
        ready="PORT [0-9]"
    elif [ "$peer" != echotwist ]; then
        server=("$python" "$here/peers.py" "$peer")
        [ "$transport" = udp ] && server+=(udp)
        ready="PORT [0-9]"
    else
        server=("$python" "$twistd" -n --pidfile= echo
            "${listen[@]}" --no-connection-logs ${extra[@]+"${extra[@]}"})
        ready="Listening on 127.0.0.1:$port"
    fi
    taskset -c 0 valgrind --tool=callgrind --callgrind-out-file="$work/cg.%p" \
        "${server[@]}" >"$work/server.log" 2>&1 &
    pid=$!
    for i in $(seq 600); do
        grep -qs "$ready" "$work/server.log" && break
        # A server that ended (a peer's loop not installed, a bad option)
        # is not waited for.
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if ! grep -qs "$ready" "$work/server.log"; then
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        # Its last line of its own (valgrind's start with ==PID==).
        refuse "the server did not start: $(grep -v '^==' "$work/server.log" | tail -1)"
    fi
    if [ "$peer" != echotwist ] && [ "$peer" != plain ]; then
        port=$(sed -n 's/^PORT \([0-9]*\).*/\1/p' "$work/server.log")
    elif [ "$transport" = udp ] && [ "$peer" = plain ]; then
        port=$(sed -n 's/.*starting on \([0-9]*\).*/\1/p' "$work/server.log" | head -1)
    fi
    if [ "$transport" = udp ]; then
        out=$(taskset -c 1 "$work/cudp" load "$port" "$conns" "$size" "$1")
    elif [ "$transport" = tls ] && [ "$size" = handshakes ]; then
        out=$(taskset -c 1 "$work/tlsload" handshakes "$port" "$conns" "$1")
    elif [ "$transport" = tls ]; then
        out=$(taskset -c 1 "$work/tlsload" echo "$port" "$conns" "$size" "$1")
    else
        out=$(taskset -c 1 "$work/loadgen" "$port" "$conns" "$size" "$1")
    fi
    kill "$pid"; wait "$pid" 2>/dev/null || true
    [ -n "${KEEP:-}" ] && cp "$work"/cg.* "$KEEP"/ 2>/dev/null
    echo "$(echo "$out" | sed 's/.*messages=\([0-9]*\).*/\1/') $(awk '/Collected :/ {print $NF}' "$work/server.log")"
}

# A run that ended with a line of its own ends the script (exit 2).
read -r m1 i1 < <(run 2) || exit 2
read -r m2 i2 < <(run 8) || exit 2
per=message
[ "$transport" = udp ] && per="UDP datagram"
if [ "$size" = handshakes ]; then
    echo "$peer, TLS handshakes x ${conns}: $(( (i2 - i1) / (m2 - m1) )) user-space instructions per handshake ($m1 and $m2 connections)"
    exit 0
fi
echo "${size} B x ${conns}: $(( (i2 - i1) / (m2 - m1) )) user-space instructions per $per ($m1 and $m2 messages)"
