"""
Why a file could not be made (L{echotwist._files}), from real directories
under a temporary one.
"""

from __future__ import annotations

import os

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from echotwist._files import whyCannotChangeTo, whyCannotCreateIn, whyCannotWrite


class WhyCannotTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        os.mkdir(self.directory)

    def test_writable(self) -> None:
        self.assertIsNone(whyCannotCreateIn(self.directory))
        path = os.path.join(self.directory, "new.pid")
        self.assertIsNone(whyCannotWrite(path))
        with open(path, "w"):
            pass
        self.assertIsNone(whyCannotWrite(path))

    def test_missingDirectory(self) -> None:
        missing = os.path.join(self.directory, "run", "echotwist")
        self.assertEqual(
            whyCannotWrite(os.path.join(missing, "echo.pid")),
            f"its directory {missing} does not exist",
        )

    def test_aDirectory(self) -> None:
        self.assertEqual(whyCannotWrite(self.directory), "it is a directory")

    def test_danglingLink(self) -> None:
        """
        A link to a file not there yet: twistd's C{open} creates the
        target, so the target's directory is the one that must exist; the
        link's own directory was looked at, and the start ended in a
        FileNotFoundError traceback.
        """
        missing = os.path.join(self.directory, "run", "echotwist")
        link = os.path.join(self.directory, "echo.pid")
        os.symlink(os.path.join(missing, "echo.pid"), link)
        self.assertEqual(
            whyCannotWrite(link), f"its directory {missing} does not exist"
        )
        os.makedirs(missing)
        self.assertIsNone(whyCannotWrite(link))

    def test_writeOnly(self) -> None:
        """
        A file this user may write but not read: twistd's log file, which
        it opens to read and write (C{rb+}), cannot be opened.
        """
        if os.geteuid() == 0:
            raise SkipTest("root reads whatever the mode says")
        path = os.path.join(self.directory, "echo.log")
        with open(path, "w"):
            pass
        os.chmod(path, 0o200)
        self.assertIsNone(whyCannotWrite(path))
        self.assertEqual(
            whyCannotWrite(path, alsoRead=True),
            "Permission denied to read it, which twistd does too",
        )

    def test_notOurs(self) -> None:
        """
        Permissions that refuse this user (checked where they would: not as
        root, whom they do not stop; tests.system.test_integration drops
        root's override for the real twistd).
        """
        if os.geteuid() == 0:
            raise SkipTest("root writes whatever the mode says")
        os.chmod(self.directory, 0o555)
        self.addCleanup(os.chmod, self.directory, 0o700)
        self.assertEqual(
            whyCannotCreateIn(self.directory),
            f"Permission denied to create a file in {self.directory}",
        )

    def test_notReachable(self) -> None:
        """
        A directory behind one this user may not search was said not to
        exist.
        """
        if os.geteuid() == 0:
            raise SkipTest("root searches whatever the mode says")
        run = os.path.join(self.directory, "run")
        os.mkdir(run)
        os.chmod(self.directory, 0o600)
        self.addCleanup(os.chmod, self.directory, 0o700)
        self.assertEqual(
            whyCannotWrite(os.path.join(run, "echo.pid")),
            f"Permission denied to reach {run}",
        )

    def test_changeTo(self) -> None:
        self.assertIsNone(whyCannotChangeTo(self.directory))
        missing = os.path.join(self.directory, "missing")
        self.assertEqual(whyCannotChangeTo(missing), "it does not exist")
        with open(missing, "w"):
            pass
        self.assertEqual(whyCannotChangeTo(missing), "it is not a directory")

    def test_changeToNotOurs(self) -> None:
        """
        A directory this user may not enter: twistd's C{chdir} there was a
        PermissionError traceback.
        """
        if os.geteuid() == 0:
            raise SkipTest("root enters whatever the mode says")
        os.chmod(self.directory, 0o600)
        self.addCleanup(os.chmod, self.directory, 0o700)
        self.assertEqual(
            whyCannotChangeTo(self.directory), "Permission denied to enter it"
        )
