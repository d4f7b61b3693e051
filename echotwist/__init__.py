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

__all__ = ["Echo", "EchoFactory", "EchoService", "Listener", "parseListener"]
