"""The write-ahead log: numbered segments of checksummed records, durable before a change is acknowledged.

On a local disk a segment is one file that grows by a record per commit, each
flushed and fdatasync'ed before append() returns (and the directory entry of a
new segment fsync'ed too). An object store cannot append, so there every commit
is its own segment object, durable once uploaded.

A record is a frame: a 16-byte header (magic, body length, the body's CRC-32,
the header's own CRC-32) and a body, one Arrow IPC stream of one record batch.
A crash can leave a partly written record at the end of a segment; readers stop
at it (that commit was never acknowledged), and a recovered writer always starts
a new segment, so nothing is ever written after a torn tail. A record that fails
its checksum with records after it is damage, not a torn write: reading raises
DamagedLogError. Segments written before checksums (one Arrow stream, `.arrows`)
are still read.

An append that fails (a failed fdatasync may still have put the record on disk)
poisons the log: every later append raises LogFailedError, so no later change
can be acknowledged over one whose fate only the log knows. The actor then stops
(journal.fail_stop) and recovers from the log alone, as PostgreSQL does since
its fsync fix.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from collections.abc import Iterator

import pyarrow as pa

from rayrec.durability.storage import Storage
from rayrec.exceptions import RayrecError

log = logging.getLogger(__name__)

PREFIX = "wal-"
SUFFIX = ".rlog"  # framed, checksummed records
OLD_SUFFIX = ".arrows"  # one Arrow IPC stream per segment, written before checksums (read only)
MAGIC = b"RRL1"
_HEAD = struct.Struct("<4sII")  # magic, body length, body CRC-32
_FRAME = struct.Struct("<4sIII")  # ... and the CRC-32 of the 12 bytes before it
HEADER_BYTES = _FRAME.size


class DamagedLogError(RayrecError):
    """A log record fails its checksum and is not a torn tail: the log was damaged after it was written."""


class LogFailedError(RayrecError):
    """An append to this log failed earlier: its outcome is known only to the log, so nothing more is written."""


def segment_name(number: int, suffix: str = SUFFIX) -> str:
    return f"{PREFIX}{number:012d}{suffix}"


def _segment_files(storage: Storage) -> dict[int, str]:
    out = {}
    for name in storage.names():
        for suffix in (SUFFIX, OLD_SUFFIX):
            if name.startswith(PREFIX) and name.endswith(suffix):
                digits = name[len(PREFIX) : -len(suffix)]
                if digits.isdigit():
                    out[int(digits)] = name
    return out


def segments(storage: Storage) -> list[int]:
    """Numbers of the log segments in storage, ascending."""
    return sorted(_segment_files(storage))


def frame(body: bytes) -> bytes:
    """One record: its header (with both checksums) and its body."""
    head = _HEAD.pack(MAGIC, len(body), zlib.crc32(body))
    return head + struct.pack("<I", zlib.crc32(head)) + body


def read_segment(storage: Storage, number: int) -> Iterator[pa.RecordBatch]:
    """The batches of one segment, up to a torn tail (a crash during an append)."""
    name = _segment_files(storage).get(number, segment_name(number))
    if name.endswith(OLD_SUFFIX):
        yield from _read_stream_segment(storage, number, name)
        return
    with storage.fs.open_input_stream(storage.path(name)) as src:  # an error here is raised
        at = 0
        while True:
            head = src.read(HEADER_BYTES)
            if not head:
                return
            problem = _bad_header(head)
            if problem is None:
                _, length, body_crc, _ = _FRAME.unpack(head)
                body = src.read(length)
                if len(body) == length and zlib.crc32(body) == body_crc:
                    yield from pa.ipc.open_stream(body)
                    at += HEADER_BYTES + length
                    continue
                problem = "is cut short" if len(body) < length else "fails its checksum"
                if len(body) == length and src.read(1):  # a record after it: not the tail
                    raise DamagedLogError(f"log segment {number} of {storage.uri}: the record at byte {at} "
                                          f"{problem} and records follow it: the log is damaged")
            elif len(head) == HEADER_BYTES and (head.strip(b"\x00") or src.read(1 << 20).strip(b"\x00")):
                raise DamagedLogError(f"log segment {number} of {storage.uri}: the record at byte {at} has a "
                                      f"{problem}, and data follows it: the log is damaged")
            if not storage.local:
                raise DamagedLogError(f"log segment {number} of {storage.uri} (an object, uploaded whole): the "
                                      f"record at byte {at} {problem}")
            # Only the last record of a local segment can be torn, and it was never acknowledged.
            log.warning("log segment %s ends in a partial write at byte %s (%s): reading stops there", number, at,
                        problem)
            return


def _bad_header(head: bytes) -> str | None:
    if len(head) < HEADER_BYTES:
        return "header cut short"
    magic, length, body_crc, head_crc = _FRAME.unpack(head)
    if magic != MAGIC or zlib.crc32(head[:12]) != head_crc:
        return "header that fails its checksum"
    return None


def _read_stream_segment(storage: Storage, number: int, name: str) -> Iterator[pa.RecordBatch]:
    """A segment written before checksums: one Arrow IPC stream, up to a torn tail."""
    with storage.fs.open_input_stream(storage.path(name)) as src:  # an error here is raised
        try:
            reader = pa.ipc.open_stream(src)
            while True:
                try:
                    yield reader.read_next_batch()
                except StopIteration:
                    return
        except (pa.ArrowInvalid, OSError) as exc:
            # pyarrow reports a batch cut short inside its body as an OSError ("Expected to be
            # able to read N bytes for message body, got M"); any other OSError is a real I/O error.
            torn_body = isinstance(exc, OSError) and "Expected to be able to read" in str(exc)
            if not storage.local or not (isinstance(exc, pa.ArrowInvalid) or torn_body):
                raise  # (an object is uploaded whole: a bad one is damage, not a torn write)
            log.warning("log segment %s ends in a partial write (%s): reading stops there", number, exc)


def read_log(storage: Storage, since: int = 0) -> Iterator[pa.RecordBatch]:
    """Every batch of segments numbered since or later, in commit order."""
    for number in segments(storage):
        if number >= since:
            yield from read_segment(storage, number)


def truncate(storage: Storage, before: int) -> int:
    """Deletes the segments numbered below before (a snapshot covers them). Returns how many."""
    old = [(n, name) for n, name in _segment_files(storage).items() if n < before]
    for _, name in old:
        storage.delete(name)
    return len(old)


class WriteAheadLog:
    """Appends record batches of one schema; each append is durable when it returns.

    Not thread-safe: callers append from one thread at a time (GroupCommit does).
    """

    def __init__(self, storage: Storage, schema: pa.Schema, start: int = 0) -> None:
        """start: the lowest segment number to use (a snapshot's wal_from: segments below it are gone)."""
        self.storage = storage
        self.schema = schema
        existing = segments(storage)
        # Never append to an old segment (it may end in a torn write), nor below the latest
        # snapshot's wal_from (replay would skip it).
        self.segment = max(existing[-1] + 1 if existing else 0, start)
        self._file = None
        self.failed: BaseException | None = None

    def append(self, batch: pa.RecordBatch) -> None:
        """Writes batch to the log and makes it durable; LogFailedError once an append has failed."""
        if self.failed is not None:
            raise LogFailedError(
                f"an earlier append to the log in {self.storage.uri} failed ({self.failed!r}): nothing more is "
                "written until the actor restarts and recovers from the log"
            )
        if batch.schema != self.schema:
            batch = batch.cast(self.schema)  # e.g. a nullable column given as non-nullable
        record = frame(self._stream_of(batch))
        try:
            if not self.storage.local:
                self.storage.write_bytes(segment_name(self.segment), record)
                self.segment += 1
                return
            if self._file is None:
                self._file = self.storage.open_append(segment_name(self.segment))
                _fsync_dir(self.storage.path(""))  # the new segment's directory entry, before any record counts
            self._file.write(record)
            os.fdatasync(self._file.fileno())
        except BaseException as exc:
            # The record may or may not be on disk now: only recovery from the log may decide.
            self.failed = exc
            self._abandon()
            raise LogFailedError(f"an append to the log in {self.storage.uri} failed: {exc!r}") from exc

    def _stream_of(self, batch: pa.RecordBatch) -> bytes:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, self.schema) as writer:
            writer.write_batch(batch)
        return sink.getvalue().to_pybytes()

    def rotate(self) -> int:
        """Ends the current segment; later appends go to a new one, whose number is returned.

        A snapshot taken after rotate() covers every segment below that number
        once every append made before it has been applied.
        """
        if self.storage.local:  # (an object store starts a segment at every append anyway)
            self.close()
            self.segment += 1
        return self.segment

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        self._file = None

    def _abandon(self) -> None:
        """Leaves the current segment as it is, whatever state it is in; nothing is written to it again."""
        try:
            if self._file is not None:
                self._file.close()
        except OSError:
            pass
        self._file = None
        self.segment += 1


def _fsync_dir(path: str) -> None:
    fd = os.open(path or ".", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
