"""One exception type for problems a user can fix: entry points print it as one line."""


class CifarLabError(RuntimeError):
    """A bad input, file or setting; the message names the value, what was expected and the fix."""
