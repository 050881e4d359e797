"""The one error type users see: a message naming what to fix, and exit code 2."""


class UserError(Exception):
    """Bad input (data, config or arguments) that the user can fix; the CLI prints it and exits 2."""
