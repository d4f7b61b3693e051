# -*- test-case-name: tests.test__fast_reactor,tests.system.test_reactor -*-
"""
echotwist's reactor, by its public name: what C{twistd -n echo ...} and
C{twist echo ...} serve on when no reactor is named (see
L{echotwist.process.installDefaultReactor}), what C{--reactor echotwist}
names, and what the start log and the C{echotwist_build_info} metric call
C{echotwist.reactor.EchotwistEPollReactor}.

It is the loop of echotwist's fast path, which lives in the private
package L{echotwist._fast} (see L{echotwist._fast.reactor}); this module
only names it and installs it.
"""

from __future__ import annotations

from twisted.internet.main import installReactor

from echotwist._fast.reactor import FastEPollReactor

__all__ = ["EchotwistEPollReactor", "install"]


class EchotwistEPollReactor(FastEPollReactor):
    """
    Twisted's epoll reactor without the logging context per event, with
    echotwist's fast path (see L{echotwist._fast}).  Its name and module
    are what the workers are told to install (see
    L{echotwist.process.reactorName}), and what the start log names.
    """


def install() -> EchotwistEPollReactor:
    """
    Install the reactor (what C{twistd --reactor echotwist} calls, and
    C{twistd echo} when no reactor is named).

    @return: the reactor installed.
    """
    reactor = EchotwistEPollReactor()
    installReactor(reactor)
    return reactor
