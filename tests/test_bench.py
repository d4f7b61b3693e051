"""
The benchmark still runs as README.rst says: a very short run of it, with
the C load generator and with the Python client, against the installed
twistd.  Its figures are not checked here (speed is the benchmark's
business, not the test suite's); that every server answered, every byte
checked, and the report came out, is.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import os
import socket
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

from tests._tools import requireTool

BENCH = os.path.join(
    os.path.dirname(os.path.dirname(__file__)), "benchmarks", "bench.py"
)


def runBench(*args: str) -> str:
    result = subprocess.run(
        [
            sys.executable,
            BENCH,
            "--quick",
            "--seconds",
            "0.3",
            "--repeat",
            "1",
            "--no-workers",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode:
        raise AssertionError(f"bench.py failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


class BenchTests(SynchronousTestCase):
    def test_cLoadGenerator(self) -> None:
        requireTool("cc", "gcc")
        out = runBench(
            "--client", "c", "--idle", "200", "--only", "echotwist,asyncio,c-epoll"
        )
        for server in ("echotwist", "asyncio", "c-epoll"):
            for size in (1024, 102400):
                self.assertRegex(out, rf"\n{server} +{size} +10 +\d+")
            self.assertRegex(out, rf"\n  {server} +\d+ bytes")
        self.assertIn("\ntargets:\n", out)
        self.assertRegex(
            out,
            r"echotwist vs asyncio, msg/CPU-s, 1024 B x 10 >= 1\.0:"
            r" \d+\.\d\d \(rounds \d+\.\d\d-\d+\.\d\d\)",
        )
        self.assertRegex(out, r"msg/CPU-s +usr us +sys us +-r is x\n")

    def test_pythonClient(self) -> None:
        out = runBench("--idle", "0", "--only", "echotwist-r,twisted")
        self.assertRegex(out, r"\nechotwist-r +1024 +10 +\d+")
        self.assertRegex(out, r"\ntwisted +102400 +10 +\d+")
        self.assertIn("echotwist-r vs twisted, msg/CPU-s, 1024 B x 10 >= 1.6", out)


def loadBench():  # type: ignore[no-untyped-def]
    # Loaded as a module of its own name (its dataclasses look it up in
    # sys.modules), not imported: benchmarks/ is not a package.
    name = "_echotwist_bench"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class ReportTests(SynchronousTestCase):
    def test_ratiosArePairedByRound(self) -> None:
        """
        A target's ratio is the median of the ratios taken round by round
        (each pair measured back to back), shown with the rounds' range;
        not the ratio of the two medians, which pairs up rounds minutes
        apart.
        """
        bench = loadBench()

        def cells(server: str, perCPU: list[int]) -> list[object]:
            return [
                bench.Cell(server, 1024, 10, messages, 1.0, 1.0, 0.0, 50.0, 90.0)
                for messages in perCPU
            ]

        runs = {
            ("echotwist-r", 1024, 10): cells("echotwist-r", [100, 200, 300]),
            ("asyncio", 1024, 10): cells("asyncio", [100, 400, 150]),
        }
        medians = [found[1] for found in runs.values()]
        args = argparse.Namespace(client="c", seconds=1.0, repeat=3, idle=0, plot=None)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            bench.report(medians, runs, {}, {}, args)
        # Ratios 1.0, 0.5, 2.0: median 1.0.  The medians' ratio would be
        # 200 / 150 = 1.33.
        self.assertIn(
            "MET  echotwist-r vs asyncio, msg/CPU-s, 1024 B x 10 >= 1.0: 1.00"
            " (rounds 0.50-2.00)",
            out.getvalue(),
        )
        self.assertRegex(out.getvalue(), r"\nasyncio +1024 +10 .* 1\.00\n")
        # Servers this run left out are not reported as misses.
        self.assertNotIn("twisted", out.getvalue().split("targets:")[1])


# Listens, says its port the way peers.py does (under PYTHONUNBUFFERED, one
# write per word), then says so once it has accepted a connection.
TALKER = """
import socket
listener = socket.create_server(("127.0.0.1", 0))
print("PORT", listener.getsockname()[1], flush=True)
listener.accept()
print("accepted", flush=True)
"""


class RunningTests(SynchronousTestCase):
    def test_readingTheLogLeavesTheServersWritesAlone(self) -> None:
        """
        Reading a server's log from the start (as everything that waits on
        a server does) does not move where the server writes next: the
        server's stdout is not the description the benchmark reads through.
        Sharing one, a read between two of the server's writes had the
        next write land over "PORT" (a CI run failed "asyncio did not
        start" with " 42193" in the log).
        """
        bench = loadBench()
        directory = self.mktemp()
        os.makedirs(directory)
        peer = bench.Peer("talker", [sys.executable, "-c", TALKER], r"PORT (\d+)")
        server = bench.Running(peer, directory, pinned=False)
        self.addCleanup(server.log.close)
        self.addCleanup(server.stop)
        server.log.seek(0)
        with socket.create_connection(("127.0.0.1", server.port), timeout=10):
            self.assertEqual(server.process.wait(10), 0)
        self.assertEqual(server.output(), f"PORT {server.port}\naccepted\n".encode())
