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
from tests._tools import CHECKOUT, REQUIRE, requireRoot, requireTool
from tests._twistd import WAIT, Server

ROOT = CHECKOUT
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


def sourceCopy() -> str:
    """
    A fresh copy of what building the package reads, as a checkout has it
    (so that builds write their by-products there, not in the checkout).
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
    return source


@functools.cache
def wheel() -> str:
    """
    Build the wheel from a copy of the source, with a dropin.cache planted
    in the plugin folder as Twisted leaves one after a plugin scan.
    """
    source = sourceCopy()
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


@functools.cache
def distributions() -> list[str]:
    """
    The sdist and the wheel as C{python -m build} makes them from a copy of
    the source: their paths.
    """
    out = os.path.join(_scratch(), "dists")
    _run([sys.executable, "-m", "build", "--outdir", out, sourceCopy()])
    return sorted(os.path.join(out, name) for name in os.listdir(out))


def metadataOf(wheelPath: str) -> str:
    with zipfile.ZipFile(wheelPath) as archive:
        (name,) = (n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        return archive.read(name).decode()


class MetadataTests(SynchronousTestCase):
    """
    The package's metadata, as an index and its users see it.
    """

    def test_everyPackageListed(self) -> None:
        """
        setup.cfg lists its packages one by one (twisted.plugins must not
        be found by a search): every package under echotwist/ is there, or
        an install lacks it while a development install works.
        """
        import configparser

        config = configparser.ConfigParser()
        config.read(os.path.join(ROOT, "setup.cfg"))
        listed = set(config["options"]["packages"].split())
        found = {
            os.path.relpath(directory, ROOT).replace(os.sep, ".")
            for directory, _, files in os.walk(os.path.join(ROOT, "echotwist"))
            if "__init__.py" in files
        }
        self.assertEqual(found - listed, set())

    def test_twineCheckStrict(self) -> None:
        """
        C{twine check --strict} passes on the sdist and the wheel: the long
        description (README) renders, nothing is missing.
        """
        try:
            import twine  # noqa: F401
        except ImportError:
            if os.environ.get(REQUIRE):
                raise
            raise SkipTest("twine is not installed (the test extra)") from None
        dists = distributions()
        self.assertEqual(
            [os.path.basename(d).endswith((".whl", ".tar.gz")) for d in dists],
            [True, True],
        )
        output = _run([sys.executable, "-m", "twine", "check", "--strict", *dists])
        self.assertEqual(output.count("PASSED"), 2, output)
        self.assertNotIn("WARNING", output)

    def test_whatUsersFilterBy(self) -> None:
        """
        The license as an SPDX expression; classifiers for each Python the
        package declares (3.10 to 3.13), the development status, the OS
        and the environment; no project URL (none exists yet).
        """
        (wheelPath,) = [d for d in distributions() if d.endswith(".whl")]
        metadata = metadataOf(wheelPath)
        self.assertIn("\nLicense-Expression: MIT\n", metadata)
        self.assertIn("\nRequires-Python: >=3.10\n", metadata)
        classifiers = re.findall(r"^Classifier: (.*)$", metadata, re.M)
        for version in ("3.10", "3.11", "3.12", "3.13"):
            self.assertIn(f"Programming Language :: Python :: {version}", classifiers)
        for prefix in (
            "Development Status ::",
            "Operating System ::",
            "Environment ::",
        ):
            self.assertTrue(any(c.startswith(prefix) for c in classifiers), prefix)
        self.assertNotIn("Project-URL", metadata)
        self.assertNotIn("Home-page", metadata)

    def test_dependencies(self) -> None:
        """
        What the code imports is declared (zope.interface too);
        prometheus_client only for the metrics extra; the test extra pulls
        no docs or plot tools.
        """
        (wheelPath,) = [d for d in distributions() if d.endswith(".whl")]
        requires = re.findall(r"^Requires-Dist: (.*)$", metadataOf(wheelPath), re.M)
        plain = [r for r in requires if ";" not in r]
        self.assertTrue(any(r.startswith("twisted>=") for r in plain), plain)
        self.assertTrue(any(r.startswith("zope.interface") for r in plain), plain)
        self.assertFalse(any("prometheus" in r for r in plain), plain)
        self.assertIn('prometheus_client>=0.17; extra == "metrics"', requires)
        test = [r.split(";")[0] for r in requires if 'extra == "test"' in r]
        self.assertTrue(test)
        for tool in ("sphinx", "pydoctor", "readme_renderer", "matplotlib"):
            self.assertFalse(any(r.startswith(tool) for r in test), (tool, test))


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

    def installedServer(self) -> Server:
        """
        The installed twistd echo, on a free loopback port, without the
        checkout on its path; killed at the end.
        """
        server = Server(
            ("echo", "--port", "tcp:0:interface=127.0.0.1"),
            cwd=self.directory,
            runner=[os.path.join(self.bin, "twistd"), "-n", "--pidfile="],
            env={name: None for name in _LEAKS},
        )
        self.addCleanup(server.kill)
        return server

    def test_installedServerEchoes(self) -> None:
        server = self.installedServer()
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
        server = self.installedServer()
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
                " is not installed: install echotwist with its tls extra"
                " (pip install '.[tls]' from a checkout)"
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


#: Where the shipped units run echotwist from, and so where the docs install it.
UNITS_PREFIX = "/opt/echotwist"


@functools.cache
def serviceInstall(python: str) -> tuple[str, str, str]:
    """
    The docs' install command for a service, run as in the docs (in a
    checkout: here a copy of its source) with C{python} for python3 and a
    scratch directory standing for C{/}: the command's C{/opt/echotwist}
    becomes C{SCRATCH/opt/echotwist}.

    @return: the scratch root, the environment, and its plugin cache.
    """
    root = _scratch()
    # Readable and searchable by nobody, writable by root alone.
    os.chmod(root, 0o755)
    venv = os.path.join(root, UNITS_PREFIX.lstrip("/"))
    os.makedirs(os.path.dirname(venv), mode=0o755)
    command = installCommand()
    assert f"python3 -m venv {UNITS_PREFIX}" in command, command
    assert f"{UNITS_PREFIX}/bin/pip install . " in command, command
    command = command.replace("python3 -m venv", f"{shlex.quote(python)} -m venv")
    command = command.replace(UNITS_PREFIX, venv)
    _run(["bash", "-c", command], cwd=sourceCopy())
    (cache,) = [
        os.path.join(where, "dropin.cache")
        for where, dirs, files in os.walk(venv)
        if where.endswith(os.path.join("twisted", "plugins"))
        and "dropin.cache" in files
    ]
    return root, venv, cache


def servicePython() -> str:
    """
    The Python to install the service with: one that user nobody can run
    when the tests are root (the environment links to its base Python,
    and this one may live under /root, as pyenv's do).
    """
    candidates = [
        os.path.realpath(getattr(sys, "_base_executable", "") or sys.executable),
        "/usr/bin/python3",
    ]
    if os.geteuid() != 0:
        return candidates[0]
    nobody = pwd.getpwnam("nobody")
    usable = [p for p in candidates if p and _runsAs(p, nobody.pw_uid, nobody.pw_gid)]
    if not usable:
        message = f"no Python that nobody can run (tried {candidates})"
        if os.environ.get(REQUIRE):
            raise AssertionError(message)
        raise SkipTest(message)
    return usable[0]


class UnitsVerifyTests(SynchronousTestCase):
    def test_unitsVerifyAgainstTheDocumentedInstall(self) -> None:
        """
        C{systemd-analyze verify} passes on the shipped units as the docs
        install them: echotwist by the docs' command into opt/echotwist of
        a scratch root, the units in its etc/systemd/system, verified with
        C{--root} so that every path a unit runs is looked up there.  The
        root also gets what any host has and the units rely on: systemd's
        own units (sysinit.target and the like), kill(1), and the Python the
        environment was made from.
        """
        analyze = requireTool("systemd-analyze", "systemd")
        root, venv, _ = serviceInstall(servicePython())
        units = os.path.join(root, "etc", "systemd", "system")
        os.makedirs(units, exist_ok=True)
        names = sorted(os.listdir(os.path.join(ROOT, "deploy", "systemd")))
        for name in names:
            shutil.copy(os.path.join(ROOT, "deploy", "systemd", name), units)
        system = os.path.join(root, "usr", "lib", "systemd", "system")
        if not os.path.isdir(system):
            shutil.copytree("/usr/lib/systemd/system", system, symlinks=True)
        os.makedirs(os.path.join(root, "usr", "bin"), exist_ok=True)
        kill = shutil.which("kill") or "/usr/bin/kill"
        shutil.copy2(os.path.realpath(kill), os.path.join(root, "usr", "bin", "kill"))
        if not os.path.lexists(os.path.join(root, "bin")):
            os.symlink("usr/bin", os.path.join(root, "bin"))
        # The environment's python links to the Python it was made from, by
        # its path on the host, which --root looks up under the root.
        seen = f"{UNITS_PREFIX}/bin/python"  # as a path inside the root
        for _ in range(40):
            inRoot = os.path.join(root, seen.lstrip("/"))
            if not os.path.lexists(inRoot):
                # A host path: the same link, or the file itself, in the root.
                os.makedirs(os.path.dirname(inRoot), exist_ok=True)
                if os.path.islink(seen):
                    os.symlink(os.readlink(seen), inRoot)
                else:
                    shutil.copy2(seen, inRoot)
            if not os.path.islink(inRoot):
                break
            seen = os.path.normpath(
                os.path.join(os.path.dirname(seen), os.readlink(inRoot))
            )
        result = subprocess.run(
            [
                analyze,
                "verify",
                f"--root={root}",
                *(f"/etc/systemd/system/{name}" for name in names),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        output = result.stdout + result.stderr
        self.assertEqual((result.returncode, output), (0, ""))
        for program in ("twistd", "python"):
            self.assertTrue(os.access(os.path.join(venv, "bin", program), os.X_OK))


class AnotherUserTests(SynchronousTestCase):
    """
    The docs' install, done by root in a directory nobody else may write;
    twistd run by nobody.
    """

    def setUp(self) -> None:
        requireRoot("installs as root and runs the server as nobody")
        nobody = pwd.getpwnam("nobody")
        self.uid, self.gid = nobody.pw_uid, nobody.pw_gid
        self.python = servicePython()
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
