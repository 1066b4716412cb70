"""User-facing errors: the CLI prints ``tokalign: <message>`` (one line) and exits non-zero."""


class TokalignError(Exception):
    """A problem with the user's input (bad file, bad option, mismatched artifacts)."""

    exit_code = 2
