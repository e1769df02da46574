"""One exception type for every error a user can fix.

The CLI turns a RabenchError into a single line on stderr and exit code 2; anything
else is a bug and keeps its traceback.
"""


class RabenchError(Exception):
    """A problem with the user's input or environment, stated in one line."""
