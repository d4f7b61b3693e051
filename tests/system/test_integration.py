"""
The real twistd, as a user runs it: a subprocess on a random loopback port,
real socket clients, every wait bounded.
"""

from __future__ import annotations

import ctypes
import os
import select
import signal
import socket
import struct
import subprocess
import time

from twisted.trial.unittest import SkipTest

from echotwist.connections import DEFAULT_DRAIN_QUIET
from tests._clients import echoOnce, exchange, readUntilClosed
from tests._tools import CHECKOUT, requireRoot, requireTool, selfSignedCertificate
from tests._twistd import (
    LOOPBACK,
    WAIT,
    Server,
    ServerTestCase,
    TwistedReactorMixin,
    command,
)
from tests.system.test_signals import logPort, waitInFile

KiB = 1024
MiB = 1024 * 1024
_PR_CAPBSET_DROP = 24
_CAP_NET_BIND_SERVICE = 10
_CAP_DAC_OVERRIDE = 1
_CAP_DAC_READ_SEARCH = 2


def asFileModesSay() -> object:
    """
    A preexec function that takes from root the capabilities that override
    file modes, so that twistd meets a mode as any other user would; None
    when not root.
    """
    if os.geteuid() != 0:
        return None
    libc = ctypes.CDLL(None, use_errno=True)

    def preexec() -> None:
        for capability in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH):
            if libc.prctl(_PR_CAPBSET_DROP, capability, 0, 0, 0):
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")

    return preexec


def timeWaitPorts() -> set[int]:
    """
    Local ports of loopback TCP sockets in TIME_WAIT.
    """
    ports = set()
    with open("/proc/net/tcp") as table:
        next(table)
        for row in table:
            fields = row.split()
            local, state = fields[1], fields[3]
            if state == "06":
                ports.add(int(local.split(":")[1], 16))
    return ports


class TwistdEchoTests(ServerTestCase):
    def test_hundredConcurrentClients(self) -> None:
        server = self.start()
        payloads = [os.urandom(64 * 1024) for _ in range(100)]
        results = exchange((LOOPBACK, server.port), payloads)
        for payload, (received, _) in zip(payloads, results, strict=True):
            self.assertEqual(received, payload)

    def test_halfCloseGetsEverythingThenEOF(self) -> None:
        server = self.start()
        payload = os.urandom(4 * MiB)
        ((received, eof),) = exchange(
            (LOOPBACK, server.port), [payload], halfClose=True
        )
        self.assertEqual(len(received), len(payload))
        self.assertEqual(received, payload)
        self.assertTrue(eof)
        server.waitFor(r"4194304 bytes echoed: client finished sending")

    def test_healthChecksCloseQuietly(self) -> None:
        """
        Clients that connect and close without sending anything, by RST as
        HAProxy's health checks do, or by FIN, are each logged as such,
        not as a connection lost in a non-clean fashion.
        """
        server = self.start()
        for reset in (True, False):
            check = socket.create_connection((LOOPBACK, server.port), timeout=WAIT)
            if reset:
                check.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
            check.close()
        server.waitForCount(r" disconnected after ", 2)
        closes = [line for line in server.lines if " disconnected after " in line]
        self.assertEqual(len(closes), 2, closes)
        for line in closes:
            self.assertTrue(
                line.endswith(
                    " 0 bytes echoed: client closed without sending anything"
                ),
                line,
            )
        self.assertNotIn("non-clean", server.output)

    def test_neverReadingClientCannotGrowTheServer(self) -> None:
        """
        A client pushes up to 64 MiB and reads nothing: the server stops
        reading from it, so the client stalls well short of 64 MiB and
        the server's memory grows by less than 16 MiB.  Others are served
        meanwhile.
        """
        server = self.start()
        address = (LOOPBACK, server.port)
        self.assertEqual(echoOnce(address, b"warm up"), b"warm up")
        before = server.rss()

        hog = socket.create_connection(address, timeout=WAIT)
        self.addCleanup(hog.close)
        hog.setblocking(False)
        chunk = os.urandom(MiB)
        sent = 0
        while sent < 64 * MiB:
            # Stalled: the socket stayed unwritable for two seconds.
            if not select.select([], [hog], [], 2.0)[1]:
                break
            try:
                sent += hog.send(chunk)
            except BlockingIOError:
                pass

        grown = server.rss() - before
        self.assertLess(sent, 64 * MiB, "nothing held the client back")
        self.assertLess(grown, 16 * MiB, f"server grew {grown} bytes")
        payload = os.urandom(100_000)
        self.assertEqual(echoOnce(address, payload), payload)


class TwistedReactorEchoTests(TwistedReactorMixin, TwistdEchoTests):
    """
    The same, on Twisted's epoll reactor (C{twistd --reactor epoll}), where
    every read goes through the transport and the protocol.
    """


class LifecycleTests(ServerTestCase):
    def drainsOn(self, signum: int) -> None:
        """
        On C{signum}: open clients get their echo and a clean close (FIN),
        the process exits by the signal, and a new server binds the same
        port at once although the old connections are in TIME_WAIT.
        """
        server = self.start()
        port = server.port
        address = (LOOPBACK, port)
        clients = [socket.create_connection(address, timeout=WAIT) for _ in range(5)]
        for client in clients:
            self.addCleanup(client.close)
            client.sendall(b"before the signal")
        # Every one accepted: a connection still in the listen queue when
        # the server stops listening is reset by the kernel, not drained.
        for client in clients:
            server.waitFor(rf":{client.getsockname()[1]} connected", WAIT)

        server.signal(signum)
        for client in clients:
            self.assertEqual(readUntilClosed(client), (b"before the signal", "eof"))
            client.close()
        self.assertEqual(server.wait(), -signum)
        self.assertIn("Drain finished", server.output)
        # The server closed first, so its ends of those connections linger
        # in TIME_WAIT on the port (once our FINs reach them).
        deadline = time.monotonic() + WAIT
        while port not in timeWaitPorts():
            self.assertLess(time.monotonic(), deadline, "no TIME_WAIT on the port")
            time.sleep(0.01)

        again = self.start("--port", f"tcp:{port}:interface={LOOPBACK}")
        self.assertEqual(again.port, port)
        self.assertEqual(echoOnce(address, b"again"), b"again")

    def test_sigterm(self) -> None:
        self.drainsOn(signal.SIGTERM)

    def test_sigint(self) -> None:
        self.drainsOn(signal.SIGINT)

    def pacedUpload(
        self, server: Server, *, chunks: int = 32, signalAfter: int = 8
    ) -> tuple[bytes, bytes, bool]:
        """
        A client sends C{chunks} 64 KiB writes 200 ms apart, reading its
        echo as it goes, and SIGTERM reaches the server after
        C{signalAfter} of them.  Once everything is sent the client keeps
        reading (without closing) until the server closes.

        @return: what was sent, what came back, and whether the server
            closed with a FIN (rather than a reset).
        """
        payload = os.urandom(chunks * 64 * KiB)
        received = bytearray()
        client = socket.create_connection((LOOPBACK, server.port), timeout=WAIT)
        self.addCleanup(client.close)
        client.setblocking(False)
        server.waitFor(r" connected$")
        sent = 0
        nextWrite = time.monotonic()
        deadline = nextWrite + chunks * 0.2 + WAIT
        eof = reset = False
        while not (eof or reset):
            now = time.monotonic()
            self.assertLess(now, deadline, f"{len(received)} bytes back so far")
            wantWrite = sent < len(payload) and now >= nextWrite
            timeout = max(0.0, nextWrite - now) if sent < len(payload) else 1.0
            readable, writable, _ = select.select(
                [client], [client] if wantWrite else [], [], timeout
            )
            if readable:
                try:
                    chunk = client.recv(256 * KiB)
                except ConnectionResetError:
                    reset = True
                    continue
                if chunk:
                    received += chunk
                else:
                    eof = True
            if writable:
                end = (sent // (64 * KiB) + 1) * 64 * KiB
                try:
                    sent += client.send(payload[sent:end])
                except (BrokenPipeError, ConnectionResetError):
                    reset = True
                    continue
                if sent == end:
                    nextWrite = time.monotonic() + 0.2
                    if sent == signalAfter * 64 * KiB:
                        server.signal(signal.SIGTERM)
        return payload, bytes(received), eof

    def test_sigtermWaitsForAPausingClient(self) -> None:
        """
        A client that pauses 200 ms between 64 KiB writes keeps its stream
        through a SIGTERM: it gets all 2 MiB back, then a clean close once
        it has been quiet for the default drain quiet period.
        """
        server = self.start()
        payload, received, eof = self.pacedUpload(server)
        self.assertEqual(len(received), len(payload))
        self.assertTrue(received == payload, "the echo differs from what was sent")
        self.assertTrue(eof, "the server reset the connection")
        self.assertEqual(server.wait(), -signal.SIGTERM)
        self.assertIn("Drain finished", server.output)

    def test_sigtermWaitsForAPausingClientWithWorkers(self) -> None:
        """
        The same through --workers 2: the supervisor passes SIGTERM on, and
        the worker drains with the quiet period given to the supervisor.
        """
        server = self.start(
            "--port",
            f"tcp:0:interface={LOOPBACK}",
            "--workers",
            "2",
            "--drain-quiet",
            "3",
        )
        server.waitFor(r"Worker 2 serving")
        payload, received, eof = self.pacedUpload(server)
        server.waitFor(
            r"worker \d\] Draining 1 connection\(s\): each closes once quiet for 3\.0s"
        )
        self.assertEqual(len(received), len(payload))
        self.assertTrue(received == payload, "the echo differs from what was sent")
        self.assertTrue(eof, "the server reset the connection")
        self.assertEqual(server.wait(), -signal.SIGTERM)
        self.assertIn("All workers have exited", server.output)

    def test_drainQuietZeroWaitsForTheClient(self) -> None:
        """
        With --drain-quiet 0 a silent client keeps its connection until it
        closes it itself, within --shutdown-timeout.
        """
        server = self.start(
            "--port", f"tcp:0:interface={LOOPBACK}", "--drain-quiet", "0"
        )
        client = socket.create_connection((LOOPBACK, server.port), timeout=WAIT)
        self.addCleanup(client.close)
        client.sendall(b"first")
        self.assertEqual(client.recv(100), b"first")
        server.signal(signal.SIGTERM)
        server.waitFor(r"Draining 1 connection")
        # Silent for three times the default quiet period: still served.
        client.settimeout(3 * DEFAULT_DRAIN_QUIET)
        with self.assertRaises(socket.timeout):
            client.recv(100)
        client.sendall(b"still here")
        client.shutdown(socket.SHUT_WR)
        self.assertEqual(readUntilClosed(client), (b"still here", "eof"))
        self.assertEqual(server.wait(), -signal.SIGTERM)

    def test_sigsegvIsReportedAndThePortIsFreeAtOnce(self) -> None:
        server = self.start()
        port = server.port
        self.assertEqual(echoOnce((LOOPBACK, port), b"x"), b"x")
        server.signal(signal.SIGSEGV)
        self.assertEqual(server.wait(), -signal.SIGSEGV)
        self.assertIn("Fatal Python error: Segmentation fault", server.output)
        self.assertRegex(server.output, r'File ".*", line \d+')

        again = self.start("--port", f"tcp:{port}:interface={LOOPBACK}")
        self.assertEqual(again.port, port)
        self.assertEqual(echoOnce((LOOPBACK, port), b"y"), b"y")


class RefusalTests(ServerTestCase):
    def test_badPort(self) -> None:
        output = self.failedStart("--port", "abc")
        self.assertIn("--port: 'abc' is neither a port number", output.splitlines()[-1])

    def test_unknownEndpoint(self) -> None:
        output = self.failedStart("--listen", "foo:1")
        self.assertIn("Unknown endpoint type: 'foo'", output.splitlines()[-1])

    def test_portInUse(self) -> None:
        taken = socket.socket()
        self.addCleanup(taken.close)
        taken.bind((LOOPBACK, 0))
        taken.listen()
        port = taken.getsockname()[1]
        output = self.failedStart("--port", f"tcp:{port}:interface={LOOPBACK}")
        self.assertIn(
            f"echotwist: cannot listen on tcp:{port}:interface={LOOPBACK}:"
            " Address already in use",
            output,
        )

    def test_portInUseWhenDaemonizing(self) -> None:
        """
        Without -n, twistd forks a daemon and waits for word from it: the
        refusal reaches the waiting process, which says why and exits 1.
        """
        taken = socket.socket()
        self.addCleanup(taken.close)
        taken.bind((LOOPBACK, 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [
                command("twistd"),
                f"--pidfile={self.directory}/twistd.pid",
                f"--logfile={self.directory}/twistd.log",
                "echo",
                "--port",
                f"tcp:{port}:interface={LOOPBACK}",
            ],
            cwd=self.directory,
            capture_output=True,
            text=True,
            timeout=WAIT,
        )
        self.assertEqual(result.returncode, 1)
        # twistd's own frame around the daemon's word, and the word whole.
        self.assertEqual(
            result.stderr.splitlines()[0],
            "An error has occurred: b'cannot listen on"
            f" tcp:{port}:interface={LOOPBACK}: Address already in use'",
        )
        self.assertNotIn("Traceback", result.stderr)
        self.assertNotIn("CannotListen", result.stderr)
        # The daemon tells the waiting process first and removes its pidfile
        # after: on a loaded machine the waiting one can exit in between.
        deadline = time.monotonic() + WAIT
        while os.path.exists(f"{self.directory}/twistd.pid"):
            self.assertLess(time.monotonic(), deadline, "the pidfile is left")
            time.sleep(0.02)

    def test_missingCertificateFile(self) -> None:
        """
        An C{ssl:} listener whose certificate file is missing is refused
        with a line naming the file and C{certKey=}.
        """
        key, _ = selfSignedCertificate(self.directory)
        missing = os.path.join(self.directory, "missing.pem")
        description = f"ssl:0:interface={LOOPBACK}:privateKey={key}:certKey={missing}"
        output = self.failedStart("--port", description)
        self.assertTrue(
            output.splitlines()[-1].endswith(
                f"--port: {description!r}: the TLS certificate file (certKey=)"
                f" {missing!r} does not exist"
            ),
            output,
        )

    def test_keyWithoutCertificate(self) -> None:
        """
        An C{ssl:} listener given a key and no C{certKey=} is told that the
        key file holds no certificate, not OpenSSL's "no start line".
        """
        key, _ = selfSignedCertificate(self.directory)
        description = f"ssl:0:interface={LOOPBACK}:privateKey={key}"
        output = self.failedStart("--listen", description)
        last = output.splitlines()[-1]
        self.assertTrue(
            last.endswith(
                f"--listen: {description!r}: {key!r} holds no certificate; name"
                " the certificate file with certKey= (privateKey= holds the key)"
            ),
            output,
        )
        self.assertNotIn("PEM routines", output)

    def test_unixSocketInAMissingDirectory(self) -> None:
        """
        A UNIX socket in a directory that does not exist: the line names
        the directory, not Twisted's lock file.
        """
        directory = os.path.join(self.directory, "run", "echotwist")
        description = f"unix:{directory}/echo.sock"
        output = self.failedStart("--port", description)
        self.assertIn(
            f"echotwist: cannot listen on {description}: its directory"
            f" {directory} does not exist",
            output,
        )
        self.assertNotIn(".lock", output)

    def readOnlyDirectory(self, path: str) -> object:
        """
        Make C{path} a directory nobody may write, root included: the
        preexec function to run twistd with (L{asFileModesSay}).
        """
        os.makedirs(path, exist_ok=True)
        os.chmod(path, 0o555)
        self.addCleanup(os.chmod, path, 0o700)
        return asFileModesSay()

    def test_pidfileInAReadOnlyDirectory(self) -> None:
        """
        A pidfile twistd could not create was a PermissionError traceback
        after the service was made; now one line, before anything starts.
        """
        directory = os.path.join(self.directory, "run")
        preexec = self.readOnlyDirectory(directory)
        output = self.failedStart(
            runner=[command("twistd"), "-n", f"--pidfile={directory}/echo.pid", "echo"],
            preexec=preexec,
        )
        self.assertEqual(
            output.splitlines()[-1],
            f"echotwist: --pidfile: cannot write {directory}/echo.pid: Permission"
            f" denied to create a file in {directory}",
        )

    def test_pidfileBehindADirectoryNotOurs(self) -> None:
        """
        A pidfile in a directory behind one this user may not search: the
        line said that directory did not exist.
        """
        locked = os.path.join(self.directory, "locked")
        run = os.path.join(locked, "run")
        os.makedirs(run)
        os.chmod(locked, 0o700)
        if os.geteuid() == 0:
            os.chown(locked, 1, 1)
        else:
            os.chmod(locked, 0o600)
            self.addCleanup(os.chmod, locked, 0o700)
        output = self.failedStart(
            runner=[command("twistd"), "-n", f"--pidfile={run}/echo.pid", "echo"],
            preexec=asFileModesSay(),
        )
        self.assertEqual(
            output.splitlines()[-1],
            f"echotwist: --pidfile: cannot write {run}/echo.pid: Permission"
            f" denied to reach {run}",
        )

    def test_defaultPidfileInAReadOnlyDirectory(self) -> None:
        """
        Without C{--pidfile}, twistd writes C{twistd.pid} where it was
        started: the line says so, and how to do otherwise.
        """
        preexec = self.readOnlyDirectory(self.directory)
        output = self.failedStart(
            runner=[command("twistd"), "-n", "echo"], preexec=preexec
        )
        self.assertEqual(
            output.splitlines()[-1],
            f"echotwist: --pidfile: cannot write {self.directory}/twistd.pid:"
            f" Permission denied to create a file in {self.directory} (twistd's"
            " default: --pidfile=PATH for another, --pidfile= for none)",
        )

    def test_stalePidfileNotOurs(self) -> None:
        """
        A pidfile this user may not write, naming no running process, in a
        directory where it may: twistd removes it as stale and writes its
        own (a root-owned file left by an earlier run, say).  The check
        refused it ("Permission denied").  One that names a running
        process is still refused.
        """
        pidfile = os.path.join(self.directory, "echo.pid")
        with open("/proc/sys/kernel/pid_max") as f:
            noProcess = int(f.read()) + 1
        with open(pidfile, "w") as f:
            f.write(str(noProcess))
        os.chmod(pidfile, 0o444)
        runner = [command("twistd"), "-n", f"--pidfile={pidfile}", "echo"]
        server = self.start(runner=runner, preexec=asFileModesSay())
        self.assertEqual(echoOnce((LOOPBACK, server.port), b"stale"), b"stale")
        with open(pidfile) as f:
            self.assertEqual(f.read(), str(server.process.pid))
        os.chmod(pidfile, 0o444)
        self.failedStart(runner=runner, preexec=asFileModesSay())
        server.signal(signal.SIGTERM)
        self.assertEqual(server.wait(), -signal.SIGTERM, server.output)

    def test_rundirNotOurs(self) -> None:
        """
        A C{--rundir} this user may not enter: twistd's C{chdir} there,
        after the service was made, was a PermissionError traceback.
        """
        rundir = os.path.join(self.directory, "rundir")
        os.mkdir(rundir, 0o700)
        if os.geteuid() == 0:
            os.chown(rundir, 1, 1)
        else:
            os.chmod(rundir, 0o600)
            self.addCleanup(os.chmod, rundir, 0o700)
        output = self.failedStart(
            runner=[
                command("twistd"),
                "-n",
                "--pidfile=",
                f"--rundir={rundir}",
                "echo",
            ],
            preexec=asFileModesSay(),
        )
        self.assertEqual(
            output.splitlines()[-1],
            f"echotwist: --rundir: cannot change to {rundir}: Permission denied"
            " to enter it",
        )

    def test_pidfileIsADirectory(self) -> None:
        output = self.failedStart(
            runner=[command("twistd"), "-n", f"--pidfile={self.directory}", "echo"]
        )
        self.assertEqual(
            output.splitlines()[-1],
            f"echotwist: --pidfile: cannot write {self.directory}: it is a directory",
        )

    def test_logfileInAMissingDirectory(self) -> None:
        """
        A log file twistd could not open was a FileNotFoundError traceback;
        daemonizing, it is refused before the fork, in the foreground.
        """
        missing = os.path.join(self.directory, "log", "echotwist")
        output = self.failedStart(
            runner=[
                command("twistd"),
                "--pidfile=",
                f"--logfile={missing}/echo.log",
                "echo",
            ]
        )
        self.assertEqual(
            output.splitlines()[-1],
            f"echotwist: --logfile: cannot write {missing}/echo.log: its directory"
            f" {missing} does not exist",
        )

    def test_logfileUnderChroot(self) -> None:
        """
        twistd opens its log file before it changes root: under
        C{--chroot}, one that cannot be opened was a FileNotFoundError
        traceback.
        """
        requireRoot("chroot(2)")
        missing = os.path.join(self.directory, "log")
        output = self.failedStart(
            runner=[
                command("twistd"),
                "-n",
                "--pidfile=",
                "--chroot=/",
                f"--logfile={missing}/echo.log",
                "echo",
            ]
        )
        self.assertEqual(
            output.splitlines()[-1],
            f"echotwist: --logfile: cannot write {missing}/echo.log: its directory"
            f" {missing} does not exist",
        )

    def test_writeOnlyLogfile(self) -> None:
        """
        twistd opens a log file that exists to read and write: one this
        user may only write was a PermissionError traceback.
        """
        logfile = os.path.join(self.directory, "echo.log")
        with open(logfile, "w"):
            pass
        os.chmod(logfile, 0o200)
        output = self.failedStart(
            runner=[command("twistd"), "--pidfile=", f"--logfile={logfile}", "echo"],
            preexec=asFileModesSay(),
        )
        self.assertEqual(
            output.splitlines()[-1],
            f"echotwist: --logfile: cannot write {logfile}: Permission denied to"
            " read it, which twistd does too",
        )

    def test_writeOnlyPidfile(self) -> None:
        """
        twistd reads a pidfile that is there before it writes its own: one
        this user may only write was a PermissionError traceback.
        """
        pidfile = os.path.join(self.directory, "echo.pid")
        with open(pidfile, "w") as f:
            f.write("1")
        os.chmod(pidfile, 0o200)
        output = self.failedStart(
            runner=[command("twistd"), "-n", f"--pidfile={pidfile}", "echo"],
            preexec=asFileModesSay(),
        )
        self.assertEqual(
            output.splitlines()[-1],
            f"echotwist: --pidfile: cannot write {pidfile}: Permission denied to"
            " read it, which twistd does too",
        )

    def test_jsonLogsWhenDaemonizing(self) -> None:
        """
        Daemonizing, twistd points standard output, where echotwist's JSON
        observer writes, at /dev/null: it started, and every line after the
        fork was lost.
        """
        output = self.failedStart(
            "--port",
            f"tcp:0:interface={LOOPBACK}",
            runner=[
                command("twistd"),
                f"--pidfile={self.directory}/twistd.pid",
                "--logger",
                "echotwist.logs.jsonObserver",
                "echo",
            ],
        )
        self.assertEqual(
            output.splitlines()[-1],
            "echotwist: --logger echotwist.logs.jsonObserver writes to standard"
            " output, which a daemonizing twistd points at /dev/null: add -n",
        )
        self.assertFalse(os.path.exists(f"{self.directory}/twistd.pid"))

    def test_syslogWithNoSyslogDaemon(self) -> None:
        """
        C{--syslog} where nothing listens at /dev/log: twistd served, and
        logged nothing anywhere.
        """
        if os.path.exists("/dev/log"):
            raise SkipTest("a syslog socket is there (/dev/log)")
        output = self.failedStart(
            "--port",
            f"tcp:0:interface={LOOPBACK}",
            runner=[command("twistd"), "-n", "--pidfile=", "--syslog", "echo"],
        )
        self.assertEqual(
            output.splitlines()[-1],
            "echotwist: --syslog: no syslog daemon listens at /dev/log here, and"
            " every line would be lost; log to a file (--logfile) or to standard"
            " output (-n)",
        )

    def test_syslogBesideALogger(self) -> None:
        """
        C{--syslog} beside a C{--logger}: twistd logs to the logger's
        observer and ignores C{--syslog}, so no syslog daemon is needed;
        it was refused for the missing /dev/log.
        """
        if os.path.exists("/dev/log"):
            raise SkipTest("a syslog socket is there (/dev/log)")
        with open(os.path.join(self.directory, "stdoutlog.py"), "w") as f:
            f.write(
                "import sys\n"
                "from twisted.logger import textFileLogObserver\n"
                "def observer():\n"
                "    return textFileLogObserver(sys.__stdout__)\n"
            )
        server = self.start(
            "--port",
            f"tcp:0:interface={LOOPBACK}",
            runner=[
                command("twistd"),
                "-n",
                "--pidfile=",
                "--syslog",
                "--logger",
                "stdoutlog.observer",
                "echo",
            ],
            env={"PYTHONPATH": self.directory},
        )
        self.assertEqual(echoOnce((LOOPBACK, server.port), b"logged"), b"logged")
        server.signal(signal.SIGTERM)
        self.assertEqual(server.wait(), -signal.SIGTERM, server.output)

    def test_unreadableKeyFile(self) -> None:
        """
        A key file this user may not read was "is neither a port number nor
        a usable server endpoint description ([Errno 13] ...)".
        """
        directory = os.path.join(self.directory, "tls")
        os.mkdir(directory)
        key, certificate = selfSignedCertificate(directory)
        os.chmod(key, 0)
        description = (
            f"ssl:0:interface={LOOPBACK}:privateKey={key}:certKey={certificate}"
        )
        output = self.failedStart("--port", description, preexec=asFileModesSay())
        self.assertTrue(
            output.splitlines()[-1].endswith(
                f"--port: {description!r}: the TLS private key file (privateKey=)"
                f" {key!r} cannot be read: Permission denied"
            ),
            output,
        )

    def test_unixSocketInAReadOnlyDirectory(self) -> None:
        """
        A UNIX socket in a directory not ours to write: the line said
        "[Errno 13] Permission denied: '1234' -> b'.../echo.sock.lock'",
        Twisted's lock file, a symbolic link named by a pid.
        """
        directory = os.path.join(self.directory, "run")
        preexec = self.readOnlyDirectory(directory)
        description = f"unix:{directory}/echo.sock"
        output = self.failedStart("--port", description, preexec=preexec)
        self.assertEqual(
            output.splitlines()[-1].split("] ", 1)[-1],
            f"echotwist: cannot listen on {description}: Permission denied to"
            f" create a file in {directory}",
        )

    def test_privilegedPortWithoutPermission(self) -> None:
        with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as f:
            if int(f.read()) <= 7:
                raise SkipTest("this host lets anyone bind port 7")
        preexec = None
        if os.geteuid() == 0:
            # Root without CAP_NET_BIND_SERVICE: dropped from the bounding set
            # before exec, the capability is gone from the new program.
            libc = ctypes.CDLL(None, use_errno=True)

            def preexec() -> None:
                if libc.prctl(_PR_CAPBSET_DROP, _CAP_NET_BIND_SERVICE, 0, 0, 0):
                    raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")

        output = self.failedStart(
            "--port", f"tcp:7:interface={LOOPBACK}", preexec=preexec
        )
        self.assertIn(
            f"echotwist: cannot listen on tcp:7:interface={LOOPBACK}: Permission"
            " denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)",
            output,
        )


#: Run by C{unshare -m}: a read-only tmpfs at $1 holding a symbolic link to
#: the writable file $2 and the writable file $3 bind-mounted, then the
#: command after them.  The mounts end with the namespace.
_READ_ONLY_DIRECTORY = (
    'set -e; mount -t tmpfs -o mode=0755 echotwist-test "$1";'
    ' ln -s "$2" "$1/echo.pid"; : > "$1/echo.log";'
    ' mount --bind "$3" "$1/echo.log"; mount -o remount,bind,ro "$1";'
    ' shift 3; exec "$@"'
)


class ReadOnlyDirectoryTests(ServerTestCase):
    """
    twistd's files named in a read-only directory but written elsewhere,
    as a read-only root file system has them: checked where C{open}
    writes, not refused for their directory's file system.
    """

    def test_linkedPidfileAndMountedLogfile(self) -> None:
        """
        A pidfile that is a symbolic link to a writable file, and a log file
        bind-mounted from a writable file system: twistd writes both (the
        check said "read-only file system" and twistd did not start).
        """
        requireRoot("mounts in a mount namespace of its own (unshare -m)")
        unshare = requireTool("unshare", "util-linux")
        readOnly = os.path.join(self.directory, "ro")
        os.mkdir(readOnly)
        pidfile = os.path.join(self.directory, "echo.pid")
        logfile = os.path.join(self.directory, "echo.log")
        with open(logfile, "w"):
            pass
        server = self.start(
            runner=[
                unshare,
                "-m",
                "sh",
                "-c",
                _READ_ONLY_DIRECTORY,
                "sh",
                readOnly,
                pidfile,
                logfile,
                command("twistd"),
                "-n",
                f"--pidfile={readOnly}/echo.pid",
                f"--logfile={readOnly}/echo.log",
                "echo",
                "--port",
                f"tcp:0:interface={LOOPBACK}",
            ]
        )
        port = logPort(waitInFile(self, logfile, r"Listening on "))
        self.assertEqual(echoOnce((LOOPBACK, port), b"ro"), b"ro")
        with open(pidfile) as f:
            self.assertEqual(f.read(), str(server.process.pid))
        server.signal(signal.SIGTERM)
        self.assertEqual(server.wait(), -signal.SIGTERM, server.output)


class CapabilityTests(ServerTestCase):
    """
    twistd's files checked as C{open} will meet them: with the process's
    effective ids and capabilities.
    """

    def test_pidfileWithDacOverride(self) -> None:
        """
        A user with CAP_DAC_OVERRIDE (systemd's C{AmbientCapabilities=})
        writes a pidfile in a directory only root may write; the check
        asked C{os.access}, which drops the capabilities of any user but
        root, and refused it ("Permission denied to create a file in").
        """
        requireRoot("a user with a capability (setpriv)")
        setpriv = requireTool("setpriv", "util-linux")
        run = os.path.join(self.directory, "run")
        os.mkdir(run, 0o700)
        pidfile = os.path.join(run, "echo.pid")
        server = self.start(
            runner=[
                setpriv,
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--inh-caps=+dac_override",
                "--ambient-caps=+dac_override",
                command("twistd"),
                "-n",
                f"--pidfile={pidfile}",
                "echo",
                "--port",
                f"tcp:0:interface={LOOPBACK}",
            ]
        )
        self.assertEqual(echoOnce((LOOPBACK, server.port), b"cap"), b"cap")
        with open(pidfile) as f:
            self.assertEqual(f.read(), str(server.process.pid))
        server.signal(signal.SIGTERM)
        self.assertEqual(server.wait(), -signal.SIGTERM, server.output)


class OtherRunnersTests(ServerTestCase):
    def test_tacFile(self) -> None:
        example = os.path.join(CHECKOUT, "examples", "echo.tac")
        with open(example) as f:
            source = f.read()
        self.assertIn('"tcp:5000"', source)
        tac = os.path.join(self.directory, "echo.tac")
        with open(tac, "w") as f:
            f.write(source.replace('"tcp:5000"', f'"tcp:0:interface={LOOPBACK}"'))
        server = self.start(runner=[command("twistd"), "-n", "--pidfile=", "-y", tac])
        port = server.port
        server.waitFor(r"Listening on unix:")
        self.assertEqual(echoOnce((LOOPBACK, port), b"tac tcp"), b"tac tcp")
        sock = os.path.join(self.directory, "echo.sock")
        self.assertEqual(echoOnce(sock, b"tac unix"), b"tac unix")
        server.signal(signal.SIGTERM)
        self.assertEqual(server.wait(), -signal.SIGTERM)

    def test_twist(self) -> None:
        server = self.start(
            "echo",
            "--port",
            f"tcp:0:interface={LOOPBACK}",
            runner=[command("twist"), "--log-format", "text"],
        )
        self.assertEqual(echoOnce((LOOPBACK, server.port), b"twist"), b"twist")
        server.signal(signal.SIGTERM)
        self.assertEqual(server.wait(), -signal.SIGTERM)

    def test_version(self) -> None:
        """
        C{twistd echo --version} and C{twist echo --version} print
        echotwist's version, with the Twisted and Python it runs on.
        """
        import platform

        import twisted

        from echotwist import __version__

        expected = (
            f"echotwist {__version__} (Twisted {twisted.__version__},"
            f" {platform.python_implementation()} {platform.python_version()})\n"
        )
        for runner in ("twistd", "twist"):
            result = subprocess.run(
                [command(runner), "echo", "--version"],
                cwd=self.directory,
                capture_output=True,
                text=True,
                timeout=WAIT,
            )
            self.assertEqual(
                (result.returncode, result.stdout, result.stderr), (0, expected, "")
            )
