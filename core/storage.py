"""Storage locations: a local (or shared) directory or an S3-compatible bucket, one API.

A location is a plain path or ``s3://bucket/prefix``. Buckets go through pyarrow.fs (endpoint,
region and credentials from the standard AWS variables); directories through the local file
system. Writes are atomic: a temp file renamed into place on a directory, one PUT on a bucket.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq


def is_remote(location: str) -> bool:
    """True for a bucket URI (``s3://…``)."""
    return location.startswith("s3://")


def join(location: str, *parts: str) -> str:
    """``location`` / parts (``/``-joined for URIs)."""
    if is_remote(location):
        return "/".join([location.rstrip("/"), *parts])
    return str(Path(location, *parts))


def _fs(location: str) -> tuple[pafs.FileSystem, str]:
    if is_remote(location):
        fs, path = pafs.FileSystem.from_uri(location)
        return fs, path
    return pafs.LocalFileSystem(), str(Path(location).expanduser())


def write_bytes(location: str, data: bytes) -> None:
    """Write ``data`` to ``location`` atomically."""
    if is_remote(location):
        fs, path = _fs(location)
        with fs.open_output_stream(path) as out:
            out.write(data)
        return
    p = Path(location)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_table(location: str, table: pa.Table) -> None:
    """Write a Parquet file atomically."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    write_bytes(location, sink.getvalue().to_pybytes())


def read_bytes(location: str) -> bytes:
    """The whole content of ``location``, read through one handle."""
    fs, path = _fs(location)
    with fs.open_input_stream(path) as fh:
        return fh.read()


def open_input(location: str) -> Any:
    """A seekable reader of ``location`` (for Parquet metadata and batches)."""
    fs, path = _fs(location)
    return fs.open_input_file(path)


def list_names(location: str) -> list[str]:
    """The names of the entries directly under a directory/prefix (missing: empty)."""
    fs, path = _fs(location)
    infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True, recursive=False))
    return sorted(i.base_name for i in infos)


def delete_tree(location: str) -> None:
    """Remove a file or a directory/prefix and everything under it (missing: no-op)."""
    fs, path = _fs(location)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.Directory:
        fs.delete_dir(path)
    elif info.type == pafs.FileType.File:
        fs.delete_file(path)
