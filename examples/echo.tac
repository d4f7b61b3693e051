# Run with:  twistd -ny examples/echo.tac
#
# The same server as "twistd -n echo --port 5000 --listen unix:echo.sock",
# built from echotwist's public API only.  A .tac serves on the reactor
# twistd installs for it (Twisted's default); for echotwist's own, as the
# command above has: twistd --reactor echotwist -ny examples/echo.tac
from twisted.application.service import Application

from echotwist import EchoService

application = Application("echotwist")
EchoService(["tcp:5000", "unix:echo.sock"], shutdownTimeout=10).setServiceParent(
    application
)
