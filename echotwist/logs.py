"""
Log observers for C{twistd --logger}.

C{twistd --logger echotwist.logs.jsonObserver -n echo} writes every event
as one JSON object a line (Twisted's own JSON log format, each record
preceded by an ASCII record separator), with echotwist's C{event} names and
fields intact.  C{twist --log-format json echo} does the same without this.
"""

from __future__ import annotations

import sys

from twisted.logger import ILogObserver, jsonFileLogObserver

__all__ = ["jsonObserver"]


def jsonObserver() -> ILogObserver:
    # twistd calls this before it points sys.stdout at the log itself.
    stream = sys.__stdout__
    assert stream is not None
    return jsonFileLogObserver(stream)
