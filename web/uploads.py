"""POST /data/upload: a CSV/Parquet file received as a stream, bounded in every way, then stored.

The request is ``multipart/form-data`` with one ``file`` part and optional ``symbol``,
``source``, ``frequency`` and ``delisted`` fields (``delisted=true``: the file's series have
ended — delistings — and are marked ended at their last bar; another value than true/false,
1/0, yes/no, on/off is 422 naming the field; without it the series are stored unmarked, which
clears the mark of a series uploaded before with it). What a client can make the server spend is bounded:

- **at once**: ``GPU_BACKTEST_MAX_CONCURRENT_UPLOADS`` uploads per server; one more is answered
  429 (``too_many_uploads``) with ``Retry-After`` at once, before its body is read;
- **time**: the whole body must arrive within ``GPU_BACKTEST_BODY_TIMEOUT_S`` (else 408
  ``request_timeout`` and the connection is closed);
- **size**: the file at most ``GPU_BACKTEST_MAX_UPLOAD_BYTES`` (413; a declared
  Content-Length over the limit is refused before reading), at most `MAX_PARTS` parts, field
  values at most `MAX_FIELD_BYTES` bytes; a part with another name is refused (400 naming it),
  never stored or skipped;
- **memory**: the file part goes to a temporary file in 64 KiB chunks; the import reads it
  in blocks (plugins/datasources/upload.py);
- **disk**: a full disk (ENOSPC / quota) while writing the temporary file or the store is 507
  ``insufficient_storage`` with the reason; the store is all or nothing (`import_file`), and
  the temporary file is always removed.

Malformed multipart (no boundary, a part name that is not UTF-8 text or holds control
characters, a broken part header) is 400 ``bad_request``, never a 500.
"""

from __future__ import annotations

import asyncio
import errno
import os
import tempfile
from pathlib import Path
from typing import Any

from aiohttp import BodyPartReader, web
from aiohttp.helpers import parse_mimetype
from aiohttp.http_exceptions import HttpProcessingError

from ..core.errors import GpuBacktestError
from . import keys as K
from .httperrors import (
    BadRequest,
    InsufficientStorage,
    PayloadTooLarge,
    RequestTimeout,
    TooManyUploads,
    UnsupportedMediaType,
)
from .middlewares import error_response

UPLOAD_SLOTS: web.AppKey[asyncio.Semaphore] = web.AppKey("upload_slots", asyncio.Semaphore)
MAX_PARTS = 8
MAX_FIELD_BYTES = 256
MAX_FIELD_CHARS = 64
FIELDS = ("symbol", "source", "frequency", "delisted")
CHUNK = 64 * 1024
RETRY_AFTER_S = 5
MULTIPART_OVERHEAD = 64 * 1024  # boundaries, part headers and the small fields, beyond the file


MALFORMED = (ValueError, AssertionError, UnicodeError, LookupError, HttpProcessingError)


def _reason(exc: BaseException) -> str:
    text = exc.message if isinstance(exc, HttpProcessingError) else str(exc)
    return " ".join(str(text).split())[:200] or type(exc).__name__






def no_space(exc: BaseException) -> bool:
    """True if ``exc`` (or what caused it) is a full disk or quota."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError) and (cur.errno in (errno.ENOSPC, errno.EDQUOT)
                                         or "No space left on device" in str(cur)
                                         or "Disk quota exceeded" in str(cur)):
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def closing_error(request: web.Request, exc: GpuBacktestError,
                  headers: dict[str, str] | None = None) -> web.Response:
    """The error envelope, and no keep-alive: the connection closes after it. (aiohttp first
    drains what the client still sends for up to 10 s — its lingering time — so that the client
    reads this answer instead of a connection reset; then it closes.)"""
    resp = error_response(exc.status, exc.code, exc.message, exc.details, request.get(K.REQUEST_ID), headers)
    resp.force_close()
    return resp


async def data_upload(request: web.Request) -> web.Response:
    """POST /data/upload (multipart: file + symbol/source/frequency/delisted): stream, validate, store (201)."""
    settings = request.app[K.SETTINGS]
    if not request.content_type.startswith("multipart/"):
        raise UnsupportedMediaType("POST /data/upload takes multipart/form-data with a 'file' part")
    boundary = parse_mimetype(request.headers.get("Content-Type", "")).parameters.get("boundary")
    if not boundary:
        return closing_error(request, BadRequest("multipart body without a boundary parameter in Content-Type"))
    limit = settings.max_upload_bytes
    declared = request.content_length
    if declared is not None and declared > limit + MULTIPART_OVERHEAD:
        return closing_error(request, PayloadTooLarge(f"upload larger than {limit} bytes", {"limit": limit}))
    slots = request.app[UPLOAD_SLOTS]
    if slots.locked():
        return _busy(request, settings.max_concurrent_uploads)
    async with slots:
        tmp_path: str | None = None
        try:
            try:
                async with asyncio.timeout(settings.body_timeout_s):
                    fields, tmp_path, filename = await _receive(request, limit)
            except TimeoutError:
                return closing_error(request, RequestTimeout(settings.body_timeout_s))
            except GpuBacktestError as exc:
                return closing_error(request, exc)
            except MALFORMED as exc:
                return closing_error(request, BadRequest(f"malformed multipart body: {_reason(exc)}"))
            try:
                entries = await asyncio.to_thread(
                    request.app[K.DATA].import_file, tmp_path, fields.get("symbol") or None,
                    fields.get("source") or "upload", fields.get("frequency") or "1d", filename,
                    fields.get("delisted"))
            except OSError as exc:
                if no_space(exc):
                    raise InsufficientStorage(
                        f"the market-data store is out of space ({exc.strerror or exc}); nothing was stored",
                        {"reason": str(exc.strerror or exc)}) from None
                raise
            return web.json_response({"stored": [e.to_dict() for e in entries]}, status=201)
        finally:
            if tmp_path is not None:
                Path(tmp_path).unlink(missing_ok=True)




def _busy(request: web.Request, slots: int) -> web.Response:
    return closing_error(request, TooManyUploads(
        f"{slots} upload(s) already in progress on this server (GPU_BACKTEST_MAX_CONCURRENT_UPLOADS); "
        f"retry in {RETRY_AFTER_S} s", {"retry_after_s": RETRY_AFTER_S}), {"Retry-After": str(RETRY_AFTER_S)})


def _part_name(part: Any, index: int) -> str:
    """The part's name, checked: UTF-8 text without control characters (400 otherwise)."""
    try:
        name = part.name
    except MALFORMED as exc:
        raise BadRequest(f"part {index}: malformed Content-Disposition header ({_reason(exc)})") from None
    if not isinstance(part, BodyPartReader):
        raise BadRequest(f"part {index}: nested multipart is not accepted")
    if not name:
        raise BadRequest(f"part {index} has no name; expected 'file', {', '.join(map(repr, FIELDS))}",
                        {"part": index})
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest(f"part {index}: its name is not UTF-8 text", {"part": index}) from None
    if not name.isprintable() or len(name) > 100:
        raise BadRequest(f"part {index}: its name {name[:100]!r} holds control characters or is too long",
                        {"part": index})
    return name


async def _receive(request: web.Request, limit: int) -> tuple[dict[str, str], str | None, str | None]:
    """Read the multipart body: the fields, the file part in a temporary file, its name."""
    fields: dict[str, str] = {}
    tmp_path: str | None = None
    filename = None
    try:
        reader = await request.multipart()
        index = 0
        while True:
            try:
                part = await reader.next()
            except MALFORMED as exc:  # what aiohttp raises for a malformed body
                raise BadRequest(f"malformed multipart body: {_reason(exc)}") from None
            if part is None:
                break
            index += 1
            if index > MAX_PARTS:
                raise BadRequest(f"more than {MAX_PARTS} parts in the upload", {"max_parts": MAX_PARTS})
            name = _part_name(part, index)
            if name == "file":
                if tmp_path is not None:
                    raise BadRequest("more than one 'file' part in the upload", {"part": name})
                try:
                    filename = part.filename or None  # no name: the symbol must come from a field
                except MALFORMED:
                    filename = None
                suffix = ".parquet" if (filename or "").lower().endswith((".parquet", ".pq")) else ".csv"
                fd, tmp_path = tempfile.mkstemp(prefix="upload-", suffix=suffix)
                await _write_part(part, fd, tmp_path, limit)
            elif name in FIELDS:
                if name in fields:
                    raise BadRequest(f"field {name} given twice", {"part": name})
                fields[name] = await _read_field(part, name)
            else:
                raise BadRequest(f"unknown part {name[:64]!r}: expected 'file', {', '.join(map(repr, FIELDS))}",
                                {"part": name[:64]})
        if tmp_path is None:
            raise BadRequest("no 'file' part in the upload")
        return fields, tmp_path, filename
    except BaseException:
        if tmp_path is not None:
            Path(tmp_path).unlink(missing_ok=True)
        raise


async def _write_part(part: BodyPartReader, fd: int, path: str, limit: int) -> None:
    size = 0
    try:
        with os.fdopen(fd, "wb") as fh:
            while chunk := await part.read_chunk(CHUNK):
                size += len(chunk)
                if size > limit:  # client_max_size does not bound a read_chunk loop
                    raise PayloadTooLarge(f"upload larger than {limit} bytes", {"limit": limit})
                fh.write(chunk)
    except OSError as exc:
        if isinstance(exc, TimeoutError) or not no_space(exc):
            raise
        raise InsufficientStorage(
            f"no space left for the upload's temporary file ({exc.strerror or exc}); nothing was stored",
            {"reason": str(exc.strerror or exc)}) from None


async def _read_field(part: BodyPartReader, name: str) -> str:
    raw = bytearray()
    while chunk := await part.read_chunk(1024):  # part.read() would take any size
        raw += chunk
        if len(raw) > MAX_FIELD_BYTES:
            raise BadRequest(f"field {name} too long", {"part": name, "max_bytes": MAX_FIELD_BYTES})
    try:
        value = bytes(part.decode(bytes(raw))).decode("utf-8")
    except (UnicodeDecodeError, RuntimeError, ValueError) as exc:
        raise BadRequest(f"field {name} is not UTF-8 text ({exc})", {"part": name}) from None
    if len(value) > MAX_FIELD_CHARS:
        raise BadRequest(f"field {name} too long", {"part": name, "max_chars": MAX_FIELD_CHARS})
    return value.strip()
