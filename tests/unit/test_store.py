"""Checkpoint store: bit-exact round trips, detection of every kind of damage with
fallback to the previous checkpoint, crash debris, pruning, and kill -9 mid-save."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import random
import signal
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from solora_node.durable import atomic_write_bytes
from solora_node.store import (
    FORMAT_VERSION,
    MANIFEST_FILE,
    TENSORS_FILE,
    CheckpointError,
    CheckpointStore,
    load_checkpoint,
)


def tensors_for_round(round_: int) -> dict[str, torch.Tensor]:
    """Deterministic content per round, so a loaded checkpoint can be checked bit for bit."""
    gen = torch.Generator().manual_seed(round_)
    return {
        "blocks.arithmetic.q_proj": torch.randn(256, 1024, generator=gen),
        "masks.arithmetic.q_proj": torch.rand(256, 1024, generator=gen) < 0.1,
        "optimizer.step": torch.tensor(round_, dtype=torch.int64),
    }


def _bits(tensor: torch.Tensor) -> bytes:
    return tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def assert_same_tensors(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert sorted(got) == sorted(want)
    for name, tensor in want.items():
        assert got[name].dtype == tensor.dtype, name
        assert got[name].shape == tensor.shape, name
        assert _bits(got[name]) == _bits(tensor), name


@pytest.fixture
def store(tmp_path: Path) -> Iterator[CheckpointStore]:
    with CheckpointStore(
        tmp_path / "ckpt", keep=3, node_id="node-a", federation="fed", fingerprint="fp"
    ) as opened:
        yield opened


def _saved(store: CheckpointStore, *rounds: int) -> None:
    for round_ in rounds:
        store.save(round_, tensors_for_round(round_), {"round": round_})


# ---- round trip ------------------------------------------------------------------------


def test_round_trip_is_bit_exact(store: CheckpointStore) -> None:
    base = torch.arange(12, dtype=torch.float32)
    tensors = {
        "special": torch.tensor([float("nan"), float("inf"), -float("inf"), -0.0, 1e-45]),
        "bf16": torch.randn(3, 5).to(torch.bfloat16),
        "fp16": torch.randn(7).to(torch.float16),
        "int8": torch.tensor([-128, 0, 127], dtype=torch.int8),
        "bool": torch.tensor([[True, False], [False, True]]),
        "scalar": torch.tensor(3.5, dtype=torch.float64),
        "empty": torch.zeros(0, 4),
        "transposed": torch.randn(4, 6).t(),  # not contiguous
        "view_a": base[:6],  # two views of one storage
        "view_b": base[6:],
    }
    meta = {"counters": {"steps": 41}, "known_versions": [["topic", 3, "node-b"]], "mask_id": "m1"}
    path = store.save(7, tensors, meta)
    assert path == store.root / "ckpt-00000007"
    assert sorted(p.name for p in path.iterdir()) == [MANIFEST_FILE, TENSORS_FILE]
    loaded = store.load_latest()
    assert loaded is not None
    assert (loaded.round, loaded.meta, loaded.path) == (7, meta, path)
    assert (loaded.node_id, loaded.federation, loaded.fingerprint) == ("node-a", "fed", "fp")
    assert abs(loaded.created - time.time()) < 60
    assert_same_tensors(loaded.tensors, tensors)
    manifest = json.loads((path / MANIFEST_FILE).read_text())
    assert manifest["format_version"] == FORMAT_VERSION and manifest["round"] == 7


_DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.uint8]


@settings(max_examples=25, deadline=None)
@given(
    shapes=st.lists(st.lists(st.integers(0, 5), max_size=3), min_size=1, max_size=4),
    dtype_index=st.integers(0, len(_DTYPES) - 1),
    seed=st.integers(0, 2**31 - 1),
)
def test_round_trip_property(tmp_path_factory: pytest.TempPathFactory, shapes, dtype_index, seed):  # type: ignore[no-untyped-def]
    gen = torch.Generator().manual_seed(seed)
    dtype = _DTYPES[dtype_index]
    tensors = {
        f"t{i}": (torch.randn(tuple(shape), generator=gen) * 100).to(dtype)
        for i, shape in enumerate(shapes)
    }
    with CheckpointStore(tmp_path_factory.mktemp("prop"), keep=1) as prop_store:
        prop_store.save(0, tensors)
        loaded = prop_store.load_latest()
    assert loaded is not None
    assert_same_tensors(loaded.tensors, tensors)


# ---- damage and fallback -----------------------------------------------------------------


def _truncate(path: Path) -> None:
    data = (path / TENSORS_FILE).read_bytes()
    (path / TENSORS_FILE).write_bytes(data[: len(data) // 2])


def _flip_byte(path: Path) -> None:
    data = bytearray((path / TENSORS_FILE).read_bytes())
    data[-1] ^= 0xFF
    (path / TENSORS_FILE).write_bytes(bytes(data))


def _garbage_with_matching_checksum(path: Path) -> None:
    import hashlib

    garbage = b"\xff" * 64
    (path / TENSORS_FILE).write_bytes(garbage)
    manifest = json.loads((path / MANIFEST_FILE).read_text())
    manifest.update(tensors_bytes=len(garbage), tensors_sha256=hashlib.sha256(garbage).hexdigest())
    (path / MANIFEST_FILE).write_text(json.dumps(manifest))


def _edit_manifest(**changes: object):  # type: ignore[no-untyped-def]
    def edit(path: Path) -> None:
        manifest = json.loads((path / MANIFEST_FILE).read_text())
        manifest.update(changes)
        (path / MANIFEST_FILE).write_text(json.dumps(manifest))

    return edit


DAMAGE = {
    "truncated tensors": (_truncate, "bytes, manifest says"),
    "flipped byte": (_flip_byte, "checksum mismatch"),
    "unparseable tensors": (_garbage_with_matching_checksum, "does not parse as safetensors"),
    "bad json": (lambda p: (p / MANIFEST_FILE).write_text('{"round": 2,'), "not valid JSON"),
    "manifest not object": (lambda p: (p / MANIFEST_FILE).write_text("[]"), "not a JSON object"),
    "missing tensors": (lambda p: (p / TENSORS_FILE).unlink(), f"{TENSORS_FILE} is missing"),
    "missing manifest": (lambda p: (p / MANIFEST_FILE).unlink(), f"{MANIFEST_FILE} is missing"),
    "empty dir": (lambda p: [f.unlink() for f in p.iterdir()], "is missing"),
    "wrong round": (_edit_manifest(round=9), "says round 9"),
    "newer format": (_edit_manifest(format_version=FORMAT_VERSION + 1), "is newer"),
    "field type": (_edit_manifest(meta=[1]), "'meta' is missing or has the wrong type"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_newest_falls_back_to_previous(
    store: CheckpointStore, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    corrupt, reason = DAMAGE[damage]
    _saved(store, 1, 2)
    corrupt(store.root / "ckpt-00000002")
    with pytest.raises(CheckpointError, match=f"ckpt-00000002 is unusable: .*{reason}"):
        store.load(2)
    with caplog.at_level(logging.WARNING, logger="solora_node.store"):
        loaded = store.load_latest()
    assert loaded is not None and loaded.round == 1
    assert_same_tensors(loaded.tensors, tensors_for_round(1))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert "ckpt-00000002" in warnings[0] and reason in warnings[0]
    assert "moved aside" in warnings[0]


def test_unusable_checkpoint_is_quarantined_not_pruned(tmp_path: Path) -> None:
    with CheckpointStore(tmp_path / "ckpt", keep=2) as store:
        _saved(store, 1, 2)
        _flip_byte(store.root / "ckpt-00000002")
        loaded = store.load_latest()
        assert loaded is not None and loaded.round == 1
        for round_ in (3, 4):  # later saves prune ckpt-* only, never the quarantine
            store.save(round_, tensors_for_round(round_))
        aside = list((store.root / "quarantine").iterdir())
        assert [p.name.split("-")[1] for p in aside] == ["00000002"]
        with pytest.raises(CheckpointError, match="checksum mismatch"):
            load_checkpoint(aside[0])  # kept as it was, for inspection
        assert [c.round for c in store.list()] == [3, 4]


def test_reader_does_not_move_unusable_checkpoints(tmp_path: Path) -> None:
    with CheckpointStore(tmp_path / "ckpt", keep=2) as store:
        _saved(store, 1, 2)
    _flip_byte(tmp_path / "ckpt" / "ckpt-00000002")
    loaded = CheckpointStore(tmp_path / "ckpt", keep=2, readonly=True).load_latest()
    assert loaded is not None and loaded.round == 1
    assert (tmp_path / "ckpt" / "ckpt-00000002").is_dir()


def test_opening_a_writer_prunes_what_a_kill_before_pruning_left(tmp_path: Path) -> None:
    # The state kill -9 leaves between publishing round 3 and pruning: keep + 1 rounds.
    with CheckpointStore(tmp_path / "ckpt", keep=3) as store:
        _saved(store, 1, 2, 3)
    with CheckpointStore(tmp_path / "ckpt", keep=2) as reopened:
        assert [c.round for c in reopened.list()] == [2, 3]


def test_all_damaged_means_fresh_start(store: CheckpointStore) -> None:
    _saved(store, 1)
    _flip_byte(store.root / "ckpt-00000001")
    assert store.load_latest() is None


def test_empty_or_absent_store(tmp_path: Path) -> None:
    assert CheckpointStore(tmp_path / "nothing", keep=1, readonly=True).load_latest() is None
    assert not (tmp_path / "nothing").exists()  # a reader creates nothing
    with pytest.raises(CheckpointError, match="is missing"):
        load_checkpoint(tmp_path / "nothing")


def test_other_federation_is_refused_not_skipped(store: CheckpointStore, tmp_path: Path) -> None:
    _saved(store, 1)
    store.close()
    with (
        CheckpointStore(store.root, keep=3, federation="fed", fingerprint="other") as other,
        pytest.raises(CheckpointError, match="written for fingerprint 'fp'"),
    ):
        other.load_latest()


# ---- crash debris, re-save, pruning --------------------------------------------------------


def test_temp_dirs_from_a_crash_are_ignored_then_cleaned(store: CheckpointStore) -> None:
    _saved(store, 1)
    debris = store.root / ".tmp-ckpt-00000002-deadbeef"
    debris.mkdir()
    (debris / TENSORS_FILE).write_bytes(b"partial")
    loaded = store.load_latest()
    assert loaded is not None and loaded.round == 1
    store.close()
    with CheckpointStore(store.root, keep=3) as reopened:
        assert not debris.exists()
        assert [c.round for c in reopened.list()] == [1]


def test_interrupted_resave_is_restored(store: CheckpointStore) -> None:
    _saved(store, 1, 2)
    # Killed between "move old ckpt-2 aside" and "rename the new one in":
    aside = store.root / ".old-ckpt-00000002-12345678"
    os.rename(store.root / "ckpt-00000002", aside)
    (store.root / ".tmp-ckpt-00000002-87654321").mkdir()
    store.close()
    with CheckpointStore(store.root, keep=3) as reopened:
        loaded = reopened.load_latest()
        assert loaded is not None and loaded.round == 2
        assert sorted(p.name for p in reopened.root.iterdir()) == [
            ".lock",
            "ckpt-00000001",
            "ckpt-00000002",
        ]


def test_failed_save_leaves_nothing(
    store: CheckpointStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    _saved(store, 1)

    def no_rename(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "rename", no_rename)
    with pytest.raises(OSError, match="No space"):
        store.save(2, tensors_for_round(2))
    monkeypatch.undo()
    assert sorted(p.name for p in store.root.iterdir()) == [".lock", "ckpt-00000001"]


def test_failed_resave_keeps_the_old_copy(
    store: CheckpointStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    _saved(store, 1)
    real_rename = os.rename

    def fail_publish(src: str | Path, dst: str | Path) -> None:
        if Path(src).name.startswith(".tmp-"):
            raise OSError(5, "Input/output error")
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", fail_publish)
    with pytest.raises(OSError, match="Input/output"):
        store.save(1, tensors_for_round(9))
    monkeypatch.undo()
    loaded = store.load_latest()
    assert loaded is not None and loaded.meta == {"round": 1}
    assert sorted(p.name for p in store.root.iterdir()) == [".lock", "ckpt-00000001"]


def test_resave_replaces_round(store: CheckpointStore) -> None:
    _saved(store, 1)
    store.save(1, tensors_for_round(5), {"again": True})
    loaded = store.load_latest()
    assert loaded is not None and loaded.meta == {"again": True}
    assert_same_tensors(loaded.tensors, tensors_for_round(5))
    assert not [p for p in store.root.iterdir() if p.name.startswith(".old-")]


@pytest.mark.parametrize("keep", [1, 2, 3])
def test_keep_prunes_oldest(tmp_path: Path, keep: int) -> None:
    with CheckpointStore(tmp_path, keep=keep) as pruned:
        _saved(pruned, 0, 1, 2, 3, 4)
        assert [c.round for c in pruned.list()] == list(range(5 - keep, 5))


def test_saving_an_older_round_discards_later_ones(store: CheckpointStore) -> None:
    _saved(store, 1, 2, 3)
    _flip_byte(store.root / "ckpt-00000003")
    loaded = store.load_latest()
    assert loaded is not None and loaded.round == 2
    _saved(store, 3)  # the node resumed at 2 and finished round 3 again
    _saved(store, 4)
    assert [c.round for c in store.list()] == [2, 3, 4]
    assert (latest := store.load_latest()) is not None and latest.round == 4
    _saved(store, 2)
    assert [c.round for c in store.list()] == [2]


# ---- API edges -----------------------------------------------------------------------------


def test_one_writer_per_directory(store: CheckpointStore) -> None:
    with pytest.raises(CheckpointError, match=f"pid {os.getpid()}"):
        CheckpointStore(store.root, keep=1)
    reader = CheckpointStore(store.root, keep=1, readonly=True)
    with pytest.raises(CheckpointError, match="read-only"):
        reader.save(1, {})
    store.close()
    CheckpointStore(store.root, keep=1).close()


def test_meta_must_be_plain_json(store: CheckpointStore) -> None:
    with pytest.raises(CheckpointError, match="not plain JSON"):
        store.save(1, {}, {"loss": float("nan")})
    with pytest.raises(CheckpointError, match="not plain JSON"):
        store.save(1, {}, {"when": object()})
    with pytest.raises(TypeError, match=r"str to torch\.Tensor"):
        store.save(1, {"x": [1, 2]})  # type: ignore[dict-item]
    assert store.list() == []


def test_atomic_write_bytes(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    atomic_write_bytes(target, b"one")
    atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


# ---- kill -9 -----------------------------------------------------------------------------


def _save_forever(root: Path, reports: Connection) -> None:
    """The victim: resume like a node, then save round after round until killed."""
    store = CheckpointStore(root, keep=2, node_id="n", federation="f", fingerprint="p")
    latest = store.load_latest()
    round_ = 0 if latest is None else latest.round + 1
    while True:
        store.save(round_, tensors_for_round(round_), {"round": round_})
        reports.send(round_)
        round_ += 1


@pytest.mark.timeout(60)
def test_kill_9_during_saves_always_leaves_a_valid_checkpoint(tmp_path: Path) -> None:
    # fork, not spawn: a fresh interpreter would spend seconds importing torch per kill.
    fork = multiprocessing.get_context("fork")
    rng = random.Random(20260224)
    root = tmp_path / "ckpt"
    reported = -1
    for _ in range(5):
        receiver, sender = fork.Pipe(duplex=False)
        victim = fork.Process(target=_save_forever, args=(root, sender), daemon=True)
        victim.start()
        sender.close()
        try:
            for _ in range(rng.randint(1, 4)):
                assert receiver.poll(20), "the saver stopped reporting"
                round_ = receiver.recv()
                assert round_ == reported + 1  # resumed right after the last durable save
                reported = round_
            # A random instant: one save takes ~30 ms, so this often lands mid-write.
            time.sleep(rng.uniform(0.0, 0.04))
        finally:
            victim.kill()  # SIGKILL: no finally blocks, no atexit, no flush
            victim.join()
            receiver.close()
        assert victim.exitcode == -signal.SIGKILL
        latest = CheckpointStore(root, keep=2, readonly=True).load_latest()
        assert latest is not None and latest.round >= reported
        assert latest.meta == {"round": latest.round}
        assert_same_tensors(latest.tensors, tensors_for_round(latest.round))
        reported = latest.round
    with CheckpointStore(root, keep=2) as final:  # a new writer sweeps any debris
        assert all(p.name.startswith("ckpt-") or p.name == ".lock" for p in root.iterdir())
        assert len(final.list()) <= 2
