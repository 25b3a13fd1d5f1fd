"""User-facing errors.

Every problem a user can fix (bad YAML, a missing dataset folder, an unreadable
image, a checkpoint that does not match) is raised as a `PsrError` subclass with
a one-line message that names the problem and the fix. The CLI prints that line
and exits with status 2; any other exception keeps its traceback because it is
a bug in psr, not in the user's input.
"""

from __future__ import annotations

import errno
import os
import re
from typing import Optional, Union


class PsrError(Exception):
    """Base class of errors whose message is meant for the user."""


class ConfigError(PsrError):
    """The experiment YAML or a `--set` override is invalid."""


class DatasetError(PsrError):
    """A dataset folder or image cannot be used."""


class CheckpointError(PsrError):
    """A checkpoint or exported model cannot be read or does not match."""


class TrainingError(PsrError):
    """Training cannot go on (for example a loss became NaN)."""


class OutputError(PsrError):
    """An output path is refused (it holds foreign files, is an input, or is the wrong kind of path)."""


class StorageError(PsrError):
    """The operating system refused a read or write (read-only, no space, not a folder, ...).

    `errno` is the fault's code when known, so an outer writer can name its own path instead.
    """

    def __init__(self, message: str, errno: Optional[int] = None):
        super().__init__(message)
        self.errno = errno


# errno → (what happened, the fix). Messages name the path in front of these.
_OS_FAULTS = {
    errno.EROFS: ("is on a read-only file system", "choose a writable location or remount it read-write"),
    errno.EACCES: ("is not writable (permission denied)", "fix its permissions or choose another location"),
    errno.EPERM: ("is not writable (operation not permitted)", "fix its permissions or choose another location"),
    errno.ENOSPC: ("cannot be written: no space left on the device", "free some space or choose another disk"),
    errno.EDQUOT: ("cannot be written: the disk quota is exceeded", "free some space or choose another disk"),
    errno.ENOTDIR: ("cannot be used: a part of the path is a file, not a folder",
                    "remove or rename that file, or choose another path"),
    errno.EISDIR: ("is a folder where a file is expected", "pass a file path or choose another name"),
    errno.EEXIST: ("already exists", "remove it or choose another path"),
    errno.ENOENT: ("does not exist", "check the path"),
}
# Text TensorFlow and HDF5 put in their own exceptions for the same faults (they carry no errno).
_OS_FAULT_TEXT = {
    "read-only file system": errno.EROFS,
    "permission denied": errno.EACCES,
    "no space left on device": errno.ENOSPC,
    "disk quota exceeded": errno.EDQUOT,
    "not a directory": errno.ENOTDIR,
    "is a directory": errno.EISDIR,
    "file exists": errno.EEXIST,
}


def os_fault_errno(err: BaseException) -> Optional[int]:
    """The errno of an operating-system fault: `err.errno`, or one named in the text of a wrapped error."""
    code = getattr(err, "errno", None)
    if isinstance(code, int) and code in _OS_FAULTS:
        return code
    text = str(err).lower()
    for phrase, code in _OS_FAULT_TEXT.items():
        if phrase in text:
            return code
    match = re.search(r"errno\s*=?\s*(\d+)", text)
    if match and int(match.group(1)) in _OS_FAULTS:
        return int(match.group(1))
    return None


def _path_in_text(text: str) -> Optional[str]:
    """The first absolute path in an error text (TensorFlow names the file in its message)."""
    match = re.search(r"(/[^\s:;,'\"()]+)", text)
    return match.group(1) if match else None


def describe_os_error(err: BaseException, path: Union[str, os.PathLike, None] = None) -> str:
    """One line naming the path, what the operating system refused and the fix.

    `path` is the file or folder psr was writing; without it the error's own file name is used.
    """
    where = path if path is not None else (getattr(err, "filename", None) or _path_in_text(str(err)) or "a file")
    code = os_fault_errno(err)
    if code is None:
        text = str(err).strip()
        reason = getattr(err, "strerror", None) or (text.splitlines()[0] if text else type(err).__name__)
        return f"{where}: {reason}. Check the path and retry."
    problem, fix = _OS_FAULTS[code]
    return f"{where} {problem}; {fix}."


def wrapped_user_error(err: BaseException):
    """The message of a `PsrError` raised inside TensorFlow (e.g. in a tf.data `numpy_function`), or None.

    TensorFlow re-raises such errors as its own `UnknownError` whose text holds
    the original "psr.errors.DatasetError: <message>" line.
    """
    names = {cls.__name__ for cls in (PsrError, *PsrError.__subclasses__())}
    for line in str(err).splitlines():
        for name in names:
            marker = f"{name}: "
            if marker in line:
                return line.split(marker, 1)[1].strip()
    return None
