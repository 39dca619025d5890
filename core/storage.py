"""Storage: one small API over a local (or shared) directory and an S3-compatible bucket.

A *storage URI* names a root or a file under it:

- a local path (``/data/market``, ``~/market``, ``market``) or ``file:///data/market``:
  `pyarrow.fs.LocalFileSystem`; relative paths are made absolute against the current directory;
- ``s3://bucket/prefix``: `pyarrow.fs.S3FileSystem`, configured from the standard AWS
  variables only: the endpoint from ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` (its
  scheme, http or https, is used as given), the region from ``AWS_REGION`` or
  ``AWS_DEFAULT_REGION``, and the credentials from the AWS SDK's default chain
  (``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN``, a profile,
  an instance role, ...).

URIs are checked before use (`check_uri`): no ``..`` segment, no credentials
(``user:pass@``), query or fragment in the URI, a strict bucket-name pattern, only the schemes
above. A bad URI raises `InvalidStorageURI` (a `ConfigError`) whose message never repeats a
credential.

Files are written atomically and read whole:

- `write_bytes` / `write_table` on a local root write a temporary file in the target's
  directory, fsync it and ``os.replace`` it over the target; on S3 the object is sent by one
  PUT (or one multipart upload, which S3 also publishes atomically) only after the whole
  content is in memory, so a failed write never leaves a partial object;
- `read_bytes` / `read_table` read a file in one open and one read. A reader sees either the
  old or the new content, never a mix (locally the open file keeps the inode it opened; on S3
  a Parquet file whose footer does not parse because it was replaced between the size request
  and the read is read again).

Deleting an object on S3 through pyarrow leaves an empty ``<parent>/`` marker object (pyarrow keeps
the "directory" it believes in); `list_files` skips such markers, and nothing else sees them.

Filesystems are cached per process (`filesystem`): one `LocalFileSystem`, and one
`S3FileSystem` per endpoint/region/credentials configuration of the environment.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from .errors import ConfigError

__all__ = [
    "InvalidStorageURI",
    "Root",
    "check_uri",
    "clear_cache",
    "copy",
    "delete",
    "exists",
    "filesystem",
    "is_local",
    "join",
    "list_files",
    "read_bytes",
    "read_table",
    "redact",
    "resolve",
    "write_bytes",
    "write_table",
]

#: S3 bucket names: 3-63 characters, lower-case letters, digits, dots and hyphens, starting and
#: ending with a letter or digit (the AWS rules; no ``..``, ``.-``, ``-.`` and no IP address, below).
BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_IP_RE = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")
_CTRL_RE = re.compile(r"[\x00-\x1f\x7f]")
#: A segment of an S3 key: printable, no control characters, no backslash.
_KEY_SEGMENT_RE = re.compile(r"^[^\x00-\x1f\x7f\\]+$")
_SCHEMES = ("", "file", "s3")
_TMP_PREFIX = ".tmp-"
_S3_READ_TRIES = 3


class InvalidStorageURI(ConfigError):
    """A storage URI that is malformed, unsafe or of an unsupported scheme."""

    code = "invalid_storage_uri"

    def __init__(self, uri: Any, reason: str) -> None:
        shown = redact(str(uri))
        super().__init__(f"invalid storage URI {shown!r}: {reason}", {"uri": shown, "reason": reason})
        self.reason = reason


def redact(uri: str) -> str:
    """``uri`` with any ``user:password@`` part replaced by ``***@`` (for messages and logs)."""
    return re.sub(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@]*@", r"\1***@", uri)


@dataclass(frozen=True)
class Root:
    """A checked storage URI: ``uri`` (normalised), ``scheme`` ("file" or "s3") and ``path`` on its
    filesystem (local: an absolute path; S3: ``bucket/prefix`` without a trailing slash)."""

    uri: str
    scheme: str
    path: str

    @property
    def is_local(self) -> bool:
        return self.scheme == "file"


def check_uri(uri: str | os.PathLike[str]) -> Root:
    """Parse and check a storage URI (see the module docstring); raises `InvalidStorageURI`."""
    if isinstance(uri, os.PathLike):
        uri = os.fspath(uri)
    if not isinstance(uri, str) or not uri.strip():
        raise InvalidStorageURI(uri, "empty; give a directory or s3://bucket/prefix")
    raw = uri.strip()
    if _CTRL_RE.search(raw):
        raise InvalidStorageURI(raw, "control characters are not allowed")
    m = re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://", raw)
    scheme = m.group(1).lower() if m else ""
    if scheme not in _SCHEMES:
        raise InvalidStorageURI(raw, f"unsupported scheme {scheme!r}; use a directory, file:// or s3://")
    if scheme == "":
        return _local_root(raw, raw)
    parts = urlsplit(raw)
    if "@" in parts.netloc:
        raise InvalidStorageURI(raw, "credentials do not belong in a URI; set AWS_ACCESS_KEY_ID and "
                                     "AWS_SECRET_ACCESS_KEY (or use a profile or role)")
    if parts.query or parts.fragment or raw.endswith(("?", "#")):
        raise InvalidStorageURI(raw, "no query or fragment allowed; configure the endpoint and region through "
                                     "AWS_ENDPOINT_URL and AWS_REGION")
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise InvalidStorageURI(raw, "a file:// URI names a local path: file:///path")
        if not parts.path.startswith("/"):
            raise InvalidStorageURI(raw, "a file:// URI needs an absolute path: file:///path")
        return _local_root(raw, unquote(parts.path))
    bucket = parts.netloc
    if (not BUCKET_RE.fullmatch(bucket) or ".." in bucket or ".-" in bucket or "-." in bucket
            or _IP_RE.fullmatch(bucket)):
        raise InvalidStorageURI(raw, f"{bucket!r} is not a valid bucket name (3-63 lower-case letters, digits, "
                                     "'.' and '-', starting and ending with a letter or digit)")
    segments = parts.path.split("/")
    if segments and segments[0] == "":
        segments = segments[1:]
    if segments and segments[-1] == "":
        segments = segments[:-1]  # one trailing slash is fine
    for seg in segments:
        if seg in ("", ".", ".."):
            raise InvalidStorageURI(raw, "empty, '.' and '..' path segments are not allowed")
        if not _KEY_SEGMENT_RE.fullmatch(seg):
            raise InvalidStorageURI(raw, f"path segment {seg!r} has characters not allowed in a key")
    key = "/".join(segments)
    path = f"{bucket}/{key}" if key else bucket
    return Root(f"s3://{path}", "s3", path)


def _local_root(raw: str, path: str) -> Root:
    if ".." in path.replace(os.sep, "/").split("/"):
        raise InvalidStorageURI(raw, "'..' path segments are not allowed")
    if "\x00" in path:
        raise InvalidStorageURI(raw, "NUL is not allowed")  # pragma: no cover - caught as a control character
    absolute = os.path.abspath(os.path.expanduser(path))
    return Root(absolute, "file", absolute)


def is_local(uri: str | os.PathLike[str]) -> bool:
    """True when ``uri`` names a local path (a plain path or file://)."""
    return check_uri(uri).is_local


def join(uri: str | os.PathLike[str], *parts: str) -> str:
    """The URI of ``parts`` under ``uri`` (each part may hold ``/``-separated segments; none may be
    empty, ``.`` or ``..``, nor hold a backslash or a control character)."""
    root = check_uri(uri)
    segments: list[str] = []
    for part in parts:
        for seg in str(part).split("/"):
            if seg in ("", ".", "..") or not _KEY_SEGMENT_RE.fullmatch(seg):
                raise InvalidStorageURI(f"{root.uri}/{part}", f"bad path segment {seg!r}")
            segments.append(seg)
    if not segments:
        return root.uri
    sep = "" if root.uri.endswith("/") else "/"
    return root.uri + sep + "/".join(segments)


# -- filesystems --------------------------------------------------------------------------------
_lock = threading.Lock()
_cache: dict[Any, pafs.FileSystem] = {}


def _s3_options() -> dict[str, Any]:
    """S3FileSystem keyword arguments from the standard AWS variables (credentials: SDK chain)."""
    env = os.environ
    kw: dict[str, Any] = {}
    var = "AWS_ENDPOINT_URL_S3" if env.get("AWS_ENDPOINT_URL_S3") else "AWS_ENDPOINT_URL"
    endpoint = env.get(var)
    if endpoint:
        parts = urlsplit(endpoint.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"{var} must be http(s)://host[:port], got {redact(endpoint)!r}", {"variable": var})
        if "@" in parts.netloc:
            raise ConfigError(f"{var} must not hold credentials", {"variable": var})
        kw["endpoint_override"] = parts.netloc + parts.path.rstrip("/")
        kw["scheme"] = parts.scheme
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    if region:
        kw["region"] = region.strip()
    return kw


def _s3_cache_key(kw: dict[str, Any]) -> tuple[Any, ...]:
    """What makes two S3 filesystems differ: the options and (hashed) the credential variables."""
    creds = "\x00".join(os.environ.get(v, "") for v in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                                        "AWS_SESSION_TOKEN", "AWS_PROFILE"))
    return ("s3", tuple(sorted(kw.items())), hashlib.sha256(creds.encode()).hexdigest())


def filesystem(uri: str | os.PathLike[str]) -> tuple[pafs.FileSystem, Root]:
    """The (cached) filesystem of ``uri`` and the checked `Root`."""
    root = check_uri(uri)
    if root.is_local:
        key: Any = ("file",)
    else:
        kw = _s3_options()
        key = (os.getpid(), *_s3_cache_key(kw))  # a forked child makes its own (the AWS SDK is not fork-safe)
    with _lock:
        fs = _cache.get(key)
        if fs is None:
            fs = pafs.LocalFileSystem() if root.is_local else pafs.S3FileSystem(**kw)
            _cache[key] = fs
    return fs, root


def resolve(uri: str | os.PathLike[str]) -> tuple[pafs.FileSystem, str]:
    """``uri`` → (pyarrow FileSystem, path on it): what `pyarrow.parquet`/`pyarrow.dataset` take."""
    fs, root = filesystem(uri)
    return fs, root.path


def clear_cache() -> None:
    """Forget the cached filesystems (tests that change the AWS variables call this)."""
    with _lock:
        _cache.clear()


# -- files --------------------------------------------------------------------------------------
def read_bytes(uri: str | os.PathLike[str]) -> bytes:
    """The whole content of one file (one open, one read). FileNotFoundError when there is none.

    On S3 the object's size is asked for again after the read: a read racing a replacement by a
    larger object (the only way a ranged GET can return part of one version) is read again."""
    fs, root = filesystem(uri)
    if root.is_local:
        with open(root.path, "rb") as fh:
            return fh.read()
    for _ in range(_S3_READ_TRIES):
        data = _read_s3(fs, root)
        if fs.get_file_info(root.path).size == len(data):
            return data
    raise OSError(f"{root.uri} kept changing while being read")


def _read_s3(fs: pafs.FileSystem, root: Root) -> bytes:
    try:
        with fs.open_input_stream(root.path, compression=None) as fh:
            return fh.read()
    except OSError as exc:
        if _is_not_found(fs, root, exc):
            raise FileNotFoundError(f"no such file: {root.uri}") from None
        raise


def read_table(uri: str | os.PathLike[str], columns: list[str] | None = None, use_threads: bool = True) -> pa.Table:
    """One Parquet file as a pyarrow Table, read whole first (one open, one read).

    ``use_threads=False`` decodes on the calling thread: faster for small files read from a
    thread pool of one's own. On S3 a Parquet file is its own check (the footer at the end must
    parse): a read that raced a replacement and fails to parse is read again, without the extra
    size request of `read_bytes`."""
    fs, root = filesystem(uri)
    if root.is_local:
        return _parquet(read_bytes(uri), columns, use_threads)
    for attempt in range(_S3_READ_TRIES):
        try:
            return _parquet(_read_s3(fs, root), columns, use_threads)
        except FileNotFoundError:
            raise
        except (pa.ArrowInvalid, OSError):
            if attempt == _S3_READ_TRIES - 1:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def _parquet(data: bytes, columns: list[str] | None, use_threads: bool) -> pa.Table:
    # ParquetFile.read, not pq.read_table: the dataset machinery behind read_table costs ~3 ms a file
    return pq.ParquetFile(pa.BufferReader(data)).read(columns=columns, use_threads=use_threads)


def _is_not_found(fs: pafs.FileSystem, root: Root, exc: OSError) -> bool:
    if isinstance(exc, FileNotFoundError):
        return True
    try:
        return fs.get_file_info(root.path).type == pafs.FileType.NotFound
    except OSError:  # pragma: no cover - the original error is the better one
        return False


def write_bytes(uri: str | os.PathLike[str], data: bytes | bytearray | memoryview | pa.Buffer) -> None:
    """Replace (or create) one file with ``data`` atomically; parent directories are created."""
    fs, root = filesystem(uri)
    if root.is_local:
        _write_local(root.path, lambda fh: fh.write(data))
        return
    with fs.open_output_stream(root.path, compression=None) as out:
        out.write(data)


def write_table(uri: str | os.PathLike[str], table: pa.Table, compression: str = "zstd", **kwargs: Any) -> None:
    """Write ``table`` as one Parquet file, atomically (see `write_bytes`); ``kwargs`` go to
    `pyarrow.parquet.write_table`.

    The whole file is encoded in memory before anything is written, so an error while encoding
    leaves the previous file (or no file) in place and no temporary file behind.
    """
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression=compression, **kwargs)
    write_bytes(uri, sink.getvalue())


def _write_local(path: str, write: Any) -> None:
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, suffix=".part", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def copy(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> bool:
    """Copy one file to ``dst`` atomically, within one root kind; False (nothing done) when ``src``
    does not exist. Local: a hard link (a byte copy across devices) renamed over ``dst``; S3: a
    server-side copy (no bytes through this process)."""
    fs, s = filesystem(src)
    fs_d, d = filesystem(dst)
    if s.is_local != d.is_local or fs is not fs_d:
        write_bytes(dst, read_bytes(src))  # pragma: no cover - not used within the project
        return True
    if s.is_local:
        if not os.path.isfile(s.path):
            return False
        directory = os.path.dirname(d.path)
        os.makedirs(directory, exist_ok=True)
        tmp = os.path.join(directory, f"{_TMP_PREFIX}{os.urandom(6).hex()}.link")
        try:
            try:
                os.link(s.path, tmp)
            except OSError:
                shutil.copyfile(s.path, tmp)
            os.replace(tmp, d.path)
        except FileNotFoundError:
            _unlink_quietly(tmp)
            return False
        except BaseException:
            _unlink_quietly(tmp)
            raise
        return True
    try:
        fs.copy_file(s.path, d.path)
    except OSError as exc:
        if _is_not_found(fs, s, exc):
            return False
        raise
    return True


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def delete(uri: str | os.PathLike[str], missing_ok: bool = True) -> None:
    """Remove one file (not a directory). A missing file is fine unless ``missing_ok`` is False."""
    fs, root = filesystem(uri)
    try:
        if root.is_local:
            os.unlink(root.path)
        else:
            fs.delete_file(root.path)
    except FileNotFoundError:
        if not missing_ok:
            raise
    except OSError:
        if root.is_local or not _is_not_found(fs, root, OSError()):
            raise
        if not missing_ok:
            raise FileNotFoundError(f"no such file: {root.uri}") from None


def exists(uri: str | os.PathLike[str]) -> bool:
    """True when ``uri`` names an existing file."""
    fs, root = filesystem(uri)
    if root.is_local:
        return os.path.isfile(root.path)
    return fs.get_file_info(root.path).type == pafs.FileType.File


def list_files(uri: str | os.PathLike[str]) -> list[str]:
    """Every file under ``uri`` (recursively), as sorted ``/``-separated paths relative to it.

    A missing directory or prefix lists nothing; temporary files of unfinished local writes are
    left out."""
    fs, root = filesystem(uri)
    selector = pafs.FileSelector(root.path, recursive=True, allow_not_found=True)
    base = root.path.rstrip("/") + "/"
    out = []
    for info in fs.get_file_info(selector):
        if info.type != pafs.FileType.File or info.base_name.startswith(_TMP_PREFIX):
            continue
        path = info.path.replace(os.sep, "/") if root.is_local else info.path
        out.append(path[len(base):] if path.startswith(base) else path)
    return sorted(out)


def open_input(uri: str | os.PathLike[str]) -> Any:
    """A seekable reader of one file (Parquet metadata and row batches read through it)."""
    fs, root = filesystem(uri)
    return fs.open_input_file(root.path)


def list_names(uri: str | os.PathLike[str]) -> list[str]:
    """The names of the entries directly under a directory/prefix (missing: empty)."""
    fs, root = filesystem(uri)
    infos = fs.get_file_info(pafs.FileSelector(root.path, allow_not_found=True, recursive=False))
    return sorted(i.base_name for i in infos)


def delete_tree(uri: str | os.PathLike[str]) -> None:
    """Remove a directory or prefix and everything under it, or one file (missing: no-op)."""
    fs, root = filesystem(uri)
    info = fs.get_file_info(root.path)
    if info.type == pafs.FileType.Directory:
        fs.delete_dir(root.path)
    elif info.type == pafs.FileType.File:
        fs.delete_file(root.path)
    elif not root.is_local:  # a prefix on a bucket is not a directory object: delete what it holds
        for rel in list_files(uri):
            delete(join(uri, *rel.split("/")))
