# A plain Twisted echo on the default reactor: twisted.protocols.wire.Echo,
# on PLAIN_ECHO_PORT (an endpoint description: ssl:... for TLS, which is
# listenSSL); or, with PLAIN_ECHO_UDP set, the five-line DatagramProtocol
# echo on a UDP port of 127.0.0.1.
import os

from twisted.application import internet, service, strports
from twisted.internet.protocol import DatagramProtocol, Factory
from twisted.protocols.wire import Echo


class DatagramEcho(DatagramProtocol):
    noisy = False

    def datagramReceived(self, datagram, address):
        self.transport.write(datagram, address)


application = service.Application("plain")
if os.environ.get("PLAIN_ECHO_UDP"):
    internet.UDPServer(0, DatagramEcho(), interface="127.0.0.1").setServiceParent(
        application
    )
else:
    factory = Factory.forProtocol(Echo)
    factory.noisy = False
    strports.service(
        os.environ.get("PLAIN_ECHO_PORT", "tcp:0:interface=127.0.0.1"), factory
    ).setServiceParent(application)
