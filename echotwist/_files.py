# -*- test-case-name: tests.test__files -*-
"""
Why a file could not be made where a user asked for one (a pidfile, a log
file, a UNIX socket), in words a user can act on, not an OSError about the
first helper file that failed.
"""

from __future__ import annotations

import errno
import os
import stat

__all__ = ["whyCannotChangeTo", "whyCannotCreateIn", "whyCannotWrite"]


def _may(path: str, mode: int) -> bool:
    """
    Whether this process may open C{path} for C{mode} as C{open} would:
    with its effective ids and capabilities.  A plain C{os.access} asks
    for the real ids, and for any user but root drops every capability:
    it said no where a user with CAP_DAC_OVERRIDE (systemd's
    C{AmbientCapabilities=}) writes.
    """
    return os.access(path, mode, effective_ids=os.access in os.supports_effective_ids)


def whyCannotChangeTo(directory: str) -> str | None:
    """
    Why this process could not make C{directory} its working directory, or
    None if it could: it does not exist, is not a directory, or this user
    may not enter it.
    """
    try:
        isDirectory = stat.S_ISDIR(os.stat(directory).st_mode)
    except PermissionError:
        return f"{os.strerror(errno.EACCES)} to reach it"
    except OSError:
        return "it does not exist"
    if not isDirectory:
        return "it is not a directory"
    if not _may(directory, os.X_OK):
        return f"{os.strerror(errno.EACCES)} to enter it"
    return None


def whyCannotCreateIn(directory: str) -> str | None:
    """
    Why no file can be created in C{directory} by this process, or None if
    one can: it does not exist, this user may not reach it, its file
    system is read-only, or its permissions refuse this user.
    """
    try:
        isDirectory = stat.S_ISDIR(os.stat(directory).st_mode)
    except PermissionError:
        # A directory on the way that this user may not search: the one
        # asked for may well exist.
        return f"{os.strerror(errno.EACCES)} to reach {directory}"
    except OSError:
        isDirectory = False
    if not isDirectory:
        return f"its directory {directory} does not exist"
    if os.statvfs(directory).f_flag & os.ST_RDONLY:
        return f"{os.strerror(errno.EROFS).lower()} at {directory}"
    if not _may(directory, os.W_OK | os.X_OK):
        return f"{os.strerror(errno.EACCES)} to create a file in {directory}"
    return None


def whyCannotWrite(path: str, alsoRead: bool = False) -> str | None:
    """
    Why C{path} cannot be opened for writing, created if missing (as twistd
    opens its pidfile and its log file), or None if it can.  With
    C{alsoRead}, for reading too, if it exists (twistd reads a pidfile
    that exists before it writes one, and opens its log file C{rb+}).

    A symbolic link is looked at where C{open} would write: its target (a
    pidfile linked from a read-only directory into C{/run}, created there
    if missing).  A file that exists is writable if its own file system is
    (a log file bind-mounted into a read-only root), whatever its
    directory's is.
    """
    given = os.path.abspath(path)
    path = os.path.realpath(given)
    if os.path.isdir(path):
        return "it is a directory"
    if os.path.exists(path):
        if os.statvfs(path).f_flag & os.ST_RDONLY:
            where = "" if path == given else f" at {path}"
            return f"{os.strerror(errno.EROFS).lower()}{where}"
        if not _may(path, os.W_OK):
            return os.strerror(errno.EACCES)
        if alsoRead and not _may(path, os.R_OK):
            return f"{os.strerror(errno.EACCES)} to read it, which twistd does too"
        return None
    return whyCannotCreateIn(os.path.dirname(path))
