"""User-facing errors.

Every error a user can cause (bad file, bad option) is a :class:`CryoshotError`
whose message says what is wrong and what to do. The CLI prints it as one line
and exits with status 2; library callers can catch it.
"""


class CryoshotError(Exception):
    """An error caused by input the user can fix."""
