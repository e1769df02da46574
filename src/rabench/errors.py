"""One exception type for every error a user can fix.

The CLI turns a RabenchError into a single line on stderr and exit code 2; anything
else is a bug and keeps its traceback. `exit_status` is the one mapping from an exception to
its line and code, shared by the CLI and the suite's worker processes so both say it alike.
"""

import sys

EXIT_BAD_INPUT = 2
EXIT_DEADLINE = 124  # as `timeout` exits
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C


class RabenchError(Exception):
    """A problem with the user's input or environment, stated in one line."""


class SettingError(RabenchError):
    """A bad value of one run setting, its message starting with the field's name (batch_size); the
    command line says it with the flag the user typed instead (--batch-size), a plan keeps the name."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class RunInterrupted(RabenchError):
    """SIGINT or SIGTERM stopped a run after it checkpointed; the CLI exits 128 + the signal number."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum


class DeadlineReached(RunInterrupted):
    """`rabench suite --deadline` came: finished runs stay, the others were not started or were
    checkpointed; the same command continues them. The CLI exits 124, as `timeout` does."""

    def __init__(self, message: str) -> None:
        RabenchError.__init__(self, message)
        self.exit_code = EXIT_DEADLINE


# what exit_status maps: user-fixable problems and stops; anything else is a bug with a traceback
HANDLED = (RabenchError, OSError, KeyboardInterrupt)


def exit_status(exc: BaseException) -> int:
    """Print `exc` as one line on stderr and return the process's exit code: a checkpointed stop
    128 + its signal (124 at a deadline), bad input or an unusable path 2, Ctrl-C 130."""
    if isinstance(exc, RunInterrupted):
        line, code = f"rabench: {exc}", exc.exit_code
    elif isinstance(exc, RabenchError):
        line, code = f"rabench: error: {exc}", EXIT_BAD_INPUT
    elif isinstance(exc, OSError):  # an unwritable folder, a full disk, a path that is a file
        where = f" {exc.filename}" if exc.filename else ""
        line, code = f"rabench: error: cannot use{where}: {exc.strerror or exc}", EXIT_BAD_INPUT
    elif isinstance(exc, KeyboardInterrupt):
        line, code = "rabench: interrupted", EXIT_INTERRUPTED
    else:
        raise TypeError(f"exit_status has no mapping for {type(exc).__name__}") from exc
    print(line, file=sys.stderr, flush=True)
    return code
