"""JobManager: the queue of backtest jobs, the concurrency limit, progress, cancel, leases, recovery.

- Jobs are persisted (`JobStore`) before they are acknowledged; a dispatcher claims them in
  submission order while fewer than ``MAX_CONCURRENT_JOBS`` run in this process. Several
  servers may share one database: each claim is atomic and takes a lease.
- A job runs the engine in a worker thread (the event loop never blocks on compute or on
  the database): the engine plans the run, and the executor (Dask: the cluster's workers)
  runs its stages; the workers write the table's pieces to the run's own artifact location
  (``<job id>/g<lease generation>``).
- A heartbeat (every ``GPU_BACKTEST_HEARTBEAT_S``) renews all of this server's leases in one
  statement, and re-queues any server's jobs whose lease (``GPU_BACKTEST_LEASE_S``) expired.
  A job whose lease is lost — not renewed, a progress write refused, or its known deadline
  passed (the process was paused) — is stopped at its next chunk and never finished here:
  progress and the final state are written only by the lease holder (owner + generation +
  unexpired lease), and a fenced run's files are deleted, never recorded.
- Progress is written as chunks finish (throttled); a cancel request stops a running job at
  its next chunk, and a queued job never starts.
- On shutdown, running jobs get a grace period to finish; the rest are handed back to the
  queue at once (their attempt does not count). Results are written once: the final state
  is a conditional update that only the lease holder of a ``running`` job can make.
- When a job ends, its ``callback_url`` receives a POST in the background: `core/callbacks.py`
  (address checks, signature, retries, the delivery record on the job).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import functools
import hashlib
import json
import logging
import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from . import artifacts
from .callbacks import CallbackSender, sign  # noqa: F401 - sign: re-exported (X-Signature of callbacks)
from .config import Settings
from .engine import SUMMARY_ROWS, Cancelled, Engine, check_mode, resolve_strategy
from .errors import GpuBacktestError, SpecError
from .executors import Executor
from .joblog import with_job_log
from .jobstatus import CANCELLED, FAILED, SUCCEEDED
from .jobstore import DELETE_BATCH
from .jsonsafe import unstorable_text
from .memory import release_memory
from .portfolio_strategy import KIND_PORTFOLIO, strategy_kind
from .spec import BacktestSpec, expand_grid, grid_size

log = logging.getLogger(__name__)
PROGRESS_INTERVAL_S = 0.25
PRUNE_INTERVAL_S = 3600.0  # how often retention runs (and once at start)


def _strategy_name(value: Any) -> Any:
    """A spec's strategy as a log line names it: the name, or an expression strategy's name."""
    if isinstance(value, dict):
        return value.get("name") or "expression"
    return value


def spec_hash(doc: Any) -> str:
    """sha256 of the canonical JSON of a request body (for idempotency)."""
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def server_identity() -> str:
    """This server process's owner name in the job store: ``<host>:<pid>:<random>``."""
    host = socket.gethostname()[:200] or "host"
    return f"{host}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class JobManager:
    """Owns the dispatcher, the heartbeat and the running jobs of this server process."""

    def __init__(self, settings: Settings, store: Any, engine: Engine,
                 executor_factory: Callable[[], Executor | None] | None = None,
                 on_event: Callable[[str, dict[str, Any]], None] | None = None, *,
                 strategies: Any = None) -> None:
        self.settings = settings
        self.store = store
        self.engine = engine
        self.strategies = strategies  # StrategyCatalog: a saved strategy's name is inlined at submit
        self.executor_factory = executor_factory or (lambda: None)
        self.on_event = with_job_log(on_event)  # every event is logged, then passed on
        self.owner = server_identity()
        self.max_running = settings.max_concurrent_jobs
        self.artifact_root = settings.artifact_uri
        self.lease_s = settings.lease_s
        self.heartbeat_s = settings.heartbeat_s
        self.max_attempts = settings.max_attempts
        self._running: dict[str, asyncio.Task[None]] = {}
        self._cancel_flags: dict[str, threading.Event] = {}
        self._held: dict[str, int] = {}  # job id → lease generation, for the jobs this server runs
        self._deadline: dict[str, float] = {}  # job id → monotonic time its lease is known to last until
        self._lost: set[str] = set()  # jobs whose lease this server lost or handed back: never finished here
        self._wake = asyncio.Event()
        self._accepting = True
        self._dispatcher: asyncio.Task[None] | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._reaper: asyncio.Task[None] | None = None
        self._pruner: asyncio.Task[None] | None = None
        self.prune_interval_s = PRUNE_INTERVAL_S
        self.callbacks = CallbackSender(settings, store)
        self._trimmed = 0.0  # when memory was last given back to the OS (release_memory)
        # Engine runs get a thread each; lease statements their own threads, so that a heartbeat
        # never waits behind compute for a free thread.
        self._compute = ThreadPoolExecutor(max_workers=self.max_running, thread_name_prefix="gbt-job")
        self._lease_io = ThreadPoolExecutor(max_workers=3, thread_name_prefix="gbt-lease")
        self.recovered: dict[str, int] = {}

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        """Recover jobs whose lease expired, then start dispatching and the heartbeat."""
        self.recovered = await self._db(self.store.recover, self.max_attempts)
        self._dispatcher = asyncio.create_task(self._dispatch(), name="job-dispatcher")
        self._heartbeat = asyncio.create_task(self._beat(), name="job-heartbeat")
        self._reaper = asyncio.create_task(self._reap(), name="job-reaper")
        self._pruner = asyncio.create_task(self._prune_forever(), name="job-retention")
        self._wake.set()
        log.info("job manager %s: lease %.3g s, heartbeat %.3g s", self.owner, self.lease_s, self.heartbeat_s)

    async def shutdown(self, grace_s: float = 30.0) -> None:
        """Stop accepting; let running jobs finish within ``grace_s``; hand the others back to
        the queue at once (another server, or the next start, runs them; the attempt does not
        count), and stop their work."""
        self._accepting = False
        self._wake.set()
        if self._dispatcher is not None:  # let it end its loop (a job claimed meanwhile starts)
            try:
                await asyncio.wait_for(asyncio.shield(self._dispatcher), timeout=max(5.0, self.heartbeat_s))
            except TimeoutError:
                self._dispatcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._dispatcher
        if self._running:
            await asyncio.wait(list(self._running.values()), timeout=grace_s)
        held = dict(self._held)
        if held:
            # The database decides each race with a finishing run: a job finished first stays
            # finished; a job handed back first refuses that run's finish.
            try:
                handed = await self._db(self.store.hand_back, self.owner, held)
                log.info("handed back %d job(s) at shutdown: %s", len(handed), handed)
                self.on_event("handed_back", {"jobs": len(handed)})
            except Exception:
                log.warning("handing jobs back failed; their leases expire in %.3g s", self.lease_s, exc_info=True)
        self._lost.update(held)  # from here on these jobs are not ours to finish
        for job_id in held:
            flag = self._cancel_flags.get(job_id)
            if flag is not None:
                flag.set()  # stop at the next chunk
        if self._running:  # let the stopped runs clean up their files
            await asyncio.wait(list(self._running.values()), timeout=max(5.0, self.heartbeat_s))
        for task in (self._heartbeat, self._reaper, self._pruner):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.callbacks.close()
        self._compute.shutdown(wait=False, cancel_futures=True)
        self._lease_io.shutdown(wait=False, cancel_futures=True)

    @property
    def accepting(self) -> bool:
        return self._accepting

    def running_count(self) -> int:
        return len(self._running)

    # -- API ---------------------------------------------------------------------------------
    def validate(self, doc: Any) -> tuple[BacktestSpec, dict[str, Any]]:
        """Check a request body as the engine will, before any data is touched: the spec, the
        strategy, the grid (its size by arithmetic first), and the limits on symbols and columns
        (GPU_BACKTEST_MAX_SYMBOLS, GPU_BACKTEST_MAX_GRID, GPU_BACKTEST_MAX_COLUMNS). Raises
        SpecError naming the field. Returns the spec and the job's listing (strategy and sizes).
        O(request): call it off the event loop. A saved strategy's name (``name`` or ``name@version``)
        is replaced by its document, name and version first (`StrategyCatalog.inline_saved`)."""
        if self.strategies is not None:
            doc = self.strategies.inline_saved(doc)
        spec = BacktestSpec.from_dict(doc)
        self.callbacks.check_url(spec.callback_url)
        strategy = resolve_strategy(spec, self.engine.registry)
        check_mode(spec, strategy)  # portfolio options and metrics fit the strategy's kind
        n_symbols = self._universe_size(spec)
        if n_symbols > self.settings.max_symbols:
            raise SpecError("symbols", f"{n_symbols} symbols exceed the limit {self.settings.max_symbols} "
                                       "(GPU_BACKTEST_MAX_SYMBOLS)")
        # expand_grid refuses a grid over GPU_BACKTEST_MAX_GRID by arithmetic before building it,
        # so what it builds is bounded; the real size (duplicates and the constraint removed) counts
        k = grid_size(expand_grid(strategy, spec.params, self.settings.max_grid))
        n_columns = k if strategy_kind(strategy) == KIND_PORTFOLIO else n_symbols * k  # portfolio: one per combo
        if n_columns > self.settings.max_columns:
            raise SpecError("params" if k > 1 else "symbols",
                            f"{n_columns} columns ({n_symbols} symbols × {k} combinations) exceed the limit "
                            f"{self.settings.max_columns} (GPU_BACKTEST_MAX_COLUMNS)")
        self.engine.data_service.check_spec(spec)  # source, symbols, benchmark, range: catalog + source, no fetch
        bad = unstorable_text(spec.to_dict())  # what the job store will hold (e.g. a date string kept as given)
        if bad is not None:
            raise SpecError(bad[0], f"holds U+{ord(bad[1]):04X}, which text may not hold (no NUL, no lone surrogate)")
        return spec, {"strategy": strategy.name, "n_symbols": n_symbols, "n_columns": n_columns}

    def _universe_size(self, spec: BacktestSpec) -> int:
        """How many symbols the spec runs on: its list, or the source's default universe (a catalog count)."""
        if spec.symbols is not None:
            return len(dict.fromkeys(spec.symbols))
        from .dataservice import DEFAULT_SOURCE

        name = spec.source or DEFAULT_SOURCE
        try:
            src = self.engine.data_service.source(name)
        except GpuBacktestError as exc:
            raise SpecError("source", exc.message) from None
        return len(src.default_symbols(self.engine.data_service.store, spec.frequency))

    def _accept(self, doc: Any, idempotency_key: str | None) -> Any:
        spec, listing = self.validate(doc)
        return self.store.create(spec.to_dict(), spec_hash(doc), idempotency_key, spec.callback_url, listing)

    async def submit(self, doc: Any, idempotency_key: str | None = None) -> Any:
        """Validate (off the event loop), persist (queued) and wake the dispatcher; returns the stored job."""
        job = await asyncio.to_thread(self._accept, doc, idempotency_key)
        self.on_event("submitted", {"job": job.id})
        self._wake.set()
        return job

    async def delete(self, job_id: str) -> Any:
        """Delete a finished job and its results (`JobNotFinal` for a queued or running one);
        returns the deleted job, or None if there is none."""
        job = await asyncio.to_thread(self.store.delete, job_id)
        if job is not None:
            await asyncio.to_thread(self._delete_files, job.id, job.artifact_path)
            self.on_event("deleted", {"job": job.id})
        return job

    def _delete_files(self, job_id: str, artifact_path: str | None) -> None:
        artifacts.delete(artifacts.job_dir(self.artifact_root, job_id))  # every run's location
        if artifact_path:  # a result kept under another root (the setting changed) or a legacy file
            with contextlib.suppress(OSError, ValueError):
                artifacts.delete(artifact_path)

    async def prune(self) -> int:
        """Delete the jobs that ended more than GPU_BACKTEST_RETENTION_DAYS ago, and their results,
        in batches; returns how many (0 when retention is off)."""
        days = self.settings.retention_days
        if not days:
            return 0
        age = datetime.timedelta(days=days)
        total = 0
        while True:
            gone = await self._db(self.store.delete_older_than, age)
            for d in gone:
                try:
                    await asyncio.to_thread(self._delete_files, d.id, d.artifact_path)
                except Exception:
                    log.warning("removing the results of pruned job %s failed", d.id, exc_info=True)
            total += len(gone)
            if len(gone) < DELETE_BATCH:
                break
        if total:
            log.info("retention: deleted %d job(s) that ended more than %g day(s) ago", total, days)
        return total

    async def cancel(self, job_id: str) -> Any:
        """Cancel: a queued job never runs; a running one stops at its next chunk (on whichever
        server runs it: that server sees the flag in the database)."""
        job = await asyncio.to_thread(self.store.request_cancel, job_id)
        flag = self._cancel_flags.get(job_id)
        if flag is not None:
            flag.set()
        return job

    # -- leases ------------------------------------------------------------------------------
    async def _db(self, fn: Callable[..., Any], *args: Any) -> Any:
        """A lease statement, on the lease threads."""
        return await asyncio.get_running_loop().run_in_executor(self._lease_io, functools.partial(fn, *args))

    async def _beat(self) -> None:
        """Every heartbeat: renew this server's leases (one statement) and stop the jobs whose
        lease is lost."""
        while True:
            await asyncio.sleep(self.heartbeat_s)
            try:
                await self._renew()
            except Exception:  # never let the heartbeat die
                log.warning("heartbeat failed", exc_info=True)

    async def _reap(self) -> None:
        """Every heartbeat, apart from the renewals (a slow recovery never delays them):
        re-queue any server's jobs whose lease expired, and wake the dispatcher for them."""
        while True:
            await asyncio.sleep(self.heartbeat_s)
            try:
                counts = await self._db(self.store.recover, self.max_attempts)
                if any(counts[k] for k in ("requeued", "failed", "cancelled")):
                    log.info("recovered jobs with expired leases: %s", counts)
                    self._wake.set()
            except Exception:
                log.warning("recovering expired leases failed", exc_info=True)

    async def _prune_forever(self) -> None:
        """Retention: at start, then every ``prune_interval_s``."""
        while True:
            try:
                await self.prune()
            except Exception:
                log.warning("retention (deleting old jobs) failed", exc_info=True)
            await asyncio.sleep(self.prune_interval_s)

    async def _renew(self) -> None:
        held = dict(self._held)
        if not held:
            return
        t0 = time.monotonic()
        try:
            kept = await self._db(self.store.renew_leases, self.owner, held, self.lease_s)
        except Exception:
            log.warning("renewing %d lease(s) failed", len(held), exc_info=True)
            self._check_deadlines()
            return
        for job_id, gen in held.items():
            if self._held.get(job_id) != gen:
                continue  # finished (or handed back) meanwhile
            if job_id in kept:
                self._deadline[job_id] = t0 + self.lease_s
            else:
                self._lose(job_id, "its lease could not be renewed (expired, or the job was taken over)")

    def _check_deadlines(self) -> None:
        now = time.monotonic()
        for job_id, deadline in list(self._deadline.items()):
            if now >= deadline and job_id in self._held:
                self._lose(job_id, "its lease ran out before it could be renewed")

    def _lose(self, job_id: str, why: str) -> None:
        """This server no longer holds ``job_id``: stop its work; never write its result."""
        if job_id in self._lost:
            return
        self._lost.add(job_id)
        flag = self._cancel_flags.get(job_id)
        if flag is not None:
            flag.set()
        log.warning("lost the lease of job %s (generation %s): %s; stopping its work here",
                    job_id, self._held.get(job_id), why)
        self.on_event("lease_lost", {"job": job_id})

    def _still_held(self, job_id: str) -> bool:
        """False once the job is lost, or its lease's known deadline has passed (a pause)."""
        if job_id in self._lost:
            return False
        if time.monotonic() >= self._deadline.get(job_id, math.inf):
            self._lose(job_id, "its lease ran out before it could be renewed")
            return False
        return True

    # -- internals ---------------------------------------------------------------------------
    async def _dispatch(self) -> None:
        while self._accepting:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=1.0)
            except TimeoutError:
                pass
            self._wake.clear()
            while self._accepting and len(self._running) < self.max_running:
                t0 = time.monotonic()
                try:
                    job = await self._db(self.store.claim_next, self.owner, self.lease_s)
                except Exception:  # database hiccup: try again on the next tick
                    log.exception("claiming a job failed")
                    break
                if job is None:
                    break
                # (claimed while shutdown began: it runs in the grace period like the others)
                flag = threading.Event()
                self._cancel_flags[job.id] = flag
                self._held[job.id] = job.lease_generation
                self._deadline[job.id] = t0 + self.lease_s
                self._running[job.id] = asyncio.create_task(self._run(job, flag), name=f"job-{job.id}")

    def _forget(self, job_id: str) -> None:
        self._held.pop(job_id, None)
        self._deadline.pop(job_id, None)
        self._cancel_flags.pop(job_id, None)

    async def _run(self, job: Any, flag: threading.Event) -> None:
        t0 = time.perf_counter()
        last = [0.0]
        gen = job.lease_generation
        loop = asyncio.get_running_loop()

        def progress(fraction: float, stage: str) -> None:  # called from the compute thread
            now = time.monotonic()
            if (now - last[0] >= PROGRESS_INTERVAL_S or fraction >= 1.0) and self._still_held(job.id):
                last[0] = now
                try:
                    if not self.store.update_progress(job.id, float(fraction), stage, owner=self.owner,
                                                      generation=gen):
                        self._lose(job.id, "its progress write was refused")
                except Exception:
                    log.warning("progress update for %s failed", job.id, exc_info=True)

        def cancelled() -> bool:
            if flag.is_set() or not self._still_held(job.id):
                return True
            try:
                return bool(self.store.is_cancel_requested(job.id))
            except Exception:
                return False

        status, summary, error, artifact, columns = FAILED, None, None, None, None
        location = artifacts.job_dir(self.artifact_root, job.id, gen)
        spec = job.spec if isinstance(job.spec, dict) else {}
        self.on_event("started", {"job": job.id, "attempt": job.attempts,
                                  "strategy": _strategy_name(spec.get("strategy"))})
        try:
            # what earlier runs left (pieces of an interrupted attempt), and a clean location of our own
            await asyncio.to_thread(artifacts.clear_older_runs, self.artifact_root, job.id, gen)
            await asyncio.to_thread(artifacts.delete, location)
            result = await loop.run_in_executor(self._compute, functools.partial(
                self.engine.run, job.spec, None, progress, cancelled, self.executor_factory(), location))
            artifact, columns = result.artifact, result.info.get("n_columns")
            if artifact is not None:  # the curves and trades beside the table, not in the job's row
                await asyncio.to_thread(artifacts.write_details, artifact, result.details)
            summary = {"info": result.info, "top": result.rows(SUMMARY_ROWS),
                       "details_columns": [int(d["column"]) for d in result.details]}
            status = SUCCEEDED
        except Cancelled:
            status = CANCELLED
        except GpuBacktestError as exc:
            error = exc.to_dict()
        except Exception as exc:
            log.exception("job %s failed", job.id)
            error = {"code": "internal_error", "message": f"internal error ({type(exc).__name__})", "details": None}
        wrote: bool | None = False
        if job.id in self._lost or not self._still_held(job.id):
            # lost (fenced off) or handed back at shutdown: another run owns the job now
            self._forget(job.id)
        else:
            self._forget(job.id)  # from here the heartbeat leaves it alone: finish is the last word
            try:
                wrote = await self._db(functools.partial(self.store.finish, job.id, status, summary, error,
                                                         artifact, owner=self.owner, generation=gen))
            except Exception:
                log.exception("writing the result of %s failed", job.id)
                wrote = None  # unknown: it may have been written, so its files stay
            if wrote is False:
                log.warning("the result of job %s (generation %d) was refused: its lease was lost", job.id, gen)
        if wrote:
            if status == SUCCEEDED:
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(artifacts.clear_older_runs, self.artifact_root, job.id, gen)
        elif wrote is False:
            with contextlib.suppress(Exception):  # a fenced run's files are never the job's artifact
                await asyncio.to_thread(artifacts.delete, location)
        self._lost.discard(job.id)
        self._running.pop(job.id, None)
        self._wake.set()
        if time.monotonic() - self._trimmed >= 1.0:  # freed memory back to the OS: a flat RSS over weeks
            self._trimmed = time.monotonic()
            with contextlib.suppress(Exception):
                await asyncio.to_thread(release_memory)
        if wrote:
            self.on_event("finished", {"job": job.id, "status": status, "duration_s": time.perf_counter() - t0,
                                       "columns": columns, "error": error})
            if job.callback_url:
                self.callbacks.deliver(job.id)
