"""One base class for problems a user can fix; the CLI prints them as one line, no traceback."""


class SoloraError(Exception):
    """A user-facing error: bad config, data, checkpoint, peer input or missing resource."""


class NotBuiltYet(SoloraError):
    """A subcommand whose issue has not landed: say so plainly, never fake output."""

    def __init__(self, what: str, issue: int) -> None:
        super().__init__(f"{what} is not available yet (tracked in issue {issue})")
