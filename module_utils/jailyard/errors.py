"""The single exception type every jailyard operation raises on bad input or failure."""


class JailError(Exception):
    """One sentence naming the bad value and what was expected."""
