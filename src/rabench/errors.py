"""One exception type for every error a user can fix.

The CLI turns a RabenchError into a single line on stderr and exit code 2; anything
else is a bug and keeps its traceback.
"""


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
        self.exit_code = 124
