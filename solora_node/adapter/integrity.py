"""Checksums of the files of an adapter folder: `infer` refuses a file that changed.

The manifest lists the sha256 of every tensor file; the reader checks the bytes it will
parse (not a second read), so a flipped bit on disk is one error line, never a
silently different answer.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from pathlib import Path

from solora_node.adapter.errors import CheckpointError

log = logging.getLogger(__name__)

CHECKSUMS = "checksums"  # manifest field: file name -> sha256 hex


def file_checksums(folder: Path, names: Iterable[str]) -> dict[str, str]:
    return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in names}


def read_verified(
    folder: Path, manifest: dict[str, object], names: Iterable[str]
) -> dict[str, bytes]:
    """The bytes of each file, checked against the manifest's checksums."""
    expected = manifest.get(CHECKSUMS)
    if expected is None:
        log.warning("%s: written before checksums were recorded; not verified", folder)
        expected = {}
    if not isinstance(expected, dict):
        raise CheckpointError(f"checkpoint {folder}: manifest field {CHECKSUMS!r} is not a mapping")
    contents: dict[str, bytes] = {}
    for name in names:
        try:
            data = (folder / name).read_bytes()
        except FileNotFoundError:
            raise CheckpointError(f"checkpoint {folder}: {name} not found") from None
        except OSError as exc:
            raise CheckpointError(
                f"checkpoint {folder / name}: cannot read ({exc.strerror})"
            ) from None
        want = expected.get(name)
        if want is not None and hashlib.sha256(data).hexdigest() != want:
            raise CheckpointError(
                f"checkpoint {folder / name}: checksum mismatch (the file changed after it was "
                "written: corrupted or edited); copy the adapter folder again"
            )
        contents[name] = data
    return contents
