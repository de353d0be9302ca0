"""The mistakes a face reports in one line instead of a traceback: a bad config value
(ConfigError), a bad annotation or image (AnnotationError), bad evaluation input (InputError), a
file that is missing, unreadable or unwritable (OSError, CorruptFileError). `dked-tf` and the
recipe scripts print `error_line(error)` and exit with code 2. Imports no TensorFlow."""

from dked_tf.config import ConfigError
from dked_tf.data.records import AnnotationError, InputError

USER_ERRORS = (ConfigError, AnnotationError, InputError, OSError)
EXIT_USER_ERROR = 2


def error_line(error):
    """One line saying what is wrong and with which file (and line, where the error knows it)."""
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        where = str(error.filename) + (f" -> {error.filename2}" if error.filename2 is not None else "")
        text = f"{where}: {error.strerror}"
    else:
        text = str(error) or type(error).__name__
    return " ".join(text.split())
