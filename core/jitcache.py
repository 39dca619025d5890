"""Where numba keeps the compiled kernels on disk, and how a stale build is dropped.

- `configure_numba_cache(data_dir)`: unless the user set ``NUMBA_CACHE_DIR``, point it at
  ``<data dir>/numba-cache`` — a writable directory that survives restarts and reinstalls,
  also for a package installed read-only. It must run before the kernel modules are imported
  (numba fixes a function's cache location when its dispatcher is created); the server calls
  it first thing (`gpu-backtest serve`), its local cluster's worker processes inherit it, and
  the warm-up worker plugin (`cluster/warmup.py`) sets it on a worker that has none.
- `drop_stale_builds(dispatchers, sources, tag)`: numba keys a cached build on the source file
  of the compiled function only (its path, modification time and size), not on the modules
  the build includes — the kernel's inlined helpers in other files. A kernel module calls it
  when it creates its dispatchers: when the digest of every source the build includes changed
  since the builds were written, the cached builds of those functions are deleted (numba then
  compiles and writes them afresh). Builds for several Python versions live side by side
  (numba names its files ``<module>.<function>-<line>.py311.nbi``, ``….py312.nbi``), and a
  build written by another numba version is ignored by numba itself.
- `compile_lock(dispatcher, tag)`: a file lock beside the cached builds, held while a process
  compiles (or loads) a kernel's first build, so that processes sharing the cache — the server's
  warm-up helper, its workers, several servers — compile a build once: the others wait, then
  load it from the disk cache. `FirstUse` holds it around a process's first call of code that
  compiles several kernels (CSCV's passes), and never again in that process.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CACHE_SUBDIR = "numba-cache"
KERNEL_MODULES = ("gpu_backtest.core.simulate.cpu", "gpu_backtest.core.simulate.portfolio",
                  "gpu_backtest.core.cscv_fast")


def default_cache_dir(data_dir: str) -> str:
    """``<data dir>/numba-cache``."""
    return str(Path(data_dir).expanduser() / CACHE_SUBDIR)


def configure_numba_cache(data_dir: str, environ: dict[str, str] | Any = None) -> str | None:
    """Set ``NUMBA_CACHE_DIR`` to ``<data dir>/numba-cache`` unless it is set already; returns
    the directory numba will use (None: numba's own default, when the directory cannot be made).

    Call it before the kernel modules are imported: a kernel imported earlier keeps the
    location it was created with (logged at DEBUG)."""
    env = os.environ if environ is None else environ
    chosen = env.get("NUMBA_CACHE_DIR")
    if not chosen:
        chosen = default_cache_dir(data_dir)
        try:
            Path(chosen).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            log.warning("numba cache: cannot create %s (%s); numba's default location is used", chosen, exc)
            return None
        env["NUMBA_CACHE_DIR"] = chosen
    if env is os.environ and "numba" in sys.modules:  # numba read its configuration at import
        from numba.core import config

        config.CACHE_DIR = chosen
    early = [m for m in KERNEL_MODULES if m in sys.modules]
    if early:
        log.debug("numba cache: %s already imported; they keep their cache location", ", ".join(early))
    return chosen


def sources_digest(sources: Iterable[Path]) -> str:
    """sha256 over the bytes of ``sources``, in order."""
    h = hashlib.sha256()
    for path in sources:
        h.update(Path(path).read_bytes())
        h.update(b"\0")
    return h.hexdigest()


def cache_files(dispatcher: Any) -> tuple[Path, str] | None:
    """(directory, file-name prefix) of a ``cache=True`` dispatcher's builds, or None."""
    cache = getattr(dispatcher, "_cache", None)
    path = getattr(cache, "_cache_path", None)
    index = getattr(getattr(cache, "_cache_file", None), "_index_name", None)
    if not path or not index:
        return None
    base = index.rsplit("-", 1)[0]  # "<module>.<qualname>-<line>.py311.nbi" → "<module>.<qualname>"
    return Path(path), base


def drop_stale_builds(dispatchers: Sequence[Any], sources: Sequence[Path], tag: str) -> bool:
    """Delete the cached builds of ``dispatchers`` when ``sources`` changed since they were
    written (a stamp file ``<tag>.sources.sha256`` beside them); True when builds were dropped.
    Never raises: an unwritable cache leaves numba to compile in memory."""
    try:
        digest = sources_digest(sources)
    except OSError:
        return False
    dropped = False
    for where in {cache_files(d) for d in dispatchers} - {None}:
        assert where is not None
        directory, _ = where
        stamp = directory / f"{tag}.sources.sha256"
        try:
            if stamp.is_file() and stamp.read_text() == digest:
                continue
            for d in dispatchers:
                files = cache_files(d)
                if files is None or files[0] != directory:
                    continue
                for f in directory.glob(f"{files[1]}-*.nb[ic]"):
                    f.unlink(missing_ok=True)
                    dropped = True
            directory.mkdir(parents=True, exist_ok=True)
            tmp = stamp.with_name(f"{stamp.name}.{os.getpid()}.tmp")
            tmp.write_text(digest)
            os.replace(tmp, stamp)
        except OSError:  # read-only: numba falls back to compiling in memory
            continue
    if dropped:
        log.debug("numba cache: %s sources changed; its cached builds were dropped", tag)
    return dropped


@contextlib.contextmanager
def compile_lock(dispatcher: Any, tag: str) -> Iterator[None]:
    """Hold ``<cache dir>/<tag>.compile.lock`` (an exclusive ``flock``) while the block compiles or
    loads ``dispatcher``'s first build; no lock where there is no writable cache (or no ``fcntl``)."""
    where = cache_files(dispatcher)
    try:
        import fcntl
    except ImportError:  # not POSIX
        fcntl = None  # type: ignore[assignment]
    fh = None
    if where is not None and fcntl is not None:
        try:
            where[0].mkdir(parents=True, exist_ok=True)
            fh = open(where[0] / f"{tag}.compile.lock", "a+b")
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        except OSError:
            if fh is not None:
                fh.close()
            fh = None
    try:
        yield
    finally:
        if fh is not None:
            fh.close()  # releases the lock


class FirstUse:
    """``with first_use:`` holds `compile_lock` (of ``dispatcher``'s cache, ``tag``) around this
    process's first successful pass through the block, and nothing afterwards: processes sharing
    a disk cache then compile the block's kernels once (the others wait and load them), while
    later calls never wait for another process."""

    def __init__(self, dispatcher: Any, tag: str) -> None:
        import threading

        self.dispatcher, self.tag = dispatcher, tag
        self.done = False
        self._lock = threading.Lock()
        self._held: list[Any] = []

    def __enter__(self) -> None:
        if self.done:
            return
        self._lock.acquire()
        if self.done:  # another thread finished the first pass while this one waited
            self._lock.release()
            return
        ctx = compile_lock(self.dispatcher, self.tag)
        ctx.__enter__()
        self._held.append(ctx)

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if not self._held:
            return
        ctx = self._held.pop()
        ctx.__exit__(None, None, None)
        if exc_type is None:
            self.done = True
        self._lock.release()
