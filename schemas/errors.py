"""The one exception type the CLI turns into a one-line message."""


class CotgenError(Exception):
    """A user-facing error: bad input, bad config, a locked store. Printed without a traceback."""
