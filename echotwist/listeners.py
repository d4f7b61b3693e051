# -*- test-case-name: tests.test_listeners,tests.test_tap -*-
"""
Listener descriptions, parsed: what C{--port}, C{--listen}, C{--udp} and
C{--metrics} name, and how a description becomes something to listen on.

A stream listener is a port number (meaning C{tcp:PORT}) or a Twisted server
endpoint description, with three additions: a listen backlog as deep as the
kernel allows where the description sets none; C{haproxy:} served by
echotwist's own PROXY wrapper (see L{echotwist.proxy}); and C{systemd:}
sockets found by index when the activator passed no names.  A UDP listener
is C{udp:PORT[:interface=ADDRESS]}, Twisted having no endpoint descriptions
for UDP.  A description that cannot be used is a C{ValueError} with one line
a user can act on.

L{echotwist.service} composes the listeners into a server.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from functools import cache
from typing import Any, NamedTuple

from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.endpoints import AdoptedStreamServerEndpoint, serverFromString
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.logger import Logger

from echotwist.settings import wholeNumber

__all__ = [
    "BURST_BACKLOG",
    "DatagramListener",
    "Listener",
    "MissingExtra",
    "descriptionFields",
    "installExtra",
    "listenBacklog",
    "parseDatagramListener",
    "parseListener",
]

# Listener events keep the namespace they had before this module was split
# from echotwist.service: operators filter on it.
log = Logger(namespace="echotwist.service")

#: The listen backlog for stream listeners whose description sets none,
#: where the kernel's cap cannot be read.  Twisted's own default is 50: a
#: burst of connects overflows it, and the kernel retries each dropped SYN
#: only a second later.
BURST_BACKLOG = 1024
#: The most listen(2) takes (the kernel's field is 16 bits wide before 4.4).
_MAX_BACKLOG = 65535
_SOMAXCONN = "/proc/sys/net/core/somaxconn"
# The endpoint types whose descriptions take backlog=.
_BACKLOG_TYPES = frozenset({"tcp", "tcp6", "ssl", "unix"})


_PROXY_PREFIX = "haproxy:"


class MissingExtra(ValueError):
    """
    A listener needs an optional part of echotwist that is not installed
    (TLS: the C{tls} extra).  The message is the one line a user sees.
    """


def installExtra(extra: str) -> str:
    """
    How to install one of echotwist's extras, as a message ends.  (Not
    from a package index: echotwist is installed from a checkout or a
    wheel built from one.)
    """
    return f"install echotwist with its {extra} extra (pip install '.[{extra}]' from a checkout)"


@cache
def _unescapedIPv6() -> re.Pattern[str]:
    """
    An interface= whose value goes on past an unescaped colon: an IPv6
    address written as is, which the description splits into pieces.  An
    IPv4 address before the colon is one field and the next.  Compiled
    when first needed: only a refusal and a UDP listener look for it, and a
    start need not pay for it (docs/performance.rst).
    """
    return re.compile(r"(?<!\\)interface=(?!\d+\.\d+\.\d+\.\d+:)[0-9A-Fa-f.]*(?<!\\):")


def _ipv6Hint(description: str) -> str | None:
    """
    If C{description} has an IPv6 address with unescaped colons, a message
    saying how to escape them.
    """
    if not _unescapedIPv6().search(description):
        return None
    return (
        f"{description!r}: escape each colon of an IPv6 address with a"
        " backslash, as endpoint descriptions require, e.g."
        " interface=\\:\\:1 (in single quotes in a shell)"
    )


def _keywords(fields: list[str]) -> dict[str, str]:
    """
    The C{name=value} fields of a description, unescaped.
    """
    found = {}
    for field in fields:
        name, equals, value = field.partition("=")
        if equals:
            found[name] = re.sub(r"\\(.)", r"\1", value)
    return found


def _tlsFilesHint(description: str, text: str) -> str | None:
    """
    If C{text} is an C{ssl:} description whose certificate or key cannot
    be used, a message naming the file and the field that names it.

    Twisted's C{ssl:} reads the key from C{privateKey=} (C{server.pem} if
    not given) and the certificate from C{certKey=}, or from the key's file
    when C{certKey=} is not given.
    """
    inner = text[len(_PROXY_PREFIX) :] if text.startswith(_PROXY_PREFIX) else text
    fields = descriptionFields(inner)
    if fields[0] != "ssl":
        return None
    keywords = _keywords(fields[1:])
    privateKey = keywords.get("privateKey", "server.pem")
    certKey = keywords.get("certKey")
    pems = {}
    for path, what in (
        (certKey, "certificate file (certKey=)"),
        (privateKey, "private key file (privateKey=)"),
    ):
        if path is None:
            continue
        if os.path.isdir(path):
            return f"{description!r}: the TLS {what} {path!r} is a directory"
        if not os.path.isfile(path):
            return f"{description!r}: the TLS {what} {path!r} does not exist"
        try:
            with open(path, "rb") as f:
                pems[path] = f.read()
        except OSError as e:
            return (
                f"{description!r}: the TLS {what} {path!r} cannot be read: {e.strerror}"
            )
    if b"PRIVATE KEY-----" not in pems[privateKey]:
        return (
            f"{description!r}: the TLS private key file (privateKey=)"
            f" {privateKey!r} holds no PEM private key"
        )
    pem = pems[certKey or privateKey]
    if b"-----BEGIN CERTIFICATE-----" not in pem:
        if certKey is None:
            return (
                f"{description!r}: {privateKey!r} holds no certificate; name the"
                " certificate file with certKey= (privateKey= holds the key)"
            )
        return (
            f"{description!r}: the certKey= file {certKey!r} holds no PEM certificate"
        )
    return None


class Listener(NamedTuple):
    """
    A stream listener: its endpoint description and the parsed endpoint.

    @ivar tls: whether its connections are TLS (C{ssl:}).
    @ivar proxied: whether its endpoint is echotwist's PROXY endpoint
        (C{haproxy:}, an L{echotwist.proxy.ProxyEndpoint}).
    """

    description: str
    endpoint: IStreamServerEndpoint
    tls: bool = False
    proxied: bool = False


def listenBacklog(somaxconn: str = _SOMAXCONN) -> int:
    """
    The listen backlog stream listeners get unless their description sets
    one: as many as the kernel allows (net.core.somaxconn, 4096 by default
    since Linux 5.4), as Go's listeners ask for; L{BURST_BACKLOG} where
    that cannot be read.  A connect waiting in the queue costs the kernel
    a socket and the client nothing; one the queue has no room for costs
    the client a second.
    """
    try:
        with open(somaxconn) as f:
            cap = int(f.read())
    except (OSError, ValueError):
        return BURST_BACKLOG
    return max(1, min(_MAX_BACKLOG, cap))


def descriptionFields(description: str) -> list[str]:
    """
    The colon-separated fields of an endpoint description, as Twisted splits
    them (a backslash escapes the next character), escapes kept.
    """
    fields = [""]
    escaped = False
    for char in description:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ":":
            fields.append("")
            continue
        fields[-1] += char
    return fields


def _isWhole(text: str) -> bool:
    """
    Whether C{text} is a whole number as echotwist takes one: ASCII digits
    only (see L{echotwist.settings.wholeNumber}).
    """
    try:
        wholeNumber(text)
    except ValueError:
        return False
    return True


def _checkWhole(description: str) -> None:
    """
    Refuse an empty description, and one with blanks at either end: a
    shell's quoting gone wrong more likely than a meaning.

    @raise ValueError: with a one-line message.
    """
    if not description:
        raise ValueError(
            "'' is empty: give a port number or a server endpoint description"
        )
    if description != description.strip():
        raise ValueError(
            f"{description!r} has blanks at its start or end (check the quoting)"
        )


# What each endpoint type's numbers are: the positional argument that is a
# port (its index), and the keyword arguments that are numbers, with how
# they are written.  Twisted's parsers call int(), which takes Unicode
# digits, a sign and blanks: "backlog=-5" and "tcp:\u0663" pass them.
_PORT_POSITION = {"tcp": 0, "tcp6": 0, "ssl": 0}
_NUMBER_ARGUMENTS = {
    "tcp": {"port", "backlog"},
    "tcp6": {"port", "backlog"},
    "ssl": {"port", "backlog"},
    "unix": {"backlog"},
    "systemd": {"index"},
}


def _checkNumbers(text: str) -> None:
    """
    Refuse numbers in a description of a type echotwist knows that are not
    written as ASCII digits, or not in range (ports 0-65535; C{mode=} in
    octal); other types are their parser's to check.

    @raise ValueError: with a one-line message naming the argument.
    """
    fields = descriptionFields(
        text[len(_PROXY_PREFIX) :] if text.startswith(_PROXY_PREFIX) else text
    )
    kind, arguments = fields[0], fields[1:]
    positional = [field for field in arguments if "=" not in field]
    keywords = dict(field.partition("=")[::2] for field in arguments if "=" in field)
    numbers: list[tuple[str, str]] = [
        (name, value)
        for name, value in keywords.items()
        if name in _NUMBER_ARGUMENTS.get(kind, ())
    ]
    position = _PORT_POSITION.get(kind)
    if position is not None and len(positional) > position:
        numbers.append(("port", positional[position]))
    for name, value in numbers:
        try:
            number = wholeNumber(
                value, f"a {name} number" if name == "port" else f"a {name}"
            )
        except ValueError as e:
            raise ValueError(f"{text!r}: {name}: {e}") from None
        if name == "port" and number > 65535:
            raise ValueError(f"{text!r}: {value!r} is not a port number (0-65535)")
    mode = keywords.get("mode")
    if kind == "unix" and mode is not None and not re.fullmatch(r"0?[0-7]{1,4}", mode):
        raise ValueError(
            f"{text!r}: mode: {mode!r} is not a file mode in octal digits (e.g. 660)"
        )


def _withBacklog(description: str, backlog: int) -> str:
    """
    C{description} with C{backlog=} added, if it is of a type that takes
    one and sets none.
    """
    fields = descriptionFields(description)
    if fields[0] not in _BACKLOG_TYPES or any(
        field.startswith("backlog=") for field in fields[1:]
    ):
        return description
    return f"{description}:backlog={backlog}"


def _endpoint(reactor: Any, description: str, backlog: int) -> Any:
    try:
        return _serverFromString(reactor, _withBacklog(description, backlog))
    except TypeError:
        # A backlog given positionally: the description's own wins.
        return _serverFromString(reactor, description)


def parseListener(
    description: str, reactor: Any = None, backlog: int | None = None
) -> Listener:
    """
    Parse a port number (meaning C{tcp:PORT}) or a Twisted server endpoint
    description such as C{tcp:5000:interface=127.0.0.1}.

    @param backlog: the listen backlog for a TCP, TLS or UNIX listener
        whose description sets none (C{backlog=}); None for
        L{listenBacklog}'s.  Sockets passed by systemd already listen.
    @raise ValueError: with a one-line message a user can act on.
    """
    _checkWhole(description)
    text = description
    if _isWhole(text):
        if int(text) > 65535:
            raise ValueError(f"{description!r} is not a port number (0-65535)")
        text = f"tcp:{int(text)}"
    else:
        _checkNumbers(text)
    if reactor is None:
        from twisted.internet import reactor
    if backlog is None:
        backlog = listenBacklog()
    proxied = text.startswith(_PROXY_PREFIX)
    inner = text[len(_PROXY_PREFIX) :] if proxied else text
    tls = inner.split(":", 1)[0] == "ssl"
    try:
        endpoint = _endpoint(reactor, inner, backlog)
        if proxied:
            # haproxy: is Twisted's prefix; echotwist's own wrapper takes
            # its place (see echotwist.proxy for why).  Imported here: most
            # servers never need it.
            from echotwist.proxy import ProxyEndpoint

            endpoint = ProxyEndpoint(endpoint, reactor)
    except Exception as e:
        raise _refusal(description, text, tls, e) from None
    return Listener(text, endpoint, tls, proxied)


def _refusal(
    description: str, text: str, tls: bool, error: Exception
) -> ValueError | MissingExtra:
    """
    What to raise for a listener's description (as given, and as C{text}
    once a port number is C{tcp:PORT}) whose endpoint could not be made:
    a line a user can act on.
    """
    if isinstance(error, ImportError):
        if tls:
            # Twisted's ssl: parser imports pyOpenSSL, an extra.
            return MissingExtra(
                f"echotwist: {description!r} needs TLS support, which is not"
                f" installed: {installExtra('tls')}"
            )
        return ValueError(f"{description!r} needs a module that is missing ({error})")
    if isinstance(error, (IndexError, KeyError)):
        if "systemd:" not in text:
            return ValueError(f"{description!r}: {error}")
        return ValueError(
            f"{description!r}: no such socket was passed to this process"
            " (LISTEN_FDS and LISTEN_PID must describe it, and for name=,"
            " LISTEN_FDNAMES too)"
        )
    hint = _tlsFilesHint(description, text) or _ipv6Hint(text)
    if hint is not None:
        return ValueError(hint)
    return ValueError(
        f"{description!r} is neither a port number nor a usable server"
        f" endpoint description ({error}); examples: 5000,"
        f" tcp:5000:interface=127.0.0.1, unix:/run/echo.sock"
    )


_SYSTEMD_PREFIX = "systemd:"
#: The first descriptor a socket activator passes (SD_LISTEN_FDS_START).
_LISTEN_FDS_START = 3


def _serverFromString(reactor: Any, text: str) -> IStreamServerEndpoint:
    """
    Twisted's C{serverFromString}, except that C{systemd:...:index=N} also
    adopts a socket passed without names.

    Twisted's systemd parser looks descriptors up in
    L{twisted.python.systemd.ListenFDs.fromEnvironment}, which returns none
    at all unless C{LISTEN_FDNAMES} names every one of C{LISTEN_FDS}.
    sd_listen_fds(3) makes the names optional, and socket activators other
    than systemd itself (C{systemd-socket-activate} without C{--fdname},
    and others that implement only C{LISTEN_FDS}/C{LISTEN_PID}) leave them
    out; an index is all it takes to find such a socket.  Where the names
    are there, or C{name=} is asked for, Twisted's parser does the work.
    """
    endpoint: IStreamServerEndpoint
    if text.startswith(_SYSTEMD_PREFIX):
        index = _unnamedSystemdSocket(
            text[len(_SYSTEMD_PREFIX) :], _activationEnvironment()
        )
        if index is not None:
            fileno, family = index
            endpoint = AdoptedStreamServerEndpoint(reactor, fileno, family)
        else:
            endpoint = serverFromString(reactor, text)
        if isinstance(endpoint, AdoptedStreamServerEndpoint):
            endpoint = _inItsOwnFamily(text, endpoint)
        return endpoint
    endpoint = serverFromString(reactor, text)
    return endpoint


_FAMILIES: dict[int, str] = {
    socket.AF_INET: "INET",
    socket.AF_INET6: "INET6",
    socket.AF_UNIX: "UNIX",
}


def _socketFamily(fileno: int) -> int | None:
    """
    The address family of the socket open at C{fileno}; None if it is not
    a socket.
    """
    try:
        probe = socket.socket(fileno=fileno)
    except OSError:
        return None
    try:
        return int(probe.family)
    finally:
        probe.detach()


def _inItsOwnFamily(
    description: str, endpoint: AdoptedStreamServerEndpoint
) -> AdoptedStreamServerEndpoint:
    """
    C{endpoint}, adopting its socket in the family the socket really has.

    Twisted adopts a passed socket in the family C{domain=} names, unchecked:
    an IPv6 socket (C{ListenStream=5000}, C{systemd-socket-activate -l
    5000}) adopted as C{domain=INET} serves, but every address it reports
    (logs, the per-source limit) is garbage.  The kernel knows the family.
    """
    actual = _socketFamily(endpoint.fileno)
    if actual is None or actual == endpoint.addressFamily or actual not in _FAMILIES:
        return endpoint
    log.warn(
        "{description}: the socket passed is {actual}, not {declared}:"
        " adopting it as {actual} (say domain={actual} to silence this)",
        event="listener.family",
        description=description,
        actual=_FAMILIES[actual],
        declared=_FAMILIES.get(endpoint.addressFamily, str(endpoint.addressFamily)),
    )
    return AdoptedStreamServerEndpoint(endpoint.reactor, endpoint.fileno, actual)


_ACTIVATION_VARIABLES = ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")


def _activationEnvironment(
    initial: str = "/proc/self/environ",
) -> dict[str, str]:
    """
    The socket activation variables this process was started with.

    Importing L{twisted.internet.endpoints} runs
    C{ListenFDs.fromEnvironment()}, which deletes C{LISTEN_PID} and
    C{LISTEN_FDS} from C{os.environ} whenever they name this process, even
    when it then adopts nothing for want of names.  The environment the
    process was started with (C{/proc/self/environ} on Linux) still has
    them.
    """
    found = {k: os.environ[k] for k in _ACTIVATION_VARIABLES if k in os.environ}
    if "LISTEN_FDS" in found:
        return found
    try:
        with open(initial, "rb") as f:
            entries = f.read().split(b"\0")
    except OSError:
        return found
    for entry in entries:
        key, _, value = entry.decode("utf-8", "replace").partition("=")
        if key in _ACTIVATION_VARIABLES:
            found.setdefault(key, value)
    return found


def _unnamedSystemdSocket(
    arguments: str, environ: Mapping[str, str]
) -> tuple[int, int] | None:
    """
    The descriptor and address family that C{systemd:} C{arguments} (such
    as C{domain=INET:index=0}) mean when C{environ} passes sockets to this
    process without names; None where Twisted's own parser applies.

    @raise IndexError: the index is not one of the sockets passed.
    @raise ValueError: an argument is not understood.
    """
    if "LISTEN_FDNAMES" in environ:
        return None
    fields = dict(field.partition("=")[::2] for field in arguments.split(":"))
    if "index" not in fields or "name" in fields or set(fields) - {"domain", "index"}:
        return None
    if environ.get("LISTEN_PID") != str(os.getpid()):
        raise IndexError("LISTEN_PID is not this process")
    count = environ.get("LISTEN_FDS", "")
    index = fields["index"]
    if not (_isWhole(count) and _isWhole(index)) or int(index) >= int(count):
        raise IndexError(f"index {index} of LISTEN_FDS={count!r}")
    family = getattr(socket, "AF_" + fields.get("domain", ""), None)
    if not isinstance(family, int):
        raise ValueError(f"unknown domain {fields.get('domain')!r}")
    return _LISTEN_FDS_START + int(index), family


class DatagramListener(NamedTuple):
    """
    A UDP listener: its description, port and interface ("" for all IPv4),
    or an inherited socket to adopt instead (a worker's).
    """

    description: str
    port: int
    interface: str
    fileno: int | None = None


def parseDatagramListener(description: str) -> DatagramListener:
    """
    Parse C{PORT} or C{udp:PORT[:interface=ADDRESS]}, with colons in the
    address escaped as in endpoint descriptions (C{udp:7:interface=\\:\\:1}).
    Twisted has no endpoint descriptions for UDP, so this is the same syntax
    for the one endpoint type it lacks.

    @raise ValueError: with a one-line message a user can act on.
    """
    hint = _ipv6Hint(description)
    if hint is not None:
        raise ValueError(hint)
    _checkWhole(description)
    fields = [f.replace("\\:", ":") for f in re.split(r"(?<!\\):", description)]
    if fields[0] == "udp":
        fields.pop(0)
    interface = ""
    args = []
    for field in fields:
        key, equals, value = field.partition("=")
        if not equals:
            args.append(field)
        elif key in ("interface", "port") and value:
            if key == "port":
                args.append(value)
            else:
                interface = value
        else:
            raise ValueError(
                f"{description!r}: unknown UDP option {key!r} (use udp:PORT or"
                f" udp:PORT:interface=ADDRESS)"
            )
    if len(args) != 1 or not _isWhole(args[0]) or int(args[0]) > 65535:
        raise ValueError(
            f"{description!r} is not a UDP port (use PORT, udp:PORT or"
            f" udp:PORT:interface=ADDRESS, e.g. udp:7:interface=\\:\\:1)"
        )
    if interface and not (isIPAddress(interface) or isIPv6Address(interface)):
        raise ValueError(
            f"{description!r}: interface {interface!r} is not an IP address"
        )
    port = int(args[0])
    text = f"udp:{port}" + (
        ":interface=" + interface.replace(":", "\\:") if interface else ""
    )
    return DatagramListener(text, port, interface)
