# Run with:  twistd -ny examples/echo.tac
#
# The same server as "twistd -n echo --port 5000 --listen unix:echo.sock",
# built from echotwist's public API only.  A .tac serves on the reactor
# twistd installs for it (Twisted's default); for echotwist's own, as the
# command above has: twistd --reactor echotwist -ny examples/echo.tac
# What the tap does to its process, a library leaves to its host
# (echotwist.process.prepareProcess): here a listener that cannot listen
# ends start-up with a traceback whose last line says why, a segfault
# leaves no Python stack, and as PID 1 (a container without --init) the
# exit status after SIGTERM is 0, not 143.
from twisted.application.service import Application

from echotwist import EchoService

application = Application("echotwist")
EchoService(["tcp:5000", "unix:echo.sock"], shutdownTimeout=10).setServiceParent(
    application
)
