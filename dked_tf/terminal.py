"""Progress output that suits where it goes: bars on a terminal, nothing in a log file.

A progress bar redraws its line many times a second; written to a file (a recipe's log, a seed
job's log in `dked_tf.jobs`) every redraw stays as a line of its own. So bars are drawn only
when the stream they write to is a terminal; otherwise the caller prints one line per epoch or
per step (`experiment.callbacks.RunProgress`). Imports nothing of the package, so every floor
may use it (like `dked_tf.files`).

    for batch in progress(dataset, total=n, desc="detect", verbose=verbose):
        ...
"""

import sys

from tqdm import tqdm


def on_terminal(stream=None):
    """True when `stream` (default sys.stdout) is an interactive terminal (a TTY)."""
    stream = sys.stdout if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except (ValueError, OSError):  # a closed or detached stream
        return False


def progress(iterable, total=None, desc=None, verbose=1, **tqdm_kwargs):
    """A tqdm bar over iterable when verbose and stderr (tqdm's stream) is a terminal, else the
    iterable itself (quiet: a log file gets no bar). tqdm_kwargs: e.g. unit="img", leave=False."""
    if not verbose or not on_terminal(sys.stderr):
        return iterable
    return tqdm(iterable, total=total, desc=desc, **tqdm_kwargs)


def keras_verbosity(verbose):
    """Keras' `fit(verbose=...)` for our verbose level: its progress bar (1) only on a terminal;
    0 otherwise (the caller prints one line per epoch: Keras' own verbose=2 line would come on
    top of it, with an "Epoch k/N" line before it)."""
    return 1 if verbose and on_terminal(sys.stdout) else 0
