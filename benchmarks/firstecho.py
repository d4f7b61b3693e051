"""
One start to first echo, for startcount.sh and startsys.sh: runs twistd's own
run() (nothing of twistd's changed) with the arguments given, and once twistd
has started the application and its reactor runs, a client thread of this
process connects to FIRST_ECHO_PORT on 127.0.0.1, sends "first", reads it back
and ends the process at once (os._exit, exit status 0; 3 without the echo),
so neither reading a log nor a shutdown is counted.

    FIRST_ECHO_TWISTD=/path/to/twistd FIRST_ECHO_PORT=PORT \\
        python benchmarks/firstecho.py -n --pidfile= echo --port tcp:PORT

With FIRST_ECHO_USAGE=FILE it also writes, just before it ends, the CPU time
the process used (user and system, in milliseconds) and its minor page
faults, from getrusage, as one line "CPU_MS FAULTS" to FILE.
"""

import os
import socket
import sys
import threading

from twisted.application import app
from twisted.scripts.twistd import run

port = int(os.environ["FIRST_ECHO_PORT"])
usage = os.environ.get("FIRST_ECHO_USAGE")
startApplication = app.startApplication


def firstEcho():
    echoed = b""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
            s.sendall(b"first")
            while len(echoed) < len(b"first"):
                more = s.recv(10)
                if not more:
                    break
                echoed += more
    except OSError as e:
        os.write(2, f"no first echo: {e}\n".encode())
    if usage:
        import resource

        used = resource.getrusage(resource.RUSAGE_SELF)
        with open(usage, "w") as f:
            f.write(f"{(used.ru_utime + used.ru_stime) * 1e3:.1f} {used.ru_minflt}\n")
    os._exit(0 if echoed == b"first" else 3)


def started(application, save):
    # twistd's own step (the services start, the ports listen), then the
    # client once the reactor runs, as a client outside would find it.
    startApplication(application, save)
    from twisted.internet import reactor

    reactor.callWhenRunning(threading.Thread(target=firstEcho, daemon=True).start)


app.startApplication = started
sys.argv = [os.environ["FIRST_ECHO_TWISTD"], *sys.argv[1:]]
run()
