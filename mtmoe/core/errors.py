"""The errors users see: bad input they can fix (exit code 2), or a step that broke (exit code 1)."""


class UserError(Exception):
    """Bad input (data, config or arguments) that the user can fix; the CLI prints it and exits 2."""


class StepFailed(Exception):
    """A step of a command broke (not the user's input): the message names the step and where the
    full log is; exit code 1."""
