"""User-facing errors.

Anything the user can fix (a wrong task name, a missing folder, a bad column) is raised as
:class:`EgkdError`. The CLI prints its message on one line and exits with status 2, without a
traceback; everything else is a bug and keeps its traceback.
"""


class EgkdError(Exception):
    """An error caused by user input; its message says what was wrong and how to fix it."""
