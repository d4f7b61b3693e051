"""
The package as users get it: the wheel's contents, and a fresh virtual
environment where twistd and twist find the plugin.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import zipfile

from twisted.trial.unittest import SynchronousTestCase

from tests._clients import echoOnce
from tests._twistd import Server

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INSTALL_TIMEOUT = 600


def _run(argv: list[str], **kwargs: object) -> str:
    result = subprocess.run(
        argv,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT,
        **kwargs,  # type: ignore[call-overload]
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
    for name in ("setup.cfg", "pyproject.toml", "README.rst"):
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
        )
        self.addCleanup(server.kill)
        self.assertEqual(
            echoOnce(("127.0.0.1", server.port), b"installed"), b"installed"
        )
        server.signal(signal.SIGTERM)
        self.assertEqual(server.wait(), -signal.SIGTERM)
