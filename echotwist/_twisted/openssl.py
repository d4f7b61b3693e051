# -*- test-case-name: tests.test__twisted -*-
"""
The door to pyOpenSSL's private names (pyOpenSSL is what Twisted's TLS
runs on: C{twisted[tls]}), for the loop's TLS echo
(L{echotwist._fast.tlsloop}), in the manner of L{echotwist._twisted}.

pyOpenSSL's C{Connection} wraps each OpenSSL call in Python (argument
checks, a fresh buffer, a copy into C{bytes}, and an error check that
looks at three callback helpers and compares the result with seven
constants); at a small echo that Python is about half of the server's
user-space instructions (measured in docs/performance.rst).  So the echo
calls C{SSL_read}, C{SSL_write}, C{BIO_write} and C{BIO_read} itself
(and C{ERR_clear_error}), through the C{cryptography} bindings pyOpenSSL
itself uses (C{cryptography.hazmat.bindings.openssl.binding.Binding},
documented as their public API, though not which of OpenSSL's functions
its C{lib} offers), on the C{SSL} object and the memory BIOs of the
C{Connection}: its private C{_ssl}, C{_into_ssl} and C{_from_ssl}.  Any
call that does not succeed is turned into the very exception pyOpenSSL's
own method would raise, by its private C{_raise_ssl_error}.  Checked with
pyOpenSSL 26.4.0; where a name or one of those functions is missing,
L{connectionParts} says None and Twisted's path takes every read.
"""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.bindings.openssl.binding import Binding

__all__ = ["CALLS", "connectionParts", "ffi", "lib", "raiseSSLError"]

_binding = Binding()
#: The cffi FFI and library of OpenSSL that pyOpenSSL calls.
ffi: Any = _binding.ffi
lib: Any = _binding.lib

#: The functions of C{lib} the loop's TLS echo calls.
CALLS = ("BIO_write", "SSL_read", "SSL_write", "BIO_read", "ERR_clear_error")


def connectionParts(connection: Any) -> tuple[Any, Any, Any] | None:
    """
    The C{SSL} object of a pyOpenSSL C{Connection} made on memory BIOs, the
    BIO OpenSSL reads from and the BIO it writes to: its private C{_ssl},
    C{_into_ssl} and C{_from_ssl}.  None if it has not got them, or has
    no memory BIOs (a C{Connection} on a socket), or C{_raise_ssl_error} is
    not there, or C{lib} lacks one of the L{CALLS} (C{cryptography} trims
    its bindings now and then).  Checked with pyOpenSSL 26.4.0.
    """
    if not all(hasattr(lib, name) for name in CALLS):
        return None
    ssl = getattr(connection, "_ssl", None)
    into = getattr(connection, "_into_ssl", None)
    out = getattr(connection, "_from_ssl", None)
    if (
        ssl is None
        or into is None
        or out is None
        or not callable(getattr(connection, "_raise_ssl_error", None))
    ):
        return None
    return ssl, into, out


def raiseSSLError(connection: Any, result: int) -> None:
    """
    Raise what pyOpenSSL's C{Connection.recv()} or C{send()} raises when
    C{SSL_read} or C{SSL_write} returned C{result} (0 or less): its private
    C{_raise_ssl_error}, which reads OpenSSL's error and its error queue.
    Checked with pyOpenSSL 26.4.0.
    """
    connection._raise_ssl_error(connection._ssl, result)
