"""Exceptions that mean "the user gave us something wrong" (clear message, no traceback)."""


class MlscaleError(Exception):
    """An error with a message meant for the user: bad input, missing file or executable.

    The CLI prints ``mlscale: error: <message>`` once and exits with status 1 on
    every rank; it never shows a traceback for these.
    """
