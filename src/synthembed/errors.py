"""The one exception type the CLI turns into a one-line message and exit code 2, and the line for any other."""


class UserError(Exception):
    """A problem the user can fix (bad input, bad params, unknown model); shown without a traceback."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, at most 300 characters (library messages run to dozens)."""
    return (str(exc).strip().splitlines() or [""])[0][:300]


def describe(exc: BaseException) -> str:
    """An unexpected exception (a library's, not ours) as one line: its type and its message's first line."""
    first = first_line(exc)
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__
