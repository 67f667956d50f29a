"""A checkpoint that cannot be written (full disk, I/O error) is skipped, not fatal.

The node keeps training and serving; the skip is warned about (once per outage, then
every SKIP_WARN_EVERY rounds), counted in solora_checkpoints_skipped_total, and writing
resumes by itself on the first round the disk takes it again.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable

log = logging.getLogger("solora_node.checkpoint")

SKIP_WARN_EVERY = 20


class CheckpointGuard:
    def __init__(self, on_skip: Callable[[str], None]) -> None:
        self.on_skip = on_skip
        self.skipped_in_a_row = 0

    def save(self, write: Callable[[int], None], round_: int) -> bool:
        """write(round_); False (warned, counted) when the OS refused it."""
        try:
            write(round_)
        except OSError as exc:
            reason = "no_space" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "io_error"
            self.on_skip(reason)
            if self.skipped_in_a_row % SKIP_WARN_EVERY == 0:
                log.warning(
                    "checkpoint of round %d skipped (%s: %s); training goes on, "
                    "retrying every round",
                    round_,
                    reason,
                    exc.strerror or exc,
                )
            self.skipped_in_a_row += 1
            return False
        if self.skipped_in_a_row:
            log.info(
                "checkpoints written again at round %d after %d skipped",
                round_,
                self.skipped_in_a_row,
            )
            self.skipped_in_a_row = 0
        return True
