"""User-facing errors.

Every problem a user can fix (bad YAML, a missing dataset folder, an unreadable
image, a checkpoint that does not match) is raised as a `PsrError` subclass with
a one-line message that names the problem and the fix. The CLI prints that line
and exits with status 2; any other exception keeps its traceback because it is
a bug in psr, not in the user's input.
"""


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
