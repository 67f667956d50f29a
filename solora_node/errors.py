"""One base class for problems a user can fix; the CLI prints them as one line, no traceback."""


class SoloraError(Exception):
    """A user-facing error: bad config, data, checkpoint, peer input or missing resource."""
