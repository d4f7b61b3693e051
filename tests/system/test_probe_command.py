"""
echotwist-probe as a user runs it: the command as a subprocess against a
real twistd (TCP, UDP, TLS, UNIX), xinetd's builtin echo, and small
servers that misbehave (tests/_badservers.py).  Every run is bounded by
--count or --duration and by a subprocess timeout, on loopback.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from echotwist.probe.payload import Payloads
from tests._badservers import HTTP_ANSWER
from tests._tools import (
    CHECKOUT,
    requireModule,
    requireRoot,
    requireTool,
    scratchDirectory,
    selfSignedCertificate,
    withoutTLS,
)
from tests._twistd import LOOPBACK, WAIT, ServerTestCase, command
from tests.system.test_transports import freePort


def _defaultSignals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def probe(*args: str) -> subprocess.CompletedProcess[str]:
    """
    Run echotwist-probe to its end (bounded); its status and output.
    """
    return subprocess.run(
        [command("echotwist-probe"), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=WAIT * 2,
    )


class ProbeTestCase(ServerTestCase):
    def ok(self, *args: str, status: int = 0) -> subprocess.CompletedProcess[str]:
        result = probe(*args)
        self.assertEqual(result.returncode, status, result.stdout + result.stderr)
        self.assertNotIn("Traceback", result.stdout + result.stderr)
        return result

    def document(self, *args: str, status: int = 0) -> dict[str, object]:
        path = os.path.join(self.directory, "probe.json")
        self.ok(*args, "--json", path, status=status)
        with open(path) as f:
            document: dict[str, object] = json.load(f)
        return document

    def refused(self, *args: str) -> str:
        """
        Run a probe that must end in an error: exit 2, one line on
        standard error, no traceback; that line.
        """
        result = probe(*args)
        self.assertEqual(result.returncode, 2, result.stdout + result.stderr)
        lines = result.stderr.splitlines()
        self.assertEqual(len(lines), 1, result.stderr)
        self.assertTrue(lines[0].startswith("echotwist-probe: "), lines[0])
        self.assertNotIn("Traceback", result.stdout)
        return lines[0]

    def badServer(self, mode: str) -> int:
        """
        Start one of tests/_badservers.py's servers (L{server}); its port.
        """
        server = subprocess.Popen(
            [sys.executable, os.path.join(CHECKOUT, "tests", "_badservers.py"), mode],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.addCleanup(server.wait, WAIT)
        self.addCleanup(server.kill)
        self.server = server
        assert server.stdout is not None
        ready, _, _ = select.select([server.stdout], [], [], WAIT)
        self.assertTrue(ready, f"{mode} server never started")
        line = server.stdout.readline()
        self.assertTrue(line.startswith("PORT "), line)
        return int(line.split()[1])

    def interruptible(self, *args: str) -> subprocess.Popen[str]:
        """
        Start echotwist-probe with SIGINT at its default, as from a
        terminal, for a test to interrupt; it is killed at the end.
        """
        process = subprocess.Popen(
            [command("echotwist-probe"), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=_defaultSignals,
        )
        self.addCleanup(process.wait, WAIT)
        self.addCleanup(lambda: process.poll() is None and process.kill())
        return process

    def readLine(self, process: subprocess.Popen[str]) -> str:
        """
        The next line of C{process}'s output (a probe, or a bad server),
        waited for at most L{WAIT}.
        """
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], WAIT)
        self.assertTrue(ready, "no line from the probe")
        return process.stdout.readline()

    def startUDP(self, *args: str) -> int:
        port = freePort(socket.SOCK_DGRAM)
        server = self.start("--udp", f"udp:{port}:interface={LOOPBACK}", *args)
        server.waitFor(r"Listening on .*\(udp:")
        return port


class ProbeTransportTests(ProbeTestCase):
    """
    Each mode over each transport, against twistd -n echo.
    """

    def test_tcp(self) -> None:
        port = self.start().port
        result = self.ok(f"tcp:127.0.0.1:{port}", "-c", "3", "-i", "0.05")
        lines = result.stdout.splitlines()
        self.assertTrue(
            lines[0].startswith(f"PROBE tcp:127.0.0.1:{port}: 64 bytes every 0.05 s")
        )
        self.assertEqual(
            sum(" bytes from " in line for line in lines), 3, result.stdout
        )
        self.assertIn("3 probes sent, 3 answered, 0% lost", result.stdout)
        self.assertIn("rtt min/avg/p50/p90/p99/max/mdev = ", result.stdout)
        self.assertEqual(result.stderr, "")

    def test_bareHostAndPort(self) -> None:
        """
        A bare HOST with --port is TCP there; python -m runs the same.
        """
        port = self.start().port
        self.ok("127.0.0.1", "--port", str(port), "-c", "1")
        result = subprocess.run(
            [sys.executable, "-m", "echotwist.probe", f"127.0.0.1:{port}", "-c", "1"],
            capture_output=True,
            text=True,
            timeout=WAIT,
        )
        self.assertEqual(result.returncode, 0, result.stderr)

    def test_json(self) -> None:
        port = self.start().port
        document = self.document(
            f"tcp:127.0.0.1:{port}",
            "-c",
            "4",
            "-i",
            "0.01",
            "--seed",
            "7",
            "-s",
            "1000",
        )
        self.assertEqual(document["schema"], "echotwist-probe/1")
        self.assertEqual(document["exit_status"], 0)
        settings = document["settings"]
        assert isinstance(settings, dict)
        self.assertEqual(
            (settings["seed"], settings["size"], settings["transport"]),
            (7, 1000, "tcp"),
        )
        samples = document["samples"]
        assert isinstance(samples, list)
        self.assertEqual([s["seq"] for s in samples], [0, 1, 2, 3])
        self.assertTrue(all(s["status"] == "ok" and s["rtt_ms"] > 0 for s in samples))
        self.assertIsNotNone(samples[0]["connect_ms"])
        summary = document["summary"]
        assert isinstance(summary, dict)
        self.assertEqual(
            (summary["sent"], summary["answered"], summary["lost"]), (4, 4, 0)
        )

    def test_jsonToStandardOutput(self) -> None:
        port = self.start().port
        result = self.ok(
            f"tcp:127.0.0.1:{port}", "-c", "2", "-i", "0.01", "--json", "-"
        )
        self.assertEqual(json.loads(result.stdout)["summary"]["answered"], 2)

    def test_udp(self) -> None:
        port = self.startUDP()
        document = self.document(f"udp:127.0.0.1:{port}", "-c", "5", "-i", "0.05")
        summary = document["summary"]
        assert isinstance(summary, dict)
        self.assertEqual(
            (summary["answered"], summary["duplicates"], summary["reordered"]),
            (5, 0, 0),
        )

    def test_udpLargest(self) -> None:
        port = self.startUDP()
        self.ok(f"udp:127.0.0.1:{port}", "-c", "2", "-i", "0.05", "-s", "65507")

    def test_tls(self) -> None:
        key, certificate = selfSignedCertificate(self.directory)
        port = self.start(
            "--port",
            f"ssl:0:interface={LOOPBACK}:privateKey={key}:certKey={certificate}",
        ).port
        result = self.ok(
            f"tls:localhost:{port}", "--ca", certificate, "-c", "3", "-i", "0.05"
        )
        self.assertIn("3 probes sent, 3 answered", result.stdout)
        self.assertIn("connect=", result.stdout)
        self.ok(f"tls:127.0.0.1:{port}", "--insecure", "-c", "2", "-i", "0.05", "-C")
        line = self.refused(f"tls:localhost:{port}", "-c", "1")
        self.assertIn(f"tls:localhost:{port}: the certificate did not verify", line)

    def test_tlsCertificateForAnotherHost(self) -> None:
        """
        A certificate trusted with --ca but for other names (localhost and
        127.0.0.1, reached as ::1): one line that says so, not the advice
        to trust another authority.
        """
        key, certificate = selfSignedCertificate(self.directory)
        port = self.start(
            "--port",
            f"ssl:0:interface=\\:\\:1:privateKey={key}:certKey={certificate}",
        ).port
        line = self.refused(f"tls:[::1]:{port}", "--ca", certificate, "-c", "1")
        self.assertEqual(
            line,
            f"echotwist-probe: tls:[::1]:{port}: the certificate is not for the"
            " target's host name (--insecure to skip the check)",
        )

    def test_tlsCertificateNamingNoHost(self) -> None:
        """
        A certificate with no subjectAltName (localhost in its common name
        only), trusted with --ca: it is for no host, and the run ends in
        one line saying so, exit 2, before a probe is sent.  Twisted's
        own check logged a traceback and let it through, exit 0.
        """
        key, certificate = selfSignedCertificate(self.directory, subjectAltName=False)
        port = self.start(
            "--port",
            f"ssl:0:interface={LOOPBACK}:privateKey={key}:certKey={certificate}",
        ).port
        for extra in (("-c", "1"), ("--bulk", "-w", "1"), ("-c", "1", "-C")):
            line = self.refused(f"tls:localhost:{port}", "--ca", certificate, *extra)
            self.assertEqual(
                line,
                f"echotwist-probe: tls:localhost:{port}: the certificate is not for"
                " localhost: it names no host (no subjectAltName) (--insecure to"
                " skip the check)",
            )
        self.ok(f"tls:localhost:{port}", "--insecure", "-c", "1")

    def test_ipv6(self) -> None:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
            udpPort = s.getsockname()[1]
        server = self.start(
            "--port",
            "tcp6:0:interface=\\:\\:1",
            "--udp",
            f"udp:{udpPort}:interface=\\:\\:1",
        )
        port = server.port
        server.waitFor(r"Listening on .*\(udp:")
        self.ok(f"tcp6:[::1]:{port}", "-c", "2", "-i", "0.05")
        self.ok(f"[::1]:{port}", "-c", "2", "-i", "0.05")
        self.ok(f"udp:[::1]:{udpPort}", "-c", "2", "-i", "0.05")

    def probeWithHosts(self, hosts: str, *args: str) -> None:
        """
        Run echotwist-probe C{args} in a mount namespace of its own whose
        /etc/hosts is C{hosts} (bind-mounted); it must answer every probe.
        """
        requireRoot("a mount namespace with an /etc/hosts of its own")
        unshare = requireTool("unshare", "util-linux")
        script = 'mount --bind "$1" /etc/hosts && shift && exec "$@"'
        result = subprocess.run(
            [unshare, "--mount", "sh", "-c", script, "sh", hosts]
            + [command("echotwist-probe"), *args, "-c", "2", "-i", "0.05"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=WAIT * 2,
        )
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn("2 probes sent, 2 answered", result.stdout)

    def test_udpNameWithOnlyIPv6(self) -> None:
        """
        udp: to a host name that has only an IPv6 address (here ::1, named
        by an /etc/hosts of the test's own) probes that address, as tcp:
        does; it was sent to whatever the IPv4-only lookup made of the name
        and refused.
        """
        requireRoot("a mount namespace with an /etc/hosts of its own")
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
            udpPort = s.getsockname()[1]
        server = self.start(
            "--port",
            "tcp6:0:interface=\\:\\:1",
            "--udp",
            f"udp:{udpPort}:interface=\\:\\:1",
        )
        server.waitFor(r"Listening on .*\(udp:")
        name = f"echotwist-v6only-{os.getpid()}"
        hosts = os.path.join(self.directory, "hosts")
        with open(hosts, "w") as f:
            f.write(f"::1 {name}\n")
        self.probeWithHosts(hosts, f"tcp:{name}:{server.port}")
        self.probeWithHosts(hosts, f"udp:{name}:{udpPort}")

    def test_udpNameOfBothFamilies(self) -> None:
        """
        udp: to a name of both families, IPv6 first (as Debian's localhost
        is), against a server on IPv4 only (a plain --udp): its IPv4
        address is probed, and answers.
        """
        requireRoot("a mount namespace with an /etc/hosts of its own")
        udpPort = freePort(socket.SOCK_DGRAM)
        server = self.start(
            "--port",
            f"tcp:0:interface={LOOPBACK}",
            "--udp",
            f"udp:{udpPort}:interface={LOOPBACK}",
        )
        server.waitFor(r"Listening on .*\(udp:")
        name = f"echotwist-dual-{os.getpid()}"
        hosts = os.path.join(self.directory, "hosts")
        with open(hosts, "w") as f:
            f.write(f"::1 {name}\n127.0.0.1 {name}\n")
        self.probeWithHosts(hosts, f"udp:{name}:{udpPort}")

    def test_unix(self) -> None:
        path = os.path.join(self.directory, "echo.sock")
        server = self.start("--port", f"unix:{path}")
        server.waitFor("Listening on unix:")
        result = self.ok(f"unix:{path}", "-c", "3", "-i", "0.05", "--connect-each")
        self.assertEqual(result.stdout.count(" connect="), 3, result.stdout)

    def test_bulkTCP(self) -> None:
        port = self.start().port
        document = self.document(
            f"tcp:127.0.0.1:{port}", "--bulk", "-w", "1", "-P", "3"
        )
        bulk = document["bulk"]
        assert isinstance(bulk, dict)
        self.assertEqual(bulk["parallel"], 3)
        self.assertGreater(bulk["received_bytes"], 0)
        self.assertEqual(bulk["received_bytes"], bulk["sent_bytes"])
        self.assertEqual(bulk["in_flight_bytes"], 0)

    def test_bulkTLS(self) -> None:
        key, certificate = selfSignedCertificate(self.directory)
        port = self.start(
            "--port",
            f"ssl:0:interface={LOOPBACK}:privateKey={key}:certKey={certificate}",
        ).port
        result = self.ok(
            f"tls:localhost:{port}", "--ca", certificate, "--bulk", "-w", "1"
        )
        self.assertIn("MB/s received back", result.stdout)

    def test_bulkUDP(self) -> None:
        port = self.startUDP("--udp-rate", "0")
        document = self.document(
            f"udp:127.0.0.1:{port}", "--bulk", "--rate", "200", "-w", "1"
        )
        summary = document["summary"]
        assert isinstance(summary, dict)
        # At most the rate over the second (a loaded machine may send
        # fewer: the count is what was sent, not what was asked).
        self.assertTrue(50 <= summary["sent"] <= 201, summary)
        self.assertEqual(summary["lost"], 0)
        bulk = document["bulk"]
        assert isinstance(bulk, dict)
        self.assertEqual(bulk["lost_per_second"], [0])

    def test_histogram(self) -> None:
        port = self.start().port
        result = self.ok(f"tcp:127.0.0.1:{port}", "-c", "20", "-i", "0", "-H", "-q")
        self.assertIn("rtt histogram:", result.stdout)
        self.assertRegex(result.stdout, r"\d+ us - \d+ us +\|#+ *\| \d+")
        self.assertNotIn(" bytes from ", result.stdout)

    def test_histogramAndPlot(self) -> None:
        """
        --plot with the plot extra (matplotlib) draws a PNG; without it
        the test skips, as the extras the test extra leaves out do (see
        setup.cfg), and test_plotWithoutMatplotlib checks the refusal.
        """
        requireModule("matplotlib", "plot")
        port = self.start().port
        path = os.path.join(self.directory, "rtt.png")
        result = self.ok(
            f"tcp:127.0.0.1:{port}", "-c", "20", "-i", "0", "-H", "--plot", path, "-q"
        )
        self.assertIn("rtt histogram:", result.stdout)
        self.assertNotIn(" bytes from ", result.stdout)
        with open(path, "rb") as f:
            self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")

    def test_readerGone(self) -> None:
        """
        echotwist-probe ... | head -2: when the reader of standard output
        goes away, an unbounded run ends (as ping, killed by SIGPIPE, does,
        so the pipeline ends) with its exit status and no traceback; for
        TCP and UDP.
        """
        udpPort = freePort(socket.SOCK_DGRAM)
        server = self.start(
            "--port",
            f"tcp:0:interface={LOOPBACK}",
            "--udp",
            f"udp:{udpPort}:interface={LOOPBACK}",
        )
        server.waitFor(r"Listening on .*\(udp:")
        for target in (f"tcp:127.0.0.1:{server.port}", f"udp:127.0.0.1:{udpPort}"):
            process = self.interruptible(target, "-i", "0.05")
            self.assertTrue(self.readLine(process).startswith("PROBE "))
            self.assertIn(" seq=0 time=", self.readLine(process))
            assert process.stdout is not None
            process.stdout.close()
            process.wait(WAIT)
            assert process.stderr is not None
            err = process.stderr.read()
            self.assertEqual((process.returncode, err), (0, ""), target)

    def test_durationBounds(self) -> None:
        """
        --duration ends an unbounded run: at most one probe per interval
        of it were sent.
        """
        port = self.start().port
        document = self.document(f"tcp:127.0.0.1:{port}", "-i", "0.1", "-w", "2")
        summary = document["summary"]
        assert isinstance(summary, dict)
        self.assertTrue(1 <= summary["sent"] <= 21, summary)

    def test_ctrlC(self) -> None:
        """
        SIGINT ends an unbounded run with the summary, exit 0, as ping.
        """
        port = self.start().port
        process = self.interruptible(f"tcp:127.0.0.1:{port}", "-i", "0.05")
        assert process.stdout is not None
        seen = 0
        deadline = time.monotonic() + WAIT
        while seen < 3:
            self.assertLess(time.monotonic(), deadline, "no probe lines")
            ready, _, _ = select.select([process.stdout], [], [], WAIT)
            self.assertTrue(ready)
            seen += " bytes from " in process.stdout.readline()
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=WAIT)
        self.assertEqual(process.returncode, 0, out + err)
        self.assertIn("echo statistics ---", out)
        self.assertRegex(out, r"(\d+) probes sent, \1 answered, 0% lost")
        self.assertEqual(err, "")

    def test_thresholds(self) -> None:
        port = self.start().port
        result = self.ok(
            f"tcp:127.0.0.1:{port}",
            "-c",
            "3",
            "-i",
            "0",
            "--max-p99",
            "0.0001",
            status=1,
        )
        self.assertRegex(
            result.stderr,
            r"^echotwist-probe: tcp:127\.0\.0\.1:\d+: p99 \S+ ms is over --max-p99 0\.0001 ms\n$",
        )
        self.ok(f"tcp:127.0.0.1:{port}", "-c", "3", "-i", "0", "--max-p99", "10000")

    def test_help(self) -> None:
        result = self.ok("--help")
        for option in (
            "--count",
            "--interval",
            "--bulk",
            "--json",
            "--max-loss",
            "--max-p99",
            "--insecure",
            "--ca",
        ):
            self.assertIn(option, result.stdout)

    def test_politeness(self) -> None:
        """
        A flood needs a bound; the error names the option.
        """
        line = self.refused("tcp:127.0.0.1:7", "-i", "0")
        self.assertIn(
            "--interval 0 floods the target: give --count or --duration", line
        )
        self.assertIn(
            "--size over UDP must be from 24",
            self.refused("udp:127.0.0.1:7", "-s", "8"),
        )


class BadTargetTests(ProbeTestCase):
    """
    A target that is not a working echo: one line naming it and what
    happened, exit 2, no traceback.
    """

    def test_refused(self) -> None:
        port = freePort()
        self.assertEqual(
            self.refused(f"tcp:127.0.0.1:{port}", "-c", "1"),
            f"echotwist-probe: tcp:127.0.0.1:{port}: connection refused",
        )

    def test_udpRefused(self) -> None:
        port = freePort(socket.SOCK_DGRAM)
        line = self.refused(f"udp:127.0.0.1:{port}", "-c", "3", "-i", "0.05")
        self.assertIn(f"udp:127.0.0.1:{port}: refused (ICMP port unreachable", line)

    def test_reset(self) -> None:
        port = self.badServer("reset")
        line = self.refused(f"tcp:127.0.0.1:{port}", "-c", "5", "-i", "0.05")
        self.assertRegex(line, rf"tcp:127\.0\.0\.1:{port}: the connection was reset")

    def test_neverAnswers(self) -> None:
        port = self.badServer("discard")
        line = self.refused(f"tcp:127.0.0.1:{port}", "-c", "1", "-W", "0.5")
        self.assertEqual(
            line,
            f"echotwist-probe: tcp:127.0.0.1:{port}: no answer to probe 0 within 0.5 s (0 of 64 bytes back)",
        )

    def test_bulkDiscard(self) -> None:
        """
        --bulk against a discard service: nothing comes back within
        --timeout after sending stops, and that is an error, not 0 MB/s.
        """
        port = self.badServer("discard")
        line = self.refused(f"tcp:127.0.0.1:{port}", "--bulk", "-w", "1", "-W", "1")
        self.assertRegex(
            line,
            rf"^echotwist-probe: tcp:127\.0\.0\.1:{port}: none of the \d+ bytes"
            r" sent came back within 1 s after sending stopped$",
        )

    def test_bulkServerNeverReads(self) -> None:
        port = self.badServer("deaf")
        line = self.refused(f"tcp:127.0.0.1:{port}", "--bulk", "-w", "1", "-W", "1")
        self.assertRegex(
            line,
            rf"tcp:127\.0\.0\.1:{port}: none of the \d+ bytes sent came back",
        )

    def test_ctrlCAgainstDiscard(self) -> None:
        """
        SIGINT while the first probe is out, against a server that never
        answers: the probe counts as sent, and the run is an error at its
        timeout, not "0 probes sent" and exit 0.
        """
        port = self.badServer("discard")
        process = self.interruptible(f"tcp:127.0.0.1:{port}", "-W", "1")
        self.assertEqual(self.readLine(self.server), "READ\n")
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=WAIT)
        self.assertEqual(process.returncode, 2, out + err)
        self.assertIn("1 probes sent, 0 answered, 100% lost", out)
        self.assertEqual(
            err,
            f"echotwist-probe: tcp:127.0.0.1:{port}: no answer to probe 0"
            " within 1 s (0 of 64 bytes back)\n",
        )

    def test_ctrlCBulkWhileHandshaking(self) -> None:
        """
        SIGINT to a --bulk run whose TLS handshake never finishes (a server
        that reads the ClientHello and answers nothing): the run ends at
        once with nothing measured, exit 1, not a clean run with exit 0.
        """
        port = self.badServer("discard")
        process = self.interruptible(
            f"tls:127.0.0.1:{port}", "--bulk", "-k", "-W", "30", "--json", "-"
        )
        self.assertEqual(self.readLine(self.server), "READ\n")
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=WAIT)
        self.assertEqual(process.returncode, 1, out + err)
        document = json.loads(out)
        self.assertEqual(document["exit_status"], 1)
        self.assertEqual(document["bulk"]["sent_bytes"], 0)
        self.assertEqual(
            err,
            f"echotwist-probe: tls:127.0.0.1:{port}: stopped before any byte"
            " was sent\n",
        )

    def test_ctrlCAgainstSilentUDP(self) -> None:
        """
        SIGINT against a UDP port that never answers: the datagrams in
        flight are waited for and counted lost, every one sent is in the
        summary.
        """
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
            silent.bind((LOOPBACK, 0))
            port = silent.getsockname()[1]
            process = self.interruptible(
                f"udp:127.0.0.1:{port}", "-i", "0.1", "-W", "0.5"
            )
            self.assertTrue(self.readLine(process).startswith("PROBE "))
            # By the time datagram 0 is lost, 1 to 4 have been sent.
            self.assertIn(" seq=0 lost", self.readLine(process))
            process.send_signal(signal.SIGINT)
            out, err = process.communicate(timeout=WAIT)
        self.assertEqual(process.returncode, 2, out + err)
        sent = int(re.search(r"(\d+) probes sent, 0 answered", out)[1])  # type: ignore[index]
        self.assertGreaterEqual(sent, 5, out)
        # Every datagram sent has its line; the first was read above.
        self.assertEqual(out.count(" lost (no answer within"), sent - 1, out)
        self.assertEqual(
            err,
            f"echotwist-probe: udp:127.0.0.1:{port}: no answer to any of"
            f" {sent} datagrams\n",
        )

    def test_unixNoSuchFile(self) -> None:
        path = os.path.join(self.directory, "no-such-socket")
        self.assertEqual(
            self.refused(f"unix:{path}", "-c", "1"),
            f"echotwist-probe: unix:{path}: could not connect"
            " (No such file or directory)",
        )

    def test_sslIsNotAType(self) -> None:
        self.assertEqual(
            self.refused("ssl:127.0.0.1:1", "-c", "1"),
            "echotwist-probe: ssl:127.0.0.1:1: unknown target type 'ssl',"
            " did you mean tls:? (see --help)",
        )

    def test_udpNeverAnswers(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
            silent.bind((LOOPBACK, 0))
            port = silent.getsockname()[1]
            line = self.refused(
                f"udp:127.0.0.1:{port}", "-c", "2", "-i", "0.05", "-W", "0.3"
            )
        self.assertEqual(
            line,
            f"echotwist-probe: udp:127.0.0.1:{port}: no answer to any of 2 datagrams",
        )

    def test_http(self) -> None:
        """
        A web server's answer is told apart at the first byte that differs
        from the probe (the seed is fixed: a random one gave a payload
        starting with "H" one run in 256).
        """
        port = self.badServer("http")
        seed = 1
        sent = Payloads(seed, 64).stream(0)
        got = HTTP_ANSWER
        at = next(i for i, (a, b) in enumerate(zip(sent, got, strict=False)) if a != b)
        line = self.refused(f"tcp:127.0.0.1:{port}", "-c", "1", "--seed", str(seed))
        self.assertEqual(
            line,
            f"echotwist-probe: tcp:127.0.0.1:{port}: answer to probe 0 differs"
            f" from what was sent at byte {at}"
            f" (sent 0x{sent[at]:02x}, got 0x{got[at]:02x})",
        )

    def test_closesMidProbe(self) -> None:
        port = self.badServer("halfway")
        line = self.refused(f"tcp:127.0.0.1:{port}", "-c", "1")
        self.assertEqual(
            line,
            f"echotwist-probe: tcp:127.0.0.1:{port}: the target closed the connection after 32 of 64 bytes of probe 0 came back",
        )

    def test_corruptByte(self) -> None:
        port = self.badServer("corrupt")
        line = self.refused(f"tcp:127.0.0.1:{port}", "-c", "3", "-i", "0.01")
        self.assertIn(
            f"tcp:127.0.0.1:{port}: answer to probe 0 differs from what was sent at byte 10",
            line,
        )

    def test_corruptByteInBulk(self) -> None:
        port = self.badServer("corrupt")
        line = self.refused(f"tcp:127.0.0.1:{port}", "--bulk", "-w", "1")
        self.assertIn(
            "the echo differs from what was sent at byte 10 of a connection", line
        )

    def test_udpSomethingElse(self) -> None:
        port = self.badServer("udpjunk")
        line = self.refused(f"udp:127.0.0.1:{port}", "-c", "1")
        self.assertIn("answered a datagram of 64 bytes that is not an echo", line)

    def test_tlsToPlainEcho(self) -> None:
        port = self.start().port
        line = self.refused(f"tls:127.0.0.1:{port}", "--insecure", "-c", "1")
        self.assertIn(f"tls:127.0.0.1:{port}: TLS failed", line)

    def test_hostDoesNotResolve(self) -> None:
        for kind in ("tcp", "udp"):
            line = self.refused(f"{kind}:nonexistent.invalid:7", "-c", "1")
            self.assertEqual(
                line,
                f"echotwist-probe: {kind}:nonexistent.invalid:7: the host name"
                " does not resolve",
            )

    def test_tlsWithoutTheExtra(self) -> None:
        """
        Without the tls extra, a tls: target is one line naming it.
        """
        result = subprocess.run(
            [command("echotwist-probe"), "tls:localhost:443", "-c", "1"],
            capture_output=True,
            text=True,
            timeout=WAIT,
            env={**os.environ, **withoutTLS(self.directory)},
        )
        self.assertEqual(result.returncode, 2, result.stderr)
        self.assertEqual(
            result.stderr,
            "echotwist-probe: tls:localhost:443: TLS needs the tls extra:"
            " install echotwist with its tls extra (pip install '.[tls]' from"
            " a checkout)\n",
        )

    def test_plotWithoutMatplotlib(self) -> None:
        shadow = os.path.join(self.directory, "without-matplotlib", "matplotlib")
        os.makedirs(shadow)
        with open(os.path.join(shadow, "__init__.py"), "w") as f:
            f.write(
                "raise ModuleNotFoundError(\"No module named 'matplotlib'\","
                " name='matplotlib')\n"
            )
        result = subprocess.run(
            [command("echotwist-probe"), "tcp:127.0.0.1:7", "--plot", "x.png"],
            capture_output=True,
            text=True,
            timeout=WAIT,
            cwd=self.directory,
            env={**os.environ, "PYTHONPATH": os.path.dirname(shadow)},
        )
        self.assertEqual(result.returncode, 2, result.stderr)
        self.assertEqual(
            result.stderr,
            "echotwist-probe: --plot needs matplotlib: install echotwist with"
            " its plot extra (pip install '.[plot]' from a checkout) (see --help)\n",
        )

    def test_jsonCannotBeWritten(self) -> None:
        """
        A --json file that cannot be written when the run ends (a full
        disk) is one line and exit 2: the document is the result a
        program waits for.
        """
        if not os.path.exists("/dev/full"):
            raise SkipTest("no /dev/full here")
        port = self.start().port
        line = self.refused(f"tcp:127.0.0.1:{port}", "-c", "1", "--json", "/dev/full")
        self.assertEqual(
            line,
            "echotwist-probe: --json /dev/full: cannot write (No space left on device)",
        )

    def test_jsonRecordsTheError(self) -> None:
        port = freePort()
        document = self.document(f"tcp:127.0.0.1:{port}", "-c", "1", status=2)
        self.assertEqual(document["error"], f"tcp:127.0.0.1:{port}: connection refused")


class DatagramAccountingTests(ProbeTestCase):
    """
    Loss, duplicates and reordering from servers that cause them.
    """

    def test_dropEveryThird(self) -> None:
        port = self.badServer("drop3")
        target = f"udp:127.0.0.1:{port}"
        document = self.document(target, "-c", "9", "-i", "0.02", "-W", "2", status=1)
        samples = document["samples"]
        assert isinstance(samples, list)
        self.assertEqual([s["status"] for s in samples], ["ok", "ok", "lost"] * 3)
        summary = document["summary"]
        assert isinstance(summary, dict)
        self.assertEqual(summary["loss_percent"], 33.333)
        result = self.ok(target, "-c", "9", "-i", "0.02", "-W", "2", "--max-loss", "40")
        self.assertIn("9 probes sent, 6 answered, 33.333% lost", result.stdout)
        result = self.ok(
            target, "-c", "9", "-i", "0.02", "-W", "2", "--max-loss", "30", status=1
        )
        self.assertIn("loss 33.3% is over --max-loss 30%", result.stderr)

    def test_reorderedAndDuplicated(self) -> None:
        port = self.badServer("shuffle")
        document = self.document(
            f"udp:127.0.0.1:{port}", "-c", "9", "-i", "0.05", "-W", "2"
        )
        summary = document["summary"]
        assert isinstance(summary, dict)
        # Datagrams 2, 4, 6, 8 (the server's counts) come back after the
        # next; 5 twice.
        self.assertEqual(
            (summary["answered"], summary["reordered"], summary["duplicates"]),
            (9, 4, 1),
        )


class XinetdTests(ProbeTestCase):
    """
    Against a server echotwist did not write: xinetd's builtin echo.
    """

    def startXinetd(self) -> int:
        xinetd = requireTool("xinetd", "xinetd")
        requireRoot("xinetd runs its services as a user it switches to")
        port = freePort()
        config = os.path.join(self.directory, "xinetd.conf")
        log = os.path.join(self.directory, "xinetd.log")
        services = "".join(
            f"""
service echo
{{
    type = INTERNAL UNLISTED
    id = echo-{kind}
    socket_type = {kind}
    protocol = {protocol}
    port = {port}
    wait = {wait}
    user = root
    bind = 127.0.0.1
}}
"""
            for kind, protocol, wait in [
                ("stream", "tcp", "no"),
                ("dgram", "udp", "yes"),
            ]
        )
        with open(config, "w") as f:
            f.write("defaults\n{\n}\n" + services)
        server = subprocess.Popen(
            [xinetd, "-dontfork", "-filelog", log, "-f", config],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.addCleanup(server.wait, WAIT)
        self.addCleanup(server.terminate)
        deadline = time.monotonic() + WAIT
        while True:
            self.assertIsNone(server.poll(), "xinetd exited")
            if os.path.exists(log):
                with open(log) as f:
                    if "Started working: 2 available services" in f.read():
                        return port
            self.assertLess(time.monotonic(), deadline, "xinetd never started")
            time.sleep(0.05)

    def test_eachMode(self) -> None:
        port = self.startXinetd()
        self.ok(f"tcp:127.0.0.1:{port}", "-c", "3", "-i", "0.05")
        result = self.ok(f"127.0.0.1:{port}", "-c", "3", "-i", "0.05", "-C")
        self.assertEqual(result.stdout.count(" connect="), 3, result.stdout)
        self.ok(f"udp:127.0.0.1:{port}", "-c", "3", "-i", "0.05")
        self.ok(f"tcp:127.0.0.1:{port}", "--bulk", "-w", "1")


class ServerStartTests(SynchronousTestCase):
    def test_serverDoesNotImportTheProbe(self) -> None:
        """
        Nothing the server loads imports the probe: it cannot slow the
        server's start.
        """
        directory = scratchDirectory(self)
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys, echotwist, echotwist.tap, echotwist.service\n"
                "from twisted.plugins import echotwist_plugin\n"
                "print(sorted(m for m in sys.modules if m.startswith('echotwist.probe')))",
            ],
            capture_output=True,
            text=True,
            timeout=WAIT,
            cwd=directory,
        )
        self.assertEqual(result.stdout.strip(), "[]", result.stderr)


class AccuracyScriptTests(SynchronousTestCase):
    def test_runs(self) -> None:
        """
        benchmarks/probe_accuracy.py still runs as docs/probe.rst says (a
        moment of it); its figures are measured and reported, not checked.
        """
        requireTool("cc", "gcc")
        result = subprocess.run(
            [
                sys.executable,
                os.path.join(CHECKOUT, "benchmarks", "probe_accuracy.py"),
                "--rounds",
                "1",
                "--seconds",
                "0.2",
                "--count",
                "200",
            ],
            capture_output=True,
            text=True,
            timeout=WAIT * 3,
            cwd=scratchDirectory(self),
        )
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertRegex(result.stdout, r"tcp: probe p50 / C p50 = \d+\.\d\d")
        self.assertRegex(result.stdout, r"udp: probe p50 / C p50 = \d+\.\d\d")


class DocsTests(SynchronousTestCase):
    def test_helpInTheDocsIsTheHelp(self) -> None:
        """
        docs/probe.rst shows echotwist-probe --help as the command prints it.
        """
        with open(os.path.join(CHECKOUT, "docs", "probe.rst")) as f:
            page = f.read()
        block = page.split("``echotwist-probe --help``::\n\n", 1)[1]
        shown = []
        for line in block.splitlines():
            if line and not line.startswith("    "):
                break
            shown.append(line[4:])
        result = probe("--help")
        self.assertEqual("\n".join(shown).strip(), result.stdout.strip())
