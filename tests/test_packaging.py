"""
The package as users get it: the wheel's contents, and a fresh virtual
environment where twistd and twist find the plugin.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import pwd
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import zipfile

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests._clients import echoOnce
from tests._tools import REQUIRE, requireRoot
from tests._twistd import WAIT, Server

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INSTALL_TIMEOUT = 600


#: What points a Python or a pip at packages outside the new environment.
#: The rest of the caller's environment stays: pip's index settings too.
_LEAKS = frozenset(
    {
        "PYTHONPATH",
        "PYTHONHOME",
        "PYTHONSTARTUP",
        "PYTHONUSERBASE",
        "VIRTUAL_ENV",
        "PIP_TARGET",
        "PIP_PREFIX",
        "PIP_ROOT",
        "PIP_USER",
    }
)


def isolated() -> dict[str, str]:
    """
    The environment for the fresh installation: the caller's, less what
    would let it see another copy of echotwist.  With PYTHONPATH=. (as
    README offers for a bare trial) and an echotwist.egg-info left in the
    checkout by "pip install .", pip in the new environment would find
    echotwist "already installed" and install nothing.
    """
    env = {name: value for name, value in os.environ.items() if name not in _LEAKS}
    env["PYTHONNOUSERSITE"] = "1"
    return env


def _run(argv: list[str], cwd: str | None = None) -> str:
    result = subprocess.run(
        argv,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT,
        # Never the checkout: the working directory is on sys.path for
        # "python -m" and "-c".
        cwd=cwd or _scratch(),
        env=isolated(),
    )
    if result.returncode:
        raise AssertionError(f"{argv} failed:\n{result.stdout}\n{result.stderr}")
    return str(result.stdout + result.stderr)


def _scratch() -> str:
    directory = tempfile.mkdtemp(prefix="echotwist-pkg-")
    atexit.register(shutil.rmtree, directory, True)
    return directory


@functools.cache
def wheel() -> str:
    """
    Build the wheel from a copy of the source, with a dropin.cache planted
    in the plugin folder as Twisted leaves one after a plugin scan.
    """
    source = os.path.join(_scratch(), "src")
    os.mkdir(source)
    for name in ("setup.cfg", "pyproject.toml", "README.rst", "LICENSE"):
        shutil.copy(os.path.join(ROOT, name), source)
    for name in ("echotwist", "twisted"):
        shutil.copytree(
            os.path.join(ROOT, name),
            os.path.join(source, name),
            ignore=shutil.ignore_patterns("__pycache__", "dropin.cache"),
        )
    with open(os.path.join(source, "twisted", "plugins", "dropin.cache"), "wb") as f:
        f.write(b"stale")
    out = os.path.join(_scratch(), "dist")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", out, source])
    (name,) = os.listdir(out)
    return os.path.join(out, name)


@functools.cache
def freshEnvironment() -> str:
    """
    A new virtual environment with only the wheel (and what it requires)
    installed; its bin directory.
    """
    venv = os.path.join(_scratch(), "venv")
    _run([sys.executable, "-m", "venv", venv])
    bin = os.path.join(venv, "bin")
    _run([os.path.join(bin, "python"), "-m", "pip", "install", wheel()])
    return bin


class WheelTests(SynchronousTestCase):
    def test_contents(self) -> None:
        names = set(zipfile.ZipFile(wheel()).namelist())
        for expected in (
            "echotwist/__init__.py",
            "echotwist/py.typed",
            "echotwist/stream.py",
            "echotwist/tap.py",
            "twisted/plugins/echotwist_plugin.py",
        ):
            self.assertIn(expected, names)
        for forbidden in (
            "twisted/__init__.py",
            "twisted/plugins/__init__.py",
            "twisted/plugins/dropin.cache",
        ):
            self.assertNotIn(forbidden, names)
        self.assertEqual(
            {n.split("/")[0] for n in names if ".dist-info/" not in n},
            {"echotwist", "twisted"},
        )

    def test_licenseInTheMetadata(self) -> None:
        with zipfile.ZipFile(wheel()) as archive:
            (license,) = (
                n
                for n in archive.namelist()
                if ".dist-info/" in n and n.endswith("/LICENSE")
            )
            self.assertIn(b"MIT License", archive.read(license))
            (metadata,) = (n for n in archive.namelist() if n.endswith("/METADATA"))
            self.assertRegex(
                archive.read(metadata).decode(), r"\nLicense(-File)?: (MIT|LICENSE)"
            )


class FreshInstallTests(SynchronousTestCase):
    """
    Everything here runs in a directory away from the checkout, so only the
    installed copy can answer.
    """

    def setUp(self) -> None:
        self.bin = freshEnvironment()
        self.directory = tempfile.mkdtemp(prefix="echotwist-run-")
        self.addCleanup(shutil.rmtree, self.directory, True)

    def run_(self, *argv: str) -> str:
        return _run(list(argv), cwd=self.directory)

    def test_twistdListsThePlugin(self) -> None:
        output = self.run_(os.path.join(self.bin, "twistd"), "--help")
        self.assertRegex(output, r"\n\s+echo\s+An RFC 862 echo server")
        self.assertNotIn("Traceback", output)

    def test_twistListsThePlugin(self) -> None:
        output = self.run_(os.path.join(self.bin, "twist"), "--help")
        self.assertRegex(output, r"\n\s+echo\s+An RFC 862 echo server")
        self.assertNotIn("Traceback", output)

    def test_publicAPI(self) -> None:
        output = self.run_(
            os.path.join(self.bin, "python"),
            "-c",
            "import echotwist; from echotwist import Echo, EchoFactory;"
            " print(echotwist.__file__)",
        )
        self.assertIn(os.path.dirname(self.bin), output)

    def test_installedServerEchoes(self) -> None:
        server = Server(
            ("echo", "--port", "tcp:0:interface=127.0.0.1"),
            cwd=self.directory,
            runner=[os.path.join(self.bin, "twistd"), "-n", "--pidfile="],
            env={name: None for name in _LEAKS},
        )
        self.addCleanup(server.kill)
        self.assertEqual(
            echoOnce(("127.0.0.1", server.port), b"installed"), b"installed"
        )
        server.signal(signal.SIGTERM)
        self.assertEqual(server.wait(), -signal.SIGTERM)

    def test_installedProbeMeasures(self) -> None:
        """
        The wheel installs the echotwist-probe command, and it measures the
        installed server.
        """
        server = Server(
            ("echo", "--port", "tcp:0:interface=127.0.0.1"),
            cwd=self.directory,
            runner=[os.path.join(self.bin, "twistd"), "-n", "--pidfile="],
            env={name: None for name in _LEAKS},
        )
        self.addCleanup(server.kill)
        output = self.run_(
            os.path.join(self.bin, "echotwist-probe"),
            f"127.0.0.1:{server.port}",
            "--count",
            "2",
            "--interval",
            "0.05",
        )
        self.assertIn("2 probes sent, 2 answered, 0% lost", output)

    def test_tlsIsAnExtra(self) -> None:
        """
        The default install leaves TLS out (it costs every server ~13 MiB):
        pyOpenSSL is not installed, the server still echoes (above), and a
        TLS listener asks for the extra in one line.
        """
        python = os.path.join(self.bin, "python")
        missing = subprocess.run(
            [python, "-c", "import OpenSSL"],
            capture_output=True,
            text=True,
            timeout=WAIT,
            cwd=self.directory,
            env=isolated(),
        )
        self.assertNotEqual(missing.returncode, 0, "pyOpenSSL was installed")
        refused = subprocess.run(
            [
                os.path.join(self.bin, "twistd"),
                "-n",
                "--pidfile=",
                "echo",
                "--listen",
                "ssl:0:privateKey=key.pem",
            ],
            capture_output=True,
            text=True,
            timeout=WAIT,
            cwd=self.directory,
            env=isolated(),
        )
        self.assertEqual(refused.returncode, 1)
        self.assertEqual(
            (refused.stdout + refused.stderr).splitlines(),
            [
                "echotwist: 'ssl:0:privateKey=key.pem' needs TLS support, which"
                " is not installed: pip install 'echotwist[tls]'"
            ],
        )


CACHE_ERROR = "Unable to write to plugin cache"


def installCommand() -> str:
    """
    The docs' install command for a service run by another user (the line
    after ".. install-command:" in docs/deployment.rst).
    """
    with open(os.path.join(ROOT, "docs", "deployment.rst")) as f:
        text = f.read()
    found = re.search(r"^\.\. install-command:.*?^    (\S[^\n]*)$", text, re.S | re.M)
    assert found, (
        "docs/deployment.rst has no install command after '.. install-command:'"
    )
    return found.group(1)


def unitCacheCommand(unit: str) -> list[str]:
    """
    A shipped unit's ExecStartPre=+ command line.
    """
    with open(os.path.join(ROOT, "deploy", "systemd", unit)) as f:
        (line,) = re.findall(r"^ExecStartPre=\+(.*)$", f.read(), re.M)
    return shlex.split(line)


def _asUser(uid: int, gid: int) -> object:
    def drop() -> None:
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)

    return drop


def _runsAs(python: str, uid: int, gid: int) -> bool:
    try:
        subprocess.run(
            [python, "-c", "import venv, ensurepip"],
            preexec_fn=_asUser(uid, gid),  # type: ignore[arg-type]
            check=True,
            capture_output=True,
            timeout=60,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return True


@functools.cache
def serviceInstall(python: str) -> tuple[str, str, str]:
    """
    The docs' install command for a service, run as root with C{python}
    for python3, the wheel for the package and a scratch directory for
    /opt: the directory, the environment, and its plugin cache.
    """
    directory = _scratch()
    # Readable and searchable by nobody, writable by root alone.
    os.chmod(directory, 0o755)
    venv = os.path.join(directory, "echotwist")
    command = installCommand()
    assert "python3 -m venv /opt/echotwist" in command, command
    assert "/opt/echotwist/bin/pip install echotwist" in command, command
    command = (
        command.replace("python3 -m venv", f"{shlex.quote(python)} -m venv")
        .replace("pip install echotwist", f"pip install {shlex.quote(wheel())}")
        .replace("/opt/echotwist", venv)
    )
    _run(["bash", "-c", command], cwd=directory)
    (cache,) = [
        os.path.join(root, "dropin.cache")
        for root, dirs, files in os.walk(venv)
        if root.endswith(os.path.join("twisted", "plugins")) and "dropin.cache" in files
    ]
    return directory, venv, cache


class AnotherUserTests(SynchronousTestCase):
    """
    The docs' install, done by root in a directory nobody else may write;
    twistd run by nobody.
    """

    def setUp(self) -> None:
        requireRoot("installs as root and runs the server as nobody")
        nobody = pwd.getpwnam("nobody")
        self.uid, self.gid = nobody.pw_uid, nobody.pw_gid
        # The environment links to its base Python, which nobody must be
        # able to run: this one may live under /root (pyenv).
        candidates = [
            os.path.realpath(getattr(sys, "_base_executable", "")),
            "/usr/bin/python3",
        ]
        usable = [p for p in candidates if p and _runsAs(p, self.uid, self.gid)]
        if not usable:
            message = f"no Python that nobody can run (tried {candidates})"
            if os.environ.get(REQUIRE):
                raise AssertionError(message)
            raise SkipTest(message)
        self.python = usable[0]
        self.directory, self.venv, self.cache = serviceInstall(self.python)
        # Whatever a test does to the cache, the next finds it as installed.
        saved = os.path.join(_scratch(), "dropin.cache")
        shutil.copy2(self.cache, saved)
        self.addCleanup(shutil.copy2, saved, self.cache)

    def runAsNobody(self) -> Server:
        server = Server(
            ("echo", "--port", "tcp:0:interface=127.0.0.1"),
            cwd=self.directory,
            runner=[os.path.join(self.venv, "bin", "twistd"), "-n", "--pidfile="],
            preexec=_asUser(self.uid, self.gid),
            # Not this test run's sys.path (trial -j hands it to its
            # workers as PYTHONPATH): only the service's own venv.
            env={name: None for name in _LEAKS},
        )
        self.addCleanup(server.kill)
        return server

    def serves(self, server: Server) -> None:
        self.assertEqual(
            echoOnce(("127.0.0.1", server.port), b"as nobody"), b"as nobody"
        )
        server.signal(signal.SIGTERM)
        self.assertEqual(server.wait(), -signal.SIGTERM)

    def test_runsWithoutTouchingThePluginCache(self) -> None:
        written = os.stat(self.cache).st_mtime_ns
        server = self.runAsNobody()
        self.serves(server)
        self.assertNotIn(CACHE_ERROR, server.output)
        self.assertNotIn("Traceback", server.output)
        self.assertEqual(os.stat(self.cache).st_mtime_ns, written)

    def test_unitsBringAStaleCacheUpToDate(self) -> None:
        """
        Without the cache, nobody's start logs the error (so the test above
        can see it); the shipped units' ExecStartPre=+ line, run as root,
        puts it right.
        """
        os.remove(self.cache)
        server = self.runAsNobody()
        server.waitFor(CACHE_ERROR)
        self.serves(server)
        self.assertFalse(os.path.exists(self.cache))
        for unit in ("echotwist.service", "echotwist-plain.service"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.cache)
            argv = unitCacheCommand(unit)
            self.assertEqual(argv[0], "/opt/echotwist/bin/python")
            _run([os.path.join(self.venv, "bin", "python"), *argv[1:]])
            self.assertTrue(os.path.exists(self.cache), unit)
            server = self.runAsNobody()
            self.serves(server)
            self.assertNotIn(CACHE_ERROR, server.output)
