"""The server's background warm-up at start (`core/warmup.py` says what it compiles and why).

`ServerWarmup.start` (first thing at start-up) spawns the helper process
``python -m gpu_backtest.core.warmup`` (after its first part at a lower CPU priority);
`ServerWarmup.attach` (once the cluster is up) registers the worker plugin on it
(`cluster/warmup.py`: the numba cache directory on every worker, and its own warm-up thread)
and starts a task that waits for the helper and the workers, then logs
one line: ``warm-up done in N s (…)``. Nothing here blocks the event loop or delays "serving
on": the helper is a child process awaited with asyncio, the cluster calls run on a thread.
With ``GPU_BACKTEST_WARMUP=false`` only the plugin is registered (the cache directory), and
nothing is compiled ahead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import time
from typing import Any

from ..core.config import Settings
from ..core.warmup import HELPER_ORDER

log = logging.getLogger(__name__)


class ServerWarmup:
    """One server's warm-up: the helper process, the workers' plugin, the "done" log line."""

    def __init__(self, settings: Settings) -> None:
        self.enabled = settings.warmup
        self.proc: asyncio.subprocess.Process | None = None
        self.task: asyncio.Task[dict[str, Any]] | None = None
        self.t0 = time.perf_counter()
        self.result: dict[str, Any] | None = None
        self.closing = False

    async def start(self) -> None:
        """Spawn the helper process (when enabled)."""
        if not self.enabled:
            return
        self.t0 = time.perf_counter()
        try:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "gpu_backtest.core.warmup", "--parts", ",".join(HELPER_ORDER),
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        except OSError as exc:
            log.warning("warm-up helper not started: %s", exc)

    def attach(self, client: Any | None) -> None:
        """Register the worker plugin on ``client``'s cluster (None: no cluster) and start the
        task that waits for every warm-up and logs the line."""
        self.task = asyncio.create_task(self._finish(client))
        self.task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _helper(self) -> dict[str, Any] | None:
        if self.proc is None:
            return None
        out, err = await self.proc.communicate()
        try:
            return dict(json.loads(out.decode().strip().splitlines()[-1]))
        except (ValueError, IndexError):
            if self.closing or self.proc.returncode in (-9, -15):  # stopped with the server
                return None
            log.warning("warm-up helper exited with code %s: %s", self.proc.returncode,
                        err.decode(errors="replace").strip()[-500:])
            return None

    async def _workers(self, client: Any) -> dict[str, Any] | None:
        from ..cluster import warmup as cw

        try:
            await asyncio.to_thread(cw.register, client, self.enabled)
            if not self.enabled:
                return None
            return dict(await asyncio.to_thread(cw.wait_for_workers, client))
        except Exception as exc:  # the cluster went away, or an old worker without the module
            if self.closing:
                return None
            log.warning("warm-up on the cluster's workers: %s: %s", type(exc).__name__, exc)
            return None

    async def _finish(self, client: Any | None) -> dict[str, Any]:
        helper, workers = await asyncio.gather(  # neither raises
            self._helper(), self._workers(client) if client is not None else asyncio.sleep(0, None))
        self.result = {"seconds": round(time.perf_counter() - self.t0, 3), "helper": helper, "workers": workers}
        if self.enabled:
            failed = {**((helper or {}).get("failed") or {})}
            for addr, rep in (workers or {}).items():
                failed.update({f"{addr} {k}": v for k, v in (rep.get("failed") or {}).items()})
            log.info("warm-up done in %.1f s (helper process %s s, workers %s)%s", self.result["seconds"],
                     (helper or {}).get("seconds"),
                     ", ".join(f"{rep.get('seconds')} s" for rep in (workers or {}).values()) or "none",
                     f"; failed: {failed}" if failed else "",
                     extra={"event": "warmup", "warmup": self.result})
        return self.result

    async def close(self) -> None:
        """Stop the helper process and the waiting task (server shutdown)."""
        self.closing = True
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.proc.wait(), 5)
        if self.task is not None and not self.task.done():
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
