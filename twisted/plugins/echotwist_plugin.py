# twistd imports every plugin file when it scans for commands and reactors,
# so this file only names things: the real work lives in echotwist.tap and
# echotwist.reactor, imported only when someone runs "twistd echo" or
# "twistd --reactor echotwist".
from twisted.application.reactors import Reactor
from twisted.application.service import ServiceMaker

echo = ServiceMaker(
    "echotwist",
    "echotwist.tap",
    "An RFC 862 echo server: everything a client sends comes back.",
    "echo",
)

reactor = Reactor(
    "echotwist",
    "echotwist.reactor",
    "epoll without a logging context per event (faster echo; see echotwist)",
)
