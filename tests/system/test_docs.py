"""
The documentation: the Sphinx site builds with warnings as errors, its
options reference lists exactly the options C{twistd echo --help} lists,
every signal the server handles and every event it logs has its entry, the
environment example for a repeated option starts a server, and README.rst
stays a valid front page whose links lead somewhere.

Building the site needs the C{docs} extra (Sphinx, pydoctor), which the
C{test} extra leaves out; without it the build tests skip, and with
ECHOTWIST_REQUIRE_TOOLS set (CI) they fail instead.
"""

from __future__ import annotations

import atexit
import functools
import glob
import inspect
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from typing import Any

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests._tools import CHECKOUT, REQUIRE
from tests._twistd import ServerTestCase, command
from tests.system.test_transports import freePort

ROOT = CHECKOUT
DOCS = os.path.join(ROOT, "docs")

#: Sphinx and pydoctor together take seconds; a loaded CI machine, more.
BUILD_TIMEOUT = 300.0


def requireDocsTools() -> None:
    """
    Sphinx and pydoctor are installed (the C{docs} extra).
    """
    try:
        import pydoctor  # noqa: F401
        import sphinx  # noqa: F401
    except ImportError as e:
        message = f"the docs tools are not installed ({e}): pip install '.[docs]'"
        if os.environ.get(REQUIRE):
            raise AssertionError(f"{message}, and {REQUIRE} is set") from None
        raise SkipTest(message) from None


@functools.cache
def builtSite() -> str:
    """
    Build the site once per test run, as CI and README build it
    (C{sphinx-build -W -b html docs OUT}), into a temporary directory; the
    directory it landed in.

    @raise AssertionError: if the build fails or warns, with its output.
    """
    out = tempfile.mkdtemp(prefix="echotwist-docs-")
    atexit.register(shutil.rmtree, out, True)
    html = os.path.join(out, "html")
    # No bytecode for docs/conf.py and docs/_ext: tests write nothing into
    # the checkout.
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "--keep-going",
            "-q",
            "-b",
            "html",
            "-d",
            os.path.join(out, "doctrees"),
            DOCS,
            html,
        ],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        env=env,
    )
    if result.returncode != 0:
        raise AssertionError(
            f"sphinx-build -W failed ({result.returncode}):\n"
            f"{result.stdout}\n{result.stderr}"
        )
    return html


def helpText() -> str:
    """
    What C{twistd echo --help} prints.
    """
    result = subprocess.run(
        [command("twistd"), "echo", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tempfile.gettempdir(),
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def helpOptions() -> list[str]:
    """
    Every option C{twistd echo --help} lists, short forms included, as
    typed (C{-p}, C{--port}), sorted.
    """
    names = []
    # An option's own line is indented by two to six spaces; its help text
    # wraps at a deeper indent, and may start with an option name too.
    for line in helpText().splitlines():
        found = re.match(r"^ {2,6}(?:(-\w), )?(--[\w-]+)", line)
        if found:
            names.extend(name for name in found.groups() if name)
    return sorted(names)


def referenceOptions(html: str) -> list[str]:
    """
    Every option the built options reference describes, as typed, sorted.
    """
    with open(os.path.join(html, "options.html"), encoding="utf-8") as f:
        page = f.read()
    return sorted(
        re.findall(r'<span class="sig-name descname"><span class="pre">(-[^<]+)<', page)
    )


def _optionRows() -> list[Any]:
    """
    The rows the options reference renders (docs/_ext/optionsref.py).
    """
    sys.path.insert(0, os.path.join(DOCS, "_ext"))
    try:
        from optionsref import optionRows
    finally:
        sys.path.remove(os.path.join(DOCS, "_ext"))
    return optionRows()  # type: ignore[no-any-return]


class DocsSiteTests(SynchronousTestCase):
    """
    The site as C{sphinx-build -W} builds it.
    """

    def setUp(self) -> None:
        requireDocsTools()

    def test_builds(self) -> None:
        """
        The site builds without a warning, with the options reference and
        pydoctor's API reference in it.
        """
        html = builtSite()
        for page in ("index.html", "options.html", "operations.html", "api/index.html"):
            self.assertTrue(os.path.exists(os.path.join(html, page)), page)
        self.assertTrue(
            glob.glob(os.path.join(html, "api", "echotwist.tap*.html")),
            "pydoctor documented no echotwist.tap",
        )

    def test_optionsAreTheHelpOptions(self) -> None:
        """
        The options reference lists exactly the options of
        C{twistd echo --help}: none missing, none extra, none twice.
        """
        fromHelp = helpOptions()
        self.assertIn("--port", fromHelp)
        self.assertIn("-p", fromHelp)
        self.assertEqual(referenceOptions(builtSite()), fromHelp)

    def test_everyValueIsNamed(self) -> None:
        """
        The reference names what each option's value stands for (N,
        SECONDS, PORT, ...); none falls through to a bare VALUE.
        """
        for row in _optionRows():
            self.assertNotEqual(row.metavar, "VALUE", row.names)


class SignalTests(SynchronousTestCase):
    """
    Every signal the server acts on has its entry in the operations page's
    list of signals.
    """

    def test_everyHandledSignalIsDocumented(self) -> None:
        handled = set()
        for path in glob.glob(os.path.join(ROOT, "echotwist", "*.py")):
            with open(path, encoding="utf-8") as f:
                handled.update(re.findall(r"\bsignal\.(SIG[A-Z0-9]+)\b", f.read()))
        # Twisted's runners handle these two for us, and faulthandler this one.
        handled.update({"SIGTERM", "SIGINT", "SIGSEGV"})
        with open(os.path.join(DOCS, "operations.rst"), encoding="utf-8") as f:
            page = f.read()
        section = page[page.index("Signals, one by one") :]
        section = section[: section.index("\nLogs\n")]
        entries = set()
        for term in re.findall(r"^ *``SIG.*$", section, re.M):
            entries.update(re.findall(r"``(SIG[A-Z0-9]+)``", term))
        self.assertEqual(handled - entries, set())


class LogEventTests(SynchronousTestCase):
    """
    Every event name the server logs has its entry in the operations
    page's list of events, where a log reader looks its fields up.
    """

    def test_everyLoggedEventIsDocumented(self) -> None:
        logged = set()
        pattern = os.path.join(ROOT, "echotwist", "**", "*.py")
        for path in glob.glob(pattern, recursive=True):
            with open(path, encoding="utf-8") as f:
                logged.update(re.findall(r'\bevent="([a-z_]+\.[a-z_]+)"', f.read()))
        self.assertIn("connection.closed", logged)
        with open(os.path.join(DOCS, "operations.rst"), encoding="utf-8") as f:
            page = f.read()
        section = page[page.index("\nLogs\n") : page.index("\nMetrics\n")]
        documented = set(re.findall(r"``([a-z_]+\.[a-z_]+)``", section))
        self.assertEqual(sorted(logged - documented), [])


class ReadmeTests(SynchronousTestCase):
    """
    README.rst, which is also the package's long description on PyPI.
    """

    def setUp(self) -> None:
        with open(os.path.join(ROOT, "README.rst"), encoding="utf-8") as f:
            self.text = f.read()

    def test_short(self) -> None:
        """
        A front page: at most 250 lines; the rest lives in docs/.
        """
        self.assertLessEqual(len(self.text.splitlines()), 250)

    def test_validReST(self) -> None:
        """
        It renders as PyPI renders it (readme_renderer), with no error.
        """
        try:
            from readme_renderer.rst import render
        except ImportError:
            if os.environ.get(REQUIRE):
                raise
            raise SkipTest(
                "readme_renderer is not installed: pip install '.[docs]'"
            ) from None
        self.assertIsNotNone(render(self.text))

    def test_optionsTableAgreesWithHelp(self) -> None:
        """
        README's short table of the main options names each option with the
        metavar the options reference gives it, and the default C{--help}
        prints for it.
        """
        requireDocsTools()
        reference = {row.names[-1]: row for row in _optionRows()}
        table = self.text[self.text.index("Main options") :]
        rows = re.findall(r"^(``-.*?``)\s{2,}(\S+)\s{2,}\S", table, re.M)
        self.assertGreaterEqual(len(rows), 5)
        for typed, default in rows:
            name, metavar = re.findall(r"``(--[\w-]+) (\S+)``", typed)[0]
            row = reference[name]
            self.assertEqual(metavar, row.metavar, name)
            helpDefault = re.search(r"\[default: ([^,\]]+)", row.doc)
            assert helpDefault, name
            expected, shown = helpDefault.group(1), default.strip("`")
            try:
                self.assertEqual(float(shown), float(expected), name)
            except ValueError:
                self.assertEqual(shown, expected, name)

    def test_kernelMemoryAsHelpSaysIt(self) -> None:
        """
        README and C{twistd echo --help} give one figure for the kernel
        memory a client that never reads can pin at the defaults.
        """
        help = " ".join(helpText().split())
        (fromHelp,) = re.findall(r"about (\d+) KiB of kernel memory", help)
        readme = " ".join(self.text.split())
        (fromReadme,) = re.findall(r"about (\d+) KiB of kernel socket memory", readme)
        self.assertEqual(fromHelp, fromReadme)

    def test_noLinkBreaksOnAPackageIndex(self) -> None:
        """
        README is also the package's page on an index, where a relative
        link (C{docs/x.rst}) leads nowhere: every link target is an
        absolute URL, and every file it names as a path exists.
        """
        targets = re.findall(r"<([^>]+)>`_", self.text) + re.findall(
            r"^\.\. _[^:]+: (\S+)$", self.text, re.M
        )
        for target in targets:
            self.assertRegex(target, r"^https://", target)
        paths = re.findall(r"``((?:docs/)?[\w/.-]+\.rst|LICENSE)``", self.text)
        self.assertIn("docs/deployment.rst", paths)
        for path in paths:
            inDocs = os.path.join(ROOT, "docs", path)
            self.assertTrue(
                os.path.exists(os.path.join(ROOT, path)) or os.path.exists(inDocs),
                path,
            )


class EnvironmentExampleTests(ServerTestCase):
    """
    The environment example docs/options.rst gives for a repeated option
    starts a server, on a free port in place of its 5000.
    """

    def test_repeatedOptionExampleListens(self) -> None:
        """
        It was a pair that cannot coexist on a Linux host at its default
        net.ipv6.bindv6only=0 (UDP on 0.0.0.0 and on the dual-stack
        C{::}): the second failed with "Address already in use".
        """
        with open(os.path.join(DOCS, "options.rst"), encoding="utf-8") as f:
            text = f.read()
        ((name, value),) = re.findall(r'``(ECHOTWIST_UDP)="([^"]+)"``', text)
        self.assertEqual(len(value.split()), 2, value)
        port = str(freePort(socket.SOCK_DGRAM))
        server = self.start(
            runner=[command("twistd"), "-n", "--pidfile=", "echo"],
            env={name: value.replace("5000", port)},
        )
        server.waitForCount(rf"Listening on \S+ \(udp:{port}:", 2)
        server.signal(signal.SIGTERM)
        self.assertEqual(server.wait(), -signal.SIGTERM, server.output)


class APIPageTests(SynchronousTestCase):
    def documented(self, name: str) -> list[str]:
        """
        The parameters docs/api.rst gives class C{name}, in order.
        """
        with open(os.path.join(DOCS, "api.rst"), encoding="utf-8") as f:
            text = " ".join(f.read().split())
        # The first mention is the signature; later ones are examples.
        documented = re.findall(rf"``{name}\(((?:\([^()]*\)|[^()])*)\)``", text)[0]
        # Defaults in parentheses hold commas of their own.
        documented = re.sub(r"\([^()]*\)", "", documented)
        return [
            p.strip().split("=")[0].lstrip("*")
            for p in documented.split(",")
            if p.strip() not in ("*", "")
        ]

    def test_signatures(self) -> None:
        """
        docs/api.rst gives EchoService's and EchoFactory's parameters as the
        classes take them, in order; it left out six of one and every limit
        of the other.
        """
        from echotwist import EchoFactory, EchoService

        for cls in (EchoService, EchoFactory):
            self.assertEqual(
                self.documented(cls.__name__),
                list(inspect.signature(cls).parameters),
                cls.__name__,
            )


class QuotedMessageTests(SynchronousTestCase):
    """
    The error lines docs/options.rst quotes are the lines the program
    prints.
    """

    def test_quotedRefusalsAreTrue(self) -> None:
        with open(os.path.join(DOCS, "options.rst")) as f:
            # reST wraps the quotes over lines: compare with blanks squeezed.
            text = " ".join(f.read().split())
        quoted = re.findall(r"``twistd -n: (\S+): (.+?)``", text)
        self.assertGreaterEqual(len(quoted), 3, quoted)
        with tempfile.TemporaryDirectory() as directory:
            for name, message in quoted:
                env = dict(os.environ)
                argv = [command("twistd"), "-n", "--pidfile=", "echo"]
                value = re.match(r"'([^']*)'", message)
                assert value is not None, message
                if name.startswith("--"):
                    argv += [name, value.group(1)]
                else:
                    env[name] = value.group(1)
                result = subprocess.run(
                    argv,
                    cwd=directory,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
                self.assertNotEqual(result.returncode, 0, result.stdout)
                last = (result.stdout + result.stderr).strip().splitlines()[-1]
                self.assertTrue(
                    last.endswith(f"{name}: {message}"), (name, message, last)
                )
