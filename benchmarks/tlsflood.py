"""
Plain TCP echo latency beside a flood of TLS handshakes from one address.

Starts C{twistd echo} with a plain TCP listener and an C{ssl:} listener on
loopback (a fresh EC P-256 certificate), then, for C{--seconds}:

  - a probe: one plain TCP connection from 127.0.0.2, 64-byte ping-pong,
    each round trip timed (at most one every millisecond);
  - the flood: C{--flooders} processes that each open new TLS connections
    to the TLS listener from 127.0.0.1, a full handshake each, as fast as
    they go, cut or not.

Prints the probe's p50/p99/max and the handshakes the server completed and
refused (from its metrics).  First without the flood, then with it.  Extra
arguments after C{--} go to C{twistd echo}, e.g. to lift the handshake budget:

    python benchmarks/tlsflood.py -- --tls-handshake-rate 0 \\
        --tls-handshakes-per-source 0

Every wait is bounded; the server and flooders are stopped at the end.
Figures are for reading, not for asserting: the machine's load moves them.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

BIN = os.path.dirname(sys.executable)


def certificate(directory: str) -> tuple[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    keyPath = os.path.join(directory, "key.pem")
    certPath = os.path.join(directory, "cert.pem")
    with open(keyPath, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    with open(certPath, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    return keyPath, certPath


#: One flooder: new TLS handshakes from 127.0.0.1 as fast as it goes, for
#: so many seconds, whether the server completes them or cuts them.  (openssl
#: s_time gives up at the first connection cut.)
FLOODER = r"""
import socket, ssl, sys, time
port, seconds = int(sys.argv[1]), float(sys.argv[2])
context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE
end = time.monotonic() + seconds
while time.monotonic() < end:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with context.wrap_socket(raw):
                pass
    except OSError:
        pass
"""


def freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def probe(port: int, seconds: float) -> list[float]:
    """
    Round trips of 64 bytes on one plain connection, in milliseconds.
    """
    payload = b"p" * 64
    rtts = []
    with socket.create_connection(
        ("127.0.0.1", port), timeout=10, source_address=("127.0.0.2", 0)
    ) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            started = time.perf_counter()
            sock.sendall(payload)
            got = b""
            while len(got) < len(payload):
                chunk = sock.recv(64)
                if not chunk:
                    raise SystemExit("the probe's connection closed")
                got += chunk
            rtts.append((time.perf_counter() - started) * 1000)
            time.sleep(0.001)
    return rtts


def refused(metricsPort: int) -> dict[str, float]:
    url = f"http://127.0.0.1:{metricsPort}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    counts = {}
    for line in text.splitlines():
        match = re.match(
            r'echotwist_connections_(accepted|refused)_total(?:\{reason="([^"]+)"\})? (\S+)',
            line,
        )
        if match:
            counts[match.group(2) or match.group(1)] = float(match.group(3))
    return counts


def cpuSeconds(pid: int) -> float:
    """
    User and system CPU seconds process C{pid} has used.
    """
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def summary(name: str, rtts: list[float]) -> None:
    rtts = sorted(rtts)
    p99 = rtts[min(len(rtts) - 1, int(len(rtts) * 0.99))]
    print(
        f"{name}: {len(rtts)} round trips, p50 {statistics.median(rtts):.3f} ms,"
        f" p99 {p99:.3f} ms, max {rtts[-1]:.3f} ms",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--flooders", type=int, default=2)
    parser.add_argument("extra", nargs="*")
    args = parser.parse_args()
    directory = tempfile.mkdtemp(prefix="tlsflood-")
    key, cert = certificate(directory)
    plain, tls, metrics = freePort(), freePort(), freePort()
    server = subprocess.Popen(
        [
            os.path.join(BIN, "twistd"),
            "-n",
            "--pidfile=",
            "echo",
            "--port",
            f"tcp:{plain}:interface=127.0.0.1",
            "--listen",
            f"ssl:{tls}:interface=127.0.0.1:privateKey={key}:certKey={cert}",
            "--metrics",
            f"tcp:{metrics}:interface=127.0.0.1",
            "--no-connection-logs",
            *args.extra,
        ],
        cwd=directory,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    flooders: list[subprocess.Popen[bytes]] = []
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                refused(metrics)
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("the server did not start") from None
                time.sleep(0.1)
        cpu = cpuSeconds(server.pid)
        summary("unloaded", probe(plain, args.seconds))
        print(f"server CPU: {cpuSeconds(server.pid) - cpu:.2f} s", flush=True)
        before = refused(metrics)
        for _ in range(args.flooders):
            flooders.append(
                subprocess.Popen(
                    [sys.executable, "-c", FLOODER, str(tls), str(args.seconds + 2)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        time.sleep(1)  # the flood under way before the probe starts
        cpu = cpuSeconds(server.pid)
        summary("TLS flood", probe(plain, args.seconds))
        print(f"server CPU: {cpuSeconds(server.pid) - cpu:.2f} s", flush=True)
        after = refused(metrics)
        print(
            "during the flood:",
            {k: after.get(k, 0) - before.get(k, 0) for k in after},
            flush=True,
        )
    finally:
        for flooder in flooders:
            flooder.kill()
            flooder.wait(10)
        server.send_signal(signal.SIGTERM)
        server.wait(20)


if __name__ == "__main__":
    main()
