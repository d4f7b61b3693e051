"""
echotwist: an RFC 862 echo server, as a Twisted application plugin.

Run it with C{twistd -n echo --port 5000}; build on it with L{Echo} (the
protocol), L{EchoFactory} (its factory and books) and L{EchoService} (the
listeners, and the drain on shutdown).
"""

from echotwist.connections import EchoFactory
from echotwist.listeners import Listener, parseListener
from echotwist.service import EchoService
from echotwist.stream import Echo

#: echotwist's version: the one place it is written (setup.cfg and the docs
#: read it from here).
__version__ = "0.1.0"

__all__ = [
    "__version__",
    "Echo",
    "EchoFactory",
    "EchoService",
    "Listener",
    "parseListener",
]
