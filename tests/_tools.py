"""
External tools some tests need.  On a developer's machine without them
those tests skip, naming the Debian package; CI sets
ECHOTWIST_REQUIRE_TOOLS=1, and then a missing tool fails the test instead.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import socket
import subprocess
import tempfile
import time

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests._twistd import WAIT

#: The checkout (or unpacked sdist) the tests run from: its docs/, examples/,
#: deploy/ and benchmarks/.
CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

REQUIRE = "ECHOTWIST_REQUIRE_TOOLS"


def requireTool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is not None:
        return path
    message = f"{name} is not installed (Debian package {package})"
    if os.environ.get(REQUIRE):
        raise AssertionError(f"{message}, and {REQUIRE} is set")
    raise SkipTest(message)


def requireModule(name: str, extra: str) -> None:
    """
    The Python package C{name}, which echotwist's C{extra} extra installs,
    is importable: the test skips without it, naming the extra (in CI,
    with L{REQUIRE} set, it fails instead).
    """
    try:
        __import__(name)
    except ImportError as e:
        message = f"{name} is not installed ({e}): pip install '.[{extra}]'"
        if os.environ.get(REQUIRE):
            raise AssertionError(f"{message}, and {REQUIRE} is set") from None
        raise SkipTest(message) from None


def scratchDirectory(test: SynchronousTestCase) -> str:
    """
    A fresh directory under the system's temporary directory, removed after
    C{test}.  Not C{test.mktemp()}: that path is relative to the working
    directory, which is trial's _trial_temp but the checkout itself under
    pytest.
    """
    directory = tempfile.mkdtemp(prefix="echotwist-")
    test.addCleanup(shutil.rmtree, directory, True)
    return directory


def openedBy(pid: int) -> list[str]:
    """
    What process C{pid} holds open: the target of each of its descriptors
    (a path, or C{socket:[inode]}, C{pipe:[inode]}...).  A descriptor the
    process closes while this looks is left out, not an error.
    """
    directory = f"/proc/{pid}/fd"
    targets = []
    for name in os.listdir(directory):
        try:
            targets.append(os.readlink(os.path.join(directory, name)))
        except FileNotFoundError:
            pass  # closed while we looked
    return targets


def requireRoot(why: str) -> None:
    if os.geteuid() != 0:
        if os.environ.get(REQUIRE):
            raise AssertionError(f"not root, and {REQUIRE} is set: {why}")
        raise SkipTest(f"needs root: {why}")


def requireTLS() -> None:
    """
    TLS support (echotwist's C{tls} extra, Twisted's C{twisted[tls]}) is
    installed: the C{test} extra pulls it in, so CI always has it.
    """
    try:
        import OpenSSL  # noqa: F401
        import service_identity  # noqa: F401
    except ImportError as e:
        message = f"TLS support is not installed ({e}): pip install '.[tls]'"
        if os.environ.get(REQUIRE):
            raise AssertionError(f"{message}, and {REQUIRE} is set") from None
        raise SkipTest(message) from None


def withoutModule(directory: str, name: str) -> dict[str, str]:
    """
    Environment for a child Python that behaves as if the package C{name}
    were not installed: a package of that name ahead of the real one on
    the path, failing to import as a missing one does.
    """
    shadow = os.path.join(directory, f"without-{name}")
    os.makedirs(os.path.join(shadow, name), exist_ok=True)
    with open(os.path.join(shadow, name, "__init__.py"), "w") as f:
        f.write(
            f"raise ModuleNotFoundError(\"No module named '{name}'\", name='{name}')\n"
        )
    return {
        "PYTHONPATH": os.pathsep.join(
            filter(None, [shadow, os.environ.get("PYTHONPATH")])
        )
    }


def withoutTLS(directory: str) -> dict[str, str]:
    """
    Environment for a child Python that behaves as if pyOpenSSL were not
    installed (the default install, without the C{tls} extra).
    """
    return withoutModule(directory, "OpenSSL")


def startHAProxy(test: SynchronousTestCase, config: str, frontend: int) -> None:
    """
    Run HAProxy (in the foreground) with C{config} for the rest of C{test},
    once it accepts connections on the C{frontend} port.
    """
    haproxy = requireTool("haproxy", "haproxy")
    proxy = subprocess.Popen(
        [haproxy, "-db", "-f", config],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    test.addCleanup(proxy.wait, WAIT)
    test.addCleanup(proxy.terminate)
    deadline = time.monotonic() + WAIT
    while True:
        test.assertIsNone(proxy.poll(), "haproxy exited")
        try:
            socket.create_connection(("127.0.0.1", frontend), timeout=1).close()
            return
        except OSError:
            test.assertLess(time.monotonic(), deadline, "haproxy never listened")
            time.sleep(0.05)


def selfSignedCertificate(
    directory: str, subjectAltName: bool = True
) -> tuple[str, str]:
    """
    Write a fresh key and self-signed certificate for localhost; their
    paths.  Skips the test where TLS support is not installed.

    @param subjectAltName: without one, the certificate names localhost in
        its common name only, as C{openssl req -subj /CN=localhost} makes
        it (which service_identity takes for a certificate of no host).
    """
    requireTLS()
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    if subjectAltName:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
    certificate = builder.sign(key, hashes.SHA256())
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
        f.write(certificate.public_bytes(serialization.Encoding.PEM))
    return keyPath, certPath


def readText(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""
