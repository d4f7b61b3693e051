"""
The container image and the Kubernetes manifests, with real tools: podman
builds deploy/container/Containerfile from this checkout on a base that
mmdebstrap makes from Debian's packages (no registry needed), runs it,
echoes TCP and UDP through its port mappings, reads the health pages and
the identity line, stops it with a client open (with and without
C{--init}), then runs deploy/kubernetes/ with C{podman kube play} and
echoes through it.  Everything the test makes (containers, pods, images,
the base) is removed after it.

Needs root, podman (with runc and containers.conf as .ci/run sets them),
catatonit (C{--init}) and mmdebstrap; without them it skips, naming what
is missing, unless ECHOTWIST_REQUIRE_TOOLS is set (CI).  A build reaches
PyPI: behind a TLS-intercepting proxy, the host's CA bundle goes in as a
build secret, and pip's own configuration, if any, as another.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Sequence

from twisted.trial.unittest import SynchronousTestCase

from echotwist import __version__
from tests._clients import exchange
from tests._tools import CHECKOUT, requireRoot, requireTool, scratchDirectory
from tests._twistd import LOOPBACK, WAIT
from tests.system.test_transports import ask, freePort

CONTAINERFILE = os.path.join(CHECKOUT, "deploy", "container", "Containerfile")
MANIFESTS = os.path.join(CHECKOUT, "deploy", "kubernetes")
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
CATATONIT = "/usr/libexec/podman/catatonit"

#: Building the base (mmdebstrap, apt from a mirror) and the image (pip
#: from PyPI) on a loaded 2-core machine.
BUILD_TIMEOUT = 900


def figure(text: str) -> None:
    """
    A figure measured, for the test's output (not asserted).
    """
    print(f"container figure: {text}", file=sys.__stderr__, flush=True)


def run(argv: Sequence[str], timeout: float = WAIT, check: bool = True) -> str:
    """
    Run a command; its standard output.  A failure says what it printed.
    """
    done = subprocess.run(
        list(argv),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and done.returncode != 0:
        raise AssertionError(
            f"{' '.join(argv)}: exit status {done.returncode}\n{done.stdout}"
            f"\n{done.stderr}"
        )
    return done.stdout


def pipConfiguration() -> str | None:
    """
    The pip configuration file this machine's pip reads (a user's, then the
    site's), to hand the build as a secret: an index of its own, say.
    """
    for path in (
        os.environ.get("PIP_CONFIG_FILE", ""),
        os.path.expanduser("~/.config/pip/pip.conf"),
        os.path.expanduser("~/.pip/pip.conf"),
        "/etc/pip.conf",
    ):
        if path and os.path.isfile(path):
            return path
    return None


def get(port: int, path: str, timeout: float = WAIT) -> tuple[int, bytes]:
    url = f"http://{LOOPBACK}:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def waitFor(
    test: SynchronousTestCase,
    what: str,
    check: Callable[[], object],
    timeout: float = WAIT,
) -> object:
    """
    Call C{check} until it returns something true, ignoring connection
    errors (a port mapping not yet up); fail after C{timeout}.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            result = check()
        except OSError as e:
            last = e
        else:
            if result:
                return result
            last = result
        time.sleep(0.1)
    test.fail(f"not within {timeout}s: {what} (last: {last!r})")


def echoStream(port: int, payload: bytes) -> bytes:
    """
    Send C{payload} on one connection while reading it back.
    """
    ((received, _),) = exchange((LOOPBACK, port), [payload])
    return received


def echoOn(sock: socket.socket, payload: bytes) -> bytes:
    """
    Send C{payload} on an open connection from a thread while reading it
    back here (one thread doing both could block on a full send buffer
    while the echo waits to be read); what came back, up to its length or
    the server's close.
    """
    sock.settimeout(WAIT)
    errors: list[BaseException] = []

    def send() -> None:
        try:
            sock.sendall(payload)
        except OSError as e:
            errors.append(e)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    received = bytearray()
    while len(received) < len(payload):
        chunk = sock.recv(1 << 16)
        if not chunk:
            break
        received += chunk
    sender.join(WAIT)
    if errors:
        raise errors[0]
    return bytes(received)


def freeForBoth() -> int:
    """
    A loopback port free for TCP and UDP alike.
    """
    for _ in range(100):
        port = freePort()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            try:
                udp.bind((LOOPBACK, port))
            except OSError:
                continue
        return port
    raise AssertionError("no port free for both TCP and UDP in 100 tries")


IDENTITY_LINE = re.compile(
    rb"echotwist host=(\S+) instance=(\S+) version=(\S+) client=(\S+):(\d+)\r\n"
)


class ContainerTests(SynchronousTestCase):
    def setUp(self) -> None:
        requireRoot("podman runs containers as root here")
        self.podman = requireTool("podman", "podman")
        requireTool("runc", "runc")
        self.mmdebstrap = requireTool("mmdebstrap", "mmdebstrap")
        if not os.path.exists(CATATONIT):
            requireTool("catatonit", "catatonit")  # skips, or fails in CI
        self.run = uuid.uuid4().hex[:8]
        self.scratch = scratchDirectory(self)

    def pauseImages(self) -> set[str]:
        return set(
            self.podmanCommand("images", "--quiet", "localhost/podman-pause").split()
        )

    def removeMadeByKubePlay(self, pauses: set[str], networks: set[str]) -> None:
        for image in self.pauseImages() - pauses:
            run([self.podman, "rmi", "--force", image], WAIT, False)
        made = set(self.podmanCommand("network", "ls", "--quiet").split()) - networks
        for network in made:
            run([self.podman, "network", "rm", network], WAIT, False)

    def podmanCommand(self, *args: str, timeout: float = WAIT) -> str:
        return run([self.podman, *args], timeout=timeout)

    def buildImage(self) -> str:
        """
        The base from Debian's packages, then the image from the checkout;
        both removed after the test.
        """
        base = f"localhost/echotwist-test-base-{self.run}"
        image = f"localhost/echotwist-test-{self.run}"
        tarball = os.path.join(self.scratch, "base.tar")
        started = time.monotonic()
        run(
            [
                self.mmdebstrap,
                "--quiet",
                "--variant=apt",
                "--include=python3,python3-venv,ca-certificates",
                "bookworm",
                tarball,
            ],
            timeout=BUILD_TIMEOUT,
        )
        self.podmanCommand("import", "--quiet", tarball, base, timeout=BUILD_TIMEOUT)
        self.addCleanup(run, [self.podman, "rmi", "--force", base], WAIT, False)
        figure(f"base made by mmdebstrap in {time.monotonic() - started:.1f}s")
        os.remove(tarball)
        build = [
            "build",
            "--quiet",
            "--layers=false",
            "--pull=never",
            "--build-arg",
            f"BASE={base}",
            "--file",
            CONTAINERFILE,
            "--tag",
            image,
        ]
        if os.path.exists(CA_BUNDLE):
            build += ["--secret", f"id=cabundle,src={CA_BUNDLE}"]
        configuration = pipConfiguration()
        if configuration is not None:
            build += ["--secret", f"id=pipconf,src={configuration}"]
        started = time.monotonic()
        self.addCleanup(run, [self.podman, "rmi", "--force", image], WAIT, False)
        self.podmanCommand(*build, CHECKOUT, timeout=BUILD_TIMEOUT)
        size = self.podmanCommand("image", "inspect", "--format", "{{.Size}}", image)
        figure(
            f"image built in {time.monotonic() - started:.1f}s,"
            f" {int(size) / 1e6:.0f} MB"
        )
        return image

    def container(
        self, image: str, *options: str, init: bool = False
    ) -> dict[str, int]:
        """
        Run the image detached, its ports mapped to free loopback ports;
        the ports by name.  Removed after the test.
        """
        name = f"echotwist-test-{self.run}-{'init' if init else 'pid1'}"
        echo = freeForBoth()
        ports = {
            "echo": echo,
            # The same host port for both protocols: podman 4.3 mapped
            # neither when they differed (tried).
            "udp": echo,
            "identify": freePort(),
            "health": freePort(),
        }
        argv = ["run", "--detach", "--name", name]
        if init:
            argv.append("--init")
        argv += [
            "--publish",
            f"{LOOPBACK}:{ports['echo']}:5000/tcp",
            "--publish",
            f"{LOOPBACK}:{ports['udp']}:5000/udp",
            "--publish",
            f"{LOOPBACK}:{ports['identify']}:5001/tcp",
            "--publish",
            f"{LOOPBACK}:{ports['health']}:8080/tcp",
            image,
            *options,
        ]
        self.addCleanup(run, [self.podman, "rm", "--force", name], WAIT, False)
        self.podmanCommand(*argv)
        self.name = name
        waitFor(
            self,
            "/readyz answers 200",
            lambda: get(ports["health"], "/readyz", 2)[0] == 200,
        )
        mapped = self.podmanCommand("port", name)
        for port in ports.values():
            self.assertIn(f"{LOOPBACK}:{port}", mapped)
        return ports

    def stopWithClientOpen(self, image: str, init: bool) -> None:
        """
        A client open, C{podman stop}: /readyz says 503 while the client
        still echoes, every byte comes back, and the exit status is 143.
        """
        ports = self.container(
            image, "--drain-quiet", "0", "--shutdown-timeout", "60", init=init
        )
        self.assertEqual(get(ports["health"], "/readyz"), (200, b"ready\n"))
        client = socket.create_connection((LOOPBACK, ports["echo"]), timeout=WAIT)
        self.addCleanup(client.close)
        client.sendall(b"before\n")
        self.assertEqual(client.recv(100), b"before\n")
        stopping = subprocess.Popen(
            [self.podman, "stop", "--time", "60", self.name],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.addCleanup(lambda: stopping.poll() is None and stopping.kill())
        waitFor(
            self,
            "/readyz answers 503 after podman stop",
            lambda: (
                get(ports["health"], "/readyz", 2) == (503, b"not ready: draining\n")
            ),
        )
        figure(f"/readyz during the drain ({'--init' if init else 'PID 1'}): 503")
        self.assertEqual(get(ports["health"], "/healthz"), (200, b"ok\n"))
        payload = os.urandom(1 << 20)
        self.assertEqual(echoOn(client, payload), payload)
        client.close()
        _, errors = stopping.communicate(timeout=90)
        self.assertEqual(stopping.returncode, 0, errors)
        status = self.podmanCommand(
            "inspect", "--format", "{{.State.ExitCode}}", self.name
        ).strip()
        figure(
            f"exit status after podman stop ({'--init' if init else 'PID 1'}): {status}"
        )
        self.assertEqual(status, "143")
        self.assertIn("Drain finished", run([self.podman, "logs", self.name]))
        self.podmanCommand("rm", self.name)

    def test_imageAndManifests(self) -> None:
        image = self.buildImage()

        # The image as built: a non-root numeric user, SIGTERM, no sources.
        config = self.podmanCommand(
            "image",
            "inspect",
            "--format",
            "{{.Config.User}} {{.Config.StopSignal}} {{json .Config.Entrypoint}}",
            image,
        ).strip()
        self.assertEqual(
            config,
            '10001:10001 SIGTERM ["twistd","-n","--pidfile=","echo"]',
        )
        leftovers = self.podmanCommand(
            "run",
            "--rm",
            "--entrypoint",
            "sh",
            image,
            "-c",
            "ls -d /src /run/secrets/* 2>/dev/null; id -u",
        )
        self.assertEqual(leftovers.split(), ["10001"])

        # Echo, health and identity through the port mappings.
        ports = self.container(image)
        self.assertEqual(echoStream(ports["echo"], b"hello\n"), b"hello\n")
        payload = os.urandom(1 << 20)
        self.assertEqual(echoStream(ports["echo"], payload), payload)
        datagram = os.urandom(1000)
        self.assertEqual(ask(datagram, ports["udp"]), datagram)
        self.assertEqual(get(ports["health"], "/healthz"), (200, b"ok\n"))
        self.assertEqual(get(ports["health"], "/readyz"), (200, b"ready\n"))
        self.assertEqual(get(ports["health"], "/metrics")[0], 404)
        with socket.create_connection((LOOPBACK, ports["identify"]), WAIT) as sock:
            line = b""
            while chunk := sock.recv(4096):
                line += chunk
        figure(f"identity line through the port mapping: {line!r}")
        match = IDENTITY_LINE.fullmatch(line)
        assert match is not None, line
        hostname = run(
            [self.podman, "inspect", "--format", "{{.Config.Hostname}}", self.name]
        )
        self.assertEqual(match.group(1).decode(), hostname.strip())
        self.assertEqual(match.group(2), match.group(1))  # $HOSTNAME
        self.assertEqual(match.group(3).decode(), __version__)
        self.podmanCommand("rm", "--force", self.name)

        # podman stop, a client open: as PID 1, and under --init.
        self.stopWithClientOpen(image, init=False)
        self.stopWithClientOpen(image, init=True)

        self.kubePlay(image)

    def kubePlay(self, image: str) -> None:
        """
        The manifests as C{podman kube play} runs them: one replica (podman
        publishes container ports on the host, so replicas would collide),
        the ports on free loopback ports, the test's image; the rest as
        shipped.
        """
        with open(os.path.join(MANIFESTS, "deployment.yaml")) as f:
            text = f.read()
        self.assertIn("image: localhost/echotwist:latest\n", text)
        self.assertIn("replicas: 3\n", text)
        text = text.replace("image: localhost/echotwist:latest", f"image: {image}")
        text = text.replace("replicas: 3", "replicas: 1")
        hostPorts = {
            "5000": freeForBoth(),
            "5001": freePort(),
            "8080": freePort(),
        }

        def publish(match: re.Match[str]) -> str:
            indent, port = match.group(1), match.group(2)
            return (
                f"{indent}containerPort: {port}\n"
                f"{indent}hostPort: {hostPorts[port]}\n"
                f"{indent}hostIP: {LOOPBACK}\n"
            )

        text = re.sub(r"( +)containerPort: (\d+)\n", publish, text)
        manifest = os.path.join(self.scratch, "deployment.yaml")
        with open(manifest, "w") as f:
            f.write(text)
        # kube play builds an infra image and makes a network when it has
        # none: whatever it made here goes after the pod has.
        pausesBefore = self.pauseImages()
        networksBefore = set(self.podmanCommand("network", "ls", "--quiet").split())
        self.addCleanup(self.removeMadeByKubePlay, pausesBefore, networksBefore)
        self.addCleanup(run, [self.podman, "kube", "down", manifest], WAIT * 3, False)
        played = self.podmanCommand("kube", "play", manifest, timeout=WAIT * 3)
        figure("podman kube play: " + " ".join(played.split()))
        health = hostPorts["8080"]
        waitFor(self, "/readyz of the pod", lambda: get(health, "/readyz", 2)[0] == 200)
        payload = os.urandom(64 * 1024)
        self.assertEqual(echoStream(hostPorts["5000"], payload), payload)
        self.assertEqual(ask(b"udp", hostPorts["5000"]), b"udp")
        with socket.create_connection((LOOPBACK, hostPorts["5001"]), WAIT) as sock:
            line = b""
            while chunk := sock.recv(4096):
                line += chunk
        match = IDENTITY_LINE.fullmatch(line)
        assert match is not None, line
        # POD_NAME, from the Downward API as the manifest asks.
        self.assertEqual(match.group(2), b"echotwist-pod-0")
        figure(f"identity line from the pod: {line!r}")
        ran = self.podmanCommand(
            "inspect",
            "--format",
            "{{.Config.User}} {{.HostConfig.ReadonlyRootfs}}"
            " {{.Config.StopTimeout}} {{json .Config.Healthcheck.Test}}",
            "echotwist-pod-0-echotwist",
        )
        figure(f"as kube play ran the container: {ran.strip()}")
        user, readOnly = ran.split()[:2]
        self.assertEqual((user, readOnly), ("10001:10001", "true"))
