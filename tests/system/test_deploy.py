"""
What deploy/ ships, exercised: the systemd units (verified, and run from
their own ExecStart and ExecReload lines, with a socket passed as systemd
passes it or binding their own), a restart behind a held socket that refuses nobody, the HAProxy
configuration in front of two echotwist instances, and the logrotate
snippet run by the real logrotate against a daemonized twistd.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import threading
import time

from twisted.trial.unittest import SkipTest

from tests._clients import echoOnce
from tests._tools import CHECKOUT, readText, requireTool, startHAProxy
from tests._twistd import LOOPBACK, WAIT, Server, ServerTestCase, command
from tests.system.test_signals import logPort, startDaemon, waitInFile
from tests.system.test_transports import ask, freePort, sendThenRead

DEPLOY = os.path.join(CHECKOUT, "deploy")
UNITS = os.path.join(DEPLOY, "systemd")


def execLine(unit: str, key: str) -> list[str]:
    """
    A unit's C{key}= command line (ExecStart, ExecReload), split.
    """
    with open(os.path.join(UNITS, unit)) as f:
        text = f.read().replace("\\\n", " ")
    (line,) = re.findall(rf"^{key}=(.*)$", text, re.MULTILINE)
    return shlex.split(line)


def execStart(unit: str) -> list[str]:
    """
    A unit's ExecStart command line, with the installed twistd in place of
    /opt/echotwist's.
    """
    argv = execLine(unit, "ExecStart")
    assert argv[0] == "/opt/echotwist/bin/twistd", argv[0]
    return [command("twistd"), *argv[1:]]


def passSocket(listener: socket.socket) -> object:
    """
    A preexec function that hands C{listener} to the child as systemd does:
    descriptor 3, named "echo", for this very process.
    """
    fileno = listener.fileno()

    def preexec() -> None:
        os.dup2(fileno, 3)
        os.putenv("LISTEN_FDS", "1")
        os.putenv("LISTEN_FDNAMES", "echo")
        os.putenv("LISTEN_PID", str(os.getpid()))

    return preexec


class SystemdUnitTests(ServerTestCase):
    def test_unitsVerify(self) -> None:
        analyze = requireTool("systemd-analyze", "systemd")
        for name in os.listdir(UNITS):
            with open(os.path.join(UNITS, name)) as f:
                text = f.read().replace(
                    "/opt/echotwist/bin/", os.path.dirname(command("twistd")) + "/"
                )
            with open(os.path.join(self.directory, name), "w") as f:
                f.write(text)
        result = subprocess.run(
            [
                analyze,
                "verify",
                *sorted(os.path.join(self.directory, n) for n in os.listdir(UNITS)),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        problems = [
            line
            for line in (result.stdout + result.stderr).splitlines()
            # Outside a booted systemd (CI, containers) these say nothing
            # about the units themselves.
            if line.strip()
            and not re.search(
                r"Failed to .*(connect|bus|manager)|not running|Unit is bound|"
                r"hierarchy|cgroup|System has not been booted",
                line,
            )
        ]
        self.assertEqual(problems, [], result.stdout + result.stderr)

    def listener(self) -> tuple[socket.socket, int]:
        """
        A dual-stack listening socket like systemd's ListenStream=PORT,
        bound to [::1] here.
        """
        listener = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        self.addCleanup(listener.close)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("::1", 0))
        listener.listen(4096)
        return listener, listener.getsockname()[1]

    def startUnit(self, listener: socket.socket) -> Server:
        server = Server(
            (),
            cwd=self.directory,
            runner=execStart("echotwist.service"),
            preexec=passSocket(listener),
            passFDs=(3,),
        )
        self.addCleanup(server.kill)
        server.waitFor(r"Listening on \[::1\]:\d+ \(systemd:domain=INET6:name=echo\)")
        return server

    def test_serviceServesThePassedSocket(self) -> None:
        listener, port = self.listener()
        server = self.startUnit(listener)
        payload = os.urandom(100_000)
        self.assertEqual(echoOnce(("::1", port), payload), payload)
        server.signal(signal.SIGTERM)
        self.assertEqual(server.wait(), -signal.SIGTERM)

    def test_reloadIsSighupThatKeepsServing(self) -> None:
        """
        systemctl reload runs ExecReload: the server logs that it has no
        file to reopen (the journal has its output) and keeps serving.
        """
        for unit in ("echotwist.service", "echotwist-plain.service"):
            self.assertEqual(
                execLine(unit, "ExecReload"), ["/bin/kill", "-HUP", "$MAINPID"]
            )
        listener, port = self.listener()
        server = self.startUnit(listener)
        kill, *args = execLine("echotwist.service", "ExecReload")
        subprocess.run(
            [kill, *(str(server.process.pid) if a == "$MAINPID" else a for a in args)],
            check=True,
            timeout=WAIT,
        )
        server.waitFor(r"SIGHUP: no log file to reopen")
        self.assertEqual(echoOnce(("::1", port), b"reloaded"), b"reloaded")
        server.signal(signal.SIGTERM)
        self.assertEqual(server.wait(), -signal.SIGTERM)

    def test_restartRefusesNobody(self) -> None:
        """
        Clients connect in a loop while the service restarts behind the
        socket that systemd (here, the test) holds: every one is served,
        by the old process or, after waiting in the backlog, the new one.
        """
        listener, port = self.listener()
        first = self.startUnit(listener)
        outcomes: list[str] = []
        changed = threading.Condition()
        stop = threading.Event()

        def record(outcome: str) -> None:
            with changed:
                outcomes.append(outcome)
                changed.notify_all()

        def clients() -> None:
            n = 0
            while not stop.is_set():
                payload = b"client %d" % n
                n += 1
                try:
                    received = echoOnce(("::1", port), payload)
                except ConnectionRefusedError:
                    record("refused")
                    continue
                except OSError as e:
                    record(f"error: {e}")
                    continue
                record("ok" if received == payload else "wrong")

        def waitForMore(count: int) -> None:
            with changed:
                self.assertTrue(
                    changed.wait_for(lambda: len(outcomes) >= count, WAIT),
                    f"only {len(outcomes)} clients got through",
                )

        worker = threading.Thread(target=clients)
        worker.start()
        try:
            waitForMore(50)
            first.signal(signal.SIGTERM)
            self.assertEqual(first.wait(), -signal.SIGTERM)
            # Clients now wait in the backlog of the socket the test holds.
            second = self.startUnit(listener)
            waitForMore(len(outcomes) + 50)
            second.signal(signal.SIGTERM)
        finally:
            stop.set()
            worker.join(WAIT)
        self.assertEqual(set(outcomes), {"ok"}, [o for o in outcomes if o != "ok"][:5])


class PlainUnitTests(ServerTestCase):
    def test_plainServiceServesTCPAndUDPOverBothFamilies(self) -> None:
        """
        echotwist-plain.service's own ExecStart, port 7 moved to a free
        port: it serves TCP and UDP to IPv4 and IPv6 clients.  It asked
        for UDP port 7 twice (C{--udp 7} and C{udp:7:interface=\\:\\:}),
        which a Linux host refuses at its default net.ipv6.bindv6only=0 (a
        wildcard IPv6 socket is IPv4's too): "Address already in use", and
        the unit never started.
        """
        with open("/proc/sys/net/ipv6/bindv6only") as f:
            if f.read().strip() != "0":
                raise SkipTest("IPv6 sockets here are IPv6-only (bindv6only)")
        port = freePort()
        argv = []
        for arg in execStart("echotwist-plain.service"):
            if arg == "7":
                arg = str(port)
            argv.append(re.sub(r"^(\w+):7:", rf"\1:{port}:", arg))
        self.assertNotIn("7", argv)
        server = self.start(runner=argv)
        server.waitFor(r"Serving on the ")
        for host in (LOOPBACK, "::1"):
            payload = os.urandom(10_000)
            self.assertEqual(echoOnce((host, port), payload), payload, host)
            self.assertEqual(ask(b"datagram", port, source=(host, 0)), b"datagram")
        server.signal(signal.SIGTERM)
        self.assertEqual(server.wait(), -signal.SIGTERM, server.output)


class HAProxyFleetTests(ServerTestCase):
    def test_shippedConfiguration(self) -> None:
        requireTool("haproxy", "haproxy")
        instances = [
            self.start(
                "--listen",
                f"haproxy:tcp:0:interface={LOOPBACK}",
                "--max-per-source",
                "0",
            )
            for _ in range(2)
        ]
        ports = [instance.port for instance in instances]
        frontend = freePort()
        with open(os.path.join(DEPLOY, "haproxy", "haproxy.cfg")) as f:
            config = f.read()
        config, binds = re.subn(
            r"(?m)^(\s*bind )\S+", rf"\g<1>{LOOPBACK}:{frontend}", config
        )
        for n, port in enumerate(ports, 1):
            config, found = re.subn(
                rf"(?m)^(\s*server echo{n} )\S+", rf"\g<1>{LOOPBACK}:{port}", config
            )
            self.assertEqual(found, 1)
        self.assertEqual(binds, 1)
        path = os.path.join(self.directory, "haproxy.cfg")
        with open(path, "w") as f:
            f.write(config)
        startHAProxy(self, path, frontend)
        # Both instances pass HAProxy's echo health check.
        for instance in instances:
            instance.waitFor(r"disconnected after .*, 8 bytes echoed")

        def throughProxy(payload: bytes) -> tuple[bytes, int]:
            client = socket.socket()
            client.settimeout(WAIT)
            client.bind(("127.0.0.2", 0))
            client.connect((LOOPBACK, frontend))
            with client:
                return sendThenRead(client, payload), client.getsockname()[1]

        for _ in range(4):
            payload = os.urandom(256 * 1024)
            received, clientPort = throughProxy(payload)
            self.assertEqual(received, payload)
            found = [
                instance
                for instance in instances
                if f"127.0.0.2:{clientPort} connected" in instance.output
            ]
            deadline = time.monotonic() + WAIT
            while not found:
                self.assertLess(
                    time.monotonic(), deadline, "no instance logged the client"
                )
                time.sleep(0.02)
                found = [
                    i
                    for i in instances
                    if f"127.0.0.2:{clientPort} connected" in i.output
                ]

        # One instance dies; the service still answers through the other.
        instances[0].process.kill()
        instances[0].wait()
        for n in range(20):
            payload = b"after the loss %d" % n
            self.assertEqual(throughProxy(payload)[0], payload)


class LogrotateTests(ServerTestCase):
    def test_shippedSnippetRotatesADaemonizedTwistd(self) -> None:
        """
        deploy/logrotate/echotwist, paths rewritten into the test's
        directory, run by logrotate -f against twistd daemonized with
        --workers 2: the moved file holds what came before and the server's
        "reopening" line; the file at the path every line after, workers'
        connections included; no client is refused.
        """
        logrotate = requireTool("logrotate", "logrotate")
        logPath, pidPath, outPath, daemon = startDaemon(
            self, "--port", f"tcp:0:interface={LOOPBACK}", "--workers", "2"
        )
        port = logPort(waitInFile(self, logPath, r" Worker \d serving$", 2))
        self.assertEqual(echoOnce((LOOPBACK, port), b"before"), b"before")
        waitInFile(self, logPath, r"worker \d\] \S+ disconnected after .* 6 bytes")

        with open(os.path.join(DEPLOY, "logrotate", "echotwist")) as f:
            snippet = f.read()
        self.assertIn("/var/log/echotwist/echo.log {", snippet)
        self.assertIn('kill -HUP "$(cat /run/echotwist.pid)"', snippet)
        config = os.path.join(self.directory, "logrotate.conf")
        with open(config, "w") as f:
            f.write(
                snippet.replace("/var/log/echotwist/echo.log", logPath).replace(
                    "/run/echotwist.pid", pidPath
                )
            )
        result = subprocess.run(
            [
                logrotate,
                "-v",
                "-f",
                "-s",
                os.path.join(self.directory, "state"),
                config,
            ],
            capture_output=True,
            text=True,
            timeout=WAIT,
        )
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        (rotated,) = [
            os.path.join(self.directory, name)
            for name in os.listdir(self.directory)
            if name.startswith("echo.log-")
        ]
        waitInFile(self, logPath, r"SIGHUP: reopened the log file")
        # The rolling restart the same SIGHUP began ends in the new file.
        waitInFile(self, logPath, r"SIGHUP: 2 of 2 worker\(s\) replaced")
        self.assertEqual(echoOnce((LOOPBACK, port), b"after!!"), b"after!!")
        new = waitInFile(
            self, logPath, r"worker \d\] \S+ disconnected after .* 7 bytes"
        )
        old = readText(rotated)
        self.assertIn(" 6 bytes echoed", old)
        self.assertIn("SIGHUP: reopening the log file", old)
        self.assertNotIn(" 6 bytes echoed", new)
        self.assertNotIn(" 7 bytes echoed", old)
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(WAIT)
        self.assertIn("Server Shut Down", readText(logPath))
        self.assertEqual(readText(outPath), "")
