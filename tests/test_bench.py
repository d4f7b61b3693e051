"""
The benchmark still runs as README.rst says: a very short run of it, with
the C load generator and with the Python client, against the installed
twistd.  Its figures are not checked here (speed is the benchmark's
business, not the test suite's); that every server answered, every byte
checked, and the report came out, is.
"""

from __future__ import annotations

import os
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
        self.assertIn("echotwist vs asyncio, msg/CPU-s, 1024 B x 10 >= 1.0", out)

    def test_pythonClient(self) -> None:
        out = runBench("--idle", "0", "--only", "echotwist-r,twisted")
        self.assertRegex(out, r"\nechotwist-r +1024 +10 +\d+")
        self.assertRegex(out, r"\ntwisted +102400 +10 +\d+")
        self.assertIn("echotwist-r vs twisted, msg/CPU-s, 1024 B x 10 >= 1.6", out)
