"""JobManager: the queue of backtest jobs, the concurrency limit, progress, cancel, recovery.

- Jobs are persisted (`JobStore`) before they are acknowledged; a dispatcher claims them in
  submission order while fewer than ``MAX_CONCURRENT_JOBS`` run in this process.
- A job runs the engine in a worker thread (the event loop never blocks on compute or on
  the database): the engine plans the run, and the executor (Dask: the cluster's workers)
  runs its stages; the workers write the table's pieces to the job's artifact location.
- Progress is written as chunks finish (throttled); a cancel request stops a running job at
  its next chunk, and a queued job never starts.
- On start-up, jobs left ``running`` by a dead process are re-queued (bounded attempts, then
  failed with a reason) and ``queued`` ones resume. Results are written once: the final
  state is a conditional update that only a ``running`` job can take.
- When a job ends, its ``callback_url`` receives a POST, signed with HMAC-SHA256 of the body
  (``X-Signature: sha256=<hex>``) when ``GPU_SERVER_API_KEY`` is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import hmac
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import aiohttp

from . import artifacts
from .config import Settings
from .engine import SUMMARY_ROWS, Cancelled, Engine, resolve_strategy
from .errors import GpuBacktestError
from .executors import Executor
from .jobstatus import CANCELLED, FAILED, SUCCEEDED
from .spec import BacktestSpec, expand_grid

log = logging.getLogger(__name__)
PROGRESS_INTERVAL_S = 0.25


def spec_hash(doc: Any) -> str:
    """sha256 of the canonical JSON of a request body (for idempotency)."""
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def sign(body: bytes, key: str) -> str:
    """``sha256=<hex HMAC-SHA256 of body with key>`` (the X-Signature header of callbacks)."""
    return "sha256=" + hmac.new(key.encode(), body, hashlib.sha256).hexdigest()


class JobManager:
    """Owns the dispatcher task and the running jobs of this server process."""

    def __init__(self, settings: Settings, store: Any, engine: Engine,
                 executor_factory: Callable[[], Executor | None] | None = None,
                 on_event: Callable[[str, dict[str, Any]], None] | None = None) -> None:
        self.settings = settings
        self.store = store
        self.engine = engine
        self.executor_factory = executor_factory or (lambda: None)
        self.on_event = on_event or (lambda name, data: None)
        self.owner = uuid.uuid4().hex
        self.max_running = settings.max_concurrent_jobs
        self.artifact_root = settings.artifact_uri
        self._running: dict[str, asyncio.Task[None]] = {}
        self._cancel_flags: dict[str, threading.Event] = {}
        self._wake = asyncio.Event()
        self._accepting = True
        self._dispatcher: asyncio.Task[None] | None = None
        self._http: aiohttp.ClientSession | None = None
        self.recovered: dict[str, int] = {}

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        """Recover jobs of dead processes, then start dispatching."""
        self.recovered = await asyncio.to_thread(self.store.recover)
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        self._dispatcher = asyncio.create_task(self._dispatch(), name="job-dispatcher")
        self._wake.set()

    async def shutdown(self, grace_s: float = 30.0) -> None:
        """Stop accepting; let running jobs finish within ``grace_s``; the rest stay ``running``
        in the store and are re-queued by the next start's recovery."""
        self._accepting = False
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._dispatcher
        if self._running:
            await asyncio.wait(list(self._running.values()), timeout=grace_s)
        for flag in self._cancel_flags.values():
            flag.set()  # stop at the next chunk; recovery re-queues them
        if self._http is not None:
            await self._http.close()

    @property
    def accepting(self) -> bool:
        return self._accepting

    def running_count(self) -> int:
        return len(self._running)

    # -- API ---------------------------------------------------------------------------------
    def validate(self, doc: Any) -> BacktestSpec:
        """Check a request body as the engine will (spec, strategy, grid); raises SpecError."""
        spec = BacktestSpec.from_dict(doc)
        strategy = resolve_strategy(spec, self.engine.registry)
        expand_grid(strategy, spec.params, self.settings.max_grid)
        return spec

    async def submit(self, doc: Any, idempotency_key: str | None = None) -> Any:
        """Validate, persist (queued) and wake the dispatcher; returns the stored job."""
        spec = self.validate(doc)
        job = await asyncio.to_thread(self.store.create, spec.to_dict(), spec_hash(doc), idempotency_key,
                                      spec.callback_url)
        self.on_event("submitted", {"job": job.id})
        self._wake.set()
        return job

    async def cancel(self, job_id: str) -> Any:
        """Cancel: a queued job never runs; a running one stops at its next chunk."""
        job = await asyncio.to_thread(self.store.request_cancel, job_id)
        flag = self._cancel_flags.get(job_id)
        if flag is not None:
            flag.set()
        return job

    # -- internals ---------------------------------------------------------------------------
    async def _dispatch(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=1.0)
            except TimeoutError:
                pass
            self._wake.clear()
            while self._accepting and len(self._running) < self.max_running:
                try:
                    job = await asyncio.to_thread(self.store.claim_next, self.owner)
                except Exception:  # database hiccup: try again on the next tick
                    log.exception("claiming a job failed")
                    break
                if job is None:
                    break
                flag = threading.Event()
                self._cancel_flags[job.id] = flag
                self._running[job.id] = asyncio.create_task(self._run(job, flag), name=f"job-{job.id}")

    async def _run(self, job: Any, flag: threading.Event) -> None:
        t0 = time.perf_counter()
        last = [0.0]

        def progress(fraction: float, stage: str) -> None:  # called from the compute thread
            now = time.monotonic()
            if now - last[0] >= PROGRESS_INTERVAL_S or fraction >= 1.0:
                last[0] = now
                try:
                    self.store.update_progress(job.id, float(fraction), stage)
                except Exception:
                    log.warning("progress update for %s failed", job.id, exc_info=True)

        def cancelled() -> bool:
            if flag.is_set():
                return True
            try:
                return bool(self.store.is_cancel_requested(job.id))
            except Exception:
                return False

        status, summary, error, artifact = FAILED, None, None, None
        try:
            location = artifacts.job_dir(self.artifact_root, job.id)
            await asyncio.to_thread(artifacts.delete, location)  # pieces of an interrupted attempt
            result = await asyncio.to_thread(self.engine.run, job.spec, None, progress, cancelled,
                                             self.executor_factory(), location)
            artifact = result.artifact
            summary = {"info": result.info, "top": result.rows(SUMMARY_ROWS), "details": result.details}
            status = SUCCEEDED
        except Cancelled:
            status = CANCELLED
        except GpuBacktestError as exc:
            error = exc.to_dict()
        except Exception as exc:
            log.exception("job %s failed", job.id)
            error = {"code": "internal_error", "message": f"internal error ({type(exc).__name__})", "details": None}
        finally:
            self._cancel_flags.pop(job.id, None)
        if not self._accepting and status == CANCELLED and not await asyncio.to_thread(
                self.store.is_cancel_requested, job.id):
            # stopped by shutdown, not by a user: leave it running; the next start re-queues it
            self._running.pop(job.id, None)
            return
        try:
            wrote = await asyncio.to_thread(functools.partial(self.store.finish, job.id, status, summary, error,
                                                              artifact, owner=self.owner))
        except Exception:
            log.exception("writing the result of %s failed", job.id)
            wrote = False
        self._running.pop(job.id, None)
        self._wake.set()
        self.on_event("finished", {"job": job.id, "status": status, "duration_s": time.perf_counter() - t0})
        if wrote and job.callback_url:
            await self._callback(job.id, job.callback_url)

    async def _callback(self, job_id: str, url: str) -> None:
        job = await asyncio.to_thread(self.store.get, job_id)
        if job is None or self._http is None:
            return
        body = json.dumps({"job_id": job.id, "status": job.status, "error": job.error,
                           "links": {"self": f"/backtest/{job.id}", "results": f"/backtest/{job.id}/results"}},
                          separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json"}
        if self.settings.api_key:
            headers["X-Signature"] = sign(body, self.settings.api_key)
        for attempt in range(3):
            try:
                async with self._http.post(url, data=body, headers=headers) as resp:
                    if resp.status < 500:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.5 * 2**attempt)
        log.warning("callback for job %s to %s failed", job_id, url)
