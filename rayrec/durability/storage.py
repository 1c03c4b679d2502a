"""A storage location: a directory on any filesystem pyarrow.fs resolves (local, s3://, gs://...)."""

from __future__ import annotations

import os
import posixpath
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from rayrec.exceptions import InvalidInputError

TMP_SUFFIX = ".tmp"


def _fsync_path(path: str, directory: bool = False) -> None:
    """Flushes a local file (or a directory's entries) to disk."""
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Storage:
    """One directory: whole files written atomically (temp name, then rename), listed and deleted.

    A local directory also gets its writes fsynced (file and directory entry); an
    object store makes an object durable when its upload completes.
    """

    def __init__(self, uri: str, _resolved: tuple[pafs.FileSystem, str] | None = None) -> None:
        if not isinstance(uri, str) or not uri.strip():
            raise InvalidInputError("storage must be a directory path or a URI such as s3://bucket/prefix")
        if _resolved is None:
            if "://" not in uri:
                uri = os.path.abspath(uri)
            try:
                _resolved = pafs.FileSystem.from_uri(uri)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
                raise InvalidInputError(f"storage {uri!r} is not a location pyarrow.fs can open: {exc}") from None
        self.uri = uri
        self.fs, self.root = _resolved
        self.local = isinstance(self.fs, pafs.LocalFileSystem)
        try:
            self.fs.create_dir(self.root, recursive=True)
        except OSError as exc:
            raise InvalidInputError(f"cannot create storage directory {uri!r}: {exc}") from None

    def child(self, name: str) -> Storage:
        """The sub-directory name (created if missing)."""
        return Storage(posixpath.join(self.uri, name), (self.fs, posixpath.join(self.root, name)))

    def path(self, name: str) -> str:
        """The filesystem path of a file in this directory."""
        return posixpath.join(self.root, name)

    def names(self) -> list[str]:
        """Names of the files in this directory, sorted (leftover temp files excluded)."""
        infos = self.fs.get_file_info(pafs.FileSelector(self.root, allow_not_found=True))
        return sorted(
            posixpath.basename(i.path)
            for i in infos
            if i.type == pafs.FileType.File and not i.path.endswith(TMP_SUFFIX)
        )

    def temp_names(self) -> list[str]:
        """Temp files a write left behind when its process died (the file never got its name)."""
        infos = self.fs.get_file_info(pafs.FileSelector(self.root, allow_not_found=True))
        return sorted(posixpath.basename(i.path) for i in infos if i.path.endswith(TMP_SUFFIX))

    def dirs(self) -> list[str]:
        """Names of the sub-directories of this directory, sorted."""
        infos = self.fs.get_file_info(pafs.FileSelector(self.root, allow_not_found=True))
        return sorted(posixpath.basename(i.path) for i in infos if i.type == pafs.FileType.Directory)

    def delete_tree(self, name: str) -> None:
        """Deletes a sub-directory and everything in it; a missing one is fine."""
        try:
            self.fs.delete_dir(self.path(name))
        except FileNotFoundError:
            pass

    def exists(self, name: str) -> bool:
        return self.fs.get_file_info(self.path(name)).type == pafs.FileType.File

    def _publish(self, tmp: str, name: str) -> None:
        """Makes a fully written temp file visible under its name, durably."""
        if self.local:
            _fsync_path(tmp)
        self.fs.move(tmp, self.path(name))
        if self.local:
            _fsync_path(self.root, directory=True)

    def write_bytes(self, name: str, data: bytes | memoryview) -> None:
        """Writes a whole file atomically: readers see the old file or the new one, never a part."""
        tmp = self.path(name + TMP_SUFFIX)
        with self.fs.open_output_stream(tmp) as out:
            out.write(data)
        self._publish(tmp, name)

    def read_bytes(self, name: str) -> bytes:
        with self.fs.open_input_stream(self.path(name)) as src:
            return src.read()

    def write_parquet(self, name: str, table: pa.Table) -> None:
        """Writes a Parquet file atomically."""
        tmp = self.path(name + TMP_SUFFIX)
        # Vectors do not compress and dictionaries only slow them down: LZ4 (cheap to read
        # back) with dictionaries for the string columns only.
        strings = [f.name for f in table.schema if pa.types.is_string(f.type)]
        pq.write_table(table, tmp, filesystem=self.fs, compression="lz4", use_dictionary=strings)
        self._publish(tmp, name)

    def read_parquet(self, name: str) -> pa.Table:
        return pq.read_table(self.path(name), filesystem=self.fs)

    def open_append(self, name: str) -> Any:
        """A new local file open for appending (unbuffered, so fsync covers every write)."""
        if not self.local:
            raise InvalidInputError(f"{self.uri} is an object store: its files cannot be appended to")
        return open(self.path(name), "xb", buffering=0)

    def sync(self) -> None:
        """Makes this directory's entries durable (deletions included); an object store needs nothing."""
        if self.local:
            _fsync_path(self.root, directory=True)

    def delete(self, name: str) -> None:
        """Deletes a file; a missing one is fine."""
        try:
            self.fs.delete_file(self.path(name))
        except FileNotFoundError:
            pass
