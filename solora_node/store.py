"""Checkpoints: one directory per round, published atomically, verified on load.

Layout under the store root (see docs/checkpoints.md):

    ckpt-00000012/tensors.safetensors   every tensor (blocks, masks, optimizer state)
    ckpt-00000012/manifest.json         identity, round, sha256 of the tensors, caller meta
    quarantine/ckpt-00000013-<time>     an unusable checkpoint, moved aside, never pruned
    .lock                               held by the one process that writes here

A checkpoint is written completely into a hidden temporary directory, fsynced,
then renamed into place, so a crash at any instant leaves either the old set of
checkpoints or the new one. Loading checks the manifest, the checksum and that
safetensors parses; a bad checkpoint is logged, moved aside, and the previous one used.
Only safetensors and JSON are read: nothing on disk can run code.
"""

from __future__ import annotations

import builtins
import fcntl
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, NamedTuple

import torch
from safetensors.torch import load as parse_safetensors
from safetensors.torch import save as serialize_safetensors

from solora_node.durable import TMP_PREFIX, fsync_dir, write_durably
from solora_node.errors import SoloraError

log = logging.getLogger(__name__)

FORMAT = "solora-checkpoint"
FORMAT_VERSION = 1
TENSORS_FILE = "tensors.safetensors"
MANIFEST_FILE = "manifest.json"
LOCK_FILE = ".lock"
QUARANTINE_DIR = "quarantine"  # unusable checkpoints, moved aside by a writing store
# Work in progress and the replaced copy of a re-saved round; both hidden so that
# nothing reading ckpt-* ever sees them.
_OLD_PREFIX = ".old-"
_CKPT_NAME = re.compile(r"^ckpt-(\d{8,})$")
_DEBRIS_NAME = re.compile(r"^\.(tmp|old)-(ckpt-\d{8,})-[0-9a-f]+$")


class CheckpointError(SoloraError):
    """A checkpoint that was asked for explicitly is unusable, or the store cannot be used."""


class StoredCheckpoint(NamedTuple):
    round: int
    path: Path


@dataclass(frozen=True)
class Checkpoint:
    """A verified checkpoint: everything a restarted node needs to continue."""

    path: Path
    round: int
    node_id: str
    federation: str
    fingerprint: str
    created: float  # unix time of the save
    meta: dict[str, Any]
    tensors: dict[str, torch.Tensor]


def checkpoint_dir_name(round: int) -> str:
    return f"ckpt-{round:08d}"


class CheckpointStore:
    """Save, list and load checkpoints under `root`, keeping the newest `keep`.

    A writing store (the default) takes an exclusive lock on `root/.lock` for its
    lifetime, so two nodes cannot share a data directory, and on opening removes
    what a crashed writer left behind. `readonly=True` (e.g. `infer`) takes no lock,
    changes nothing on disk, and may read while a node writes.
    """

    def __init__(
        self,
        root: Path,
        keep: int,
        *,
        node_id: str = "",
        federation: str = "",
        fingerprint: str = "",
        readonly: bool = False,
    ) -> None:
        if keep < 1:
            raise ValueError("keep must be at least 1")
        self.root = Path(root)
        self.keep = keep
        self.node_id = node_id
        self.federation = federation
        self.fingerprint = fingerprint
        self.readonly = readonly
        self._lock_file: IO[bytes] | None = None
        # Saves may run in a worker thread; two at once would race on pruning.
        self._save_lock = threading.Lock()
        if not readonly:
            self._lock_file = _acquire_writer_lock(self.root)
            self._recover_debris()
            # A writer killed between publishing a round and pruning left keep + 1.
            self._prune_to_keep()

    def close(self) -> None:
        """Release the writer lock (also released by the OS if the process dies)."""
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def __enter__(self) -> CheckpointStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- writing -----------------------------------------------------------------

    def save(
        self,
        round: int,
        tensors: Mapping[str, torch.Tensor],
        meta: Mapping[str, Any] | None = None,
    ) -> Path:
        """Write the checkpoint of `round` atomically, then prune; returns its directory.

        Saving a round discards checkpoints of later rounds (they were skipped as
        unusable, or belong to a history this node abandoned), so history is linear.
        """
        if self._lock_file is None:
            raise CheckpointError(f"{self.root}: checkpoint store is read-only or closed")
        if round < 0:
            raise ValueError("round must be non-negative")
        payload = serialize_safetensors(_plain_tensors(tensors))
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "round": round,
            "node_id": self.node_id,
            "federation": self.federation,
            "fingerprint": self.fingerprint,
            "created": time.time(),
            "tensors_bytes": len(payload),
            "tensors_sha256": hashlib.sha256(payload).hexdigest(),
            "meta": dict(meta or {}),
        }
        try:
            manifest_bytes = (json.dumps(manifest, indent=1, allow_nan=False) + "\n").encode()
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"checkpoint meta is not plain JSON: {exc}") from None
        final = self.root / checkpoint_dir_name(round)
        with self._save_lock:
            tmp = self.root / f"{TMP_PREFIX}{final.name}-{secrets.token_hex(4)}"
            tmp.mkdir()
            try:
                write_durably(tmp / TENSORS_FILE, payload)
                write_durably(tmp / MANIFEST_FILE, manifest_bytes)
                fsync_dir(tmp)
                self._publish(tmp, final)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            self._prune(round)
        return final

    def _publish(self, tmp: Path, final: Path) -> None:
        if final.exists():
            # A directory cannot be atomically replaced by another; move the old one
            # aside first. A crash between the two renames is repaired on the next
            # open by moving it back (see _recover_debris).
            old = self.root / f"{_OLD_PREFIX}{final.name}-{secrets.token_hex(4)}"
            os.rename(final, old)
            try:
                os.rename(tmp, final)
            except BaseException:
                os.rename(old, final)
                raise
            fsync_dir(self.root)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, final)
            fsync_dir(self.root)

    def _prune(self, saved_round: int) -> None:
        stored = self.list()
        older = [c for c in stored if c.round < saved_round]
        newer = [c for c in stored if c.round > saved_round]
        doomed = newer + older[: max(0, len(older) - (self.keep - 1))]
        for ckpt in doomed:
            shutil.rmtree(ckpt.path, ignore_errors=True)
        if doomed:
            fsync_dir(self.root)

    def _prune_to_keep(self) -> None:
        doomed = self.list()[: -self.keep]
        for ckpt in doomed:
            shutil.rmtree(ckpt.path, ignore_errors=True)
            log.info("removed %s: more than keep=%d after a crash", ckpt.path, self.keep)
        if doomed:
            fsync_dir(self.root)

    def _quarantine(self, path: Path) -> str:
        """Move an unusable checkpoint aside (never pruned, kept for inspection)."""
        target = self.root / QUARANTINE_DIR / f"{path.name}-{time.time_ns()}"
        try:
            target.parent.mkdir(exist_ok=True)
            os.rename(path, target)
        except OSError as exc:
            return f"could not move it aside ({exc.strerror})"
        return f"moved aside to {target}"

    def _recover_debris(self) -> None:
        """Finish or undo what a writer killed mid-save left: runs under the writer lock."""
        for entry in sorted(self.root.iterdir()):
            match = _DEBRIS_NAME.match(entry.name)
            if match is None or not entry.is_dir():
                continue
            kind, final_name = match.groups()
            final = self.root / final_name
            if kind == "old" and not final.exists():
                # Killed between the two renames of a re-save: the old copy is the
                # last published state of that round, so put it back.
                os.rename(entry, final)
                log.warning("checkpoint %s restored after an interrupted re-save", final)
            else:
                shutil.rmtree(entry, ignore_errors=True)
                log.info("removed %s left by an interrupted save", entry)
        fsync_dir(self.root)

    # ---- reading -----------------------------------------------------------------

    def list(self) -> builtins.list[StoredCheckpoint]:
        """Published checkpoints by round, oldest first (not verified)."""
        if not self.root.is_dir():
            return []
        found = []
        for entry in self.root.iterdir():
            match = _CKPT_NAME.match(entry.name)
            if match is not None and entry.is_dir():
                found.append(StoredCheckpoint(int(match.group(1)), entry))
        return sorted(found)

    def load(self, round: int) -> Checkpoint:
        """The checkpoint of `round`; CheckpointError names what is wrong with it."""
        checkpoint = load_checkpoint(self.root / checkpoint_dir_name(round))
        self._check_identity(checkpoint)
        return checkpoint

    def load_latest(self) -> Checkpoint | None:
        """The newest valid checkpoint, skipping (and logging) unusable ones; None if none.

        Raises CheckpointError when the newest valid one belongs to another
        federation or projection: resuming from it would be silently wrong.
        """
        stored = self.list()
        for ckpt in reversed(stored):
            try:
                checkpoint = load_checkpoint(ckpt.path)
            except CheckpointError as exc:
                aside = "" if self.readonly else f"; {self._quarantine(ckpt.path)}"
                log.warning("%s%s; trying the previous checkpoint", exc, aside)
                continue
            self._check_identity(checkpoint)
            return checkpoint
        if stored:
            log.error(
                "no usable checkpoint in %s (%d unusable); starting fresh", self.root, len(stored)
            )
        return None

    def _check_identity(self, checkpoint: Checkpoint) -> None:
        for field in ("federation", "fingerprint"):
            expected, found = getattr(self, field), getattr(checkpoint, field)
            if expected and found != expected:
                raise CheckpointError(
                    f"{checkpoint.path}: written for {field} {found!r}, this node has "
                    f"{expected!r}; move the checkpoints away or fix the config"
                )
        if self.node_id and checkpoint.node_id != self.node_id:
            log.warning(
                "%s was written by node %r, resuming it as %r",
                checkpoint.path,
                checkpoint.node_id,
                self.node_id,
            )


def load_checkpoint(path: Path) -> Checkpoint:
    """Read and verify one checkpoint directory; CheckpointError says what is wrong."""
    path = Path(path)
    try:
        return _read_verified(path)
    except _Unusable as exc:
        raise CheckpointError(f"checkpoint {path} is unusable: {exc}") from None


class _Unusable(Exception):
    pass


_MANIFEST_TYPES: dict[str, type | tuple[type, ...]] = {
    "format": str,
    "format_version": int,
    "round": int,
    "node_id": str,
    "federation": str,
    "fingerprint": str,
    "created": (int, float),
    "tensors_bytes": int,
    "tensors_sha256": str,
    "meta": dict,
}


def _read_verified(path: Path) -> Checkpoint:
    manifest = _read_manifest(path / MANIFEST_FILE)
    match = _CKPT_NAME.match(path.name)
    if match is not None and int(match.group(1)) != manifest["round"]:
        raise _Unusable(f"{MANIFEST_FILE} says round {manifest['round']}, directory says otherwise")
    try:
        payload = (path / TENSORS_FILE).read_bytes()
    except FileNotFoundError:
        raise _Unusable(f"{TENSORS_FILE} is missing") from None
    except OSError as exc:
        raise _Unusable(f"{TENSORS_FILE} cannot be read ({exc.strerror})") from None
    if len(payload) != manifest["tensors_bytes"]:
        raise _Unusable(
            f"{TENSORS_FILE} has {len(payload)} bytes, manifest says {manifest['tensors_bytes']}"
        )
    digest = hashlib.sha256(payload).hexdigest()
    if digest != manifest["tensors_sha256"]:
        raise _Unusable(
            f"{TENSORS_FILE} checksum mismatch (sha256 {digest[:12]}..., manifest "
            f"{manifest['tensors_sha256'][:12]}...)"
        )
    try:
        tensors = parse_safetensors(payload)  # safetensors only, never pickle
    except Exception as exc:  # the parser's error types are not part of its API
        raise _Unusable(f"{TENSORS_FILE} does not parse as safetensors ({exc})") from None
    return Checkpoint(
        path=path,
        round=manifest["round"],
        node_id=manifest["node_id"],
        federation=manifest["federation"],
        fingerprint=manifest["fingerprint"],
        created=float(manifest["created"]),
        meta=manifest["meta"],
        tensors=tensors,
    )


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise _Unusable(f"{MANIFEST_FILE} is missing") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise _Unusable(f"{MANIFEST_FILE} cannot be read ({exc})") from None
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _Unusable(f"{MANIFEST_FILE} is not valid JSON (line {exc.lineno})") from None
    if not isinstance(manifest, dict):
        raise _Unusable(f"{MANIFEST_FILE} is not a JSON object")
    if manifest.get("format") != FORMAT:
        raise _Unusable(f"{MANIFEST_FILE} format is {manifest.get('format')!r}, not {FORMAT!r}")
    for key, kind in _MANIFEST_TYPES.items():
        value = manifest.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise _Unusable(f"{MANIFEST_FILE} field {key!r} is missing or has the wrong type")
    if manifest["format_version"] > FORMAT_VERSION:
        raise _Unusable(
            f"format version {manifest['format_version']} is newer than this solora-node "
            f"reads ({FORMAT_VERSION})"
        )
    return manifest


def _plain_tensors(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached, contiguous CPU tensors, no two sharing memory (safetensors refuses that)."""
    result: dict[str, torch.Tensor] = {}
    storages: set[int] = set()
    for name, tensor in tensors.items():
        if not isinstance(name, str) or not isinstance(tensor, torch.Tensor):
            raise TypeError(f"checkpoint tensors must map str to torch.Tensor, got {name!r}")
        plain = tensor.detach().to("cpu").contiguous()
        pointer = plain.untyped_storage().data_ptr()
        if pointer and pointer in storages:
            plain = plain.clone()
            pointer = plain.untyped_storage().data_ptr()
        storages.add(pointer)
        result[name] = plain
    return result


def _acquire_writer_lock(root: Path) -> IO[bytes]:
    try:
        root.mkdir(parents=True, exist_ok=True)
        handle = open(root / LOCK_FILE, "a+b")  # noqa: SIM115 - held for the store's lifetime
    except OSError as exc:
        raise CheckpointError(
            f"{root}: cannot use as checkpoint directory ({exc.strerror})"
        ) from None
    try:
        # flock dies with the process (kill -9 included), so no stale-lock cleanup.
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().decode(errors="replace").strip() or "?"
        handle.close()
        raise CheckpointError(
            f"{root}: another solora-node process (pid {holder}) writes checkpoints here; "
            "give each node its own node.data_dir"
        ) from None
    handle.truncate(0)
    handle.write(str(os.getpid()).encode())
    handle.flush()
    return handle
