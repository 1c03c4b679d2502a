"""The write-ahead log: Arrow IPC streams in numbered segments, durable before a change is acknowledged.

On a local disk a segment is one file that grows by a record batch per commit,
each flushed and fdatasync'ed before append() returns. An object store cannot
append, so there every commit is its own segment object, durable once uploaded.
A crash can leave a partly written batch at the end of a segment; readers stop
at it (that commit was never acknowledged), and a recovered writer always starts
a new segment, so nothing is ever written after a torn tail.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import pyarrow as pa

from rayrec.durability.storage import Storage

log = logging.getLogger(__name__)

PREFIX = "wal-"
SUFFIX = ".arrows"


def segment_name(number: int) -> str:
    return f"{PREFIX}{number:012d}{SUFFIX}"


def segments(storage: Storage) -> list[int]:
    """Numbers of the log segments in storage, ascending."""
    out = []
    for name in storage.names():
        if name.startswith(PREFIX) and name.endswith(SUFFIX):
            digits = name[len(PREFIX) : -len(SUFFIX)]
            if digits.isdigit():
                out.append(int(digits))
    return sorted(out)


def read_segment(storage: Storage, number: int) -> Iterator[pa.RecordBatch]:
    """The batches of one segment, up to a torn tail (a crash during an append)."""
    with storage.fs.open_input_stream(storage.path(segment_name(number))) as src:  # an error here is raised
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
            # Only the last batch of a local segment can be torn, and it was never acknowledged.
            log.warning("log segment %s ends in a partial write (%s): reading stops there", number, exc)


def read_log(storage: Storage, since: int = 0) -> Iterator[pa.RecordBatch]:
    """Every batch of segments numbered since or later, in commit order."""
    for number in segments(storage):
        if number >= since:
            yield from read_segment(storage, number)


def truncate(storage: Storage, before: int) -> int:
    """Deletes the segments numbered below before (a snapshot covers them). Returns how many."""
    old = [n for n in segments(storage) if n < before]
    for n in old:
        storage.delete(segment_name(n))
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
        self._writer: pa.ipc.RecordBatchStreamWriter | None = None

    def append(self, batch: pa.RecordBatch) -> None:
        """Writes batch to the log and makes it durable."""
        if batch.schema != self.schema:
            batch = batch.cast(self.schema)  # e.g. a nullable column given as non-nullable
        if not self.storage.local:
            self.storage.write_bytes(segment_name(self.segment), self._stream_of(batch))
            self.segment += 1
            return
        try:
            if self._writer is None:
                self._file = self.storage.open_append(segment_name(self.segment))
                self._writer = pa.ipc.new_stream(pa.PythonFile(self._file, mode="w"), self.schema)
            self._writer.write_batch(batch)
            os.fdatasync(self._file.fileno())  # type: ignore[union-attr]
        except BaseException:
            # The segment may now end in a partial batch: nothing more is written after it.
            self._abandon()
            raise

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
        if self._writer is not None:
            self._writer.close()
            self._file.close()  # type: ignore[union-attr]
        self._writer = None
        self._file = None

    def _abandon(self) -> None:
        """Leaves the current segment as it is, whatever state it is in; the next append starts a new one."""
        try:
            if self._file is not None:
                self._file.close()
        except OSError:
            pass
        self._writer = None
        self._file = None
        self.segment += 1
