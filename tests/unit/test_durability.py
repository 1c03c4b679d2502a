"""Write-ahead log, snapshots and recovery, on real files: no Ray."""

from __future__ import annotations

import asyncio
import json
import os

import numpy as np
import pyarrow as pa
import pytest
from rayrec.actors.shard import Shard

from rayrec import IndexConfig, RayrecConfig
from rayrec.config import FeedbackRule
from rayrec.durability import user_log, wal
from rayrec.durability.journal import GroupCommit, Journal
from rayrec.durability.snapshot import SnapshotError, latest_snapshot, write_snapshot
from rayrec.durability.storage import Storage
from rayrec.exceptions import InvalidInputError
from rayrec.system.layout import check_layout
from rayrec.users.user_state import UserStore

SCHEMA = pa.schema([("n", pa.int64())])


def _batch(*values: int) -> pa.RecordBatch:
    return pa.record_batch([pa.array(values, pa.int64())], schema=SCHEMA)


def _read(storage: Storage, since: int = 0) -> list[int]:
    return [v for b in wal.read_log(storage, since) for v in b.column("n").to_pylist()]


def test_log_appends_rotates_and_reads_back_in_order(tmp_path):
    storage = Storage(str(tmp_path))
    log = wal.WriteAheadLog(storage, SCHEMA)
    log.append(_batch(1, 2))
    log.append(_batch(3))
    second = log.rotate()
    log.append(_batch(4))
    assert _read(storage) == [1, 2, 3, 4]
    assert _read(storage, since=second) == [4]
    # A new writer (a restarted actor) never appends to an old segment.
    again = wal.WriteAheadLog(storage, SCHEMA)
    again.append(_batch(5))
    assert again.segment > second
    assert _read(storage) == [1, 2, 3, 4, 5]
    assert wal.truncate(storage, again.segment) == 2
    assert _read(storage) == [5]


def test_a_torn_tail_loses_only_the_unfinished_append(tmp_path):
    storage = Storage(str(tmp_path))
    log = wal.WriteAheadLog(storage, SCHEMA)
    log.append(_batch(1))
    log.append(_batch(2))
    path = storage.path(wal.segment_name(log.segment))
    size = os.path.getsize(path)
    log.append(_batch(3))
    full = os.path.getsize(path)
    whole = open(path, "rb").read()
    # A crash anywhere in the third append: in its header, its metadata or its body.
    for cut in range(size, full):
        with open(path, "wb") as f:
            f.write(whole[:cut])
        assert _read(storage) == [1, 2], f"torn at byte {cut} of {full}"
    with open(path, "wb") as f:
        f.write(whole[: size + (full - size) // 2])
    # A segment whose very first bytes were torn reads as empty.
    with open(storage.path(wal.segment_name(99)), "wb") as f:
        f.write(b"\xff\xff")
    assert _read(storage) == [1, 2]


def test_object_store_mode_writes_one_segment_per_append(tmp_path):
    storage = Storage(str(tmp_path))
    storage.local = False  # the path taken for s3:// and gs://, which cannot append
    log = wal.WriteAheadLog(storage, SCHEMA)
    log.append(_batch(1))
    log.append(_batch(2, 3))
    assert wal.segments(storage) == [0, 1]
    assert log.rotate() == 2
    assert _read(storage) == [1, 2, 3]
    with pytest.raises(InvalidInputError, match="object store"):
        storage.open_append("x")


def test_snapshot_manifest_is_the_commit_point(tmp_path):
    storage = Storage(str(tmp_path))
    log = wal.WriteAheadLog(storage, SCHEMA)
    log.append(_batch(1))
    wal_from = log.rotate()
    log.append(_batch(2))
    write_snapshot(storage, wal_from, {"rows": 1}, {"t": pa.table({"n": [1]})}, {"b": b"\x00\x01"})
    snap = latest_snapshot(storage)
    assert snap is not None and snap.wal_from == wal_from and snap.info == {"rows": 1}
    assert snap.table("t").column("n").to_pylist() == [1]
    assert snap.blob("b") == b"\x00\x01"
    assert _read(storage) == [2]  # the covered segment is gone
    # Data written without its manifest (a crash mid-snapshot) is not a snapshot.
    storage.write_parquet("snap-000000000099-t.parquet", pa.table({"n": [7]}))
    assert latest_snapshot(storage).wal_from == wal_from  # type: ignore[union-attr]
    with pytest.raises(SnapshotError, match="no 'x' part"):
        snap.table("x")
    storage.write_bytes("snapshot-000000000100.json", json.dumps({"format": 0}).encode())
    with pytest.raises(SnapshotError, match="format 0"):
        latest_snapshot(storage)


def test_storage_names_the_bad_location():
    with pytest.raises(InvalidInputError, match="storage must be"):
        Storage("  ")
    with pytest.raises(InvalidInputError, match="pyarrow.fs can open"):
        Storage("nosuchscheme://bucket/x")


def _ops(shard: Shard, rng: np.random.Generator, dim: int) -> None:
    """Upserts, replacements, deletes and a clear, some before and some after a snapshot."""
    ids = [f"i{i}" for i in range(400)]
    shard.upsert(ids[:100], rng.standard_normal((100, dim)), {"category": ["a", "b"] * 50})
    shard.clear()
    for start in range(0, 400, 40):
        part = ids[start : start + 40]
        shard.upsert(part, rng.standard_normal((40, dim)), {"category": ["a", "b"] * 20, "title": part})
    shard.delete(ids[:60:3] + ["never-there"])
    shard.upsert(ids[1:4], rng.standard_normal((3, dim)))  # replaced, without metadata now
    shard.delete(ids[390:])


@pytest.mark.parametrize("factory", ["Flat", "HNSW16", "IVF4,Flat"])
@pytest.mark.parametrize("snapshot_every", [50, 10_000])
def test_a_restarted_shard_answers_exactly_as_before(tmp_path, factory, snapshot_every):
    dim = 8
    cfg = RayrecConfig(index=IndexConfig(dim=dim, factory=factory), storage=str(tmp_path),
                       snapshot_every=snapshot_every)
    plain = RayrecConfig(index=IndexConfig(dim=dim, factory=factory))
    durable, reference = Shard(cfg, 3), Shard(plain, 3)
    _ops(durable, np.random.default_rng(1), dim)
    _ops(reference, np.random.default_rng(1), dim)
    durable.close()  # (a crashed process writes nothing more, and its writer lock goes with it)
    restarted = Shard(cfg, 3)  # what Ray runs when it restarts the actor
    q = np.random.default_rng(2).standard_normal((4, dim)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    cats = [["a"], None, ["b"], None]
    want = reference.search(q, 20, [["i100"], None, None, None], cats, with_metadata=True)
    got = restarted.search(q, 20, [["i100"], None, None, None], cats, with_metadata=True)
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_allclose(got[0], want[0], rtol=1e-6)
    assert got[2].tolist() == want[2].tolist()
    assert restarted.count() == reference.count() == 400 - 20 - 10 + 1  # i3 came back
    snapshots = latest_snapshot(restarted.durability.journal.storage)  # type: ignore[union-attr]
    assert (snapshots is not None) == (snapshot_every == 50)
    assert restarted.recovered_rows > 0


class Stopped(Exception):
    """What the test's fail_stop raises where the real one ends the process."""


def test_a_shard_whose_log_write_fails_stops_and_recovers_from_the_log(tmp_path, monkeypatch):
    dim = 4
    cfg = RayrecConfig(index=IndexConfig(dim=dim), storage=str(tmp_path))
    shard = Shard(cfg, 0)
    stops = []

    def stop(what: str, exc: BaseException) -> None:
        stops.append((what, type(exc).__name__))
        raise Stopped

    shard.durability.fail_stop = stop
    shard.upsert(["a"], np.eye(dim)[:1])
    real = os.fdatasync

    def failing(fd: int) -> None:
        real(fd)
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", failing)
    with pytest.raises(Stopped):
        shard.upsert(["b"], np.eye(dim)[1:2])
    monkeypatch.setattr(os, "fdatasync", real)
    assert stops == [("shard 0 replica 0", "LogFailedError")] and "b" not in shard.index  # not applied here
    shard.close()  # the process ended
    restarted = Shard(cfg, 0)  # what Ray runs once the process ended: the log alone decides
    assert sorted(r["item_id"] for r in restarted.fetch(["a", "b"]) if r) == ["a", "b"]
    restarted.upsert(["c"], np.eye(dim)[2:3])
    restarted.close()
    assert Shard(cfg, 0).count() == 3


def test_a_write_that_would_bring_too_many_field_names_is_refused_before_the_log(tmp_path, monkeypatch):
    from rayrec import constants as C

    monkeypatch.setattr(C, "MAX_METADATA_FIELDS_PER_SHARD", 3)
    dim = 4
    cfg = RayrecConfig(index=IndexConfig(dim=dim), storage=str(tmp_path))
    shard = Shard(cfg, 0)
    shard.upsert(["a"], np.eye(dim)[:1], {"f1": ["x"], "f2": ["y"]})
    with pytest.raises(InvalidInputError, match="at most 3 are accepted per shard"):
        shard.upsert(["b"], np.eye(dim)[1:2], {"f3": ["x"], "f4": ["y"]})
    shard.close()
    restarted = Shard(cfg, 0)  # nothing of the refused write was logged, so nothing replays
    assert restarted.count() == 1 and restarted.index.field_names() == ["f1", "f2"]


def test_a_committed_load_is_snapshotted_not_logged(tmp_path):
    dim = 4
    cfg = RayrecConfig(index=IndexConfig(dim=dim), storage=str(tmp_path))
    shard = Shard(cfg, 0)
    table = pa.table(
        {
            "item_id": [f"x{i}" for i in range(50)],
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(np.ones(50 * dim, np.float32)), dim),
        }
    )
    shard.stage(table, 0, 1)
    assert shard.commit_staged() == 50
    assert wal.segments(shard.durability.journal.storage) == []  # type: ignore[union-attr]
    shard.close()
    assert Shard(cfg, 0).count() == 50


def test_user_changes_and_snapshots_round_trip(tmp_path):
    dim = 6
    rule = FeedbackRule(history_len=3)
    store = UserStore(dim, rule)
    rng = np.random.default_rng(0)
    items = {f"m{i}": rng.standard_normal(dim).astype(np.float32) for i in range(5)}
    changes = [store.plan_vector("u1", rng.standard_normal(dim), "e0")]
    store.commit(changes[-1])  # type: ignore[arg-type]
    for n, (item, vec) in enumerate(items.items()):
        changes.append(store.plan_feedback("u1", item, "like" if n % 2 else "skip", vec / np.linalg.norm(vec),
                                           f"e{n + 1}"))
        store.commit(changes[-1])  # type: ignore[arg-type]
    changes.append(store.plan_history("u2", ["m1", "m2"], np.stack([items["m1"], items["m2"]])))
    store.commit(changes[-1])  # type: ignore[arg-type]

    replayed = UserStore(dim, rule)
    batch = user_log.changes_to_batch(changes, dim)  # type: ignore[arg-type]
    for change in user_log.batch_to_changes(batch, dim):
        assert replayed.commit(change)
    for change in user_log.batch_to_changes(batch, dim):  # a second replay changes nothing
        assert not replayed.commit(change)

    restored = UserStore(dim, rule)
    user_log.table_to_store(user_log.store_to_table(store), restored)
    for other in (replayed, restored):
        for user in ("u1", "u2"):
            a, b = store.get(user).as_dict(user), other.get(user).as_dict(user)  # type: ignore[union-attr]
            np.testing.assert_array_equal(a.pop("vector"), b.pop("vector"))
            assert a == b
        assert other.applied("u1", "e5") and other.applied("u1", "e0")
    assert len(restored.get("u1").history) == 3  # type: ignore[union-attr]
    assert store.get("u1").version == 6  # type: ignore[union-attr]


def test_group_commit_acknowledges_concurrent_records_with_one_write(tmp_path):
    storage = Storage(str(tmp_path))
    journal = Journal(storage, SCHEMA, snapshot_every=1000)
    journal.recover()
    writes: list[list[int]] = []

    def write(values: list[int]) -> None:
        writes.append(values)
        journal.append(_batch(*values))

    async def main(inline: bool) -> None:
        group: GroupCommit[int] = GroupCommit(write, inline=inline)
        await asyncio.gather(*(group.submit(v) for v in range(20)))

    asyncio.run(main(inline=False))
    assert sorted(v for w in writes for v in w) == list(range(20))
    assert len(writes) < 20  # records that arrived during a write shared the next one
    assert _read(storage) == [v for w in writes for v in w]
    # Inline, each record is written in the caller's turn (no thread hop): nothing waits to share a write.
    writes.clear()
    asyncio.run(main(inline=True))
    assert writes == [[v] for v in range(20)]
    assert _read(storage)[-20:] == list(range(20))


def test_a_failed_write_fails_every_record_of_its_group(tmp_path):
    def write(values: list[int]) -> None:
        raise OSError("disk full")

    async def main() -> list[object]:
        group: GroupCommit[int] = GroupCommit(write, inline=False)
        return await asyncio.gather(*(group.submit(v) for v in range(3)), return_exceptions=True)

    assert all(isinstance(r, OSError) for r in asyncio.run(main()))


def test_storage_refuses_another_layout(tmp_path):
    cfg = RayrecConfig(index=IndexConfig(dim=8), num_shards=2, storage=str(tmp_path))
    check_layout(cfg)
    check_layout(cfg)  # the same layout again is fine
    with pytest.raises(InvalidInputError, match="dim: stored 8, configured 4"):
        check_layout(RayrecConfig(index=IndexConfig(dim=4), num_shards=2, storage=str(tmp_path)))


def test_an_inline_write_that_fails_raises_to_its_caller():
    def write(values: list[int]) -> None:
        raise OSError("disk full")

    async def main() -> None:
        await GroupCommit(write).submit(1)

    with pytest.raises(OSError, match="disk full"):
        asyncio.run(main())


def test_writes_after_a_restart_that_followed_a_snapshot_survive_the_next_restart(tmp_path):
    """The log restarts numbering at the snapshot's wal_from, never below (replay would skip it)."""
    storage = Storage(str(tmp_path))
    journal = Journal(storage, SCHEMA, snapshot_every=1000)
    journal.recover()
    journal.append(_batch(1))
    journal.append(_batch(2))
    wal_from = journal.begin_snapshot()
    journal.write_snapshot(wal_from, {}, {"t": pa.table({"n": [1, 2]})})
    journal.close()
    again = Journal(storage, SCHEMA, snapshot_every=1000)  # a restart: no log segment exists now
    snap, batches = again.recover()
    assert snap is not None and snap.wal_from == wal_from and list(batches) == []
    again.append(_batch(3))
    again.close()
    third = Journal(storage, SCHEMA, snapshot_every=1000)  # the next restart replays it
    snap, batches = third.recover()
    assert [v for b in batches for v in b.column("n").to_pylist()] == [3]
    # Its next snapshot is numbered above the first one and replaces it.
    wal_from2 = third.begin_snapshot()
    assert wal_from2 > wal_from
    third.write_snapshot(wal_from2, {}, {"t": pa.table({"n": [1, 2, 3]})})
    assert latest_snapshot(storage).wal_from == wal_from2  # type: ignore[union-attr]


def test_a_slower_older_snapshot_does_not_prune_a_newer_one(tmp_path):
    storage = Storage(str(tmp_path))
    write_snapshot(storage, 5, {}, {"t": pa.table({"n": [5]})}, {})
    write_snapshot(storage, 3, {}, {"t": pa.table({"n": [3]})}, {})  # finished last, but older
    snap = latest_snapshot(storage)
    assert snap is not None and snap.wal_from == 5 and snap.table("t").column("n").to_pylist() == [5]


def test_a_failed_append_leaves_its_segment_and_later_appends_replay(tmp_path):
    storage = Storage(str(tmp_path))
    log = wal.WriteAheadLog(storage, SCHEMA)
    log.append(_batch(1))
    torn = log.segment
    log._file.write(b"\x01\x02\x03")  # type: ignore[union-attr]  # what a failed write leaves
    log._abandon()  # what append does when a write or fdatasync raises
    log.append(_batch(2))
    assert log.segment == torn + 1
    assert _read(storage) == [1, 2]


def test_a_damaged_object_store_segment_is_an_error_not_a_torn_tail(tmp_path):
    storage = Storage(str(tmp_path))
    storage.local = False
    log = wal.WriteAheadLog(storage, SCHEMA)
    log.append(_batch(1))
    with open(storage.path(wal.segment_name(0)), "r+b") as f:
        f.truncate(20)
    with pytest.raises(wal.DamagedLogError, match="an object, uploaded whole"):
        _read(storage)


def _three_records(tmp_path) -> tuple[Storage, str, list[int]]:
    """A local segment of three appends, and the byte where each record starts."""
    storage = Storage(str(tmp_path))
    log = wal.WriteAheadLog(storage, SCHEMA)
    path = storage.path(wal.segment_name(log.segment))
    starts = []
    for n in (1, 2, 3):
        starts.append(os.path.getsize(path) if os.path.exists(path) else 0)
        log.append(_batch(n))
    return storage, path, starts


def _flip(path: str, at: int) -> None:
    with open(path, "r+b") as f:
        f.seek(at)
        byte = f.read(1)
        f.seek(at)
        f.write(bytes([byte[0] ^ 0x40]))


def test_a_damaged_record_with_records_after_it_is_an_error_not_a_torn_tail(tmp_path):
    storage, path, starts = _three_records(tmp_path)
    for at in (starts[1] + 2, starts[1] + wal.HEADER_BYTES + 30, starts[0] + 5):  # a header, a body, the first
        whole = open(path, "rb").read()
        _flip(path, at)
        with pytest.raises(wal.DamagedLogError, match="the log is damaged"):
            _read(storage)
        with open(path, "wb") as f:
            f.write(whole)
    assert _read(storage) == [1, 2, 3]


def test_a_damaged_or_zeroed_last_record_reads_as_a_torn_tail(tmp_path):
    storage, path, starts = _three_records(tmp_path)
    whole = open(path, "rb").read()
    _flip(path, starts[2] + wal.HEADER_BYTES + 10)  # the last record's body: never acknowledged
    assert _read(storage) == [1, 2]
    with open(path, "wb") as f:  # the file grew but the record's bytes never came: zeros
        f.write(whole[: starts[2]] + bytes(len(whole) - starts[2]))
    assert _read(storage) == [1, 2]


def test_segments_written_before_checksums_are_still_read(tmp_path):
    storage = Storage(str(tmp_path))
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, SCHEMA) as writer:
        writer.write_batch(_batch(1))
        writer.write_batch(_batch(2))
    storage.write_bytes(wal.segment_name(0, wal.OLD_SUFFIX), sink.getvalue().to_pybytes())
    log = wal.WriteAheadLog(storage, SCHEMA)
    log.append(_batch(3))
    assert wal.segments(storage) == [0, 1] and _read(storage) == [1, 2, 3]
    assert wal.truncate(storage, 1) == 1 and _read(storage) == [3]


def test_a_failed_sync_poisons_the_log_so_no_later_change_is_acknowledged(tmp_path, monkeypatch):
    """The record of a failed fdatasync may be on disk: the next append must not be acknowledged over it
    (it would take the same version); recovery from the log decides, and keeps both in order."""
    storage = Storage(str(tmp_path))
    log = wal.WriteAheadLog(storage, SCHEMA)
    log.append(_batch(1))
    real = os.fdatasync

    def failing(fd: int) -> None:
        real(fd)  # the bytes reach the disk, but the caller is told the sync failed
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", failing)
    with pytest.raises(wal.LogFailedError, match="Input/output error"):
        log.append(_batch(2))
    monkeypatch.setattr(os, "fdatasync", real)
    with pytest.raises(wal.LogFailedError, match="nothing more is written"):
        log.append(_batch(3))
    assert _read(storage) == [1, 2]  # the unacknowledged record is in the log; recovery applies it
    again = wal.WriteAheadLog(storage, SCHEMA)  # the restarted actor: a new segment after it
    again.append(_batch(3))
    assert _read(storage) == [1, 2, 3]


def test_a_new_segments_directory_entry_is_synced_before_its_first_record_counts(tmp_path, monkeypatch):
    synced = []
    monkeypatch.setattr(wal, "_fsync_dir", lambda path: synced.append(path))
    storage = Storage(str(tmp_path))
    log = wal.WriteAheadLog(storage, SCHEMA)
    log.append(_batch(1))
    log.append(_batch(2))
    log.rotate()
    log.append(_batch(3))
    assert len(synced) == 2 and all(p.rstrip("/") == str(tmp_path) for p in synced)  # once per new segment


def test_what_a_user_was_set_from_survives_the_log_and_snapshots(tmp_path):
    """A model swap places text users again from their kept text embedding: it must be durable."""
    dim = 4
    store = UserStore(dim, FeedbackRule())
    source = np.array([0.5, -1.0, 2.0, 0.25, 3.0], np.float32)  # an embedding of another length than the space
    changes = [store.plan_vector("text", np.ones(dim), "a", source=source), store.plan_vector("raw", np.ones(dim), "b"),
               store.plan_vector("gone", np.ones(dim), "c", source=source)]
    for change in changes:
        store.commit(change)  # type: ignore[arg-type]
    changes.append(store.plan_history("gone", ["x"], np.ones((1, dim), np.float32)))  # a history ends the base
    store.commit(changes[-1])  # type: ignore[arg-type]
    changes.append(store.plan_rederived("text", np.array([0, 0, 3, 4], np.float32)))  # keeps the base
    store.commit(changes[-1])
    np.testing.assert_allclose(store.get("text").vector, [0, 0, 0.6, 0.8], atol=1e-7)  # type: ignore[union-attr]
    assert store.get("text").version == 2  # type: ignore[union-attr]
    replayed, restored = UserStore(dim, FeedbackRule()), UserStore(dim, FeedbackRule())
    for change in user_log.batch_to_changes(user_log.changes_to_batch(changes, dim), dim):  # type: ignore[arg-type]
        replayed.commit(change)
    user_log.table_to_store(user_log.store_to_table(store), restored)
    for other in (store, replayed, restored):
        text, raw = other.get("text").base, other.get("raw").base  # type: ignore[union-attr]
        np.testing.assert_array_equal(text[0], source)  # type: ignore[index]
        assert text[1] == store.get("text").updated_at and raw[0] is None and other.get("gone").base is None  # type: ignore[union-attr,index]
        np.testing.assert_array_equal(other.get("text").vector, store.get("text").vector)  # type: ignore[union-attr]


def test_a_snapshot_from_before_bases_were_kept_marks_users_without_history_as_set_by_a_raw_vector():
    store = UserStore(4, FeedbackRule())
    store.set_vector("set", np.ones(4))
    store.set_history("hist", ["x"], np.ones((1, 4), np.float32))
    old = user_log.store_to_table(store).drop_columns(["base_source", "base_at"])
    restored = UserStore(4, FeedbackRule())
    user_log.table_to_store(old, restored)
    assert restored.get("set").base == (None, store.get("set").updated_at)  # type: ignore[union-attr]
    assert restored.get("hist").base is None  # type: ignore[union-attr]


def test_a_second_writer_on_a_local_directory_is_refused_until_the_first_is_gone(tmp_path, monkeypatch):
    """Two systems on one --storage (or a stale actor): the second cannot start writing over the first."""
    from rayrec import constants as C
    from rayrec.durability.fence import StorageInUseError

    monkeypatch.setattr(C, "FENCE_WAIT_S", 0.3)
    cfg = RayrecConfig(index=IndexConfig(dim=4), storage=str(tmp_path))
    first = Shard(cfg, 0)
    first.upsert(["a"], np.eye(4)[:1])
    with pytest.raises(StorageInUseError, match="another process writes to .*shard-0"):
        Shard(cfg, 0)
    other = Shard(cfg, 1)  # another shard's directory is its own
    other.close()
    first.upsert(["b"], np.eye(4)[1:2])  # the first writer goes on, untouched
    first.close()  # its process ended: the next writer takes over
    second = Shard(cfg, 0)
    assert second.count() == 2
    second.close()


def test_a_config_sets_how_long_its_actors_wait_for_the_writer_lock(tmp_path, monkeypatch):
    """fence_wait_s of the config, not RAYREC_FENCE_WAIT_S, when given (the integration tests' second system
    waits 1 s to be refused instead of 15 s)."""
    import time

    from rayrec import constants as C
    from rayrec.durability.fence import StorageInUseError

    monkeypatch.setattr(C, "FENCE_WAIT_S", 60.0)  # what a config without fence_wait_s would wait
    cfg = RayrecConfig(index=IndexConfig(dim=4), storage=str(tmp_path), fence_wait_s=0.2)
    first = Shard(cfg, 0)
    t0 = time.monotonic()
    with pytest.raises(StorageInUseError, match="waited 0 s"):
        Shard(cfg, 0)
    assert time.monotonic() - t0 < 30
    first.close()
    with pytest.raises(InvalidInputError, match="fence_wait_s must be a finite number >= 0"):
        RayrecConfig(index=IndexConfig(dim=4), fence_wait_s=-1)


def test_on_an_object_store_a_newer_writer_fences_the_older_one(tmp_path):
    """A KubeRay upgrade: the old and the new cluster share s3://...; once the new writer starts, the old one
    can neither acknowledge a change nor prune the new one's log."""
    from rayrec.durability.fence import FencedError

    storage = Storage(str(tmp_path))
    storage.local = False  # the path taken for s3:// and gs://: no locks, a writer token instead
    old = Journal(storage, SCHEMA, snapshot_every=1000)
    old.recover()
    old.append(_batch(1))
    new = Journal(storage, SCHEMA, snapshot_every=1000)
    new.recover()  # takes the directory over
    new.append(_batch(2))
    with pytest.raises(wal.LogFailedError, match="another writer took"):
        old.append(_batch(3))
    with pytest.raises(FencedError):
        old.write_snapshot(old.begin_snapshot(), {}, {"t": pa.table({"n": [1]})})
    new.append(_batch(4))
    assert _read(storage) == [1, 2, 4]  # nothing of the fenced writer after the takeover, nothing pruned


def test_an_actor_on_a_node_that_does_not_share_the_storage_refuses_to_start(tmp_path):
    """A local path on a cluster without a shared filesystem: an actor placed on another node finds an empty
    directory where the layout should be, and fails loudly instead of serving an empty state."""
    from rayrec.system.layout import StorageNotSharedError

    cfg = RayrecConfig(index=IndexConfig(dim=4), storage=str(tmp_path / "elsewhere"))
    with pytest.raises(StorageNotSharedError, match="holds no layout.json.*does not share the storage"):
        Shard(cfg, 0, require_shared=True)
    check_layout(cfg)  # what the driver writes before it creates any actor
    shard = Shard(cfg, 0, require_shared=True)
    assert shard.count() == 0
    shard.close()


def test_a_router_on_a_node_that_does_not_share_the_storage_refuses_to_start(tmp_path):
    """The router too: restarted where the storage is another directory, it would take the shards it was first
    given for the current ones (a re-shard's generation unknown there)."""
    from rayrec.actors.router import Router

    from rayrec.system.layout import StorageNotSharedError

    cfg = RayrecConfig(index=IndexConfig(dim=4), num_shards=1, storage=str(tmp_path / "elsewhere"))
    with pytest.raises(StorageNotSharedError, match="holds no layout.json"):
        Router(cfg, [object()], require_shared=True)
    check_layout(cfg)
    assert Router(cfg, [object()], require_shared=True).config.num_shards == 1
