"""
Log files reopened in memory (L{echotwist.logs}), as SIGHUP asks, keeping
each file's mode.  (SIGHUP to the real twistd: tests.system.test_signals.)
"""

from __future__ import annotations

import os
import shutil
import tempfile

from twisted.python.logfile import LogFile
from twisted.trial.unittest import SynchronousTestCase

from echotwist.logs import LogFiles
from tests._tools import readText


class LogFilesTests(SynchronousTestCase):
    """
    L{LogFiles} on the objects twistd and twist open, without the runners.
    """

    def setUp(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="echotwist-")
        self.addCleanup(shutil.rmtree, self.directory, True)
        self.addCleanup(shutil.rmtree, self.directory + ".moved", True)
        self.path = os.path.join(self.directory, "echo.log")

    def test_twistdLogFileReopensAtItsPath(self) -> None:
        logFile = LogFile.fromFullPath(self.path)
        self.addCleanup(logFile.close)
        files = LogFiles()
        files.start()
        self.assertIn(logFile.path, files.paths)
        # twistd's own size rotation is off: logrotate rotates.
        self.assertFalse(logFile.shouldRotate())
        logFile.write("before\n")
        os.rename(self.path, self.path + ".1")
        results = dict(files.reopen())
        self.assertIsNone(results[logFile.path])
        logFile.write("after\n")
        logFile.flush()
        self.assertEqual(readText(self.path), "after\n")
        self.assertEqual(readText(self.path + ".1"), "before\n")

    def test_twistFileReopensAtItsPath(self) -> None:
        opened = open(self.path, "a")
        self.addCleanup(opened.close)
        files = LogFiles(opened, twistd=False)
        opened.write("before\n")
        os.rename(self.path, self.path + ".1")
        self.assertIn((os.path.abspath(self.path), None), files.reopen())
        opened.write("after\n")
        opened.flush()
        self.assertEqual(readText(self.path), "after\n")
        self.assertEqual(readText(self.path + ".1"), "before\n")

    def test_unopenablePathKeepsTheOldFile(self) -> None:
        """
        A directory that is gone: the file stays open where it was, and the
        reason is returned for the log.
        """
        logFile = LogFile.fromFullPath(self.path)
        self.addCleanup(logFile.close)
        files = LogFiles()
        os.rename(self.directory, self.directory + ".moved")
        results = dict(files.reopen())
        self.assertIsInstance(results[logFile.path], OSError)
        logFile.write("still\n")
        logFile.flush()
        self.assertEqual(
            readText(os.path.join(self.directory + ".moved", "echo.log")), "still\n"
        )

    def test_standardOutputIsNoFile(self) -> None:
        import sys

        self.assertNotIn(getattr(sys.stdout, "name", None), LogFiles(sys.stdout).paths)
