# Sourced by startcount.sh and startsys.sh, which count the same starts to
# first echo (benchmarks/firstecho.py) in different ways:
#
#   . "$(dirname "$0")/firststart.sh" TOOL DEFAULT_RUNS "$@"
#
# reads the script's arguments ([RUNS] [twistd echo options...]) into runs
# and extra, refuses a bad RUNS, a missing twistd or a missing TOOL with
# one line and exit 2 (refuse), finds twistd's Python, makes $work (removed
# on exit), and defines firstStart.
tool=$1 runs=${3:-$2}
shift 2
[ $# -gt 0 ] && shift
extra=("$@")
refuse() {  # refuse LINE: the one line a bad argument gets, before any work
    echo "$(basename "$0"): $1" >&2
    exit 2
}
[[ "$runs" =~ ^[1-9][0-9]*$ ]] || refuse "RUNS is a whole number of starts (1 or more), not '$runs'"
here=$(cd "$(dirname "$0")" && pwd)
twistd=${TWISTD:-$(command -v twistd || true)}
[ -x "$twistd" ] || refuse "no twistd: put one on PATH or set TWISTD=/path/to/twistd"
command -v "$tool" >/dev/null || refuse "no $tool (Debian: apt-get install $tool)"
python=$(head -1 "$twistd" | sed 's/^#!//')
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Bytecode caches written as a pip install writes them (the first starts
# write what an editable checkout lacks), and set and dict order fixed.
unset PYTHONDONTWRITEBYTECODE
export PYTHONHASHSEED=0 FIRST_ECHO_TWISTD="$twistd"

firstStart() {  # firstStart NAME [COMMAND...]: one start of NAME (echotwist
    # or plain) under COMMAND, its output in $work/server.log; fails if it
    # did not echo
    local name=$1 port
    shift
    port=$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    if [ "$name" = plain ]; then
        server=(-n --pidfile= -y "$here/plain.tac")
    else
        server=(-n --pidfile= echo --port "tcp:$port:interface=127.0.0.1" ${extra[@]+"${extra[@]}"})
    fi
    FIRST_ECHO_PORT=$port PLAIN_ECHO_PORT="tcp:$port:interface=127.0.0.1" \
        timeout 300 "$@" "$python" "$here/firstecho.py" "${server[@]}" \
        >"$work/server.log" 2>&1
}
