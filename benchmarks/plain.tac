# A plain Twisted echo on the default reactor: twisted.protocols.wire.Echo.
import os

from twisted.application import service, strports
from twisted.internet.protocol import Factory
from twisted.protocols.wire import Echo

application = service.Application("plain")
factory = Factory.forProtocol(Echo)
factory.noisy = False
strports.service(
    os.environ.get("PLAIN_ECHO_PORT", "tcp:0:interface=127.0.0.1"), factory
).setServiceParent(application)
