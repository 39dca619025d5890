"""Give freed memory back to the operating system, so a server that runs for weeks keeps a flat RSS.

A job's run allocates and frees many buffers (Arrow tables, pandas frames, Dask messages) on
many threads; glibc's allocator keeps freed pages in per-thread arenas and Arrow's memory pool
keeps its own, so the process's resident size creeps up although nothing is retained.
`release_memory` trims both; the job manager calls it after jobs end (at most once a second).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import sys

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def _malloc_trim() -> object | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return None


def release_memory() -> None:
    """Return free heap pages to the OS (glibc ``malloc_trim``) and Arrow's unused pool memory."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
    try:
        import pyarrow as pa

        pa.default_memory_pool().release_unused()
    except (ImportError, AttributeError):
        pass
