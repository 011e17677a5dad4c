"""One exception type for problems a user can fix, so entry points print one line, not a traceback."""


class CifarLabError(RuntimeError):
    """A bad input, file or setting; the message names the value, what was expected and the fix."""
